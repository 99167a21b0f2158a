"""Demand (meter_emu/metering/demand.py): EP32 configuration as BT21, BT22, BT13 and BT23 publish
it, block and sliding demand from the energy the engine hands over, maxima with their local time
in the totals and the tiers, minimum demands and coincident values, demand resets (EP34, EP33)
into cumulative demand and BT25, and the engine driving it all from injected quantities.

Energy is handed to ``demand.accumulate`` and intervals closed with ``demand.run_due`` as the
engine's loop does, so every expected demand is computed here by hand; one test goes through
``meter.advance`` with injected quantities."""

from __future__ import annotations

import itertools
import json

import pytest

from meter_emu.device.access import Key
from meter_emu.device.meter import Meter, MeterState
from meter_emu.metering import demand, quantities
from meter_emu.profile import load_profile
from meter_emu.tables import bt, et
from meter_emu.tables.catalog import WriteContext

NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC; BT55 local time = UTC + 60 min (profile BT53)
OK = 0
EP = 2048
SUMS = 15 * 4  # the 15 summations of a data block
RECORD = 5 + 4 + 4 + 4  # DmdRcd: event time, cumulative, continuous cumulative, demand
BLOCK = SUMS + 4 * RECORD  # four default demands, no coincident values
BT23_SIZE = 1 + 5 * BLOCK  # demand reset counter, totals and 4 tiers


@pytest.fixture
def meter():
    return Meter(load_profile())


_PSN = itertools.cycle(range(1, 255))


def run(meter, number: int, params: bytes = b"", now: float = NOW) -> int:
    """A procedure through BT07 with the MK (a new PSN each time); BT08's result code."""
    request = number.to_bytes(2, "little") + bytes([next(_PSN)]) + params
    meter.write_table(bt(7), request, WriteContext(Key.MK, now))
    return meter.table_bytes(bt(8), now)[3]


def configure(meter, sub_interval: int = 15, multiplier: int = 1, now: float = NOW) -> None:
    """EP32: BIDN 0x1234, 2 self reads, the demand interval, no ET41 entries."""
    params = bytes([0x34, 0x12, 2, sub_interval, multiplier, 0])
    assert run(meter, EP + 32, params, now) == OK


def feed(meter, start: float, end: float, watts: float, step: float = 300.0) -> None:
    """``watts`` of forward active power from ``start`` to ``end``: the engine's hand-over."""
    t = start
    while t < end:
        demand.accumulate(meter, t, t + step, {0: watts * step / 3600, 2: 0.0})
        demand.run_due(meter, t + step)
        t += step


def i32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 4], "little", signed=True)


def record(meter, block: int = 0, index: int = 0, block_size: int = BLOCK,
           now: float = NOW) -> tuple[list[int], int, int, int]:
    """A BT23 demand record (block 0 = totals, 1.. = tiers 0..): event time (YY MM DD hh mm),
    cumulative, continuous cumulative, demand."""
    raw = meter.table_bytes(bt(23), now)
    at = 1 + block * block_size + SUMS + index * RECORD
    return list(raw[at:at + 5]), i32(raw, at + 5), i32(raw, at + 9), i32(raw, at + 13)


# ---- configuration as the tables publish it -----------------------------------------------------


def test_without_ep32_the_registers_keep_the_layout_readers_expect(meter):
    assert meter.table_bytes(bt(21), NOW) == bytes.fromhex("03 0c 00 0f 00 00 01 04 00 29")
    assert len(meter.table_bytes(bt(23), NOW)) == 4 * 15 * 5  # totals at offset 0
    assert meter.table_bytes(bt(13), NOW) == bytes(4)
    assert demand.next_due(meter, NOW) is None and demand.dimensions(meter) == (0, 0)
    demand.accumulate(meter, NOW, NOW + 60, {0: 10.0})
    demand.run_due(meter, NOW + 3600)
    assert "demand" not in meter.state.subsystems


def test_ep32_publishes_the_default_demands(meter):
    configure(meter)
    # flags: season, date/time, demand reset counter, cumulative, continuous cumulative; the
    # self-read sequence number (BT26's BIDN) once demand is configured (MEP p.201)
    assert meter.table_bytes(bt(21), NOW) == bytes.fromhex("37 0e 02 0f 04 00 01 04 00 29")
    # ET48: configured maxima of Fwd W, Rev W, Import var, Export var, no coincident values
    assert meter.table_bytes(et(48), NOW)[:16] == bytes.fromhex(
        "0308ffff 0309ffff 030affff 030bffff")
    assert meter.table_bytes(bt(13), NOW) == bytes(4) + bytes([15, 1]) * 4  # BT13.4/.5
    bt23 = meter.table_bytes(bt(23), NOW)
    assert len(bt23) == BT23_SIZE and bt23 == bytes(BT23_SIZE)  # no resets, no interval yet
    bt22 = meter.table_bytes(bt(22), NOW)
    assert bt22[15:20] == bytes([8, 9, 10, 11, 0x0F])  # Demand Select, Min/Max Flags (maxima)
    assert demand.selection(meter) == dict(demand_select=[8, 9, 10, 11],
                                           min_max_flags=frozenset({0, 1, 2, 3}),
                                           coincident_select=[], coincident_demand_associated=[])
    assert demand.et42_fields(meter) == dict(billing_interface_definition_number=0x1234,
                                             demand_sources=[8, 9, 10, 11], coincident_sources=[])
    assert demand.next_due(meter, NOW) == NOW + 900  # meter UTC: the quarter hour


def test_bt26_entries_carry_the_bidn_and_the_demand_records(meter):
    configure(meter)
    assert run(meter, EP + 4) == OK  # a self read
    raw = meter.table_bytes(bt(26), NOW)
    entry = 2 + 5 + 1 + BT23_SIZE
    assert len(raw) == 6 + 2 * entry
    assert raw[6:8] == b"\x34\x12" and list(raw[8:13]) == [26, 1, 1, 1, 0]


# ---- block and sliding demand -------------------------------------------------------------------


def test_a_constant_load_gives_its_power_as_present_and_maximum_demand(meter):
    configure(meter)
    feed(meter, NOW, NOW + 3 * 900, 2300)  # 575 Wh per quarter hour
    assert demand.source_value(meter, 88) == 2300  # present demand 1: 575 Wh x 3600 / 900 s
    assert demand.source_value(meter, 96) == 2300  # previous demand 1
    assert demand.source_value(meter, 89) == 0 and demand.source_value(meter, 15) is None
    # the first interval set the maximum (the equal ones after it do not move it): 00:15 UTC
    assert record(meter) == ([26, 1, 1, 1, 15], 0, 2300, 2300)
    assert record(meter, index=1) == ([26, 1, 1, 1, 15], 0, 0, 0)  # Rev W: 0 W
    assert record(meter, block=1) == ([26, 1, 1, 1, 15], 0, 2300, 2300)  # tier 1 (calendar)
    assert i32(meter.table_bytes(bt(23), NOW), 1) == meter.state.registers["fwd_active_wh"]


def test_a_higher_load_moves_the_maximum_and_its_time(meter):
    configure(meter)
    feed(meter, NOW, NOW + 1800, 2300)
    feed(meter, NOW + 1800, NOW + 2700, 4600)  # the quarter ending 00:45 UTC
    feed(meter, NOW + 2700, NOW + 3600, 1000)
    assert record(meter) == ([26, 1, 1, 1, 45], 0, 4600, 4600)
    assert demand.source_value(meter, 88) == 1000 and demand.source_value(meter, 96) == 4600


def test_intervals_are_aligned_to_the_hour_whenever_ep32_runs(meter):
    configure(meter, now=NOW + 7 * 60)
    assert demand.next_due(meter, NOW + 7 * 60) == NOW + 900
    feed(meter, NOW + 7 * 60, NOW + 900, 2300, step=60)  # 8 minutes of the first quarter
    assert demand.source_value(meter, 88) == round(2300 * 8 / 15)  # the energy over 15 min
    feed(meter, NOW + 900, NOW + 1800, 2300)
    assert demand.source_value(meter, 88) == 2300
    assert record(meter) == ([26, 1, 1, 1, 30], 0, 2300, 2300)


def test_a_sliding_window_is_multiplier_sub_intervals_moving_one_at_a_time(meter):
    configure(meter, sub_interval=5, multiplier=3)
    assert meter.table_bytes(bt(13), NOW)[4:6] == bytes([5, 3])
    assert demand.next_due(meter, NOW) == NOW + 300
    for n, watts in enumerate((3000, 3000, 3000, 6000, 3000, 3000, 3000)):
        feed(meter, NOW + 300 * n, NOW + 300 * (n + 1), watts)
        if n == 1:  # two sub-intervals: the 15-minute window is not full yet
            assert demand.source_value(meter, 88) == 0 and record(meter)[3] == 0
        if n == 2:
            assert demand.source_value(meter, 88) == 3000
        if n == 3:  # (3000 + 3000 + 6000) Wh/12 over 15 min
            assert demand.source_value(meter, 88) == 4000
    assert demand.source_value(meter, 88) == 3000  # the 6000 W sub-interval has left the window
    assert record(meter) == ([26, 1, 1, 1, 20], 0, 4000, 4000)  # first reached at 00:20 UTC


def test_each_tier_keeps_the_maximum_measured_while_it_was_in_force(meter):
    configure(meter)
    feed(meter, NOW, NOW + 900, 2300)
    assert run(meter, EP + 5, b"\x02", NOW + 900) == OK  # EP05 holds tier 3
    feed(meter, NOW + 900, NOW + 1800, 4600)
    assert run(meter, EP + 5, b"\xff", NOW + 1800) == OK  # back to the calendar's tier 1
    feed(meter, NOW + 1800, NOW + 2700, 3000)
    assert record(meter, block=0) == ([26, 1, 1, 1, 30], 0, 4600, 4600)  # totals
    assert record(meter, block=1) == ([26, 1, 1, 1, 45], 0, 3000, 3000)  # tier 1
    assert record(meter, block=3) == ([26, 1, 1, 1, 30], 0, 4600, 4600)  # tier 3
    assert record(meter, block=2) == ([0] * 5, 0, 0, 0)  # tier 2: never in force


def test_minimum_demands_and_coincident_values_from_et48(meter):
    # entry 0: maximum of Fwd W with coincident Present Demand 1; entry 1: minimum of Fwd W
    entries = bytes([0x03, 8, 88, 0xFF, 0x01, 8, 0xFF, 0xFF])
    meter.write_table(et(48), entries, WriteContext(Key.MK, NOW))
    configure(meter)
    assert meter.table_bytes(bt(21), NOW)[4:6] == bytes([2, 1])  # 2 demands, 1 coincident
    assert demand.selection(meter) == dict(demand_select=[8, 8], min_max_flags=frozenset({0}),
                                           coincident_select=[88],
                                           coincident_demand_associated=[0])
    block = SUMS + 2 * RECORD + 4  # summations, 2 demand records, 1 coincident value
    assert len(meter.table_bytes(bt(23), NOW)) == 1 + 5 * block
    feed(meter, NOW, NOW + 900, 3000)
    feed(meter, NOW + 900, NOW + 1800, 1000)
    feed(meter, NOW + 1800, NOW + 2700, 2000)
    assert record(meter, index=0, block_size=block) == ([26, 1, 1, 1, 15], 0, 3000, 3000)
    assert record(meter, index=1, block_size=block) == ([26, 1, 1, 1, 30], 0, 1000, 1000)
    coincident = 1 + SUMS + 2 * RECORD
    assert i32(meter.table_bytes(bt(23), NOW), coincident) == 3000  # at the maximum


def test_more_demands_than_bt20_allows_are_not_measured(meter):
    meter.write_table(et(48), bytes([0x03, 8, 0xFF, 0xFF]) * 10, WriteContext(Key.MK, NOW))
    configure(meter)
    assert demand.dimensions(meter) == (8, 0)  # BT20.4 = 8


# ---- demand resets ------------------------------------------------------------------------------


def test_ep34_moves_maxima_into_cumulative_demand_and_keeps_bt23_in_bt25(meter):
    configure(meter)
    feed(meter, NOW, NOW + 900, 2300)
    feed(meter, NOW + 900, NOW + 1800, 4600)
    before = meter.table_bytes(bt(23), NOW + 1800)
    assert run(meter, EP + 34, b"", NOW + 1800) == OK
    # BT25: the reset's local minute (00:30 UTC = 01:30), season 0, BT23 just before
    assert meter.table_bytes(bt(25), NOW) == bytes([26, 1, 1, 1, 30, 0]) + before
    after = meter.table_bytes(bt(23), NOW)
    assert after[0] == 1  # Nbr Demand Resets
    assert record(meter) == ([0] * 5, 4600, 4600, 0)  # cumulative 4600, no maximum yet
    feed(meter, NOW + 1800, NOW + 2700, 2300)
    assert record(meter) == ([26, 1, 1, 1, 45], 4600, 4600 + 2300, 2300)
    assert run(meter, EP + 34, b"", NOW + 2700) == OK
    assert meter.table_bytes(bt(23), NOW)[0] == 2
    assert record(meter) == ([0] * 5, 6900, 6900, 0)
    assert record(meter, block=1)[1] == 6900  # tier 1 too


def test_ep33_resets_demand_and_restarts_the_window(meter):
    configure(meter)
    feed(meter, NOW, NOW + 900, 2300)
    assert run(meter, EP + 33, bytes([5, 3]), NOW + 900) == OK
    assert meter.table_bytes(bt(23), NOW)[0] == 1
    assert record(meter)[1:] == (2300, 2300, 0)
    assert meter.table_bytes(bt(13), NOW)[4:6] == bytes([5, 3])
    assert demand.source_value(meter, 88) == 0 and demand.next_due(meter, NOW + 900) == NOW + 1200
    feed(meter, NOW + 900, NOW + 1800, 1200)
    assert record(meter) == ([26, 1, 1, 1, 30], 2300, 3500, 1200)  # full window at 00:30


def test_a_bt23_write_sets_totals_and_leaves_the_demands_alone(meter):
    configure(meter)
    feed(meter, NOW, NOW + 900, 2300)
    kept = record(meter)
    raw = meter.table_bytes(bt(23), NOW)
    image = raw[:1] + (5000).to_bytes(4, "little") + raw[5:1 + SUMS] + bytes(BT23_SIZE - 1 - SUMS)
    meter.write_table(bt(23), image, WriteContext(Key.MK, NOW + 900))
    assert meter.state.registers["fwd_active_wh"] == 5000
    assert i32(meter.table_bytes(bt(23), NOW), 1) == 5000 and record(meter) == kept


def test_the_demand_state_survives_a_restart(meter):
    configure(meter)
    feed(meter, NOW, NOW + 900, 2300)
    feed(meter, NOW + 900, NOW + 1200, 4600)  # a third of the next quarter
    document = json.loads(json.dumps(meter.state.to_doc()))
    restored = Meter(load_profile(), MeterState.from_doc(document))
    assert restored.table_bytes(bt(23), NOW) == meter.table_bytes(bt(23), NOW)
    feed(restored, NOW + 1200, NOW + 1800, 4600)
    assert demand.source_value(restored, 88) == 4600


def test_a_clock_set_back_ends_the_sub_interval_at_the_new_clock_s_boundary(meter):
    configure(meter)
    feed(meter, NOW, NOW + 1800, 2300)
    meter.move_clock(NOW + 1800, NOW - 1740)  # BP10: the meter clock to 23:31 UTC the day before
    assert demand.next_due(meter, NOW + 1800) == NOW - 900  # 23:45 on the meter clock
    feed(meter, NOW + 1800, NOW + 1800 + 840, 2300, step=60)  # 14 minutes to it
    assert demand.source_value(meter, 88) == round(2300 * 14 / 15)
    assert demand.next_due(meter, NOW + 2640) == NOW


# ---- through the engine -------------------------------------------------------------------------


def test_injected_quantities_drive_demand_through_the_engine(meter):
    configure(meter)
    quantities.apply(meter, {"voltage": 230, "current": 10, "pf": 1}, NOW)
    meter.advance(NOW + 1800)
    quantities.apply(meter, {"current": 20}, NOW + 1800)
    meter.advance(NOW + 3600)
    assert demand.source_value(meter, 88) == 4600 and demand.source_value(meter, 96) == 4600
    assert record(meter) == ([26, 1, 1, 1, 45], 0, 4600, 4600)  # 230 V x 20 A
    assert record(meter, index=2)[3] == 0  # no reactive power at PF 1


def test_firmware_before_3_10_has_demands_without_counter_or_cumulative_demand():
    meter = Meter(load_profile(overrides=["identity.firmware_version=3.00.00"]))
    configure(meter)
    assert meter.table_bytes(bt(21), NOW)[:5] == bytes([0x03, 0x0C, 2, 15, 4])  # OPG p.20
    feed(meter, NOW, NOW + 900, 2300)
    raw = meter.table_bytes(bt(23), NOW)
    assert len(raw) == 5 * (SUMS + 4 * (5 + 4))  # no counter; DmdRcd: event time, demand
    assert list(raw[SUMS:SUMS + 5]) == [26, 1, 1, 1, 15] and i32(raw, SUMS + 5) == 2300
