"""Metering procedures (meter_emu/procedures/metering.py) through the optical port: EP04 self
read, EP05 tariff, EP11/EP52 load profile configuration, EP32/EP33/EP34 demand, EP64 previous
season data, EP44 outage counters, EP45 power quality records. Each call goes through BT07/BT08;
effects are read back from the tables (and BT74)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from conftest import bt07, MK, RK, LinkClient

from meter_emu.device.access import CONFIGURERS
from meter_emu.device.alarms import ALARMS
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.procedures import PROCEDURES
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, bt, et
from meter_emu.metering import quantities
from meter_emu.tables import load_profile as lp_tables
from meter_emu.tables import registers

OK, INVALID, CONFLICT, NO_AUTH = 0, 2, 3, 5
BT23_SIZE = 4 * 15 * 5  # 15 summations, totals + 4 tiers (default profile)
#: BT23 once EP32 configured the 4 default demands: reset counter, then totals and 4 tiers of
#: 15 summations and 4 demand records (time 5, cumulative 4, continuous cumulative 4, demand 4)
BT23_DEMANDS_SIZE = 1 + 5 * (4 * 15 + 4 * 17)
IDT_OFFSET = 116  # ET04 IDT Version (MEP p.64)
ET41_CURRENT_ENTRIES = 1 + 3 * 17 + 6  # ET36: the fourth record's Current Entries (MEP p.109)
LOCAL_START = [26, 1, 1, 1, 0]  # ManualClock 2026-01-01 00:00 UTC, local = UTC + 60 min


def ep(n: int) -> int:
    return 2048 + n



_PSN = itertools.cycle(range(1, 255))


def call(client, number: int, params: bytes = b"") -> tuple[int, bytes]:
    """Run a procedure; (result code, response data) from BT08."""
    psn = next(_PSN)
    assert client.write(7, bt07(number, psn, params)) == b"\x00"
    bt08 = client.read(8)
    assert bt08[:3] == number.to_bytes(2, "little") + bytes([psn])
    return bt08[3], bt08[4:]


PROCEDURE_INVOKED = 9  # logged by the BT07 mechanism after every call


def logged(client, meter) -> list[tuple[int, int, int]]:
    """BT74's entries as (event, argument, user ID), oldest first, but 'Procedure Invoked'."""
    layout = CATALOG[bt(74)].layout_for(meter)
    entries = [e for e in layout.parse(client.read(bt(74))).entries
               if e.time is not None and e.event["number"] != PROCEDURE_INVOKED]
    return [(e.event["number"], e.argument, e.user_id)
            for e in sorted(entries, key=lambda e: e.sequence_number)]


def alarm(client, name: str) -> bool:
    offset, bit = ALARMS[name]
    return bool(client.read(bt(3))[offset] >> bit & 1)


def u16(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 2], "little")


def u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 4], "little")


def client_for(clock, *overrides: str) -> tuple[Meter, LinkClient]:
    meter = Meter(load_profile(overrides=list(overrides)))
    client = LinkClient(optical_protocol(meter, clock))
    client.logon(MK)
    return meter, client


@pytest.fixture
def mk(client):
    client.logon(MK)
    return client


@pytest.fixture
def configured_bt21(monkeypatch):
    """BT21 publishing two self reads without demands (EP32 would configure demands too)."""
    table = CATALOG[bt(21)]

    def render(meter, now):
        values = table.render(meter, now)
        values.update(self_reads=2)
        return values

    monkeypatch.setitem(CATALOG, bt(21), dataclasses.replace(table, render=render))


@pytest.mark.parametrize("number", [4, 5, 11, 32, 33, 34, 44, 45, 52, 64])
def test_declared_with_configuring_keys_and_listed_in_bt00(mk, meter, number):
    proc = PROCEDURES[ep(number)]
    assert proc.execute == CONFIGURERS and proc.effect
    bt00 = CATALOG[bt(0)].layout_for(meter).parse(mk.read(bt(0)))
    assert number in bt00.extended_procedures_used


@pytest.mark.parametrize("number, params", [
    (4, b""), (5, b"\x01"), (11, b"\x00"), (32, bytes([0, 0, 0, 15, 1, 0])), (33, b"\x0f\x01"),
    (34, b""), (44, b""), (45, b""), (52, bytes([1, 0, 5, 0])), (64, b""),
])
def test_read_only_key_is_refused(client, meter, number, params):
    client.logon(RK)
    before = {t: meter.table_bytes(t, 0.0) for t in (bt(23), bt(26), et(4), bt(61), et(41))}
    assert call(client, ep(number), params) == (NO_AUTH, bytes(12))
    assert {t: meter.table_bytes(t, 0.0) for t in before} == before
    assert not set(meter.state.subsystems) & {"self_read", "demand", "tariff", "load_profile"}


# ---- EP04 Record Self-Read ------------------------------------------------------------------


def test_ep04_counts_the_self_read_raises_the_alarm_and_logs_it(mk, meter):
    assert not alarm(mk, "self_read_occurred")
    assert call(mk, ep(4)) == (OK, b"\x01\x00" + bytes(10))  # the self read's sequence number
    # BT21.2 = 0: nothing kept, but the never-reset sequence number moves (OPG p.28)
    assert mk.read(bt(26)) == bytes([0, 0, 0, 1, 0, 0])
    assert alarm(mk, "self_read_occurred")
    assert (65, 0, 1) in logged(mk, meter) and (21, 0, 1) in logged(mk, meter)
    assert call(mk, ep(4))[0] == OK
    assert mk.read(bt(26))[3:5] == b"\x02\x00"
    assert [e for e, _, _ in logged(mk, meter)].count(21) == 2
    assert [e for e, _, _ in logged(mk, meter)].count(65) == 1  # the alarm is still latched


def test_ep04_fills_bt26_as_a_circular_list(mk, meter, configured_bt21, clock):
    entry = 5 + 1 + BT23_SIZE  # STIME_DATE, season, BT23 (no BIDN: no demands)
    meter.state.registers["fwd_active_wh"] = 1000
    assert call(mk, ep(4))[0] == OK
    clock.advance(3600)
    meter.state.registers["fwd_active_wh"] = 2000
    assert call(mk, ep(4))[0] == OK
    raw = mk.read(bt(26))
    assert len(raw) == 6 + 2 * entry
    # list type circular, 2 valid, last element 1, sequence 2, 2 unread (OPG p.28-29)
    assert raw[:6] == bytes([0x04, 2, 1, 2, 0, 2])
    first, second = raw[6:6 + entry], raw[6 + entry:]
    assert first[:6] == bytes(LOCAL_START + [0]) and second[:5] == bytes([26, 1, 1, 2, 0])
    assert u32(first, 6) == 1000 and u32(second, 6) == 2000
    assert second[6:] == mk.read(bt(23))  # the BT23 image at that moment
    # a third self read overwrites element 0, an unread entry: overflow (bit 1)
    meter.state.registers["fwd_active_wh"] = 3000
    assert call(mk, ep(4))[1][:2] == b"\x03\x00"
    raw = mk.read(bt(26))
    assert raw[:6] == bytes([0x06, 2, 0, 3, 0, 2])
    assert u32(raw, 6 + 6) == 3000 and u32(raw, 6 + entry + 6) == 2000
    # BP05 on LIST 2 (the self-read list) takes one read entry and clears the overflow flag
    assert call(mk, 5, bytes([2, 1, 0]))[0] == OK
    assert mk.read(bt(26))[:6] == bytes([0x04, 2, 0, 3, 0, 1])


def test_ep04_entries_carry_the_bidn_once_demands_are_configured(mk):
    assert call(mk, ep(32), bytes([0x34, 0x12, 2, 15, 1, 0]))[0] == OK
    assert call(mk, ep(4))[0] == OK
    raw = mk.read(bt(26))
    assert len(raw) == 6 + 2 * (2 + 5 + 1 + BT23_DEMANDS_SIZE)
    assert raw[6:8] == b"\x34\x12" and list(raw[8:13]) == LOCAL_START
    assert raw[13 + 1:13 + 1 + BT23_DEMANDS_SIZE] == mk.read(bt(23))


# ---- EP05 Set Tariff ------------------------------------------------------------------------


def bt55_tier(client) -> tuple[int, int]:
    """BT55.7 (MEP p.230-231): Current Tier UINT(0..2), Tier Drive UINT(6..7)."""
    status = u16(client.read(bt(55)), 7)
    return status & 0x07, status >> 6 & 0x03


def test_ep05_forces_the_tier_and_releases_it(mk, meter):
    assert bt55_tier(mk) == (0, 0)
    assert call(mk, ep(5), b"\x02")[0] == OK
    assert bt55_tier(mk) == (2, 2)  # tier 2, drive 2 "set manually with hold on"
    assert logged(mk, meter)[-2:] == [(25, 2, 1), (27, 2, 1)]
    assert call(mk, ep(5), b"\x02")[0] == OK  # the same tier: a rate change, no tier switch
    assert logged(mk, meter)[-1] == (25, 2, 1)
    assert [e for e, _, _ in logged(mk, meter)].count(27) == 1
    assert call(mk, ep(5), b"\xff")[0] == OK  # released: back to the calendar's tier 0
    assert bt55_tier(mk) == (0, 0)
    assert logged(mk, meter)[-2:] == [(25, 255, 1), (27, 0, 1)]


@pytest.mark.parametrize("params", [b"\x04", b"\xfe", b""])
def test_ep05_refuses_a_tier_the_meter_lacks(mk, meter, params):
    assert call(mk, ep(5), params)[0] == INVALID
    assert bt55_tier(mk) == (0, 0)
    assert 25 not in [e for e, _, _ in logged(mk, meter)]


# ---- EP11 Configure/Reset Load Profile ------------------------------------------------------


def _recorded(meter, index: int = 0) -> None:
    """As if the recording engine had filled five blocks and overflowed."""
    statuses = lp_tables.lp_state(meter).setdefault("status", [])
    statuses.extend({} for _ in range(index + 1 - len(statuses)))
    statuses[index] = dict(overflow=True, valid_blocks=5, last_block=4, last_block_sequence=5,
                           unread_blocks=3, valid_intervals=10)
    meter.raise_alarm("load_profile_overflow")
    meter.raise_alarm("lp_set1_unread")


def test_ep11_reset_clears_bt63_and_bumps_the_idt_version(mk, meter):
    _recorded(meter)
    before = mk.read(bt(63))
    assert before == bytes([0x26, 5, 0, 4, 0, 5, 0, 0, 0, 3, 0, 10, 0])
    assert mk.read(et(21))[14:20] == bytes([5, 0, 10, 0, 4, 0])  # ET21 follows BT63
    idt = mk.read(et(4))[IDT_OFFSET]
    geometry = mk.read(bt(61))
    assert call(mk, ep(11), b"\x00")[0] == OK
    # no valid or unread blocks, overflow cleared; the block sequence number carries on
    assert mk.read(bt(63)) == bytes([0x24, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    assert mk.read(bt(61)) == geometry  # the configuration is kept
    assert not alarm(mk, "load_profile_overflow") and not alarm(mk, "lp_set1_unread")
    assert mk.read(et(4))[IDT_OFFSET] == idt + 1
    assert alarm(mk, "dimension_change")
    assert logged(mk, meter)[-1] == (88, 2059, 1)
    assert call(mk, ep(11), b"\x00")[0] == OK  # every run counts, the alarm stays latched
    assert mk.read(et(4))[IDT_OFFSET] == idt + 2
    assert logged(mk, meter)[-1] == (88, 2059, 1)


def test_ep11_configures_a_data_set(mk, meter):
    _recorded(meter)
    et42 = mk.read(et(42))
    # data set 1: 10 blocks, 60-minute intervals, 2 channels recording sources 0 and 8
    assert call(mk, ep(11), bytes([1, 10, 0, 60, 2, 0, 8]))[0] == OK
    block = 5 + 3 + 24 * (2 // 2 + 1 + 4 * 2)  # End Time, simple status, 24 intervals
    assert mk.read(bt(61)) == (10 * block).to_bytes(4, "little") + bytes.fromhex(
        "000C 20 0A00 1800 02 3C")
    assert mk.read(bt(62)) == bytes.fromhex("000000 000800 20")
    assert len(mk.read(bt(64), 0, 8)) == 8 and len(meter.table_bytes(bt(64), 0.0)) == 10 * block
    et21 = mk.read(et(21))
    assert u32(et21, 8) == block and et21[28:32] == bytes([2, 60, 0, 8])
    assert mk.read(bt(63))[:13] == bytes([0x24, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    assert mk.read(et(42)) != et42
    assert logged(mk, meter)[-1] == (88, 2059, 1)
    # a daily interval (BT61.12 code 84): one interval per block
    assert call(mk, ep(11), bytes([1, 2, 0, 84, 1, 7]))[0] == OK
    assert mk.read(bt(61))[7:13] == bytes.fromhex("0200 0100 01 54")


def test_ep11_configures_and_switches_off_further_data_sets(clock):
    meter, client = client_for(clock, "identity.firmware_version=3.50.00")
    assert len(meter.table_bytes(bt(65), 0.0)) == 0
    assert call(client, ep(11), bytes([2, 3, 0, 15, 1, 4]))[0] == OK
    assert client.read(bt(61))[13:19] == bytes.fromhex("0300 6000 01 0F")
    assert len(meter.table_bytes(bt(65), 0.0)) == 3 * (5 + 12 + 96 * 5)
    assert call(client, ep(11), bytes([2, 0, 0, 0, 0]))[0] == OK
    assert client.read(bt(61))[13:19] == bytes(6)
    assert len(meter.table_bytes(bt(65), 0.0)) == 0


@pytest.mark.parametrize("params", [
    bytes([2, 10, 0, 15, 1, 0]),  # firmware 3.10 has one data set
    bytes([1, 0, 0, 15, 1, 0]),  # data set 1 cannot be switched off
    bytes([1, 10, 0, 7, 1, 0]),  # 7 minutes does not divide the hour
    bytes([1, 10, 0, 0, 1, 0]),  # no interval
    bytes([1, 10, 0, 15, 0]),  # no channel
    bytes([1, 10, 0, 15, 17]) + bytes(17),  # 17 channels
    bytes([1, 10, 0, 15, 2, 0, 112]),  # a mapped source: EP52's business
    bytes([1, 10, 0, 15, 1, 85]),  # an unused source ID
    bytes([1, 10, 0, 15, 2, 0]),  # a source missing
    bytes([1, 0xFF, 0xFF, 1, 16]) + bytes(range(16)),  # more than BT60's memory length
    b"",
])
def test_ep11_refuses_invalid_configurations(mk, meter, params):
    tables = {t: mk.read(t) for t in (bt(61), bt(62), et(4))}
    assert call(mk, ep(11), params)[0] == INVALID
    assert {t: mk.read(t) for t in tables} == tables
    assert 88 not in [e for e, _, _ in logged(mk, meter)]


# ---- EP52 Configure Load Profile Channel Source ---------------------------------------------


def test_ep52_changes_a_standard_channel_source(mk, meter):
    idt = mk.read(et(4))[IDT_OFFSET]
    assert call(mk, ep(52), bytes([1, 1, 15, 0]))[0] == OK
    assert mk.read(bt(62)) == bytes.fromhex("000000 000F00 000200 000300 20")
    assert mk.read(et(21))[30:34] == bytes([0, 15, 2, 3])
    assert mk.read(bt(61))[7:13] == bytes.fromhex("2800 6000 04 0F")  # geometry unchanged
    assert mk.read(et(4))[IDT_OFFSET] == idt + 1  # ET42 lists the channel sources
    assert logged(mk, meter)[-1] == (88, 2100, 1)


def test_ep52_maps_an_extended_source_through_et66(mk, meter):
    assert call(mk, ep(52), bytes([1, 2]) + (0x4001).to_bytes(2, "little"))[0] == OK
    assert mk.read(bt(62))[6:9] == bytes([0, 114, 0])  # mapped source 112 + channel 2
    et66 = mk.read(et(66))
    assert u16(et66, 2 * 2) == 0x4001 and et66.count(0) == len(et66) - 2
    assert call(mk, ep(52), bytes([1, 2, 2, 0]))[0] == OK  # back to a standard source
    assert mk.read(bt(62))[6:9] == bytes([0, 2, 0]) and mk.read(et(66)) == bytes(128)


@pytest.mark.parametrize("params", [
    bytes([1, 4, 5, 0]),  # the data set has 4 channels
    bytes([2, 0, 5, 0]),  # firmware 3.10 has one data set
    bytes([1, 0, 112, 0]),  # mapped IDs are the meter's to assign
    bytes([1, 0, 200, 0]),  # reserved source ID
    bytes([1, 0]) + (0x5001).to_bytes(2, "little"),  # not the M-Bus extended format
    bytes([1, 0]) + (0x4000).to_bytes(2, "little"),  # no data type
    bytes([1, 0]) + (0x4901).to_bytes(2, "little"),  # no such device
    bytes([1, 0, 5]),
])
def test_ep52_refuses_invalid_parameters(mk, meter, params):
    tables = {t: mk.read(t) for t in (bt(62), et(66), et(4))}
    assert call(mk, ep(52), params)[0] == INVALID
    assert {t: mk.read(t) for t in tables} == tables


@pytest.fixture
def welmec(monkeypatch):
    """ET54.71.0 Welmec 11.2 compliance on."""
    table = CATALOG[et(54)]

    def render(meter, now):
        values = table.render(meter, now)
        values.status_flags["welmec_11_2_compliance"] = 1
        return values

    monkeypatch.setitem(CATALOG, et(54), dataclasses.replace(table, render=render))


def test_ep52_with_welmec_needs_room_in_et75(mk, meter, welmec):
    before = mk.read(bt(62))
    assert call(mk, ep(52), bytes([1, 1, 15, 0]))[0] == CONFLICT  # ET75 has no entries
    assert mk.read(bt(62)) == before


def test_ep52_with_welmec_logs_the_previous_sources_in_et75(mk, meter, welmec, monkeypatch,
                                                            clock):
    monkeypatch.setattr(lp_tables, "ET75_CURRENT_ENTRIES", 1)
    clock.advance(5 * 60)
    assert call(mk, ep(52), bytes([1, 1, 15, 0]))[0] == OK
    et75 = mk.read(et(75))
    assert et75[:6] == bytes([0x04, 1, 0, 1, 0, 1])
    entry = et75[6:]
    assert len(entry) == 143 and entry[:5] == bytes([26, 1, 1, 0, 15])  # end of the interval
    assert [u16(entry, 5 + 2 * c) for c in range(5)] == [0, 1, 2, 3, 0]  # the sources before
    assert entry[37:47] == bytes(10)  # no demand sources, interval 0 x 0
    assert entry[47:53] == b"CH01\x00\x40"  # ET62's channel display then
    assert mk.read(bt(62))[3:6] == bytes([0, 15, 0])
    assert alarm(mk, "mfg_log_entry_available")
    assert call(mk, ep(52), bytes([1, 2, 15, 0]))[0] == CONFLICT  # full: not circular
    assert mk.read(bt(62))[6:9] == bytes([0, 2, 0])


# ---- EP32 / EP33 / EP34 demand --------------------------------------------------------------


def test_ep32_configures_et41_bt13_and_bumps_the_idt_version(mk, meter):
    idt = mk.read(et(4))[IDT_OFFSET]
    assert mk.read(et(41)) == bytes([4, 0, 0, 0, 0, 0])
    assert call(mk, ep(32), bytes([0x34, 0x12, 2, 15, 1, 3]))[0] == OK
    assert len(mk.read(et(41))) == 6 + 3 * (11 + BT23_DEMANDS_SIZE)
    assert u16(mk.read(et(36)), ET41_CURRENT_ENTRIES) == 3
    assert mk.read(et(4))[IDT_OFFSET] == idt + 1
    assert logged(mk, meter)[-1] == (88, 2080, 1)
    assert registers.configured_self_reads(meter) == 2  # for BT21.2
    assert mk.read(bt(21))[2:5] == bytes([2, 15, 4])  # self reads, summations, demands
    # BT13.4/BT13.5 (MEP p.114), one interval record per demand
    assert mk.read(bt(13)) == bytes([0, 0, 0, 0]) + bytes([15, 1]) * 4


@pytest.mark.parametrize("params", [
    bytes([0, 0, 2, 7, 1, 0]),  # sub-interval does not divide 60
    bytes([0, 0, 2, 15, 3, 0]),  # 45-minute demand interval
    bytes([0, 0, 2, 15, 0, 0]),  # no multiplier
    bytes([0, 0, 254, 15, 1, 0]),  # BT20.2 allows 253 self reads
    bytes([0, 0, 2, 15, 1]),
])
def test_ep32_refuses_invalid_parameters(mk, meter, params):
    tables = {t: mk.read(t) for t in (et(41), et(4))}
    assert call(mk, ep(32), params)[0] == INVALID
    assert {t: mk.read(t) for t in tables} == tables


def test_ep33_changes_the_interval_with_a_demand_reset(mk, meter):
    assert call(mk, ep(33), b"\x05\x03")[0] == CONFLICT  # demand not configured yet
    assert call(mk, ep(32), bytes([7, 0, 2, 15, 1, 2]))[0] == OK
    idt = mk.read(et(4))[IDT_OFFSET]
    assert call(mk, ep(33), b"\x05\x07")[0] == INVALID  # 35 minutes
    assert call(mk, ep(33), b"\x05\x03")[0] == OK
    et41 = mk.read(et(41))
    assert et41[:6] == bytes([4, 1, 0, 1, 0, 1])
    assert et41[8:11] == bytes([1, 7, 0])  # reason 1 "procedural", BIDN 7 (MEP p.111)
    assert mk.read(et(4))[IDT_OFFSET] == idt + 1
    assert [e[:2] for e in logged(mk, meter)[-2:]] == [(20, 0), (88, 2081)]
    assert mk.read(bt(13)) == bytes([0, 0, 0, 0]) + bytes([5, 3]) * 4
    assert mk.read(bt(23))[0] == 1  # BT23's Nbr Demand Resets


def test_ep34_snapshots_bt23_into_bt25_and_counts_the_reset(mk, meter):
    meter.state.registers.update(fwd_active_wh=4321, rev_active_wh=12)
    assert mk.read(bt(25)) == bytes(6 + BT23_SIZE)
    assert call(mk, ep(34)) == (OK, b"\x01\x00" + bytes(10))
    bt25 = mk.read(bt(25))
    assert list(bt25[:6]) == LOCAL_START + [0] and bt25[6:] == mk.read(bt(23))
    assert u32(bt25, 6) == 4321
    assert mk.read(et(41)) == bytes([4, 0, 0, 1, 0, 0])  # no entries kept, the count moves
    assert logged(mk, meter)[-1] == (20, 0, 1)
    meter.state.registers["fwd_active_wh"] = 5000
    assert call(mk, ep(34))[1][:2] == b"\x02\x00"
    assert u32(mk.read(bt(25)), 6) == 5000


def test_ep34_logs_in_et41_and_ep26_takes_the_entries(mk, meter):
    entry = 11 + BT23_DEMANDS_SIZE
    assert call(mk, ep(32), bytes([9, 0, 0, 15, 1, 2]))[0] == OK
    for energy in (100, 200, 300):
        meter.state.registers["fwd_active_wh"] = energy
        assert call(mk, ep(34))[0] == OK
    et41 = mk.read(et(41))
    # circular (bit 2), overflowed (bit 1): 2 valid, newest in element 0, 3 resets, 2 unread
    assert et41[:6] == bytes([0x06, 2, 0, 3, 0, 2])
    newest, older = et41[6:6 + entry], et41[6 + entry:]
    assert u16(newest, 0) == entry and newest[2:5] == bytes([1, 9, 0])
    # the BT23 image: the resets before this one, then the totals
    assert list(newest[5:11]) == LOCAL_START + [0] and newest[11] == 2 and u32(newest, 12) == 300
    assert older[11] == 1 and u32(older, 12) == 200
    assert alarm(mk, "mfg_log_entry_available")
    # EP26 (table ET41, 2 read) leaves none unread and the ET36 alarm clears
    assert call(mk, ep(26), et(41).to_bytes(2, "little") + b"\x02\x00")[0] == OK
    assert mk.read(et(41))[:6] == bytes([0x04, 2, 0, 3, 0, 0])
    assert not alarm(mk, "mfg_log_entry_available")


# ---- EP64 Reset Previous Season Data --------------------------------------------------------


def test_ep64_needs_firmware_4_10(mk, meter):
    meter.state.tables[bt(24)] = bytes([26, 1, 1, 0, 0, 1]) + bytes(BT23_SIZE)
    assert call(mk, ep(64))[0] == CONFLICT
    assert mk.read(bt(24))[:6] == bytes([26, 1, 1, 0, 0, 1])


def test_ep64_resets_bt24(clock):
    meter, client = client_for(clock, "identity.firmware_version=4.10.00")
    size = len(meter.table_bytes(bt(24), 0.0))
    snapshot = bytes([26, 3, 21, 0, 0, 2]) + (777).to_bytes(4, "little")
    meter.state.tables[bt(24)] = snapshot + bytes(size - len(snapshot))  # a season change's
    assert client.read(bt(24))[:10] == snapshot
    assert call(client, ep(64))[0] == OK
    assert client.read(bt(24)) == bytes(size)


# ---- EP44 Reset Power Outage Counters, EP45 Clear Power Quality Records ---------------------


def test_ep44_zeroes_the_outage_counters(mk, meter):
    meter.state.registers.update(power_outage_seconds=3600, power_outage_count=4,
                                 fwd_active_wh=99)
    assert (u32(mk.read(bt(23)), 16), u32(mk.read(bt(23)), 20)) == (3600, 4)
    assert mk.read(et(10))[:8] == (4).to_bytes(4, "little") + (3600).to_bytes(4, "little")
    assert call(mk, ep(44))[0] == OK
    bt23 = mk.read(bt(23))
    assert bt23[16:24] == bytes(8) and u32(bt23, 0) == 99  # energy untouched
    assert mk.read(et(10))[:8] == bytes(8)


def test_ep45_clears_et09_records_and_keeps_its_settings(mk, meter, clock):
    layout = CATALOG[et(9)].layout_for(meter)
    thd_threshold = 10 * 18 + 149  # V-THD threshold (MEP p.74), ET04.53 = 10
    assert mk.write(et(9), b"\x0c", offset=3) == b"\x00"  # sag1 threshold 12 %
    assert mk.write(et(9), (500).to_bytes(2, "little"), offset=0) == b"\x00"  # long outage
    assert mk.write(et(9), (50).to_bytes(2, "little"), offset=thd_threshold) == b"\x00"
    # a one-minute outage, then a sag deep enough to be a phase loss, at 49.9 Hz and 8 % THD
    quantities.apply(meter, {"voltage": 0}, clock.now() + 60)
    quantities.apply(meter, {"voltage": 130, "frequency": 49.9, "voltage_thd": 8},
                     clock.now() + 120)
    clock.advance(300)
    before = layout.parse(mk.read(et(9)))
    assert before.power_outage_records[0].power_off_duration == 60
    assert before.short_outage_count == 1 and before.l1_sag1_events == 1
    assert before.min_frequency == 49_900 and before.phase_loss["phase_l1_loss"] == 1
    assert before.thd_records[0].thd_event_records[0].event_count == 1
    assert call(mk, ep(45))[0] == OK
    after = layout.parse(mk.read(et(9)))
    assert after.sag1_threshold == 12 and after.long_outage_duration_threshold == 500
    assert after.thd_records[0].thd_time_threshold == 10  # the THD settings stay
    assert after.thd_records[0].thd_threshold == 50
    assert after.phase_loss["phase_l1_loss"] == 1  # a present condition, not a record
    assert after.short_outage_count == 0 and after.l1_sag1_events == 0
    assert after.min_frequency == 0 and after.min_freq_date_time is None
    assert after.power_outage_records[0].power_off_duration == 0
    assert after.thd_records[0].thd_event_records[0].event_count == 0
