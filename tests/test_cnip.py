"""CN/IP: the packet codec (reference/lower-layers.md section 11.1), the pcap writer read back by
real tshark, and the endpoint's dispatch over real UDP sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from meter_emu.cnip import packet
from meter_emu.cnip.endpoint import open_cnip
from meter_emu.cnip.pcap import PcapWriter
from meter_emu.lon import frame
from meter_emu.lon.frame import (Apdu, Broadcast, Group, Lpdu, NeuronId, Npdu, Spdu,
                                 SubnetNode, Tpdu)
from meter_emu.ports.transport import PortUrlError
from tshark_decode import our_frames, pcap_payloads, tshark_available, tshark_frames

# section 12.2: LPDUs with CRC that tshark decoded (1-byte domain 0x42)
ND_QUERY_STATUS = bytes.fromhex("01 19 01 85 01 89 42 03 51 af 07")
KNOWN_LPDUS = [bytes.fromhex(h) for h in (
    "01 39 01 85 01 89 42 81 23 00 64 0c 40",
    "01 19 01 85 01 89 42 03 51 af 07",
    "01 09 01 89 01 85 42 23 b4 63",
    "01 30 00 80 00 7f 01 02 03 04 05 06 9f 00 00 00 00 00 00 00 1e 2e",
    "01 1c 00 80 00 01 02 03 04 05 06 05 6d 01 00 00 06 c7 7a",
    "01 29 01 89 01 85 42 83 00 01 02 03 04 05 06 07 b2 80",
)]


# ---- packet ------------------------------------------------------------------------------

def test_encode_is_the_20_byte_header_then_the_lpdu():
    data = packet.encode(ND_QUERY_STATUS, 7, session=0x01020304, timestamp=0x0A0B0C0D)
    assert data == bytes.fromhex(
        "001f" "01" "01" "00" "00" "0000" "01020304" "00000007" "0a0b0c0d") + ND_QUERY_STATUS
    header, lpdu = packet.decode(data)
    assert lpdu == ND_QUERY_STATUS
    assert (header.length, header.version, header.type, header.session, header.sequence,
            header.timestamp) == (31, 1, 1, 0x01020304, 7, 0x0A0B0C0D)


def test_extended_header_is_skipped():
    plain = packet.encode(ND_QUERY_STATUS, 1)
    data = bytearray(plain[:20] + b"\xEE" * 4 + ND_QUERY_STATUS)
    data[4] = 1  # one 4-byte word of extended header
    struct.pack_into(">H", data, 0, len(data))
    assert packet.decode(bytes(data))[1] == ND_QUERY_STATUS


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d[:19], "too short"),
    (lambda d: d + b"\x00", "the header says 31 bytes"),
    (lambda d: d[:2] + b"\x02" + d[3:], "version 2"),
    (lambda d: d[:3] + b"\x03" + d[4:], "device registration"),
    (lambda d: d[:3] + b"\x55" + d[4:], r"0x55 \(unknown\)"),
    (lambda d: d[:5] + b"\x20" + d[6:], "MD5"),
    (lambda d: d[:5] + b"\x01" + d[6:], "protocol code 1"),
    (lambda d: b"\x00\x14" + d[2:20], "without an LPDU"),
])
def test_other_packets_are_refused_with_the_reason(mutate, reason):
    with pytest.raises(packet.CnipError, match=reason):
        packet.decode(mutate(packet.encode(ND_QUERY_STATUS, 1)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_only_cnip_error(data):
    try:
        header, lpdu = packet.decode(data)
    except packet.CnipError:
        return
    assert header.length == len(data) and lpdu


# ---- pcap + tshark -------------------------------------------------------------------------

needs_tshark = pytest.mark.skipif(not tshark_available(), reason="tshark is not installed")


@needs_tshark
def test_tshark_decodes_our_pcap_as_our_stack_does(tmp_path):
    """The §12.2 frames plus frames of every kind our encoder makes, written by PcapWriter
    with a random emulator port: tshark (no -d) and our decode agree field by field."""
    lpdus = list(KNOWN_LPDUS)
    for npdu in (
        Npdu(1, 5, SubnetNode(1, 9), Spdu(frame.REQUEST, 3, bytes([0x3F, 0, 1, 0, 0, 0, 0, 84])
                                          + bytes(12)), b"\x42"),
        Npdu(1, 5, SubnetNode(1, 9), Tpdu(frame.ACKD, 4, b"\x4f\x01\x02", auth=True), b"\x42"),
        Npdu(1, 9, frame.GroupAck(1, 5, 7, 3), Tpdu(frame.ACK, 4), b"\x42"),
        Npdu(1, 5, Group(7), Tpdu(frame.REM_MSG, 5, b"\x30\x00\x01", mlist=b"\x05"),
             b"\x42\x43\x44"),
        Npdu(0, 0, NeuronId(bytes(range(6))), Spdu(frame.REQUEST, 5, b"\x61\x01"), b""),
        Npdu(1, 5, Broadcast(0), Apdu(b"\x7f" + bytes(range(6)) + bytes(8)), b"\x42"),
        Npdu(1, 5, Broadcast(3), Tpdu(frame.UNACKD_RPT, 6, b"\x52\x01"), b"\x42"),
    ):
        lpdus.append(frame.encode(Lpdu(npdu, priority=True, alt_path=True, delta_backlog=5)))
    path = tmp_path / "x.pcap"
    writer = PcapWriter(path)
    for seq, lpdu in enumerate(lpdus, 1):
        writer.write(packet.encode(lpdu, seq, 0xCAFE), ("127.0.0.1", 40000),
                     ("127.0.0.1", 1628))
    writer.close()
    theirs, ours = tshark_frames(path), our_frames(path)
    assert len(theirs) == len(ours) == len(lpdus)
    for number, (a, b) in enumerate(zip(theirs, ours), 1):
        assert a == b, f"frame {number}: {lpdus[number - 1].hex()}"
    # and the values are the ones section 12.2 states, not merely equal
    assert theirs[1]["apdu_code"] == 0x51 and theirs[1]["tid"] == 3
    assert theirs[1]["data"] == "af07"  # the CRC, shown as data
    assert theirs[4]["uid"] == ["010203040506"] and theirs[4]["apdu_code"] == 0x6D


# ---- the endpoint --------------------------------------------------------------------------

class _Meter:
    def __init__(self, name):
        self.id, self.dirty = name, False


class _Node:
    """A stand-in for lon/node.py's Node where the dispatch itself is under test: records what
    the endpoint asked and answers a REQUEST to it with one RESPONSE frame."""

    def __init__(self, config, meter):
        self.config, self.meter, self.name = config, meter, meter.id
        self.asked, self.received = 0, []

    def addressed(self, lpdu):
        self.asked += 1
        dst = lpdu.npdu.dst
        own = self.config.domains[0]
        return (isinstance(dst, Broadcast) or dst == SubnetNode(own.subnet, own.node)
                or isinstance(dst, NeuronId) and dst.nid == self.config.neuron_id)

    def receive(self, lpdu, now, link=None):
        self.received.append(lpdu)
        pdu = lpdu.npdu.pdu
        if isinstance(pdu, Spdu) and pdu.type == frame.REQUEST:
            self.meter.dirty = True  # as a write would
            own = self.config.domains[0]
            answer = Npdu(own.subnet, own.node, SubnetNode(lpdu.npdu.src_subnet,
                          lpdu.npdu.src_node), Spdu(frame.RESPONSE, pdu.tid, b"\x00" + pdu.apdu),
                          lpdu.npdu.domain)
            return [frame.encode(Lpdu(answer))]
        return []

    def poll(self, now):
        return []

    def next_deadline(self):
        return None


class _Station:
    def __init__(self, index):
        from meter_emu.lon.config import CONFIGURED, Domain, NodeConfig
        self.meter = _Meter(f"meter-{index}")
        config = NodeConfig(neuron_id=bytes([0, 0, 0, 0, 0, index]),
                            domains=[Domain(b"\x42", 1, index)], state=CONFIGURED)
        self.node = _Node(config, self.meter)


def _request(dst, tid=1, apdu=b"\x61"):
    return packet.encode(frame.encode(Lpdu(Npdu(1, 100, dst, Spdu(frame.REQUEST, tid, apdu),
                                                b"\x42"))), tid)


def test_endpoint_dispatch_over_udp(tmp_path, caplog):
    stations = [_Station(i) for i in range(1, 51)]
    order = []

    def persist():
        order.append("persist")
        for s in stations:
            s.meter.dirty = False

    async def scenario():
        endpoint = await open_cnip("udp://127.0.0.1:0", stations, persist,
                                   pcap=tmp_path / "c.pcap")
        host, port = endpoint.url.removeprefix("udp://").split(":")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        async def exchange(data, expect=1):
            await loop.sock_sendto(sock, data, (host, int(port)))
            got = []
            for _ in range(expect):
                got.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 2))
            return got

        try:
            # a unicast: only the addressed station is asked, and it answers
            answer, = await exchange(_request(SubnetNode(1, 7), tid=2))
            lpdu = frame.decode(packet.decode(answer)[1])
            assert (lpdu.npdu.src_node, lpdu.npdu.pdu.type, lpdu.npdu.pdu.apdu) == \
                (7, frame.RESPONSE, b"\x00\x61")
            assert [s.node.asked for s in stations].count(1) == 1
            assert stations[6].node.asked == 1 and order == ["persist"]
            # by Neuron ID
            answer, = await exchange(_request(NeuronId(bytes([0, 0, 0, 0, 0, 9])), tid=3))
            assert frame.decode(packet.decode(answer)[1]).npdu.src_node == 9
            # garbage and a non-data packet: dropped with the reason, nobody asked
            before = sum(s.node.asked for s in stations)
            with caplog.at_level(logging.INFO, logger="meter_emu"):
                await loop.sock_sendto(sock, b"\x00\x05junk", (host, int(port)))
                bad_crc = bytearray(_request(SubnetNode(1, 7)))
                bad_crc[-1] ^= 1
                await loop.sock_sendto(sock, bytes(bad_crc), (host, int(port)))
                await asyncio.sleep(0.2)
            assert "too short" in caplog.text and "CRC" in caplog.text
            assert sum(s.node.asked for s in stations) == before
            # a broadcast reaches everyone; every station's answer also reaches the others
            answers = await exchange(_request(Broadcast(0), tid=4), expect=50)
            assert len({frame.decode(packet.decode(a)[1]).npdu.src_node for a in answers}) == 50
            # meters hear each other: station 7 answers a request "from" station 3, and both
            # station 3 and the peer get the response
            request = packet.encode(frame.encode(Lpdu(Npdu(1, 3, SubnetNode(1, 7),
                                                           Spdu(frame.REQUEST, 5, b"\x62"),
                                                           b"\x42"))), 9)
            await exchange(request)
            heard = stations[2].node.received[-1].npdu
            assert (heard.src_node, heard.pdu.type, heard.pdu.apdu) == \
                (7, frame.RESPONSE, b"\x00\x62")
        finally:
            sock.close()
            endpoint.close()
        return endpoint

    endpoint = asyncio.run(scenario())
    assert endpoint.stats["dropped"] == 2
    # the pcap holds every frame on the channel: 5 received (one with a bad CRC) + 53 answers
    assert len(pcap_payloads(tmp_path / "c.pcap")) == 5 + 53


def test_open_cnip_refuses_bad_urls():
    async def attempt(url):
        await open_cnip(url, [], lambda: None)

    for url in ("tcp://127.0.0.1:1", "udp://127.0.0.1:http"):
        with pytest.raises(PortUrlError):
            asyncio.run(attempt(url))
    assert asyncio.run(open_cnip("off", [], lambda: None)) is None
