"""ET89-ET98: LN status and dimensions, the P2P gateway tables (no module fitted), and the LN
meter configuration, against the MEP guide (p.186-196) and the OPG appendix (p.62-63)."""

from __future__ import annotations

import pytest
from conftest import MK, PK, RK, LinkClient

from meter_emu.clock import ManualClock
from meter_emu.device.access import Key
from meter_emu.device.errors import ResponseCode, ServiceError
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, et
from meter_emu.tables.catalog import WriteContext
from meter_emu.tables.network import tls_required

NOW = 1_767_225_600.0
OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"
NETWORK = [et(n) for n in (89, 90, 92, 93, 94, 95, 96, 97, 98)]
A = 8 * 3  # ET97's "A": 8 bytes per FTz message, ET90.16 = 3 (MEP p.192-193)


def meter_at(firmware: str) -> Meter:
    return Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))


def client_for(meter: Meter, password: bytes = MK) -> LinkClient:
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(password)
    return client


def size(meter: Meter, table_id: int) -> int:
    return CATALOG[table_id].layout_for(meter).sizeof()


@pytest.mark.parametrize("table_id", NETWORK)
def test_full_and_partial_reads_match_the_layout(table_id):
    meter = meter_at("4.60.00")
    client = client_for(meter, RK)
    full = client.read(table_id)
    layout = CATALOG[table_id].layout_for(meter)
    assert len(full) == layout.sizeof() > 0
    assert layout.build(layout.parse(full)) == full
    count = min(12, len(full) - 1)
    assert client.read(table_id, 1, count) == full[1:1 + count]


def test_default_firmware_predates_the_ln_and_p2p_tables(client):
    client.logon(MK)
    for table_id in NETWORK[1:]:
        assert client.read(table_id) == b"", CATALOG[table_id].label
    assert len(client.read(et(89))) == 68  # MEP p.187: MEP1/MEP2 fields end at 68
    assert client.write(et(97), b"\x01") == IAR  # nothing to write


@pytest.mark.parametrize("firmware, sizes", [
    ("3.82.00", {89: 68, 90: 17, 92: 0, 95: 0, 97: A + 63, 98: 0}),
    ("4.00.01", {89: 68, 90: 0, 92: 0, 95: 0, 97: 0, 98: 0}),  # no FTz on 4.00/4.01
    ("4.02.00", {89: 68, 90: 17, 92: 0, 95: 0, 97: A + 101, 98: 0}),
    ("4.10.00", {89: 68, 90: 16 + 1, 92: 73, 95: 329, 97: A + 101, 98: 0}),
    ("4.20.00", {89: 68, 90: 20, 92: 73, 95: 329 + 23, 97: A + 101, 98: 2 + 200}),
    ("4.50.00", {89: 131 + 1 + 4 * 8, 90: 27, 97: A + 101}),
    ("4.60.00", {89: 131 + 1 + 4 * 8 + 3 * 5, 90: 27}),
])
def test_sizes_follow_the_firmware_version(firmware, sizes):
    meter = meter_at(firmware)
    assert {n: size(meter, et(n)) for n in sizes} == sizes


def test_et90_values_and_offsets_match_the_guide():
    # MEP p.190-191: 50 (UINT16), 20, 2, 64, 32, 32, 5, 32 x5, 40, 2, 10, FTz 3; 4.20+: 200, 23
    expected = bytes.fromhex("3200 14 02 40 20 20 05 20 20 20 20 20 28 02 0A 03 C800 17"
                             .replace(" ", ""))
    assert meter_at("4.20.00").table_bytes(et(90), NOW) == expected
    # before 4.10 the FTz count keeps its offset 16 (MEP p.191)
    assert meter_at("3.82.00").table_bytes(et(90), NOW) == bytes(16) + b"\x03"
    et90 = meter_at("4.50.00").table_bytes(et(90), NOW)
    assert et90[25:27] == bytes([4, 8])  # ET89's MT90.25 entries of MT90.26 bytes


def test_et89_defaults_at_the_documented_offsets():
    et89 = meter_at("4.60.00").table_bytes(et(89), NOW)
    assert et89[:68] == bytes(68)  # MEP p.187: no MEP was ever deregistered
    assert et89[68:75] == bytes(7)  # no H1 telegram, flags clear

    def uint32(offset):
        return int.from_bytes(et89[offset:offset + 4], "little")

    for relay in (75, 92):  # Array[2] of 17 bytes from 75 (MEP p.188-189)
        assert et89[relay] == 3  # local mode
        assert [uint32(relay + k) for k in (1, 5, 9)] == [2 << 20] * 3  # state unknown
        assert uint32(relay + 13) == 1 << 19  # local: no expiry, state open
    assert et89[109:130] == bytes(21)  # image validation (MEP p.189)
    assert et89[130] == 1 and et89[131] == 0  # unread mask value 1, no disconnect blocked
    assert et89[132:] == bytes(32 + 15)  # pending security events, TLS port status


def test_et89_and_et90_are_read_only_and_readable_on_the_mep_port():
    meter = meter_at("4.60.00")
    client = client_for(meter)
    assert client.write(et(89), b"\x01") == IAR
    assert client.write(et(90), b"\x01") == IAR
    for table_id in (et(89), et(90), et(97)):  # MEP p.187, p.190, p.192: MBK, MAK
        assert meter.read_table(table_id, Key.MBK, NOW) == meter.table_bytes(table_id, NOW)


def test_p2p_tables_are_not_served_to_mep_clients():
    meter = meter_at("4.30.01")
    for n in (92, 93, 94, 95, 96, 98):
        with pytest.raises(ServiceError) as refused:
            meter.read_table(et(n), Key.MAK, NOW)
        assert refused.value.code is ResponseCode.ISC


def test_p2p_status_tables_show_no_module_and_are_read_only():
    meter = meter_at("4.30.01")
    client = client_for(meter)
    for n in (93, 95, 96, 98):
        assert client.read(et(n)) == bytes(size(meter, et(n))), f"ET{n}"
        assert client.write(et(n), b"\x01") == IAR


def et92_image(connection_type: int, address: bytes, port: int, alarms: bytes = bytes(20)):
    """Designed ET92: type, address (ET90.0 = 50 bytes), port, urgent alarms (ET90.2 = 20)."""
    port_bytes = port.to_bytes(2, "little")
    return bytes([connection_type]) + address.ljust(50, b"\0") + port_bytes + alarms


def test_et92_write_reads_back_and_bad_values_change_nothing():
    meter = meter_at("4.30.01")
    client = client_for(meter, PK)
    assert client.read(et(92)) == et92_image(0, b"", 0)  # no P2P connection configured
    image = et92_image(1, b"headend.example", 4059, b"\x05" + bytes(19))
    assert client.write(et(92), image) == OK
    assert client.read(et(92)) == image
    assert client.write(et(92), b"\x02", 0) == OK  # partial: UDP
    assert client.read(et(92))[0] == 2
    stored = client.read(et(92))
    assert client.write(et(92), b"\x03") == ERR  # unknown connection type
    assert client.write(et(92), et92_image(1, b"", 4059)) == ERR  # no head-end address
    assert client.read(et(92)) == stored
    assert client_for(meter, RK).write(et(92), image) == ISC


def test_et94_holds_the_sim_pin_for_mk_only():
    meter = meter_at("4.30.01")
    client = client_for(meter)
    assert client.read(et(94)) == bytes(6)
    assert client.write(et(94), b"\x01" + b"1234\0") == OK
    assert client.read(et(94)) == b"\x011234\0"
    assert client.write(et(94), b"12a4", 1) == ERR  # not digits
    assert client.write(et(94), b"\x02") == ERR  # enabled is 0 or 1
    assert client.read(et(94)) == b"\x011234\0"
    assert client_for(meter, PK).write(et(94), b"\x00") == ISC
    assert client_for(meter, RK).write(et(94), b"\x00") == ISC


def test_et97_defaults_and_documented_offsets():
    et97 = meter_at("4.30.01").table_bytes(et(97), NOW)
    assert len(et97) == A + 101  # the last field, TLS on MEP2, is at A+100 (MEP p.195-196)
    assert et97 == bytes(A + 101)  # MEP p.193-196: every value 0, power boost 0 from factory


def test_et97_write_reads_back_and_sets_tls_per_port():
    meter = meter_at("4.30.01")
    client = client_for(meter)
    assert not tls_required(meter, "optical")
    ftz = b"12.5kWh "
    assert client.write(et(97), ftz, 8) == OK  # second FTz message
    assert client.write(et(97), b"\x01", A) == OK  # MEP1 mask comparison
    assert client.write(et(97), b"\xff", A + 98) == OK  # TLS on optical; reserved bits kept 0
    et97 = client.read(et(97))
    assert et97[8:16] == ftz and et97[A] == 1 and et97[A + 98] == 0x01
    assert tls_required(meter, "optical") and not tls_required(meter, "mep1")
    relay = bytes(10) + b"\x09" + (15).to_bytes(2, "little") + b"\x55\x1e" + bytes([6, 30])
    assert client.write(et(97), relay, A + 63) == OK  # relay 1: LM, explicit HB, maintenance
    assert client.read(et(97), A + 63, 17) == relay
    assert client_for(meter, RK).write(et(97), b"\x00") == ISC
    assert client_for(meter, PK).write(et(97), b"\x01", A + 99) == OK
    assert tls_required(meter, "mep1")


@pytest.mark.parametrize("offset, data", [
    (A, b"\x04"),  # MEP1 ID comparison mode 0-3 (MEP p.193)
    (A + 31, b"\x07"),  # MEP2 ID comparison mode
    (A + 73, b"\x02"),  # relay mode 2-7 reserved (MEP p.194)
    (A + 76, b"\x03"),  # maintenance mode entry 2-3 reserved
    (A + 76, b"\x0c"),  # maintenance display 3 reserved (MEP p.195)
    (A + 76, b"\x60"),  # maintenance exit 3 reserved
    (A + 78, bytes([24, 0])),  # exit time hour
    (A + 80 + 78 - 63, bytes([12, 60])),  # relay 2 exit time minute
])
def test_et97_refuses_reserved_values_and_changes_nothing(offset, data):
    meter = meter_at("4.30.01")
    client = client_for(meter)
    before = client.read(et(97))
    assert client.write(et(97), data, offset) == ERR
    assert client.read(et(97)) == before


def test_a_mep_client_cannot_change_the_tls_requirement():
    meter = meter_at("4.60.00")
    meter.write_table(et(97), b"\x01", WriteContext(Key.MK, NOW), A + 100)
    image = bytearray(meter.table_bytes(et(97), NOW))
    image[A] = 2
    image[A + 98:A + 101] = b"\x01\x01\x00"
    meter.write_table(et(97), bytes(image), WriteContext(Key.MAK, NOW))  # MEP p.18, p.192
    et97 = meter.table_bytes(et(97), NOW)
    assert et97[A] == 2  # the rest of the write applies
    assert et97[A + 98:A + 101] == b"\x00\x00\x01"
    assert [tls_required(meter, port) for port in ("optical", "mep1", "mep2")] == [0, 0, 1]


def test_et97_on_firmware_3_82_has_one_mep_and_the_mbus_flag():
    meter = meter_at("3.82.00")
    client = client_for(meter)
    assert client.read(et(97)) == bytes(A + 63)
    assert client.write(et(97), b"\x03", A + 62) == OK  # MEP p.194: A+62 BOOL(1) in this column
    assert client.read(et(97), A + 62, 1) == b"\x02"  # bit 0 (power boost) is 4.02+ only
    assert not tls_required(meter, "optical")
