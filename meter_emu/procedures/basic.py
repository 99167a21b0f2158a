"""Basic procedures (BP n, wire number n): declarations."""

from __future__ import annotations

import datetime as dt

from construct import Bytes, Struct

from ..device.access import Key
from ..provenance import c1219, documented
from ..datatypes import Bits, LTimeDate
from .catalog import ProcedureFailed, Result, ResultCode, bp, declare

_SET_DATE_TIME = Struct(
    "set_mask" / Bits(1, set_time=0, set_date=1, set_qualifier=2),
    "date_time" / LTimeDate(),
    "qualifier" / Bits(1, day_of_week=(0, 3), dst=3, gmt=4, tz_applied=5, dst_applied=6),
)


def _set_date_time(meter, p, ctx) -> Result:
    """BP10: set the meter's UTC clock. A time qualifier that says 'local time' (GMT flag clear,
    time zone applied) is converted with the meter's UTC offset; otherwise the time is UTC, as
    NES meters take it ("sets initial meter UTC date and time")."""
    mask, new = p.set_mask, p.date_time
    if not (mask["set_time"] or mask["set_date"]):
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER, "neither date nor time selected")
    if new is None:
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER, "date/time is all zero")
    if mask["set_qualifier"] and not p.qualifier["gmt"] and p.qualifier["tz_applied"]:
        new -= dt.timedelta(minutes=meter.profile.clock.utc_offset_minutes)
    current = meter.utc(ctx.now)
    if not mask["set_date"]:
        new = current.replace(hour=new.hour, minute=new.minute, second=new.second)
    elif not mask["set_time"]:
        new = new.replace(hour=current.hour, minute=current.minute, second=current.second)
    meter.set_utc(ctx.now, new, user_id=ctx.user_id)
    return Result(ResultCode.COMPLETED)


def _rk_may_set_clock(meter, key) -> bool:
    """ET04.71.0 "RK BP10 + EP16 Access": 0 = the Read-only Key may set the clock."""
    return key is Key.RK and not meter.system_info().rk_flags["rk_clock_disabled"]


declare(
    bp(10), "Set Date and Time",
    execute={Key.MK, Key.PK, Key.MAK, Key.PLC},
    also_allowed=_rk_may_set_clock,
    params=_SET_DATE_TIME,
    run=_set_date_time,
    provenance=c1219(
        "SET_MASK, DATE_TIME (LTIME_DATE), TIME_DATE_QUAL; the guides name the procedure "
        "(Echelon user's guide p.46) but give no layout"
    ),
)


# ---------------------------------------------------------------------------------------
# BP12-BP15 pending tables (OPG p.10-12; device/pending.py)

_PED = Struct("ped" / Bytes(6))  # the Pending Event Description, as in BT04 (OPG p.10)
_PENDING_KEYS = {Key.MK, Key.PK, Key.PLC}


def _activate(meter, p, ctx) -> Result:
    """BP12 (all) / BP13 (those whose PED matches): activate now, whatever their PED says."""
    from ..device import pending  # here: device.pending needs the table catalog, which needs us
    slots = pending.matching(meter, p.get("ped"))
    if not slots and "ped" in p:
        raise ProcedureFailed(ResultCode.NOT_COMPLETED, "no pending table matches the PED")
    for slot in slots:
        pending.activate(meter, slot, meter.utc_seconds(ctx.now), ctx.user_id)
    return Result(ResultCode.COMPLETED)


def _clear(meter, p, ctx) -> Result:
    """BP14 (all) / BP15 (those whose PED matches): drop the pending state, keep the data."""
    from ..device import pending
    slots = pending.matching(meter, p.get("ped"))
    if not slots and "ped" in p:
        raise ProcedureFailed(ResultCode.NOT_COMPLETED, "no pending table matches the PED")
    for slot in slots:
        pending.clear(meter, slot, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED)


_C1219_PENDING = ("ANSI C12.19 standard procedure; the OPG documents the PED parameter and result "
                  "1 'no pending table matched' (p.12)")
declare(bp(12), "Activate All Pending Tables", execute=_PENDING_KEYS, params=Struct(),
        run=_activate, provenance=c1219("ANSI C12.19 standard procedure, no parameters"))
declare(bp(13), "Activate Specific Pending Tables", execute=_PENDING_KEYS, params=_PED,
        run=_activate, provenance=c1219(_C1219_PENDING))
declare(bp(14), "Clear All Pending Tables", execute=_PENDING_KEYS, params=Struct(),
        run=_clear, provenance=c1219("ANSI C12.19 standard procedure, no parameters"))
declare(bp(15), "Clear Specific Pending Tables", execute=_PENDING_KEYS, params=_PED,
        run=_clear, provenance=documented("OPG p.11-12 (request = PED; result 1 if none matched)"))


# ---------------------------------------------------------------------------------------
# BP09 Remote Reset (C12.19: demand reset, self read, season change in one call)

_REMOTE_RESET = Struct(
    "actions" / Bits(1, demand_reset=0, self_read=1, season_change=2, new_season=(3, 4)),
)
MAX_SEASONS = 4  # BT54's seasons 0..3 (Echelon user's guide: event 24's argument)


def _remote_reset(meter, p, ctx) -> Result:
    """C12.19's remote reset: the self read first (so it holds the values before the reset),
    then the demand reset (BT25/ET41 snapshot, event 20), then the change to the new season
    (BT55's season, event 24 with the season). At least one action must be selected."""
    from ..events import SEASON_CHANGE
    from ..tables.registers import TARIFF, billing_state
    from . import metering

    actions = p.actions
    if not (actions["demand_reset"] or actions["self_read"] or actions["season_change"]):
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER, "no action selected")
    if actions["season_change"] and actions["new_season"] >= MAX_SEASONS:
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER,
                              f"season {actions['new_season']}: the calendar has 0..3")
    if actions["demand_reset"]:
        metering.check_reset_lockout(meter, ctx.now)  # refused before anything is done
    if actions["self_read"]:
        metering.record_self_read(meter, ctx)
    if actions["demand_reset"]:
        metering.demand_reset(meter, ctx)
    if actions["season_change"]:
        billing_state(meter, TARIFF)["season"] = actions["new_season"]
        meter.dirty = True
        meter.log_event(SEASON_CHANGE.number, actions["new_season"], ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED)


declare(
    bp(9), "Remote Reset",
    execute={Key.MK, Key.PK, Key.MAK, Key.PLC},
    params=_REMOTE_RESET,
    run=_remote_reset,
    provenance=c1219("ACTION_FLAG: DEMAND_RESET_FLAG (bit 0), SELF_READ_FLAG (1), "
                     "SEASON_CHANGE_FLAG (2), NEW_SEASON (3..6); NES lists no layout"),
)
