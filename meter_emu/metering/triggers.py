"""Event triggers: what happens to a meter that no quantity expresses (a cover opened, a magnet,
a button press, a failing memory), as MQTT ``<prefix>/<meter>/trigger/<name>`` delivers them.

The payload says whether the condition begins ("", "1", "true", "on") or ends ("0", "false",
"off"); anything else is an InjectionError and changes nothing. Two kinds of trigger:

* **conditions** raise their BT03 alarm and log its event once when they begin
  (device/conditions.py), and clear the bit when they end; a repeated "on" logs nothing;
* **occurrences** (tamper, button, self check, service pin) happen once per "on"; "off" does
  nothing.

The trigger ``outage`` cuts the supply whatever the voltages say (the engine logs events 1 and
2 and counts the outage). ``phase_inversion`` and ``phase_rotation_changed`` exist as triggers
because the quantities have no per-phase voltage angle to derive them from; while
``phase_inversion`` is on, BT28's voltage angles read 240 degrees instead of 120.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..device import conditions, relay
from ..events import SELF_CHECK_ERROR, TAMPER
from . import engine, registers
from .quantities import InjectionError

STATE = "triggers"
_ON = ("", "1", "true", "on")
_OFF = ("0", "false", "off")
#: conditions that count in BT23's error counter (OPG p.25: RAM or NVM failure, clock error,
#: measurement error)
_ERROR_COUNTER = frozenset({"ram_failure", "nvm_failure", "clock_error", "measurement_error"})
ERROR_COUNTER_SOURCE = 28


@dataclass(frozen=True)
class Trigger:
    name: str
    does: str  # what the trigger does, for the README and the CLI
    begin: Callable  # (meter, now) when it turns on
    end: Callable | None = None  # (meter, now) when it turns off; None: an occurrence


def _condition(alarm: str, extra=None):
    """Begin: raise ``alarm`` and log its event once (then ``extra``); end: clear it."""
    def begin(meter, now):
        if conditions.begin(meter, alarm, now):
            if alarm in _ERROR_COUNTER:
                registers.add(meter, 0, {ERROR_COUNTER_SOURCE: 1})
            if extra is not None:
                extra(meter, now)

    def end(meter, now):
        conditions.end(meter, alarm)

    return begin, end


def _tamper(meter, now) -> None:
    meter.log_event(TAMPER.number, 0, now)


def _button(meter, now) -> None:
    relay.button_pressed(meter, now)


def _service_pin(meter, now) -> None:
    if meter.press_service_pin is None:
        raise InjectionError("service_pin: this meter is on no power line (CN/IP and the serial "
                             "PLC interface are off)")
    meter.press_service_pin()


def _switch_error(meter, now) -> None:
    relay.switch_failed(meter, now)


def _switch_recovered(meter, now) -> None:
    """The contactor follows again: the meter re-synchronizes it (event 66 reason 9)."""
    if "disconnect_switch_error" in meter.state.alarms:
        relay.resynchronize(meter, relay.Reason.RESYNC, now)


def _self_check(meter, now) -> None:
    """The meter's own self check found an error: event 38 with the fault bits EP42 reports."""
    from ..procedures.system import SELF_CHECK_FAULTS  # procedures build on this layer

    faults = sum(1 << bit for bit, name in enumerate(SELF_CHECK_FAULTS)
                 if name in meter.state.alarms)
    meter.log_event(SELF_CHECK_ERROR.number, faults, now)


def _outage(on: bool):
    return lambda meter, now: engine.set_outage_trigger(meter, on, now)


def _declare(*items: Trigger) -> dict[str, Trigger]:
    return {item.name: item for item in items}


def _alarm_trigger(name: str, alarm: str, does: str, extra=None) -> Trigger:
    begin, end = _condition(alarm, extra)
    return Trigger(name, does, begin, end)


TRIGGER_TABLE = _declare(
    _alarm_trigger("cover_open", "cover_removed", "terminal cover open: BT03 Cover Removed, "
                   "events 105 and 47 (condition)", _tamper),
    Trigger("tamper", "a tamper attempt: event 47 (each 'on')", _tamper),
    _alarm_trigger("magnetic_tamper", "magnetic_tamper", "a magnetic field: BT03 Magnetic "
                   "Tamper, event 89 (condition)"),
    Trigger("button", "the push button: event 106; closes a contactor armed for reconnect "
            "(event 66 reason 6) (each 'on')", _button),
    Trigger("service_pin", "the service pin: the meter broadcasts the 14908.1 service pin "
            "message (its Neuron ID and program ID) on the power line (each 'on')",
            _service_pin),
    Trigger("disconnect_switch_error", "the contactor does not follow its command: BT03 "
            "Disconnect Switch Error, event 66 with the failure bit; its end re-synchronizes "
            "(event 66 reason 9) (condition)", _switch_error, _switch_recovered),
    _alarm_trigger("battery_low", "low_battery", "BT03 Low Battery, event 44 (condition)"),
    _alarm_trigger("pulse_input1_tamper", "pulse_input1_tamper", "BT03 Pulse Input 1 Tamper, "
                   "event 75 (condition)"),
    _alarm_trigger("pulse_input2_tamper", "pulse_input2_tamper", "BT03 Pulse Input 2 Tamper, "
                   "event 76 (condition)"),
    Trigger("outage", "no supply: events 1 and 2, BT23 outage count and seconds, the load "
            "profile's power-fail flag, ET10/ET81 records (condition)", _outage(True),
            _outage(False)),
    Trigger("self_check_error", "the meter's self check fails: event 38 with the fault bits "
            "EP42 reports (each 'on')", _self_check),
    _alarm_trigger("ram_failure", "ram_failure", "BT03 RAM Failure, event 39, error counter + 1 "
                   "(condition)"),
    _alarm_trigger("rom_failure", "rom_failure", "BT03 ROM Failure, event 40 (condition)"),
    _alarm_trigger("nvm_failure", "nvm_failure", "BT03 NVM Failure, event 41, error counter + 1 "
                   "(condition)"),
    _alarm_trigger("clock_error", "clock_error", "BT03 Clock Error, event 42, error counter + 1 "
                   "(condition)"),
    _alarm_trigger("measurement_error", "measurement_error", "BT03 Measurement Error, event 43, "
                   "error counter + 1 (condition)"),
    _alarm_trigger("plc_config_failure", "plc_config_failure", "BT03 PLC Configuration "
                   "Failure, event 70 (condition)"),
    _alarm_trigger("general_error", "general_error", "BT03 General Error, event 71 (condition)"),
    _alarm_trigger("remote_communications_inactive", "remote_communications_inactive",
                   "BT03 Remote Communications Inactive, event 73 (condition)"),
    _alarm_trigger("access_lockout_override", "access_lockout_override", "BT03 Access Lockout "
                   "Override, event 90 (condition)"),
    _alarm_trigger("phase_inversion", "phase_inversion", "BT03 Phase Inversion, event 69; BT28 "
                   "voltage angles 240 degrees (condition)"),
    _alarm_trigger("phase_rotation_changed", "phase_rotation_changed", "BT03 Phase Rotation "
                   "Changed, event 83 (condition)"),
)
#: trigger name -> what it does (README, CLI, MQTT documentation)
TRIGGERS = {name: item.does for name, item in TRIGGER_TABLE.items()}


def parse_payload(text: str) -> bool:
    """True for a beginning ("", "1", "true", "on"), False for an end ("0", "false", "off")."""
    word = text.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise InjectionError(f"trigger payload must be empty, 1/true/on or 0/false/off, not "
                         f"{text[:40]!r}")


def fire(meter, name: str, payload_text: str, now: float) -> None:
    """Trigger ``name`` turns on or off at virtual time ``now``. The meter first integrates up
    to ``now``. Raises InjectionError (nothing changed) for an unknown trigger or payload."""
    trigger = TRIGGER_TABLE.get(name)
    if trigger is None:
        raise InjectionError(f"unknown trigger {name!r} (known: {', '.join(sorted(TRIGGERS))})")
    on = parse_payload(payload_text)
    meter.advance(now)
    if trigger.end is None:  # an occurrence
        if on:
            trigger.begin(meter, now)
        return
    own = meter.subsystem(STATE, active=[])
    active = name in own["active"]
    if on == active:
        return
    if on:
        own["active"] = sorted([*own["active"], name])
        trigger.begin(meter, now)
    else:
        own["active"] = [n for n in own["active"] if n != name]
        trigger.end(meter, now)
    meter.dirty = True


def active(meter) -> list[str]:
    """The condition triggers that are on."""
    return list(meter.state.subsystems.get(STATE, {}).get("active", []))
