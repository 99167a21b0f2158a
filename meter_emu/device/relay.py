"""The meter's switches: the load disconnect contactor, the control relays, the maximum power
level and the prepay credit. Procedures (EP02, EP21, EP22, EP23, EP30, EP36) change them here;
tables render them (ET23.94, ET30 status, ET54.62-66) and the history log records each change.

Disconnect contactor states (designed names; the event 66 state code in brackets):

* ``connected``: closed [1];
* ``disconnected``: open [2];
* ``armed``: open and armed for reconnect: the customer may close it with the push button [2];
* ``locked_open``: open, and only a remote close (EP02, EP23) ends it [3].

Control relays 1 and 2 (2 from firmware 4.30, MEP p.79) are ``open`` or ``closed``; a fresh meter
has every switch closed, so its BT03 shows no relay alarm.

Events (Echelon user's guide pp.32-43):

* 66 Load Disconnect State Changed, argument bits 0..3 the new state code, bit 4 switch failure,
  bit 6 the previous internal (commanded) state and bit 7 the previous external (sensed) state,
  each 1 = closed (designed reading of the guide's "previous internal/external state"; the
  emulated contactor never fails, so both agree), high byte the reason (``Reason``). It raises
  BT03 "Load Disconnect Has Changed State", which stays set until EP03 clears it; every change is
  logged even while the bit is set;
* 49 Control Point Changed by a Command / 50 by the Schedule, argument (designed): high byte the
  switch (0 the disconnect contactor, 1 and 2 the control relays), low byte its new state code;
* 67 Control Relay Open, with BT03 "Control Relay Open" while relay 1 is open (relay 2 has the
  BT03 bit "Control Relay (2) Open" and no event).

Timing (MEP p.136, ET54.71.6): "at least 10 seconds must elapse between any opening or closing of
the load disconnect contactor before the next open or close operation will be allowed"; the
lockout is ET30's reconnect lockout (at least 10 s). A control relay command may be randomized:
it happens after a delay drawn in 1..window seconds, shown in ET54.62-66 (MEP p.134-135) until
then. Timed actions (randomized commands, EP36's scheduled lock-open) happen at their own virtual
instant: ``next_due`` and ``run_due`` are the meter's hooks for them, as for pending tables.
"""

from __future__ import annotations

import enum
import math
import random

from ..events import (CONTROL_BY_COMMAND, CONTROL_BY_SCHEDULE, CREDIT_ADDED, CREDIT_ADJUSTED,
                      CREDIT_SUBTRACTED, MAX_POWER_LEVEL_CHANGED, USER_NONE, by_alarm)
from . import conditions

CONNECTED, DISCONNECTED, ARMED, LOCKED_OPEN = "connected", "disconnected", "armed", "locked_open"
DISCONNECT_STATES = (CONNECTED, DISCONNECTED, ARMED, LOCKED_OPEN)
OPEN, CLOSED = "open", "closed"
#: Switch numbers in events 49/50 and in EP02's parameters: 0 the contactor, 1.. control relays.
DISCONNECT = 0
CONTROL_RELAYS = (1, 2)

#: Event 66 state codes (Echelon user's guide, event 66).
STATE_CLOSED, STATE_OPEN, STATE_LOCKED_OPEN = 1, 2, 3
_STATE_CODE = {CONNECTED: STATE_CLOSED, DISCONNECTED: STATE_OPEN, ARMED: STATE_OPEN,
               LOCKED_OPEN: STATE_LOCKED_OPEN, CLOSED: STATE_CLOSED, OPEN: STATE_OPEN}
_PREVIOUS_INTERNAL_CLOSED, _PREVIOUS_EXTERNAL_CLOSED = 1 << 6, 1 << 7
LOAD_DISCONNECT_CHANGED = "load_disconnect_changed"
_RELAY_ALARMS = {1: "control_relay_open", 2: "control_relay2_open"}
#: ET23.94 Disconnect Internal Status (MEP p.99): 0 closed, 2 opened (1 and 3 are the pulsing
#: moments between, which the emulated contactor does not have).
ET23_CLOSED, ET23_OPENED = 0, 2


class Reason(enum.IntEnum):
    """Why the contactor changed: event 66's high byte (Echelon user's guide, event 66)."""

    EP02 = 1
    MAX_POWER = 2
    PREPAY = 3
    PREPAY_POWER = 4
    EP23 = 5
    MANUAL = 6
    SCHEDULE = 7
    EP30 = 8
    RESYNC = 9
    POWER_UP_RESYNC = 10


def _table(meter, number: int, now: float):
    """Extended table ``number``: (declaration, layout, parsed values). Imported here, late:
    the table modules import the procedures, which import this module."""
    from ..tables.catalog import CATALOG, et

    table = CATALOG[et(number)]
    layout = table.layout_for(meter)
    return table, layout, layout.parse(meter.table_bytes(table.number, now))


def _state(meter) -> dict:
    return meter.subsystem(
        "relay",
        disconnect=CONNECTED,
        control=[CLOSED, CLOSED],  # relays 1 and 2
        last_switch=None,  # meter UTC of the contactor's last movement
        lock_open_at=None,  # meter UTC of EP36's scheduled lock-open
        lock_open_user=USER_NONE,  # who scheduled it
        randomized=[None, None],  # per control relay: {"target", "due", "user"} while pending
        random_start=[0, 0],  # per control relay: ET54 "Random Start Duration", s
    )


def _existing(meter) -> dict | None:
    """The relay state if a relay procedure ever ran, without creating it (an idle meter)."""
    return _state(meter) if "relay" in meter.state.subsystems else None


# ---- the disconnect contactor -------------------------------------------------------------
def disconnect_state(meter) -> str:
    state = _existing(meter)
    return CONNECTED if state is None else state["disconnect"]


def contactor_open(meter) -> bool:
    return disconnect_state(meter) != CONNECTED


def state_code(meter) -> int:
    """The contactor's event 66 state code: 1 closed, 2 open, 3 locked open."""
    return _STATE_CODE[disconnect_state(meter)]


def et23_status(meter) -> int:
    """ET23.94 Disconnect Internal Status."""
    return ET23_OPENED if contactor_open(meter) else ET23_CLOSED


def lockout_remaining(meter, target: str, now: float) -> float:
    """Seconds before the contactor may move to ``target`` (0: now). Only a movement (closed to
    open or back) is timed; arming or locking an open contactor moves nothing."""
    state = _existing(meter)
    if state is None or state["last_switch"] is None:
        return 0.0
    if (target == CONNECTED) == (state["disconnect"] == CONNECTED):
        return 0.0
    lockout = _table(meter, 30, now)[2]
    elapsed = meter.utc_seconds(now) - state["last_switch"]
    return max(0.0, lockout.reconnect_lockout - elapsed)


def set_disconnect(meter, target: str, reason: Reason, now: float, user_id: int = USER_NONE,
                   control_event=CONTROL_BY_COMMAND) -> bool:
    """Put the contactor in ``target`` and log it (events 66 and ``control_event``). False if it
    was already there: nothing happens."""
    if target not in DISCONNECT_STATES:
        raise ValueError(f"no disconnect state {target!r}")
    state = _state(meter)
    previous = state["disconnect"]
    if previous == target:
        return False
    state["disconnect"] = target
    if (previous == CONNECTED) != (target == CONNECTED):
        state["last_switch"] = meter.utc_seconds(now)
    meter.dirty = True
    _log_disconnect(meter, previous, target, reason, now, user_id)
    if control_event is not None:
        argument = DISCONNECT << 8 | _STATE_CODE[target]
        meter.log_event(control_event.number, argument, now, user_id)
    return True


def resynchronize(meter, reason: Reason, now: float, user_id: int = USER_NONE) -> int:
    """Drive the contactor again to the state it was commanded to, so the sensed state matches:
    ends BT03 "Disconnect Switch Error" and logs event 66 with the unchanged state. Returns the
    state code."""
    current = disconnect_state(meter)
    conditions.end(meter, "disconnect_switch_error")
    _log_disconnect(meter, current, current, reason, now, user_id)
    return _STATE_CODE[current]


def disconnect_argument(previous: str, new: str, reason: Reason, failed: bool = False) -> int:
    """Event 66's argument."""
    argument = _STATE_CODE[new] | int(failed) << 4 | int(reason) << 8
    if previous == CONNECTED:
        argument |= _PREVIOUS_INTERNAL_CLOSED | _PREVIOUS_EXTERNAL_CLOSED
    return argument


def _log_disconnect(meter, previous, new, reason, now, user_id) -> None:
    argument = disconnect_argument(previous, new, reason)
    if not conditions.begin(meter, LOAD_DISCONNECT_CHANGED, now, argument, user_id):
        event = by_alarm(LOAD_DISCONNECT_CHANGED).number  # 66
        meter.log_event(event, argument, now, user_id)  # the bit is still set: log the change


# ---- EP36: the scheduled lock-open ----------------------------------------------------------
def schedule_lock_open(meter, at_utc: float | None, user_id: int = USER_NONE) -> None:
    """Lock the contactor open when the meter's UTC clock reaches ``at_utc`` (None cancels)."""
    state = _state(meter)
    state["lock_open_at"], state["lock_open_user"] = at_utc, user_id
    meter.dirty = True


def scheduled_lock_open(meter) -> float | None:
    state = _existing(meter)
    return None if state is None else state["lock_open_at"]


# ---- control relays ----------------------------------------------------------------------
def control_state(meter, relay: int) -> str:
    state = _existing(meter)
    return CLOSED if state is None else state["control"][relay - 1]


def set_control(meter, relay: int, target: str, now: float, user_id: int = USER_NONE,
                control_event=CONTROL_BY_COMMAND) -> bool:
    """Open or close control relay ``relay`` now (a pending randomized command is dropped).
    False if it was already there."""
    if target not in (OPEN, CLOSED):
        raise ValueError(f"no control relay state {target!r}")
    state = _state(meter)
    state["randomized"][relay - 1] = None
    meter.dirty = True
    if state["control"][relay - 1] == target:
        return False
    state["control"][relay - 1] = target
    meter.log_event(control_event.number, relay << 8 | _STATE_CODE[target], now, user_id)
    alarm = _RELAY_ALARMS[relay]
    if target == OPEN:
        conditions.begin(meter, alarm, now, 0, user_id)
    else:
        conditions.end(meter, alarm)
    return True


def randomize_control(meter, relay: int, target: str, window: int, now: float,
                      user_id: int = USER_NONE) -> int:
    """Open or close control relay ``relay`` after a delay drawn in 1..``window`` seconds
    (replacing any pending one). The draw is seeded by the meter and the instant: a fleet
    spreads its switching, which is what randomization is for, and a run can be repeated.
    Returns the delay."""
    utc = meter.utc_seconds(now)
    delay = random.Random(f"{meter.id}/{relay}/{utc}").randint(1, window)
    state = _state(meter)
    state["randomized"][relay - 1] = dict(target=target, due=utc + delay, user=user_id)
    state["random_start"][relay - 1] = delay
    meter.dirty = True
    return delay


def et54_fields(meter, now: float) -> dict:
    """ET54's control relay randomization fields (MEP p.134-135, relay 2 from 4.30 on):
    pending flag, seconds left, and the total delay of the pending (or last) operation."""
    state = _existing(meter)
    fields = {}
    for relay in CONTROL_RELAYS:
        pending = None if state is None else state["randomized"][relay - 1]
        left = 0 if pending is None else math.ceil(pending["due"] - meter.utc_seconds(now))
        prefix = f"control_relay_{relay}_random_"
        fields[prefix + "operation_pending"] = int(pending is not None)
        fields[prefix + "duration"] = max(0, min(left, 0xFFFF))
        fields[prefix + "start_duration"] = 0 if state is None else state["random_start"][relay - 1]
    return fields


# ---- timed actions -----------------------------------------------------------------------
def next_due(meter) -> float | None:
    """The meter-UTC instant of the next timed relay action (None: nothing scheduled)."""
    dues = [due for due, _ in _due_actions(meter)]
    return min(dues) if dues else None


def run_due(meter, now: float) -> None:
    """Carry out, in time order, every relay action due by virtual time ``now``, each logged at
    its own instant."""
    utc_now = meter.utc_seconds(now)
    for due, action in sorted(_due_actions(meter), key=lambda item: item[0]):
        if due <= utc_now:
            action(due - meter.state.clock_offset)


def _due_actions(meter) -> list:
    state = _existing(meter)
    if state is None:
        return []
    actions = []
    if state["lock_open_at"] is not None:
        actions.append((state["lock_open_at"], lambda at: _lock_open_now(meter, at)))
    for relay in CONTROL_RELAYS:
        pending = state["randomized"][relay - 1]
        if pending is not None:
            actions.append((pending["due"], _randomized_action(meter, relay, pending)))
    return actions


def _lock_open_now(meter, at: float) -> None:
    """EP36's instant: the contactor goes locked-open, whatever its lockout (the head-end set
    the time), logged as a scheduled change (events 66 reason 7 and 50)."""
    state = _state(meter)
    state["lock_open_at"] = None
    meter.dirty = True
    set_disconnect(meter, LOCKED_OPEN, Reason.SCHEDULE, at, state["lock_open_user"],
                   control_event=CONTROL_BY_SCHEDULE)


def _randomized_action(meter, relay: int, pending: dict):
    def act(at: float) -> None:
        set_control(meter, relay, pending["target"], at, pending["user"])
    return act


# ---- maximum power level (EP22) ----------------------------------------------------------
PRIMARY, SECONDARY = 0, 1


def max_power_level(meter, now: float) -> int:
    """The active maximum power level (0 primary, 1 secondary): ET30's status bit 2."""
    return _table(meter, 30, now)[2].status["secondary_level_active"]


def max_power_threshold(meter, now: float, level: int | None = None) -> int:
    """The threshold (W) of ``level`` (default: the active one): ET05.0 primary, ET05.4
    secondary."""
    level = max_power_level(meter, now) if level is None else level
    values = _table(meter, 5, now)[2]
    return (values.secondary_maximum_power_level if level == SECONDARY
            else values.primary_maximum_power_level)


def set_max_power_level(meter, level: int, now: float, user_id: int = USER_NONE) -> bool:
    """Make ``level`` the active maximum power level and log event 97 (False: it already was).
    The level lives in ET30's meter-controlled status, so a client's ET30 write keeps it."""
    table, layout, values = _table(meter, 30, now)
    if values.status["secondary_level_active"] == level:
        return False
    values.status["secondary_level_active"] = level
    meter.state.tables[table.number] = layout.build(values)
    meter.dirty = True
    meter.log_event(MAX_POWER_LEVEL_CHANGED.number, level, now, user_id)
    return True


# ---- prepay credit (EP21) ----------------------------------------------------------------
CREDIT_ADD, CREDIT_SUBTRACT, CREDIT_SET = 0, 1, 2
CREDIT_RANGE = range(-2**31, 2**31)


def credit(meter) -> int:
    """The remaining prepay credit in Wh (the unit of ET46.13's negative credit)."""
    state = meter.state.subsystems.get("prepay")
    return 0 if state is None else state["credit"]


def change_credit(meter, mode: int, amount: int, now: float, user_id: int = USER_NONE) -> int:
    """Add, subtract or set the credit and log event 53, 54 or 55; returns the new credit. The
    event argument is two bytes: the amount saturates at 65535, a set credit at -32768..32767
    (two's complement). Raises ValueError when the result leaves the INT32 range."""
    old = credit(meter)
    new = {CREDIT_ADD: old + amount, CREDIT_SUBTRACT: old - amount, CREDIT_SET: amount}[mode]
    if new not in CREDIT_RANGE:
        raise ValueError(f"credit {new} Wh does not fit an INT32")
    meter.subsystem("prepay", credit=0)["credit"] = new
    meter.dirty = True
    if mode == CREDIT_SET:
        meter.log_event(CREDIT_ADJUSTED.number, max(-0x8000, min(new, 0x7FFF)) & 0xFFFF, now,
                        user_id)
    else:
        event = CREDIT_ADDED if mode == CREDIT_ADD else CREDIT_SUBTRACTED
        meter.log_event(event.number, min(amount, 0xFFFF), now, user_id)
    return new
