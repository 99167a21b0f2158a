"""Display tables BT30, BT33, ET07, ET67, ET77 through the optical port, against the guides
(MEP = MEP Client Developer's Guide 2022, OPG = Optical Port Programmer's Guide 2021)."""

from __future__ import annotations

import pytest
from conftest import MK, PK, RK

from meter_emu.device.access import Key
from meter_emu.device.errors import ServiceError
from meter_emu.device.meter import Meter
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, bt, et
from meter_emu.tables.catalog import WriteContext

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
NOW = 1_767_225_600.0
DISPLAY_TABLES = [bt(30), bt(33), et(7), et(67), et(77)]
WRITABLE = [bt(33), et(7), et(67), et(77)]


@pytest.mark.parametrize("table_id", DISPLAY_TABLES)
def test_full_and_partial_reads_match_the_layout(client, meter, table_id):
    client.logon(RK)
    layout = CATALOG[table_id].layout_for(meter)
    full = client.read(table_id)
    assert len(full) == layout.sizeof()
    layout.parse(full)
    assert client.read(table_id, 3, 4) == full[3:7]


@pytest.mark.parametrize("table_id", DISPLAY_TABLES)
def test_mep_keys_read_and_only_mak_writes(meter, table_id):
    meter.read_table(table_id, Key.MBK, NOW)
    assert Key.MBK not in CATALOG[table_id].write
    assert (Key.MAK in CATALOG[table_id].write) == (table_id in WRITABLE)  # MEP p.260-262


@pytest.mark.parametrize("table_id", WRITABLE)
def test_rk_cannot_write(client, table_id):
    client.logon(RK)
    assert client.write(table_id, b"\x06", 0) == ISC


def test_bt30_matches_the_guide(client):
    client.logon(RK)
    # MEP p.220-221: on time only; 962 sources of 2 bytes; 30 items, 1 primary list, no secondary
    assert client.read(bt(30)) == bytes.fromhex("01 C203 02 1E00 01 0000 00")
    assert client.write(bt(30), b"\x00", 0) == IAR


def test_bt33_defaults_match_the_guide(client):
    client.logon(RK)
    bt33 = client.read(bt(33))
    assert len(bt33) == 3 + 2 * 30  # ARRAY[BT30.6 = 1] of DispListDescRcd with BT30.4 sources
    # MEP p.221-222: On Time 6, Default List 1, 3 items: 0x2000, 0x2001, 0x0000
    assert bt33[:9] == bytes.fromhex("06 10 03 0020 0120 0000")
    assert not any(bt33[9:])


def test_bt33_write_reads_back(client):
    client.logon(PK)
    new = bytes([10, 0x10, 2]) + bytes.fromhex("0520 0620")
    assert client.write(bt(33), new, 0) == OK
    assert client.read(bt(33), 0, 7) == new


@pytest.mark.parametrize("data, offset", [
    (b"\x03", 0),  # On Time 3 s: neither 0 nor 6..15
    (bytes([31]), 2),  # 31 items in a 30-item list
])
def test_bt33_invalid_values_change_nothing(client, data, offset):
    client.logon(MK)
    before = client.read(bt(33))
    assert client.write(bt(33), data, offset) == ERR
    assert client.read(bt(33)) == before


def test_bt33_keeps_the_fields_the_meter_fixes(client):
    client.logon(MK)
    assert client.write(bt(33), bytes([0x76, 0x23]), 0) == OK  # off time 7, hold 3, list 2
    assert client.read(bt(33), 0, 2) == bytes([0x06, 0x10])


def test_et77_is_an_empty_alternate_display_list(client):
    client.logon(MK)
    et77 = client.read(et(77))
    assert et77[:3] == bytes([0x06, 0x20, 0]) and not any(et77[3:])
    assert len(et77) == len(client.read(bt(33)))
    assert client.write(et(77), bytes([7, 0x20, 1, 0x00, 0x20]), 0) == OK
    assert client.read(et(77), 0, 5) == bytes([7, 0x20, 1, 0x00, 0x20])
    assert client.write(et(77), b"\x05", 0) == ERR


def test_et07_layout_defaults_and_rollover_digit(client):
    client.logon(MK)
    et07 = client.read(et(7))
    assert len(et07) == 30 * 6 + 1
    assert et07[30 * 6] == 9  # ET42: Accumulator Rollover Digit at ET07.BT30.4*6 (MEP p.119)
    assert et07[:6] == b"    " + bytes([0, 0xB0])  # blank ID, 6 digits, leading zeros hidden
    assert client.write(et(7), b"\x07", 30 * 6) == OK
    assert client.read(et(7), 30 * 6, 1) == b"\x07"


@pytest.mark.parametrize("data, offset", [
    (b"\x04", 30 * 6),  # rollover digit outside 5..9
    (bytes([0x48]), 5),  # 9 digits before the decimal point
    (bytes([0x3B]), 5),  # 7 before + 3 after = 10 digits
    (bytes([0x10]), 4),  # decimal point bit 4 on a 4-character ID code
])
def test_et07_invalid_formats_change_nothing(client, data, offset):
    client.logon(MK)
    before = client.read(et(7))
    assert client.write(et(7), data, offset) == ERR
    assert client.read(et(7)) == before


def test_et07_id_codes_grow_to_five_characters_on_gen4():
    gen4 = Meter(load_profile(overrides=["identity.firmware_version=4.30.01"]))
    raw = gen4.table_bytes(et(7), NOW)
    assert len(raw) == 30 * 7 + 1 and raw[:7] == b"     " + bytes([0, 0xB0])
    gen4.write_table(et(7), bytes([0x10]), WriteContext(Key.MK, NOW), 5)
    with pytest.raises(ServiceError):
        gen4.write_table(et(7), bytes([0x20]), WriteContext(Key.MK, NOW), 5)


def test_et67_maps_one_extended_source_per_list_item(client):
    client.logon(MK)
    assert client.read(et(67)) == bytes(60)
    assert client.write(et(67), (0x1234).to_bytes(2, "little"), 4) == OK
    assert client.read(et(67), 4, 2) == bytes.fromhex("3412")
