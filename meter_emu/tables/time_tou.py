"""Time and TOU tables (BT50, BT51, BT53, BT54) and the tables of the control outputs the TOU
calendar drives: the load disconnect contactor and the control relays (ET05, ET23, ET30, ET46,
ET47, ET61).

The tables hold configuration and show it back; the TOU engine (metering/tou.py) acts on BT53
and BT54 (tiers, seasons, special schedules, DST, calendar self reads and demand resets) and the
relay subsystem on the control-output tables. ET47 overrides are not acted on yet.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

import calendar
import datetime as dt

from construct import Array, Bytes, Int16sl, Int32sl, Struct

from ..datatypes import UINT8, UINT16, UINT32, Bits, LTimeDate, Time
from ..device.access import CONFIGURERS, READERS, Key
from ..provenance import c1219, designed, documented
from .catalog import bt, declare, et, refuse
from .dimensions import firmware_at_least, product_dimensions


# ---------------------------------------------------------------------------------------
# BT50 Dimension Time and TOU, BT51 Actual Time and TOU

_TIME_TOU = Struct(
    "tou_flags" / Bits(1, tou_self_read=0, season_self_read=1, season_demand_reset=2,
                       season_change_armed=3, sort_dates=4, anchor_date=5),
    "time_flags" / Bits(1, dst_auto=0, separate_week_days=1, separate_summation_demands=2,
                        sort_tier_switches=3, capable_of_time_zone_offset=4),
    "schedules" / Bits(1, seasons=(0, 4), special_schedules=(4, 4)),
    "non_recurring_dates" / UINT8,
    "recurring_dates" / UINT8,
    "tier_switches" / UINT16,
    "calendar_table_size" / UINT16,
)


def _time_tou(meter, now):
    """BT50's values. BT54's layout has five day schedules per season, hence Separate Week Days
    is False; the calendar size is BT54's real size, so BT50 and BT54 cannot disagree."""
    d = product_dimensions(meter)
    return dict(
        tou_flags=dict(tou_self_read=1, season_self_read=1),
        time_flags=dict(sort_tier_switches=1, capable_of_time_zone_offset=1),
        schedules=dict(seasons=d.seasons, special_schedules=d.special_schedules),
        non_recurring_dates=d.non_recurring_dates,
        recurring_dates=d.recurring_dates,
        tier_switches=d.tier_switches,
        calendar_table_size=_bt54_layout(meter).sizeof(),
    )


declare(
    bt(50), "Dimension Time and TOU",
    read=READERS,
    layout=_TIME_TOU,
    render=_time_tou,
    provenance=documented(
        "MEP p.222-224; its 808-byte Calendar Table Size is BT54 with 12 seasons (firmware "
        "3.50+), 768 with 4"
    ),
)

declare(
    bt(51), "Actual Time and TOU",
    read=READERS,
    layout=_TIME_TOU,
    render=_time_tou,
    provenance=c1219(
        "ACT_TIME_TOU_TBL has DIM_TIME_TOU_TBL's layout; NES does not document BT51, and every "
        "TOU dimension of BT50 is in use (BT54 is always that size)"
    ),
)

# ---------------------------------------------------------------------------------------
# BT53 Time Offset

#: BT53.4 range enforced by the firmware (MEP p.225): -12 h .. +14 h.
TIME_ZONE_OFFSET_RANGE = range(-12 * 60, 14 * 60 + 1)
_TIME_ZONE_OFFSET_AT = 4

_BT53 = Struct(
    "dst_effective_time" / Time(),
    "dst_adjustment_minutes" / UINT8,
    "time_zone_offset_minutes" / Int16sl,
)


def time_offset(meter) -> tuple[int, int, int]:
    """BT53 as (DST effective time in seconds of the day, DST adjustment minutes, time zone
    offset minutes), straight from the stored image or the defaults below, without building
    the table: the local clock asks for it all the time."""
    raw = meter.state.tables.get(bt(53))
    if raw is None:  # BT53's defaults (declared below)
        return 0, 0, meter.profile.clock.utc_offset_minutes
    hour, minute, second, adjustment = raw[0], raw[1], raw[2], raw[3]
    zone = int.from_bytes(raw[_TIME_ZONE_OFFSET_AT:_TIME_ZONE_OFFSET_AT + 2], "little",
                          signed=True)
    return hour * 3600 + minute * 60 + second, adjustment, zone


def time_zone_offset_minutes(meter, now: float) -> int:
    """BT53's time zone offset."""
    return time_offset(meter)[2]


def _bt53_apply(meter, values, ctx):
    if values.time_zone_offset_minutes not in TIME_ZONE_OFFSET_RANGE:
        refuse("BT53", f"time zone offset {values.time_zone_offset_minutes} min is outside "
                        "-12 h..+14 h")


declare(
    bt(53), "Time Offset",
    read=READERS,
    write=CONFIGURERS,
    layout=_BT53,
    defaults=lambda meter: dict(
        dst_effective_time=dt.time(0, 0, 0),
        dst_adjustment_minutes=0,
        time_zone_offset_minutes=meter.profile.clock.utc_offset_minutes,
    ),
    apply=_bt53_apply,
    pending=True,
    provenance=documented("MEP p.225 (write MAK: p.263 Table C.4); DST fields default to 0"),
)

# ---------------------------------------------------------------------------------------
# BT54 Calendar

#: Tier switches per day schedule: switch i belongs to day schedule i // 10 (MEP p.227).
SWITCHES_PER_DAY_SCHEDULE = 10
#: Calendar action codes (MEP p.226-227): 1/2 DST on/off, 3.. select season 0.., 19.. special
#: schedule 0..
DST_ON, DST_OFF, FIRST_SEASON_ACTION, FIRST_SPECIAL_SCHEDULE_ACTION = 1, 2, 3, 19
#: The TOU format before firmware 3.50 knows 4 seasons and no non-recurring dates (MEP p.227).
OLD_FORMAT_SEASONS = 4

_CALENDAR_ACTION = Bits(1, action=(0, 5), demand_reset=5, self_read=6, tou_format=7)
_ANSI_DATE = Bits(2, year=(0, 7), month=(7, 4), day=(11, 5))
# RDATE (MEP p.41): for MONTH 15 the bits 4..15 carry PERIOD and DELTA instead.
_RDATE = Bits(2, month=(0, 4), offset=(4, 4), weekday=(8, 3), day=(11, 5))
#: RDATE OFFSETs 1..6 move the date to a WEEKDAY (MEP p.41-42).
OFFSETS_WITH_WEEKDAY = (1, 6)
_TIER_SWITCH = Struct(
    "switch" / Bits(2, tier=(0, 3), minute=(5, 6), hour=(11, 5)),
    "schedule" / UINT8,
)
_SEASON_SCHEDULE = Struct(
    "saturday" / UINT8,
    "sunday" / UINT8,
    "weekday" / UINT8,
    "special_schedule_0" / UINT8,
    "special_schedule_1" / UINT8,
)


def _bt54_layout(meter):
    d = product_dimensions(meter)
    return Struct(
        "non_recurring_dates" / Array(d.non_recurring_dates,
                                      Struct("date" / _ANSI_DATE, "action" / _CALENDAR_ACTION)),
        "recurring_dates" / Array(d.recurring_dates,
                                  Struct("date" / _RDATE, "action" / _CALENDAR_ACTION)),
        "tier_switches" / Array(d.tier_switches, _TIER_SWITCH),
        "season_schedules" / Array(d.seasons, _SEASON_SCHEDULE),
        "calendar_id" / UINT32,
    )


def _new_tou_format(meter) -> bool:
    """The 12-season TOU format with non-recurring dates exists from firmware 3.50 on."""
    return firmware_at_least(meter, "3.50")


def _bt54_defaults(meter):
    """An empty calendar (tier 0 all day, no dates, calendar ID 0), flagged with the newest
    TOU format the firmware knows."""
    d = product_dimensions(meter)
    empty_action = dict(action=0)
    recurring = [dict(date={}, action=empty_action) for _ in range(d.recurring_dates)]
    recurring[0] = dict(date={}, action=dict(tou_format=int(_new_tou_format(meter))))
    return dict(
        non_recurring_dates=[dict(date={}, action=empty_action)] * d.non_recurring_dates,
        recurring_dates=recurring,
        tier_switches=[dict(switch={}, schedule=0)] * d.tier_switches,
        season_schedules=[dict(saturday=0, sunday=0, weekday=0, special_schedule_0=0,
                               special_schedule_1=0)] * d.seasons,
        calendar_id=0,
    )


def _valid_actions(meter, new_format: bool) -> set[int]:
    d = product_dimensions(meter)
    seasons = d.seasons if new_format else OLD_FORMAT_SEASONS
    return ({0, DST_ON, DST_OFF}
            | set(range(FIRST_SEASON_ACTION, FIRST_SEASON_ACTION + seasons))
            | set(range(FIRST_SPECIAL_SCHEDULE_ACTION,
                        FIRST_SPECIAL_SCHEDULE_ACTION + d.special_schedules)))


def _schedules_something(action) -> bool:
    return bool(action["action"] or action["demand_reset"] or action["self_read"])


def _check_ansi_date(date, where):
    try:
        dt.date(2000 + date["year"], date["month"], date["day"])
    except ValueError:
        refuse("BT54", f"{where}: {date} is not a date")


def _check_rdate(date, where):
    month = date["month"]
    if month == 0:
        refuse("BT54", f"{where}: an unassigned date cannot schedule an action")
    if month <= 13:  # a day of one month, or of every month (13)
        last_day = calendar.monthrange(2000, month)[1] if month <= 12 else 31  # 2000: Feb 29
        if not 1 <= date["day"] <= last_day:
            refuse("BT54", f"{where}: day {date['day']} does not exist in month {month}")
        if OFFSETS_WITH_WEEKDAY[0] <= date["offset"] <= OFFSETS_WITH_WEEKDAY[1] \
                and date["weekday"] > 6:
            refuse("BT54", f"{where}: offset {date['offset']} moves the date to a weekday, "
                            "so it needs a weekday 0..6")
    elif month == 14 and date["weekday"] > 6:
        refuse("BT54", f"{where}: a weekly date needs a weekday 0..6")


def _unused_switch(switch) -> bool:
    """Tier 0 at 00:00, the zeros of an unwritten record."""
    return not (switch["tier"] or switch["hour"] or switch["minute"])


def _check_switch_order(records, first: int) -> None:
    """BT50 Sort Tier Switches: the meter requires each day schedule's switches in time order
    (MEP p.223). A day schedule's switches are its records up to the first unused one after
    its first record (tier 0 at 00:00 may start a day); the records after that stay unused."""
    previous = None
    for i, record in enumerate(records):
        switch = record.switch
        if i and _unused_switch(switch):
            if not all(_unused_switch(r.switch) for r in records[i:]):
                refuse("BT54", f"day schedule {first // SWITCHES_PER_DAY_SCHEDULE}: a tier "
                                f"switch follows the unused switch {first + i}")
            return
        minute = switch["hour"] * 60 + switch["minute"]
        if previous is not None and minute <= previous:
            refuse("BT54", f"tier switch {first + i} at {switch['hour']}:"
                            f"{switch['minute']:02d} is not later than the one before it "
                            "(BT54 needs each day schedule's switches sorted)")
        previous = minute


def _bt54_apply(meter, values, ctx):
    """Checks what MEP p.223-228 and p.41-42 constrain; returns the values so the filler bits
    are stored as zeros. Acting on the calendar is metering/tou.py's work."""
    new_format = bool(values.recurring_dates[0].action["tou_format"])
    if new_format and not _new_tou_format(meter):
        refuse("BT54", "the 12-season TOU format needs firmware 3.50 or newer")
    actions = _valid_actions(meter, new_format)
    for i, record in enumerate(values.non_recurring_dates):
        if record.date == dict(year=0, month=0, day=0) and not _schedules_something(record.action):
            continue
        if not new_format:
            refuse("BT54", "the old TOU format has no non-recurring dates")
        _check_ansi_date(record.date, f"non-recurring date {i}")
        if record.action["action"] not in actions:
            refuse("BT54", f"non-recurring date {i}: action {record.action['action']} invalid")
    for i, record in enumerate(values.recurring_dates):
        if _schedules_something(record.action):
            _check_rdate(record.date, f"recurring date {i}")
        if record.action["action"] not in actions:
            refuse("BT54", f"recurring date {i}: action {record.action['action']} invalid")
    for i, record in enumerate(values.tier_switches):
        switch = record.switch
        if switch["tier"] >= meter.dims.tiers:
            refuse("BT54", f"tier switch {i}: tier {switch['tier']} (BT21 has "
                            f"{meter.dims.tiers} tiers)")
        if switch["hour"] > 23 or switch["minute"] > 59:
            refuse("BT54", f"tier switch {i}: {switch['hour']}:{switch['minute']:02d} "
                            "is not a time of day")
    for block in range(0, len(values.tier_switches), SWITCHES_PER_DAY_SCHEDULE):
        _check_switch_order(values.tier_switches[block:block + SWITCHES_PER_DAY_SCHEDULE],
                            block)
    day_schedules = product_dimensions(meter).tier_switches // SWITCHES_PER_DAY_SCHEDULE
    for i, season in enumerate(values.season_schedules):
        for day in _SEASON_SCHEDULE.subcons:
            if season[day.name] >= day_schedules:
                refuse("BT54", f"season {i} {day.name}: day schedule {season[day.name]} is not "
                                f"one of 0..{day_schedules - 1}")
    return values


def calendar_id(meter, now: float) -> int:
    """BT54's Calendar ID, the table's last four bytes."""
    return int.from_bytes(meter.table_bytes(bt(54), now)[-4:], "little")


declare(
    bt(54), "Calendar",
    read=READERS,
    write=CONFIGURERS,
    layout=_bt54_layout,
    defaults=_bt54_defaults,
    apply=_bt54_apply,
    pending=True,
    provenance=documented(
        "MEP p.225-228, RDATE/ANSI_DATE p.41-42 (dimensioned by BT50; 5 day schedules per "
        "season as BT50.1.1 is False)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET05 Control Output Settings

#: ET05.24 time-based relay calendar modes (designed): how ET61's blocks of ten switches map to
#: days. 0 off, 1 block 0 every day, 2 block 0 on weekdays and 1 at weekends, 3 blocks 0..6 for
#: Sunday..Saturday (metering/control.py carries them out).
RELAY_CALENDAR_MODES = range(4)
#: Prepay conversion rates are Wh per kWh consumed, at most 1,000,000 (MEP p.154, tiers 5..8).
MAX_PREPAY_RATE = 1_000_000

_ET05 = Struct(
    "primary_maximum_power_level" / UINT32,
    "secondary_maximum_power_level" / UINT32,
    "prepay_tier_rates" / Array(4, UINT32),
    "relay_calendar_modes" / Bits(1, relay_1=(0, 4), relay_2=(4, 4)),
    "options" / Bits(1, maximum_level_thresholds=0, calendar_drives_disconnect=1,
                     maximum_level_auto_reconnect=2),
    # designed, after the documented bytes 0-25 (device/relay.py acts on them):
    "prepay_warning_threshold" / UINT32,  # Wh of credit left that logs event 103 (0: none)
    "prepay_emergency_credit" / UINT32,  # Wh the credit may go below 0 (ET46.13 shows it)
    "relay_calendar_random_window" / UINT16,  # ET61 switch points wait 1..N s (0: none)
)
#: ET05's size before the designed bytes 26-35 existed (Meter pads a saved image of this size)
ET05_FIRST_SIZE = 26


def _second_relay(meter) -> bool:
    """Firmware 4.30 and newer has a second control relay (MEP p.79, ET11.26)."""
    return firmware_at_least(meter, "4.30")


def _et05_apply(meter, values, ctx):
    for tier, rate in enumerate(values.prepay_tier_rates, start=1):
        if rate > MAX_PREPAY_RATE:
            refuse("ET05", f"prepay rate of tier {tier} {rate} exceeds {MAX_PREPAY_RATE}")
    modes = values.relay_calendar_modes
    for relay in ("relay_1", "relay_2"):
        if modes[relay] not in RELAY_CALENDAR_MODES:
            refuse("ET05", f"{relay} calendar mode {modes[relay]} is not one of 0..3")
    if modes["relay_2"] and not _second_relay(meter):
        refuse("ET05", "this firmware has one control relay")
    if values.prepay_emergency_credit >= 2**31:
        refuse("ET05", "the emergency credit must fit ET46.13's INT32")
    return values


declare(
    et(5), "Control Output Settings",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET05,
    defaults=lambda meter: dict(
        primary_maximum_power_level=0, secondary_maximum_power_level=0,
        prepay_tier_rates=[0] * 4,
        relay_calendar_modes={}, options={}, prepay_warning_threshold=0,
        prepay_emergency_credit=0, relay_calendar_random_window=0,
    ),
    apply=_et05_apply,
    pending=True,
    provenance=designed(
        "NES publishes no layout; the guides place the Primary Maximum Power Level at ET05.0 "
        "(MEP p.183), the prepay rates of tiers 1-4 at ET05.8-23 (p.154), the threshold enable "
        "at ET05.25.0 (p.121) and the relay calendar mode in ET05 (p.166); byte 24 holds that "
        "mode per relay; bytes 4-7, between the primary level and the rates, hold the secondary "
        "level EP22 (Switch Maximum Power Level) switches to, in W like the primary; ours "
        "as well: ET05.25 bit 1 lets relay 1's ET61 calendar move the contactor, bit 2 recloses "
        "it after a maximum power trip by itself, bytes 26-35 hold the prepay warning "
        "threshold and emergency credit (Wh) and the calendar's random delay window (s)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET23 Miscellaneous (Meter) Information


def _et23_layout(meter):
    return Struct(
        "lontalk_messages_received" / UINT32,
        "lontalk_messages_validated" / UINT32,
        "reserved" / Bytes(86),
        "disconnect_internal_status" / UINT8,
        "active_calendar_id" / UINT32,
        "reserved_end" / Bytes(119 if firmware_at_least(meter, "4.0") else 87),
    )


def _et23_render(meter, now):
    """No LonTalk messages yet (the PLC port will count them); the contactor's commanded state
    from the relay subsystem (device/relay.py). The active calendar is BT54's; an ET47
    override's calendar is the TOU engine's to show."""
    from ..device import relay  # here: device.relay reads tables through the catalog

    layout = _et23_layout(meter)
    return dict(
        lontalk_messages_received=0,
        lontalk_messages_validated=0,
        reserved=bytes(86),
        disconnect_internal_status=relay.et23_status(meter),
        active_calendar_id=calendar_id(meter, now),
        reserved_end=bytes(layout.sizeof() - 99),
    )


declare(
    et(23), "Miscellaneous Information",
    read=READERS,
    # Every field is meter-controlled: a write is accepted (MEP p.260) and changes nothing.
    write={Key.MK, Key.MAK, Key.PLC},
    layout=_et23_layout,
    render=_et23_render,
    provenance=documented("MEP p.98-99 (186 bytes; 218 on firmware 4.0+)"),
)

# ---------------------------------------------------------------------------------------
# ET30 Maximum Power or Current Level Control

#: At least 10 s pass between opening and closing the contactor (MEP p.136, ET54.71.6).
MIN_RECONNECT_LOCKOUT_S = 10

_ET30 = Struct(
    "maximum_current_level" / UINT32,
    "exceed_time_threshold" / UINT16,
    "reconnect_lockout" / UINT16,
    "status" / Bits(1, power_level_exceeded=0, current_level_exceeded=1,
                    secondary_level_active=2),
)


def _et30_apply(meter, values, ctx):
    if values.reconnect_lockout < MIN_RECONNECT_LOCKOUT_S:
        refuse("ET30", f"reconnect lockout {values.reconnect_lockout} s is below "
                        f"{MIN_RECONNECT_LOCKOUT_S} s")
    values.status = _ET30.parse(meter.table_bytes(et(30), ctx.now)).status  # meter-controlled
    return values


declare(
    et(30), "Maximum Power or Current Level Control",
    read=READERS,
    write={Key.MK, Key.PK, Key.PLC},  # read-only over MEP (MEP p.261 Table C.1)
    layout=_ET30,
    defaults=lambda meter: dict(
        maximum_current_level=0, exceed_time_threshold=0,
        reconnect_lockout=MIN_RECONNECT_LOCKOUT_S, status={},
    ),
    apply=_et30_apply,
    pending=True,
    provenance=designed(
        "NES publishes no layout (OPG p.60: configuration and status of the maximum power and "
        "current levels); the power levels are ET05.0 and ET05.4, so ET30 holds the current "
        "level (mA), how long a level must be exceeded (s), the reconnect lockout (s), the "
        "exceeded flags and which power level EP22 made active (status bit 2: 1 = secondary)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET46 Control Output Read-Only Data


def _et46_layout(meter):
    fields = [
        "reserved" / Bytes(11),
        "disconnect_control_type" / UINT8,
        "reserved_12" / Bytes(1),
    ]
    if firmware_at_least(meter, "3.70"):
        fields += [
            "prepay_negative_credit" / Int32sl,
            "maximum_level_disconnect_open_time" / LTimeDate(),
        ]
    return Struct(*fields)


def _et46_render(meter, now):
    """From the relay subsystem: current measurements decide (1) when ET30 sets a current
    level, else power (0); the negative credit allowed is ET05's emergency credit; the time of
    the last maximum power trip."""
    from ..device import relay  # here: device.relay reads tables through the catalog

    opened = relay.max_level_open_time(meter)
    return dict(reserved=bytes(11),
                disconnect_control_type=int(relay.et30_settings(meter).maximum_current_ma > 0),
                reserved_12=bytes(1),
                prepay_negative_credit=relay.et05_settings(meter).emergency_credit_wh,
                maximum_level_disconnect_open_time=None if opened is None else
                dt.datetime.fromtimestamp(int(opened), dt.timezone.utc).replace(tzinfo=None))


declare(
    et(46), "Control Output Read-Only Data",
    read=READERS,
    layout=_et46_layout,
    render=_et46_render,
    provenance=documented("MEP p.121-122 (13 bytes; 23 on firmware 3.70+); OPG p.61"),
)

# ---------------------------------------------------------------------------------------
# ET47 Calendar Override Settings

#: ET47.0 value that cancels an override (MEP p.122).
CANCEL_OVERRIDE = 255
#: ET47.1 cancellation types: next tier switch, indefinite, after a duration, at a time.
CANCELLATION_TYPES = range(4)

_ET47 = Struct(
    "tariff" / UINT8,
    "cancellation" / UINT8,
    "override_duration" / UINT32,
    "cancellation_time" / LTimeDate(),
    "calendar_id" / UINT32,
)


def _et47_apply(meter, values, ctx):
    if values.tariff != CANCEL_OVERRIDE and values.tariff >= meter.dims.tiers:
        refuse("ET47", f"tariff {values.tariff}: the meter has {meter.dims.tiers} tiers "
                        f"({CANCEL_OVERRIDE} cancels)")
    if values.cancellation not in CANCELLATION_TYPES:
        refuse("ET47", f"cancellation type {values.cancellation} is not one of 0..3")


declare(
    et(47), "Calendar Override Settings",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET47,
    defaults=lambda meter: dict(tariff=CANCEL_OVERRIDE, cancellation=0, override_duration=0,
                                cancellation_time=None, calendar_id=0),
    apply=_et47_apply,
    pending=True,
    provenance=documented("MEP p.122-123; OPG p.61"),
)

# ---------------------------------------------------------------------------------------
# ET61 Time-Based Relay Control Calendar

_RELAY_SWITCH = Bits(2, closed=0, minute=(5, 6), hour=(11, 5))


def _control_relays(meter) -> int:
    return 2 if _second_relay(meter) else 1


def _et61_layout(meter):
    switches = product_dimensions(meter).relay_switches
    return Struct("relays" / Array(_control_relays(meter), Array(switches, _RELAY_SWITCH)))


def _et61_apply(meter, values, ctx):
    """Checks the times; returns the values so the filler bits are stored as zeros."""
    for relay, switches in enumerate(values.relays, start=1):
        for i, switch in enumerate(switches):
            if switch["hour"] > 23 or switch["minute"] > 59:
                refuse("ET61", f"relay {relay} switch {i}: {switch['hour']}:"
                                f"{switch['minute']:02d} is not a time of day")
    return values


declare(
    et(61), "Time-Based Relay Control Calendar",
    read=READERS,
    write=CONFIGURERS,
    layout=_et61_layout,
    defaults=lambda meter: dict(
        relays=[[{}] * product_dimensions(meter).relay_switches] * _control_relays(meter)
    ),
    apply=_et61_apply,
    pending=True,
    provenance=documented(
        "MEP p.166-167; ET11.26 p.79 (80 switches per relay, a second relay from firmware 4.30)"
    ),
)
