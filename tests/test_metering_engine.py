"""The metering engine (meter_emu/metering/engine.py): injected quantities integrated on the
virtual clock into BT23, BT28, outages (events 1/2, ET10, ET81), the conditions the quantities
show (events 48, 68, 74, 107), and the BT16 sources the load profile and demand read. Expected
values are worked out by hand in each test."""

from __future__ import annotations

import datetime as dt
import math
import struct

import pytest
from conftest import MK, bt07

from meter_emu.device import relay
from meter_emu.device.access import Key
from meter_emu.device.meter import Meter
from meter_emu.metering import engine, quantities, registers, tou, triggers
from meter_emu.procedures.catalog import ep
from meter_emu.profile import load_profile
from meter_emu.tables.catalog import CATALOG, bt, et

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
FWD, REV, IMPORT, EXPORT, OFF_SECONDS, OUTAGES = range(6)
Q1, Q2, Q3, Q4 = 11, 12, 13, 14  # BT23 positions of the Q1..Q4 varh summations (BT22 order)


def meter_with(quantities_set: dict | None = None, *overrides: str, at: float = NOW) -> Meter:
    meter = Meter(load_profile(overrides=list(overrides)))
    meter.advance(at)
    if quantities_set:
        quantities.apply(meter, quantities_set, at)
    return meter


def bt23_totals(meter: Meter, now: float) -> list[int]:
    """BT23's total summations, read as a client does (no demand reset counter: offset 0)."""
    raw = meter.read_table(bt(23), Key.MK, now)
    return list(struct.unpack("<15i", raw[:60]))


def bt28(meter: Meter, now: float) -> list[int]:
    raw = meter.read_table(bt(28), Key.MK, now)  # BT21.8 = 0: present values from offset 0
    return list(struct.unpack(f"<{len(raw) // 4}i", raw))


def events(meter: Meter) -> list[tuple[int, int]]:
    """(event, argument) in the order logged, without the mechanism's table/procedure entries."""
    return [(e[3], e[4]) for e in meter.state.history.entries if e[3] not in (9, 10)]


# ---- energy -------------------------------------------------------------------------------


def test_230_v_10_a_pf_1_for_an_hour_is_2300_wh_in_bt23_and_its_tier():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[FWD] == 2300  # 230 V x 10 A x 1 h
    assert totals[REV] == totals[IMPORT] == totals[EXPORT] == 0
    assert totals[6] == totals[7] == 2300  # Fwd+Rev, Fwd-Rev
    tier = tou.current_tier(meter, NOW)
    assert registers.tier_value(meter, tier, 0) == 2300
    assert engine.source_value(meter, 29 + 11 * tier, NOW + HOUR) == 2300  # T0..T3 Fwd Wh
    assert sum(engine.source_value(meter, 29 + 11 * t, NOW + HOUR) for t in range(4)) == 2300


def test_pf_half_splits_active_and_quadrant_1_reactive_energy():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 0.5})
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[FWD] == 1150  # 2300 VA x 0.5
    assert totals[IMPORT] == totals[Q1] == 1991  # 2300 x sin(60 deg) = 1991.86 varh
    assert totals[EXPORT] == totals[Q2] == totals[Q3] == totals[Q4] == 0


def test_capacitive_load_is_quadrant_4_export_reactive():
    meter = meter_with({"voltage": 230, "current": 10, "pf": -0.5})
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[FWD] == 1150 and totals[EXPORT] == totals[Q4] == 1991
    assert totals[IMPORT] == totals[Q1] == 0


def test_angle_180_is_reverse_energy_with_event_48_once():
    meter = meter_with({"voltage": 230, "current": 10, "angle": 180})
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[REV] == 2300 and totals[FWD] == 0
    assert totals[6] == 2300 and totals[7] == 0  # Fwd-Rev is clamped at 0
    assert events(meter) == [(48, 0)]
    assert "reverse_energy" in meter.state.alarms
    assert bt28(meter, NOW + HOUR)[:2] == [0, 2300]  # Fwd W, Rev W
    bt23_totals(meter, NOW + 2 * HOUR)
    assert events(meter) == [(48, 0)]  # logged once per occurrence
    quantities.apply(meter, {"angle": 0}, NOW + 2 * HOUR)
    meter.advance(NOW + 2 * HOUR + 1)
    assert "reverse_energy" not in meter.state.alarms
    quantities.apply(meter, {"angle": 170}, NOW + 3 * HOUR)
    meter.advance(NOW + 3 * HOUR + 1)
    assert events(meter) == [(48, 0), (48, 0)]  # a second occurrence


def test_a_sine_current_integrates_to_its_mean_times_the_time():
    # 230 V x (100 + 50 sin) A over 10 whole periods of 360 s: 230 x 100 x 1 h = 23000 Wh
    meter = meter_with({"voltage": 230, "pf": 1, "current": {
        "type": "sine", "mean": 100, "amplitude": 50, "period_s": 360}})
    assert bt23_totals(meter, NOW + HOUR)[FWD] == pytest.approx(23_000, rel=0.001)


def test_a_quarter_sine_period_integrates_to_the_analytic_value():
    # integral of 230 x (100 + 50 sin(2 pi t / 3600)) over 0..900 s, in Wh:
    # 230 x (100 x 900 + 50 x 3600 / (2 pi) x (1 - cos(pi / 2))) / 3600 = 7580.3 Wh
    expected = 230 * (100 * 900 + 50 * 3600 / (2 * math.pi)) / 3600
    meter = meter_with({"voltage": 230, "pf": 1, "current": {
        "type": "sine", "mean": 100, "amplitude": 50, "period_s": 3600}})
    got = bt23_totals(meter, NOW + 900)[FWD]
    assert got == pytest.approx(expected, rel=0.001) and got != 23_000 // 4


def test_a_csv_step_is_integrated_exactly_across_its_jump():
    # 10 A for 600 s, then 20 A for 1200 s, then 0: 230 x (10 x 600 + 20 x 1200) / 3600 Wh
    meter = meter_with({"voltage": 230, "pf": 1, "current": {
        "type": "csv", "points": [[0, 10], [600, 20], [1800, 0]]}})
    assert bt23_totals(meter, NOW + HOUR)[FWD] == 1916  # 1916.67


def test_a_ramp_is_integrated_exactly_and_then_holds_its_value():
    # 0 to 20 A over an hour: 230 V x 10 A on average = 2300 Wh; then 20 A: 4600 Wh an hour
    meter = meter_with({"voltage": 230, "pf": 1, "current": {
        "type": "ramp", "from": 0, "to": 20, "duration_s": 3600}})
    assert bt23_totals(meter, NOW + HOUR)[FWD] == 2300
    assert bt23_totals(meter, NOW + 2 * HOUR)[FWD] == 2300 + 4600


def test_many_small_advances_meter_what_one_large_one_does():
    one = meter_with({"voltage": 230, "current": 10, "pf": 0.9})
    many = meter_with({"voltage": 230, "current": 10, "pf": 0.9})
    for k in range(1, 3601):
        many.advance(NOW + k)
    assert bt23_totals(many, NOW + HOUR) == bt23_totals(one, NOW + HOUR)
    assert bt23_totals(one, NOW + HOUR)[FWD] == 2070  # 2300 x 0.9


def test_pulse_inputs_count_their_rate():
    meter = meter_with({"pulse1": 1000, "pulse2": 36})  # pulses per hour
    totals = bt23_totals(meter, NOW + 2 * HOUR)
    assert totals[8:10] == [2000, 72]


def test_a_three_phase_meter_sums_its_phases():
    meter = meter_with({"voltage": 230, "current": [10, 20, 5], "pf": 1}, "meter.phases=3")
    assert bt23_totals(meter, NOW + HOUR)[FWD] == 8050  # 230 x 35 A x 1 h
    values = bt28(meter, NOW + HOUR)
    assert values[0] == 8050 and values[12] == 8050  # W, VA
    assert values[4:7] == [10_000, 20_000, 5_000]  # mA
    assert values[7:10] == [230_000] * 3  # mV
    assert values[10] == values[13] == values[14] == 1000  # PF L1, L2, L3


def test_opposite_phases_cancel_in_the_vector_sum():
    # L1 imports 2300 W, L2 exports 2300 W, L3 imports 1150 W: net 1150 W forward
    meter = meter_with({"voltage": 230, "current": [10, 10, 5], "angle": [0, 180, 0]},
                       "meter.phases=3")
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[FWD] == 1150 and totals[REV] == 0
    assert events(meter) == []  # the net power is not reversed


# ---- BT28 present values --------------------------------------------------------------------


def test_bt28_shows_the_injected_quantities_in_its_units():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    values = bt28(meter, NOW + 60)
    assert len(values) == 41
    assert values[0] == 2300  # Fwd active W
    assert values[4] == 10_000  # mA
    assert values[7] == 230_000  # mV
    assert values[10] == 1000  # PF 1/1000
    assert values[11] == 50_000  # mHz
    assert values[12] == 2300  # VA
    assert values[5:7] == values[8:10] == [0, 0]  # no L2, L3 on a single-phase meter
    assert values[13:15] == [0, 0]
    assert values[18] == 2300  # post CT/VT (firmware 2.12+, ratio 1)
    assert values[22:26] == [0, 0, 0, 0]  # no reactive power
    assert values[26:41] == [0] * 15  # firmware 3.10 does not know values 26-40


def test_bt28_reactive_power_power_factor_and_sine():
    meter = meter_with({"voltage": 231.5, "current": 12, "pf": 0.95, "frequency": 49.95})
    values = bt28(meter, NOW + 60)
    assert values[0] == 2639  # 231.5 x 12 x 0.95 = 2639.1 W
    assert values[2] == 867  # x sin(acos 0.95) = 867.4 var import
    assert values[10] == 950 and values[15] == 312  # PF, sin(18.19 deg) = 0.3122
    assert values[11] == 49_950
    assert values[22] == 867  # Q1 var


def test_bt28_values_of_newer_firmware():
    meter = meter_with({"voltage": 230, "current": [10, 20, 5], "pf": [1, -0.5, 1],
                        "neutral_current": 1.5},
                       "meter.phases=3", "identity.firmware_version=4.30.0",
                       "dimensions.present_values=84")
    values = bt28(meter, NOW + 60)
    assert values[26:29] == [2300, 2300, 1150]  # Fwd W per phase (L2: 4600 VA x 0.5)
    assert values[13] == 500 and values[16] == -866  # PF L2, sin(-60 deg)
    assert values[3] == 3984 and values[25] == 3984  # export var: 4600 x 0.866, quadrant IV
    assert values[58] == 8050  # apparent power, quadrant IV (2300 + 4600 + 1150 VA)
    assert values[63 + 3] == 4600  # L2's VA in its quadrant IV
    assert values[71] == 1500  # neutral current mA
    assert values[75:78] == [12_000] * 3  # voltage angles 120.00 degrees
    assert values[81:84] == [0, 3984, 0]  # export var per phase


# ---- disconnect contactor -------------------------------------------------------------------


def test_an_open_contactor_meters_nothing_and_reports_load_side_voltage_once():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    meter.advance(NOW + 1800)
    relay.set_disconnect(meter, relay.DISCONNECTED, relay.Reason.EP02, NOW + 1800)
    assert bt23_totals(meter, NOW + HOUR)[FWD] == 1150  # only the first half hour
    assert bt28(meter, NOW + HOUR)[4] == 0  # no load current
    assert bt28(meter, NOW + HOUR)[7] == 230_000  # the supply is still there
    quantities.apply(meter, {"load_voltage": 230}, NOW + HOUR)
    meter.advance(NOW + 2 * HOUR)
    assert [e for e in events(meter) if e[0] == 107] == [(107, 1 << 2)]  # phase A
    assert "load_side_voltage" in meter.state.alarms
    meter.advance(NOW + 3 * HOUR)
    assert [e for e in events(meter) if e[0] == 107] == [(107, 1 << 2)]
    assert bt23_totals(meter, NOW + 3 * HOUR)[FWD] == 1150


# ---- outages --------------------------------------------------------------------------------


def configure_et81(client, entries: int) -> None:
    """EP06 gives ET81 ``entries`` entries (0 on a new meter, MEP p.109)."""
    client.logon(MK)
    params = (0x0800 | 81).to_bytes(2, "little") + entries.to_bytes(2, "little")
    assert client.write(7, bt07(ep(6), 1, params)) == b"\x00"
    assert client.read(8)[3] == 0


def test_a_ten_minute_outage_logs_power_down_and_up_counts_and_records(client, meter):
    configure_et81(client, 4)
    meter.advance(NOW)
    quantities.apply(meter, {"voltage": 230, "current": 10, "pf": 1}, NOW)
    quantities.apply(meter, {"voltage": 100}, NOW + 600)  # below half of 230 V
    meter.advance(NOW + 900)
    assert engine.in_outage(meter) and "power_failure" in meter.state.alarms
    assert bt28(meter, NOW + 900)[4:8] == [0, 0, 0, 100_000]  # the low voltage, no current
    quantities.apply(meter, {"voltage": 230}, NOW + 1200)
    totals = bt23_totals(meter, NOW + 1800)
    assert totals[OUTAGES] == 1 and totals[OFF_SECONDS] == 600
    assert totals[FWD] == 766  # 20 of 30 minutes at 2300 W = 766.7 Wh
    outage_events = [e for e in meter.state.history.entries if e[3] in (1, 2)]
    assert [(e[0], e[3], e[4]) for e in outage_events] == [
        (int(NOW) + 600, 1, 0), (int(NOW) + 1200, 2, 3)]  # reset cause 3: power failure
    et10 = CATALOG[et(10)].layout_for(meter).parse(meter.table_bytes(et(10), NOW + 1800))
    assert (et10.outage_count, et10.outage_seconds) == (1, 600)
    record = et10.long_outage_records[0]
    assert record.power_off_time == dt.datetime(2026, 1, 1, 0, 10)
    assert record.power_on_time == dt.datetime(2026, 1, 1, 0, 20)
    assert (record.power_off_duration, record.reset_cause) == (600, 3)
    et81 = client.read(et(81))
    assert et81[1] == 1 and et81[5] == 1  # one valid entry, unread
    assert et81[6:18] == bytes([26, 1, 1, 1, 10, 0, 26, 1, 1, 1, 20, 0])  # local (UTC + 1 h)
    assert "mfg_log_entry_available" in meter.state.alarms
    params = (0x0800 | 81).to_bytes(2, "little") + (1).to_bytes(2, "little")
    assert client.write(7, bt07(ep(26), 2, params)) == b"\x00"  # EP26: one entry read
    assert client.read(8)[3:6] == b"\x00\x01\x00"  # completed, one unread entry taken
    assert client.read(et(81))[5] == 0 and "mfg_log_entry_available" not in meter.state.alarms


def test_an_outage_trigger_cuts_the_supply_whatever_the_voltage():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    triggers.fire(meter, "outage", "on", NOW + 600)
    assert bt28(meter, NOW + 900)[0] == 0 and bt28(meter, NOW + 900)[7] == 0
    triggers.fire(meter, "outage", "off", NOW + 1200)
    totals = bt23_totals(meter, NOW + HOUR)
    assert totals[OUTAGES] == 1 and totals[OFF_SECONDS] == 600
    assert totals[FWD] == 1916  # 50 minutes at 2300 W
    assert [e for e in events(meter) if e[0] in (1, 2)] == [(1, 0), (2, 3)]


def test_a_second_outage_logs_again_while_bt03_still_shows_the_first():
    meter = meter_with({"voltage": 0})
    quantities.apply(meter, {"voltage": 230}, NOW + 60)
    quantities.apply(meter, {"voltage": 0}, NOW + 120)
    quantities.apply(meter, {"voltage": 230}, NOW + 180)
    meter.advance(NOW + 200)
    assert [e[0] for e in events(meter)] == [1, 2, 1, 2]
    assert bt23_totals(meter, NOW + 200)[OUTAGES:OUTAGES + 1] == [2]
    assert bt23_totals(meter, NOW + 200)[OFF_SECONDS] == 120


def test_phase_loss_and_current_on_a_missing_phase():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1}, "meter.phases=3")
    quantities.apply_one(meter, "voltage", 2, "0", NOW + 60)
    meter.advance(NOW + 120)
    mine = [e for e in events(meter) if e[0] in (68, 74)]
    assert mine == [(68, 0b010), (74, 0b010)]  # phase L2 lost, 10 A still on it
    assert not engine.in_outage(meter)
    # 60 s of 6900 W (115 Wh), then an hour of L1 + L3 (4600 Wh): L2 meters nothing
    assert bt23_totals(meter, NOW + 60 + HOUR)[FWD] == 115 + 4600
    quantities.apply_one(meter, "voltage", 2, "230", NOW + 60 + HOUR)
    meter.advance(NOW + 61 + HOUR)
    assert "phase_loss" not in meter.state.alarms
    assert "current_on_missing_phase" not in meter.state.alarms


# ---- virtual time and the meter clock ----------------------------------------------------------


def test_virtual_time_going_backwards_adds_nothing():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    meter.advance(NOW + HOUR)
    meter.advance(NOW)  # a restart with an earlier --start-time
    assert bt23_totals(meter, NOW)[FWD] == 2300
    assert bt23_totals(meter, NOW + 1800)[FWD] == 3450  # metering goes on from there


def test_a_clock_change_adds_or_loses_no_energy():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1})
    meter.move_clock(NOW + 900, NOW + 900 + 86_400)  # BP10: a day ahead
    meter.move_clock(NOW + 1800, NOW - 86_400)  # and two days back
    assert bt23_totals(meter, NOW + HOUR)[FWD] == 2300
    assert [e for e in events(meter) if e[0] in (3, 4)] == [(3, 0), (4, 0)] * 2


def test_next_due_follows_a_varying_quantity():
    meter = meter_with({"voltage": 230, "pf": 1, "current": {
        "type": "sine", "mean": 10, "amplitude": 2, "period_s": 600}})
    meter.move_clock(NOW, NOW + 1000)
    due = engine.next_due(meter)
    assert NOW + 1000 < due <= NOW + 1000 + 600 / 50  # meter UTC, a fiftieth of the period
    assert meter.next_deadline() <= NOW + 12


# ---- BT22 and source IDs ----------------------------------------------------------------------


def test_bt22_names_the_summations_bt23_shows():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 0.5}, "dimensions.summations=6")
    assert meter.table_bytes(bt(22), NOW) == bytes([0, 1, 2, 3, 4, 5])
    raw = meter.read_table(bt(23), Key.MK, NOW + HOUR)
    assert list(struct.unpack("<6i", raw[:24])) == [1150, 0, 1991, 0, 0, 0]


def test_source_values_in_the_meters_units():
    meter = meter_with({"voltage": 230, "current": 10, "pf": 1, "pulse1": 3600})
    meter.advance(NOW + HOUR)
    later = NOW + HOUR
    assert [engine.source_value(meter, s, later) for s in (0, 8, 12, 15, 18, 19, 20, 26)] == [
        2300, 2300, 10_000, 230_000, 1000, 50_000, 2300, 3600]
    assert engine.source_value(meter, 81, later) == 2300  # post CT/VT
    assert engine.source_value(meter, 216, later) == 0  # firmware 4.0+ only
    assert engine.source_value(meter, 120, later) == 0  # a mapped source: none here


def test_noise_is_integrated_value_by_value():
    # noise holds each value for step_s: the energy is the sum of the values it drew
    spec = {"type": "noise", "mean": 10, "sd": 3, "seed": 7, "step_s": 450}
    meter = meter_with({"voltage": 230, "pf": 1, "current": spec})
    drawn = [quantities.sample(meter, NOW + 450 * k + 1).current[0] for k in range(8)]
    expected = sum(230 * amps * 450 for amps in drawn) / 3600
    meter.advance(NOW + 100)  # steps that do not start on the noise's own boundaries
    assert bt23_totals(meter, NOW + HOUR)[FWD] == math.floor(expected + 1e-6)
