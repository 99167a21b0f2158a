"""Basic procedures (BP n, wire number n): declarations."""

from __future__ import annotations

import datetime as dt

from construct import Struct

from ..device.access import Key
from ..provenance import c1219
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
