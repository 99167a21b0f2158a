"""Register tables (meter_emu/tables/registers.py): BT13, BT15, BT16, BT24-BT27, ET12, ET40, ET41,
ET48 and ET80 against the guides' layouts (printed page numbers), access and write checks."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from conftest import MK, PK, RK

from meter_emu.device.access import Key
from meter_emu.device.errors import ResponseCode, ServiceError
from meter_emu.device.meter import Meter
from meter_emu.metering import demand
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, registers
from meter_emu.tables.basic import SUMMATION_SOURCES
from meter_emu.tables.catalog import WriteContext, bt, et

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
TABLES = [bt(13), bt(15), bt(16), bt(24), bt(25), bt(26), bt(27),
          et(12), et(40), et(41), et(48), et(80)]
READ_ONLY = [bt(13), bt(16), bt(25), bt(26), bt(27), et(12), et(41)]
BT23_SIZE = 4 * 15 * 5  # 15 summations, totals + 4 tiers (default profile)


def _int(raw: bytes, offset: int, size: int = 4) -> int:
    return int.from_bytes(raw[offset:offset + size], "little", signed=True)


#: BT23 with two configured demands: reset counter, then totals and 4 tiers of 15 summations
#: and 2 demand records (time 5, cumulative 4, continuous cumulative 4, demand 4)
BT23_TWO_DEMANDS = 1 + 5 * (4 * 15 + 2 * 17)


@pytest.fixture
def configured_bt21(meter, monkeypatch):
    """Two self reads and two demands, as EP32 and ET48 configure them (ET42 lists the demands
    as the issue-5 demand report asks tables/extended.py to)."""
    et42 = CATALOG[et(42)]

    def render(meter, now):
        values = et42.render(meter, now)
        values.update(demand.et42_fields(meter))
        return values

    monkeypatch.setitem(CATALOG, et(42), dataclasses.replace(et42, render=render))
    ctx = WriteContext(Key.MK, NOW)
    meter.write_table(et(48), bytes([0x03, 8, 0xFF, 0xFF, 0x03, 9, 0xFF, 0xFF]), ctx)
    ep32 = (2048 + 32).to_bytes(2, "little") + bytes([1, 0, 0, 2, 15, 1, 0])
    meter.write_table(bt(7), ep32, ctx)
    assert meter.table_bytes(bt(8), NOW)[3] == 0
    assert meter.table_bytes(bt(21), NOW)[2:6] == bytes([2, 15, 2, 0])


# ---- every table: reads, access ------------------------------------------------------


@pytest.mark.parametrize("table_id", TABLES)
def test_full_read_has_the_layout_size_and_partial_reads_are_slices(client, meter, table_id):
    client.logon(RK)
    full = client.read(table_id)
    layout = CATALOG[table_id].layout_for(meter)
    assert len(full) == layout.sizeof()
    assert layout.build(layout.parse(full)) == full
    assert full == meter.table_bytes(table_id, client.now)
    assert client.read(table_id, 1, 3) == full[1:4]


@pytest.mark.parametrize("table_id", READ_ONLY)
def test_read_only_tables_refuse_writes(client, table_id):
    client.logon(MK)
    assert client.write(table_id, b"\x00") == IAR


def test_mep_keys_only_where_the_mep_guide_gives_them():
    # Access boxes: BT15 p.200, BT24 p.211, BT25 p.212, BT26 p.213, BT27 p.214, ET41 p.110,
    # ET80 p.184; ET40: Tables C.1/C.4 (p.261, p.264). The others are not in the MEP guide.
    mep = {bt(15), bt(24), bt(25), bt(26), bt(27), et(40), et(41), et(80)}
    for table_id in TABLES:
        table = CATALOG[table_id]
        assert {Key.MK, Key.PK, Key.RK, Key.PLC} <= table.read, table.label
        assert (Key.MBK in table.read) == (Key.MAK in table.read) == (table_id in mep), table.label
        assert not table.pending
    assert CATALOG[bt(15)].write == {Key.MK, Key.MAK, Key.PLC}
    assert CATALOG[bt(24)].write == {Key.MK, Key.PK, Key.MAK, Key.PLC}
    assert CATALOG[et(80)].write == CATALOG[et(40)].write == {Key.MK, Key.PK, Key.MAK, Key.PLC}
    assert CATALOG[et(48)].write == {Key.MK, Key.PK, Key.PLC}


# ---- BT13 Demand Control ----------------------------------------------------------------


def test_bt13_is_sized_by_the_configured_demands(meter, configured_bt21):
    assert meter.table_bytes(bt(13), NOW) == bytes(4) + bytes([15, 1]) * 2
    # C12.19 with MEP p.114: sub-interval at BT13.4, multiplier at BT13.5
    layout = CATALOG[bt(13)].layout_for(meter)
    raw = layout.build(dict(reset_exclusion=0, power_fail_recognition_time=0,
                            power_fail_exclusion=0, cold_load_pickup=0,
                            intervals=[dict(sub_interval=15, interval_multiplier=1)] * 2))
    assert raw[4] == 15 and raw[5] == 1


def test_bt13_is_empty_while_demands_are_not_configured(meter):
    assert meter.table_bytes(bt(13), NOW) == bytes(4)  # BT21.4 = 0


# ---- BT15 Constants ---------------------------------------------------------------------


def test_bt15_defaults_at_the_documented_offsets(meter):
    raw = meter.table_bytes(bt(15), NOW)  # MEP p.200
    assert len(raw) == 17
    assert _int(raw, 0) == 1 and _int(raw, 4) == 0  # multiplier, offset
    assert raw[8] == 0  # Applied: False
    assert _int(raw, 9) == 1 and _int(raw, 13) == 1  # CT ratio, VT ratio


def test_bt15_write_read_back_and_refusals(client, meter):
    client.logon(MK)
    assert client.write(bt(15), (200).to_bytes(4, "little"), 9) == OK
    assert _int(client.read(bt(15)), 9) == 200
    before = client.read(bt(15))
    assert client.write(bt(15), bytes(4), 13) == ERR  # VT ratio 0
    assert client.read(bt(15)) == before


@pytest.mark.parametrize("password", [PK, RK])
def test_bt15_refuses_pk_and_rk(client, password):
    client.logon(password)
    before = client.read(bt(15))
    assert client.write(bt(15), b"\x05", 9) == ISC
    assert client.read(bt(15)) == before


# ---- BT16 Source Definition ---------------------------------------------------------------


def test_bt16_has_one_flag_byte_per_source_number(meter):
    raw = meter.table_bytes(bt(16), NOW)
    bt22 = meter.table_bytes(bt(22), NOW)
    bt27 = meter.table_bytes(bt(27), NOW)
    used = set(bt22) | set(bt27)
    assert len(raw) == max(used) + 1
    assert all(raw[s] & 0x10 for s in used)  # engineering units
    assert all(raw[s] == 0 for s in range(len(raw)) if s not in used)
    assert raw[0] == 0x18  # Fwd Wh: BT15 constants already applied (MEP p.207)
    assert raw[4] == 0x10  # power-off seconds: no constants
    assert raw[8] == 0x38  # Fwd W: constants still to apply (MEP p.215)
    assert raw[81] == 0x18  # Fwd W post CT/VT


# ---- BT24 / BT25 snapshots ----------------------------------------------------------------


@pytest.mark.parametrize("table_id", [bt(24), bt(25)])
def test_snapshots_are_a_time_a_season_and_a_bt23_image(meter, table_id):
    raw = meter.table_bytes(table_id, NOW)  # MEP p.211-212: time 0, season 5, registers 6
    assert len(raw) == 6 + len(meter.table_bytes(bt(23), NOW)) == 6 + BT23_SIZE
    assert raw == bytes(len(raw))  # nothing recorded yet


def _bt24_image(meter, season=1, value=100):
    sums = [value] * 15
    return CATALOG[bt(24)].layout_for(meter).build(dict(
        time=dt.datetime(2025, 12, 21, 0, 0), season=season,
        registers=dict(totals=sums, tiers=[sums] * 4)))


def test_bt24_write_read_back_and_refusals(client, meter):
    client.logon(MK)
    image = _bt24_image(meter)
    assert client.write(bt(24), image) == OK
    assert client.read(bt(24)) == image
    assert image[:6] == bytes([25, 12, 21, 0, 0, 1])
    assert client.write(bt(24), b"\x04", 5) == ERR  # 4 seasons before firmware 3.50
    assert client.write(bt(24), (-1).to_bytes(4, "little", signed=True), 6) == ERR
    assert client.read(bt(24)) == image


def test_bt24_refuses_rk(client):
    client.logon(RK)
    assert client.write(bt(24), b"\x01", 5) == ISC
    assert client.read(bt(24)) == bytes(6 + BT23_SIZE)


@pytest.mark.parametrize("version, writable", [
    ("3.50.01", True), ("3.70.02", False), ("3.82.00", True), ("4.02.00", True),
    ("4.10.00", False), ("4.30.01", False),
])
def test_bt24_is_read_only_on_firmware_37x_and_410_up(version, writable):
    m = Meter(load_profile(overrides=[f"identity.firmware_version={version}"]))
    image = _bt24_image(m, season=5)
    if writable:
        m.write_table(bt(24), image, WriteContext(Key.MK, NOW))
        assert m.table_bytes(bt(24), NOW) == image
    else:
        with pytest.raises(ServiceError) as refused:
            m.write_table(bt(24), image, WriteContext(Key.MK, NOW))
        assert refused.value.code == ResponseCode.IAR
        assert m.table_bytes(bt(24), NOW) == bytes(len(image))


# ---- BT26 Self Read Data ------------------------------------------------------------------


def test_bt26_is_a_bare_header_while_bt21_has_no_self_reads(meter):
    assert meter.table_bytes(bt(26), NOW) == bytes(6)  # list type FALSE with 0 entries (OPG p.28)


def test_bt26_entries_follow_bt21(meter, configured_bt21):
    raw = meter.table_bytes(bt(26), NOW)
    entry = 2 + 5 + 1 + BT23_TWO_DEMANDS  # BIDN (BT21.4 != 0), STIME_DATE, season, BT23
    assert len(raw) == 6 + 2 * entry
    assert raw[0] == 0x04  # circular list
    layout = CATALOG[bt(26)].layout_for(meter)
    values = layout.parse(raw)
    values.entries[0].update(dict(bidn=0x1234, time=dt.datetime(2026, 1, 1, 0, 0), season=2))
    built = layout.build(values)  # OPG p.28-29: BIDN 6, time 8, season 13, registers 14
    assert built[6:8] == b"\x34\x12" and built[8:13] == bytes([26, 1, 1, 0, 0])
    assert built[13] == 2 and built[14:14 + BT23_TWO_DEMANDS] == bytes(BT23_TWO_DEMANDS)


# ---- BT27 Present Register Selection ------------------------------------------------------


def test_bt27_lists_the_source_of_each_bt28_value(meter):
    raw = meter.table_bytes(bt(27), NOW)
    assert len(raw) == meter.dims.present_values == len(meter.table_bytes(bt(28), NOW)) // 4
    # BT28 value 7 is RMS voltage L1 = source 15, 10 is PF L1 = 18, 11 frequency = 19
    assert raw[7] == 15 and raw[10] == 18 and raw[11] == 19
    assert raw[18:22] == bytes([81, 82, 83, 84]) and raw[26] == 185 and raw[40] == 199


def test_bt27_covers_every_present_value_a_profile_allows():
    m = Meter(load_profile(overrides=["dimensions.present_values=84"]))
    raw = m.table_bytes(bt(27), NOW)
    assert len(raw) == 84 and raw[41] == 202 and raw[55] == 216 and raw[83] == 244
    assert not set(raw) & set(SUMMATION_SOURCES) and len(set(raw)) == 84


# ---- ET12 Total Energy registers ----------------------------------------------------------


def test_et12_has_et04_55_registers_from_the_accumulators(meter):
    meter.state.registers.update(fwd_active_wh=1234, rev_active_wh=56, export_reactive_varh=7)
    raw = meter.table_bytes(et(12), NOW)
    assert meter.table_bytes(et(4), NOW)[55] == 4  # MEP p.58
    assert [_int(raw, i) for i in range(0, 16, 4)] == [1234, 56, 0, 7]


# ---- ET40 Demand Configuration --------------------------------------------------------------


def test_et40_write_read_back_and_refusals(client):
    client.logon(PK)
    assert client.read(et(40)) == bytes(8)  # reset at midnight
    assert client.write(et(40), bytes([23, 30, 0]) + b"\xAA" * 5) == OK
    assert client.read(et(40)) == bytes([23, 30, 0]) + bytes(5)  # reserved bytes stay zero
    assert client.write(et(40), b"\x18", 0) == ERR  # hour 24
    assert client.read(et(40))[:3] == bytes([23, 30, 0])


def test_et40_refuses_rk(client):
    client.logon(RK)
    assert client.write(et(40), b"\x01") == ISC


# ---- ET41 Historical Demand Reset Log -------------------------------------------------------


def test_et41_is_an_empty_circular_log(meter):
    assert meter.table_bytes(et(41), NOW) == b"\x04" + bytes(5)  # list type TRUE (MEP p.110)
    assert registers.demand_reset_entry_size(meter) == 11 + BT23_SIZE


def test_et41_entry_offsets(meter, monkeypatch):
    monkeypatch.setattr(registers, "DEMAND_RESET_LOG_ENTRIES", 1)
    layout = CATALOG[et(41)].layout_for(meter)
    assert layout.sizeof() == 6 + 11 + BT23_SIZE
    values = layout.parse(bytes(layout.sizeof()))
    values.entries[0].update(dict(length=11 + BT23_SIZE, reset_reason=2, bidn=0x0102,
                                  time=dt.datetime(2026, 2, 1, 0, 0), season=3))
    raw = layout.build(values)  # MEP p.111: length 6, reason 8, BIDN 9, time 11, season 16
    assert raw[6:9] == (11 + BT23_SIZE).to_bytes(2, "little") + b"\x02"
    assert raw[9:11] == b"\x02\x01" and raw[11:16] == bytes([26, 2, 1, 0, 0]) and raw[16] == 3


# ---- ET48 demand configuration entries --------------------------------------------------------


def test_et48_write_read_back_and_refusals(client):
    client.logon(MK)
    assert client.read(et(48)) == bytes(4 * 10)  # ET11.23 = 10 entries (MEP p.79)
    entry = bytes([0x03, 8, 15, 0xFF])  # configured maximum of Fwd W, coincident voltage L1
    assert client.write(et(48), entry, 4) == OK
    assert client.read(et(48), 4, 4) == entry
    assert client.write(et(48), bytes([0x01, 85, 0xFF, 0xFF]), 0) == ERR  # 85 is unused
    assert client.write(et(48), bytes([0x01, 240, 0xFF, 0xFF]), 0) == ERR  # 4.30+ source
    assert client.read(et(48)) == bytes(4) + entry + bytes(32)


def test_et48_sources_follow_the_firmware():
    m = Meter(load_profile(overrides=["identity.firmware_version=4.30.01"]))
    m.write_table(et(48), bytes([0x01, 240, 0xFF, 0xFF]), WriteContext(Key.MK, NOW))
    assert m.table_bytes(et(48), NOW)[:4] == bytes([0x01, 240, 0xFF, 0xFF])


def test_et48_refuses_rk(client):
    client.logon(RK)
    assert client.write(et(48), b"\x01") == ISC


# ---- ET80 Average Power Settings ------------------------------------------------------------


def test_et80_defaults_from_the_guide(meter):
    # MEP p.184-185: enabled 0, sub-interval 1 (UINT16 at 1), multiplier 15 at 3, threshold 0 at 4
    assert meter.table_bytes(et(80), NOW) == bytes.fromhex("00 0100 0F 00000000")


def test_et80_write_read_back(client):
    client.logon(MK)
    settings = bytes([1]) + (900).to_bytes(2, "little") + bytes([1]) + (5000).to_bytes(4, "little")
    assert client.write(et(80), settings) == OK
    assert client.read(et(80)) == settings
    assert client.write(et(80), (7200).to_bytes(2, "little"), 1) == OK  # 2 h divides a day
    assert client.read(et(80), 1, 2) == (7200).to_bytes(2, "little")


@pytest.mark.parametrize("offset, data", [
    (0, b"\x02"),  # enabled is 0 or 1
    (1, (7).to_bytes(2, "little")),  # 7 s does not divide a minute
    (1, (90).to_bytes(2, "little")),  # 1.5 min
    (1, (420).to_bytes(2, "little")),  # 7 min does not divide an hour
    (1, (5400).to_bytes(2, "little")),  # 1.5 h
    (1, (18000).to_bytes(2, "little")),  # 5 h does not divide a day
    (1, bytes(2)),  # 0 s
    (3, b"\x10"),  # multiplier 16
    (3, b"\x00"),  # multiplier 0
])
def test_et80_refuses_invalid_settings(client, offset, data):
    client.logon(MK)
    before = client.read(et(80))
    assert client.write(et(80), data, offset) == ERR
    assert client.read(et(80)) == before


def test_et80_refuses_rk(client):
    client.logon(RK)
    assert client.write(et(80), b"\x01") == ISC
