"""Basic tables (BT n, wire ID n): declarations.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

import datetime as dt

from construct import Array, Bytes, Int16ul, Struct

from ..device.access import CONFIGURERS, OPEN, READERS, Key
from ..device.alarms import ALARMS
from ..device.errors import ResponseCode, ServiceError
from ..procedures import PROCEDURES, initiate
from ..procedures.catalog import MANUFACTURER_FLAG
from ..metering import demand as energy_demand
from ..metering import engine as metering_engine
from ..metering import registers as energy_registers
from ..metering import tou
from ..provenance import c1219, documented
from .catalog import CATALOG, EXTENDED_BASE, bt, declare
from ..datatypes import (
    BCD,
    NI_FMAT,
    UINT8,
    UINT16,
    UINT32,
    BitSet,
    Bits,
    Chars,
    LTimeDate,
    PackedVersion,
    STimeDate,
    Time,
)

# ---------------------------------------------------------------------------------------
# BT00 General Configuration


def _bcd(meter) -> bool:
    return meter.profile.identity.id_format == "bcd"


def _bt00_layout(meter):
    d = meter.dims
    return Struct(
        "format" / Bits(1, data_order=0, char_format=(1, 3)),
        "formats" / Bits(1, time_format=(0, 3), data_access=(3, 2), id_format=5, int_format=(6, 2)),
        "ni_formats" / Bits(1, ni_format1=(0, 4), ni_format2=(4, 4)),
        "manufacturer" / Chars(4),
        "nameplate_type" / UINT8,
        "default_set_used" / UINT8,
        "max_proc_parm_length" / UINT8,
        "max_resp_data_length" / UINT8,
        "standard_version" / UINT8,
        "standard_revision" / UINT8,
        "dim_basic_tables" / UINT8,
        "dim_extended_tables" / UINT8,
        "dim_basic_procedures" / UINT8,
        "dim_extended_procedures" / UINT8,
        "manufacturer_status_length" / UINT8,
        "pending_tables" / UINT8,
        "basic_tables_used" / BitSet(d.basic_tables_bytes),
        "extended_tables_used" / BitSet(d.extended_tables_bytes),
        "basic_procedures_used" / BitSet(d.basic_procedures_bytes),
        "extended_procedures_used" / BitSet(d.extended_procedures_bytes),
        "basic_tables_write" / BitSet(d.basic_tables_bytes),
        "extended_tables_write" / BitSet(d.extended_tables_bytes),
    )


def _split(numbers, base):
    return (
        frozenset(n for n in numbers if n < base),
        frozenset(n - base for n in numbers if n >= base),
    )


def _bt00_render(meter, now):
    d = meter.dims
    basic_used, ext_used = _split(CATALOG, EXTENDED_BASE)
    basic_write, ext_write = _split([n for n, t in CATALOG.items() if t.writable], EXTENDED_BASE)
    basic_procs, ext_procs = _split(PROCEDURES, MANUFACTURER_FLAG)
    return dict(
        format=dict(data_order=0, char_format=1),
        formats=dict(time_format=2, data_access=1, id_format=int(_bcd(meter)), int_format=0),
        ni_formats=dict(ni_format1=8, ni_format2=8),
        manufacturer=meter.profile.identity.manufacturer,
        nameplate_type=2,
        default_set_used=0,
        max_proc_parm_length=d.procedure_parameters_max,
        max_resp_data_length=d.procedure_response_max,
        standard_version=1,
        standard_revision=0,
        dim_basic_tables=d.basic_tables_bytes,
        dim_extended_tables=d.extended_tables_bytes,
        dim_basic_procedures=d.basic_procedures_bytes,
        dim_extended_procedures=d.extended_procedures_bytes,
        manufacturer_status_length=d.manufacturer_status_bytes,
        pending_tables=d.pending_tables,
        basic_tables_used=basic_used,
        extended_tables_used=ext_used,
        basic_procedures_used=basic_procs,
        extended_procedures_used=ext_procs,
        basic_tables_write=basic_write,
        extended_tables_write=ext_write,
    )


declare(
    bt(0), "General Configuration",
    read=OPEN,
    layout=_bt00_layout,
    render=_bt00_render,
    provenance=documented(
        "OPG p.48-49, MEP p.196-198 (offsets 0-18); the used/write bitmaps from offset 19 follow "
        "ANSI C12.19 GEN_CONFIG_TBL and are derived from this catalog"
    ),
)

# ---------------------------------------------------------------------------------------
# BT01 General Manufacturer Identification


def _bt01_layout(meter):
    return Struct(
        "manufacturer" / Chars(4),
        "model" / Chars(8),
        "hardware_version" / PackedVersion(),
        "firmware_version" / PackedVersion(),
        "serial_number" / (BCD(8) if _bcd(meter) else Chars(16)),
    )


def _bt01_render(meter, now):
    ident = meter.profile.identity
    return dict(
        manufacturer=ident.manufacturer,
        model=ident.model,
        hardware_version=ident.hardware_version,
        firmware_version=ident.firmware_version,
        serial_number=ident.serial_number,
    )


declare(
    bt(1), "General Manufacturer Identification",
    read=OPEN,
    layout=_bt01_layout,
    render=_bt01_render,
    provenance=documented("OPG p.19, MEP p.198; serial is BCD(8) or CHAR(16) per BT00.1 ID format"),
)

# ---------------------------------------------------------------------------------------
# BT03 End Device Mode Status


def _alarm_bits(offsets, first):
    return {name: (off - first) * 8 + bit for name, (off, bit) in ALARMS.items() if off in offsets}


def _bt03_layout(meter):
    fields = [
        "mode" / Bits(1, metering_mode=0, test_mode=1, meter_shop_mode=2),
        "standard_status" / Bits(2, **_alarm_bits((1, 2), 1)),
        "extended_alarms" / Bits(1, **_alarm_bits((3,), 3)),
    ]
    for i in range(meter.dims.manufacturer_status_bytes):
        fields.append(f"manufacturer_{4 + i}" / Bits(1, **_alarm_bits((4 + i,), 4 + i)))
    return Struct(*fields)


def _bt03_render(meter, now):
    from ..procedures.system import mode_flags  # byte 0: the mode EP35 sets

    active = meter.state.alarms
    values = {"mode": mode_flags(meter)}
    for sub in _bt03_layout(meter).subcons[1:]:
        values[sub.name] = {name: int(name in active) for name in sub.subcon.fields}
    return values


declare(
    bt(3), "End Device Mode Status",
    read=READERS,
    layout=_bt03_layout,
    render=_bt03_render,
    provenance=documented("OPG p.45-47 (manufacturer alarms sized by BT00.17)"),
)

# ---------------------------------------------------------------------------------------
# BT04 Pending Status


def _bt04_layout(meter):
    d = meter.dims
    return Struct(
        "basic_pending" / BitSet(d.basic_tables_bytes),
        "extended_pending" / BitSet(d.extended_tables_bytes),
        "last_activation_time" / STimeDate(),
        "pending_activations" / UINT8,
        "activations" / Array(d.pending_tables, Struct(
            "event" / Bits(1, event_code=(0, 4), self_read=4, demand_reset=5),
            "event_storage" / Bytes(5),
            "table" / Bits(2, table_id=(0, 12), still_pending=12),
        )),
    )


def _bt04_render(meter, now):
    slots = meter.state.pending
    waiting = [s["table"] for s in slots if s["still"]]
    records = [dict(event=dict(event_code=s["ped"][0] & 0x0F, self_read=s["ped"][0] >> 4 & 1,
                               demand_reset=s["ped"][0] >> 5 & 1),
                    event_storage=s["ped"][1:], table=dict(table_id=s["table"],
                                                           still_pending=int(s["still"])))
               for s in slots]
    empty = dict(event=dict(), event_storage=bytes(5), table=dict())
    records += [empty] * (meter.dims.pending_tables - len(records))
    last = meter.state.last_activation
    return dict(
        basic_pending=frozenset(n for n in waiting if n < EXTENDED_BASE),
        extended_pending=frozenset(n - EXTENDED_BASE for n in waiting if n >= EXTENDED_BASE),
        last_activation_time=None if last is None else dt.datetime.fromtimestamp(
            last, dt.timezone.utc).replace(tzinfo=None, second=0),
        pending_activations=len(slots),
        activations=records,
    )


declare(
    bt(4), "Pending Status",
    read={Key.MK, Key.PK, Key.MAK, Key.MBK, Key.PLC},  # not RK (OPG p.11); MEP p.259, p.263
    layout=_bt04_layout,
    render=_bt04_render,
    provenance=documented("OPG p.10-11 (one 8-byte activation record per BT00.18 slot)"),
)

# ---------------------------------------------------------------------------------------
# BT05 Device Identification, BT06 Utility Information (C12.19: NES does not document them)


def _ident_field(meter, size_bcd: int):
    return BCD(size_bcd) if _bcd(meter) else Chars(size_bcd * 2)


declare(
    bt(5), "Device Identification",
    read=READERS,
    write=CONFIGURERS,
    layout=lambda meter: Struct("identification" / _ident_field(meter, 10)),
    defaults=lambda meter: dict(identification=meter.profile.identity.device_id),
    provenance=c1219(
        "DEVICE_IDENT_TBL: IDENTIFICATION, BCD(10) or STRING(20) per BT00.1 ID format; "
        "the guides only name the table (OPG BT00.1 note)"
    ),
)


def _bt06_layout(meter):
    return Struct(
        "owner_name" / Chars(20),
        "utility_division" / Chars(20),
        "service_point_id" / _ident_field(meter, 10),
        "electrical_address" / _ident_field(meter, 10),
        "device_id" / _ident_field(meter, 10),
        "utility_serial_number" / _ident_field(meter, 10),
        "customer_id" / _ident_field(meter, 10),
        "coordinate_1" / Bytes(10),
        "coordinate_2" / Bytes(10),
        "coordinate_3" / Bytes(10),
        "tariff_id" / Chars(8),
        "ex1_sw_vendor" / Chars(4),
        "ex1_sw_version" / UINT8,
        "ex1_sw_revision" / UINT8,
        "ex2_sw_vendor" / Chars(4),
        "ex2_sw_version" / UINT8,
        "ex2_sw_revision" / UINT8,
        "programmer_name" / Chars(10),
        "misc_id" / Chars(30),
    )


def _bt06_defaults(meter):
    u = meter.profile.utility
    fw_major, fw_minor, _ = (int(x) for x in meter.profile.identity.firmware_version.split("."))
    return dict(
        owner_name=u.owner_name[:20],
        utility_division=u.utility_division[:20],
        service_point_id=u.service_point_id,
        electrical_address=u.electrical_address,
        device_id=meter.profile.identity.device_id[-20:],
        utility_serial_number=u.utility_serial_number,
        customer_id=u.customer_id,
        coordinate_1=bytes(10),
        coordinate_2=bytes(10),
        coordinate_3=bytes(10),
        tariff_id=u.tariff_id[:8],
        ex1_sw_vendor=meter.profile.identity.manufacturer,
        ex1_sw_version=fw_major,
        ex1_sw_revision=fw_minor,
        ex2_sw_vendor="",
        ex2_sw_version=0,
        ex2_sw_revision=0,
        programmer_name=u.programmer_name[:10],
        misc_id="",
    )


declare(
    bt(6), "Utility Information",
    read=READERS,
    write=CONFIGURERS,
    layout=_bt06_layout,
    defaults=_bt06_defaults,
    provenance=c1219("UTIL_INFO_TBL layout; the guides only name the table"),
)

# ---------------------------------------------------------------------------------------
# BT07 Procedure Initiate / BT08 Procedure Response


def _bt07_layout(meter):
    return Struct(
        "procedure" / Bits(2, number=(0, 12), selector=(12, 4)),
        "sequence_number" / UINT8,
        "parameters" / Bytes(meter.dims.procedure_parameters_max),
    )


def _bt07_render(meter, now):
    raw = meter.state.procedure_request.ljust(3 + meter.dims.procedure_parameters_max, b"\0")
    return _bt07_layout(meter).parse(raw)


PROCEDURE_REQUEST_TABLE = bt(7)


def _bt07_apply(meter, values, ctx):
    if ctx.offset != 0:
        raise ServiceError(ResponseCode.ERR, "BT07 must be written from offset 0")
    initiate(meter, ctx.written, ctx)


declare(
    bt(7), "Procedure Initiate",
    read=READERS,
    write=READERS,  # each procedure checks its own execute access (BT08 result 5)
    layout=_bt07_layout,
    render=_bt07_render,
    apply=_bt07_apply,
    provenance=documented("MEP p.50; C12.19 PROC_INITIATE_TBL (selector bits 12..15)"),
)


def _bt08_layout(meter):
    return Struct(
        "procedure" / Bits(2, number=(0, 12)),
        "sequence_number" / UINT8,
        "result_code" / UINT8,
        "data" / Bytes(meter.dims.procedure_response_max),
    )


def _bt08_render(meter, now):
    raw = meter.state.procedure_response.ljust(4 + meter.dims.procedure_response_max, b"\0")
    return _bt08_layout(meter).parse(raw)


declare(
    bt(8), "Procedure Response",
    read=READERS,
    layout=_bt08_layout,
    render=_bt08_render,
    provenance=documented("MEP p.50-51 (response data up to BT00.10 bytes)"),
)

# ---------------------------------------------------------------------------------------
# BT20-BT23, BT28: registers. Until EP32 configures demands (BT21.4 = 0), and for present
# demands always (BT21.8 = 0), the layouts optical readers in the field expect
# (reference/osgp-app-layer.md section 14).

#: BT22 summation sources in BT23 order (MEP p.205-208): Fwd, Rev, Import, Export varh, power
#: off seconds, outage count, Fwd+Rev, Fwd-Rev, pulse inputs 1/2, error counter, Q1..Q4 varh;
#: declared once, with the registers.
SUMMATION_SOURCES = energy_registers.SUMMATION_SOURCES
_REGISTER_FLAGS = dict(season_info=0, date_time=1, demand_reset_counter=2,
                       demand_reset_lockout=3, cumulative_demand=4,
                       continuous_cumulative_demand=5, time_remaining=6)
_SELF_READ_FLAGS = dict(self_read_inhibit_overflow=0, self_read_sequence_number=1,
                        daily_self_read=2, weekly_self_read=3, self_read_demand_reset=(4, 2))

_REGISTER_DIMENSIONS = Struct(
    "flags" / Bits(1, **_REGISTER_FLAGS),
    "self_read_flags" / Bits(1, **_SELF_READ_FLAGS),
    "self_reads" / UINT8,
    "summations" / UINT8,
    "demands" / UINT8,
    "coincident_values" / UINT8,
    "occurrences" / UINT8,
    "tiers" / UINT8,
    "present_demands" / UINT8,
    "present_values" / UINT8,
)

declare(
    bt(20), "Dimension Register",
    read=READERS,
    layout=_REGISTER_DIMENSIONS,
    render=lambda meter, now: dict(
        flags=dict(season_info=1, date_time=1, demand_reset_counter=1, demand_reset_lockout=1,
                   cumulative_demand=1, continuous_cumulative_demand=1),
        self_read_flags=dict(self_read_sequence_number=1, daily_self_read=1, weekly_self_read=1),
        self_reads=253, summations=meter.dims.summations, demands=8, coincident_values=16,
        occurrences=1, tiers=meter.dims.tiers, present_demands=8,
        present_values=meter.dims.present_values,
    ),
    provenance=documented("OPG p.20-21 (firmware 3.10+ values)"),
)

declare(
    bt(21), "Actual Register",
    read=READERS,
    layout=_REGISTER_DIMENSIONS,
    render=lambda meter, now: _bt21_render(meter),
    provenance=documented("OPG p.22-23, MEP p.201-202 (self reads and demands as EP32 and ET48 "
                          "configured them)"),
)

def _bt22_shape(meter) -> tuple[int, int]:
    """(BT21.4 demands, BT21.5 coincident values): 0, 0 until EP32 configures demands, and BT22
    is then only the summation sources."""
    bt21 = CATALOG[bt(21)].render(meter, 0.0)
    return bt21["demands"], bt21["coincident_values"]


def _bt22_layout(meter):
    demands, coincidents = _bt22_shape(meter)
    fields = ["summation_sources" / Array(meter.dims.summations, UINT8)]
    if demands or coincidents:
        fields += ["demand_select" / Array(demands, UINT8),
                   "min_or_max_flags" / BitSet((demands + 7) // 8),
                   "coincident_select" / Array(coincidents, UINT8),
                   "coincident_demand_associated" / Array(coincidents, UINT8)]
    return Struct(*fields)


def _bt22_render(meter, now):
    """The summation sources BT23 shows (``metering.registers.summation_sources``); with demands,
    the demand module's selection (sources, maximum/minimum flags, coincident values)."""
    demands, coincidents = _bt22_shape(meter)
    values = dict(summation_sources=list(energy_registers.summation_sources(meter)))
    if demands or coincidents:
        chosen = energy_demand.selection(meter)
        values.update(demand_select=chosen["demand_select"],
                      min_or_max_flags=chosen["min_max_flags"],
                      coincident_select=chosen["coincident_select"],
                      coincident_demand_associated=chosen["coincident_demand_associated"])
    return values


declare(
    bt(22), "Data Selection",
    read=READERS,
    layout=_bt22_layout,
    render=_bt22_render,
    provenance=documented("OPG p.23, MEP p.204-208 (summation sources ARRAY[BT21.3]; demand "
                          "select ARRAY[BT21.4], min/max flags SET((BT21.4+7)/8), coincident "
                          "select and associated demand ARRAY[BT21.5] when BT21 has them)"),
)


def _register_values(meter) -> list[int]:
    """BT23 summations in BT22 order, from the energy registers the metering engine fills (a sum
    wraps like the INT32 register it is)."""
    return energy_registers.summation_values(meter)


def _bt23_shape(meter) -> dict:
    """BT21 as published: BT23's dimensions (OPG p.24: read BT21 first)."""
    return CATALOG[bt(21)].render(meter, 0.0)


def _bt23_layout(meter):
    """Without demands (BT21.4 = 0, the default): the summations of the totals and of each tier,
    the layout optical readers in the field read from offset 0. With demands (EP32), OPG p.24-27
    and MEP p.207-210: Nbr Demand Resets (BT21.0.2), then for the totals and each tier the
    summations, the demand records (DmdRcd: event times ARRAY[BT21.6] STIME_DATE if BT21.0.1,
    cumulative and continuous cumulative demand if BT21.0.4/.5, demands ARRAY[BT21.6]) and the
    coincident values (CoinRcd: ARRAY[BT21.6])."""
    bt21 = _bt23_shape(meter)
    sums = Array(bt21["summations"], NI_FMAT)
    if not bt21["demands"] and not bt21["coincident_values"]:
        return Struct("totals" / sums, "tiers" / Array(bt21["tiers"], sums))
    flags, occurrences = bt21["flags"], bt21["occurrences"]
    record = []
    if flags.get("date_time"):
        record.append("event_time" / Array(occurrences, STimeDate()))
    if flags.get("cumulative_demand"):
        record.append("cumulative_demand" / NI_FMAT)
    if flags.get("continuous_cumulative_demand"):
        record.append("continuous_cumulative_demand" / NI_FMAT)
    record.append("demand" / Array(occurrences, NI_FMAT))
    data_block = Struct(
        "summations" / sums,
        "demands" / Array(bt21["demands"], Struct(*record)),
        "coincidents" / Array(bt21["coincident_values"], Array(occurrences, NI_FMAT)),
    )
    head = ["demand_resets" / UINT8] if flags.get("demand_reset_counter") else []
    return Struct(*head, "totals" / data_block, "tiers" / Array(bt21["tiers"], data_block))


def _bt23_render(meter, now):
    """Summations from the energy registers (totals, and each tier's own), demands from
    metering/demand.py (one occurrence: the maximum or minimum since the last demand reset)."""
    bt21 = _bt23_shape(meter)
    totals = _register_values(meter)
    tiers = [energy_registers.tier_summation_values(meter, tier) for tier in range(bt21["tiers"])]
    if not bt21["demands"] and not bt21["coincident_values"]:
        return dict(totals=totals, tiers=tiers)
    occurrences = bt21["occurrences"]

    def data_block(summations, tier):
        records = energy_demand.block(meter, tier)
        demands = [dict(event_time=[r.time] * occurrences, cumulative_demand=r.cumulative,
                        continuous_cumulative_demand=r.continuous,
                        demand=[r.value] * occurrences) for r in records]
        coincidents = [[v] * occurrences for r in records for v in r.coincidents]
        return dict(summations=summations,
                    demands=_fit(demands, bt21["demands"], dict(event_time=[None] * occurrences,
                                                               demand=[0] * occurrences)),
                    coincidents=_fit(coincidents, bt21["coincident_values"], [0] * occurrences))

    return dict(demand_resets=energy_demand.reset_count(meter),
                totals=data_block(totals, None),
                tiers=[data_block(values, tier) for tier, values in enumerate(tiers)])


def _fit(items: list, count: int, empty) -> list:
    return (items + [empty] * count)[:count]


#: BT23 summations a client may write, by position (the sources BT22 lists first)
_WRITABLE_TOTALS = ("fwd_active_wh", "rev_active_wh", "import_reactive_varh",
                    "export_reactive_varh", "power_outage_seconds", "power_outage_count")


def _bt23_apply(meter, values, ctx):
    """A client sets the stored totals (Fwd/Rev Wh, Import/Export varh, outage seconds and
    count, never negative); sums, tier values and demands stay the meter's."""
    totals = values.totals
    summations = totals.summations if hasattr(totals, "summations") else totals
    written = dict(zip(_WRITABLE_TOTALS, summations))
    for name, value in written.items():
        if value < 0:
            raise ServiceError(ResponseCode.ERR, f"BT23 {name} cannot be negative")
    energy_registers.write_totals(meter, written)  # all or nothing


declare(
    bt(23), "Current Register Data",
    read=READERS,
    write={Key.MK, Key.MAK, Key.PLC},
    layout=_bt23_layout,
    render=_bt23_render,
    apply=_bt23_apply,
    provenance=documented(
        "OPG p.24-27, MEP p.207-211 (demand reset counter, demand records and coincidents once "
        "EP32 configured demands; tier blocks from the tier registers)"
    ),
)


def _present_values(meter, now: float) -> list[int]:
    """BT28 present values 0..BT21.9-1 (OPG p.53-57) from the injected quantities, in BT28's
    units (W, var, VA, mA, mV, PF and sin 1/1000, mHz); L2/L3 values only on 3-phase meters,
    values newer than the meter's firmware 0 (metering/engine.py ``present_all``)."""
    return metering_engine.present_values(meter, now)


def _bt28_shape(meter) -> tuple[int, bool, int]:
    """(BT21.8 present demands, BT21.0.6 time remaining reported, BT21.9 present values)."""
    bt21 = CATALOG[bt(21)].render(meter, 0.0)
    return (bt21["present_demands"], bool(bt21["flags"].get("time_remaining")),
            bt21["present_values"])


def _bt28_layout(meter):
    demands, time_remaining, count = _bt28_shape(meter)
    fields = []
    if demands:
        record = ["demand" / NI_FMAT]
        if time_remaining:
            record.insert(0, "time_remaining" / Time())
        fields.append("present_demands" / Array(demands, Struct(*record)))
    return Struct(*fields, "present_values" / Array(count, NI_FMAT))


def _bt28_render(meter, now):
    """Present demands (BT16 sources 88..95, the demand module's, with the time left in the
    demand interval when BT21 says so), then the present values."""
    demands, time_remaining, count = _bt28_shape(meter)
    values = dict(present_values=(_present_values(meter, now) + [0] * count)[:count])
    if demands:
        seconds = int(energy_demand.time_remaining(meter, now)) if time_remaining else 0
        remaining = dt.time(min(seconds // 3600, 23), seconds // 60 % 60, seconds % 60)
        records = []
        for n in range(demands):
            record = dict(demand=metering_engine.source_value(meter, 88 + n, now)
                          if n < 8 else 0)
            if time_remaining:
                record["time_remaining"] = remaining
            records.append(record)
        values["present_demands"] = records
    return values


declare(
    bt(28), "Present Register Data",
    read=READERS,
    layout=_bt28_layout,
    render=_bt28_render,
    provenance=documented("OPG p.53-57 (present demands ARRAY[BT21.8], with the time remaining "
                          "if BT21.0.6, then present values ARRAY[BT21.9])"),
)

# ---------------------------------------------------------------------------------------
# BT52 UTC clock, BT55 local clock state

_CLOCK_FLAGS = dict(day_of_week=(0, 3), dst=3, gmt=4, tz_applied=5, dst_applied=6)


def _day_of_week(moment) -> int:
    return (moment.weekday() + 1) % 7  # 0 = Sunday


declare(
    bt(52), "UTC Clock",
    read=READERS,
    layout=Struct("time" / LTimeDate(), "flags" / Bits(1, **_CLOCK_FLAGS)),
    render=lambda meter, now: dict(
        time=meter.utc(now), flags=dict(day_of_week=_day_of_week(meter.utc(now)),
                                        dst=int(tou.dst_in_effect(meter, now)), gmt=1)
    ),
    provenance=documented("MEP p.224 (LTIME_DATE in UTC, then the time qualifier)"),
)

declare(
    bt(55), "Local Clock State",
    read=READERS,
    layout=Struct(
        "time" / LTimeDate(),
        "flags" / Bits(1, **_CLOCK_FLAGS),
        "status" / Bits(2, current_tier=(0, 3), tier_drive=(6, 2), special_schedule=(8, 4),
                        season=(12, 4)),
    ),
    render=lambda meter, now: _bt55_render(meter, now),
    provenance=documented("MEP p.230-231 (tier and tier drive from EP05 or the calendar; season "
                          "from the tariff state)"),
)


def _bt21_render(meter):
    """Self reads as EP32 set them; demands (BT21.4) and coincident values (BT21.5) as ET48
    lists them once EP32 configured demand, with the demand reset counter and (continuous)
    cumulative demand (MEP p.201: "True any time demand is activated and configured"; OPG p.20:
    firmware 3.10 and later). No present demands (BT21.8 = 0) unless the profile's demand
    set-up asks for them (device/setup.py): BT28 keeps the layout readers in the field expect;
    the present demands are source IDs 88-103 (metering/demand.py). The demand reset lockout
    (bit 3) is set while BT13's reset exclusion is (procedures/metering.py enforces it)."""
    from .dimensions import firmware_at_least
    from .registers import DEMAND, billing_view, configured_self_reads  # builds on this module

    demands, coincidents = energy_demand.dimensions(meter)
    on = int(demands > 0 and firmware_at_least(meter, "3.10"))
    settings = billing_view(meter, DEMAND)
    lockout = int(bool(on and settings.get("reset_exclusion")))
    present = demands if settings.get("present_demands") else 0
    return dict(
        flags=dict(season_info=1, date_time=1, demand_reset_counter=on, cumulative_demand=on,
                   continuous_cumulative_demand=on, demand_reset_lockout=lockout),
        # the 2-byte BIDN BT26 keeps once demand is configured (MEP p.201)
        self_read_flags=dict(self_read_sequence_number=on, daily_self_read=1, weekly_self_read=1),
        self_reads=configured_self_reads(meter), summations=meter.dims.summations,
        demands=demands, coincident_values=coincidents, occurrences=1, tiers=meter.dims.tiers,
        present_demands=present, present_values=meter.dims.present_values,
    )


def _bt55_render(meter, now):
    from .registers import current_season, tier_status  # registers builds on this module

    local = meter.local(now)  # first: it brings the TOU state in line with a BT53/BT54 write
    tier, drive = tier_status(meter)
    return dict(time=local,
                flags=dict(day_of_week=_day_of_week(local), dst=int(tou.dst_in_effect(meter, now)),
                           tz_applied=1, dst_applied=1),
                status=dict(current_tier=tier, tier_drive=drive,
                            special_schedule=tou.special_schedule_active(meter),
                            season=current_season(meter)))

# ---------------------------------------------------------------------------------------
# BT70/BT71 log dimensions, BT74 history log

_LOG_FLAGS = dict(event_number=0, history_date_time=1, history_sequence_number=2,
                  history_inhibit_overflow=3, event_inhibit_overflow=4)
_LOG_DIMENSIONS = Struct(
    "flags" / Bits(1, **_LOG_FLAGS),
    "standard_events" / UINT8,
    "manufacturer_events" / UINT8,
    "history_data_length" / UINT8,
    "event_data_length" / UINT8,
    "history_entries" / UINT16,
    "event_entries" / UINT16,
)


def _log_dimensions(meter, now):
    return dict(flags=dict(history_date_time=1, history_sequence_number=1), standard_events=8,
                manufacturer_events=19, history_data_length=2, event_data_length=2,
                history_entries=meter.dims.history_entries, event_entries=0)


declare(bt(70), "Dimension Log", read=READERS, layout=_LOG_DIMENSIONS, render=_log_dimensions,
        provenance=documented("OPG p.50"))
declare(bt(71), "Actual Log", read=READERS, layout=_LOG_DIMENSIONS, render=_log_dimensions,
        provenance=documented("OPG p.50-51"))

_HISTORY_ENTRY = Struct(
    "time" / LTimeDate(),
    "sequence_number" / UINT16,
    "user_id" / UINT16,
    "event" / Bits(2, number=(0, 12)),
    "argument" / Int16ul,
)


def _bt74_layout(meter):
    return Struct(
        "flags" / Bits(1, order=0, overflow=1, list_type=2, inhibit_overflow=3),
        "valid_entries" / UINT16,
        "last_entry_element" / UINT16,
        "last_entry_sequence_number" / UINT32,
        "unread_entries" / UINT16,
        "entries" / Array(meter.dims.history_entries, _HISTORY_ENTRY),
    )


def render_event_log(meter, event_log):
    """BT74's values (and ET79's) from a device.history.EventLog."""
    size = meter.dims.history_entries
    empty = dict(time=None, sequence_number=0, user_id=0, event=dict(number=0), argument=0)
    entries = [empty] * size
    for element, (utc, seq, user, event, arg) in event_log.placed(size):
        entries[element] = dict(
            time=dt.datetime.fromtimestamp(utc, dt.timezone.utc).replace(tzinfo=None),
            sequence_number=seq & 0xFFFF, user_id=user, event=dict(number=event), argument=arg,
        )
    return dict(
        flags=dict(overflow=int(event_log.overflow), list_type=1),
        valid_entries=len(event_log.entries),
        last_entry_element=event_log.last_element(size),
        last_entry_sequence_number=event_log.last_sequence,
        unread_entries=event_log.unread,
        entries=entries,
    )


def _bt74_render(meter, now):
    return render_event_log(meter, meter.state.history)


declare(
    bt(74), "History Log Data",
    read=READERS,
    layout=_bt74_layout,
    render=_bt74_render,
    provenance=documented("OPG p.51-52 (circular queue of BT71.5 entries, 2-byte arguments)"),
)
