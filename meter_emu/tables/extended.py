"""Extended tables (ET n, wire ID 2048 + n): declarations.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

from construct import Array, Bytes, Int16sl, Struct

from ..crc import crc16
from ..device.access import OPEN, Key
from ..profile import SECURITY_MODES
from ..provenance import documented
from .catalog import CATALOG, declare, et
from ..datatypes import UINT8, UINT16, UINT32, BitSet, Bits, Chars, LTimeDate

# ---------------------------------------------------------------------------------------
# ET03 Utility Information


def image_crc(meter) -> int:
    """ET03.137 mirrors the CRC of the legally relevant firmware image. An emulator has no image,
    so it is the CRC-16/X-25 of the firmware version text: stable per version, changes with it."""
    return crc16(meter.profile.identity.firmware_version.encode())


_ET03 = Struct(
    "utility_serial_number" / Chars(30, pad=b"\0"),
    "reserved" / Bytes(107),
    "image_crc" / UINT16,
    "reserved_end" / Bytes(4),
)


def _et03_defaults(meter):
    return dict(utility_serial_number=meter.profile.identity.utility_serial_number,
                reserved=bytes(107), image_crc=image_crc(meter), reserved_end=bytes(4))


def _et03_apply(meter, values, ctx):
    values.image_crc = image_crc(meter)  # read-only copy: the meter keeps its own value
    return values


declare(
    et(3), "Utility Information",
    read=OPEN,
    write={Key.MK, Key.PK, Key.MAK, Key.PLC},
    layout=_ET03,
    defaults=_et03_defaults,
    apply=_et03_apply,
    provenance=documented("OPG p.18, MEP p.55 (143 bytes; Image CRC at 137)"),
)

# ---------------------------------------------------------------------------------------
# ET04 System Information

_ET04 = Struct(
    "sequence_number" / UINT32,
    "transceiver_id" / Bytes(6),
    "subnet_id" / UINT8,
    "node_id" / UINT8,
    "neuron_flags" / Bits(1, explicit_message=0, force_mfg_config=1, request_neuron_state=2,
                          disable_plc_encryption=3, disable_eeprom_lock=4, neuron_phase=(5, 3)),
    "rated_frequency" / UINT8,
    "program_id" / Bytes(8),
    "self_identification" / Chars(30, pad=b"\0"),
    "pk_access" / UINT8,
    "max_power_outages" / UINT8,
    "unused_54" / UINT8,
    "max_te_registers" / UINT8,
    "registration_current" / UINT16,
    "max_current" / UINT16,
    "rated_voltage" / UINT16,
    "inactive_phases" / Bits(1, voltage_l1=0, voltage_l2=1, voltage_l3=2, separate=3,
                             current_l1=4, current_l2=5, current_l3=6),
    "dst_off_time_delta" / Int16sl,
    "self_read_hour" / UINT8,
    "self_read_minute" / UINT8,
    "stop_mode_config" / UINT8,
    "mfg_status" / Bytes(3),
    "rk_flags" / Bits(1, rk_clock_disabled=0, test_point=1, test_point_confirmed=2,
                      lp_use_skipped=3),
    "neuron_state" / UINT8,
    "phase_rotation" / UINT8,
    "plc_inactive_threshold" / UINT16,
    "broadcast_receipt" / LTimeDate(),
    "broadcast_base" / UINT32,
    "broadcast_delta" / UINT16,
    "reverse_energy_current_threshold" / UINT16,
    "plc_signal_quality" / UINT8,
    "auto_discovery_ta" / UINT16,
    "auto_discovery_to" / UINT16,
    "auto_discovery_disable" / UINT8,
    "amplifier_gain_sensitivity" / Int16sl,
    "events_outage_threshold" / UINT16,
    "nvm_size" / UINT16,
    "safe_image_locked" / UINT8,
    "mep_sequence_number" / UINT32,
    "unused_107" / UINT16,
    "premise_power_generation" / UINT8,
    "outage_detection_threshold" / UINT8,
    "phase_loss_threshold" / UINT8,
    "meter_form" / UINT8,
    "clock_error_tier" / UINT8,
    "c1219_compliance" / UINT16,
    "idt_version" / UINT8,
    "tilt_timer" / UINT8,
    "minimum_registration_current" / UINT16,
    "registration_current_fraction" / UINT8,
    "constant_phase_loss_alarm" / UINT8,
    "power_up_wait_time" / UINT8,
    "maximum_key_usage_count" / UINT32,
    "security_mode" / UINT8,
    "fcm_message_count" / UINT8,
    "mep_sequence_numbers" / Bytes(8),
    "reverse_energy_time_ms" / UINT8,
    "reverse_energy_time_s" / UINT16,
)

#: VCI "M" fields: the meter owns them; a client's write leaves them unchanged.
_METER_CONTROLLED = (
    "sequence_number", "transceiver_id", "program_id", "self_identification", "neuron_state",
    "phase_rotation", "broadcast_receipt", "plc_signal_quality", "mep_sequence_number",
    "meter_form", "idt_version", "security_mode", "fcm_message_count", "mep_sequence_numbers",
    "max_power_outages", "unused_54", "max_te_registers", "nvm_size", "maximum_key_usage_count",
    "reverse_energy_current_threshold",
)


def _et04_defaults(meter):
    """A fleet meter's ET04 differs from its fleet's only in bytes 4-11 (Neuron ID, subnet,
    node): built once per fleet (``Profile.template``), patched per meter. Every meter's first
    PLC request stores ET04 (its sequence number), so this is on a fleet's hot path."""
    if meter.profile.template is None:
        return _et04_values(meter)
    image = meter.profile.shared("et04", lambda: _ET04.build(_et04_values(meter)))
    ident = meter.profile.identity
    own = bytes.fromhex(ident.neuron_id) + bytes((ident.subnet, ident.node))
    return image[:4] + own + image[12:]


def _et04_values(meter):
    ident, ratings = meter.profile.identity, meter.profile.ratings
    security = meter.profile.security
    return dict(
        sequence_number=meter.profile.plc.sequence_number,
        transceiver_id=bytes.fromhex(ident.neuron_id),
        subnet_id=ident.subnet,
        node_id=ident.node,
        neuron_flags=dict(neuron_phase=1),
        rated_frequency=ratings.frequency_hz,
        program_id=bytes.fromhex(ident.program_id),
        self_identification=ident.self_identification,
        pk_access=0 if security.pk_enabled else 1,
        max_power_outages=10,
        unused_54=4,
        max_te_registers=4,
        registration_current=ratings.registration_current_ma,
        max_current=ratings.max_current_a,
        rated_voltage=ratings.voltage_v,
        inactive_phases=dict(),
        dst_off_time_delta=0,
        self_read_hour=0,
        self_read_minute=0,
        stop_mode_config=0,
        mfg_status=bytes(3),
        rk_flags=dict(rk_clock_disabled=0 if security.rk_may_set_clock else 1),
        neuron_state=4 if ident.subnet else 2,  # 4 configured online, 2 unconfigured
        phase_rotation=0 if meter.profile.meter.phases == 3 else 2,
        plc_inactive_threshold=0,
        broadcast_receipt=None,
        broadcast_base=0,
        broadcast_delta=0,
        reverse_energy_current_threshold=1000,
        plc_signal_quality=0,
        auto_discovery_ta=0,
        auto_discovery_to=0,
        auto_discovery_disable=0,
        amplifier_gain_sensitivity=0,
        events_outage_threshold=0,
        nvm_size=256,
        safe_image_locked=0,
        mep_sequence_number=0,
        unused_107=0,
        premise_power_generation=0,
        outage_detection_threshold=72,
        phase_loss_threshold=61,
        meter_form=0,
        clock_error_tier=0,
        c1219_compliance=0,
        idt_version=0,
        tilt_timer=30,
        minimum_registration_current=10,
        registration_current_fraction=17,
        constant_phase_loss_alarm=0,
        power_up_wait_time=0,
        maximum_key_usage_count=security.max_key_usage_count,
        security_mode=SECURITY_MODES[security.mode],
        fcm_message_count=0,
        mep_sequence_numbers=bytes(8),
        reverse_energy_time_ms=0,
        reverse_energy_time_s=10,
    )


def _et04_apply(meter, values, ctx):
    current = _ET04.parse(meter.table_bytes(et(4), ctx.now))
    for name in _METER_CONTROLLED:
        values[name] = current[name]
    return values


def set_system_fields(meter, **values) -> None:
    """Set ET04 fields the meter itself maintains (the PLC sequence number, subnet/node and
    Neuron state after commissioning, the broadcast receipt time, the FCM count ...), by their
    layout names. Slow path (a parse and a build): call it when something changes, not per
    message."""
    current = _ET04.parse(meter.table_bytes(et(4), 0.0))
    for name, value in values.items():
        if name not in current:
            raise KeyError(f"ET04 has no field {name!r}")
        current[name] = value
    meter.state.tables[et(4)] = _ET04.build(current)
    meter.dirty = True


def increment_idt_version(meter) -> int:
    """ET04.116 IDT Version + 1 (wrapping), as EP06, EP11, EP32, EP33 and EP37 do (MEP p.65).
    The MEP sequence number the meter expects moves on by 25 with it, so that a MEP client's
    next request fails with Invalid Sequence Number and it re-reads the IDT (MEP p.55)."""
    layout = _ET04
    values = layout.parse(meter.table_bytes(et(4), 0.0))
    values.idt_version = (values.idt_version + 1) & 0xFF
    meter.state.tables[et(4)] = layout.build(values)
    meter.set_mep_sequence((meter.mep_sequence + 25) & 0xFFFFFFFF)
    meter.dirty = True
    return values.idt_version


declare(
    et(4), "System Information",
    read={Key.MK, Key.PK, Key.RK, Key.MAK, Key.MBK, Key.PLC},  # RK: OPG p.13, no keys here
    write={Key.MK, Key.MAK, Key.PLC},
    layout=_ET04,
    defaults=_et04_defaults,
    apply=_et04_apply,
    provenance=documented("MEP p.54-66 (140 bytes, firmware 4.x offsets up to 138)"),
)

# ---------------------------------------------------------------------------------------
# ET36 Manufacturer Table Actual Dimensions
#
# ET36 "can only be updated via EP06 or EP37" (MEP p.107) and each log's array follows its
# "Current Entries" (MEP p.108-109). The configuration those procedures make is kept in the
# meter's "log_dimensions" subsystem; a log layout reads it through ``log_entries`` and
# ``log_entry_size`` with its own default, and ET36 describes the log tables as they are.

#: The adjustable logs ET36 describes, in the guide's order, with their maximum entries
#: (MEP p.108-109; the order is the one ET42's Log List follows, MEP p.114-115).
ADJUSTABLE_LOGS = ((31, 255), (32, 255), (38, 255), (41, 255), (45, 253), (75, 253), (81, 253))

#: NVM the adjustable logs share (entries x entry size over all seven). Designed: the guides give
#: no figure. 128 KiB holds the defaults (about 5 KB) with any one log at its Max Entries and its
#: default entry size (ET31: 255 x 306 bytes), but not ET32 or ET45 at 255 entries of 525 bytes:
#: their maxima assume "the smallest meaningful entry size" (MEP p.109).
LOG_MEMORY_BYTES = 131_072


_ET36_RECORD = Struct(
    "table" / Bits(2, number=(0, 11), extended=11, procedure=12),
    "entry_size" / UINT16,
    "max_entries" / UINT16,
    "current_entries" / UINT16,
    "flags" / Bits(1, length_included=0),
    "spare" / Bytes(8),
)
_ET36 = Struct(
    "count" / UINT8,
    "logs" / Array(len(ADJUSTABLE_LOGS), _ET36_RECORD),
    "unread_entries" / BitSet((len(ADJUSTABLE_LOGS) - 1) // 8 + 1),
)


def _configured(meter, number: int) -> dict:
    return meter.state.subsystems.get("log_dimensions", {}).get(str(number), {})


def log_entries(meter, number: int, default: int) -> int:
    """ET{number}'s configured Current Entries (EP06, EP37), else ``default``."""
    return int(_configured(meter, number).get("entries", default))


def log_entry_size(meter, number: int, default: int) -> int:
    """ET{number}'s configured Entry Size in bytes (EP37, for ET32 and ET45), else ``default``."""
    return int(_configured(meter, number).get("entry_size", default))


def configure_log(meter, number: int, entries: int, entry_size: int | None = None) -> None:
    """Record a new dimension of adjustable log ET{number} (EP06/EP37 validate it first)."""
    config = meter.subsystem("log_dimensions").setdefault(str(number), {})
    config["entries"] = entries
    if entry_size is not None:
        config["entry_size"] = entry_size
    meter.dirty = True


def adjustable_log(meter, number: int, now: float) -> dict:
    """Entry size, current entries and unread entries of one adjustable log, read from the log
    table itself (its ``entries`` array and header), so ET36 and the logs cannot disagree."""
    table = CATALOG[et(number)]
    layout = table.layout_for(meter)
    entries = next(sub.subcon for sub in layout.subcons if sub.name == "entries")
    header = Struct(*(sub for sub in layout.subcons if sub.name != "entries"))
    image = meter.table_bytes(et(number), now)
    unread = header.parse(image[:header.sizeof()]).unread_entries
    return dict(entry_size=entries.subcon.sizeof(), current_entries=entries.count, unread=unread)


def log_memory(meter, now: float, changed: dict[int, tuple[int, int]] | None = None) -> int:
    """Bytes the adjustable logs take (entries x entry size), with ``changed`` = {log: (entry
    size, entries)} replacing what the tables have now."""
    total = 0
    for number, _ in ADJUSTABLE_LOGS:
        if changed and number in changed:
            size, count = changed[number]
        else:
            log = adjustable_log(meter, number, now)
            size = log_entry_size(meter, number, log["entry_size"])
            count = log_entries(meter, number, log["current_entries"])
        total += size * count
    return total


def _et36_render(meter, now):
    logs, unread = [], set()
    for index, (number, maximum) in enumerate(ADJUSTABLE_LOGS):
        log = adjustable_log(meter, number, now)
        logs.append(dict(table=dict(number=number, extended=1), entry_size=log["entry_size"],
                         max_entries=maximum, current_entries=log["current_entries"],
                         flags=dict(), spare=bytes(8)))
        if log["unread"]:
            unread.add(index)
    return dict(count=len(logs), logs=logs, unread_entries=frozenset(unread))


declare(
    et(36), "Manufacturer Table Actual Dimensions",
    read={Key.MK, Key.PK, Key.RK, Key.MBK, Key.MAK, Key.PLC},
    layout=_ET36,
    render=_et36_render,
    provenance=documented("MEP p.107-109 (seven 17-byte records, then the unread bitmap)"),
)

# ---------------------------------------------------------------------------------------
# ET42 Interface Definition: every dimension a reader needs, gathered from the root tables
# (BT13, BT21, BT23, BT61, BT71, ET04, ET07, ET21, ET36, ET54, ET55, ET57) at read time, so it
# always describes the tables as they are. Layout MEP p.110-118.

_ET42_FIXED = 41  # Fixed Section Length: the bytes before the adjustable log info


def _parse(meter, number: int, now: float = 0.0):
    return CATALOG[number].layout_for(meter).parse(meter.table_bytes(number, now))


def _mdt_entries(meter) -> list[bytes]:
    """ET57 entries with a non-zero MDT value, as their 4 raw bytes (ET42 "MDTT entries")."""
    raw = meter.table_bytes(et(57), 0.0)
    entries = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    return [e for e in entries if (e[0] >> 2) & 0x1F]


def _et42_shape(meter) -> dict:
    from .dimensions import firmware_at_least

    bt21 = _parse(meter, 21)
    lp = _parse(meter, 61).data_sets
    multiple = _parse(meter, et(54)).interface_compatibility["multiple_load_profile_data_sets"]
    return dict(
        demands=bt21.demands, coincident=bt21.coincident_values,
        channels=[s.number_of_channels for s in lp], mdt=len(_mdt_entries(meter)),
        multiple_sets=bool(multiple) and len(lp) > 1,
        required=firmware_at_least(meter, "3.60"), required_370=firmware_at_least(meter, "3.70"),
    )


def _lp_set(channels: int) -> Struct:
    return Struct(
        "block_size" / UINT32,
        "number_of_blocks" / UINT16,
        "number_of_channels" / UINT8,
        "interval_duration" / UINT8,
        "interval_size" / UINT8,
        "options" / UINT8,
        "intervals_per_block" / UINT16,
        "block_start_hour" / UINT8,
        "block_start_minute" / UINT8,
        "extended_sources" / Array(channels, UINT16),
    )


def _et42_layout(meter, shape: dict | None = None):
    shape = shape or _et42_shape(meter)
    fields = [
        "table_length" / UINT16,
        "fixed_section_length" / UINT8,
        "log_list_size" / UINT8,
        "interface_compatibility" / UINT16,
        "c1219_compliance" / UINT16,
        "billing_interface_definition_number" / UINT16,
        "flags" / Bits(1, demand_reset_counter=0, cumulative_demand=1,
                       continuous_cumulative_demand=2, demand_configured=3,
                       unread_log_bitmap=4),
        "register_dimensions" / Bytes(8),  # BT21.2 .. BT21.9
        "demand_sub_interval" / UINT8,
        "demand_multiplier" / UINT8,
        "tier_size" / UINT16,
        "load_profile" / Struct(*_lp_set(0).subcons[:-1]),
        "history_log_flags" / UINT8,
        "history_log_count" / UINT16,
        "history_log_entry_size" / UINT8,
        "log_list" / Array(len(ADJUSTABLE_LOGS), Struct("count" / UINT8, "entry_size" / UINT16)),
        "demand_sources" / Array(shape["demands"], UINT8),
        "coincident_sources" / Array(shape["coincident"], UINT8),
        "load_profile_extended_sources" / Array(shape["channels"][0], UINT16),
        "mdtt_current_entries" / UINT8,
        "mdtt_entries" / Array(shape["mdt"], Bytes(4)),
    ]
    if shape["multiple_sets"]:
        fields.append("load_profile_bit_mask" / UINT8)
        for n, channels in enumerate(shape["channels"][1:], start=2):
            fields.append(f"data_set_{n}" / _lp_set(channels))
    if shape["required"]:
        fields += ["required_section_length" / UINT8, "et74_entry_count" / UINT16]
    if shape["required_370"]:
        fields += ["et77_entry_count" / UINT8, "et79_entry_count" / UINT16,
                   "energy_register_unit" / UINT8, "accumulator_rollover_digit" / UINT8]
    return Struct(*fields)


def _subcon(struct, name: str):
    return next(sub.subcon for sub in struct.subcons if sub.name == name)


def _lp_values(meter, geometry, extended) -> dict:
    """One data set's ET42 fields from its ET21 element and BT61 element."""
    et21_set = _subcon(CATALOG[et(21)].layout_for(meter), "data_sets").subcon
    options = 0  # ET21.93 and the block start (ET21.89/90) came with firmware 3.10
    if "options" in geometry:
        options = _subcon(et21_set, "options").build(geometry.options)[0]
    return dict(block_size=geometry.block_size, number_of_blocks=extended.number_of_blocks,
                number_of_channels=geometry.number_of_channels,
                interval_duration=geometry.interval_time, interval_size=geometry.interval_size,
                options=options, intervals_per_block=extended.number_of_intervals,
                block_start_hour=geometry.get("block_start_hour", 0),
                block_start_minute=geometry.get("block_start_minute", 0),
                extended_sources=_channel_sources(geometry))


def _channel_sources(geometry) -> list[int]:
    """ET21.30-37 and, for channels 8-15, ET21.70-77 (MEP p.115: the LP extended sources)."""
    sources = list(geometry.sources) + list(geometry.get("sources_expansion", []))
    return sources[:geometry.number_of_channels]


def _et42_render(meter, now):
    from ..metering import demand  # the metering layer builds on the tables
    shape = _et42_shape(meter)
    layout = _et42_layout(meter, shape)
    bt21, bt71, et54 = _parse(meter, 21), _parse(meter, 71), _parse(meter, et(54), now)
    et21, bt61 = _parse(meter, et(21), now).data_sets, _parse(meter, 61).data_sets
    bt23 = CATALOG[23].layout_for(meter)
    bt13 = meter.table_bytes(13, now)
    ics = CATALOG[et(54)].layout_for(meter).subcons[0].build(et54.interface_compatibility)
    logs = [adjustable_log(meter, number, now) for number, _ in ADJUSTABLE_LOGS]
    mdt = _mdt_entries(meter)
    values = dict(
        table_length=layout.sizeof(), fixed_section_length=_ET42_FIXED,
        log_list_size=len(ADJUSTABLE_LOGS),
        interface_compatibility=int.from_bytes(ics, "little"),
        c1219_compliance=meter.system_info().c1219_compliance,
        flags=dict(demand_reset_counter=bt21.flags["demand_reset_counter"],
                   cumulative_demand=bt21.flags["cumulative_demand"],
                   continuous_cumulative_demand=bt21.flags["continuous_cumulative_demand"],
                   demand_configured=int(any(e.flags["configured"]
                                             for e in _parse(meter, et(48)).entries)),
                   unread_log_bitmap=1),
        register_dimensions=meter.table_bytes(21, now)[2:10],
        demand_sub_interval=bt13[4] if len(bt13) > 5 else 0,
        demand_multiplier=bt13[5] if len(bt13) > 5 else 0,
        tier_size=bt23.tiers.subcon.subcon.sizeof(),
        load_profile={k: v for k, v in _lp_values(meter, et21[0], bt61[0]).items()
                      if k != "extended_sources"},
        history_log_flags=meter.table_bytes(71, now)[0],
        history_log_count=bt71.history_entries,
        history_log_entry_size=bt71.history_data_length,
        log_list=[dict(count=log["current_entries"], entry_size=log["entry_size"])
                  for log in logs],
        **demand.et42_fields(meter),  # BIDN, the demand and coincident sources (EP32)
        load_profile_extended_sources=_channel_sources(et21[0]),
        mdtt_current_entries=len(mdt),
        mdtt_entries=mdt,
    )
    if shape["multiple_sets"]:
        active = [n for n, s in enumerate(bt61[1:]) if s.number_of_blocks]
        values["load_profile_bit_mask"] = sum(1 << n for n in active)
        for n in range(2, len(bt61) + 1):
            values[f"data_set_{n}"] = _lp_values(meter, et21[n - 1], bt61[n - 1])
    if shape["required"]:
        values.update(required_section_length=3 + 5 * shape["required_370"],
                      et74_entry_count=et54.et74_entry_count)
    if shape["required_370"]:
        values.update(et77_entry_count=et54.et77_entry_count,
                      et79_entry_count=et54.et79_entry_count,
                      energy_register_unit=_parse(meter, et(55)).energy_register_unit,
                      accumulator_rollover_digit=_parse(meter, et(7)).accumulator_rollover_digit)
    return values


declare(
    et(42), "Interface Definition",
    read={Key.MK, Key.PK, Key.RK, Key.MBK, Key.MAK, Key.PLC},
    layout=_et42_layout,
    render=_et42_render,
    provenance=documented(
        "MEP p.110-118 (fixed section 41 bytes, log list, sources, MDT entries, data sets 2-4 "
        "when ET54.0.2 is set, required section from firmware 3.60/3.70)"
    ),
)
