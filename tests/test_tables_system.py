"""System tables ET01, ET02, ET06, ET11, ET17, ET29, ET54, ET55, ET70 against the guides.

OPG = Optical Port Programmer's Guide (2021), MEP = MEP Client Developer's Guide (2022); printed
page numbers. Reads and writes go through the optical port (C12.18 client of conftest.py).
"""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import MK, PK, RK, LinkClient

from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, et

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
SYSTEM_TABLES = [et(n) for n in (1, 2, 6, 11, 17, 29, 54, 55, 70)]
NOW = 1_767_225_600.0


def _meter(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=list(overrides)))


def _client(meter: Meter, clock, key: bytes = MK) -> LinkClient:
    client = LinkClient(optical_protocol(meter, clock))
    client.logon(key)
    return client


def _u16(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 2], "little")


# ---- every table: size, decoding, partial reads -------------------------------------------

@pytest.mark.parametrize("firmware", ["3.10.21", "4.30.01"])
@pytest.mark.parametrize("table_id", SYSTEM_TABLES)
def test_full_read_has_the_layout_size_and_partial_reads_are_slices(table_id, firmware, clock):
    meter = _meter(f"identity.firmware_version={firmware}")
    client = _client(meter, clock)
    layout = CATALOG[table_id].layout_for(meter)
    full = client.read(table_id)
    assert len(full) == layout.sizeof()
    assert layout.build(layout.parse(full)) == full
    count = min(10, len(full) - 1)
    assert client.read(table_id, 1, count) == full[1:1 + count]
    assert client.read(table_id, len(full) - 2, 2) == full[-2:]


@pytest.mark.parametrize("table_id", [et(n) for n in (11, 17, 29, 54, 70)])
def test_status_tables_are_read_only(client, table_id):
    client.logon(MK)
    assert client.write(table_id, b"\x01") == IAR


# ---- ET01 Pulse Output Options (designed) -------------------------------------------------

def test_et01_defaults_and_writes(client):
    client.logon(MK)
    assert client.read(et(1)) == bytes([0x01, 0x00]) + (1000).to_bytes(2, "little") + b"\x1e"
    assert client.write(et(1), bytes([0x01, 0x06, 0x10, 0x27, 0x50])) == OK
    assert client.read(et(1)) == bytes([0x01, 0x06, 0x10, 0x27, 0x50])
    assert client.write(et(1), bytes([15]), 1) == ERR  # BT23 has summations 0..14
    assert client.write(et(1), bytes([29]), 4) == ERR  # below the S0 minimum of 30 ms
    assert client.write(et(1), bytes(2), 2) == ERR  # 0 pulses per kWh
    assert client.read(et(1)) == bytes([0x01, 0x06, 0x10, 0x27, 0x50])


def test_et01_rk_may_read_but_not_write(client):
    client.logon(RK)
    before = client.read(et(1))
    assert client.write(et(1), b"\x00") == ISC
    assert client.read(et(1)) == before


# ---- ET02 Battery Information (designed) --------------------------------------------------

def test_et02_threshold_is_writable_and_the_battery_flag_is_the_meters(client):
    client.logon(PK)
    assert client.read(et(2)) == (3000).to_bytes(2, "little") + b"\x01"
    assert client.write(et(2), (3300).to_bytes(2, "little") + b"\x00") == OK
    assert client.read(et(2)) == (3300).to_bytes(2, "little") + b"\x01"  # EP28 owns the flag
    assert client.write(et(2), bytes(2)) == ERR
    assert client.read(et(2))[:2] == (3300).to_bytes(2, "little")


def test_et02_rk_can_read_it_as_the_opg_says(client):
    client.logon(RK)  # OPG p.60: ET02 read access MK, PK, RK
    assert len(client.read(et(2))) == 3
    assert client.write(et(2), b"\x00") == ISC


# ---- ET06 Pulse Inputs (designed) and ET29's pulse input bits -----------------------------

def test_et06_channel_active_shows_in_et29_hardware_options(client):
    # MEP p.100: ET29's pulse input bits only report the state set by ET06's active bit
    client.logon(MK)
    assert client.read(et(6)) == bytes([0, 30, 0, 30])
    assert client.read(et(29))[0] & 0x06 == 0
    assert client.write(et(6), bytes([1, 50, 1, 40])) == OK
    assert client.read(et(6)) == bytes([1, 50, 1, 40])
    assert client.read(et(29))[0] & 0x06 == 0x06
    assert client.write(et(6), b"\x00", 3) == ERR
    assert client.read(et(6)) == bytes([1, 50, 1, 40])


def test_et29_lists_the_control_relays_the_meter_switches():
    # ET29.0 bits 6/7 (MEP p.99-100): relay 1 always (EP02, ET05, ET61), relay 2 from 4.30
    # (MEP p.79, ET11.26)
    assert _meter().table_bytes(et(29), NOW)[0] & 0xC0 == 0x40
    assert _meter("identity.firmware_version=4.30.01").table_bytes(et(29), NOW)[0] & 0xC0 == 0xC0


def test_gen4_meters_have_no_pulse_inputs_in_et29(clock):
    client = _client(_meter("identity.firmware_version=4.0.00"), clock)
    assert client.write(et(6), bytes([1, 30, 1, 30])) == OK
    assert client.read(et(29))[0] & 0x06 == 0


# ---- ET11 MFG Dimension ------------------------------------------------------------------

def test_et11_default_profile_matches_the_guides_values(client):
    # MEP p.77-80, OPG p.40-42: firmware 3.10 has offsets 0..23
    client.logon(RK)
    et11 = client.read(et(11))
    assert et11 == bytes([5, 66, 36, 5, 6]) + (517).to_bytes(2, "little") \
        + (768).to_bytes(2, "little") + (1785).to_bytes(2, "little") \
        + bytes([25, 16, 22, 3, 4, 17, 17, 10, 10, 65, 120, 6, 10])


def test_et11_agrees_with_the_sample_meter_except_its_request_length():
    # Fact sheet 9.14: a real meter's bytes 0-9; its ET11.7 is 769, the guide says 768 or 896
    sample = bytes.fromhex("05422405060502010 3F9".replace(" ", ""))
    for firmware, request_length in (("3.10.21", 768), ("3.50.00", 896)):
        et11 = _meter(f"identity.firmware_version={firmware}").table_bytes(et(11), NOW)
        assert et11[:7] == sample[:7] and et11[9] == sample[9]
        assert _u16(et11, 7) == request_length != _u16(sample, 7) == 769


@pytest.mark.parametrize("firmware, size", [("3.10.21", 24), ("3.30.00", 27), ("3.40.00", 28),
                                            ("3.50.00", 32), ("4.0.00", 38), ("4.10.00", 38),
                                            ("4.20.00", 39), ("4.30.01", 39)])
def test_et11_grows_with_the_firmware(firmware, size):
    meter = _meter(f"identity.firmware_version={firmware}")
    assert len(meter.table_bytes(et(11), NOW)) == size


def test_et11_gen4_tail():
    et11 = _meter("identity.firmware_version=4.30.01").table_bytes(et(11), NOW)
    assert et11[0] == 6  # two MEP clients + 4 M-Bus devices
    assert et11[24:28] == bytes([10, 16, 80, 10])
    assert _u16(et11, 28) == 261 and _u16(et11, 30) == 769
    assert et11[32:36] == bytes([6, 7, 2, 10])
    assert _u16(et11, 36) == 1250 and et11[38] == 3


# ---- ET17 firmware download verification bitmap -----------------------------------------

def test_et17_is_sized_by_et11_36_and_empty(clock):
    meter = _meter("identity.firmware_version=4.30.01")
    client = _client(meter, clock)
    size = _u16(client.read(et(11)), 36)
    assert client.read(et(17)) == bytes(size) and size == 1250


@pytest.mark.parametrize("key", [PK, RK])
def test_et17_is_download_information(client, key):
    client.logon(key)  # OPG p.13: RK reads no download information; PK cannot download
    assert client.read(et(17)) == ISC


# ---- ET29 Hardware Configuration ---------------------------------------------------------

def test_et29_firmware_3_layout(client):
    client.logon(MK)
    et29 = client.read(et(29))
    assert len(et29) == 20  # MEP p.100-102: offsets 0..19 before the Gen 4 fields
    options = int.from_bytes(et29[:3], "little")
    assert options & 1 << 0 and options & 1 << 10  # S0 output, MEP client 1 port
    assert options & 1 << 14  # two-line disconnect, True by default
    assert et29[5] == 0x01  # single phase


def test_et29_gen4_layout_for_a_polyphase_meter():
    et29 = _meter("identity.firmware_version=4.0.00", "meter.phases=3").table_bytes(et(29), NOW)
    assert len(et29) == 54  # MEP p.102-104: Comm Assignment Matrix 2 at 48..53
    assert et29[5] == 0x02  # polyphase
    assert et29[24:27] == bytes([2, 1, 1])  # USART1: wired board, MEP port, MEP client 1
    extended = int.from_bytes(et29[33:37], "little")
    assert extended >> 1 & 1 == 1 and extended >> 5 & 3 == 1  # toggle button; standard battery
    assert et29[47] == 1 | 0 << 5  # PP: line 1, neutral 0


# ---- ET54 Meter Status -------------------------------------------------------------------

def test_et54_fresh_meter_on_the_default_firmware(client):
    client.logon(RK)
    et54 = client.read(et(54))
    assert len(et54) == 82  # MEP p.136-137: ET79 entry count at 80 ends the 3.x table
    assert _u16(et54, 80) == 100  # ET79 holds the history log's BT71.5 entries
    assert et54[:80] == bytes(80)


def test_et54_et79_count_follows_the_profile():
    meter = _meter("dimensions.history_entries=37")
    assert _u16(meter.table_bytes(et(54), NOW), 80) == 37


@pytest.mark.parametrize("firmware, size", [("3.13.01", 91), ("3.50.00", 82), ("3.80.00", 91),
                                            ("4.0.00", 141), ("4.10.00", 145), ("4.30.01", 150)])
def test_et54_grows_with_the_firmware(firmware, size):
    et54 = _meter(f"identity.firmware_version={firmware}").table_bytes(et(54), NOW)
    assert len(et54) == size
    if size > 82:  # MEP p.137: key usage counts 0, supported security modes 0x05
        assert et54[82:90] == bytes(8) and et54[90] == 0x05


def test_et54_gen4_compatibility_bits():
    et54 = _meter("identity.firmware_version=4.30.01").table_bytes(et(54), NOW)
    flags = _u16(et54, 0)
    assert flags >> 6 & 1 and flags >> 7 & 1 and flags >> 8 & 1  # MEP p.133-134 values 1
    assert et54[91:133] == bytes(42)  # ET11.32 x ET11.33 module records


# ---- ET55 Meter Configuration ------------------------------------------------------------

def test_et55_defaults_of_the_3x_base_block(client):
    client.logon(MK)
    et55 = client.read(et(55))
    assert len(et55) == 128
    assert et55[4] == 1  # MEP p.140: delta time adjustment increment
    assert et55[14] == 0xAC and _u16(et55, 15) == 60  # -84 dB, PLC active timeout (p.141)
    assert _u16(et55, 78) == 10 and et55[80] == 0x01  # phase loss s; reserved bit TRUE (p.146)
    assert et55[93] == 1  # transformer secondary rated current (p.148)
    assert _u16(et55, 103) == 10 and _u16(et55, 105) == 10  # cover removed thresholds (p.149)
    assert _u16(et55, 119) == 600 and _u16(et55, 121) == 10  # p.152
    assert et55[123:127] == bytes([115, 85, 60, 5])  # p.153


def test_et55_firmware_3_70_block_sized_by_bt20_tiers():
    # MEP p.154-158: A = 146 + 4 * (BT20.7 - 1) on Meter 3.X; the table ends at A + 39
    for tiers in (4, 2):
        meter = _meter("identity.firmware_version=3.70.00", f"dimensions.tiers={tiers}")
        et55 = meter.table_bytes(et(55), NOW)
        a = 146 + 4 * (tiers - 1)
        assert len(et55) == a + 40
        assert _u16(et55, 144) == 1000
        assert et55[a + 5] == 1 and _u16(et55, a + 10) == 15
        assert _u16(et55, a + 12) == 600 and _u16(et55, a + 14) == 1008
        assert _u16(et55, a + 32) == 1 and _u16(et55, a + 34) == 180
        assert et55[a + 36:a + 40] == bytes([10, 90, 110, 1])


def test_et55_gen4_offsets_shift_by_one_and_add_the_tail():
    et55 = _meter("identity.firmware_version=4.0.00").table_bytes(et(55), NOW)
    a = 147 + 4 * 3  # MEP p.155
    assert len(et55) == a + 62
    assert et55[14] == 0xAC and _u16(et55, 79) == 10 and et55[81] == 0x01
    assert et55[124:128] == bytes([115, 85, 60, 5]) and _u16(et55, 145) == 1000
    assert _u16(et55, a + 42) == 600 and _u16(et55, a + 44) == 300  # optical D.O.S. (p.160)
    assert et55[a + 46] == 0x03 and et55[a + 53] == 5  # tamper channels in use; duration
    assert _u16(et55, a + 54) == 10 and _u16(et55, a + 56) == 10  # p.162


def test_et55_writes_validate_and_keep_meter_fields(client):
    client.logon(PK)
    assert client.write(et(55), bytes([16]), 4) == OK
    assert client.read(et(55), 4, 1) == bytes([16])
    before = client.read(et(55))
    assert client.write(et(55), bytes([17]), 4) == ERR  # MEP p.140: range 0..16
    assert client.write(et(55), bytes([3]), 88) == ERR  # over power source 0..2 (p.147)
    assert client.write(et(55), bytes([4]), 109) == ERR  # primary LP index 0..3 (p.150)
    assert client.read(et(55)) == before
    assert client.write(et(55), bytes([100]), 123) == OK  # VCI M: the meter keeps it
    assert client.write(et(55), b"\x00", 80) == OK  # the reserved TRUE bit stays set
    assert client.write(et(55), b"\x07", 0) == OK  # reserved bytes stay zero
    after = client.read(et(55))
    assert after[123] == 115 and after[80] == 0x01 and after[0] == 0


def test_et55_rk_cannot_write(client):
    client.logon(RK)
    before = client.read(et(55))
    assert client.write(et(55), b"\x02", 4) == ISC
    assert client.read(et(55)) == before


def test_et55_firmware_3_70_validation(clock):
    client = _client(_meter("identity.firmware_version=3.70.00"), clock, PK)
    a = 146 + 4 * 3
    assert client.write(et(55), b"\x00", a + 5) == ERR  # reset day 1..28 (p.156)
    assert client.write(et(55), (9).to_bytes(2, "little"), a + 10) == ERR  # cycles 10..800
    assert client.write(et(55), (7).to_bytes(2, "little"), a + 12) == ERR  # 7 does not divide 60
    assert client.write(et(55), (5400).to_bytes(2, "little"), a + 12) == ERR  # 1.5 h
    assert client.write(et(55), (900).to_bytes(2, "little"), a + 12) == OK  # 15 minutes
    assert _u16(client.read(et(55)), a + 12) == 900
    assert client.write(et(55), b"\x0a", a + 39) == OK  # Energy Register Unit: factory only
    assert client.read(et(55), a + 39, 1) == b"\x01"


# ---- ET70 RAM Only Status ----------------------------------------------------------------

def test_et70_current_comm_channel_index(clock):
    # MEP p.173-174: 0..141 reserved; Gen 4 adds the channel index at 142 and 143..155
    assert _meter().table_bytes(et(70), NOW) == bytes(142)
    client = _client(_meter("identity.firmware_version=4.0.00"), clock, RK)
    et70 = client.read(et(70))
    assert len(et70) == 156 and et70[142] == 1


def test_et55_scheduled_lcd_message_is_written_by_the_head_end(client, meter):
    """MEP p.142-143: the host specifies the 8-character message and its UTC start/end times."""
    client.logon(MK)
    layout = CATALOG[et(55)].layout_for(meter)
    values = layout.parse(client.read(et(55)))
    values.scheduled_lcd_message_text = b"HELLO   "
    values.scheduled_lcd_message_start = dt.datetime(2026, 5, 1, 8, 0, 0)
    values.scheduled_lcd_message_end = dt.datetime(2026, 5, 2, 8, 0, 0)
    assert client.write(et(55), layout.build(values)) == b"\x00"
    back = layout.parse(client.read(et(55)))
    assert back.scheduled_lcd_message_text == b"HELLO   "
    assert back.scheduled_lcd_message_end == dt.datetime(2026, 5, 2, 8, 0, 0)
