"""BT03 status and alarm bits, by name (Optical Port guide p.45-47).

State keeps alarms as a set of names; BT03 is rendered from it. Offsets 1-2 are the C12.19
standard status (a little-endian UINT16), 3 the extended alarms, 4.. the manufacturer alarms.
"""

from __future__ import annotations

#: name -> (byte offset in BT03, bit)
ALARMS: dict[str, tuple[int, int]] = {}


def _bits(offset: int, names: str) -> None:
    for bit, name in enumerate(names.split()):
        if name != "-":
            ALARMS[name] = (offset, bit)


# UINT16 at offsets 1-2: bits 0-7 in byte 1, bits 8-15 in byte 2.
_bits(1, "unprogrammed configuration_error system_reset ram_failure rom_failure "
         "nvm_failure clock_error measurement_error")
_bits(2, "low_battery low_loss_potential demand_overload power_failure cover_removed "
         "reverse_energy data_backup_incomplete disconnect_switch_error")
_bits(3, "lp_set2_unread lp_set3_unread lp_set4_unread neutral_current_deviation")
_bits(4, "load_profile_overflow self_read_occurred load_disconnect_changed control_relay_open "
         "phase_loss phase_inversion plc_config_failure general_error")
_bits(5, "invalid_password remote_communications_inactive current_on_missing_phase "
         "pulse_input1_tamper pulse_input2_tamper software_crc_error code_bank_changed "
         "load_profile_backfill_failed")
_bits(6, "mep_installed_or_removed mbus_alarm mbus_auto_discovery_complete "
         "phase_rotation_changed prepay_credit_exhausted prepay_warning_acknowledged "
         "event_log_overflow_pending mfg_log_entry_available")
_bits(7, "dimension_change magnetic_tamper access_lockout_override power_quality_event "
         "event_log_unread_entries thd_state_changed lp_set1_unread load_side_voltage")
_bits(8, "unbalanced_voltage password_table_written key_expiration_pending p2p_security "
         "firmware_separation_violation modem_error g3_alarm g3_event_logged")
_bits(9, "control_relay2_open")


def render_bt03_bits(alarms: set[str], size: int) -> bytearray:
    """Bytes 1..size-1 of BT03 with the named alarms set (byte 0, the mode, is the caller's)."""
    out = bytearray(size)
    for name in alarms:
        offset, bit = ALARMS[name]
        out[offset] |= 1 << bit
    return out
