"""Alarm conditions: the meter's side of everything that "happens to" a meter.

A condition is a BT03 alarm bit plus the event that reports it (events.py ``alarm=``). When a
condition begins, the bit is set and the event is logged once; further reports while it holds
log nothing. Clearing the bit (EP03 Clear Alarms, the condition ending) re-arms it.

Everything that detects a condition calls ``begin``: procedures, the optical port (wrong
password), the metering engine (injected quantities) and MQTT triggers (cover open, tamper, ...).
"""

from __future__ import annotations

from ..events import USER_NONE, by_alarm
from .alarms import ALARMS


def begin(meter, alarm: str, now: float, argument: int = 0, user_id: int = USER_NONE) -> bool:
    """Condition ``alarm`` starts: raise the BT03 bit and log its event. False if it was
    already active (nothing logged)."""
    if alarm not in ALARMS:
        raise ValueError(f"no BT03 alarm named {alarm!r}")
    if alarm in meter.state.alarms:
        return False
    meter.raise_alarm(alarm)
    event = by_alarm(alarm)
    if event is not None:
        meter.log_event(event.number, argument, now, user_id)
    return True


def end(meter, alarm: str) -> None:
    """Condition ``alarm`` is over (or acknowledged): clear its BT03 bit."""
    if alarm in meter.state.alarms:
        meter.state.alarms.discard(alarm)
        meter.dirty = True
