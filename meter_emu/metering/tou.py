"""The TOU calendar engine: BT54's dates, seasons, day schedules and tier switches on the meter's
local clock, with daylight saving time (BT53) and the calendar's self reads and demand resets.

MEP = MEP Client Developer's Guide (OSGP Alliance, 2022), OPG = Optical Port Programmer's Guide
(2021); printed page numbers.

The local clock (BT55, MEP p.229-230) is the meter's UTC plus BT53's time zone offset, plus BT53's
DST adjustment while DST is in effect; everything BT54 schedules runs on it (MEP p.225).

* A date's action (DST on/off, select season n, special schedule n for that day) and its demand
  reset take effect at the start of the date, 00:00:00 local (MEP p.226).
* DST switches on the date that says so, at BT53's DST Effective Time (MEP p.225): on at that
  standard time, off at that time plus ET04.63's DST Off Time Delta as the DST clock reads it
  (MEP p.60); with 02:00 and a delta of +60 min the clock goes 02:00 -> 03:00 in spring and
  03:00 -> 02:00 in autumn. The adjustment moves only the local clock; BT52 stays UTC.
* A date's self read is taken at ET04.65-66's Self-Read Time of that date (MEP p.60): BT21's
  daily and weekly self reads are "programmable via BT54" (OPG p.19-20), e.g. a MONTH 15 date
  with PERIOD 1 (every day) or a MONTH 14 one (every week) with the self read flag. Nothing is
  read unless BT54 schedules it.
* The day type is the date's special schedule when one is selected, else Saturday, Sunday or
  weekday; the season's record names the day schedule (BT50's Separate Week Days is False, so
  Monday..Friday share one). Day schedule k is tier switches 10k..10k+9 (MEP p.227) in time
  order; the tier before a day's first switch is its last switch's (tier 0 with no switch).
* The season is the one the last season selection on or before the date chose (searched back
  LOOKBACK_DAYS; none found: the season stays).
* RDATE (MEP p.41-42): MONTH 1..12 once a year, 13 every month, on DAY moved by OFFSET (1 the
  WEEKDAY before, 2..5 the first..fourth WEEKDAY on or after, 6 the month's last WEEKDAY if on or
  after DAY, 7 the date and the day after, 8..14 weekend moves, 15 the day after only); 14 every
  WEEKDAY; 15 every PERIOD days. Non-recurring dates (ANSI_DATE) count in the 12-season format.

Events, each stamped with its own instant: 22/23 DST on/off, 24 Season Change (argument: the new
season; BT24 takes BT23 with the ending season first), 26 Special Schedule Activation (0/1),
27 Tier Switch Change (the tier energy goes to; none while EP05 holds a tier). Self reads (21)
and demand resets (20) come from procedures/metering.py.

Designed (the guides leave these open):
* DAY past the month's end (31 in April, 29 February in other years) means the month's last day;
* MONTH 15: BT50 has no anchor date, so periods count from 2000-01-01 (ANSI_DATE's year 00):
  the dates d with (d - DELTA) divisible by PERIOD; PERIOD 0 counts as 1 (every day);
* several actions on one date: non-recurring dates, then recurring ones, in table order; the
  last season or special schedule selection wins;
* BT55's Special Schedule Active (``special_schedule_active``) reads n + 1 while special
  schedule n is in force and 0 otherwise: the guide numbers them from 0 and names no "none";
* clock set forward (BP10, EP16): the state at the new time applies at once with one event per
  part that changed; the boundaries skipped are not replayed, except that the new date's demand
  reset and self read are taken (once) when their time has passed;
* clock set backward, or virtual time restarting earlier: the state at the new time applies
  without events; until the clock passes the latest instant it had reached, boundaries change
  the state silently, and no date's demand reset or self read is repeated;
* the hour DST's end repeats: tier switches in it happen again (the tier follows the clock);
  self reads and demand resets do not;
* a client's change of BT53, BT54 or ET04's DST delta and Self-Read Time applies at once, with
  the events of what it changed; a Self-Read Time moved later than the present time of day
  takes the day's self read at the new time.

Speed: the parsed calendar is shared by every meter with the same BT54 image; a meter keeps only
its next boundary (``_Runtime``), so ``run_due`` and ``current_tier`` cost a few lookups per step.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
import zlib
from functools import lru_cache
from typing import NamedTuple

from ..events import DST_OFF, DST_ON, SEASON_CHANGE, SPECIAL_SCHEDULE, TIER_SWITCH, USER_NONE
from ..tables import time_tou
from ..tables.catalog import WriteContext, bt, et
from ..tables.dimensions import product_dimensions

#: the meter subsystem holding the engine's state
STATE = "tou"
#: how far back the season and DST in force are looked for (a year and a margin)
LOOKBACK_DAYS = 400
DAY = 86_400
_EPOCH = dt.date(1970, 1, 1).toordinal()  # local second 0 is this date's midnight
_ANSI_EPOCH = dt.date(2000, 1, 1).toordinal()
_BT53, _BT54, _ET04 = bt(53), bt(54), et(4)
_DST_OFF_DELTA_AT, _SELF_READ_TIME_AT = 63, 65  # ET04 (MEP p.60)
_SEASON_ACTIONS = range(time_tou.FIRST_SEASON_ACTION, time_tou.FIRST_SPECIAL_SCHEDULE_ACTION)
_SPECIAL = 7  # index of special schedule 0 in a season's row (Sunday..Saturday come first)
#: OFFSETs 8..14 (MEP p.41-42): weekday (0 = Sunday) -> days the date moves
_WEEKEND_MOVES = {8: {0: 1}, 9: {0: -2}, 10: {6: 2}, 11: {6: -1}, 12: {0: 1, 6: 2},
                  13: {0: -2, 6: -1}, 14: {0: 1, 6: -1}}


_registers_module = None


def _registers():
    """tables.registers, imported on first use: the table package imports the engine, and so
    this module, while it loads."""
    global _registers_module
    if _registers_module is None:
        from ..tables import registers as module
        _registers_module = module
    return _registers_module


def _day(local: float) -> int:
    """The date (ordinal) of a local instant in seconds."""
    return int(local // DAY) + _EPOCH


def _midnight(day: int) -> int:
    return (day - _EPOCH) * DAY


# ---- the calendar ---------------------------------------------------------------------------

class DayActions(NamedTuple):
    """What BT54 schedules on one date."""

    season: int | None = None
    special: int | None = None
    dst: bool | None = None  # True: DST on, False: DST off
    self_read: bool = False
    demand_reset: bool = False


_NOTHING = DayActions()


@lru_cache(maxsize=4096)
def _observed(rdate: int, year: int) -> frozenset:
    """The dates (ordinals) a yearly (MONTH 1..12) or monthly (13) RDATE falls on in ``year``."""
    month, offset, weekday, day = rdate & 0xF, rdate >> 4 & 0xF, rdate >> 8 & 0x7, rdate >> 11
    if not day:
        return frozenset()
    dates = set()
    for m in range(1, 13) if month == 13 else (month,):
        days_in_month = _calendar.monthrange(year, m)[1]
        base = dt.date(year, m, min(day, days_in_month)).toordinal()
        dates.update(_moved(base, offset, weekday, base - min(day, days_in_month) + days_in_month))
    return frozenset(dates)


def _moved(base: int, offset: int, weekday: int, month_end: int) -> tuple[int, ...]:
    """RDATE OFFSET applied to the date ``base`` (MEP p.41-42). Ordinal % 7 is the weekday with
    0 = Sunday, BT54's numbering."""
    day_of_week = base % 7
    if offset == 0:
        return (base,)
    if offset <= 6 and weekday > 6:
        return ()  # BT54 refuses it; a stored one selects nothing
    if offset == 1:  # the WEEKDAY before
        return (base - ((day_of_week - weekday) % 7 or 7),)
    if offset <= 5:  # the first..fourth WEEKDAY on or after
        return (base + (weekday - day_of_week) % 7 + 7 * (offset - 2),)
    if offset == 6:  # the month's last WEEKDAY, on or after DAY
        last = month_end - (month_end % 7 - weekday) % 7
        return (last,) if last >= base else ()
    if offset == 7:
        return (base, base + 1)
    if offset == 15:
        return (base + 1,)
    return (base + _WEEKEND_MOVES[offset].get(day_of_week, 0),)


class _Dated(NamedTuple):
    kind: str  # "ansi" (ANSI_DATE ordinal in value) or "rdate"
    value: int
    action: int
    demand_reset: bool
    self_read: bool

    def falls_on(self, day: int, year: int) -> bool:
        if self.kind == "ansi":
            return self.value == day
        month = self.value & 0xF
        if month == 14:
            return day % 7 == self.value >> 8 & 0x7
        if month == 15:
            period = max(self.value >> 4 & 0x3F, 1)
            return (day - _ANSI_EPOCH - (self.value >> 10)) % period == 0
        return any(day in _observed(self.value, y) for y in (year, year - 1, year + 1))


class Calendar:
    """BT54 parsed: the dates with an action, the day schedules ((second of day, tier), ...) and
    per season the day schedule of Sunday..Saturday, special schedule 0 and 1. Shared by every
    meter with the same image; what it works out per date is remembered."""

    def __init__(self, dates: tuple, schedules: tuple, seasons: tuple):
        self.dates, self.schedules, self.seasons = dates, schedules, seasons
        self.has_dst = any(d.action in (time_tou.DST_ON, time_tou.DST_OFF) for d in dates)
        self.has_seasons = any(d.action in _SEASON_ACTIONS for d in dates)
        #: no dates and one tier all day in every season: nothing ever happens (BT54's default)
        self.static = not dates and all(len(schedules[n]) == 1 for row in seasons for n in row
                                        if n < len(schedules))
        self._days: dict[int, DayActions] = {}
        self._season_memo: dict[int, int | None] = {}

    def actions_on(self, day: int) -> DayActions:
        found = self._days.get(day)
        if found is None:
            if len(self._days) > 50_000:
                self._days.clear()
            found = self._days[day] = self._actions(day) if self.dates else _NOTHING
        return found

    def _actions(self, day: int) -> DayActions:
        year = dt.date.fromordinal(day).year
        season = special = dst = None
        self_read = demand_reset = False
        for dated in self.dates:
            if not dated.falls_on(day, year):
                continue
            action = dated.action
            if action in (time_tou.DST_ON, time_tou.DST_OFF):
                dst = action == time_tou.DST_ON
            elif action in _SEASON_ACTIONS:
                season = action - time_tou.FIRST_SEASON_ACTION
            elif action >= time_tou.FIRST_SPECIAL_SCHEDULE_ACTION:
                special = action - time_tou.FIRST_SPECIAL_SCHEDULE_ACTION
            self_read |= dated.self_read
            demand_reset |= dated.demand_reset
        if season is special is dst is None and not (self_read or demand_reset):
            return _NOTHING
        return DayActions(season, special, dst, self_read, demand_reset)

    def season_on(self, day: int) -> int | None:
        """The season the last selection on or before ``day`` chose (None: none found)."""
        if not self.has_seasons:
            return None
        memo = self._season_memo
        if day in memo:
            return memo[day]
        if len(memo) > 50_000:
            memo.clear()
        walked, found = [], None
        for d in range(day, day - LOOKBACK_DAYS, -1):
            if d in memo:
                found = memo[d]
                break
            season = self.actions_on(d).season
            if season is not None:
                found = memo[d] = season
                break
            walked.append(d)
        for d in walked:
            memo[d] = found
        return found

    def tier_at(self, season: int, day: int, special: int | None, second: float) -> int:
        """The tier the day schedule of ``day`` (its season, weekday or special schedule) has in
        force ``second`` seconds after local midnight."""
        switches = self.switches_on(season, day, special)
        tier = switches[-1][1]
        for start, switch_tier in switches:
            if start > second:
                break
            tier = switch_tier
        return tier

    def switches_on(self, season: int, day: int, special: int | None) -> tuple:
        """The day schedule of ``day``: its special schedule's, else its weekday's."""
        row = self.seasons[season] if season < len(self.seasons) else self.seasons[0]
        index = day % 7 if special is None else _SPECIAL + special
        number = row[index] if index < len(row) else row[day % 7]  # BT54 refuses such codes
        return self.schedules[number] if number < len(self.schedules) else ((0, 0),)


def _u16(image: bytes, at: int) -> int:
    return image[at] | image[at + 1] << 8


def parse_calendar(image: bytes, seasons: int, non_recurring: int, recurring: int,
                   switches: int) -> Calendar:
    """BT54 (MEP p.225-229) from its bytes, with plain integer arithmetic (no construct: a
    fleet parses it once per distinct image)."""
    records = []
    for i in range(non_recurring + recurring):
        at = 3 * i
        records.append((i < non_recurring, _u16(image, at), image[at + 2]))
    new_format = bool(image[3 * non_recurring + 2] >> 7) if recurring else False
    dates = []
    for ansi, value, action_byte in records:
        action, demand_reset, self_read = action_byte & 0x1F, action_byte >> 5 & 1, \
            action_byte >> 6 & 1
        if not (action or demand_reset or self_read):
            continue
        if ansi:
            if not new_format:
                continue  # the 4-season format has no non-recurring dates (MEP p.227)
            try:
                value = dt.date(2000 + (value & 0x7F), value >> 7 & 0xF, value >> 11).toordinal()
            except ValueError:
                continue
        elif not value & 0xF:
            continue  # MONTH 0: unassigned
        dates.append(_Dated("ansi" if ansi else "rdate", value, action, bool(demand_reset),
                            bool(self_read)))
    base = 3 * (non_recurring + recurring)
    schedules = []
    per_schedule = time_tou.SWITCHES_PER_DAY_SCHEDULE
    for first in range(0, switches, per_schedule):
        used = []
        for i in range(first, min(first + per_schedule, switches)):
            value = _u16(image, base + 3 * i)
            hour, minute = value >> 11, value >> 5 & 0x3F
            start = hour * 3600 + minute * 60
            if hour > 23 or minute > 59 or (used and start <= used[-1][0]):
                break  # the sorted switches end here (unused records are zeros)
            used.append((start, value & 0x7))
        schedules.append(tuple(used) or ((0, 0),))
    base += 3 * switches
    rows = []
    for s in range(seasons):
        saturday, sunday, weekday, special_0, special_1 = image[base + 5 * s:base + 5 * s + 5]
        rows.append((sunday, *(weekday,) * 5, saturday, special_0, special_1))
    return Calendar(tuple(dates), tuple(schedules), tuple(rows))


_CALENDARS: dict[tuple, Calendar] = {}
_DEFAULT_IMAGES: dict[str, bytes] = {}


def _calendar_for(meter, raw: bytes | None) -> tuple[Calendar, bytes]:
    """The parsed BT54 of ``meter`` (its stored image, else the default one) and the image."""
    if raw is None:
        firmware = meter.profile.identity.firmware_version
        raw = _DEFAULT_IMAGES.get(firmware)
        if raw is None:
            raw = _DEFAULT_IMAGES[firmware] = meter.table_bytes(_BT54, 0.0)
    d = product_dimensions(meter)
    key = (raw, d.seasons, d.non_recurring_dates, d.recurring_dates, d.tier_switches)
    parsed = _CALENDARS.get(key)
    if parsed is None:
        if len(_CALENDARS) > 256:
            _CALENDARS.clear()
        parsed = _CALENDARS[key] = parse_calendar(raw, *key[1:])
    return parsed, raw


# ---- per meter ------------------------------------------------------------------------------

class _Runtime:
    """What a meter derives from its configuration and state (not saved): the tables it was
    built from (by identity), the calendar, BT53/ET04 settings in seconds, the state dict it
    follows, and the next boundary (meter UTC) with whether DST switches there."""

    __slots__ = ("state", "st", "raw54", "raw53", "raw_et04", "et04_fields", "calendar", "config",
                 "zone", "adjustment", "dst_time", "off_delta", "self_read_time", "next", "flip",
                 "seen")

    def __init__(self):
        self.st = self.next = self.seen = None
        self.flip = False


def _runtime(meter) -> _Runtime:
    """The meter's configuration as the engine uses it, rebuilt when BT53, BT54 or ET04 changed
    (their stored images are compared by identity) or the state was replaced."""
    rt = getattr(meter, "_tou_runtime", None)
    state = meter.state
    tables = state.tables
    et04 = tables.get(_ET04)
    if (rt is None or rt.state is not state or tables.get(_BT54) is not rt.raw54
            or tables.get(_BT53) is not rt.raw53):
        rt = meter._tou_runtime = _configure(meter, rt)
    elif et04 is not rt.raw_et04:
        if et04 is not None and _et04_fields(et04) == rt.et04_fields:
            rt.raw_et04 = et04  # e.g. ET04.0 moved: the PLC sequence number, on every request
        else:
            rt = meter._tou_runtime = _configure(meter, rt)
    return rt


def _configure(meter, old: _Runtime | None) -> _Runtime:
    tables = meter.state.tables
    rt = _Runtime()
    rt.state = meter.state
    rt.raw54, rt.raw53, rt.raw_et04 = tables.get(_BT54), tables.get(_BT53), tables.get(_ET04)
    rt.calendar, image = _calendar_for(meter, rt.raw54)
    dst_time, adjustment, zone = time_tou.time_offset(meter)
    et04 = rt.raw_et04 if rt.raw_et04 is not None else meter.table_bytes(_ET04, 0.0)
    rt.et04_fields = _et04_fields(et04)
    off_delta = int.from_bytes(et04[_DST_OFF_DELTA_AT:_DST_OFF_DELTA_AT + 2], "little",
                               signed=True)
    hour, minute = et04[_SELF_READ_TIME_AT], et04[_SELF_READ_TIME_AT + 1]
    rt.zone, rt.adjustment, rt.dst_time = zone * 60, adjustment * 60, dst_time
    rt.off_delta, rt.self_read_time = off_delta * 60, hour * 3600 + minute * 60
    settings = (dst_time, adjustment, zone, off_delta, hour, minute)
    rt.config = zlib.crc32(image + repr(settings).encode())
    if old is not None and old.state is meter.state:
        rt.seen = old.seen
    return rt


def _et04_fields(et04: bytes) -> bytes:
    """The ET04 bytes the TOU reads: DST off time delta and self-read time."""
    return (et04[_DST_OFF_DELTA_AT:_DST_OFF_DELTA_AT + 2]
            + et04[_SELF_READ_TIME_AT:_SELF_READ_TIME_AT + 2])


def _sync(meter, now: float) -> _Runtime:
    """The runtime with the TOU state in line with it: started at ``now`` on first use,
    re-evaluated when the configuration changed."""
    rt = _runtime(meter)
    st = meter.state.subsystems.get(STATE)
    if st is None or rt.st is not st:
        _attach(meter, rt, st, now)
    return rt


def _attach(meter, rt: _Runtime, st: dict | None, now: float) -> None:
    if st is None:
        utc = now + meter.state.clock_offset
        rt.st = meter.subsystem(STATE, at=utc, high=utc, day=0, self_read_day=0, dst=False,
                                special=None, config=rt.config)
        meter.dirty = True
        _initialize(meter, rt, utc)
    else:
        rt.st = st
        if st.get("config") != rt.config:  # a client changed BT53, BT54 or ET04's times
            st["config"] = rt.config
            at = max(st["at"], rt.seen if rt.seen is not None else st["at"])
            dst = _dst_at(rt, at)
            local = at + rt.zone + (rt.adjustment if dst else 0)
            day = _day(local)
            st["day"] = max(st["day"], day)  # today's date actions began at 00:00, before it
            if local - _midnight(day) >= rt.self_read_time:
                st["self_read_day"] = max(st["self_read_day"], day)
            elif st["self_read_day"] == day:
                st["self_read_day"] = day - 1  # today's Self-Read Time now lies ahead
            _apply(meter, rt, at, dst, loud=True)
    _plan(meter, rt)


def _initialize(meter, rt: _Runtime, utc: float) -> None:
    """The state the calendar gives at ``utc``, taken on quietly: nothing happened, the meter
    only starts counting from here (today's demand reset and a self read already due count as
    done)."""
    dst = _dst_at(rt, utc)
    local = utc + rt.zone + (rt.adjustment if dst else 0)
    day = _day(local)
    rt.st["day"] = day
    rt.st["self_read_day"] = day if local - _midnight(day) >= rt.self_read_time else day - 1
    _apply(meter, rt, utc, dst, loud=False)


def _dst_at(rt: _Runtime, utc: float) -> bool:
    """Whether DST is in effect at ``utc`` by the calendar: the latest DST date action whose
    switching instant is not later (none within LOOKBACK_DAYS: no DST)."""
    cal = rt.calendar
    if not cal.has_dst:
        return False
    latest, state, stop = None, False, None
    for day in range(_day(utc + rt.zone) + 1, _day(utc + rt.zone) - LOOKBACK_DAYS, -1):
        if stop is not None and day < stop:
            break
        turn = cal.actions_on(day).dst
        if turn is None:
            continue
        at = _midnight(day) + rt.dst_time - rt.zone
        if not turn:  # the end is read on the DST clock
            at += rt.off_delta - rt.adjustment
        if at <= utc and (latest is None or at > latest):
            latest, state = at, turn
            stop = day - 2 if stop is None else stop  # an earlier date may still switch later
    return state


def _apply(meter, rt: _Runtime, utc: float, dst: bool, loud: bool) -> None:
    """Bring the TOU state to what it is at ``utc`` (meter UTC) with DST ``dst``: the date's
    demand reset and self read when due and not yet done, then DST, season, special schedule
    and tier; ``loud`` logs the events (and takes the BT24 snapshot) of what changed."""
    registers = _registers()
    st, cal = rt.st, rt.calendar
    local = utc + rt.zone + (rt.adjustment if dst else 0)
    day = _day(local)
    second = local - _midnight(day)
    virtual = utc - meter.state.clock_offset
    turned = dst != st["dst"]
    st["dst"] = dst
    actions = cal.actions_on(day)
    reset = read = False
    if day > st["day"]:
        st["day"] = day
        reset = actions.demand_reset
    if second >= rt.self_read_time and day > st["self_read_day"]:
        st["self_read_day"] = day
        read = actions.self_read
    if loud and (read or reset):
        _one_shots(meter, virtual, read, reset)
    tariff = registers.billing_view(meter, registers.TARIFF)
    if turned and loud:
        meter.log_event((DST_ON if dst else DST_OFF).number, 0, virtual)
    season = cal.season_on(day)
    if season is None or season >= len(cal.seasons):
        season = tariff["season"]
    if season != tariff["season"]:
        if loud:
            registers.store_season_snapshot(meter, virtual)
        registers.billing_state(meter, registers.TARIFF)["season"] = season
        if loud:
            meter.log_event(SEASON_CHANGE.number, season, virtual)
    if actions.special != st["special"]:
        st["special"] = actions.special
        if loud and actions.special is not None:
            meter.log_event(SPECIAL_SCHEDULE.number, actions.special, virtual)
    tier = cal.tier_at(season, day, actions.special, second)
    if tier != tariff["calendar_tier"]:
        before, _ = registers.tier_status(meter)
        registers.billing_state(meter, registers.TARIFF)["calendar_tier"] = tier
        after, _ = registers.tier_status(meter)
        if loud and after != before:
            meter.log_event(TIER_SWITCH.number, after, virtual)
    st["at"] = utc
    if loud and utc > st["high"]:
        st["high"] = utc
    meter.dirty = True


def _one_shots(meter, virtual: float, read: bool, reset: bool) -> None:
    """The calendar's self read, then its demand reset (the self read keeps the demands the
    reset clears), through the procedures' own code (BT26 and event 21; BT25, ET41 and event
    20, with ET41's reason 'scheduled')."""
    registers = _registers()
    from ..procedures.metering import demand_reset, record_self_read  # procedures load tables

    ctx = WriteContext(key=None, now=virtual, user_id=USER_NONE, port="TOU calendar")
    if read:
        record_self_read(meter, ctx)
    if reset:
        demand_reset(meter, ctx)
        registers.mark_last_reset(meter, registers.SCHEDULED_RESET)


def _plan(meter, rt: _Runtime) -> None:
    """The next boundary after the state's instant: today's next tier switch, self read or DST
    switch, or the next midnight (a new day type, date actions)."""
    registers = _registers()
    st, cal = rt.st, rt.calendar
    if cal.static:
        rt.next = None
        return
    dst = st["dst"]
    offset = rt.zone + (rt.adjustment if dst else 0)
    local = st["at"] + offset
    day = _day(local)
    midnight = _midnight(day)
    second = local - midnight
    best = midnight + DAY
    season = registers.billing_view(meter, registers.TARIFF)["season"]
    for start, _ in cal.switches_on(season, day, st["special"]):
        if start > second:
            best = min(best, midnight + start)
            break
    if second < rt.self_read_time < DAY and cal.actions_on(day).self_read:
        best = min(best, midnight + rt.self_read_time)
    flip = False
    if cal.has_dst:
        for d in (day - 1, day, day + 1):
            turn = cal.actions_on(d).dst
            if turn is None or turn == dst:
                continue
            at = _midnight(d) + rt.dst_time + (0 if turn else rt.off_delta)
            if local < at < best:
                best, flip = at, True
            elif at == best:
                flip = True
    rt.next, rt.flip = best - offset, flip


def _run(meter, rt: _Runtime, utc: float) -> None:
    """Every boundary up to ``utc``, in time order."""
    while rt.next is not None and rt.next <= utc:
        boundary, st = rt.next, rt.st
        _apply(meter, rt, boundary, st["dst"] != rt.flip, loud=boundary > st["high"])
        _plan(meter, rt)


def _went_back(meter, rt: _Runtime, utc: float, reached: float) -> None:
    """The clock is at ``utc``, before ``reached``: apply the state there quietly and remember
    how far the meter had got, so nothing is logged or repeated until it gets there again."""
    st = rt.st
    st["high"] = max(st["high"], reached)
    _apply(meter, rt, utc, _dst_at(rt, utc), loud=False)
    _plan(meter, rt)


# ---- the hooks ------------------------------------------------------------------------------

def current_tier(meter, now: float) -> int:
    """The tier (0-based) energy accumulates into at virtual time ``now``: the one EP05 holds,
    else the calendar's (registers.tier_status, without building its dicts on every step)."""
    registers = _registers()
    _sync(meter, now)
    tariff = meter.state.subsystems.get(registers.TARIFF)
    if tariff is None:
        return 0
    forced = tariff.get("forced_tier")
    return tariff.get("calendar_tier", 0) if forced is None else forced


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant of the next calendar boundary after the last one handled."""
    return _sync(meter, now).next


def run_due(meter, now: float) -> None:
    """Carry out every calendar boundary due by virtual time ``now``, each once, in time
    order. Virtual time earlier than the last boundary handled (a restart with an earlier start
    time) re-evaluates the state quietly."""
    rt = _sync(meter, now)
    utc = now + meter.state.clock_offset
    if utc < rt.st["at"]:
        _went_back(meter, rt, utc, max(rt.st["at"], rt.seen if rt.seen is not None else utc))
    rt.seen = utc
    if rt.next is not None and rt.next <= utc:
        _run(meter, rt, utc)


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set from ``old_utc`` to ``new_utc`` at virtual time ``now``: forward,
    the state at the new time applies with its events; backward, quietly (see the module's
    notes). Calling it twice for one change does nothing more."""
    rt = _sync(meter, now)
    st = rt.st
    if st["at"] == new_utc:
        return
    if new_utc < old_utc:
        _went_back(meter, rt, new_utc, max(old_utc, rt.seen if rt.seen is not None else old_utc))
    else:
        _run(meter, rt, old_utc)
        _apply(meter, rt, new_utc, _dst_at(rt, new_utc), loud=new_utc > st["high"])
        _plan(meter, rt)
    rt.seen = new_utc


# ---- what the clock tables show -------------------------------------------------------------

def _dst_now(meter, now: float) -> tuple[_Runtime, bool]:
    """DST in effect at virtual time ``now``: the engine's state (first brought in line with a
    changed configuration), or, before the engine started the calendar, the calendar's word for
    ``now``, so that a table rendering past instants never starts the calendar in the past."""
    if meter.state.subsystems.get(STATE) is None:
        rt = _runtime(meter)
        return rt, _dst_at(rt, now + meter.state.clock_offset)
    rt = _sync(meter, now)
    return rt, rt.st["dst"]


def local_offset(meter, now: float) -> int:
    """Seconds the local clock (BT55) is ahead of the meter's UTC: BT53's time zone offset, plus
    its DST adjustment while DST is in effect."""
    rt, dst = _dst_now(meter, now)
    return rt.zone + (rt.adjustment if dst else 0)


def dst_in_effect(meter, now: float | None = None) -> bool:
    """BT52/BT55 'Daylight Saving Time' flag (MEP p.224, p.230); with ``now``, see _dst_now."""
    if now is not None:
        return bool(_dst_now(meter, now)[1])
    return bool(meter.state.subsystems.get(STATE, {}).get("dst", False))


def special_schedule_active(meter) -> int:
    """BT55 Special Schedule Active (MEP p.231): special schedule n in force reads n + 1, none
    reads 0 (designed: the guide gives no 'none' value)."""
    special = meter.state.subsystems.get(STATE, {}).get("special")
    return 0 if special is None else special + 1
