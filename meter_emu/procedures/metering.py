"""Metering procedures: self reads, the tariff, demand configuration and demand resets, the load
profile's configuration, and resetting what accumulates (previous season data, outage counters,
power quality records).

Each one acts on the state the tables render (tables/registers.py, tables/load_profile.py,
meter.state.registers, metering/demand.py, metering/power_quality.py), so a client sees its
effect in the tables; the metering engine adds the scheduled self reads and demand resets,
maximum demands, tier switches and load profile recording on the same state.

Reconfigurations follow the MEP guide's interface rule: EP11, EP32 and EP33 increment ET04's IDT
Version whenever they run (MEP p.64), and any change to what ET42 describes raises BT03
"Dimension Change" (MEP p.110); the event logged with it (88) carries the procedure number, as the
Echelon guide gives ("0xxx procedure number").

ECH = Echelon ANSI meter v3.1 user's guide (procedure list p.46), OPG = Optical Port Programmer's
Guide (2021), MEP = MEP Client Developer's Guide (2022); printed page numbers.
"""

from __future__ import annotations

from construct import Array, If, Int16ul, Struct, this

from .. import events
from ..datatypes import UINT8
from ..device import conditions
from ..device.access import CONFIGURERS
from ..provenance import designed, documented
from ..tables.catalog import CATALOG, bt, et
from ..tables.dimensions import firmware_at_least, product_dimensions
from .catalog import ProcedureFailed, Result, ResultCode, declare, ep
from .logs import LogList, dict_log, register_list, register_manufacturer_log

MAX_DATA_SETS = 4  # BT64..BT67


# tables.registers and tables.load_profile are imported on first use: the table package imports
# the procedures (BT07), so this module cannot import its table modules while it loads.


def _registers():
    from ..tables import registers
    return registers


def _lp():
    from ..tables import load_profile
    return load_profile


def _demand():
    from ..metering import demand
    return demand


def _fail(code: int, reason: str):
    raise ProcedureFailed(code, reason)


def _invalid(reason: str):
    _fail(ResultCode.INVALID_PARAMETER, reason)


def _parsed(meter, table_id: int, now: float):
    return CATALOG[table_id].layout_for(meter).parse(meter.table_bytes(table_id, now))


def _interface_changed(meter, ctx, number: int, always: bool) -> None:
    """ET04 IDT Version + 1 (``always``: EP11/EP32/EP33, MEP p.64), or only when ET42 changed
    (EP52); BT03 Dimension Change with event 88 = the procedure number, logged for every change
    even while the alarm is latched."""
    if always:
        layout = CATALOG[et(4)].layout_for(meter)
        values = layout.parse(meter.table_bytes(et(4), ctx.now))
        values.idt_version = (values.idt_version + 1) & 0xFF
        meter.state.tables[et(4)] = layout.build(values)
        meter.state.interface_digest = None  # record ET42 as it now is, without a second bump
    before = meter.state.interface_digest
    meter.check_interface()
    if not always and before == meter.state.interface_digest:
        return
    meter.dirty = True
    if not conditions.begin(meter, "dimension_change", ctx.now, number, ctx.user_id):
        meter.log_event(events.LOG_DIMENSION_CHANGED.number, number, ctx.now, ctx.user_id)


# ---------------------------------------------------------------------------------------
# EP04 Record Self-Read


def record_self_read(meter, ctx) -> int:
    """Take a self read now (EP04, BP09); returns its sequence number."""
    return int.from_bytes(_record_self_read(meter, None, ctx).data, "little")


def _record_self_read(meter, p, ctx) -> Result:
    """Take a self read now: the BT23 image with the BT55 minute, the season and (demands
    configured) EP32's BIDN goes into BT26's circular list of BT21.2 entries, whose sequence
    number counts every self read; overwriting an unread entry sets the list's overflow flag.
    Raises BT03 'Self-Read Occurred' (event 65) and logs 'Self Read Occurred' (21). Response:
    the self read's sequence number (UINT16)."""
    registers = _registers()
    state = registers.billing_state(meter, registers.SELF_READ)
    sequence = state["sequence"] + 1
    bidn = registers.billing_view(meter, registers.DEMAND)["bidn"]
    record = registers.snapshot(meter, ctx.now, sequence, bidn=bidn)
    registers.append_record(state, record, registers.actual_register(meter).self_reads)
    meter.dirty = True
    conditions.begin(meter, "self_read_occurred", ctx.now, 0, ctx.user_id)
    meter.log_event(events.SELF_READ.number, 0, ctx.now, ctx.user_id)
    return Result(data=(sequence & 0xFFFF).to_bytes(2, "little"))


declare(
    ep(4), "Record Self-Read",
    execute=CONFIGURERS,
    params=Struct(),
    run=_record_self_read,
    response=Struct("sequence_number" / Int16ul),
    idempotent=False,  # each run adds an entry
    provenance=designed("the OSGP overview slides name 'Record Self-Read'; no number or layout "
                        "is public: EP04 with no parameters, the entry as BT26 (OPG p.28-29)"),
)

# ---------------------------------------------------------------------------------------
# EP05 Set Tariff

RELEASE_TIER = 0xFF


def _set_tariff(meter, p, ctx) -> Result:
    """Force tier ``tier`` (0 .. BT21.7 - 1) until released, or give the tier back to the
    calendar (0xFF). BT55 shows the tier, with Tier Drive 2 'set manually with hold on' while
    forced. Logs 'Rate Change' (25) with the parameter and, when the active tier changes,
    'Tier Switch Change' (27) with the new tier."""
    registers = _registers()
    tiers = meter.dims.tiers
    if p.tier != RELEASE_TIER and p.tier >= tiers:
        _invalid(f"tier {p.tier}: the meter has {tiers} tiers (0..{tiers - 1}; 255 releases)")
    before, _ = registers.tier_status(meter)
    tariff = registers.billing_state(meter, registers.TARIFF)
    tariff["forced_tier"] = None if p.tier == RELEASE_TIER else p.tier
    meter.dirty = True
    after, _ = registers.tier_status(meter)
    meter.log_event(events.RATE_CHANGE.number, p.tier, ctx.now, ctx.user_id)
    if after != before:
        meter.log_event(events.TIER_SWITCH.number, after, ctx.now, ctx.user_id)
    return Result()


declare(
    ep(5), "Set Tariff",
    execute=CONFIGURERS,
    params=Struct("tier" / UINT8),
    run=_set_tariff,
    provenance=designed("the OSGP overview slides name 'Set Tariff'; no number or layout is "
                        "public: one tier byte (0xFF releases), shown as BT55's Current Tier "
                        "with Tier Drive 2 (MEP p.230-231)"),
)

# ---------------------------------------------------------------------------------------
# EP11 Configure/Reset Load Profile, EP52 Configure Load Profile Channel Source

MAPPED_SOURCES = range(112, 164)  # BT62 keys into ET66 (MEP p.30, p.173)
DAILY_INTERVAL = 84  # BT61.12 code of a 24-hour interval
_SET_ALARMS = ("lp_set1_unread", "lp_set2_unread", "lp_set3_unread", "lp_set4_unread")

_LP_CONFIGURATION = Struct(
    "blocks" / Int16ul,
    "interval_time" / UINT8,
    "channels" / UINT8,
    "sources" / Array(this.channels, UINT8),
)
_EP11 = Struct(
    "data_set" / UINT8,
    "configuration" / If(this.data_set != 0, _LP_CONFIGURATION),
)


def _interval_minutes(interval_time: int) -> int:
    if interval_time == DAILY_INTERVAL:
        return 1440
    if 1 <= interval_time <= 60 and 60 % interval_time == 0:
        return interval_time
    _invalid(f"interval time {interval_time}: minutes dividing 60, or 84 for a day")


def _check_standard_source(meter, source: int, what: str) -> None:
    registers = _registers()
    if source in MAPPED_SOURCES:
        _invalid(f"{what}: {source} is a mapped source ID (112..163); EP52 maps channels")
    if not registers.known_source_id(meter, source):
        _invalid(f"{what}: source ID {source} does not exist on this firmware")


def _data_set_number(meter, number: int) -> int:
    """1-based data set number -> index, within BT61's data sets."""
    lp = _lp()
    count = lp.data_set_count(meter)
    if not 1 <= number <= count:
        _invalid(f"data set {number}: this firmware has {count} data set(s)")
    return number - 1


def _new_configuration(meter, index: int, c, now: float) -> list[dict]:
    """Every data set's configuration with set ``index`` replaced by ``c``, checked."""
    lp = _lp()
    if c.blocks == 0:
        if index == 0:
            _invalid("data set 1 cannot be switched off (0 blocks)")
        entry = dict(blocks=0, interval_minutes=0, channels=0, sources=[])
    else:
        if not 1 <= c.channels <= lp.MAX_CHANNELS:
            _invalid(f"{c.channels} channels: 1..{lp.MAX_CHANNELS}")
        for n, source in enumerate(c.sources):
            _check_standard_source(meter, source, f"channel {n}")
        entry = dict(blocks=c.blocks, interval_minutes=_interval_minutes(c.interval_time),
                     channels=c.channels, sources=list(c.sources))
    configuration = lp.data_set_configuration(meter)
    configuration[index] = entry
    needed = sum(lp.geometry_of(c).table_size for c in configuration)
    memory = lp.memory_length_max(meter, now)
    if needed > memory:
        _invalid(f"the data sets need {needed} bytes; BT60 memory length is {memory}")
    return configuration


def _reset_load_profile(meter, indexes, now: float) -> None:
    lp = _lp()
    for index in indexes:
        lp.reset_data_set(meter, index, now)
        conditions.end(meter, _SET_ALARMS[index])
    if 0 in indexes:  # the overflow alarm reports the primary data set (OPG p.46)
        conditions.end(meter, "load_profile_overflow")


def _configure_load_profile(meter, p, ctx) -> Result:
    """Data set 0: reset every data set, keeping the configuration. Data set 1..4: configure it
    (blocks, interval time in BT61.12's coding, channels and their BT62 interval sources;
    0 blocks switches sets 2..4 off) and reset it; its ET66 mappings are dropped. The data sets
    must fit BT60's memory length. A reset leaves no valid or unread blocks and clears BT63's
    overflow flag (OPG p.34) and the data set's alarms. Either way ET04's IDT Version goes up,
    with BT03 Dimension Change and event 88 (argument 2059)."""
    lp = _lp()
    if p.data_set == 0:
        indexes = range(lp.data_set_count(meter))
    else:
        index = _data_set_number(meter, p.data_set)
        configuration = _new_configuration(meter, index, p.configuration, ctx.now)
        state = lp.lp_state(meter)
        state["data_sets"] = configuration
        mapping = lp.source_mapping(meter)
        mapping[index] = [0] * lp.MAX_CHANNELS
        state["mapping"] = mapping
        indexes = [index]
    _reset_load_profile(meter, indexes, ctx.now)
    meter.dirty = True
    _interface_changed(meter, ctx, ep(11), always=True)
    return Result()


declare(
    ep(11), "Configure/Reset Load Profile",
    execute=CONFIGURERS,
    params=_EP11,
    run=_configure_load_profile,
    provenance=designed(
        "ECH p.46 names EP11; MEP p.64, p.97 and OPG p.34 say it sets the data sets and memory "
        "length, clears BT63's overflow and increments the IDT version; no layout is public: "
        "data set (0 = reset all), then blocks UINT16, interval time, channels, sources"
    ),
)

_EP52 = Struct("data_set" / UINT8, "channel" / UINT8, "source" / Int16ul)


def _check_extended_source(meter, source: int) -> None:
    """The extended source format the MEP guide gives (p.31): bits 15..12 = 4 (M-Bus), 11..8
    the ET13 device index, 7..5 unused, 4..0 the M-Bus data type (1..31)."""
    device, unused, mdt = source >> 8 & 0xF, source >> 5 & 0x7, source & 0x1F
    if source >> 12 != 4 or device >= product_dimensions(meter).devices or unused or not mdt:
        _invalid(f"extended source ID 0x{source:04X} is not 0x4000 | device << 8 | data type")


def _welmec(meter, now: float) -> bool:
    """ET54.71.0 Welmec 11.2 compliance: channel changes of the primary set go to ET75."""
    return bool(_parsed(meter, et(54), now).status_flags["welmec_11_2_compliance"])


def _primary_index(meter, now: float) -> int:
    """ET55 Primary Load Profile Index (0 where the field does not exist)."""
    return _parsed(meter, et(55), now).get("primary_load_profile_index", 0)


def _extended_ids(meter, index: int) -> list[int]:
    """Per channel of a data set, the source it records as ET75 lists it: the ET66 extended ID
    of a mapped source, else the standard ID (MEP p.179)."""
    lp = _lp()
    geometry = lp.load_profile_geometry(meter)[index]
    mapping = lp.source_mapping(meter)[index]
    ids = [mapping[s - MAPPED_SOURCES[0]] if 0 <= s - MAPPED_SOURCES[0] < len(mapping) else s
           for s in geometry.sources]
    return ids + [0] * (lp.MAX_CHANNELS - len(ids))


def _log_in_et75(meter, ctx, index: int) -> None:
    registers = _registers()
    lp = _lp()
    demand = registers.billing_view(meter, registers.DEMAND)
    et48 = _parsed(meter, et(48), ctx.now)
    sources = [e.source for e in et48.entries if e.flags["configured"]]
    lp.log_channel_change(meter, ctx.now, _extended_ids(meter, index), sources,
                          demand["sub_interval"], demand["interval_multiplier"])
    conditions.begin(meter, "mfg_log_entry_available", ctx.now, et(75), ctx.user_id)


def _configure_channel_source(meter, p, ctx) -> Result:
    """Make one channel of an active data set record another source. A standard source ID
    (below 256, not 112..163) goes straight into BT62; an extended one (M-Bus format 0x4XYY) is
    stored in ET66 and the channel records mapped source 112 + channel. With Welmec 11.2
    compliance (ET54.71.0), a change to the primary data set first logs the sources used until
    then in ET75, and is refused (result 3) when ET75 is full. BT61's geometry is unchanged; when
    ET42 changes, the IDT Version goes up with BT03 Dimension Change and event 88 (2100)."""
    lp = _lp()
    index = _data_set_number(meter, p.data_set)
    geometry = lp.load_profile_geometry(meter)[index]
    if not geometry.active:
        _fail(ResultCode.CONFLICT_WITH_SETUP, f"data set {p.data_set} is switched off (EP11)")
    if p.channel >= geometry.channels:
        _invalid(f"channel {p.channel}: data set {p.data_set} has {geometry.channels} channels")
    if p.source < 256:
        _check_standard_source(meter, p.source, "source")
    else:
        _check_extended_source(meter, p.source)
    logged = _welmec(meter, ctx.now) and index == _primary_index(meter, ctx.now)
    if logged and not lp.et75_has_room(meter):
        _fail(ResultCode.CONFLICT_WITH_SETUP, "ET75 is full: no channel change can be logged")
    if logged:
        _log_in_et75(meter, ctx, index)
    configuration = lp.data_set_configuration(meter)
    mapping = lp.source_mapping(meter)
    extended = p.source >= 256
    configuration[index]["sources"][p.channel] = (MAPPED_SOURCES[0] + p.channel if extended
                                                  else p.source)
    mapping[index][p.channel] = p.source if extended else 0
    state = lp.lp_state(meter)
    state.update(data_sets=configuration, mapping=mapping)
    meter.dirty = True
    _interface_changed(meter, ctx, ep(52), always=False)
    return Result()


declare(
    ep(52), "Configure Load Profile Channel Source",
    execute=CONFIGURERS,
    params=_EP52,
    run=_configure_channel_source,
    results={3: "the data set is switched off, or ET75 (Welmec 11.2) is full"},
    provenance=designed(
        "the MEP guide says EP52 changes ET66 (p.173) and that ET75 logs it (p.177); no name or "
        "layout is public: data set (1..4), channel, source ID UINT16 (>= 256: extended)"
    ),
)

# ---------------------------------------------------------------------------------------
# EP32 Configure Demand, EP33 Change Demand Interval, EP34 Demand Reset

_EP32 = Struct(
    "bidn" / Int16ul,
    "self_reads" / UINT8,
    "sub_interval" / UINT8,
    "interval_multiplier" / UINT8,
    "demand_reset_log_entries" / UINT8,
)
_EP33 = Struct("sub_interval" / UINT8, "interval_multiplier" / UINT8)


def _check_demand_interval(sub_interval: int, multiplier: int) -> None:
    """Sub-interval minutes dividing 60, and a demand interval (sub-interval x multiplier)
    that divides the hour, so intervals stay aligned to it."""
    interval = sub_interval * multiplier
    if not (1 <= sub_interval <= 60 and 60 % sub_interval == 0):
        _invalid(f"sub-interval {sub_interval} min does not divide 60")
    if not (multiplier >= 1 and interval <= 60 and 60 % interval == 0):
        _invalid(f"demand interval {sub_interval} x {multiplier} min does not divide 60")


def _configure_demand(meter, p, ctx) -> Result:
    """Set the billing configuration: BIDN (recorded with self reads and demand resets),
    the number of self reads BT26 keeps (BT21.2, at most BT20.2), the demand sub-interval and
    multiplier (BT13.4/BT13.5, for the sources ET48 lists) and the ET41 entries kept (ET36
    Current Entries, at most 255; the newest are kept). ET04's IDT Version goes up with BT03
    Dimension Change and event 88 (2080)."""
    registers = _registers()
    maximum = _parsed(meter, bt(20), ctx.now).self_reads
    if p.self_reads > maximum:
        _invalid(f"{p.self_reads} self reads: BT20.2 allows {maximum}")
    _check_demand_interval(p.sub_interval, p.interval_multiplier)
    demand = registers.billing_state(meter, registers.DEMAND)
    demand.update(configured=True, bidn=p.bidn, self_reads=p.self_reads,
                  sub_interval=p.sub_interval, interval_multiplier=p.interval_multiplier,
                  log_entries=p.demand_reset_log_entries)
    _demand().ensure_sources(meter)
    _demand().reconfigure(meter, ctx.now)
    meter.dirty = True
    _interface_changed(meter, ctx, ep(32), always=True)
    return Result()


def demand_reset(meter, ctx) -> int:
    """Snapshot BT23 as it is just before the reset into BT25 and ET41 (reason 'procedural'),
    count the reset (ET41's sequence, BT23's Nbr Demand Resets), move each maximum demand into
    its cumulative demand and clear it (metering/demand.py), log 'Demand Reset Occurred'.
    Returns the demand reset count."""
    registers = _registers()
    demand = registers.billing_state(meter, registers.DEMAND)
    resets = demand["resets"]
    record = registers.snapshot(meter, ctx.now, resets["sequence"] + 1, bidn=demand["bidn"],
                                reason=registers.PROCEDURAL_RESET)
    capacity = registers.demand_reset_log_entries(meter)
    registers.append_record(resets, record, capacity)
    demand["last_reset"] = record
    demand["last_reset_utc"] = meter.utc_seconds(ctx.now)  # starts the lockout
    _demand().reset(meter)
    meter.dirty = True
    if capacity:  # ET36 logs raise the alarm while they hold unread entries (MEP p.107)
        conditions.begin(meter, "mfg_log_entry_available", ctx.now, et(41), ctx.user_id)
    meter.log_event(events.DEMAND_RESET.number, 0, ctx.now, ctx.user_id)
    return resets["sequence"]


def _change_demand_interval(meter, p, ctx) -> Result:
    """Change the demand sub-interval and multiplier of a configured demand (result 3 before
    EP32). Maximum demands measured over the old interval end with a demand reset (ET41 reason
    'procedural', MEP p.111 names EP33); then ET04's IDT Version goes up with BT03 Dimension
    Change and event 88 (2081)."""
    registers = _registers()
    demand = registers.billing_state(meter, registers.DEMAND)
    if not demand["configured"]:
        _fail(ResultCode.CONFLICT_WITH_SETUP, "demand is not configured (EP32)")
    _check_demand_interval(p.sub_interval, p.interval_multiplier)
    demand_reset(meter, ctx)
    demand.update(sub_interval=p.sub_interval, interval_multiplier=p.interval_multiplier)
    _demand().reconfigure(meter, ctx.now)
    _interface_changed(meter, ctx, ep(33), always=True)
    return Result()


def check_reset_lockout(meter, now: float) -> None:
    """The demand reset lockout (BT21.0 bit 3, "a configurable lockout period for sequential
    demand resets", MEP p.201): a requested reset within BT13's reset exclusion minutes of the
    last one is refused with result 4, timing constraint, and changes nothing."""
    demand = _registers().billing_view(meter, _registers().DEMAND)
    minutes, last = demand.get("reset_exclusion") or 0, demand.get("last_reset_utc")
    if not minutes or last is None:
        return
    elapsed = meter.utc_seconds(now) - last
    if 0 <= elapsed < minutes * 60:
        _fail(ResultCode.TIMING_CONSTRAINT, f"demand reset locked out for {minutes} min after "
                                            f"the last one ({elapsed:.0f} s ago)")


def _reset_demand(meter, p, ctx) -> Result:
    """Demand reset: BT23 as it is now goes to BT25 (Previous Demand Reset Data) and, when
    EP32 configured ET41 entries, into ET41 (reason 1 'procedural'), whose sequence number
    counts the resets; the maximum demands restart from zero; logs 'Demand Reset Occurred'
    (20). Response: the demand reset count (UINT16). Result 4 within the reset lockout."""
    check_reset_lockout(meter, ctx.now)
    count = demand_reset(meter, ctx)
    return Result(data=(count & 0xFFFF).to_bytes(2, "little"))


declare(
    ep(32), "Configure Demand",
    execute=CONFIGURERS,
    params=_EP32,
    run=_configure_demand,
    provenance=designed(
        "the MEP guide says EP32 configures demand, ET41's entries (p.108-109) and the BT13 "
        "interval (p.114), and increments the IDT version (p.64); the layout is ours: the ET42 "
        "billing interface fields (BIDN, self reads, sub-interval, multiplier) and ET41 entries"
    ),
)
declare(
    ep(33), "Change Demand Interval",
    execute=CONFIGURERS,
    params=_EP33,
    run=_change_demand_interval,
    results={3: "demand is not configured (EP32)"},
    idempotent=False,  # it resets demand
    provenance=designed(
        "MEP p.114 (the interval is 'configured by EP32/33'), p.111 (EP33 makes a procedural "
        "demand reset) and p.64 (IDT version); name and layout are ours"
    ),
)
declare(
    ep(34), "Demand Reset",
    execute=CONFIGURERS,
    params=Struct(),
    run=_reset_demand,
    results={4: "within the demand reset lockout (BT13 reset exclusion) of the last reset"},
    response=Struct("demand_reset_count" / Int16ul),
    idempotent=False,
    provenance=documented(
        "ECH p.46 (EP34 Demand Reset); MEP p.110-111 (ET41 entry, reason 1), p.212 (BT25); no "
        "parameters are published and it takes none; result 4 inside the demand reset lockout "
        "(BT21 flag, BT13 reset exclusion) is designed"
    ),
)

# ---------------------------------------------------------------------------------------
# EP64 Reset Previous Season Data


def _reset_previous_season(meter, p, ctx) -> Result:
    """BT24 (Previous Season Data) back to zeros. Firmware 4.10 and later only, where BT24 is
    read-only (MEP p.211); refused with result 3 before."""
    if not firmware_at_least(meter, "4.10"):
        _fail(ResultCode.CONFLICT_WITH_SETUP, "EP64 needs firmware 4.10 or later")
    meter.state.tables.pop(bt(24), None)
    meter.dirty = True
    return Result()


declare(
    ep(64), "Reset Previous Season Data",
    execute=CONFIGURERS,
    params=Struct(),
    run=_reset_previous_season,
    results={3: "firmware before 4.10"},
    provenance=designed("MEP p.211: on firmware 4.10+ 'this table [BT24] can be reset with EP64'; "
                        "the name is ours, no parameters"),
)

# ---------------------------------------------------------------------------------------
# EP44 Reset Power Outage Counters, EP45 Clear Power Quality Records


def _reset_outage_counters(meter, p, ctx) -> Result:
    """Zero the power outage duration and count: BT23 summations 4 and 5 and ET10's totals."""
    meter.state.registers.update(power_outage_seconds=0, power_outage_count=0)
    meter.dirty = True
    return Result()


def _clear_power_quality(meter, p, ctx) -> Result:
    """Clear ET09's records and statistics (outage records, sag/surge/phase loss/over-current
    counts and times, frequency extremes, THD records, short outage count); its settings, a
    phase loss in progress (a condition, not a record) and the conditions being watched stay
    (metering/power_quality.py)."""
    from ..metering import power_quality  # see _registers

    power_quality.clear(meter)
    return Result()


declare(
    ep(44), "Reset Power Outage Counters",
    execute=CONFIGURERS,
    params=Struct(),
    run=_reset_outage_counters,
    provenance=designed("no public procedure resets BT23's outage summations (OPG p.25); a free "
                        "EP number, no parameters"),
)
declare(
    ep(45), "Clear Power Quality Records",
    execute=CONFIGURERS,
    params=Struct(),
    run=_clear_power_quality,
    provenance=designed("ET09's records and statistics are the meter's (MEP p.67-77) and no "
                        "public procedure clears them; a free EP number, no parameters"),
)

# ---------------------------------------------------------------------------------------
# The lists BP04/BP05 (LIST 2: self reads, 3-6: load profile data sets) and EP25/EP26 (ET41,
# ET75) move; procedures/logs.py holds the registry.


def _self_reads(meter) -> dict:
    registers = _registers()
    return registers.billing_state(meter, registers.SELF_READ)


def _demand_resets(meter) -> dict:
    registers = _registers()
    return registers.billing_state(meter, registers.DEMAND)["resets"]


def _channel_log(meter) -> dict:
    return _lp().channel_log_state(meter)


def _power_outage_log(meter) -> dict:
    from ..tables.logs import power_outage_log_state

    return power_outage_log_state(meter)


def _data_set_list(index: int) -> LogList:
    """A load profile data set as a list of blocks: BP05 takes unread blocks, BP04 takes them
    all; both clear BT63's overflow flag (OPG p.34) and, with no unread block left, the set's
    unread alarm."""
    def unread(meter):
        return _lp().data_set_status(meter, index)["unread_blocks"]

    def acknowledge(meter, count):
        taken = _lp().acknowledge_blocks(meter, index, count)
        if unread(meter) == 0:
            conditions.end(meter, _SET_ALARMS[index])
        return taken

    def reset(meter):
        acknowledge(meter, unread(meter))

    return LogList(f"load profile data set {index + 1} (BT{64 + index})", unread, acknowledge,
                   reset)


register_list(2, dict_log("self-read list (BT26)", _self_reads))
for _index in range(MAX_DATA_SETS):
    register_list(3 + _index, _data_set_list(_index))
register_manufacturer_log(et(41), dict_log("demand reset log (ET41)", _demand_resets))
register_manufacturer_log(et(81), dict_log("power outage log (ET81)", _power_outage_log))
# ET75 cannot be reset while Welmec compliance is on (MEP p.178): EP25 leaves it alone
register_manufacturer_log(et(75), dict_log("channel change log (ET75)", _channel_log,
                                           clearable=False))
