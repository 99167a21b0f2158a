"""The C12.18/PSEM client (meter_emu/client/optical.py): byte-exact framing, the link rules
(multi-packet both ways, NAK on a bad CRC, resend on silence), the PSEM services, against the
in-process optical link and against a running ``meter-emu run`` (TCP and pty), with termineter's
``c1218`` library as the independent reader."""

from __future__ import annotations

import pytest
from conftest import MK, RK

from meter_emu.client.optical import (LinkError, LinkTransport, OpticalClient, PacketParser,
                                      PsemError, connect, open_transport, parse_password)
from meter_emu.crc import crc16
from meter_emu.device.firmware import build_image
from meter_emu.ports.optical import optical_protocol
from meter_emu.ports.optical.link import ACK, NAK

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

ET17, EP08, EP09 = 2048 + 17, 2048 + 8, 2048 + 9
BT06 = 6


class Recording:
    """A transport in front of another: keeps what the client wrote, and can corrupt or drop
    the meter's next answers (the line noise a real optical head sees)."""

    def __init__(self, inner):
        self.inner, self.written = inner, []
        self.corrupt_next = self.drop_next = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        data = self.inner.read(timeout)
        if data and self.drop_next:
            self.drop_next -= 1
            return b""
        if data and self.corrupt_next and len(data) > 8:
            self.corrupt_next -= 1
            return data[:-1] + bytes([data[-1] ^ 0xFF])  # the CRC's high byte
        return data

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def link(meter, clock):
    return optical_protocol(meter, clock)


@pytest.fixture
def wire(link):
    return Recording(LinkTransport(link))


@pytest.fixture
def optical(wire):
    return OpticalClient(wire, response_timeout=0.05)


def test_ident_packet_is_the_c1218_ident_frame(optical, wire):
    assert optical.ident()[:3] == bytes([0x00, 0x02, 0x00])  # C12.18, version 2, revision 0
    # the well-known C12.18 ident packet: EE, identity 0, ctrl 0, seq 0, length 1, 0x20, CRC
    assert wire.written[0] == bytes.fromhex("EE0000000001201310")
    assert wire.written[1] == bytes([ACK])  # the response packet acknowledged


def test_parser_reports_acks_naks_packets_and_bad_crcs():
    good = bytes.fromhex("EE0000000001201310")
    bad = good[:-1] + b"\x00"
    events = PacketParser().feed(b"\x06\x15\x42" + good + bad)
    assert events[:2] == [ACK, NAK]  # 0x42 outside a packet is noise
    assert (events[2].data, events[2].crc_ok, events[3].crc_ok) == (b"\x20", True, False)
    assert crc16(good[:-2]) == int.from_bytes(good[-2:], "little")


def test_session_reads_writes_and_runs_procedures(optical, meter, clock):
    with optical.session(parse_password("MK-meter-emu-default"), user_id=7):
        assert optical.read(1) == meter.table_bytes(1, clock.now())  # full read
        assert optical.read(1, 14, 2) == meter.table_bytes(1, clock.now())[14:16]  # partial
        optical.write(BT06, b"E2E owner", offset=0)  # partial write
        assert optical.read(BT06, 0, 9) == b"E2E owner"
        assert optical.procedure(EP08) == (0, bytes([1]) + bytes(11))  # bank 1 erased
        assert optical.procedure(EP08)[0] == 0  # a new PSN each call: runs again
    assert meter.state.last_psn == 2


def test_multi_packet_request_and_response(optical, wire):
    optical.ident()
    assert optical.negotiate(64, 32) == (64, 32)
    optical.logon()
    optical.security(MK.ljust(20, b"\0"))
    wire.written.clear()
    image = build_image(bytes(8), "3.20.05", bytes(100))
    assert optical.procedure(EP09, bytes(4) + image[:64]) == (0, bytes([0, 0, 1, 0]) + bytes(8))
    packets = [w for w in wire.written if w[0] == 0xEE]  # BT07: 8 + 71 bytes in two packets
    assert [(p[2] & 0xC0, p[3]) for p in packets[:2]] == [(0xC0, 1), (0x80, 0)]  # first, last
    assert optical.read(ET17) == bytes([1]) + bytes(1249)  # 1254 bytes: 23 packets of 64
    assert optical.read_range(ET17, 0, 200) == bytes([1]) + bytes(199)


def test_bad_crc_is_nakked_and_silence_resent(optical, wire, meter):
    optical.ident()
    optical.negotiate()
    optical.logon()
    wire.corrupt_next = 1
    optical.security(MK.ljust(20, b"\0"))  # the meter resends its answer after our NAK
    assert bytes([NAK]) in wire.written
    wire.drop_next = 1  # ACK and answer lost: we send the packet again, the meter its answer
    assert optical.read(1, 0, 4) == b"NES "
    requests = [w for w in wire.written if w[:1] == b"\xEE"]
    assert requests[-1] == requests[-2]  # the very same packet, toggle bit included
    assert meter.state.last_psn == 255  # nothing ran twice (a read runs nothing anyway)


def test_psem_errors_are_reported_with_their_code(optical):
    with pytest.raises(PsemError) as refused:
        with optical.session(parse_password("not the key")):
            pass
    assert refused.value.code == 0x03 and "ISC" in str(refused.value)
    with optical.session(RK.ljust(20, b"\0")):
        with pytest.raises(PsemError) as write:
            optical.write(BT06, b"x", offset=0)
        assert write.value.code == 0x03  # RK may not write


class Silent:
    """A line with nobody at the other end."""

    def write(self, data: bytes) -> None:
        pass

    def read(self, timeout: float) -> bytes:
        return b""

    def close(self) -> None:
        pass


def test_no_meter_is_a_link_error():
    with pytest.raises(LinkError, match="no ACK"):
        OpticalClient(Silent(), response_timeout=0.01).ident()
    with pytest.raises(LinkError, match="cannot connect"):
        connect("tcp://127.0.0.1:1")
    with pytest.raises(ValueError):
        open_transport("http://example")
    with pytest.raises(ValueError):
        parse_password("x" * 21)
    assert parse_password("hex:4d4b") == b"MK".ljust(20, b"\0")


@pytest.mark.parametrize("port", ["tcp://127.0.0.1:0", "pty"])
def test_against_a_running_meter(start_emulator, port):
    emu = start_emulator(optical=port)
    client = connect(emu.optical)
    try:
        with client.session(MK.ljust(20, b"\0")):
            bt01 = client.read(1)
            assert client.procedure(EP08)[0] == 0
    finally:
        client.close()
    assert bt01 == e2e.read_table_lib(emu.client_url, 1)  # termineter's c1218 reads the same
