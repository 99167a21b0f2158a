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

Reasons the meter itself acts on (designed where the guides are silent; ET05's designed fields
are in tables/time_tou.py, the engine's side in metering/control.py):

* maximum power (reason 2, event 51): the active level (ET05.0 primary or ET05.4 secondary,
  ET30 status bit 2) exceeded for ET30's Exceed Time Threshold (at least 1 s) opens the
  contactor, armed for the customer's push button (ET54.71.6 shows it locked during the
  lockout); with ET05.25 bit 2 it recloses by itself after ET30's lockout. ET30 status bit 0
  and ET46.17 (open time) show the trip until the contactor closes;
* prepay (reason 3, events 84 + BT03 "Prepay Credit Exhausted", 52): the credit reaching minus
  the emergency credit (ET05.30, shown as ET46.13 Prepay Negative Credit) opens the contactor;
  event 103 once when it falls to the warning threshold (ET05.26). Credit added back above
  that limit ends the condition and arms the contactor for the customer (reason 4 "prepay
  power", event 52): power is restored only by someone at the meter;
* the customer's push button (reason 6, event 106 always): closes an armed contactor only;
* schedules (reason 7, event 50): EP36's lock-open, and ET61 switch points when ET05.25 bit 1
  lets control relay 1's calendar drive the contactor;
* re-synchronization: a switch failure (MQTT trigger ``disconnect_switch_error``) logs event 66
  with the failure bit and raises BT03 "Disconnect Switch Error"; its end resynchronizes (reason
  9), as does a power-up after an outage while the contactor is open (reason 10).

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
import struct
from typing import NamedTuple

from ..events import (BUTTON_PRESSED, CONTROL_BY_COMMAND, CONTROL_BY_CONDITION,
                      CONTROL_BY_SCHEDULE, CONTROL_FOR_PREPAYMENT, CREDIT_ADDED, CREDIT_ADJUSTED,
                      CREDIT_SUBTRACTED, EVENTS, MAX_POWER_LEVEL_CHANGED, PREPAY_WARNING,
                      USER_NONE, by_alarm)
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
        reason=None,  # Reason of the contactor's last change (None: never changed)
        tripped=False,  # opened by the maximum power level and not closed since
        max_level_open_at=None,  # meter UTC of the last maximum power trip (ET46.17)
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
    elapsed = meter.utc_seconds(now) - state["last_switch"]
    return max(0.0, et30_settings(meter).reconnect_lockout - elapsed)


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
    state["disconnect"], state["reason"] = target, int(reason)
    if (previous == CONNECTED) != (target == CONNECTED):
        state["last_switch"] = meter.utc_seconds(now)
    if target == CONNECTED and state["tripped"]:
        state["tripped"] = False
        _set_et30_status(meter, now, power_level_exceeded=0, current_level_exceeded=0)
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


def switch_failed(meter, now: float) -> None:
    """The contactor did not follow its command (MQTT trigger ``disconnect_switch_error``):
    BT03 "Disconnect Switch Error" and event 66 with the failure bit, the commanded state and
    the reason of the command that failed."""
    current = disconnect_state(meter)
    if "disconnect_switch_error" in meter.state.alarms:
        return
    conditions.begin(meter, "disconnect_switch_error", now)
    reason = Reason(last_reason(meter) or Reason.RESYNC)
    argument = disconnect_argument(current, current, reason, failed=True)
    if not conditions.begin(meter, LOAD_DISCONNECT_CHANGED, now, argument):
        meter.log_event(by_alarm(LOAD_DISCONNECT_CHANGED).number, argument, now)


def last_reason(meter) -> int | None:
    """The Reason of the contactor's last change (None: it never changed)."""
    state = _existing(meter)
    return None if state is None else state.get("reason")


def button_pressed(meter, now: float) -> bool:
    """The customer's push button: event 106 always; a contactor armed for reconnect closes
    (event 66, reason 6 manual) once ET30's lockout allows it. A plainly open or locked-open
    contactor ignores the button. Returns whether the contactor closed."""
    meter.log_event(BUTTON_PRESSED.number, 0, now)
    if disconnect_state(meter) != ARMED or lockout_remaining(meter, CONNECTED, now) > 0:
        return False
    return set_disconnect(meter, CONNECTED, Reason.MANUAL, now, USER_NONE, control_event=None)


def push_button_locked(meter, now: float) -> bool:
    """ET54.71.6: the push button cannot close the contactor yet: armed after a maximum power
    trip, inside ET30's lockout."""
    return disconnect_state(meter) == ARMED and lockout_remaining(meter, CONNECTED, now) > 0


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


def schedule_disconnect(meter, target: str, now: float) -> bool:
    """An ET61 switch point moves the contactor (ET05.25.1): closed connects, open
    disconnects (events 66 reason 7 and 50), unless it is locked open or inside the lockout."""
    wanted = CONNECTED if target == CLOSED else DISCONNECTED
    if disconnect_state(meter) == LOCKED_OPEN or lockout_remaining(meter, wanted, now) > 0:
        return False
    return set_disconnect(meter, wanted, Reason.SCHEDULE, now, control_event=CONTROL_BY_SCHEDULE)


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
                      user_id: int = USER_NONE, control_event=CONTROL_BY_COMMAND) -> int:
    """Open or close control relay ``relay`` after a delay drawn in 1..``window`` seconds
    (replacing any pending one). The draw is seeded by the meter and the instant: a fleet
    spreads its switching, which is what randomization is for, and a run can be repeated.
    Returns the delay."""
    utc = meter.utc_seconds(now)
    delay = random.Random(f"{meter.id}/{relay}/{utc}").randint(1, window)
    state = _state(meter)
    state["randomized"][relay - 1] = dict(target=target, due=utc + delay, user=user_id,
                                          event=control_event.number)
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
    fields["status_flags"] = dict(disconnect_push_button_close_locked=int(
        push_button_locked(meter, now)))
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
        event = EVENTS[pending.get("event", CONTROL_BY_COMMAND.number)]
        set_control(meter, relay, pending["target"], at, pending["user"], control_event=event)
    return act


# ---- settings, read straight from the stored images (the engine asks on every step) ---------
class Et05(NamedTuple):
    """ET05 Control Output Settings (layout and provenance in tables/time_tou.py)."""

    primary_level_w: int = 0
    secondary_level_w: int = 0
    prepay_rates: tuple = (0, 0, 0, 0)  # Wh of credit per kWh in tiers 1-4 (0: 1000)
    calendar_modes: tuple = (0, 0)  # control relays 1 and 2, ET05.24
    thresholds_enabled: bool = False  # ET05.25.0
    calendar_drives_disconnect: bool = False  # ET05.25.1 (designed)
    auto_reconnect: bool = False  # ET05.25.2 (designed)
    prepay_warning_wh: int = 0  # ET05.26 (designed)
    emergency_credit_wh: int = 0  # ET05.30 (designed; ET46.13 shows it)
    calendar_random_window_s: int = 0  # ET05.34 (designed)


class Et30(NamedTuple):
    """ET30 Maximum Power or Current Level Control (tables/time_tou.py)."""

    maximum_current_ma: int = 0
    exceed_time_s: int = 0
    reconnect_lockout: int = 10
    status: int = 0  # bit 0 power exceeded, 1 current exceeded, 2 secondary level active


_ET05_AT, _ET30_AT = 2048 + 5, 2048 + 30
_ET05_HEAD = struct.Struct("<II4IBB")  # the 26 bytes of the first layout
_ET05_TAIL = struct.Struct("<IIH")
_ET30 = struct.Struct("<IHHB")
_DEFAULT_ET05, _DEFAULT_ET30 = Et05(), Et30()
_parsed: dict = {}  # stored image -> its tuple (images are immutable bytes; a few per fleet)


def et05_settings(meter) -> Et05:
    raw = meter.state.tables.get(_ET05_AT)
    if raw is None:
        return _DEFAULT_ET05
    found = _parsed.get(raw)
    if found is None:
        head = _ET05_HEAD.unpack_from(raw)
        tail = _ET05_TAIL.unpack_from(raw, _ET05_HEAD.size) \
            if len(raw) >= _ET05_HEAD.size + _ET05_TAIL.size else (0, 0, 0)
        modes, options = head[6], head[7]
        found = _remember(raw, Et05(head[0], head[1], head[2:6], (modes & 0xF, modes >> 4),
                                    bool(options & 1), bool(options & 2), bool(options & 4),
                                    *tail))
    return found


def et30_settings(meter) -> Et30:
    raw = meter.state.tables.get(_ET30_AT)
    if raw is None:
        return _DEFAULT_ET30
    found = _parsed.get(raw)
    return found if found is not None else _remember(raw, Et30(*_ET30.unpack_from(raw)))


def _remember(raw: bytes, parsed):
    if len(_parsed) > 4096:  # a fleet of differently configured meters: start again
        _parsed.clear()
    _parsed[raw] = parsed
    return parsed


def _set_et30_status(meter, now: float, **bits) -> None:
    """Change ET30's meter-controlled status bits (a client's ET30 write keeps them)."""
    table, layout, values = _table(meter, 30, now)
    values.status.update(bits)
    meter.state.tables[table.number] = layout.build(values)
    meter.dirty = True


def _feature(meter, name: str) -> bool:
    from ..procedures.system import feature_active  # procedures build on this layer

    return feature_active(meter, name)


# ---- maximum power level (EP22) ----------------------------------------------------------
PRIMARY, SECONDARY = 0, 1
#: "sustained" needs a duration: an Exceed Time Threshold of 0 acts as 1 s (designed)
MIN_EXCEED_S = 1


def max_power_level(meter, now: float | None = None) -> int:
    """The active maximum power level (0 primary, 1 secondary): ET30's status bit 2."""
    return et30_settings(meter).status >> 2 & 1


def max_power_threshold(meter, now: float | None = None, level: int | None = None) -> int:
    """The threshold (W) of ``level`` (default: the active one): ET05.0 primary, ET05.4
    secondary."""
    level = max_power_level(meter) if level is None else level
    settings = et05_settings(meter)
    return settings.secondary_level_w if level == SECONDARY else settings.primary_level_w


def set_max_power_level(meter, level: int, now: float, user_id: int = USER_NONE) -> bool:
    """Make ``level`` the active maximum power level and log event 97 (False: it already was).
    The level lives in ET30's meter-controlled status, so a client's ET30 write keeps it."""
    if max_power_level(meter) == level:
        return False
    _set_et30_status(meter, now, secondary_level_active=level)
    meter.log_event(MAX_POWER_LEVEL_CHANGED.number, level, now, user_id)
    return True


def max_power_limits(meter) -> tuple[float, float] | None:
    """(W, A) the load may not exceed, 0 for a limit not set; None while the control is off
    (EP07 feature 1, ET05.25.0, or no limit configured)."""
    settings = et05_settings(meter)
    if not settings.thresholds_enabled:
        return None
    watts = max_power_threshold(meter)
    amps = et30_settings(meter).maximum_current_ma / 1000.0
    if not (watts or amps) or not _feature(meter, "max_power_control"):
        return None
    return watts, amps


def exceed_time(meter) -> int:
    return max(MIN_EXCEED_S, et30_settings(meter).exceed_time_s)


def max_power_trip(meter, now: float, by_current: bool) -> None:
    """The load stayed above the level for the exceed time: the contactor opens, armed for the
    push button (events 66 reason 2 and 51), ET30 status and ET46.17 show it."""
    state = _state(meter)
    target = DISCONNECTED if et05_settings(meter).auto_reconnect else ARMED
    if not set_disconnect(meter, target, Reason.MAX_POWER, now,
                          control_event=CONTROL_BY_CONDITION):
        return
    state["tripped"], state["max_level_open_at"] = True, meter.utc_seconds(now)
    _set_et30_status(meter, now, power_level_exceeded=int(not by_current),
                     current_level_exceeded=int(by_current))


def auto_reconnect_due(meter) -> float | None:
    """Meter UTC at which a tripped contactor recloses by itself (ET05.25.2), else None."""
    state = _existing(meter)
    if state is None or not state["tripped"] or state["disconnect"] != DISCONNECTED \
            or not et05_settings(meter).auto_reconnect:
        return None
    return state["last_switch"] + et30_settings(meter).reconnect_lockout


def auto_reconnect(meter, now: float) -> None:
    set_disconnect(meter, CONNECTED, Reason.MAX_POWER, now, control_event=CONTROL_BY_CONDITION)


def tripped(meter) -> bool:
    state = _existing(meter)
    return state is not None and state["tripped"]


def max_level_open_time(meter) -> float | None:
    """ET46.17: meter UTC of the last opening by the maximum power level."""
    state = _existing(meter)
    return None if state is None else state["max_level_open_at"]


# ---- prepay credit (EP21) ----------------------------------------------------------------
CREDIT_ADD, CREDIT_SUBTRACT, CREDIT_SET = 0, 1, 2
CREDIT_RANGE = range(-2**31, 2**31)
#: a remaining credit within this of a limit has reached it (float time to energy rounding)
CREDIT_EPSILON_WH = 1e-3
PREPAY = "prepay"


def _prepay(meter) -> dict:
    return meter.subsystem(PREPAY, credit=0, spent=0.0, warned=False, exhausted=False)


def prepay_active(meter) -> bool:
    """Prepay runs once EP21 gave the meter a credit, while EP07 feature 0 is on."""
    return PREPAY in meter.state.subsystems and _feature(meter, "prepay")


def credit(meter) -> int:
    """The remaining prepay credit in whole Wh (the unit of ET46.13's negative credit)."""
    state = meter.state.subsystems.get(PREPAY)
    return 0 if state is None else state["credit"]


def remaining_credit(meter) -> float:
    """The credit in Wh with the part of a Wh already spent."""
    state = meter.state.subsystems.get(PREPAY)
    return 0.0 if state is None else state["credit"] - state.get("spent", 0.0)


def credit_rate(meter, tier: int) -> float:
    """Wh of credit one Wh costs in ``tier`` (ET05 rates in Wh per kWh; 0 reads 1000, 1:1)."""
    rates = et05_settings(meter).prepay_rates
    rate = rates[tier] if tier < len(rates) else 0
    return (rate or 1000) / 1000.0


def spend_credit(meter, wh: float) -> None:
    """Metered energy, already priced, leaves the credit (whole Wh reach ``credit``)."""
    state = _prepay(meter)
    spent = state.get("spent", 0.0) + wh
    whole = math.floor(spent + CREDIT_EPSILON_WH)
    state["credit"] -= whole
    state["spent"] = spent - whole
    meter.dirty = True


def prepay_limits(meter) -> tuple[float, float]:
    """(warning level, exhaustion level) of the remaining credit, Wh."""
    settings = et05_settings(meter)
    return float(settings.prepay_warning_wh), -float(settings.emergency_credit_wh)


def prepay_check(meter, now: float, user_id: int = USER_NONE) -> None:
    """Act on the remaining credit at ``now``: warning (103), exhaustion (84, contactor open,
    66 reason 3, 52), or restoration after credit was added (contactor armed, 66 reason 4,
    52)."""
    if not prepay_active(meter):
        return
    state = _prepay(meter)
    remaining = remaining_credit(meter)
    warning, limit = prepay_limits(meter)
    if remaining > warning + CREDIT_EPSILON_WH:
        state["warned"] = False
    elif not state["warned"] and warning > limit:
        state["warned"] = True
        meter.log_event(PREPAY_WARNING.number, 0, now, user_id)
    if not state["exhausted"] and remaining <= limit + CREDIT_EPSILON_WH:
        state["exhausted"] = True
        conditions.begin(meter, "prepay_credit_exhausted", now, 0, user_id)
        if disconnect_state(meter) in (CONNECTED, ARMED):  # locked open stays locked
            set_disconnect(meter, DISCONNECTED, Reason.PREPAY, now, user_id,
                           control_event=CONTROL_FOR_PREPAYMENT)
    elif state["exhausted"] and remaining > limit + CREDIT_EPSILON_WH:
        state["exhausted"] = False
        conditions.end(meter, "prepay_credit_exhausted")
        if disconnect_state(meter) == DISCONNECTED and last_reason(meter) == Reason.PREPAY:
            set_disconnect(meter, ARMED, Reason.PREPAY_POWER, now, user_id,
                           control_event=CONTROL_FOR_PREPAYMENT)
    meter.dirty = True


def change_credit(meter, mode: int, amount: int, now: float, user_id: int = USER_NONE) -> int:
    """Add, subtract or set the credit and log event 53, 54 or 55; returns the new credit. The
    event argument is two bytes: the amount saturates at 65535, a set credit at -32768..32767
    (two's complement). Raises ValueError when the result leaves the INT32 range. The new
    credit is acted on at once (warning, exhaustion, restoration)."""
    old = credit(meter)
    new = {CREDIT_ADD: old + amount, CREDIT_SUBTRACT: old - amount, CREDIT_SET: amount}[mode]
    if new not in CREDIT_RANGE:
        raise ValueError(f"credit {new} Wh does not fit an INT32")
    state = _prepay(meter)
    state["credit"] = new
    if mode == CREDIT_SET:
        state["spent"] = 0.0
    meter.dirty = True
    if mode == CREDIT_SET:
        meter.log_event(CREDIT_ADJUSTED.number, max(-0x8000, min(new, 0x7FFF)) & 0xFFFF, now,
                        user_id)
    else:
        event = CREDIT_ADDED if mode == CREDIT_ADD else CREDIT_SUBTRACTED
        meter.log_event(event.number, min(amount, 0xFFFF), now, user_id)
    prepay_check(meter, now, user_id)
    return new


# ---- what the MQTT state message shows -------------------------------------------------------
def summary(meter) -> dict:
    """The relay part of ``<prefix>/<meter>/state``."""
    reason = last_reason(meter)
    document = dict(
        disconnect=disconnect_state(meter),
        reason=None if reason is None else Reason(reason).name.lower(),
        control_relays={str(n): control_state(meter, n) for n in CONTROL_RELAYS},
        max_power_level="secondary" if max_power_level(meter) else "primary",
        max_power_threshold_w=max_power_threshold(meter),
        tripped=tripped(meter),
    )
    if PREPAY in meter.state.subsystems:
        state = meter.state.subsystems[PREPAY]
        document["credit_wh"] = credit(meter)
        document["credit_exhausted"] = bool(state.get("exhausted"))
    return document
