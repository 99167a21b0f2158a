"""Log tables: which events exist and are logged (BT72, BT73), the alternate event log (ET79),
the power outage and power quality records (ET81, ET09, ET10), the alarm table (ET22) and the
configuration ID log (ET38).

Logs render as a freshly commissioned meter shows them: headers with truthful dimensions and no
entries. Filling them is later work: the alternate event log (ET79) and event filtering by BT73
belong to the event log subsystem, outage and power quality records (ET09, ET10, ET81) to the
metering engine's power-quality monitoring, configuration ID entries (ET38) to whatever changes a
configuration ID.

Tables the guides list only for firmware 3.70+ (ET79, ET81) are always declared: the catalog is
one table set for every firmware version (BT00's bitmaps derive from it), and on older firmware
they simply stay empty.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from construct import Array, Bytes, Struct

from ..datatypes import NI_FMAT, UINT8, UINT16, UINT32, Bits, BitSet, LTimeDate, list_header
from ..device.access import CONFIGURERS, READERS, Key
from ..device import conditions
from ..device.alarms import ALARMS
from ..events import EVENTS, QUIET_BY_DEFAULT
from ..procedures import PROCEDURES
from ..procedures.catalog import MANUFACTURER_FLAG
from ..provenance import c1219, designed, documented
from .basic import (PROCEDURE_REQUEST_TABLE, _bt74_layout, _log_dimensions, _split,
                    render_event_log)
from .catalog import bt, CATALOG, declare, et, EXTENDED_BASE, refuse, zeros
from .dimensions import firmware_at_least, product_dimensions
from .extended import log_entries

#: Tables the MEP guide does not cover: the optical keys and the head-end, no MEP key.
_NO_MEP_READERS = READERS - {Key.MAK, Key.MBK}
_NO_MEP_CONFIGURERS = CONFIGURERS - {Key.MAK}


# ---------------------------------------------------------------------------------------
# BT72 Events Identification


def _event_bytes(meter) -> tuple[int, int]:
    """BT71.1/BT71.2: bytes of the standard and manufacturer event bitmaps (8 and 19)."""
    dims = _log_dimensions(meter, 0.0)
    return dims["standard_events"], dims["manufacturer_events"]


def event_bit(meter, number: int) -> tuple[str, int]:
    """Where event ``number`` sits in BT72/BT73: ("standard", bit) or ("manufacturer", bit).

    The history log's event ID is one 12-bit number (BT74, OPG p.52) and BT70 allows up to 64
    standard and 152 manufacturer events (OPG p.50): IDs below 8 * BT71.1 are standard events,
    the following ones manufacturer events. (C12.19's bit-11 manufacturer flag cannot apply:
    NES IDs such as 72 and 107 are manufacturer events below 2048.)"""
    standard_bytes, manufacturer_bytes = _event_bytes(meter)
    standard_bits = standard_bytes * 8
    if number < standard_bits:
        return "standard", number
    if number < standard_bits + manufacturer_bytes * 8:
        return "manufacturer", number - standard_bits
    raise ValueError(f"event {number} does not fit in BT72's bitmaps")


def _catalog_events(meter) -> dict[str, frozenset]:
    bits = {"standard": set(), "manufacturer": set()}
    for number in EVENTS:
        kind, bit = event_bit(meter, number)
        bits[kind].add(bit)
    return {kind: frozenset(found) for kind, found in bits.items()}


def _bt72_layout(meter):
    standard_bytes, manufacturer_bytes = _event_bytes(meter)
    return Struct(
        "standard_events_supported" / BitSet(standard_bytes),
        "manufacturer_events_supported" / BitSet(manufacturer_bytes),
    )


def _bt72_render(meter, now):
    supported = _catalog_events(meter)
    return dict(standard_events_supported=supported["standard"],
                manufacturer_events_supported=supported["manufacturer"])


declare(
    bt(72), "Events Identification",
    read=_NO_MEP_READERS,
    layout=_bt72_layout,
    render=_bt72_render,
    provenance=c1219(
        "EVENTS_ID_TBL: STD_EVENTS_SUPPORTED SET(BT71.1), MFG_EVENTS_SUPPORTED SET(BT71.2); "
        "bits derived from the event catalog"
    ),
)

# ---------------------------------------------------------------------------------------
# BT73 History Log Control


def _bt73_layout(meter):
    standard_bytes, manufacturer_bytes = _event_bytes(meter)
    d = meter.dims
    return Struct(
        "standard_events_monitored" / BitSet(standard_bytes),
        "manufacturer_events_monitored" / BitSet(manufacturer_bytes),
        "standard_tables_monitored" / BitSet(d.basic_tables_bytes),
        "manufacturer_tables_monitored" / BitSet(d.extended_tables_bytes),
        "standard_procedures_monitored" / BitSet(d.basic_procedures_bytes),
        "manufacturer_procedures_monitored" / BitSet(d.extended_procedures_bytes),
    )


def _event_bits(meter, numbers) -> dict[str, set]:
    bits = {"standard": set(), "manufacturer": set()}
    for number in numbers:
        kind, bit = event_bit(meter, number)
        bits[kind].add(bit)
    return bits


#: BP04, BP05 and EP26 only move log pointers; logging them would add the unread entry the
#: head-end just acknowledged.
_QUIET_PROCEDURES = frozenset({4, 5, MANUFACTURER_FLAG + 26})


def _bt73_defaults(meter):
    """Every catalog event is logged except the chatty ones (events.QUIET_BY_DEFAULT);
    'Table Written To' covers every writable table but BT07 (a procedure call is logged as
    'Procedure Invoked') and 'Procedure Invoked' every procedure but the log-pointer ones."""
    events = _event_bits(meter, set(EVENTS) - QUIET_BY_DEFAULT)
    basic_tables, extended_tables = _split(
        [n for n, t in CATALOG.items() if t.writable and n != PROCEDURE_REQUEST_TABLE],
        EXTENDED_BASE)
    basic_procedures, extended_procedures = _split(
        [n for n in PROCEDURES if n not in _QUIET_PROCEDURES], MANUFACTURER_FLAG)
    return dict(
        standard_events_monitored=events["standard"],
        manufacturer_events_monitored=events["manufacturer"],
        standard_tables_monitored=basic_tables,
        manufacturer_tables_monitored=extended_tables,
        standard_procedures_monitored=basic_procedures,
        manufacturer_procedures_monitored=extended_procedures,
    )


def _bt73_apply(meter, values, ctx):
    """Only what the meter has may be monitored: events of BT72, tables and procedures of
    BT00."""
    events = _catalog_events(meter)
    tables = _split(CATALOG, EXTENDED_BASE)
    procedures = _split(PROCEDURES, MANUFACTURER_FLAG)
    checks = (
        ("standard_events_monitored", events["standard"], "standard event"),
        ("manufacturer_events_monitored", events["manufacturer"], "manufacturer event"),
        ("standard_tables_monitored", tables[0], "basic table"),
        ("manufacturer_tables_monitored", tables[1], "extended table"),
        ("standard_procedures_monitored", procedures[0], "basic procedure"),
        ("manufacturer_procedures_monitored", procedures[1], "extended procedure"),
    )
    for field, supported, what in checks:
        unsupported = sorted(values[field] - supported)
        if unsupported:
            refuse("BT73", f"{what} bit(s) {unsupported} are not supported by this meter")


declare(
    bt(73), "History Log Control",
    read=_NO_MEP_READERS,
    write=_NO_MEP_CONFIGURERS,
    layout=_bt73_layout,
    defaults=_bt73_defaults,
    apply=_bt73_apply,
    provenance=c1219(
        "HISTORY_LOG_CTRL_TBL (1997 order): STD/MFG_EVENTS_MONITORED_FLAGS SET(BT71.1/.2), "
        "STD/MFG_TBLS_MONITORED_FLAGS SET(BT00.13/.14), STD/MFG_PROC_MONITORED_FLAGS "
        "SET(BT00.15/.16)"
    ),
)

@dataclass(frozen=True)
class Monitoring:
    """What BT73 says the meter logs: event numbers, table numbers, procedure numbers."""

    events: frozenset
    tables: frozenset
    procedures: frozenset


def monitoring(meter) -> Monitoring:
    """BT73 as sets of numbers, parsed once per BT73 image a client stored (or once for the
    defaults): Meter.log_event asks on every event."""
    stored = meter.state.tables.get(bt(73))
    cached = getattr(meter, "_bt73_monitoring", None)
    if cached is not None and cached[0] is stored:
        return cached[1]
    result = _parse_monitoring(meter) if stored is not None else \
        meter.profile.shared("bt73_monitoring", lambda: _parse_monitoring(meter))
    meter._bt73_monitoring = (stored, result)
    return result


def _parse_monitoring(meter) -> Monitoring:
    values = _bt73_layout(meter).parse(meter.table_bytes(bt(73), 0.0))
    standard_bits = _event_bytes(meter)[0] * 8
    return Monitoring(
        events=frozenset(values.standard_events_monitored)
        | frozenset(standard_bits + b for b in values.manufacturer_events_monitored),
        tables=frozenset(values.standard_tables_monitored)
        | frozenset(EXTENDED_BASE + b for b in values.manufacturer_tables_monitored),
        procedures=frozenset(values.standard_procedures_monitored)
        | frozenset(MANUFACTURER_FLAG + b for b in values.manufacturer_procedures_monitored),
    )


# ---------------------------------------------------------------------------------------
# ET79 History Log Data (Alternate Event Log)


def _et79_render(meter, now):
    """BT74's syntax over the alternate log (events.ALTERNATE_LOG_EVENTS); its array has
    BT71.5 entries, the count ET54.80 publishes."""
    return render_event_log(meter, meter.state.alternate_log)


declare(
    et(79), "History Log Data (Alternate Event Log)",
    read=READERS,
    layout=_bt74_layout,
    render=_et79_render,
    provenance=documented("MEP p.181-183 (BT74's syntax, ARRAY[BT71.5]); OPG p.49, p.62"),
)

# ---------------------------------------------------------------------------------------
# ET81 Power Outage Log, ET38 Config ID Log: ET36-managed logs with the standard header

#: ET36 "Current Entries" defaults (MEP p.109); EP06/EP37 resize them on a real meter.
POWER_OUTAGE_LOG_ENTRIES = 0
CONFIG_ID_LOG_ENTRIES = 10


def _empty_circular_log(layout_for):
    """A log with no entry yet: every byte zero but 'circular queue' (ET36 Max Entries is not
    0 for these logs, MEP p.109)."""

    def render(meter, now):
        values = zeros(layout_for(meter))
        values.flags["list_type"] = 1
        return values

    return render


_POWER_OUTAGE_LOG = "power_outage_log"
_OUTAGE_ENTRY = Struct("start_timestamp" / LTimeDate(), "end_timestamp" / LTimeDate())


def power_outage_log_entries(meter) -> int:
    """ET81's entries: ET36 Current Entries as EP06 configured it (0 on a new meter)."""
    return log_entries(meter, 81, POWER_OUTAGE_LOG_ENTRIES)


def _et81_layout(meter):
    return Struct(*list_header(), "entries" / Array(power_outage_log_entries(meter),
                                                     _OUTAGE_ENTRY))


def power_outage_log_state(meter) -> dict:
    """ET81's list: outages as [start, end] local seconds (naive epoch), oldest first, at most
    the configured entries; a new size (EP06) restarts it empty, its sequence number goes on.
    EP25/EP26 act on it as a ``procedures.logs.dict_log``."""
    own = meter.subsystem(_POWER_OUTAGE_LOG, sequence=0, unread=0, overflow=False, entries=[],
                          size=POWER_OUTAGE_LOG_ENTRIES)
    size = power_outage_log_entries(meter)
    if own["size"] != size:
        own.update(size=size, unread=0, overflow=False, entries=[])
        meter.dirty = True
    return own


def _local_seconds(meter, virtual: float) -> int:
    return int(meter.local(virtual).replace(tzinfo=dt.timezone.utc).timestamp())


def record_power_outage(meter, start: float, end: float) -> None:
    """The metering engine's outage from virtual ``start`` to ``end``: one ET81 entry in local
    time (MEP p.185-186), if EP06 gave ET81 entries; a new entry raises BT03 'Manufacturer Log
    Entry Occurred' (event 87, argument the table)."""
    own = power_outage_log_state(meter)
    if not own["size"]:
        return
    own["entries"].append([_local_seconds(meter, start), _local_seconds(meter, end)])
    if len(own["entries"]) > own["size"]:
        del own["entries"][0]
        own["overflow"] = True
    own["sequence"] = (own["sequence"] + 1) & 0xFFFF
    own["unread"] = min(own["unread"] + 1, own["size"])
    meter.dirty = True
    conditions.begin(meter, "mfg_log_entry_available", end, et(81))


def _stamp(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def _et81_render(meter, now):
    """A circular queue in ascending order: the newest entry at Last Entry Element."""
    own = meter.state.subsystems.get(_POWER_OUTAGE_LOG)  # reading creates no state
    size = power_outage_log_entries(meter)
    if own is None or own["size"] != size:
        own = dict(sequence=0 if own is None else own["sequence"], unread=0, overflow=False,
                   entries=[])
    entries = own["entries"]
    values = zeros(_et81_layout(meter))
    values.flags["list_type"] = 1
    values.flags["overflow"] = int(own["overflow"])
    values.valid_entries = len(entries)
    values.last_entry_sequence_number = own["sequence"]
    values.unread_entries = own["unread"]
    if entries:
        last = (own["sequence"] - 1) % size  # element n holds the entries numbered n mod size
        values.last_entry_element = last
        for age, (start, end) in enumerate(reversed(entries)):
            values.entries[(last - age) % size] = dict(start_timestamp=_stamp(start),
                                                       end_timestamp=_stamp(end))
    return values


declare(
    et(81), "Power Outage Log",
    read=READERS,
    layout=_et81_layout,
    render=_et81_render,
    provenance=documented(
        "MEP p.185-186 (12-byte entries, as ET36 says, local start and end times); entries: ET36 "
        "Current Entries, default 0 (MEP p.109), set by EP06"
    ),
)


_CONFIG_ID_ENTRY_SIZE = 35  # ET36 Entry Size for ET38 (MEP p.108)


def _et38_layout(meter):
    """One entry per change of a configuration identifier (the IDs the guides define: BT54
    Calendar ID, ET21 LP Config ID, ET09 PQ Configuration ID, ET42 BIDN): when, who, which
    table, old and new ID; the rest of ET36's 35-byte entry is reserved."""
    fields = (
        "time" / LTimeDate(),
        "sequence_number" / UINT16,
        "user_id" / UINT16,
        "table" / Bits(2, table_number=(0, 11), extended=11),
        "previous_config_id" / UINT32,
        "config_id" / UINT32,
    )
    used = Struct(*fields).sizeof()
    entry = Struct(*fields, "reserved" / Bytes(_CONFIG_ID_ENTRY_SIZE - used))
    return Struct(*list_header(), "entries" / Array(CONFIG_ID_LOG_ENTRIES, entry))


declare(
    et(38), "Config ID Log",
    read=_NO_MEP_READERS,
    layout=_et38_layout,
    render=_empty_circular_log(_et38_layout),
    provenance=designed(
        "no public layout: ET36 gives the standard log header (MEP p.107), 35-byte entries "
        "(p.108), 10 of them (p.109); the entry follows BT74's (time, sequence, user) plus the "
        "ID change"
    ),
)

# ---------------------------------------------------------------------------------------
# ET09 Power Quality, ET10 Long Power Outage Records


def max_power_outages(meter) -> int:
    """ET04.53 Max Power Outages Recorded: the length of ET09's and ET10's outage arrays."""
    return meter.system_info().max_power_outages


_OUTAGE_RECORD = Struct(
    "power_on_time" / LTimeDate(),
    "reset_cause" / UINT8,  # 3 power failure, 8 brown-out
    "reserved" / UINT8,
    "power_off_time" / LTimeDate(),
    "power_off_duration" / UINT32,
)

_PHASES = (1, 2, 3)


def _per_phase(*fields):
    """L1..L3 copies of (name, type) pairs, phase by phase as the guide lists them."""
    return [f"l{p}_{name}" / kind for p in _PHASES for name, kind in fields]


_THD_EVENT_RECORD = Struct(
    "event_count" / UINT16,
    "event_timestamp" / LTimeDate(),
    "max_thd" / UINT16,
    "max_thd_timestamp" / LTimeDate(),
    "average_thd" / UINT16,
    "reserved" / Bytes(4),  # the guide's record is 22 bytes; its fields fill 18
)
_THD_RECORD = Struct(  # V-THD, I-THD, VA-THD
    "thd_time_threshold" / UINT16,
    "thd_threshold" / UINT16,
    "thd_event_records" / Array(3, _THD_EVENT_RECORD),
)
_DRP_DRC_RECORD = Struct("drp" / UINT16, "drc" / UINT16, "time_stamp" / LTimeDate())


def _et09_layout(meter):
    fields = [
        "long_outage_duration_threshold" / UINT16,
        "sag1_surge_time_threshold" / UINT8,
        "sag1_threshold" / UINT8,
        "surge_threshold" / UINT8,
        "over_current_threshold" / UINT8,
        "power_outage_records" / Array(max_power_outages(meter), _OUTAGE_RECORD),
        *_per_phase(("most_recent_sag1_event", LTimeDate()), ("sag1_events", UINT16)),
        *_per_phase(("most_recent_surge_event", LTimeDate()), ("surge_events", UINT16)),
        "min_frequency" / NI_FMAT,
        "min_freq_date_time" / LTimeDate(),
        "max_frequency" / NI_FMAT,
        "max_freq_date_time" / LTimeDate(),
        *_per_phase(("over_current_events", UINT32)),
        "phase_loss" / Bits(1, phase_l1_loss=0, phase_l2_loss=1, phase_l3_loss=2),
        *_per_phase(("most_recent_phase_loss_event", LTimeDate()), ("phase_loss_events", UINT16)),
        *_per_phase(("most_recent_sag1_voltage", NI_FMAT)),
        *_per_phase(("most_recent_surge_voltage", NI_FMAT)),
        "short_outage_count" / UINT32,
    ]
    if firmware_at_least(meter, "2.12"):
        fields += ["pq_configuration_id" / UINT32, "sag1_surge_threshold_seconds" / UINT8]
    if firmware_at_least(meter, "3.10"):
        fields += [
            "power_up_quality_hold_time" / UINT8,
            "over_current_time_threshold" / UINT16,
            "thd_records" / Array(3, _THD_RECORD),
        ]
    if firmware_at_least(meter, "3.70"):
        fields.append("drp_drc_event_records" / Array(12, _DRP_DRC_RECORD))
    if firmware_at_least(meter, "4.10"):
        fields += [
            "sag2_time_threshold" / UINT16,
            "sag2_threshold" / UINT8,
            *_per_phase(("most_recent_sag2_event", LTimeDate()), ("sag2_events", UINT16)),
            *_per_phase(("most_recent_sag2_voltage", NI_FMAT)),
            "average_current_calculation_interval" / UINT16,
        ]
    if firmware_at_least(meter, "4.21"):
        fields.append("options" / Bits(1, early_sag_surge_event=0))
    return Struct(*fields)


#: ET09 settings ("H" fields, and the "F" averaging interval the guide lets a client set) with
#: a freshly commissioned meter's values: the guide's Value column where it gives one (sag1 and
#: surge 10 %, hold time 2 s, sag2 255 %, averaging 600 s, early events off); otherwise 180 s
#: long outages (the EN 50160 long-interruption boundary), the 10 s that the guide's
#: over-current event definition uses, THD time threshold 10 s (its minimum) and 0 (= off) for
#: everything the guide leaves to the head-end.
ET09_SETTINGS = dict(
    long_outage_duration_threshold=180,
    sag1_surge_time_threshold=0,
    sag1_threshold=10,
    surge_threshold=10,
    over_current_threshold=0,
    pq_configuration_id=0,
    sag1_surge_threshold_seconds=0,
    power_up_quality_hold_time=2,
    over_current_time_threshold=10,
    sag2_time_threshold=0,
    sag2_threshold=255,
    average_current_calculation_interval=600,
    options=dict(early_sag_surge_event=0),
)
#: the settings inside each THD record (MEP p.74); the rest of the record is the meter's
THD_SETTINGS = dict(thd_time_threshold=10, thd_threshold=0)


def _et09_render(meter, now):
    """The settings (defaults, or what a client wrote) and the records and statistics ("M")
    metering/power_quality.py keeps from the measured quantities; the outage records are the
    metering engine's."""
    from ..metering import power_quality  # the metering layer reads its settings from here

    values = zeros(_et09_layout(meter))
    power_quality.render_into(meter, values, now)
    return values


def _averaging_interval_ok(seconds: int) -> bool:
    """ET09 averaging interval (MEP p.76-77): synchronised to the hour, so a divisor of a
    minute, a whole number of minutes dividing an hour, or whole hours dividing a day."""
    if seconds < 60:
        return seconds == 0 or 60 % seconds == 0
    if seconds < 3600:
        return seconds % 60 == 0 and 60 % (seconds // 60) == 0
    return seconds % 3600 == 0 and 24 % (seconds // 3600) == 0


def _et09_check(values):
    if values.get("over_current_time_threshold", 0) > 65_000:
        refuse("ET09", f"over-current time threshold {values.over_current_time_threshold} is "
                        "above 65000")
    for record in values.get("thd_records", []):
        if record.thd_time_threshold > 65_000:
            refuse("ET09", f"THD time threshold {record.thd_time_threshold} is above 65000")
        if record.thd_threshold > 10_000:
            refuse("ET09", f"THD threshold {record.thd_threshold} is above 10000 (100 %)")
    interval = values.get("average_current_calculation_interval")
    if interval is not None and not _averaging_interval_ok(interval):
        refuse("ET09", f"averaging interval {interval} s is not synchronised to the hour")


def _et09_apply(meter, values, ctx):
    """Settings change (the power quality monitor uses them from the next step); the records
    and statistics ("M") stay the meter's whatever the client wrote there."""
    from ..metering import power_quality

    _et09_check(values)
    written = {name: values[name] for name in ET09_SETTINGS if name in values}
    if "thd_records" in values:
        written["thd_records"] = [[r.thd_time_threshold, r.thd_threshold]
                                  for r in values.thd_records]
    power_quality.store_settings(meter, written)


declare(
    et(9), "Power Quality",
    read=READERS,
    write=CONFIGURERS,
    layout=_et09_layout,
    render=_et09_render,
    apply=_et09_apply,
    provenance=documented(
        "MEP p.67-77 (outage records ARRAY[ET04.53] of 18 bytes; fields by firmware 2.12, 3.10, "
        "3.70, 4.10, 4.21; THD event records padded to the guide's 22 bytes)"
    ),
)


def _et10_layout(meter):
    return Struct(
        "outage_count" / UINT32,
        "outage_seconds" / UINT32,
        "long_outage_records" / Array(max_power_outages(meter), _OUTAGE_RECORD),
    )


def _et10_render(meter, now):
    """Totals from the outage registers (BT23 power-off seconds and outage count), then the
    most recent long outages the metering engine recorded, newest first like ET09's records
    (MEP p.69: UTC times, reset cause 3 power failure, duration in whole seconds)."""
    from ..metering.engine import RESET_POWER_FAILURE, outage_records  # engine imports tables

    registers = meter.state.registers
    values = zeros(_et10_layout(meter))
    values.outage_count = registers["power_outage_count"]
    values.outage_seconds = registers["power_outage_seconds"]
    records = outage_records(meter)["long_outages"]
    for n, (off_utc, on_utc, seconds) in enumerate(records[:len(values.long_outage_records)]):
        values.long_outage_records[n] = dict(
            power_on_time=_stamp(int(on_utc)), reset_cause=RESET_POWER_FAILURE, reserved=0,
            power_off_time=_stamp(int(off_utc)), power_off_duration=int(seconds))
    return values


declare(
    et(10), "Long Power Outage Records",
    read=_NO_MEP_READERS,
    layout=_et10_layout,
    render=_et10_render,
    provenance=designed(
        "no public layout: ET04.53 (MEP p.58) records outages 'in ET09 and ET10' and ET09.0 "
        "(MEP p.68) promises complete records of the long outages; ET10 holds those, with "
        "ET09's 18-byte record, newest first, after the outage totals"
    ),
)

# ---------------------------------------------------------------------------------------
# ET22 Alarm Table


def alarm_index(name: str) -> int:
    """An alarm's position in ET22: its BT03 bit counted from BT03 offset 1 (OPG p.45-47)."""
    offset, bit = ALARMS[name]
    return (offset - 1) * 8 + bit


def _et22_layout(meter):
    setting = Bits(1, report=0, log=1)
    return Struct("alarms" / Array(product_dimensions(meter).et22_alarm_size, setting))


def _et22_defaults(meter):
    """Every alarm the meter has is reported to the head-end and logged."""
    defined = {alarm_index(name) for name in ALARMS}
    size = product_dimensions(meter).et22_alarm_size
    return dict(alarms=[dict(report=1, log=1) if i in defined else dict() for i in range(size)])


def _et22_apply(meter, values, ctx):
    defined = {alarm_index(name) for name in ALARMS}
    for i, setting in enumerate(values.alarms):
        if i not in defined and any(setting.values()):
            refuse("ET22", f"alarm {i} does not exist (BT03 has no such alarm bit)")


declare(
    et(22), "Alarm Table",
    read=_NO_MEP_READERS,
    write=_NO_MEP_CONFIGURERS,
    layout=_et22_layout,
    defaults=_et22_defaults,
    apply=_et22_apply,  # the alarm subsystem will honour these settings
    provenance=designed(
        "no public layout: ET11.21 (MEP p.79; OPG p.41) sizes its first array at 120 bytes; "
        "here one settings byte (report, log) per BT03 alarm bit, BT03 offset 1 first"
    ),
)
