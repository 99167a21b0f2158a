"""MEP/M-Bus device tables (ET13-ET16, ET34, ET45, ET57, ET58, ET71, ET74) against the MEP
Client Developer's Guide (MEP) and the Optical Port Programmer's Guide (OPG), printed pages."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import MK, PK, RK, LinkClient

from meter_emu.device.access import Key
from meter_emu.device.errors import ResponseCode, ServiceError
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, WriteContext, bt, et, mep_devices

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
NOW = 100.0
ET13, ET14, ET15, ET16, ET34, ET45 = (et(n) for n in (13, 14, 15, 16, 34, 45))
ET57, ET58, ET71, ET74 = (et(n) for n in (57, 58, 71, 74))
ALL = (ET13, ET14, ET15, ET16, ET34, ET45, ET57, ET58, ET71, ET74)
CONFIG_ENTRY, STATUS_ENTRY, DATA_ENTRY, CONFIG2_ENTRY = 66, 36, 517, 22  # ET11.1/.2/.5/.13
GEN4 = "identity.firmware_version=4.30.01"


def gen4_meter() -> Meter:
    return Meter(load_profile(overrides=[GEN4]))


def u16(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 2], "little")


@pytest.fixture
def mk(client):
    client.logon(MK)
    return client


# ---- every table: optical reads --------------------------------------------------------

@pytest.mark.parametrize("table_id", ALL)
def test_full_read_has_the_layout_size_and_partial_reads_are_slices(mk, meter, table_id):
    layout = CATALOG[table_id].layout_for(meter)
    full = mk.read(table_id)
    assert len(full) == layout.sizeof()
    layout.parse(full)
    assert full == meter.table_bytes(table_id, NOW)
    start = len(full) // 3
    count = min(40, len(full) - start)
    assert mk.read(table_id, start, count) == full[start:start + count]


@pytest.mark.parametrize("table_id", ALL)
@pytest.mark.parametrize("password", [PK, RK])
def test_every_optical_key_reads_them(client, table_id, password):
    client.logon(password)
    # OPG p.42, p.60-62: MK, PK, RK (the list omits ET13/ET34; they are read like their peers)
    assert len(client.read(table_id, 0, 1)) == 1


@pytest.mark.parametrize("table_id", ALL)
def test_both_mep_keys_read_them(meter, table_id):
    # MEP p.80-177: every "Read/Write Access" box lists Read: MBK, MAK
    for key in (Key.MBK, Key.MAK, Key.PLC):
        assert meter.read_table(table_id, key, NOW) == meter.table_bytes(table_id, NOW)


@pytest.mark.parametrize("table_id", [ET14, ET15, ET16, ET45, ET58, ET74])
def test_status_data_and_log_tables_are_read_only(mk, meter, table_id):
    before = meter.table_bytes(table_id, NOW)
    assert mk.write(table_id, b"\x01", 0) == IAR  # MEP boxes: Write None
    assert meter.table_bytes(table_id, NOW) == before


# ---- firmware: ET11.0 = 5 devices (1 MEP client), 6 on 4.0+ (2 MEP clients) -------------

@pytest.mark.parametrize("table_id, header, entry", [
    (ET13, 0, CONFIG_ENTRY), (ET14, 6, STATUS_ENTRY), (ET16, 0, DATA_ENTRY),
    (ET34, 0, CONFIG2_ENTRY), (ET58, 0, 20),
])
def test_device_arrays_grow_with_the_second_mep_client(meter, table_id, header, entry):
    # MEP p.77-79 (ET11.0) and p.23 (ET13, ET14, ET34 gain an entry for MEP client 2)
    assert len(meter.table_bytes(table_id, NOW)) == header + 5 * entry
    assert len(gen4_meter().table_bytes(table_id, NOW)) == header + 6 * entry


@pytest.mark.parametrize("table_id, size", [(ET15, 221), (ET57, 64), (ET71, 130)])
def test_tables_without_device_arrays_keep_their_size_on_gen4(meter, table_id, size):
    assert len(meter.table_bytes(table_id, NOW)) == size
    assert len(gen4_meter().table_bytes(table_id, NOW)) == size


# ---- ET13 -------------------------------------------------------------------------------

def test_et13_defaults_and_mep_entry_offsets(meter):
    et13 = meter.table_bytes(ET13, NOW)
    for i in range(4):  # MEP p.81: baud rate at 6; 4 = 2400, the M-Bus default
        assert et13[i * CONFIG_ENTRY + 6] == 4
    mep = 4 * CONFIG_ENTRY  # the 5th entry is the MEP client's (MEP p.80)
    assert et13[mep + 6] == 0  # 0 = 9600, the MEP default
    assert et13[mep + 8] == 0  # alert flags: a MEP client reads them at 4 * ET11.1 + 8
    assert not any(b for i, b in enumerate(et13) if i % CONFIG_ENTRY != 6)
    parsed = CATALOG[ET13].layout_for(meter).parse(et13)
    assert len(parsed.mep_clients[0].non_urgent_downlink_data) == CONFIG_ENTRY - 9


def test_et13_gen4_has_two_mep_client_entries():
    et13 = gen4_meter().table_bytes(ET13, NOW)
    assert [et13[i * CONFIG_ENTRY + 6] for i in range(6)] == [4, 4, 4, 4, 0, 0]


def test_et13_write_reads_back_and_masks_the_key_head(mk, meter):
    ta = bytes([0x10, 0x00, 0x20, 0x00])  # Ta, To of M-Bus device 2 (MEP p.82: offsets 62, 64)
    assert mk.write(ET13, ta, CONFIG_ENTRY + 62) == OK
    assert mk.read(ET13, CONFIG_ENTRY + 62, 4) == ta
    key = bytes(range(1, 17))
    # key length 16 at 29, key at 30: the first 8 bytes are write-only (read back as zeros)
    assert mk.write(ET13, bytes([16]) + key, 29) == OK
    assert mk.read(ET13, 29, 17) == bytes([16]) + bytes(8) + key[8:]
    schedule = bytes([15, 2, 30, 3])  # 15th of the month, 02:30, monthly
    assert mk.write(ET13, schedule, 4 * CONFIG_ENTRY) == OK
    assert mk.read(ET13, 4 * CONFIG_ENTRY, 4) == schedule


@pytest.mark.parametrize("offset, value", [
    (0, 29),  # day 29..31 must not be used (MEP p.81)
    (0, 40),  # above 39 (disable)
    (1, 24),  # hour 0..23
    (2, 60),  # minute 0..59
    (3, 5),  # frequency 0..4
    (6, 13),  # baud rate codes 13..255 are reserved (MEP p.82)
    (29, 33),  # key length beyond the 32-byte key
    (4 * CONFIG_ENTRY + 6, 13),  # the MEP client entry is checked too
])
def test_et13_refuses_what_the_guide_rules_out(mk, meter, offset, value):
    before = meter.table_bytes(ET13, NOW)
    assert mk.write(ET13, bytes([value]), offset) == ERR
    assert meter.table_bytes(ET13, NOW) == before


def test_et13_day_39_and_weekly_days_are_accepted(mk):
    assert mk.write(ET13, bytes([39, 0, 0, 2]), 0) == OK  # the documented "disable" setting
    assert mk.write(ET13, bytes([38]), CONFIG_ENTRY) == OK  # Saturday


def test_et13_alert_flags_belong_to_the_meter(mk, meter):
    flags = 4 * CONFIG_ENTRY + 8
    assert mk.write(ET13, b"\x1F\xAB", flags) == OK  # VCI M: the server sets and clears them
    assert mk.read(ET13, flags, 2) == b"\x00\xAB"  # the downlink data is the client's


def test_et13_write_access(client, meter):
    client.logon(RK)
    assert client.write(ET13, b"\x01", 0) == ISC
    ctx = WriteContext(Key.MBK, NOW)
    with pytest.raises(ServiceError) as refused:  # MEP p.80: Write MAK only
        meter.write_table(ET13, b"\x01", ctx)
    assert refused.value.code == ResponseCode.ISC
    meter.write_table(ET13, b"\x01", dataclasses.replace(ctx, key=Key.MAK))
    assert meter.table_bytes(ET13, NOW)[0] == 1


# ---- ET14 -------------------------------------------------------------------------------

def test_et14_empty_slots_and_the_sample_from_a_real_meter(meter):
    et14 = meter.table_bytes(ET14, NOW)
    assert et14 == bytes(6 + 5 * STATUS_ENTRY)  # no device: every slot 0 = empty
    # ET14[0..11] read from a meter with one M-Bus device and one MEP client
    # (reference/osgp-app-layer.md), decoded with the MEP p.84-86 offsets
    sample = bytes.fromhex("000000000011010001042F00").ljust(len(et14), b"\0")
    parsed = CATALOG[ET14].layout_for(meter).parse(sample)
    assert parsed.device_occupancy == {0, 4}  # device 1 (M-Bus) and device 5 (MEP)
    first = parsed.devices[0]
    assert (first.device_handle, first.device_status, first.baud_rate) == (1, 1, 4)
    assert first.billing_read_length == 0x2F


def test_et14_entry_offsets(meter):
    layout = CATALOG[ET14].layout_for(meter)
    values = layout.parse(meter.table_bytes(ET14, NOW))
    second = values.devices[1]
    second.read_attempts = 0x11223344
    second.mep_alarms = dict(failed_comms_on_read=1)
    second.mep_device_alarms = 0x5A
    raw = layout.build(values)  # the guide's offsets are the first entry's: add 36 for the 2nd
    assert int.from_bytes(raw[STATUS_ENTRY + 12:STATUS_ENTRY + 16], "little") == 0x11223344
    assert u16(raw, STATUS_ENTRY + 20) == 1 << 4  # MEP alarms at 20, Failed Comms bit 4
    assert raw[STATUS_ENTRY + 29] == 0x5A  # MEP device alarms at 29 (MEP p.89)


# ---- ET15 -------------------------------------------------------------------------------

def test_et15_layout_and_the_sample_queue(meter):
    et15 = meter.table_bytes(ET15, NOW)
    assert et15 == bytes(221)
    # ET15[0..30] from a real meter (reference/osgp-app-layer.md): five 6-byte requests
    sample = bytes.fromhex("00" "420001000201" "450001000201" "480001000201" "0300F8030201"
                           "4B0001000201").ljust(221, b"\0")
    parsed = CATALOG[ET15].layout_for(meter).parse(sample)
    assert [r.transaction_number for r in parsed.request_queue] == [0x42, 0x45, 0x48, 3, 0x4B]
    assert parsed.request_queue[3].device_handle == 0x03F8
    assert {(r.request_type, r.result) for r in parsed.request_queue} == {(2, 1)}
    # MEP p.91: write data length at ET11.3 * ET11.4 + 1 = 31, multicast length at
    # ET11.3 * (ET11.4 + ET11.11) + 1 = 156, multicast message from 157 (ET11.20 - 1 bytes)
    values = CATALOG[ET15].layout_for(meter).parse(et15)
    values.write_messages[0].length = 7
    values.multicast_data.length = 9
    raw = CATALOG[ET15].layout_for(meter).build(values)
    assert raw[31] == 7 and raw[156] == 9 and len(raw) - 157 == 64


# ---- ET16 -------------------------------------------------------------------------------

def test_et16_entries_and_the_mep_client_format(meter):
    layout = CATALOG[ET16].layout_for(meter)
    assert meter.table_bytes(ET16, NOW) == bytes(5 * DATA_ENTRY)  # no read yet
    values = layout.parse(bytes(layout.sizeof()))
    values.mep_clients[0].read_count = 0x0102
    values.mep_clients[0].length = 3
    values.mep_clients[0].data = b"abc" + bytes(DATA_ENTRY - 14)
    values.mbus_devices[1].response_info = dict(response_type=1, authentication=2)
    values.mbus_devices[1].telegrams = b"\x10" + bytes(DATA_ENTRY - 8)
    raw = layout.build(values)
    mep = 4 * DATA_ENTRY  # OPG p.45: the fifth and later elements are MEP entries
    assert u16(raw, mep + 7) == 0x0102 and u16(raw, mep + 9) == 3
    assert raw[mep + 11:mep + 14] == b"abc"
    assert raw[DATA_ENTRY + 6] == 0b10010  # OPG p.43: response info at 6, fixed structure b1
    assert raw[DATA_ENTRY + 7] == 0x10  # the telegram length L at 7


# ---- ET34 -------------------------------------------------------------------------------

def test_et34_defaults(meter):
    et34 = meter.table_bytes(ET34, NOW)
    for i in range(5):  # MEP p.106: Load Profile Poll Rate at 4, default 60 minutes
        entry = et34[i * CONFIG2_ENTRY:(i + 1) * CONFIG2_ENTRY]
        assert entry == bytes(4) + b"\x3C\x00" + bytes(16)


def test_et34_write_reads_back(mk):
    settings = bytes([0x0F, 0, 15, 0, 3, 5, 7, 0x91, 0xC9, 30, 254, 10])  # offsets 2..13
    assert mk.write(ET34, settings, 2 * CONFIG2_ENTRY + 2) == OK
    assert mk.read(ET34, 2 * CONFIG2_ENTRY + 2, 12) == settings


@pytest.mark.parametrize("offset, value", [
    (6, 32), (7, 32), (8, 255),  # control, command monitor and time stamp MDTs are 0..31
    (12, 255),  # retry attempts 0..254 (MEP p.107)
])
def test_et34_refuses_what_the_guide_rules_out(mk, meter, offset, value):
    before = meter.table_bytes(ET34, NOW)
    assert mk.write(ET34, bytes([value]), CONFIG2_ENTRY + offset) == ERR
    assert meter.table_bytes(ET34, NOW) == before


def test_et34_write_access(client, meter):
    client.logon(RK)
    assert client.write(ET34, b"\x01", 2) == ISC
    with pytest.raises(ServiceError):  # MEP p.106: Write MAK only
        meter.write_table(ET34, b"\x01", WriteContext(Key.MBK, NOW), 2)
    meter.write_table(ET34, b"\x01", WriteContext(Key.MAK, NOW), 2)
    assert meter.table_bytes(ET34, NOW)[2] == 1


# ---- ET45, ET74 -------------------------------------------------------------------------

def test_recurring_read_logs_are_empty_by_default(meter):
    # ET36 "Current Entries" for ET45 and ET54.69 (ET74) default to 0 (MEP p.109, p.136)
    assert meter.table_bytes(ET45, NOW) == b"\x04" + bytes(5)  # circular queue (MEP p.120)
    assert meter.table_bytes(ET74, NOW) == bytes(9)  # no entries: not a circular queue


def test_recurring_read_log_entries_follow_the_configured_dimensions(monkeypatch, meter):
    logs = mep_devices.RecurringReadLogs(entry_size=525, entries=3, extended_entries=2)
    monkeypatch.setattr(mep_devices, "RECURRING_READ_LOGS", logs)
    et45 = meter.table_bytes(ET45, NOW)
    assert len(et45) == 6 + 3 * 525 and et45[0] == 0x04
    et74 = meter.table_bytes(ET74, NOW)
    assert len(et74) == 9 + 2 * 525 and et74[0] == 0x04
    layout = CATALOG[ET45].layout_for(meter)
    values = layout.parse(et45)
    values.entries[0].handle = 1000
    values.entries[0].identifier = dict(identifier=5, namespace=2)
    values.entries[0].result = 4
    values.entries[0].data.response_info = dict(data_order=1)
    raw = layout.build(values)
    # MEP p.120: identifier/namespace at 8, handle at 10, result at 13, MBR from 14
    assert u16(raw, 8) == 5 | 2 << 11 and u16(raw, 10) == 1000 and raw[13] == 4
    assert raw[14 + 6] == 1  # the MBR's response info, 6 bytes after its timestamp
    layout74 = CATALOG[ET74].layout_for(meter)
    values74 = layout74.parse(et74)
    values74.entries[1].handle = 2000
    raw74 = layout74.build(values74)
    assert u16(raw74, 9 + 525 + 4) == 2000  # MEP p.176-177: handle at 13 = 9 + 4


# ---- ET57 -------------------------------------------------------------------------------

def test_et57_write_reads_back_and_extensions_need_a_base(mk, meter):
    assert mk.read(ET57) == bytes(64)  # 16 empty entries (MEP p.164: entry type 0)
    base = bytes([1 | 1 << 2 | 1 << 7]) + bytes.fromhex("0C933A")  # M-Bus base, MDT 1, special
    extension = bytes([3]) + b"\x01\x02\x03"
    assert mk.write(ET57, base + extension, 0) == OK
    assert mk.read(ET57, 0, 8) == base + extension
    before = meter.table_bytes(ET57, NOW)
    assert mk.write(ET57, extension, 0) == ERR  # nothing before it to extend
    assert mk.write(ET57, extension, 12) == ERR  # entry 3 follows an empty entry
    assert meter.table_bytes(ET57, NOW) == before


def test_et57_write_access(client, meter):
    client.logon(RK)
    assert client.write(ET57, b"\x01", 0) == ISC
    with pytest.raises(ServiceError):  # MEP p.163: Write MAK only
        meter.write_table(ET57, b"\x01", WriteContext(Key.MBK, NOW))


# ---- ET58 -------------------------------------------------------------------------------

def test_et58_has_no_status_yet(meter):
    assert meter.table_bytes(ET58, NOW) == bytes(5 * 20)  # MEP p.165: UINT8 + 19 reserved


# ---- ET71 -------------------------------------------------------------------------------

def test_et71_defaults(meter):
    et71 = meter.table_bytes(ET71, NOW)
    # MEP p.174-175: source 255 (not in use), then delta, comparison, sampled, status all 0
    assert et71 == (b"\xFF\x00" + bytes(11)) * 10


def test_et71_write_reads_back_and_keeps_the_meters_fields(mk, meter):
    config = (0x4001).to_bytes(2, "little") + (50).to_bytes(2, "little") + \
        (-7).to_bytes(4, "little", signed=True)
    assert mk.write(ET71, config, 13) == OK
    assert mk.read(ET71, 13, 8) == config
    assert mk.write(ET71, b"\x01\x02\x03\x04\x01", 13 + 8) == OK  # sampled value, status: VCI M
    assert mk.read(ET71, 13, 13) == config + bytes(5)


def test_et71_is_writable_with_mbk(client, meter):
    # MEP p.174: Write MBK, MAK (unlike ET13, ET34, ET57)
    meter.write_table(ET71, b"\x10\x00", WriteContext(Key.MBK, NOW))
    assert meter.table_bytes(ET71, NOW)[:2] == b"\x10\x00"
    client.logon(RK)
    assert client.write(ET71, b"\x11\x00", 0) == ISC
    assert meter.table_bytes(ET71, NOW)[:2] == b"\x10\x00"


# ---- stored configuration survives a new connection ---------------------------------------

def test_configuration_is_kept_by_the_meter(meter, clock):
    first = LinkClient(optical_protocol(meter, clock))
    first.logon(PK)
    assert first.write(ET34, b"\x1E\x00", 4) == OK
    second = LinkClient(optical_protocol(meter, clock))
    second.logon(RK)
    assert second.read(ET34, 4, 2) == b"\x1E\x00"


# ---- ET50 "MEP Device Registered" installs the client (MEP p.16-17, p.22, p.36) ---------------

def _status(meter, slot: int):
    return CATALOG[ET14].layout_for(meter).parse(meter.table_bytes(ET14, NOW))


@pytest.mark.parametrize("firmware, channel", [("3.10.21", 1), ("4.30.01", 1), ("4.30.01", 2)])
def test_setting_et50_registered_makes_the_server_install_the_client(firmware, channel):
    """The guide's client writes the flag over the MEP port (MEP p.16); the server discovers it:
    ET14 entry "MEP up" in the client's slot (after the M-Bus slots) with the first handle of its
    range, occupancy bit set, event 96 "registered" (code 5, device index in bits 13-15)."""
    from test_procedures_mep import Mep
    from meter_emu.clock import ManualClock

    m = Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))
    record = CATALOG[et(50)].layout_for(m).sizeof() // (2 if firmware >= "4" else 1)
    mep = Mep(m, ManualClock(NOW), channel=channel)
    assert mep.write(et(50), b"\x01", offset=(channel - 1) * record + 30) == 0x00
    slot = mep_devices.mep_slot(m, channel)
    status = _status(m, slot)
    assert status.device_occupancy == {slot}
    entry = status.devices[slot]
    assert (entry.device_handle, entry.device_status) == (1000 * channel, mep_devices.MEP_UP)
    events = [e for e in m.state.history.entries if e[3] == 96]
    assert [e[4] for e in events] == [(slot + 1) << 13 | mep_devices.STATUS_REGISTERED]
    # setting it again changes nothing: the client is installed
    assert mep.write(et(50), b"\x01", offset=(channel - 1) * record + 30) == 0x00
    assert _status(m, slot).devices[slot].device_handle == 1000 * channel
    assert len([e for e in m.state.history.entries if e[3] == 96]) == 1


def test_a_removed_client_that_registers_again_gets_a_new_handle():
    """EP17 clears the flag and the ET14 record; the client's next registration is a new
    device with the next handle of its range (MEP p.36: "self-register for a new handle")."""
    from test_procedures_mep import Mep
    from meter_emu.clock import ManualClock

    m = Meter(load_profile())
    mep = Mep(m, ManualClock(NOW))
    slot = mep_devices.mep_slot(m, 1)
    for handle in (1000, 1001, 1002):
        assert mep.write(et(50), b"\x01", offset=30) == 0x00
        assert _status(m, slot).devices[slot].device_handle == handle
        ep17 = (2048 + 17).to_bytes(2, "little") + bytes([5 + handle % 3]) + b"\x00" \
            + handle.to_bytes(2, "little")
        assert mep.write(bt(7), ep17) == 0x00
        assert m.table_bytes(bt(8), NOW)[3] == 0  # completed
        assert _status(m, slot).device_occupancy == set()
        assert m.table_bytes(et(50), NOW)[30] & 1 == 0


def test_registration_by_optical_write_is_discovered_too(mk, meter):
    """The server reacts to the flag, whoever set it (an installer's optical tool here)."""
    assert mk.write(et(50), b"\x01", 30) == OK
    slot = mep_devices.mep_slot(meter, 1)
    assert mep_devices.devices(meter)[slot]["handle"] == 1000
