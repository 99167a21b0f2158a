"""Register tables around BT23: demand control and source definitions (BT13, BT16), constants
(BT15), the BT23 snapshots (BT24-BT26), the present register selection (BT27), and the
manufacturer's energy and demand tables (ET12, ET40, ET41, ET48, ET80).

Every table here is sized from BT21 and BT22 as the meter publishes them, so the tables keep
agreeing when demands or self reads are configured. The billing state behind them (self reads,
demand resets, the demand configuration EP32/EP33 set, the tier EP05 forces) lives in meter
subsystems with the accessors below: procedures/metering.py changes it, the renders show it, the
TOU calendar adds scheduled self reads and demand resets, and metering/demand.py measures the
demands in the DEMAND subsystem.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers (the page footers).
"""

from __future__ import annotations

import datetime as dt

from construct import Array, Bytes, Struct

from ..datatypes import NI_FMAT, UINT8, UINT16, UINT32, Bits, STimeDate, Time, list_header
from ..device.access import CONFIGURERS, READERS, Key
from ..device.errors import ResponseCode, ServiceError
from ..provenance import c1219, designed, documented
from .basic import _bt23_layout
from .catalog import bt, CATALOG, declare, et, zeros
from .dimensions import firmware, firmware_at_least, product_dimensions

#: Tables the MEP guide does not give MEP keys for: the optical keys (OPG p.60-63) and the
#: head-end's power-line key.
OPTICAL_READERS = frozenset({Key.MK, Key.PK, Key.RK, Key.PLC})


def _published(meter, table_id: int):
    """A table as the meter publishes it, parsed (BT21/BT22: the dimensions used here)."""
    return CATALOG[table_id].layout_for(meter).parse(meter.table_bytes(table_id, 0.0))


def actual_register(meter):
    """BT21: self reads, demands, present demands and values configured now."""
    return _published(meter, bt(21))


# ---------------------------------------------------------------------------------------
# Billing state. Each subsystem is created on first change (an idle meter stores nothing); the
# renders read it through ``billing_view``. A snapshot (self read, demand reset) is the BT23
# image with the BT55 minute and season it was taken at: what BT25, BT26 and ET41 entries hold.

SELF_READ = "self_read"
DEMAND = "demand"
TARIFF = "tariff"


def _list_defaults() -> dict:
    """A small circular list: sequence of the newest record (never reset, OPG p.28, MEP p.110),
    unread count, overflow flag and the newest records (dicts with a ``sequence``)."""
    return dict(sequence=0, unread=0, overflow=False, entries=[])


def _demand_defaults() -> dict:
    """EP32/EP33 settings (``log_entries`` None: ET41's built-in size); the demand resets: their
    list (its sequence counts them, BT23's Nbr Demand Resets) and the BT25 snapshot of the last
    one; and what metering/demand.py measures (its docstring describes those keys)."""
    return dict(configured=False, bidn=0, self_reads=0, sub_interval=0, interval_multiplier=0,
                log_entries=None, resets=_list_defaults(), last_reset=None,
                acc=[], window=[], due=None, present=[], previous=[], blocks={})


def _tariff_defaults() -> dict:
    """forced_tier: EP05's tier (None = the calendar drives); calendar_tier and season: what
    the TOU engine (issue 5) selects, 0 until it runs."""
    return dict(forced_tier=None, calendar_tier=0, season=0)


_DEFAULTS = {SELF_READ: _list_defaults, DEMAND: _demand_defaults,
             TARIFF: _tariff_defaults}


def billing_state(meter, name: str) -> dict:
    """The subsystem ``name`` (SELF_READ, DEMAND, TARIFF) for changing; set ``meter.dirty``."""
    return meter.subsystem(name, **_DEFAULTS[name]())


def billing_view(meter, name: str) -> dict:
    """The subsystem ``name`` for reading, without creating it."""
    return {**_DEFAULTS[name](), **meter.state.subsystems.get(name, {})}


def configured_self_reads(meter) -> int:
    """The self reads EP32 told BT26 to keep (0 before): the number BT21.2 publishes."""
    return billing_view(meter, DEMAND)["self_reads"]


def current_season(meter) -> int:
    return billing_view(meter, TARIFF)["season"]


def tier_status(meter) -> tuple[int, int]:
    """BT55.7 (Current Tier, Tier Drive; MEP p.230-231): a tier forced by EP05 holds until
    released (drive 2, "set manually with hold on"); otherwise the calendar's tier, drive 0."""
    tariff = billing_view(meter, TARIFF)
    if tariff["forced_tier"] is not None:
        return tariff["forced_tier"], 2
    return tariff["calendar_tier"], 0


def snapshot(meter, now: float, sequence: int, **extra) -> dict:
    """BT23 now, stamped with the BT55 minute (local time) and the season."""
    local = meter.local(now).replace(second=0)
    return dict(sequence=sequence, time=local.isoformat(timespec="minutes"),
                season=current_season(meter), registers=meter.table_bytes(bt(23), now).hex(),
                **extra)


_STAMP = Struct("time" / STimeDate(), "season" / UINT8)


def _stamped(meter, record: dict | None) -> bytes:
    """STIME_DATE, season and BT23 image of a snapshot (zeros for none, or for one taken
    before BT23 changed size: its register data no longer fits the layout)."""
    size = _bt23_layout(meter).sizeof()
    raw = bytes.fromhex(record["registers"]) if record else b""
    if len(raw) != size:
        return bytes(_STAMP.sizeof() + size)
    when = dt.datetime.fromisoformat(record["time"])
    return _STAMP.build(dict(time=when, season=record["season"])) + raw


def _list_image(log: dict, capacity: int, entry, element_size: int, list_type: int) -> bytes:
    """A small circular list (list_header, then ``capacity`` elements) as bytes. The record
    with sequence s sits in element (s - 1) mod capacity; only the newest ``capacity`` count."""
    sequence = log["sequence"]
    held = [r for r in log["entries"] if capacity and r["sequence"] > sequence - capacity]
    header = Struct(*list_header()).build(dict(
        flags=dict(overflow=int(log["overflow"]), list_type=list_type),
        valid_entries=len(held),
        last_entry_element=(sequence - 1) % capacity if held else 0,
        last_entry_sequence_number=sequence & 0xFFFF,
        unread_entries=min(log["unread"], capacity),
    ))
    body = bytearray(capacity * element_size)
    for record in held:
        start = (record["sequence"] - 1) % capacity * element_size
        body[start:start + element_size] = entry(record)
    return header + bytes(body)


def append_record(log: dict, record: dict, capacity: int) -> None:
    """Add ``record`` (its ``sequence`` the next one) to a list state, keeping the newest
    ``capacity``. An unread entry overwritten sets the overflow flag, as C12.19 lists do (OPG
    p.28); with no room at all the record is counted but not kept."""
    log["sequence"] = record["sequence"]
    if not capacity:
        log["entries"].clear()
        return
    log["entries"].append(record)
    del log["entries"][: max(0, len(log["entries"]) - capacity)]
    if log["unread"] >= capacity:
        log["overflow"] = True
    else:
        log["unread"] += 1


# ---------------------------------------------------------------------------------------
# BT13 Demand Control


def _bt13_layout(meter):
    """C12.19 DEMAND_CONTROL_TBL with the reset-exclusion, power-fail and sliding-demand options:
    the only variant that puts the sub-interval and multiplier at BT13.4 and BT13.5, where
    ET42.19-20 (MEP p.114) reads them. One interval record per configured demand (BT21.4)."""
    return Struct(
        "reset_exclusion" / UINT8,
        "power_fail_recognition_time" / UINT8,
        "power_fail_exclusion" / UINT8,
        "cold_load_pickup" / UINT8,
        "intervals" / Array(
            actual_register(meter).demands,
            Struct("sub_interval" / UINT8, "interval_multiplier" / UINT8),
        ),
    )


def _bt13_render(meter, now):
    """The demand interval EP32/EP33 set, the same for every demand (MEP p.114); the reset
    exclusion (minutes a demand reset locks out the next, C12.19 RESET_EXCLUSION) the profile
    set (device/setup.py); no power-fail exclusions, no cold load pickup."""
    config = billing_view(meter, DEMAND)
    values = zeros(_bt13_layout(meter))
    values.reset_exclusion = config.get("reset_exclusion") or 0
    interval = dict(sub_interval=config["sub_interval"],
                    interval_multiplier=config["interval_multiplier"])
    values.intervals = [interval] * len(values.intervals)
    return values


declare(
    bt(13), "Demand Control",
    read=OPTICAL_READERS,
    layout=_bt13_layout,
    render=_bt13_render,
    provenance=c1219(
        "DEMAND_CONTROL_TBL (reset exclusion, power-fail times, then SUB_INT/INT_MULTIPLIER per "
        "demand), placing BT13.4/BT13.5 where MEP p.114 (ET42.19-20) cites them; sized by BT21.4"
    ),
)

# ---------------------------------------------------------------------------------------
# BT15 Constants

_BT15 = Struct(
    "multiplier" / NI_FMAT,
    "offset" / NI_FMAT,
    "flags" / Bits(1, applied=0),
    "ct_ratio" / NI_FMAT,
    "vt_ratio" / NI_FMAT,
)

#: A directly connected meter: no adjustment, transformer ratios 1 (not applied, MEP p.200).
CT_RATIO = 1
VT_RATIO = 1


def _bt15_apply(meter, values, ctx):
    """The guide gives no range; a transformer ratio of 0 or below is never valid."""
    if values.ct_ratio <= 0 or values.vt_ratio <= 0:
        raise ServiceError(ResponseCode.ERR, "BT15 transformer ratios must be positive")


declare(
    bt(15), "Constants",
    read=READERS,
    write={Key.MK, Key.MAK, Key.PLC},
    layout=_BT15,
    defaults=lambda meter: dict(multiplier=1, offset=0, flags=dict(applied=0),
                                ct_ratio=CT_RATIO, vt_ratio=VT_RATIO),
    apply=_bt15_apply,
    provenance=documented("MEP p.199-200 (17 bytes: CT ratio at 9, VT ratio at 13); OPG p.60"),
)

# ---------------------------------------------------------------------------------------
# BT16 Source Definition

_COUNTER_SOURCES = frozenset({4, 5, 26, 27, 28})  # seconds, counts, pulses: no ratio applies
_UNSCALED_SOURCES = frozenset({18, 19, 21, 22, 23, 24, 25, 236, 237, 238})  # PF, Hz, angles
_POST_RATIO_SOURCES = frozenset({81, 82, 83, 84, *range(177, 185), *range(191, 200)})


def _bt16_sources(meter) -> tuple[frozenset, frozenset]:
    """(BT22 summation sources, BT27 present value sources) as the meter publishes them."""
    summations = frozenset(_published(meter, bt(22)).summation_sources)
    present = frozenset(_published(meter, bt(27)).present_value_sources)
    return summations, present


def _bt16_layout(meter):
    summations, present = _bt16_sources(meter)
    link = Bits(1, uom_entry=0, demand_control=1, data_control=2, constants=3,
                engineering_units=4, constant_to_be_applied=5)
    return Struct("sources" / Array(max(summations | present) + 1, link))


def _source_link(source: int, summations: frozenset, present: frozenset) -> dict:
    """BT23 values incorporate the BT15 ratios (MEP p.207); BT28 values do not, except the
    'post CT/VT' ones (MEP p.215). No UOM (BT12), demand control or data control entries."""
    if source not in summations | present:
        return {}
    link = dict(engineering_units=1)
    if source not in _COUNTER_SOURCES | _UNSCALED_SOURCES:
        applied = source in summations or source in _POST_RATIO_SOURCES
        link.update(constants=1, constant_to_be_applied=int(not applied))
    return link


def _bt16_render(meter, now):
    summations, present = _bt16_sources(meter)
    count = max(summations | present) + 1
    return dict(sources=[_source_link(s, summations, present) for s in range(count)])


declare(
    bt(16), "Source Definition",
    read=OPTICAL_READERS,
    layout=_bt16_layout,
    render=_bt16_render,
    provenance=c1219(
        "SOURCES_TBL: one SOURCE_LINK flag byte per source number 0..highest BT22/BT27 source "
        "(MEP p.180 orders lists 'by BT16 source number'; source IDs MEP p.203-206)"
    ),
)

# ---------------------------------------------------------------------------------------
# BT24 Previous Season Data, BT25 Previous Demand Reset Data


def _snapshot_layout(meter):
    """STIME_DATE and season, then a BT23 image (MEP p.211-212)."""
    return Struct("time" / STimeDate(), "season" / UINT8, "registers" / _bt23_layout(meter))


def _bt24_read_only(meter) -> bool:
    """MEP p.211 / OPG p.60: read-only on firmware 3.7x and 4.10+."""
    major, minor = firmware(meter)
    return (major == 3 and 70 <= minor <= 79) or firmware_at_least(meter, "4.10")


def _bt24_apply(meter, values, ctx):
    """The season must be one of BT50's; energies and counts are never negative."""
    if _bt24_read_only(meter):
        raise ServiceError(ResponseCode.IAR, "BT24 is read-only on firmware 3.7x and 4.10+")
    seasons = product_dimensions(meter).seasons
    if not 0 <= values.season < seasons:
        raise ServiceError(ResponseCode.ERR, f"BT24 season must be 0..{seasons - 1}")
    registers = values.registers
    if any(v < 0 for v in registers.totals) or any(v < 0 for t in registers.tiers for v in t):
        raise ServiceError(ResponseCode.ERR, "BT24 register values cannot be negative")


declare(
    bt(24), "Previous Season Data",
    read=READERS,
    write={Key.MK, Key.PK, Key.MAK, Key.PLC},
    layout=_snapshot_layout,
    # Stored: a client may write it on most firmware, so the meter keeps the image; the TOU
    # engine (issue 5) stores its season-change snapshot of BT23 here, EP64 drops it.
    defaults=lambda meter: zeros(_snapshot_layout(meter)),
    apply=_bt24_apply,
    provenance=documented("MEP p.211-212; OPG p.60 (write MK, PK except on firmware 3.7x, 4.10+)"),
)


def _bt25_render(meter, now):
    """The BT23 snapshot the last demand reset (EP34, EP33) took; zeros before the first."""
    return _stamped(meter, billing_view(meter, DEMAND)["last_reset"])


declare(
    bt(25), "Previous Demand Reset Data",
    read=READERS,
    layout=_snapshot_layout,
    render=_bt25_render,
    provenance=documented("MEP p.212; OPG p.60 (same STIME_DATE + season + BT23 image as BT24)"),
)

# ---------------------------------------------------------------------------------------
# BT26 Self Read Data


def _bt26_layout(meter):
    bt21 = actual_register(meter)
    entry = ["time" / STimeDate(), "season" / UINT8, "registers" / _bt23_layout(meter)]
    if bt21.demands:
        entry.insert(0, "bidn" / UINT16)
    return Struct(*list_header(), "entries" / Array(bt21.self_reads, Struct(*entry)))


def _bt26_render(meter, now):
    """The newest BT21.2 self reads (EP04; the calendar's, issue 5) in a circular list. List
    type reads FALSE while BT21.2 is 0 (OPG p.28); a BIDN precedes each entry when demands are
    configured (BT21.4 != 0), the one EP32 set when the self read was taken."""
    bt21 = actual_register(meter)
    layout = _bt26_layout(meter)
    element = layout.subcons[-1].subcon.subcon.sizeof()

    def entry(record):
        bidn = record.get("bidn", 0).to_bytes(2, "little") if bt21.demands else b""
        return bidn + _stamped(meter, record)

    return _list_image(billing_view(meter, SELF_READ), bt21.self_reads, entry, element,
                       list_type=int(bt21.self_reads > 0))


declare(
    bt(26), "Self Read Data",
    read=READERS,
    layout=_bt26_layout,
    render=_bt26_render,
    provenance=documented("OPG p.28-29, MEP p.212-214 (BIDN only when BT21.4 != 0)"),
)

# ---------------------------------------------------------------------------------------
# BT27 Present Register Selection

#: Source ID (MEP p.203-206) of each BT28 present value 0..83 (OPG p.53-57), matched by name.
PRESENT_VALUE_SOURCES = (
    *range(8, 26),  # 0-17: W, var, currents, voltages, PF, frequency, VA, sin(PA)
    81, 82, 83, 84,  # 18-21: post CT/VT (firmware 2.12+)
    104, 105, 106, 107,  # 22-25: Q1..Q4 reactive var (3.10+)
    *range(185, 200),  # 26-40: per-phase W, post CT/VT, currents post CT (3.50+)
    *range(202, 216),  # 41-54: continuous and average voltages and powers (3.70+)
    *range(216, 233),  # 55-71: apparent power per quadrant and phase, neutral current (4.0+)
    *range(233, 245),  # 72-83: average currents (4.10+), voltage angles, per-phase var (4.30+)
)


def _bt27_layout(meter):
    bt21 = actual_register(meter)
    return Struct(
        "present_demand_sources" / Array(bt21.present_demands, UINT8),
        "present_value_sources" / Array(bt21.present_values, UINT8),
    )


def _bt27_render(meter, now):
    """No present demand sources: BT21.8 stays 0 so BT28 keeps the layout readers in the field
    expect (the present demands are source IDs 88-103, metering/demand.py)."""
    bt21 = actual_register(meter)
    return dict(present_demand_sources=[0] * bt21.present_demands,
                present_value_sources=list(PRESENT_VALUE_SOURCES[: bt21.present_values]))


declare(
    bt(27), "Present Register Selection",
    read=READERS,
    layout=_bt27_layout,
    render=_bt27_render,
    provenance=documented("MEP p.214-215; OPG p.53-57 (present value order), p.60"),
)

# ---------------------------------------------------------------------------------------
# ET12 Total Energy / Daily Consumption registers

#: ET12 registers in BT22 order: the first four summation sources (MEP p.203).
TE_REGISTERS = ("fwd_active_wh", "rev_active_wh", "import_reactive_varh", "export_reactive_varh")


def _et12_layout(meter):
    return Struct("registers" / Array(meter.system_info().max_te_registers, NI_FMAT))


def _et12_render(meter, now):
    """Total energy registers from the meter's accumulators, one per ET04.55 register."""
    count = meter.system_info().max_te_registers
    values = [meter.state.registers[name] for name in TE_REGISTERS[:count]]
    return dict(registers=values + [0] * (count - len(values)))


declare(
    et(12), "Total Energy / Daily Consumption",
    read=OPTICAL_READERS,
    layout=_et12_layout,
    render=_et12_render,
    provenance=designed(
        "the guides give only the register count (ET04.55, MEP p.58): ARRAY[ET04.55] of "
        "NI_FMAT1 holding Fwd/Rev Wh and Import/Export varh, the BT22 sources 0-3"
    ),
)

# ---------------------------------------------------------------------------------------
# ET40 Demand Configuration

_ET40 = Struct("demand_reset_time" / Time(), "reserved" / Bytes(5))


def _et40_apply(meter, values, ctx):
    """The reserved bytes stay zero whatever a client writes."""
    values.reserved = bytes(5)
    return values


declare(
    et(40), "Demand Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET40,
    defaults=lambda meter: dict(demand_reset_time=dt.time(0, 0), reserved=bytes(5)),
    apply=_et40_apply,
    provenance=designed(
        "MEP p.261, p.264 (Tables C.1, C.4) only say it holds the demand reset time of day "
        "(MAK may write) and reserved demand settings: a TIME then 5 reserved bytes"
    ),
)

# ---------------------------------------------------------------------------------------
# ET41 Historical Demand Reset Log

#: ET41 entries before EP32 sets a size: ET36 "Current Entries" is 0 until then (MEP p.109).
DEMAND_RESET_LOG_ENTRIES = 0
#: ET36 "Max Entries" of ET41 (MEP p.109).
DEMAND_RESET_LOG_MAX = 255
#: ET41 Reset Reason of a demand reset a procedure made ("Procedural (MP33, MP34)", MEP p.111).
PROCEDURAL_RESET = 1


def demand_reset_log_entries(meter) -> int:
    """ET41's entry count: the one EP32 configured, else the built-in one."""
    configured = billing_view(meter, DEMAND)["log_entries"]
    return DEMAND_RESET_LOG_ENTRIES if configured is None else configured


def _et41_entry(meter):
    return Struct(
        "length" / UINT16,
        "reset_reason" / UINT8,
        "bidn" / UINT16,
        "time" / STimeDate(),
        "season" / UINT8,
        "registers" / _bt23_layout(meter),
    )


def demand_reset_entry_size(meter) -> int:
    """ET41 entry size in bytes (ET36 'Entry Size' for ET41): 11 + a BT23 image."""
    return _et41_entry(meter).sizeof()


def _et41_layout(meter):
    entries = Array(demand_reset_log_entries(meter), _et41_entry(meter))
    return Struct(*list_header(), "entries" / entries)


def _et41_render(meter, now):
    """The newest demand resets (EP34, EP33; scheduled ones in issue 5), each with the BT23
    snapshot BT25 also shows for the last one; always a circular list (MEP p.110). The header's
    sequence number counts every demand reset, even with no entries configured."""
    size = demand_reset_entry_size(meter)
    prefix = Struct("length" / UINT16, "reset_reason" / UINT8, "bidn" / UINT16)

    def entry(record):
        head = prefix.build(dict(length=size, reset_reason=record["reason"],
                                 bidn=record.get("bidn", 0)))
        return head + _stamped(meter, record)

    return _list_image(billing_view(meter, DEMAND)["resets"], demand_reset_log_entries(meter),
                       entry, size, list_type=1)


declare(
    et(41), "Historical Demand Reset Log",
    read=READERS,
    layout=_et41_layout,
    render=_et41_render,
    provenance=documented("MEP p.110-111 (entries per ET36, MEP p.108-109; EP32 sets how many)"),
)

# ---------------------------------------------------------------------------------------
# ET48 Demand configuration entries

_ET48_ENTRY = Struct(
    "flags" / Bits(1, configured=0, maximum=1),
    "source" / UINT8,
    "coincident_sources" / Array(2, UINT8),
)
NO_COINCIDENT = 0xFF
_UNUSED_SOURCE_IDS = frozenset({85, 86, 87, 200})  # MEP p.204-205


def _et48_layout(meter):
    return Struct("entries" / Array(product_dimensions(meter).et48_entries, _ET48_ENTRY))


def _highest_source_id(meter) -> int:
    """Source IDs 216+ need firmware 4.0, 233+ 4.10, 236+ 4.30 (MEP p.206)."""
    for version, highest in (("4.30", 244), ("4.10", 235), ("4.0", 232)):
        if firmware_at_least(meter, version):
            return highest
    return 215


def known_source_id(meter, source: int) -> bool:
    """A standard source ID this firmware has (MEP p.203-206)."""
    return source <= _highest_source_id(meter) and source not in _UNUSED_SOURCE_IDS


def _et48_apply(meter, values, ctx):
    for i, entry in enumerate(values.entries):
        if not entry.flags["configured"]:
            continue
        coincidents = [s for s in entry.coincident_sources if s != NO_COINCIDENT]
        if not all(known_source_id(meter, s) for s in [entry.source, *coincidents]):
            raise ServiceError(ResponseCode.ERR, f"ET48 entry {i}: unknown source ID")


declare(
    et(48), "Demand Configuration Entries",
    read=OPTICAL_READERS,
    write={Key.MK, Key.PK, Key.PLC},
    layout=_et48_layout,
    defaults=lambda meter: zeros(_et48_layout(meter)),
    apply=_et48_apply,
    provenance=designed(
        "only its entry count (ET11.23, MEP p.79) and ET42.10.3 'demand configured' (MEP p.113) "
        "are public: per demand a flag byte, a source ID and 2 coincident source IDs (BT20.5/.4)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET80 Average Power Settings

_ET80 = Struct(
    "enabled" / UINT8,
    "sub_interval" / UINT16,
    "interval_multiplier" / UINT8,
    "disconnect_threshold" / UINT32,
)


def _valid_sub_interval(seconds: int) -> bool:
    """Seconds dividing a minute, whole minutes dividing an hour, whole hours dividing a day."""
    if seconds < 60:
        return seconds > 0 and 60 % seconds == 0
    if seconds < 3600:
        return seconds % 60 == 0 and 60 % (seconds // 60) == 0
    return seconds % 3600 == 0 and 24 % (seconds // 3600) == 0


def _et80_apply(meter, values, ctx):
    if values.enabled not in (0, 1):
        raise ServiceError(ResponseCode.ERR, "ET80 enabled must be 0 or 1")
    if not _valid_sub_interval(values.sub_interval):
        raise ServiceError(ResponseCode.ERR, f"ET80 sub-interval {values.sub_interval} s invalid")
    if not 1 <= values.interval_multiplier <= 15:
        raise ServiceError(ResponseCode.ERR, "ET80 interval multiplier must be 1..15")


def _et80_defaults(meter):
    """Averaging off, sub-interval 1 s, multiplier 15, no threshold (MEP p.184-185).

    A meter on firmware 3.70+ averages active power over sub-interval x multiplier (a block
    average with multiplier 1, rolling otherwise) and opens the disconnect contactor when the
    average exceeds the threshold; older firmware keeps the settings without using them. The
    averaging belongs to the relay work (later); until then the settings are only kept."""
    return dict(enabled=0, sub_interval=1, interval_multiplier=15, disconnect_threshold=0)


declare(
    et(80), "Average Power Settings",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET80,
    defaults=_et80_defaults,
    apply=_et80_apply,
    provenance=documented("MEP p.183-185 (8 bytes; defaults 0, 1, 15, 0); OPG p.62"),
)

# ---------------------------------------------------------------------------------------
# The TOU calendar's snapshots (metering/tou.py): BT24 at a season change, scheduled demand
# resets in ET41.

#: ET41 Reset Reason of a demand reset the BT54 calendar made ("Scheduled", MEP p.110).
SCHEDULED_RESET = 0


def store_season_snapshot(meter, now: float) -> None:
    """BT24 Previous Season Data at a season change (MEP p.211): BT23 now, stamped with the BT55
    minute and the season that ends ("season represented in this snapshot"), so it is taken
    before the new season applies. BT24 stays a stored table a client may overwrite."""
    meter.state.tables[bt(24)] = _stamped(meter, snapshot(meter, now, 0))
    meter.dirty = True


def mark_last_reset(meter, reason: int) -> None:
    """Give the newest demand reset (BT25, ET41) another ET41 Reset Reason, e.g. SCHEDULED_RESET
    for one the calendar made through procedures.metering.demand_reset."""
    demand = billing_state(meter, DEMAND)
    last = demand["last_reset"]
    if last is None:
        return
    last["reason"] = reason
    for record in demand["resets"]["entries"]:
        if record["sequence"] == last["sequence"]:
            record["reason"] = reason
    meter.dirty = True
