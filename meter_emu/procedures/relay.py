"""Relay, maximum power and prepay procedures: EP02, EP21, EP22, EP23, EP30, EP36.

Their names and numbers are in the Echelon ANSI meter user's guide's procedure list (p.46; the
event 66 reasons, pp.32-43, name EP02, EP23 and EP30 as causes), the firmware family of the OSGP
meters. No guide gives their parameters, so every layout here is ours (designed), kept as small
as the action needs. The state they change, and the events they log, are in device/relay.py.
"""

from __future__ import annotations

import datetime as dt

from construct import Int32sl, Struct

from ..datatypes import UINT8, UINT16, UINT32, LTimeDate
from ..device import relay
from ..device.access import Key
from ..provenance import designed
from .catalog import ProcedureFailed, Result, ResultCode, declare, ep

RELAY_KEYS = {Key.MK, Key.PK, Key.MAK, Key.PLC}
_ECH = "name and number: Echelon ANSI meter user's guide p.46"
_ECH_66 = _ECH + " and event 66's reasons (pp.32-43)"

_STATE = Struct("state" / UINT8)  # event 66's code: 1 closed, 2 open, 3 locked open


def _refuse(code: int, reason: str):
    raise ProcedureFailed(code, reason)


def _move_contactor(meter, target: str, reason: relay.Reason, ctx) -> None:
    """Switch the contactor, unless the lockout since its last movement is still running."""
    wait = relay.lockout_remaining(meter, target, ctx.now)
    if wait > 0:
        _refuse(ResultCode.TIMING_CONSTRAINT,
                f"the contactor moved less than the ET30 lockout ago; wait {wait:.0f} s")
    relay.set_disconnect(meter, target, reason, ctx.now, ctx.user_id)


def _control_relays(meter) -> tuple[int, ...]:
    """Control relay 2 exists from firmware 4.30 (MEP p.79, ET11.26; ET61 has two arrays)."""
    from ..tables.dimensions import firmware_at_least
    return relay.CONTROL_RELAYS if firmware_at_least(meter, "4.30") else relay.CONTROL_RELAYS[:1]


# ---------------------------------------------------------------------------------------
# EP02 Disconnect and Control Relay Command

_OPEN, _CLOSE, _ARM, _LOCK_OPEN = 0, 1, 2, 3
_DISCONNECT_TARGETS = {_OPEN: relay.DISCONNECTED, _CLOSE: relay.CONNECTED, _ARM: relay.ARMED,
                       _LOCK_OPEN: relay.LOCKED_OPEN}
_CONTROL_TARGETS = {_OPEN: relay.OPEN, _CLOSE: relay.CLOSED}

_EP02 = Struct(
    "switch" / UINT8,  # 0 the load disconnect contactor, 1 control relay 1, 2 control relay 2
    "action" / UINT8,  # 0 open, 1 close, 2 arm for reconnect, 3 lock open (2, 3: contactor)
    "random_window" / UINT16,  # control relays: switch after a random 1..N s (0: now)
)
_EP02_RESPONSE = Struct("state" / UINT8, "delay" / UINT16)


def _relay_command(meter, p, ctx) -> Result:
    """EP02: open, close, arm or lock open the load disconnect contactor (events 66 reason 1 and
    49, BT03 Load Disconnect Changed, ET23.94), or open or close a control relay (event 49;
    opening relay 1 raises BT03 Control Relay Open and logs event 67), at once or, for a control
    relay, after a random delay within the given window (ET54.62-66 show it pending; result 1
    until it happens). Response: the new state code (1 closed, 2 open, 3 locked open) and the
    delay in seconds."""
    if p.switch == relay.DISCONNECT:
        if p.action not in _DISCONNECT_TARGETS:
            _refuse(ResultCode.INVALID_PARAMETER, f"action {p.action} is not 0..3")
        if p.random_window:
            _refuse(ResultCode.INVALID_PARAMETER, "only control relays are randomized")
        _move_contactor(meter, _DISCONNECT_TARGETS[p.action], relay.Reason.EP02, ctx)
        return Result(ResultCode.COMPLETED, _EP02_RESPONSE.build(dict(state=relay.state_code(meter),
                                                                      delay=0)))
    if p.switch not in _control_relays(meter):
        _refuse(ResultCode.INVALID_PARAMETER, f"switch {p.switch}: this meter has control "
                                              f"relays {_control_relays(meter)}")
    if p.action not in _CONTROL_TARGETS:
        _refuse(ResultCode.INVALID_PARAMETER, f"a control relay opens (0) or closes (1), not "
                                              f"{p.action}")
    target = _CONTROL_TARGETS[p.action]
    code = relay.STATE_OPEN if target == relay.OPEN else relay.STATE_CLOSED
    if p.random_window:
        delay = relay.randomize_control(meter, p.switch, target, p.random_window, ctx.now,
                                        ctx.user_id)
        return Result(ResultCode.NOT_COMPLETED, _EP02_RESPONSE.build(dict(state=code,
                                                                          delay=delay)))
    relay.set_control(meter, p.switch, target, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED, _EP02_RESPONSE.build(dict(state=code, delay=0)))


declare(
    ep(2), "Disconnect and Control Relay Command",
    execute=RELAY_KEYS,
    params=_EP02,
    run=_relay_command,
    results={1: "a randomized control relay command is pending (ET54.62-66)",
             2: "unknown switch or action, or a randomized contactor command",
             4: "the contactor moved less than ET30's reconnect lockout (>= 10 s) ago"},
    response=_EP02_RESPONSE,
    provenance=designed(
        f"{_ECH_66}; the MEP guide names EP02 as the remote command for the control relay "
        "(p.101). No layout is public; ours: switch (0 contactor, 1-2 control relays), "
        "action (0 open, 1 close, 2 arm, 3 lock open) and a randomization window in seconds "
        "for the control relays, whose pending operation ET54.62-66 report (MEP p.134-135)"),
)

# ---------------------------------------------------------------------------------------
# EP23 Remote Disconnect Reconnect

_EP23_TARGETS = {0: relay.DISCONNECTED, 1: relay.CONNECTED, 2: relay.ARMED}
_EP23 = Struct("action" / UINT8)  # 0 disconnect, 1 reconnect, 2 arm for reconnect


def _remote_disconnect(meter, p, ctx) -> Result:
    """EP23: disconnect (open), reconnect (close) or arm the load disconnect contactor for the
    customer to reconnect: events 66 (reason 5) and 49, BT03 Load Disconnect Changed, ET23.94.
    Response: the new state code."""
    if p.action not in _EP23_TARGETS:
        _refuse(ResultCode.INVALID_PARAMETER, f"action {p.action} is not 0..2")
    _move_contactor(meter, _EP23_TARGETS[p.action], relay.Reason.EP23, ctx)
    return Result(ResultCode.COMPLETED, _STATE.build(dict(state=relay.state_code(meter))))


declare(
    ep(23), "Remote Disconnect Reconnect",
    execute=RELAY_KEYS,
    params=_EP23,
    run=_remote_disconnect,
    results={2: "action not 0..2",
             4: "the contactor moved less than ET30's reconnect lockout (>= 10 s) ago"},
    response=_STATE,
    provenance=designed(
        f"{_ECH_66} (reason 5 'MP23'); no layout is public; ours: one action byte, 0 "
        "disconnect, 1 reconnect, 2 arm for reconnect by the customer's push button"),
)

# ---------------------------------------------------------------------------------------
# EP30 disconnect re-synchronization


def _resynchronize(meter, p, ctx) -> Result:
    """EP30: drive the contactor again to its commanded state, so the sensed state agrees:
    clears BT03 Disconnect Switch Error and logs event 66 with reason 8 and the unchanged
    state. Response: the state code."""
    code = relay.resynchronize(meter, relay.Reason.EP30, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED, _STATE.build(dict(state=code)))


declare(
    ep(30), "Disconnect Re-synchronization",
    execute=RELAY_KEYS,
    params=Struct(),
    run=_resynchronize,
    response=_STATE,
    provenance=designed(
        "the number is named only as event 66's reason 8 'MP30 invoked' (Echelon user's guide "
        "p.35), beside 9 'resync' and 10 'power-up resync': a re-synchronization of the "
        "contactor; the name and the effect are ours, with no parameters"),
)

# ---------------------------------------------------------------------------------------
# EP36 Schedule Disconnect Lock Open

_EP36 = Struct("lock_open_time" / LTimeDate())  # meter UTC; all zero cancels


def _schedule_lock_open(meter, p, ctx) -> Result:
    """EP36: at the given UTC time the load disconnect contactor goes locked-open (events 66
    reason 7 'schedule' and 50, BT03 Load Disconnect Changed, ET23.94 opened), at that exact
    virtual instant; a time already past locks it now, an all-zero time cancels the
    schedule."""
    if p.lock_open_time is None:
        relay.schedule_lock_open(meter, None, ctx.user_id)
        return Result(ResultCode.COMPLETED)
    at = p.lock_open_time.replace(tzinfo=dt.timezone.utc).timestamp()
    relay.schedule_lock_open(meter, max(at, meter.utc_seconds(ctx.now)), ctx.user_id)
    relay.run_due(meter, ctx.now)
    return Result(ResultCode.COMPLETED)


declare(
    ep(36), "Schedule Disconnect Lock Open",
    execute=RELAY_KEYS,
    params=_EP36,
    run=_schedule_lock_open,
    results={2: "the time is not a valid LTIME_DATE"},
    provenance=designed(
        f"{_ECH_66} (reason 7 'schedule'); no layout is public; ours: the UTC LTIME_DATE at "
        "which the contactor locks open (all zero cancels; one schedule at a time)"),
)

# ---------------------------------------------------------------------------------------
# EP22 Switch Maximum Power Level

_EP22 = Struct("level" / UINT8)  # 0 primary (ET05.0), 1 secondary (ET05.4)
_EP22_RESPONSE = Struct("level" / UINT8, "threshold_w" / UINT32)


def _switch_max_power(meter, p, ctx) -> Result:
    """EP22: make the primary (0, ET05.0) or secondary (1, ET05.4) maximum power level the
    active one: ET30 status bit 2, event 97 when it changes. Response: the level and its
    threshold in W."""
    if p.level not in (relay.PRIMARY, relay.SECONDARY):
        _refuse(ResultCode.INVALID_PARAMETER, f"level {p.level} is not 0 (primary) or 1")
    relay.set_max_power_level(meter, p.level, ctx.now, ctx.user_id)
    threshold = relay.max_power_threshold(meter, ctx.now, p.level)
    return Result(ResultCode.COMPLETED,
                  _EP22_RESPONSE.build(dict(level=p.level, threshold_w=threshold)))


declare(
    ep(22), "Switch Maximum Power Level",
    execute=RELAY_KEYS,
    params=_EP22,
    run=_switch_max_power,
    results={2: "level not 0 or 1"},
    response=_EP22_RESPONSE,
    provenance=designed(
        f"{_ECH}; the guides name only the Primary Maximum Power Level (ET05.0, MEP p.183); "
        "ours: one level byte (0 primary, 1 secondary at ET05.4), the active level shown in "
        "ET30's status"),
)

# ---------------------------------------------------------------------------------------
# EP21 Add Prepay Credit

_EP21 = Struct(
    "mode" / UINT8,  # 0 add, 1 subtract, 2 set
    "amount" / Int32sl,  # Wh of energy credit
)
_EP21_RESPONSE = Struct("credit" / Int32sl)


def _add_credit(meter, p, ctx) -> Result:
    """EP21: add to, subtract from or set the remaining prepay credit (Wh): event 53, 54 or 55
    with the amount (the new credit for 'set'). Response: the new credit (INT32). Spending it
    on metered energy is the metering engine's work."""
    if p.mode not in (relay.CREDIT_ADD, relay.CREDIT_SUBTRACT, relay.CREDIT_SET):
        _refuse(ResultCode.INVALID_PARAMETER, f"mode {p.mode} is not 0 add, 1 subtract, 2 set")
    if p.mode != relay.CREDIT_SET and p.amount <= 0:
        _refuse(ResultCode.INVALID_PARAMETER, "add and subtract take a positive amount")
    try:
        new = relay.change_credit(meter, p.mode, p.amount, ctx.now, ctx.user_id)
    except ValueError as exc:
        _refuse(ResultCode.INVALID_PARAMETER, str(exc))
    return Result(ResultCode.COMPLETED, _EP21_RESPONSE.build(dict(credit=new)))


declare(
    ep(21), "Add Prepay Credit",
    execute=RELAY_KEYS,
    params=_EP21,
    run=_add_credit,
    results={2: "mode not 0..2, an amount <= 0 to add or subtract, or a credit beyond INT32"},
    response=_EP21_RESPONSE,
    idempotent=False,  # adding twice adds twice (MEP p.43: no such procedure in a transaction)
    provenance=designed(
        f"{_ECH}; events 53-55 (added, subtracted, adjusted) are C12.19's; no layout is "
        "public; ours: mode (0 add, 1 subtract, 2 set) and an INT32 amount in Wh, the unit of "
        "ET46.13's negative credit (MEP p.121)"),
)
