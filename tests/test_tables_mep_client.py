"""MEP client tables (meter_emu/tables/mep_client.py) through the optical port and the meter."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import MK, PK, RK

from meter_emu.device.access import Key
from meter_emu.device.errors import ResponseCode, ServiceError
from meter_emu.device.meter import Meter
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, WriteContext, et
from meter_emu.tables.mep_client import OTR_COMPLETED, OTR_PENDING

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
TABLES = [19, 20, 27, 28, 31, 32, 50, 51, 52, 53, 59, 85]
READ_ONLY = [28, 31, 32, 53, 59, 85]


def _layout(meter, number):
    return CATALOG[et(number)].layout_for(meter)


@pytest.mark.parametrize("number", TABLES)
def test_full_and_partial_reads_match_the_layout(client, meter, number):
    client.logon(MK)
    data = client.read(et(number))
    layout = _layout(meter, number)
    assert len(data) == layout.sizeof()
    assert layout.build(layout.parse(data)) == data
    middle = len(data) // 3
    count = min(9, len(data) - middle)
    assert client.read(et(number), middle, count) == data[middle:middle + count]


def test_sizes_follow_et11_and_bt00(meter):
    size = {n: len(meter.table_bytes(et(n), 0.0)) for n in TABLES}
    assert size[19] == 3 * 17 and size[20] == 4 * 17  # ET11.14-17, OPG p.41
    assert size[50] == 35 + 6 * 6  # one MEP channel, ET11.22 = 6 sources (MEP p.124-126)
    assert size[51] == 10  # MEP p.128-129: last field at offset 9
    assert size[52] == size[27] == 768  # ET11.7 before firmware 3.50 (MEP p.44)
    assert size[53] == size[28] == 1785  # ET11.9 (MEP p.132)
    assert size[59] == size[85] == 4 + 12  # BT08's layout, BT00.10 = 12
    assert size[31] == 6 + 2 * (5 + 1 + 300)  # header, 2 entries of STIME_DATE, season, BT23
    assert size[32] == 6 + 8 * 525  # ET36 defaults: 8 entries of 525 bytes (MEP p.108-109)


@pytest.mark.parametrize("firmware, channels, request_length", [
    ("3.10.21", 1, 768), ("3.50.00", 1, 896), ("4.30.01", 2, 896),
])
def test_firmware_changes_mep_channels_and_request_length(firmware, channels, request_length):
    m = Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))
    assert len(m.table_bytes(et(50), 0.0)) == 71 * channels  # ET11.34 MEP channel count
    assert len(m.table_bytes(et(51), 0.0)) == 10 * channels
    assert len(m.table_bytes(et(52), 0.0)) == request_length  # ET11.7 (MEP p.44)
    assert len(m.table_bytes(et(27), 0.0)) == request_length


@pytest.mark.parametrize("firmware", ["3.10.21", "4.30.01"])
def test_a_profile_gives_et52_the_guide_meters_769_bytes(firmware):
    """[dimensions] transaction_request_length: the guide's meter reports ET11.7 = 769 (MEP p.47)
    and ET52 is "a total of 769 bytes" (p.129) whatever the firmware rule says; ET11 and both
    request tables agree."""
    m = Meter(load_profile(overrides=[f"identity.firmware_version={firmware}",
                                      "dimensions.transaction_request_length=769"]))
    assert m.table_bytes(et(11), 0.0)[7:9] == (769).to_bytes(2, "little")
    assert len(m.table_bytes(et(52), 0.0)) == len(m.table_bytes(et(27), 0.0)) == 769
    assert Meter(load_profile("mep-guide")).table_bytes(et(11), 0.0)[7:9] == bytes.fromhex("0103")


def test_fresh_meter_tables_read_empty(meter):
    for number in (19, 20, 27, 28, 50, 52, 53, 59, 85):
        assert not any(meter.table_bytes(et(number), 0.0)), number
    for number in (31, 32):  # log header: only "list type" (circular queue) set, MEP p.104-105
        log = meter.table_bytes(et(number), 0.0)
        assert log[0] == 0x04 and not any(log[1:])


def test_et51_defaults_match_the_guides(meter):
    # OPG p.14-16 / MEP p.127-129: D.O.S. timer on; health 60 s; on-demand/OTR 30 s;
    # optical session 600 s; hold-off 300 s; MEP down reset 1 s; HAN active
    assert meter.table_bytes(et(51), 0.0) == bytes.fromhex("01 3C00 1E 5802 2C01 01 00")


# ---- ET50 -------------------------------------------------------------------------------

def test_et50_registration_write_from_the_mep_guide(client, meter):
    # MEP p.17: partial write of ET50 offset 0x1E, one byte 0x01 = "MEP Device Registered"
    client.logon(MK)
    assert client.write(et(50), b"\x01", 0x1E) == OK
    values = _layout(meter, 50).parse(client.read(et(50)))
    assert values.clients[0].flags["mep_device_registered"] == 1
    assert values.clients[0].flags["et59_response"] == 0


def test_et50_field_offsets(meter):
    image = bytearray(71)
    image[31:33] = (32 | 256).to_bytes(2, "little")  # source 0 icons: kWh, negative
    image[43:47] = (-5).to_bytes(4, "little", signed=True)  # source 0 data at 31 + 2 * 6
    image[67] = 0x02  # house icon flashing at 31 + 6 * 6
    meter.write_table(et(50), bytes(image), WriteContext(Key.MBK, 0.0))
    client_space = _layout(meter, 50).parse(meter.table_bytes(et(50), 0.0)).clients[0]
    assert client_space.icon_display_control[0] == 288
    assert client_space.source_data[0] == -5
    assert client_space.mep_icons["house_icon"] == 2


def _mep_id(program_id: bytes, unique_id: bytes) -> bytes:
    # MEP p.126-127: manufacturer ID with bit 7 set, class, N, program ID, M, unique ID, spares
    raw = bytes([0x80 | 0x01, 0x02, 0x03, 5, len(program_id)]) + program_id
    return (raw + bytes([len(unique_id)]) + unique_id).ljust(30, b"\0")


def test_et50_identification_string_format(client, meter):
    client.logon(MK)
    good = _mep_id(bytes([1, 2, 3, 4]), b"SN-0042")
    assert client.write(et(50), good) == OK
    assert client.read(et(50), 0, 30) == good
    before = client.read(et(50))
    too_long = _mep_id(bytes(10), bytes(20))[:30]  # 6 + 10 + 20 > 30
    spare_set = good[:29] + b"\x07"
    program_overflow = bytes([0x81, 0, 0, 5, 25]).ljust(30, b"\0")
    for bad in (too_long, spare_set, program_overflow):
        assert client.write(et(50), bad) == ERR
    assert client.read(et(50)) == before
    free_form = b"legacy MEP client".ljust(30, b"\0")  # bit 7 clear: not the standard format
    assert client.write(et(50), free_form) == OK


@pytest.mark.parametrize("offset, data", [
    (30, b"\x10"),  # reserved MEP flag bit 4
    (31, (512).to_bytes(2, "little")),  # icon display control above the Euro..negative bits
    (67, b"\x03"),  # house icon: 0 off, 1 on, 2 flash
    (68, b"\x30"),  # long bar
])
def test_et50_refuses_what_the_guide_rules_out(client, meter, offset, data):
    client.logon(MK)
    before = client.read(et(50))
    assert client.write(et(50), data, offset) == ERR
    assert client.read(et(50)) == before


def test_et50_access(client, meter):
    client.logon(RK)
    assert len(client.read(et(50))) == 71
    assert client.write(et(50), b"\x01", 30) == ISC
    for key in (Key.MBK, Key.MAK, Key.PK, Key.PLC):
        meter.write_table(et(50), b"\x0F", WriteContext(key, 0.0), 30)
    assert meter.table_bytes(et(50), 0.0)[30] == 0x0F


# ---- ET51 -------------------------------------------------------------------------------

def test_et51_write_read_back_and_checks(client, meter):
    client.logon(PK)
    assert client.write(et(51), (120).to_bytes(2, "little"), 1) == OK  # MEP health timeout
    assert client.read(et(51), 1, 2) == (120).to_bytes(2, "little")
    before = client.read(et(51))
    assert client.write(et(51), b"\x11", 0) == ERR  # unused flag bit 4
    assert client.write(et(51), b"\x00\x02", 8) == ERR  # unused bit 1 after Deactivate HAN
    assert client.read(et(51)) == before
    assert client.write(et(51), b"\x09", 0) == OK  # Reset MEP Now (bit 3) clears itself
    assert client.read(et(51), 0, 1) == b"\x01"


def test_et51_is_not_for_rk(client, meter):
    client.logon(RK)  # OPG p.14: read and write access MK, PK only
    assert client.read(et(51)) == ISC
    assert client.write(et(51), b"\x00", 0) == ISC
    meter.write_table(et(51), b"\x81", WriteContext(Key.MBK, 0.0), 0)  # MEP p.127: MBK, MAK
    assert meter.table_bytes(et(51), 0.0)[0] == 0x81


# ---- transactions -----------------------------------------------------------------------

# MEP p.44-45: transaction 2, one partial read of BT23 offset 0 count 44, size 17 bytes
SAMPLE_TRANSACTION = bytes.fromhex("1100 00 0200 0800 3F 0017 000000 002C 0200")


@pytest.mark.parametrize("number", [52, 27])
def test_request_table_takes_the_guide_transaction(client, meter, number):
    client.logon(MK)
    assert client.write(et(number), SAMPLE_TRANSACTION) == OK
    data = client.read(et(number))
    assert data[:17] == SAMPLE_TRANSACTION
    request = _layout(meter, number).parse(data)
    assert (request.transaction_size, request.transaction_type,
            request.transaction_number) == (17, 0, 2)
    assert client.write(et(number), b"\x03", 2) == OK  # type 3: group broadcast request
    group_request = SAMPLE_TRANSACTION[:2] + b"\x03" + SAMPLE_TRANSACTION[3:]
    assert client.read(et(number), 0, 17) == group_request


@pytest.mark.parametrize("number", [52, 27])
@pytest.mark.parametrize("offset, data", [
    (2, b"\x01"),  # a response type in a request table
    (2, b"\x04"),
    (0, (769).to_bytes(2, "little")),  # larger than ET11.7
    (0, (6).to_bytes(2, "little")),  # no room for header and closing number
])
def test_request_table_refuses_bad_headers(client, meter, number, offset, data):
    client.logon(MK)
    assert client.write(et(number), SAMPLE_TRANSACTION) == OK
    before = client.read(et(number))
    assert client.write(et(number), data, offset) == ERR
    assert client.read(et(number)) == before


def test_transaction_table_keys(client, meter):
    client.logon(RK)
    assert client.read(et(52), 0, 5) == bytes(5)
    assert client.write(et(52), SAMPLE_TRANSACTION) == ISC
    assert client.write(et(27), SAMPLE_TRANSACTION) == ISC
    meter.write_table(et(52), SAMPLE_TRANSACTION, WriteContext(Key.MBK, 0.0))  # MEP p.130
    meter.write_table(et(27), SAMPLE_TRANSACTION, WriteContext(Key.PLC, 0.0))
    with pytest.raises(ServiceError) as refused:  # ET27 belongs to the power line
        meter.write_table(et(27), SAMPLE_TRANSACTION, WriteContext(Key.MAK, 0.0))
    assert refused.value.code == ResponseCode.ISC
    with pytest.raises(ServiceError) as refused:  # ET28 is not covered by the MEP guide
        meter.read_table(et(28), Key.MBK, 0.0)
    assert refused.value.code == ResponseCode.ISC


# ---- read-only tables ---------------------------------------------------------------------

@pytest.mark.parametrize("number", READ_ONLY)
def test_read_only_tables_refuse_writes(client, meter, number):
    client.logon(MK)
    assert client.write(et(number), b"\x01", 0) == IAR


def test_procedure_response_tables_use_bt08s_layout(meter):
    for number in (59, 85):
        values = _layout(meter, number).parse(meter.table_bytes(et(number), 0.0))
        assert set(values) - {"_io"} == {"procedure", "sequence_number", "result_code", "data"}
        assert len(values.data) == meter.dims.procedure_response_max


def test_et31_entries_hold_a_bt23_record(meter):
    entry = _layout(meter, 31).subcons[-1].subcon.subcon  # ARRAY of one-time read records
    assert entry.sizeof() == 5 + 1 + len(meter.table_bytes(23, 0.0))  # MEP p.105


# ---- one-time-read request queues ------------------------------------------------------

def _meter_otr(status, read_time=None, number=7) -> bytes:
    stamp = bytes([read_time.year - 2000, read_time.month, read_time.day, read_time.hour,
                   read_time.minute, read_time.second]) if read_time else bytes(6)
    return number.to_bytes(2, "little") + bytes([status]) + stamp + bytes(8)


def test_et19_queue_accepts_requests_and_keeps_meter_fields(client, meter):
    client.logon(MK)
    entry = _meter_otr(OTR_PENDING, dt.datetime(2026, 3, 1, 0, 0, 0))
    assert client.write(et(19), entry, 17) == OK
    assert client.read(et(19), 17, 17) == entry
    completed = entry[:9] + bytes([26, 3, 1, 0, 0, 5]) + (3).to_bytes(2, "little")
    assert client.write(et(19), completed, 17) == OK  # the results are the meter's
    assert client.read(et(19), 17, 17) == entry
    before = client.read(et(19))
    assert client.write(et(19), bytes([OTR_COMPLETED]), 17 + 2) == ERR
    assert client.write(et(19), bytes([0, 13, 1]), 17 + 3) == ERR  # month 13
    assert client.read(et(19)) == before
    client.logon(RK)
    assert client.write(et(19), bytes(17)) == ISC


def test_et20_queue_entry(client, meter):
    client.logon(PK)
    entry = (9).to_bytes(2, "little") + (0x03F8).to_bytes(2, "little") + bytes([OTR_PENDING])
    entry += bytes(12)  # as soon as possible, not completed
    assert client.write(et(20), entry, 3 * 17) == OK
    values = _layout(meter, 20).parse(client.read(et(20)))
    assert values.entries[3].device_handle == 0x03F8 and values.entries[3].status == OTR_PENDING
    assert client.write(et(20), bytes([5]), 3 * 17 + 4) == ERR  # no such status
