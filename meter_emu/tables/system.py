"""System tables: pulse output and inputs, battery, product dimensions, the firmware download
bitmap, hardware configuration, meter status and configuration, RAM-only status.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers. Reserved byte runs are named ``reserved_N`` after
their Meter 3.X offset where it is fixed (in ET55 the Gen 4 offset is one more from 56 on).

Fields the guides place at fixed offsets inside a table's first block are always laid out (older
firmware keeps those bytes reserved); blocks a guide *appends* for a firmware version exist only
from that version on, so the table's size follows ``identity.firmware_version``.
"""

from __future__ import annotations

import dataclasses

from construct import Array, Bytes, Int8sl, Int16sl, Int32sl, Struct

from ..datatypes import UINT8, UINT16, UINT32, BitSet, Bits, Date, LTimeDate
from ..device.access import CONFIGURERS, READERS, Key
from ..device.errors import ResponseCode, ServiceError
from ..provenance import designed, documented
from .catalog import declare, et, zeros
from .dimensions import firmware, firmware_at_least, product_dimensions


def _gen4(meter) -> bool:
    """OSGP Generation 4 meters run firmware 4.0 and higher (MEP p.139)."""
    return firmware_at_least(meter, "4.0")


def _require(ok: bool, why: str) -> None:
    if not ok:
        raise ServiceError(ResponseCode.ERR, why)


def _keep(meter, table_id, layout, values, ctx, names):
    """Reset the fields a client may not change (``field`` or ``field.bit``) from the current
    image and return the values to store."""
    current = layout.parse(meter.table_bytes(table_id, ctx.now))
    for name in names:
        field, _, bit = name.partition(".")
        if bit:
            values[field][bit] = current[field][bit]
        else:
            values[field] = current[field]
    return values


def _reserved(layout) -> list[str]:
    return [sub.name for sub in layout.subcons if sub.name.startswith("reserved")]


# ---------------------------------------------------------------------------------------
# ET01 Pulse Output Options

#: IEC 62053-31 requires an S0 pulse to stay on for at least 30 ms.
S0_MIN_PULSE_MS = 30

_ET01 = Struct(
    "options" / Bits(1, output_enabled=0),
    "source" / UINT8,
    "pulses_per_kwh" / UINT16,
    "pulse_width_ms" / UINT8,
)


def _et01_defaults(meter):
    return dict(options=dict(output_enabled=1), source=0, pulses_per_kwh=1000,
                pulse_width_ms=S0_MIN_PULSE_MS)


def _et01_apply(meter, values, ctx):
    last = meter.dims.summations - 1
    _require(values.source <= last, f"ET01 source {values.source} is no BT23 summation (0..{last})")
    _require(values.pulses_per_kwh > 0, "ET01 pulses per kWh must not be 0")
    _require(values.pulse_width_ms >= S0_MIN_PULSE_MS,
             f"ET01 pulse width below the S0 minimum of {S0_MIN_PULSE_MS} ms")


declare(
    et(1), "Pulse Output Options",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET01,
    defaults=_et01_defaults,
    apply=_et01_apply,
    provenance=designed(
        "MEP App. C.4 (p.263) only names ET01 as the S0 output configuration (MAK writes it); "
        "ours: enable flag, BT23 summation index, meter constant in pulses/kWh, pulse width"),
)

# ---------------------------------------------------------------------------------------
# ET02 Battery Information
#
# The MEP guide's access list (App. C.1, p.260) calls ET02 "RTC Calibration"; the OPG's list
# (A.1, p.60) calls it "Battery Information" and says what it holds: the voltage threshold below
# which the Low Battery alarm (BT03.1.8) is raised. We follow the OPG: it is the only one that
# describes the content, and it lets RK read ET02, which RK could not if the table held
# calibration data (OPG p.13). The battery is what keeps the RTC running through outages, which
# may be why the MEP list names it after the clock.

_ET02 = Struct(
    "low_battery_threshold_mv" / UINT16,
    "battery" / Bits(1, enabled=0),
)

#: Low Battery alarm threshold of a 3.6 V lithium backup cell, in mV.
LOW_BATTERY_THRESHOLD_MV = 3000


def _et02_defaults(meter):
    return dict(low_battery_threshold_mv=LOW_BATTERY_THRESHOLD_MV, battery=dict(enabled=1))


def _et02_apply(meter, values, ctx):
    _require(values.low_battery_threshold_mv > 0, "ET02 low battery threshold must not be 0")
    return _keep(meter, et(2), _ET02, values, ctx, ("battery",))  # EP28 Enable/Disable Battery


def battery_enabled(meter) -> bool:
    """ET02's battery-enabled flag (EP28 switches it)."""
    return bool(_ET02.parse(meter.table_bytes(et(2), 0.0)).battery["enabled"])


def set_battery_enabled(meter, enabled: bool) -> None:
    """EP28's effect on ET02: the flag a client's write keeps (``_et02_apply``)."""
    values = _ET02.parse(meter.table_bytes(et(2), 0.0))
    values.battery["enabled"] = int(enabled)
    meter.state.tables[et(2)] = _ET02.build(values)
    meter.dirty = True


declare(
    et(2), "Battery Information",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET02,
    defaults=_et02_defaults,
    apply=_et02_apply,
    provenance=designed(
        "OPG A.1 (p.60) describes ET02 only as battery information with the Low Battery "
        "voltage threshold, MEP App. C.1 (p.260) names it RTC Calibration; ours: threshold in mV "
        "and a battery-enabled flag that EP28 (Enable/Disable Battery) owns"),
)

# ---------------------------------------------------------------------------------------
# ET06 Pulse Inputs

#: BT23 counts two pulse inputs (summations 8 and 9, MEP p.205-209); ET29 bits 1-2 name them.
PULSE_INPUT_CHANNELS = 2

_ET06 = Struct(
    "channels" / Array(PULSE_INPUT_CHANNELS, Struct(
        "flags" / Bits(1, channel_active=0),
        "min_pulse_width_ms" / UINT8,
    )),
)


def _et06_defaults(meter):
    channel = dict(flags=dict(channel_active=0), min_pulse_width_ms=S0_MIN_PULSE_MS)
    return dict(channels=[channel] * PULSE_INPUT_CHANNELS)


def _et06_apply(meter, values, ctx):
    for i, channel in enumerate(values.channels):
        _require(channel.min_pulse_width_ms > 0, f"ET06 channel {i}: pulse width must not be 0")


declare(
    et(6), "Pulse Inputs",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET06,
    defaults=_et06_defaults,
    apply=_et06_apply,
    provenance=designed(
        "MEP App. C.4 (p.264) names ET06 as the pulse input channel configuration (MAK writes "
        "it) and MEP p.100 its Pulse Input Channel Active bit; ours: per BT23 pulse input, "
        "that bit and the shortest pulse counted"),
)

# ---------------------------------------------------------------------------------------
# ET11 MFG Dimension
#
# Field names are ProductDimensions' attributes, so the values come from dimensions.py alone.
# Offsets 14-17 and 32-33 are "Reserved" in the MEP guide; the OPG names them. The OPG adds
# offset 38 in firmware 4.20, the MEP guide says 4.30: we follow the OPG, which states when the
# field was added to the layout.

#: ET11.35: a reserved product dimension, 10 on every meter the guides describe.
ET11_RESERVED_35 = 10

_ET11_BASE = (
    ("devices", UINT8), ("config_entry_size", UINT8), ("status_entry_size", UINT8),
    ("on_demand_queue_size", UINT8), ("on_demand_entry_size", UINT8),
    ("data_entry_size", UINT16), ("transaction_request_length", UINT16),
    ("transaction_response_length", UINT16), ("on_demand_write_entry_size", UINT8),
    ("phase_measurement_size", UINT8), ("config2_entry_size", UINT8),
    ("meter_otr_queue_size", UINT8), ("mbus_otr_queue_size", UINT8),
    ("meter_otr_entry_size", UINT8), ("mbus_otr_entry_size", UINT8), ("group_ids", UINT8),
    ("harmonics", UINT8), ("mbus_multicast_length", UINT8), ("et22_alarm_size", UINT8),
    ("mep_data_sources", UINT8), ("et48_entries", UINT8),
)
_ET11_ADDED = (
    ("3.30", (("critical_event_bitmaps", UINT8), ("et57_entries", UINT8),
              ("relay_switches", UINT8))),
    ("3.40", (("delta_alert_sources", UINT8),)),
    ("3.50", (("ram_transaction_request_length", UINT16),
              ("ram_transaction_response_length", UINT16))),
    ("4.0", (("firmware_module_entries", UINT8), ("firmware_module_entry_length", UINT8),
             ("mep_channels", UINT8), ("reserved_35", UINT8),
             ("verification_bitmap_size", UINT16))),
    ("4.20", (("error_screens", UINT8),)),
)


def _et11_layout(meter):
    fields = list(_ET11_BASE)
    for version, added in _ET11_ADDED:
        if firmware_at_least(meter, version):
            fields.extend(added)
    return Struct(*(name / kind for name, kind in fields))


def _et11_render(meter, now):
    return dict(dataclasses.asdict(product_dimensions(meter)), reserved_35=ET11_RESERVED_35)


declare(
    et(11), "MFG Dimension",
    read=READERS,
    layout=_et11_layout,
    render=_et11_render,
    provenance=documented("MEP p.77-80; OPG p.40-42 (names of 14-17, 32-33, 36; versions)"),
)

# ---------------------------------------------------------------------------------------
# ET17 Firmware Download Verification Bitmap


def _et17_layout(meter):
    return Struct("received_packets" / BitSet(product_dimensions(meter).verification_bitmap_size))


def _et17_render(meter, now):
    """One bit per download packet the inactive code bank holds (device/firmware.py)."""
    from ..device import firmware  # here: device.firmware reads tables through the catalog

    return firmware.verification_bitmap(meter)


declare(
    et(17), "Firmware Download Verification Bitmap",
    read={Key.MK, Key.PLC},  # download information: not RK (OPG p.13), PK cannot download
    layout=_et17_layout,
    render=_et17_render,
    provenance=designed(
        "only its size is public (ET11.36 = 1250 bytes, OPG p.42); ours: bit n (byte n // 8, "
        "LSB first) set once EP09 stored packet n (image bytes 64n..64n+63) in the inactive "
        "code bank; EP08 and a switch (EP10) clear it"),
)

# ---------------------------------------------------------------------------------------
# ET29 Hardware Configuration
#
# The guide lays Hardware Options out as ARRAY[3] at offset 0 and then "Reserved 2..4"; bit 23
# lives in byte 2, so the reserved run is 3..4.

_HARDWARE_OPTIONS = Bits(
    3, s0_output=0, pulse_input_1=1, pulse_input_2=2, disconnect_and_buzzer=5,
    control_relay_1=6, control_relay_2=7, mbus_module=8, cover_tamper=9, mep_port_1=10,
    disconnect_sensor=11, magnetic_tamper=12, hf_noise_detection_disabled=13,
    two_line_disconnect=14, no_metering=15, no_lcd=16, external_ct=17, backup_power=18,
    external_disconnect_feedback=19, external_voltage=20, inverted_voltage_adc=21,
    non_latching_relay=22, mep_port_2=23,
)
_LOGIC_PORT = Struct("board" / UINT8, "port" / UINT8, "sequence" / UINT8)

#: What the emulated meter is built with (ET29.0). The pulse input bits mirror ET06 instead.
HARDWARE_OPTIONS = frozenset({
    "s0_output", "disconnect_and_buzzer", "mbus_module", "cover_tamper", "mep_port_1",
    "disconnect_sensor", "two_line_disconnect",
})
#: Gen 4 USART assignment (ET29.24): (board, port, sequence). Boards 2 wired, 3 PLC; ports
#: 1 MEP, 2 M-Bus, 3 PLC; the sequence names the MEP client. The emulator has one MEP port.
COMM_ASSIGNMENT = ((2, 1, 1), (2, 2, 0), (3, 3, 0))


def _et29_layout(meter):
    fields = [
        "hardware_options" / _HARDWARE_OPTIONS,
        "reserved_3" / Bytes(2),
        "internal_configuration" / Bits(1, single_phase=0, polyphase=1,
                                        pulse_relay_for_disconnect=6, power_boost_relay=7),
        "reserved_6" / Bytes(14),
    ]
    if _gen4(meter):
        fields += [
            "reserved_20" / Bytes(4),
            "comm_assignment_matrix_1" / Array(3, _LOGIC_PORT),
            "extended_hardware_options" / Bits(
                4, two_disconnect_sensors=0, disconnect_toggle_button=1, backlight_lcd=3,
                buzzer=4, battery_type=(5, 2), earth_fault=7, external_tamper_input_1=8,
                external_tamper_input_2=9, s0_pulse_output_2=10, security_chip=11,
                last_gasp_module=12, control_relay_1_latching=13, control_relay_2_latching=14),
            "reserved_37" / Bytes(10),
            "current_sensors" / Bits(1, line=(0, 5), neutral=(5, 3)),
            "comm_assignment_matrix_2" / Array(2, _LOGIC_PORT),
        ]
    return Struct(*fields)


def _et29_render(meter, now):
    options = {name: 1 for name in HARDWARE_OPTIONS}
    options["control_relay_1"] = 1  # EP02, ET05, ET61 drive it (device/relay.py)
    options["control_relay_2"] = int(firmware_at_least(meter, "4.30"))  # MEP p.79, ET11.26
    if not _gen4(meter):  # Gen 4 meters have no pulse inputs (MEP p.100)
        inputs = _ET06.parse(meter.table_bytes(et(6), now)).channels
        options["pulse_input_1"] = inputs[0].flags["channel_active"]
        options["pulse_input_2"] = inputs[1].flags["channel_active"]
    single = meter.profile.meter.phases == 1
    values = dict(
        hardware_options=options,
        reserved_3=bytes(2),
        internal_configuration=dict(single_phase=int(single), polyphase=int(not single)),
        reserved_6=bytes(14),
    )
    if _gen4(meter):
        values.update(
            reserved_20=bytes(4),
            comm_assignment_matrix_1=[dict(zip(("board", "port", "sequence"), usart))
                                      for usart in COMM_ASSIGNMENT],
            extended_hardware_options=dict(disconnect_toggle_button=1, battery_type=1),
            reserved_37=bytes(10),
            current_sensors=dict(line=2, neutral=2) if single else dict(line=1, neutral=0),
            comm_assignment_matrix_2=[dict(board=0, port=0, sequence=0)] * 2,
        )
    return values


declare(
    et(29), "Hardware Configuration",
    read=READERS,
    layout=_et29_layout,
    render=_et29_render,
    provenance=documented("MEP p.99-104 (20 bytes; 54 on firmware 4.0+)"),
)

# ---------------------------------------------------------------------------------------
# ET54 Meter Status
#
# "Flags" is a UINT16 at 19 while the next reserved run is given as 20..43: the UINT16 wins,
# the run is 21..43 (Tier Drive at 44 anchors it).


def _has_key_usage(meter) -> bool:
    """Key usage counts and security modes (ET54.82-90): firmware 3.13 and 3.80+ (MEP p.137)."""
    return firmware(meter) == (3, 13) or firmware_at_least(meter, "3.80")


def _et54_layout(meter):
    fields = [
        "interface_compatibility" / Bits(2, multiple_load_profile_data_sets=2,
                                         energy_unit_change=6, lcd_5_digit_id_codes=7,
                                         multiple_mep_clients=8),
        "reserved_2" / Bytes(17),
        "flags" / Bits(2, load_profile_disabled=0),
        "reserved_21" / Bytes(23),
        "tier_drive" / Bits(1, over_power_threshold_exceeded=0, step_tariff_in_use=1),
        "reserved_45" / Bytes(17),
        "control_relay_1_random_operation_pending" / UINT8,
        "control_relay_1_random_duration" / UINT16,
        "control_relay_1_random_start_duration" / UINT16,
        "reserved_67" / UINT8,
        "mis_wiring_reason" / UINT8,
        "et74_entry_count" / UINT16,
        "status_flags" / Bits(1, welmec_11_2_compliance=0, delta_time_synchronization=(1, 2),
                              disconnect_push_button_close_locked=6),
        "time_adjustment_in_interval" / Int32sl,
        "date_last_step_tariff_reset" / Date(),
        "et77_entry_count" / UINT8,
        "et79_entry_count" / UINT16,
    ]
    if _has_key_usage(meter):
        fields += [
            "unicast_key_usage_count" / UINT32,
            "broadcast_key_usage_count" / UINT32,
            "supported_security_modes" / Bits(1, rc4=0, osgp_aes_128_psk=2),
        ]
    if _gen4(meter):
        dims = product_dimensions(meter)
        fields += [
            "module_records" / Array(dims.firmware_module_entries,
                                     Bytes(dims.firmware_module_entry_length)),
            "reserved_modules" / Bytes(4),
            "external_tamper_raw_adc" / UINT16,
            "mep_tx_locked" / UINT8,
            "mep_tx_lock_channel" / UINT8,
        ]
    if firmware_at_least(meter, "4.10"):
        fields.append("procedure_extended_failure_code" / UINT32)
    if firmware_at_least(meter, "4.30"):
        fields += [
            "control_relay_2_random_operation_pending" / UINT8,
            "control_relay_2_random_duration" / UINT16,
            "control_relay_2_random_start_duration" / UINT16,
        ]
    return Struct(*fields)


def _et54_render(meter, now):
    """A freshly commissioned meter's status; the control relays' randomized operations come
    from the relay subsystem (device/relay.py). The tariff, load profile and MEP transaction
    subsystems will fill their fields; ET79's size is the history log's; the PLC key usage
    counts are device/keys.py's."""
    from ..device import relay  # here: device.relay reads tables through the catalog

    values = zeros(_et54_layout(meter))
    values.update((name, value) for name, value in relay.et54_fields(meter, now).items()
                  if name in values)
    values.interface_compatibility.update(
        # several load profile data sets came with 3.50 (ET55 Primary Load Profile Index)
        multiple_load_profile_data_sets=int(firmware_at_least(meter, "3.50")),
        energy_unit_change=int(firmware_at_least(meter, "3.70")),  # ET55 Energy Register Unit
        lcd_5_digit_id_codes=int(_gen4(meter)),
        multiple_mep_clients=int(_gen4(meter)),
    )
    values.et79_entry_count = meter.dims.history_entries
    if _has_key_usage(meter):
        from ..device import keys

        values.unicast_key_usage_count, values.broadcast_key_usage_count = keys.usage(meter)
        values.supported_security_modes.update(rc4=1, osgp_aes_128_psk=1)  # 0x05
    return values


declare(
    et(54), "Meter Status",
    read=READERS,
    layout=_et54_layout,
    render=_et54_render,
    provenance=documented("MEP p.132-139 (82 bytes; 91 on 3.13/3.80+; Gen 4 module records, "
                          "4.10 and 4.30 tails)"),
)

# ---------------------------------------------------------------------------------------
# ET55 Meter Configuration
#
# Gen 4 display ID codes have five characters, so every offset from 56 on is one more than on
# Meter 3.X (MEP p.139). Offset 127 (128 on Gen 4) is in no row of the guide: reserved. The guide
# gives "1" as the value of the scheduled message start and end times, which is no LTIME_DATE: a
# fresh meter has no message scheduled (all zeros). Prepay, step tariff, voltage quality and
# Energy Register Unit follow from 3.70 (MEP p.154), the MEP/optical/tamper block from 4.0.


#: ET55 offsets 24..51 are reserved in the guide (MEP p.142). The broadcast group IDs EP27
#: manages (up to ET11.18 = 10, ECH p.68) are kept in their first 20 bytes: no public table
#: lists a meter's groups, and this keeps them with the rest of the meter's configuration.
#: 0 is an empty slot (0x0000 is no valid group ID, MEP p.131).
_ET55_GROUP_AREA = 28


def _group_slots(meter) -> int:
    slots = product_dimensions(meter).group_ids
    if 2 * slots > _ET55_GROUP_AREA:
        raise AssertionError(f"ET11.18 = {slots} group IDs do not fit in ET55.24..51")
    return slots


def _et55_layout(meter):
    gen4 = _gen4(meter)
    fields = [
        "reserved_0" / Bytes(3),
        "tariff_features" / Bits(1, consumption_based_tariff_enabled=1, step_tariff_enabled=5),
        "delta_time_adjustment_increment" / UINT8,
        "reserved_5" / Bytes(9),
        "signal_strength_threshold" / Int8sl,  # dB; -84 only fits one byte as two's complement
        "plc_active_timeout" / UINT16,
        "reserved_17" / Bytes(3),
        "plc_failed_authentication_lockout_threshold" / UINT8,
        "plc_failed_authentication_lockout_duration" / UINT8,
        "optical_failed_authentication_lockout_threshold" / UINT8,
        "optical_failed_authentication_lockout_duration" / UINT8,
        "broadcast_group_ids" / Array(_group_slots(meter), UINT16),
        "reserved_44" / Bytes(_ET55_GROUP_AREA - 2 * _group_slots(meter)),
        "scheduled_lcd_message_id" / Bytes(4 + gen4),
        "scheduled_lcd_message_id_decimal_points" / UINT8,
        "scheduled_lcd_message_text" / Bytes(8),
        "scheduled_lcd_message_start" / LTimeDate(),
        "scheduled_lcd_message_end" / LTimeDate(),
        "message_override_control" / Bits(1, disable_message_override=0, message_overridden=1,
                                          disable_message_in_scrolling_list=2),
        "phase_loss_threshold_seconds" / UINT16,
        "tariff_disable_flags" / Bits(1, reserved_0=0, disable_consumption_based_tariff=1,
                                      disable_step_tariff=3),
        "over_power_threshold" / UINT32,
        "over_power_time_threshold" / UINT16,
        "over_power_threshold_tier" / UINT8,
        "over_power_source" / UINT8,
        "reserved_89" / Bytes(4),
        "transformer_secondary_rated_current" / UINT8,
        "clock_error_calendar_id" / UINT32,
        "over_power_calendar_id" / UINT32,
        "reserved_102" / UINT8,
        "general_cover_removed_detection_threshold" / UINT16,
        "power_quality_cover_removed_detection_threshold" / UINT16,
        "cover_tamper_power_quality_events" / Bits(2, phase_loss=0, current_on_missing_phase=1,
                                                   subsequent_power_outage=2,
                                                   preceding_or_coincident_power_outage=3),
        "primary_load_profile_index" / UINT8,
        "high_frequency_noise_detection_threshold" / Int16sl,
        "high_frequency_noise_detection_time_threshold" / UINT16,
        "earth_fault_detection_current_threshold" / UINT16,
        "reserved_116" / UINT8,
        "earth_fault_time_threshold" / UINT16,
        "broken_mv_conductor_detection_time_threshold" / UINT16,
        "zero_fault_detection_time_threshold" / UINT16,
        "normal_voltage_upper_limit" / UINT8,
        "normal_voltage_lower_limit" / UINT8,
        "low_voltage_higher_limit" / UINT8,
        "voltage_fluctuation_limit" / UINT8,
        "reserved_127" / UINT8,
    ]
    if firmware_at_least(meter, "3.70"):
        fields += [
            "prepay_tier_5_8_rates" / Array(4, UINT32),
            "reverse_energy_alarm_current_threshold" / UINT16,
            "step_tariff_thresholds" / Array(meter.dims.tiers - 1, UINT32),
            "step_tariff_source" / UINT8,
            "step_tariff_tou_id" / UINT32,
            "step_tariff_reset_day" / UINT8,
            "step_tariff_reset_hour" / UINT8,
            "step_tariff_reset_minute" / UINT8,
            "step_tariff_reset_second" / UINT8,
            "reserved_a9" / UINT8,
            "rms_voltage_mains_cycles" / UINT16,
            "average_rms_voltage_seconds" / UINT16,
            "average_rms_voltage_count" / UINT16,
            "delta_adsup_mv" / UINT32,
            "delta_adinf_mv" / UINT32,
            "delta_prsup_mv" / UINT32,
            "delta_prinf_mv" / UINT32,
            "mvd_detection_time_lower_limit" / UINT16,
            "mvd_detection_time_upper_limit" / UINT16,
            "mvd_interruption_sag_low_threshold" / UINT8,
            "mvd_sag_high_threshold" / UINT8,
            "mvd_swell_low_threshold" / UINT8,
            "energy_register_unit" / UINT8,
        ]
    if gen4:
        fields += [
            "mep_flags" / Bits(1, house_icon_control=(0, 2), mbus_discovery_auto_confirmation=2),
            "optical_configuration" / Bits(1, enable_optical_dos_timer=0, disable_optical_port=1),
            "optical_session_timeout" / UINT16,
            "optical_session_hold_off" / UINT16,
            "external_tamper_status" / Bits(1, external_tamper_1_in_use=0,
                                            external_tamper_2_in_use=1),
            "tamper_adc" / Array(3, Int16sl),
            "external_tamper_duration" / UINT8,
            "second_cover_removed_detection_threshold" / UINT16,
            "magnetic_tamper_duration" / UINT16,
            "va_calculation_method" / UINT8,
            "locked_flags" / Bits(2, bev_load_profile_lock_mode=0),
            "reverse_energy_current_threshold_msb" / UINT8,
        ]
    return Struct(*fields)


#: The guide's Value column (MEP p.139-163); fields it leaves blank ship as 0.
_ET55_DEFAULTS = dict(
    delta_time_adjustment_increment=1,
    signal_strength_threshold=-84,
    plc_active_timeout=60,
    phase_loss_threshold_seconds=10,
    tariff_disable_flags=dict(reserved_0=1),
    transformer_secondary_rated_current=1,
    general_cover_removed_detection_threshold=10,
    power_quality_cover_removed_detection_threshold=10,
    broken_mv_conductor_detection_time_threshold=600,
    zero_fault_detection_time_threshold=10,
    normal_voltage_upper_limit=115,
    normal_voltage_lower_limit=85,
    low_voltage_higher_limit=60,
    voltage_fluctuation_limit=5,
    reverse_energy_alarm_current_threshold=1000,
    step_tariff_reset_day=1,
    rms_voltage_mains_cycles=15,
    average_rms_voltage_seconds=600,
    average_rms_voltage_count=1008,
    mvd_detection_time_lower_limit=1,
    mvd_detection_time_upper_limit=180,
    mvd_interruption_sag_low_threshold=10,
    mvd_sag_high_threshold=90,
    mvd_swell_low_threshold=110,
    energy_register_unit=1,
    optical_session_timeout=600,
    optical_session_hold_off=300,
    external_tamper_status=dict(external_tamper_1_in_use=1, external_tamper_2_in_use=1),
    external_tamper_duration=5,
    second_cover_removed_detection_threshold=10,
    magnetic_tamper_duration=10,
)

#: VCI "M" and "F" fields, and Energy Register Unit ("cannot be changed in the field"): the
#: meter keeps them when a client writes ET55. The scheduled LCD message text and times are
#: marked "M" only because meters with the Free Text feature fill them from FTa messages; this
#: meter has none, so a head-end schedules a message by writing them ("Specify an 8-character
#: message", MEP p.142-143).
_ET55_METER_CONTROLLED = (
    "broken_mv_conductor_detection_time_threshold", "zero_fault_detection_time_threshold",
    "normal_voltage_upper_limit", "normal_voltage_lower_limit", "low_voltage_higher_limit",
    "voltage_fluctuation_limit", "reverse_energy_alarm_current_threshold",
    "energy_register_unit", "tariff_disable_flags.reserved_0",
)


def _et55_defaults(meter):
    values = zeros(_et55_layout(meter))
    values.update((name, value) for name, value in _ET55_DEFAULTS.items() if name in values)
    return values


def _average_interval_ok(seconds: int) -> bool:
    """The average RMS voltage interval is synced to the hour (MEP p.157-158): a divisor of 60 s,
    whole minutes dividing an hour, or whole hours dividing a day."""
    if seconds < 60:
        return seconds > 0 and 60 % seconds == 0
    if seconds < 3600:
        return seconds % 60 == 0 and 60 % (seconds // 60) == 0
    return seconds % 3600 == 0 and 24 % (seconds // 3600) == 0


def _et55_apply(meter, values, ctx):
    gen4 = _gen4(meter)
    _require(values.delta_time_adjustment_increment <= 16,
             "ET55.4 delta time adjustment increment must be 0..16")
    _require(values.scheduled_lcd_message_id_decimal_points < 1 << (4 + gen4),
             f"ET55 decimal point state has {4 + gen4} bits")
    _require(values.over_power_source <= 2, "ET55 over power source must be 0..2")
    _require(values.primary_load_profile_index <= 3,
             "ET55 primary load profile index must be 0..3 (data sets 1-4)")
    if firmware_at_least(meter, "3.70"):
        _require(all(rate <= 1_000_000 for rate in values.prepay_tier_5_8_rates),
                 "ET55 prepay tier rates are at most 1,000,000 Wh per kWh")
        _require(values.step_tariff_source <= 3, "ET55 step tariff source must be 0..3")
        _require(1 <= values.step_tariff_reset_day <= 28, "ET55 step tariff reset day is 1..28")
        _require(values.step_tariff_reset_hour <= 23 and values.step_tariff_reset_minute <= 59
                 and values.step_tariff_reset_second <= 59, "ET55 step tariff reset time invalid")
        _require(10 <= values.rms_voltage_mains_cycles <= 800,
                 "ET55 RMS voltage mains cycles must be 10..800")
        _require(_average_interval_ok(values.average_rms_voltage_seconds),
                 "ET55 average RMS voltage interval must divide the hour or the day")
        _require(values.average_rms_voltage_count > 0,
                 "ET55 average RMS voltage count must not be 0")
    if gen4:
        _require(values.mep_flags["house_icon_control"] <= 2,
                 "ET55 house icon control must be 0..2")
        _require(values.va_calculation_method <= 1, "ET55 VA calculation method must be 0 or 1")
    layout = _et55_layout(meter)
    kept = [name for name in _ET55_METER_CONTROLLED if name.partition(".")[0] in values]
    kept.append("broadcast_group_ids")  # EP27's
    return _keep(meter, et(55), layout, values, ctx, kept + _reserved(layout))


def broadcast_groups(meter) -> list[int]:
    """The broadcast group IDs this meter belongs to (EP27), in slot order, empty slots left
    out. A group broadcast (ET52/ET27 transaction type 3) is for this meter when one of these
    matches its list (0xYYFF: every sub-group of YY; 0xFFYY, 0xFFFF: everyone; MEP p.131)."""
    values = _et55_layout(meter).parse(meter.table_bytes(et(55), 0.0))
    return [group for group in values.broadcast_group_ids if group]


def set_broadcast_groups(meter, groups: list[int]) -> None:
    """EP27's effect: ``groups`` (at most ET11.18) fill ET55's group slots, the rest are 0."""
    layout = _et55_layout(meter)
    values = layout.parse(meter.table_bytes(et(55), 0.0))
    slots = _group_slots(meter)
    if len(groups) > slots:
        raise ValueError(f"{len(groups)} broadcast groups; the meter has {slots} slots")
    values.broadcast_group_ids = list(groups) + [0] * (slots - len(groups))
    meter.state.tables[et(55)] = layout.build(values)
    meter.dirty = True


declare(
    et(55), "Meter Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_et55_layout,
    defaults=_et55_defaults,
    apply=_et55_apply,
    provenance=documented("MEP p.139-163 (128 bytes; A + 40 with A = 146 + 4*(BT20.7-1) on "
                          "3.70+; Gen 4 offsets +1 and 22 more bytes); OPG p.60; the broadcast "
                          "group IDs in reserved offsets 24-43 are our design (EP27)"),
)

# ---------------------------------------------------------------------------------------
# ET70 RAM Only Status
#
# The MEP guide's access box lets MAK write ET70, but its text (MEP p.23) and App. C (p.261)
# call it read-only: read-only it is. ET70.142 names the MEP client (1, 2) whose request is being
# served (mep_devices.channel_in_service; 1 outside a MEP request).


def _et70_layout(meter):
    if not _gen4(meter):
        return Struct("reserved_0" / Bytes(142))
    return Struct("reserved_0" / Bytes(142), "current_comm_channel_index" / UINT8,
                  "reserved_143" / Bytes(13))


def _et70_render(meter, now):
    from .mep_devices import channel_in_service

    if not _gen4(meter):
        return dict(reserved_0=bytes(142))
    return dict(reserved_0=bytes(142), current_comm_channel_index=channel_in_service(),
                reserved_143=bytes(13))


declare(
    et(70), "RAM Only Status",
    read=READERS,
    layout=_et70_layout,
    render=_et70_render,
    provenance=documented("MEP p.173-174 (142 bytes; 156 on Gen 4); OPG p.62"),
)
