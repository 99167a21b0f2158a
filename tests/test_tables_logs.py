"""Log tables BT72, BT73, ET09, ET10, ET22, ET38, ET79, ET81 through the optical port, against the
guides (MEP = MEP Client Developer's Guide 2022, OPG = Optical Port Programmer's Guide 2021)."""

from __future__ import annotations

import pytest
from conftest import MK, PK, RK

from meter_emu.device.access import Key
from meter_emu.device.alarms import ALARMS
from meter_emu.device.errors import ServiceError
from meter_emu.device.meter import Meter
from meter_emu.events import EVENTS, Event
from meter_emu.profile import load_profile
from meter_emu.provenance import designed
from meter_emu.tables import CATALOG, bt, et, logs
from meter_emu.tables.catalog import WriteContext

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
NOW = 1_767_225_600.0
LOG_TABLES = [bt(72), bt(73), et(9), et(10), et(22), et(38), et(79), et(81)]


def _bits(raw: bytes) -> set[int]:
    return {i for i in range(len(raw) * 8) if raw[i // 8] >> (i % 8) & 1}


@pytest.mark.parametrize("table_id", LOG_TABLES)
def test_full_and_partial_reads_match_the_layout(client, meter, table_id):
    client.logon(MK)
    layout = CATALOG[table_id].layout_for(meter)
    full = client.read(table_id)
    assert len(full) == layout.sizeof()
    layout.parse(full)
    middle = len(full) // 2
    assert client.read(table_id, middle, 5) == full[middle:middle + 5].ljust(5, b"\0")


@pytest.mark.parametrize("table_id", [bt(72), et(10), et(22), et(38)])
def test_tables_the_mep_guide_does_not_cover_refuse_mep_keys(meter, table_id):
    with pytest.raises(ServiceError):
        meter.read_table(table_id, Key.MBK, NOW)
    meter.read_table(table_id, Key.PLC, NOW)


# --- BT72 / BT73 --------------------------------------------------------------------------

def test_bt72_marks_exactly_the_catalog_events(client):
    client.logon(RK)
    bt72 = client.read(bt(72))
    assert len(bt72) == 8 + 19  # BT71.1, BT71.2 (OPG p.51)
    standard, manufacturer = _bits(bt72[:8]), _bits(bt72[8:])
    assert standard == {n for n in EVENTS if n < 64}
    assert manufacturer == {n - 64 for n in EVENTS if n >= 64}
    assert bt72[0] == 0x9E  # 1, 2, 3, 4, 7: power down/up, time changed (old, new), read access
    assert bt72[8 + 1] & 0x01  # 72 Invalid Password


def test_bt72_follows_a_new_catalog_event(meter, monkeypatch):
    assert 111 - 64 not in _bits(meter.table_bytes(bt(72), NOW)[8:])
    monkeypatch.setitem(EVENTS, 111, Event(111, "Test Event", "0", "a test", designed("test")))
    bt72 = meter.table_bytes(bt(72), NOW)
    assert 111 - 64 in _bits(bt72[8:])


def test_bt73_defaults_log_all_but_the_chatty_events_and_every_writable_table(client, meter):
    client.logon(MK)
    bt73 = client.read(bt(73))
    bt72 = client.read(bt(72))
    monitored = _bits(bt73[:8]) | {64 + b for b in _bits(bt73[8:27])}
    supported = _bits(bt72[:8]) | {64 + b for b in _bits(bt72[8:27])}
    # quiet: session accesses, the log-state alarms and the pointer updates
    assert monitored == supported - {7, 8, 86, 92, 14, 15, 17, 19}
    bt00 = meter.table_bytes(bt(0), NOW)
    basic_write = bytearray(bt00[19 + 10 + 13 + 2 + 12:][:10])
    basic_write[0] &= ~0x80  # BT07: a procedure call is logged as Procedure Invoked
    extended_write = bt00[19 + 10 + 13 + 2 + 12 + 10:][:13]
    assert bt73[27:37] == basic_write and bt73[37:50] == extended_write
    assert len(bt73) == 8 + 19 + 10 + 13 + 2 + 12


def test_bt73_write_reads_back_and_unsupported_events_are_refused(client):
    client.logon(PK)
    assert client.write(bt(73), b"\x00", 0) == OK  # stop logging Time Changed
    assert client.read(bt(73), 0, 1) == b"\x00"
    before = client.read(bt(73))
    assert client.write(bt(73), b"\x01", 0) == ERR  # event 0 does not exist
    assert client.write(bt(73), b"\x80", 8 + 3) == ERR  # manufacturer event 95 does not exist
    assert client.read(bt(73)) == before


def test_bt73_refuses_rk_and_mep_keys(client, meter):
    client.logon(RK)
    assert client.write(bt(73), b"\x00", 0) == ISC
    assert Key.MAK not in CATALOG[bt(73)].write


# --- ET79 / ET81 / ET38 -------------------------------------------------------------------

def test_et79_is_an_empty_bt74_sized_by_bt71_5(client, meter):
    client.logon(MK)
    et79 = client.read(et(79))
    assert len(et79) == 11 + 14 * meter.dims.history_entries  # MEP p.182: (12 + BT71.3) bytes
    assert et79[0] == 0x04 and not any(et79[1:])  # circular queue, no entry
    small = Meter(load_profile(overrides=["dimensions.history_entries=7"]))
    assert len(small.table_bytes(et(79), NOW)) == 11 + 14 * 7


def test_et81_is_the_standard_header_and_12_byte_entries(client, monkeypatch, meter):
    client.logon(MK)
    assert client.read(et(81)) == bytes([0x04, 0, 0, 0, 0, 0])  # MEP p.185-186, 0 entries
    monkeypatch.setattr(logs, "POWER_OUTAGE_LOG_ENTRIES", 3)
    assert len(meter.table_bytes(et(81), NOW)) == 6 + 3 * 12


def test_et38_has_ten_35_byte_entries(client):
    client.logon(MK)
    et38 = client.read(et(38))
    assert len(et38) == 6 + 10 * 35  # ET36: entry size 35, current entries 10 (MEP p.108-109)
    assert et38[0] == 0x04 and not any(et38[1:])


@pytest.mark.parametrize("table_id", [et(38), et(79), et(81), bt(72), et(10)])
def test_read_only_log_tables_refuse_writes(client, table_id):
    client.logon(MK)
    assert client.write(table_id, b"\x00", 0) == IAR


# --- ET09 / ET10 -------------------------------------------------------------------------

N = 10  # ET04.53 Max Power Outages Recorded (MEP p.58)


@pytest.mark.parametrize("firmware, size", [
    ("2.10.01", 6 + N * 18 + 133),  # up to Short Outage Count at N*18+135
    ("2.12.00", 6 + N * 18 + 138),  # PQ Configuration ID, Sag1/Surge Threshold Seconds
    ("3.10.21", N * 18 + 357),  # THD records end where A begins (MEP p.75)
    ("3.70.00", N * 18 + 357 + 120),  # DRP/DRC ARRAY[12] of 10 bytes
    ("4.10.00", N * 18 + 357 + 161),  # sag2 ... Average Current Calculation Interval at A+159
    ("4.21.00", N * 18 + 357 + 162),  # Options at A+161
])
def test_et09_size_follows_the_firmware(firmware, size):
    m = Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))
    assert len(m.table_bytes(et(9), NOW)) == size


def test_et09_documented_defaults_and_offsets(client):
    client.logon(MK)
    et09 = client.read(et(9))
    assert et09[3] == 10 and et09[4] == 10  # Sag1 and Surge Threshold 10 % (MEP p.69)
    assert et09[N * 18 + 144] == 2  # Power Up Quality Hold Time 2 s (MEP p.74)
    assert et09[0:2] == (180).to_bytes(2, "little")
    m = Meter(load_profile(overrides=["identity.firmware_version=4.21.00"]))
    raw = m.table_bytes(et(9), NOW)
    a = N * 18 + 357
    assert raw[a + 122] == 255  # Sag2 Threshold (MEP p.76)
    assert raw[a + 159:a + 161] == (600).to_bytes(2, "little")  # averaging interval (MEP p.76)


def test_et09_offsets_inside_the_statistics(meter):
    layout = CATALOG[et(9)].layout_for(meter)
    values = layout.parse(meter.table_bytes(et(9), NOW))
    values.min_frequency = 0x11223344
    values.short_outage_count = 0x55667788
    values.thd_records[2].thd_event_records[2].average_thd = 0x99AA
    raw = layout.build(values)
    assert raw[N * 18 + 54:N * 18 + 58] == bytes.fromhex("44332211")  # MEP p.71
    assert raw[N * 18 + 135:N * 18 + 139] == bytes.fromhex("88776655")  # MEP p.73
    # third THD record, third phase: 147 + 2*70 + 4 + 2*22 + 16 (MEP p.74-75)
    at = N * 18 + 147 + 2 * 70 + 4 + 2 * 22 + 16
    assert raw[at:at + 2] == bytes.fromhex("AA99")


def test_et09_settings_write_but_records_stay_the_meters(client):
    client.logon(MK)
    assert client.write(et(9), (60).to_bytes(2, "little"), 0) == OK
    assert client.read(et(9), 0, 2) == (60).to_bytes(2, "little")
    at = N * 18 + 135  # Short Outage Count ("M")
    assert client.write(et(9), b"\x05\x00\x00\x00", at) == OK
    assert client.read(et(9), at, 4) == bytes(4)


def test_et09_invalid_settings_are_refused_and_change_nothing(client):
    client.logon(MK)
    before = client.read(et(9))
    thd_threshold = N * 18 + 149  # V-THD threshold, 0..10000
    assert client.write(et(9), (10_001).to_bytes(2, "little"), thd_threshold) == ERR
    over_current_time = N * 18 + 145  # 0..65000 s
    assert client.write(et(9), (65_001).to_bytes(2, "little"), over_current_time) == ERR
    assert client.read(et(9)) == before


def test_et09_averaging_interval_must_be_synchronised_to_the_hour():
    m = Meter(load_profile(overrides=["identity.firmware_version=4.21.00"]))
    at = N * 18 + 357 + 159
    for seconds, accepted in ((90, False), (120, True), (7200, True), (5400, False)):
        ctx = WriteContext(Key.MK, NOW)
        if accepted:
            m.write_table(et(9), seconds.to_bytes(2, "little"), ctx, at)
            assert m.table_bytes(et(9), NOW)[at:at + 2] == seconds.to_bytes(2, "little")
        else:
            with pytest.raises(ServiceError):
                m.write_table(et(9), seconds.to_bytes(2, "little"), ctx, at)


def test_et09_refuses_rk(client):
    client.logon(RK)
    assert client.write(et(9), b"\x00", 0) == ISC


def test_et09_and_et10_outage_arrays_follow_et04_53(client, meter):
    """ET04.53 is a product value ("P"): a client's write leaves it, and the arrays, alone."""
    client.logon(MK)
    assert client.write(et(4), bytes([4]), 53) == OK
    assert client.read(et(4), 53, 1) == bytes([N])
    assert len(client.read(et(9))) == N * 18 + 357
    assert len(client.read(et(10))) == 8 + N * 18


def test_et10_totals_come_from_the_outage_registers(client, meter):
    meter.state.registers.update(power_outage_count=7, power_outage_seconds=3600)
    client.logon(RK)
    et10 = client.read(et(10))
    assert len(et10) == 8 + N * 18
    assert et10[:8] == (7).to_bytes(4, "little") + (3600).to_bytes(4, "little")
    assert not any(et10[8:])


# --- ET22 --------------------------------------------------------------------------------

def _alarm_index(name):
    offset, bit = ALARMS[name]
    return (offset - 1) * 8 + bit


def test_et22_reports_and_logs_every_bt03_alarm(client):
    client.logon(MK)
    et22 = client.read(et(22))
    assert len(et22) == 120  # ET11.21 (MEP p.79)
    defined = {_alarm_index(name) for name in ALARMS}
    assert {i for i, b in enumerate(et22) if b} == defined
    assert et22[_alarm_index("power_failure")] == 0x03


def test_et22_write_reads_back_and_unknown_alarms_are_refused(client):
    client.logon(PK)
    power_failure = _alarm_index("power_failure")
    assert client.write(et(22), b"\x02", power_failure) == OK  # log, do not report
    assert client.read(et(22), power_failure, 1) == b"\x02"
    before = client.read(et(22))
    assert client.write(et(22), b"\x01", 119) == ERR
    assert client.read(et(22)) == before


def test_et22_refuses_rk(client):
    client.logon(RK)
    assert client.write(et(22), b"\x00", 0) == ISC
