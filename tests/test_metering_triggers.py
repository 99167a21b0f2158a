"""Event triggers (meter_emu/metering/triggers.py): MQTT trigger names and payloads turned into
BT03 alarms and history log events, once per occurrence; bad input changes nothing."""

from __future__ import annotations

import struct

import pytest

from meter_emu.device import relay
from meter_emu.device.access import Key
from meter_emu.device.alarms import ALARMS
from meter_emu.device.meter import Meter
from meter_emu.metering import quantities, triggers
from meter_emu.metering.quantities import InjectionError
from meter_emu.profile import load_profile
from meter_emu.tables.catalog import bt

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def meter():
    meter = Meter(load_profile())
    meter.advance(NOW)
    return meter


def events(meter) -> list[tuple[int, int]]:
    return [(e[3], e[4]) for e in meter.state.history.entries]


def bt03_bit(meter, alarm: str) -> bool:
    """The alarm's bit in BT03 as a client reads it (OPG p.45-47)."""
    offset, bit = ALARMS[alarm]
    return bool(meter.read_table(bt(3), Key.MK, NOW + 1000)[offset] >> bit & 1)


#: condition triggers: (trigger, BT03 alarm, event)
CONDITIONS = [
    ("magnetic_tamper", "magnetic_tamper", 89),
    ("battery_low", "low_battery", 44),
    ("pulse_input1_tamper", "pulse_input1_tamper", 75),
    ("pulse_input2_tamper", "pulse_input2_tamper", 76),
    ("ram_failure", "ram_failure", 39),
    ("rom_failure", "rom_failure", 40),
    ("nvm_failure", "nvm_failure", 41),
    ("clock_error", "clock_error", 42),
    ("measurement_error", "measurement_error", 43),
    ("plc_config_failure", "plc_config_failure", 70),
    ("general_error", "general_error", 71),
    ("remote_communications_inactive", "remote_communications_inactive", 73),
    ("access_lockout_override", "access_lockout_override", 90),
    ("phase_inversion", "phase_inversion", 69),
    ("phase_rotation_changed", "phase_rotation_changed", 83),
]


@pytest.mark.parametrize("name, alarm, event", CONDITIONS)
def test_a_condition_trigger_raises_its_alarm_and_logs_its_event_once(meter, name, alarm, event):
    triggers.fire(meter, name, "on", NOW + 10)
    triggers.fire(meter, name, "1", NOW + 20)  # still on: nothing new
    assert events(meter) == [(event, 0)]
    assert bt03_bit(meter, alarm)
    assert triggers.active(meter) == [name]
    triggers.fire(meter, name, "off", NOW + 30)
    assert not bt03_bit(meter, alarm) and triggers.active(meter) == []
    triggers.fire(meter, name, "true", NOW + 40)  # a new occurrence
    assert events(meter) == [(event, 0), (event, 0)]
    assert meter.state.history.entries[-1][0] == int(NOW) + 40


def test_cover_open_is_cover_removed_and_a_tamper_attempt(meter):
    triggers.fire(meter, "cover_open", "", NOW + 10)
    triggers.fire(meter, "cover_open", "on", NOW + 11)
    assert events(meter) == [(105, 0), (47, 0)]
    assert bt03_bit(meter, "cover_removed")
    triggers.fire(meter, "cover_open", "0", NOW + 12)
    assert not bt03_bit(meter, "cover_removed")


def test_tamper_is_an_occurrence_each_time(meter):
    triggers.fire(meter, "tamper", "on", NOW + 1)
    triggers.fire(meter, "tamper", "off", NOW + 2)  # nothing to end
    triggers.fire(meter, "tamper", "on", NOW + 3)
    assert events(meter) == [(47, 0), (47, 0)]


def test_failures_count_in_the_bt23_error_counter(meter):
    for name in ("ram_failure", "nvm_failure", "clock_error", "measurement_error"):
        triggers.fire(meter, name, "on", NOW + 1)
    triggers.fire(meter, "ram_failure", "on", NOW + 2)  # still the same failure
    triggers.fire(meter, "rom_failure", "on", NOW + 2)  # not a counted error (OPG p.25)
    raw = meter.read_table(bt(23), Key.MK, NOW + 3)
    assert struct.unpack("<i", raw[40:44])[0] == 4  # BT23 summation 10: error counter


def test_self_check_error_reports_the_fault_bits(meter):
    triggers.fire(meter, "rom_failure", "on", NOW + 1)
    triggers.fire(meter, "self_check_error", "on", NOW + 2)
    assert events(meter)[-1] == (38, 0b10)  # EP42's bit 1: ROM failure


def test_button_logs_106_and_closes_a_contactor_armed_for_reconnect(meter):
    relay.set_disconnect(meter, relay.ARMED, relay.Reason.EP02, NOW)
    triggers.fire(meter, "button", "on", NOW + 60)
    assert relay.disconnect_state(meter) == relay.CONNECTED
    assert events(meter)[-2:] == [(106, 0), (66, relay.disconnect_argument(
        relay.ARMED, relay.CONNECTED, relay.Reason.MANUAL))]


def test_button_leaves_an_open_contactor_that_is_not_armed(meter):
    relay.set_disconnect(meter, relay.DISCONNECTED, relay.Reason.EP02, NOW)
    triggers.fire(meter, "button", "on", NOW + 60)
    assert relay.disconnect_state(meter) == relay.DISCONNECTED
    assert events(meter)[-1] == (106, 0)


def test_outage_trigger_logs_power_down_and_up(meter):
    quantities.apply(meter, {"voltage": 230, "current": 10, "pf": 1}, NOW)
    triggers.fire(meter, "outage", "on", NOW + 100)
    triggers.fire(meter, "outage", "on", NOW + 200)
    triggers.fire(meter, "outage", "off", NOW + 700)
    assert events(meter) == [(1, 0), (2, 3)]
    assert meter.state.registers["power_outage_seconds"] == 600
    assert meter.state.registers["power_outage_count"] == 1


def test_phase_inversion_turns_the_voltage_angles_around():
    meter = Meter(load_profile(overrides=["meter.phases=3", "identity.firmware_version=4.30.0",
                                          "dimensions.present_values=84"]))
    quantities.apply(meter, {"voltage": 230}, NOW)

    def angles() -> list[int]:  # BT28 values 75-77
        return list(struct.unpack("<3i", meter.read_table(bt(28), Key.MK, NOW, 300, 12)))

    assert angles() == [12_000] * 3  # 120.00 degrees A-B, B-C, C-A
    triggers.fire(meter, "phase_inversion", "on", NOW)
    assert angles() == [24_000] * 3


@pytest.mark.parametrize("name, payload", [("no_such_trigger", "on"), ("tamper", "maybe"),
                                           ("cover_open", "2"), ("outage", "on please")])
def test_bad_triggers_are_refused_and_change_nothing(meter, name, payload):
    before = (events(meter), set(meter.state.alarms), dict(meter.state.registers))
    with pytest.raises(InjectionError) as refused:
        triggers.fire(meter, name, payload, NOW + 5)
    assert name in str(refused.value) or payload in str(refused.value)
    assert (events(meter), set(meter.state.alarms), dict(meter.state.registers)) == before


def test_every_trigger_is_listed_with_what_it_does():
    assert set(triggers.TRIGGERS) == {name for name, _, _ in CONDITIONS} | {
        "cover_open", "tamper", "button", "outage", "self_check_error", "disconnect_switch_error",
        "service_pin"}
    assert all(len(text) > 10 for text in triggers.TRIGGERS.values())
