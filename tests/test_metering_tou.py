"""The TOU calendar engine (meter_emu/metering/tou.py): BT54 tier switches, seasons, special
schedules, DST with BT53, calendar self reads and demand resets, EP05 overriding, clock changes,
restarts. Calendars are written as a client does (Meter.write_table with a WriteContext), time
moves with Meter.advance / Meter.move_clock, and BT55 is read through Meter.read_table.

MEP = MEP Client Developer's Guide (2022); printed page numbers. The default profile's local
clock is UTC + 60 min; 2026-01-01 is a Thursday, 2026-01-03 a Saturday.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import bt07

from meter_emu.device.access import Key
from meter_emu.device.errors import ServiceError
from meter_emu.device.meter import Meter, MeterState
from meter_emu.metering import quantities, tou
from meter_emu.metering import registers as energy
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, bt, et
from meter_emu.tables import registers
from meter_emu.tables.catalog import WriteContext

BT53, BT54, BT55, ET04 = bt(53), bt(54), bt(55), et(4)
# BT54 with BT50's dimensions (MEP p.222-228): 25 non-recurring and 23 recurring dates (3 bytes
# each), 200 tier switches (3 bytes), the seasons (5 bytes each), the calendar ID.
RECURRING_AT, SWITCHES_AT, SEASONS_AT = 75, 144, 744
DST_ON, DST_OFF, SEASON_0, SPECIAL_0 = 1, 2, 3, 19  # action codes (MEP p.226-227)
DEMAND_RESET_FLAG, SELF_READ_FLAG, NEW_FORMAT = 0x20, 0x40, 0x80
DEMAND_RESET, SELF_READ, EV_DST_ON, EV_DST_OFF, EV_SEASON, EV_SPECIAL, EV_TIER = \
    20, 21, 22, 23, 24, 26, 27
WATT_HOURS = 0  # BT16 source ID of forward active energy


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def meter_on(firmware: str = "3.50.01") -> Meter:
    return Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))


def running(start: float, firmware: str = "3.50.01") -> Meter:
    """A meter that has run up to ``start`` (its engine, and so the calendar, took a step), so
    what a client writes at ``start`` changes a running meter."""
    meter = meter_on(firmware)
    meter.advance(start - 1)
    meter.advance(start)
    return meter


def tier_switch(tier: int, hour: int, minute: int = 0) -> bytes:
    return (tier | minute << 5 | hour << 11).to_bytes(2, "little") + b"\x00"


def rdate(month: int, day: int = 0, weekday: int = 0, offset: int = 0) -> bytes:
    return (month | offset << 4 | weekday << 8 | day << 11).to_bytes(2, "little")


def every(period: int, delta: int = 0) -> bytes:
    """RDATE MONTH 15: every PERIOD days, DELTA days on (MEP p.41)."""
    return (15 | period << 4 | delta << 10).to_bytes(2, "little")


def ansi_date(year: int, month: int, day: int) -> bytes:
    return (year - 2000 | month << 7 | day << 11).to_bytes(2, "little")


def calendar(meter: Meter, schedules: dict, seasons: list, recurring=(), non_recurring=(),
             calendar_id: int = 7) -> bytes:
    """A BT54 image: ``schedules`` day schedule -> [(tier, hour, minute)], ``seasons`` rows
    (saturday, sunday, weekday, special 0, special 1), dates as (date bytes, action byte)."""
    image = bytearray(meter.table_bytes(BT54, 0))
    fmt = image[RECURRING_AT + 2] & NEW_FORMAT
    for i, (date, action) in enumerate(non_recurring):
        image[3 * i:3 * i + 3] = date + bytes([action])
    for i, (date, action) in enumerate(recurring):
        at = RECURRING_AT + 3 * i
        image[at:at + 3] = date + bytes([action | (fmt if i == 0 else 0)])
    for number, switches in schedules.items():
        for i, (tier, hour, minute) in enumerate(switches):
            at = SWITCHES_AT + 3 * (10 * number + i)
            image[at:at + 3] = tier_switch(tier, hour, minute)
    for number, row in enumerate(seasons):
        image[SEASONS_AT + 5 * number:SEASONS_AT + 5 * number + 5] = bytes(row)
    image[-4:] = calendar_id.to_bytes(4, "little")
    return bytes(image)


def write(meter: Meter, table: int, data: bytes, now: float, offset: int = 0) -> None:
    meter.write_table(table, data, WriteContext(Key.MK, now), offset)


def bt55(meter: Meter, now: float) -> dict:
    """BT55 (MEP p.229-231): local time, then Current Tier, Tier Drive, Season."""
    raw = meter.read_table(BT55, Key.MK, now)
    status = int.from_bytes(raw[7:9], "little")
    return dict(local=dt.datetime(2000 + raw[0], *raw[1:6]), tier=status & 7,
                drive=status >> 6 & 3, season=status >> 12)


def logged(meter: Meter, *numbers: int) -> list[tuple[str, int, int]]:
    """History log entries of events ``numbers`` as (UTC time, event, argument)."""
    return [(dt.datetime.fromtimestamp(e[0], dt.timezone.utc).strftime("%m-%d %H:%M:%S"), e[3],
             e[4]) for e in meter.state.history.entries if e[3] in numbers]


def procedure(meter: Meter, number: int, params: bytes, now: float, psn: int = 1) -> int:
    """Run a procedure through BT07/BT08; its result code."""
    write(meter, bt(7), bt07(number, psn, params), now)
    return meter.read_table(bt(8), Key.MK, now)[3]


#: weekdays: tier 0, tier 1 from 07:00, tier 0 from 22:00; weekends (schedule 1): tier 2
WORKWEEK = {0: [(0, 0, 0), (1, 7, 0), (0, 22, 0)], 1: [(2, 0, 0)]}
WORKWEEK_SEASON = (1, 1, 0, 0, 0)


# ---- tier switches -----------------------------------------------------------------------

def test_tier_switches_follow_the_weekday_and_weekend_schedules():
    start = utc("2026-01-01T00:00:00")  # Thursday 01:00 local
    meter = running(start)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), start)
    assert tou.next_due(meter, start) == utc("2026-01-01T06:00:00")  # 07:00 local
    before = bt55(meter, utc("2026-01-01T05:59:59"))
    assert (before["local"], before["tier"]) == (dt.datetime(2026, 1, 1, 6, 59, 59), 0)
    after = bt55(meter, utc("2026-01-01T06:00:00"))
    assert (after["local"], after["tier"], after["drive"]) == \
        (dt.datetime(2026, 1, 1, 7, 0, 0), 1, 0)
    assert bt55(meter, utc("2026-01-01T21:00:00"))["tier"] == 0  # 22:00 local
    assert bt55(meter, utc("2026-01-03T06:00:00"))["tier"] == 2  # Saturday 07:00 local
    assert bt55(meter, utc("2026-01-05T06:00:00"))["tier"] == 1  # Monday 07:00 local
    assert logged(meter, EV_TIER) == [
        ("01-01 06:00:00", 27, 1), ("01-01 21:00:00", 27, 0),
        ("01-02 06:00:00", 27, 1), ("01-02 21:00:00", 27, 0),
        ("01-02 23:00:00", 27, 2),  # Saturday 00:00 local
        ("01-04 23:00:00", 27, 0),  # Monday 00:00 local
        ("01-05 06:00:00", 27, 1),
    ]


def test_a_day_schedule_without_a_midnight_switch_starts_with_its_last_tier():
    start = utc("2026-01-01T00:00:00")
    meter = running(start)
    schedules = {0: [(1, 7, 0), (3, 22, 30)]}
    write(meter, BT54, calendar(meter, schedules, [(0, 0, 0, 0, 0)]), start)
    assert bt55(meter, start + 1)["tier"] == 3  # 01:00 local: 22:30's tier from the day before
    assert bt55(meter, utc("2026-01-01T21:29:59"))["tier"] == 1
    assert bt55(meter, utc("2026-01-01T21:30:00"))["tier"] == 3


def test_a_constant_load_lands_in_the_tier_in_force():
    start = utc("2026-01-01T00:00:00")  # 01:00 local
    meter = running(start)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), start)
    quantities.apply(meter, {"voltage": 230.0, "current": 10.0, "pf": 1.0}, start)
    meter.advance(utc("2026-01-01T08:00:00"))  # 09:00 local
    assert energy.tier_value(meter, 0, WATT_HOURS) == 6 * 2300  # 01:00-07:00 at 2300 W
    assert energy.tier_value(meter, 1, WATT_HOURS) == 2 * 2300  # 07:00-09:00
    assert energy.value(meter, WATT_HOURS) == 8 * 2300


# ---- seasons, special schedules ----------------------------------------------------------

#: season 0 from 1 October (the workweek), season 1 from 1 April (tier 3 all day)
SEASONAL = dict(
    schedules={**WORKWEEK, 2: [(3, 0, 0)]},
    seasons=[WORKWEEK_SEASON, (2, 2, 2, 2, 2)],
    recurring=[(rdate(10, 1), SEASON_0), (rdate(4, 1), SEASON_0 + 1)],
)


@pytest.mark.parametrize("firmware", ["3.10.21", "3.50.01"])  # 4- and 12-season formats
def test_season_change_on_a_recurring_date_logs_24_and_snapshots_bt23_into_bt24(firmware):
    start = utc("2026-03-31T21:00:00")  # 22:00 local, season 0, tier 0
    meter = running(start, firmware)
    write(meter, BT54, calendar(meter, **SEASONAL), start)
    quantities.apply(meter, {"voltage": 230.0, "current": 10.0, "pf": 1.0}, start)
    assert bt55(meter, start + 1)["season"] == 0
    change = utc("2026-03-31T23:00:00")  # 1 April 00:00 local
    state = bt55(meter, change)
    assert (state["season"], state["tier"]) == (1, 3)
    assert logged(meter, EV_SEASON, EV_TIER) == [("03-31 23:00:00", 24, 1),
                                                  ("03-31 23:00:00", 27, 3)]
    # BT24 (MEP p.211): STIME_DATE (local), the season that ended, then BT23 at the change
    bt24 = meter.read_table(bt(24), Key.MK, change)
    assert bt24[:6] == bytes([26, 4, 1, 0, 0, 0])
    fwd_total, fwd_tier0 = bt24[6:10], bt24[6 + 60:6 + 64]  # 15 summations of 4 bytes
    assert int.from_bytes(fwd_total, "little") == 2 * 2300  # 21:00-23:00 UTC at 2300 W
    assert int.from_bytes(fwd_tier0, "little") == 2 * 2300
    meter.advance(change + 3600)
    assert energy.tier_value(meter, 3, WATT_HOURS) == 2300  # the new season's tier


def test_special_schedule_on_a_non_recurring_date():
    start = utc("2026-12-24T12:00:00")  # Thursday 13:00 local
    meter = running(start)
    schedules = {0: WORKWEEK[0], 2: [(2, 0, 0)]}
    image = calendar(meter, schedules, [(0, 0, 0, 2, 0)],
                     non_recurring=[(ansi_date(2026, 12, 25), SPECIAL_0)])
    write(meter, BT54, image, start)
    assert bt55(meter, start + 1)["tier"] == 1
    assert tou.special_schedule_active(meter) == 0
    assert bt55(meter, utc("2026-12-25T11:00:00"))["tier"] == 2  # noon on the 25th
    assert tou.special_schedule_active(meter) == 1  # special schedule 0 (designed: n + 1)
    assert bt55(meter, utc("2026-12-25T23:00:00"))["tier"] == 0  # 26th, 00:00 local
    assert tou.special_schedule_active(meter) == 0
    assert bt55(meter, utc("2026-12-26T06:00:00"))["tier"] == 1  # Saturday -> schedule 0
    assert logged(meter, EV_SPECIAL, EV_TIER) == [
        ("12-24 12:00:00", 27, 1),  # the calendar written at 13:00 local
        ("12-24 21:00:00", 27, 0),  # 22:00 local
        ("12-24 23:00:00", 26, 0), ("12-24 23:00:00", 27, 2),
        ("12-25 23:00:00", 27, 0), ("12-26 06:00:00", 27, 1),
    ]


# ---- DST ---------------------------------------------------------------------------------

def _dst_meter(start: float) -> Meter:
    """DST from the last Sunday of March to the last Sunday of October (the first Sunday on or
    after the 25th), switching at 02:00 standard time (BT53) and back at 03:00 DST time (ET04.63
    delta +60 min), adjustment 60 min; tier 1 from 07:00 local."""
    meter = running(start)
    write(meter, BT53, bytes([2, 0, 0, 60]) + (60).to_bytes(2, "little", signed=True), start)
    write(meter, ET04, (60).to_bytes(2, "little", signed=True), start, offset=63)
    schedules = {0: [(0, 0, 0), (1, 7, 0)]}
    dates = [(rdate(3, 25, weekday=0, offset=2), DST_ON),
             (rdate(10, 25, weekday=0, offset=2), DST_OFF)]
    write(meter, BT54, calendar(meter, schedules, [(0, 0, 0, 0, 0)], recurring=dates), start)
    return meter


def test_dst_starts_at_the_effective_time_and_moves_the_local_clock():
    meter = _dst_meter(utc("2026-03-28T12:00:00"))
    before = bt55(meter, utc("2026-03-29T00:59:59"))
    assert before["local"] == dt.datetime(2026, 3, 29, 1, 59, 59)
    assert not tou.dst_in_effect(meter)
    after = bt55(meter, utc("2026-03-29T01:00:00"))  # 02:00 standard time
    assert after["local"] == dt.datetime(2026, 3, 29, 3, 0, 0)  # + BT53's 60 min
    assert tou.dst_in_effect(meter)
    bt52 = meter.read_table(bt(52), Key.MK, utc("2026-03-29T01:00:00"))
    assert bt52[:6] == bytes([26, 3, 29, 1, 0, 0])  # BT52 stays UTC (MEP p.224)
    assert bt55(meter, utc("2026-03-29T05:00:00"))["tier"] == 1  # 07:00 on the DST clock
    assert logged(meter, EV_DST_ON, EV_DST_OFF, EV_TIER) == [
        ("03-28 12:00:00", 27, 1),  # the calendar written at 13:00 local
        ("03-28 23:00:00", 27, 0),  # midnight
        ("03-29 01:00:00", 22, 0),
        ("03-29 05:00:00", 27, 1),
    ]


def test_a_meter_starting_in_summer_time_ends_dst_once_in_october():
    start = utc("2026-10-24T12:00:00")
    meter = _dst_meter(start)
    assert bt55(meter, start + 1)["local"] == dt.datetime(2026, 10, 24, 14, 0, 1)
    assert tou.dst_in_effect(meter)  # DST went on on 29 March
    last_dst = bt55(meter, utc("2026-10-25T00:59:59"))
    assert last_dst["local"] == dt.datetime(2026, 10, 25, 2, 59, 59)
    back = bt55(meter, utc("2026-10-25T01:00:00"))  # 03:00 on the DST clock
    assert back["local"] == dt.datetime(2026, 10, 25, 2, 0, 0)
    assert not tou.dst_in_effect(meter)
    meter.advance(utc("2026-10-25T03:00:00"))  # the repeated hour passes: no second change
    assert [e for e in logged(meter, EV_DST_ON, EV_DST_OFF) if e[0] >= "10-24 12:00:01"] == \
        [("10-25 01:00:00", 23, 0)]


# ---- self reads and demand resets --------------------------------------------------------

def _daily_self_reads(meter: Meter, now: float) -> None:
    """Self-Read Time 06:30 (ET04.65-66, MEP p.60) and a self read every day (MONTH 15 with
    PERIOD 1), over the workweek calendar."""
    write(meter, ET04, bytes([6, 30]), now, offset=65)
    daily = [(every(1), SELF_READ_FLAG)]
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON], recurring=daily), now)


def test_daily_self_read_at_the_et04_self_read_time():
    start = utc("2026-01-01T00:00:00")  # 01:00 local
    meter = running(start)
    _daily_self_reads(meter, start)
    layout = CATALOG[bt(26)].layout_for(meter)
    before = layout.parse(meter.read_table(bt(26), Key.MK, utc("2026-01-01T05:29:59")))
    assert before.last_entry_sequence_number == 0
    after = layout.parse(meter.read_table(bt(26), Key.MK, utc("2026-01-01T05:30:00")))
    assert after.last_entry_sequence_number == 1  # counts every self read (OPG p.28)
    meter.advance(utc("2026-01-03T00:00:00"))
    assert logged(meter, SELF_READ) == [("01-01 05:30:00", 21, 0), ("01-02 05:30:00", 21, 0)]


def test_daily_self_read_fills_bt26_once_ep32_keeps_self_reads():
    start = utc("2026-01-01T00:00:00")
    meter = running(start)
    assert procedure(meter, et(32), bytes([0x34, 0x12, 4, 15, 1, 0]), start) == 0  # 4 self reads
    _daily_self_reads(meter, start)
    layout = CATALOG[bt(26)].layout_for(meter)
    bt26 = layout.parse(meter.read_table(bt(26), Key.MK, utc("2026-01-01T05:30:00")))
    assert bt26.valid_entries == 1
    assert bt26.entries[0].time == dt.datetime(2026, 1, 1, 6, 30)  # BT55 time (local)


def test_calendar_demand_reset_is_scheduled_at_the_start_of_its_date():
    start = utc("2026-01-30T12:00:00")
    meter = running(start)
    monthly = [(rdate(13, 1), DEMAND_RESET_FLAG)]  # the 1st of every month
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON], recurring=monthly), start)
    meter.advance(utc("2026-02-01T12:00:00"))
    assert logged(meter, DEMAND_RESET) == [("01-31 23:00:00", 20, 0)]  # 1 Feb 00:00 local
    assert meter.read_table(bt(25), Key.MK, utc("2026-02-01T12:00:00"))[:5] == \
        bytes([26, 2, 1, 0, 0])
    last = registers.billing_view(meter, registers.DEMAND)["last_reset"]
    assert last["reason"] == 0  # ET41 'Scheduled' (MEP p.110)


# ---- EP05 --------------------------------------------------------------------------------

def test_a_tier_forced_by_ep05_overrides_the_calendar_until_released():
    start = utc("2026-01-01T05:00:00")  # 06:00 local, calendar tier 0
    meter = running(start)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), start)
    quantities.apply(meter, {"voltage": 230.0, "current": 10.0, "pf": 1.0}, start)
    assert procedure(meter, et(5), bytes([3]), start) == 0
    switched = bt55(meter, utc("2026-01-01T07:00:00"))  # after the 07:00 switch
    assert (switched["tier"], switched["drive"]) == (3, 2)  # hold on (MEP p.231)
    assert energy.tier_value(meter, 3, WATT_HOURS) == 2 * 2300
    assert energy.tier_value(meter, 1, WATT_HOURS) == 0
    assert logged(meter, EV_TIER) == [("01-01 05:00:00", 27, 3)]  # EP05's, not the calendar's
    assert procedure(meter, et(5), bytes([255]), utc("2026-01-01T07:00:00"), psn=2) == 0
    released = bt55(meter, utc("2026-01-01T07:00:00"))
    assert (released["tier"], released["drive"]) == (1, 0)


# ---- clock changes -----------------------------------------------------------------------

def test_clock_set_forward_applies_the_new_state_without_replaying_switches():
    now = utc("2026-03-31T04:00:00")  # 05:00 local, season 0, tier 0
    meter = running(now)
    write(meter, BT54, calendar(meter, **SEASONAL), now)
    now += 1
    assert bt55(meter, now)["tier"] == 0
    meter.move_clock(now, utc("2026-04-02T08:00:00"))  # BP10 and EP16 take this path
    state = bt55(meter, now)
    assert (state["season"], state["tier"]) == (1, 3)
    assert logged(meter, EV_SEASON, EV_TIER) == [("04-02 08:00:00", 24, 1),
                                                  ("04-02 08:00:00", 27, 3)]
    assert meter.read_table(bt(24), Key.MK, now)[:6] == bytes([26, 4, 2, 9, 0, 0])
    assert tou.next_due(meter, now) == utc("2026-04-02T23:00:00")  # the next midnight


def test_clock_set_forward_takes_only_the_new_days_self_read():
    now = utc("2026-01-01T11:00:00")  # 12:00 local: today's 06:30 self read is done
    meter = running(now)
    _daily_self_reads(meter, now)
    meter.move_clock(now + 1, utc("2026-01-03T07:00:00"))  # 08:00 local two days on
    meter.advance(now + 2)
    assert logged(meter, SELF_READ) == [("01-03 07:00:00", 21, 0)]  # not 2 January's


def test_clock_set_backward_replays_switches_quietly_until_it_passes_the_old_time():
    now = utc("2026-01-01T00:00:00")
    meter = running(now)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), now)
    now += 8 * 3600  # 09:00 local, tier 1
    assert bt55(meter, now)["tier"] == 1
    meter.move_clock(now, utc("2026-01-01T04:00:00"))  # back to 05:00 local
    assert bt55(meter, now)["tier"] == 0
    assert bt55(meter, now + 2 * 3600)["tier"] == 1  # 07:00 local again
    assert logged(meter, EV_TIER) == [("01-01 06:00:00", 27, 1)]  # nothing twice
    assert bt55(meter, now + 17 * 3600)["tier"] == 0  # 22:00 local: past the old time
    assert logged(meter, EV_TIER)[1:] == [("01-01 21:00:00", 27, 0)]


def test_virtual_time_going_back_reevaluates_quietly():
    start = utc("2026-01-01T00:00:00")
    meter = running(start)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), start)
    tou.run_due(meter, utc("2026-01-01T08:00:00"))
    tou.run_due(meter, utc("2026-01-01T05:00:00"))  # a restart with an earlier start time
    assert tou.current_tier(meter, utc("2026-01-01T05:00:00")) == 0
    assert tou.next_due(meter, utc("2026-01-01T05:00:00")) == utc("2026-01-01T06:00:00")
    assert len(logged(meter, EV_TIER)) == 1


# ---- configuration changes, restarts -----------------------------------------------------

def test_an_empty_calendar_has_no_boundaries():
    start = utc("2026-01-01T00:00:00")
    meter = running(start)
    assert tou.next_due(meter, start) is None  # BT54's default: tier 0 all year
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), start)
    assert tou.next_due(meter, start) == utc("2026-01-01T06:00:00")


def test_a_calendar_arriving_during_its_date_leaves_that_dates_demand_reset():
    start = utc("2026-02-01T10:00:00")  # 11:00 local on the 1st
    meter = running(start)
    monthly = [(rdate(13, 1), DEMAND_RESET_FLAG)]
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON], recurring=monthly), start)
    meter.advance(utc("2026-03-01T12:00:00"))
    assert logged(meter, DEMAND_RESET) == [("02-28 23:00:00", 20, 0)]  # 1 March only


def test_a_new_bt54_replaces_the_cached_calendar_at_once():
    now = utc("2026-01-01T10:00:00")
    meter = running(now)
    write(meter, BT54, calendar(meter, {0: [(1, 0, 0)]}, [(0, 0, 0, 0, 0)]), now)
    assert bt55(meter, now + 1)["tier"] == 1
    write(meter, BT54, calendar(meter, {0: [(2, 0, 0)]}, [(0, 0, 0, 0, 0)]), now + 60)
    assert bt55(meter, now + 61)["tier"] == 2
    assert logged(meter, EV_TIER) == [("01-01 10:00:00", 27, 1), ("01-01 10:01:00", 27, 2)]


def test_a_bt53_time_zone_change_moves_the_calendar_with_the_local_clock():
    now = utc("2026-01-01T05:30:00")  # 06:30 local: tier 0
    meter = running(now)
    write(meter, BT54, calendar(meter, WORKWEEK, [WORKWEEK_SEASON]), now)
    assert bt55(meter, now + 1)["tier"] == 0
    write(meter, BT53, (120).to_bytes(2, "little", signed=True), now + 1, offset=4)  # UTC+2
    state = bt55(meter, now + 2)
    assert (state["local"], state["tier"]) == (dt.datetime(2026, 1, 1, 7, 30, 2), 1)
    assert logged(meter, EV_TIER) == [("01-01 05:30:01", 27, 1)]


def test_a_restart_does_not_repeat_events():
    start = utc("2026-01-01T00:00:00")
    meter = running(start)
    profile = meter.profile
    _daily_self_reads(meter, start)
    noon = utc("2026-01-01T11:00:00")
    meter.advance(noon)
    before = list(meter.state.history.entries)
    doc = json.loads(json.dumps(meter.state.to_doc()))
    again = Meter(profile, MeterState.from_doc(doc))
    assert bt55(again, noon)["tier"] == 1
    assert again.state.history.entries == before
    again.advance(utc("2026-01-01T21:00:00"))
    assert logged(again, EV_TIER) == [("01-01 06:00:00", 27, 1), ("01-01 21:00:00", 27, 0)]
    assert logged(again, SELF_READ) == [("01-01 05:30:00", 21, 0)]


# ---- RDATE forms and BT54 checks ---------------------------------------------------------

@pytest.mark.parametrize("date, expected", [
    (rdate(3, 25, weekday=0, offset=2), ["03-29"]),  # first Sunday on or after 25 March
    (rdate(5, 25, weekday=1, offset=1), ["05-18"]),  # the Monday before 25 May (a Monday)
    (rdate(11, 1, weekday=4, offset=5), ["11-26"]),  # fourth Thursday on or after 1 Nov
    (rdate(5, 1, weekday=1, offset=6), ["05-25"]),  # the last Monday of May
    (rdate(12, 25, offset=7), ["12-25", "12-26"]),  # the date and the day after
    (rdate(7, 4, offset=8), ["07-04"]),  # Sunday -> Monday: 4 July 2026 is a Saturday
    (rdate(7, 4, offset=10), ["07-06"]),  # Saturday -> Monday
    (rdate(7, 4, offset=11), ["07-03"]),  # Saturday -> Friday
    (rdate(7, 4, offset=14), ["07-03"]),  # Sunday -> Monday, Saturday -> Friday
    (rdate(1, 1, offset=15), ["01-02"]),  # only the day after
    (rdate(2, 29), ["02-28"]),  # designed: the month's last day in other years
    (rdate(13, 31), ["01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31",
                     "09-30", "10-31", "11-30", "12-31"]),  # monthly
])
def test_recurring_dates_fall_where_mep_p41_says(date, expected):
    image = calendar(meter_on(), {}, [(0, 0, 0, 0, 0)], recurring=[(date, SELF_READ_FLAG)])
    parsed = tou.parse_calendar(image, 12, 25, 23, 200)
    first = dt.date(2026, 1, 1).toordinal()
    days = [dt.date.fromordinal(d).strftime("%m-%d") for d in range(first, first + 365)
            if parsed.actions_on(d).self_read]
    assert days == expected


@pytest.mark.parametrize("date, expected", [
    (rdate(14, weekday=3), ["01-07", "01-14", "01-21", "01-28"]),  # weekly, Wednesdays
    (every(7, 3), ["01-06", "01-13", "01-20", "01-27"]),  # 2000-01-01 (Saturday) + 3: Tuesday
    (every(0), [f"01-{d:02d}" for d in range(1, 32)]),  # PERIOD 0 counts as 1 (designed)
])
def test_weekly_and_periodic_dates(date, expected):
    image = calendar(meter_on(), {}, [(0, 0, 0, 0, 0)], recurring=[(date, SELF_READ_FLAG)])
    parsed = tou.parse_calendar(image, 12, 25, 23, 200)
    first = dt.date(2026, 1, 1).toordinal()
    days = [dt.date.fromordinal(d).strftime("%m-%d") for d in range(first, first + 31)
            if parsed.actions_on(d).self_read]
    assert days == expected


def test_non_recurring_dates_count_only_in_the_new_format():
    meter = meter_on()
    image = calendar(meter, {}, [(0, 0, 0, 0, 0)],
                     non_recurring=[(ansi_date(2026, 5, 1), SELF_READ_FLAG)])
    new = tou.parse_calendar(image, 12, 25, 23, 200)
    assert new.actions_on(dt.date(2026, 5, 1).toordinal()).self_read
    old = bytearray(image)
    old[RECURRING_AT + 2] &= ~NEW_FORMAT & 0xFF
    assert not tou.parse_calendar(bytes(old), 12, 25, 23, 200) \
        .actions_on(dt.date(2026, 5, 1).toordinal()).self_read


@pytest.mark.parametrize("switches", [
    [(1, 7, 0), (2, 6, 0)],  # not in time order
    [(1, 7, 0), (2, 7, 0)],  # two switches at one time
    [(1, 7, 0), (0, 0, 0), (2, 9, 0)],  # a switch after an unused record
])
def test_bt54_refuses_unsorted_tier_switches(switches):
    meter = meter_on()
    now = utc("2026-01-01T00:00:00")
    before = meter.table_bytes(BT54, now)
    with pytest.raises(ServiceError, match="BT54"):
        write(meter, BT54, calendar(meter, {3: switches}, [(0, 0, 0, 0, 0)]), now)
    assert meter.table_bytes(BT54, now) == before


def test_bt54_refuses_a_weekday_offset_without_a_weekday():
    meter = meter_on()
    now = utc("2026-01-01T00:00:00")
    image = calendar(meter, {}, [(0, 0, 0, 0, 0)],
                     recurring=[(rdate(5, 1, weekday=7, offset=2), SELF_READ_FLAG)])
    with pytest.raises(ServiceError, match="weekday"):
        write(meter, BT54, image, now)
