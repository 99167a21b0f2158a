"""Extended tables (ET n, wire ID 2048 + n): declarations.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

from construct import Bytes, Int16sl, Struct

from ..crc import crc16
from ..device.access import OPEN, Key
from ..provenance import documented
from .catalog import declare, et
from ..datatypes import UINT8, UINT16, UINT32, Bits, Chars, LTimeDate

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
    "unused_54", "nvm_size", "maximum_key_usage_count", "reverse_energy_current_threshold",
)


def _et04_defaults(meter):
    ident, ratings = meter.profile.identity, meter.profile.ratings
    security = meter.profile.security
    return dict(
        sequence_number=0,
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
        maximum_key_usage_count=1_000_000,
        security_mode=0,
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


declare(
    et(4), "System Information",
    read={Key.MK, Key.PK, Key.MAK, Key.MBK, Key.PLC},
    write={Key.MK, Key.MAK, Key.PLC},
    layout=_ET04,
    defaults=_et04_defaults,
    apply=_et04_apply,
    provenance=documented("MEP p.54-66 (140 bytes, firmware 4.x offsets up to 138)"),
)
