"""The C12.18 data link: known-answer frames (openHAB binding unit test frames,
reference/osgp-app-layer.md section 11.4), ACK/NAK, retransmission, multi-packet, time-outs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.crc import crc16
from meter_emu.ports.optical.link import ACK, NAK, frame

from conftest import MK, LinkClient, parse_packet

def H(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_crc16_x25_check_value():
    assert crc16(b"123456789") == 0x906E


def test_known_request_frames_byte_exact():
    # section 11.4: client frames from the openHAB binding's unit test, CRC low byte first
    assert frame(H("3F00170000000008"), ctrl=0x20) == H("EE 20 00 0008 3F00170000000008 03F2")[:1] \
        + H("00 20 00 0008 3F00170000000008 03F2")
    assert frame(H("3F001C0102030008")) == H("EE00 0000 0008 3F001C0102030008 C029")
    assert frame(H("6100400206")) == H("EE00 0000 0005 6100400206 1D15")
    assert frame(H("50000130303030202020202020")) == H(
        "EE00 0000 000D 50000130303030202020202020 E760"
    )
    security = b"\x51" + b"0123456789abcdefghij"
    assert frame(security) == H("EE0000000015") + security + H("806D")


def test_ident_and_terminate_responses_byte_exact(client):
    # the meter's answers in the same unit test: ident response and terminate response
    out = client.raw(H("EE0000000001201310"))
    assert out == bytes([ACK]) + H("EE00000000050000020000A25A")
    assert client.raw(bytes([ACK])) == b""
    fresh = LinkClient(type(client.link)(client.link.session))
    fresh.link.session._reset()
    assert fresh.raw(frame(b"\x21")) == bytes([ACK]) + H("EE0000000001001131")


def test_bad_crc_is_nakked_and_not_executed(client, meter):
    client.logon()
    good = frame(b"\x30\x00\x01", ctrl=0x00)
    corrupted = good[:-1] + bytes([good[-1] ^ 0xFF])
    assert client.raw(corrupted) == bytes([NAK])
    assert client.link.stats["naks_sent"] == 1
    # the client retries with the same frame and gets the answer
    out = client.raw(good)
    assert out[0] == ACK and parse_packet(out[1:])[0]["data"][0] == 0


def test_noise_before_the_start_byte_is_ignored(client):
    out = client.raw(b"\x55\x55\x00\x12" + frame(b"\x20"))
    assert out[0] == ACK and parse_packet(out[1:])[0]["data"] == H("0000020000")


def test_impossible_length_is_nakked(client):
    assert client.raw(H("EE00 0000 2000")) == bytes([NAK])


def test_partial_frame_dropped_after_inter_character_timeout(client):
    packet = frame(b"\x20")
    assert client.link.receive(packet[:4], 10.0) == b""
    # the rest arrives 2 s later: the partial packet is gone, so these bytes are noise
    assert client.link.receive(packet[4:], 12.0) == b""
    out = client.link.receive(packet, 12.1)
    assert out[0] == ACK


def test_retransmitted_request_is_answered_from_cache_not_executed_twice(client, meter):
    client.logon()
    # BP10 through BT07: a second execution would be refused (repeated PSN) and log twice
    request = H("0A00") + b"\x05" + H("03") + H("1E060F0C2238") + b"\x00"
    apdu = b"\x40\x00\x07" + len(request).to_bytes(2, "big") + request
    apdu += bytes([(-sum(request)) & 0xFF])
    packet = frame(apdu, ctrl=client.toggle)
    first = client.raw(packet)
    client.raw(bytes([ACK]))
    second = client.raw(packet)  # the client did not hear our answer and sends it again
    client.raw(bytes([ACK]))
    assert first == second
    assert parse_packet(first[1:])[0]["data"] == b"\x00"
    assert client.link.stats["duplicates"] == 1
    assert [entry[3] for entry in meter.state.history.entries] == [3, 4, 9]  # time changed, procedure invoked


def test_long_response_is_split_into_packets_and_waits_for_acks(client, meter, clock):
    assert client.request(b"\x20")[0] == 0
    assert client.request(H("60004004")) == H("0000400406")  # 64-byte packets, 4 packets
    assert client.request(b"\x50\x00\x01tester    ") == b"\x00"
    out = client.send_packet(b"\x30\x00\x00")  # BT00: 79 bytes -> 83-byte response
    assert out[0] == ACK
    first, rest = parse_packet(out[1:])
    assert rest == b""
    assert first["ctrl"] & 0xC0 == 0xC0 and first["seq"] == 1 and len(first["data"]) == 56
    assert client.link.next_deadline() is not None  # waiting for our ACK
    second, _ = parse_packet(client.raw(bytes([ACK])))
    assert second["ctrl"] & 0xC0 == 0x80 and second["seq"] == 0
    assert (first["ctrl"] ^ second["ctrl"]) & 0x20  # the toggle bit flips per packet
    response = first["data"] + second["data"]
    assert response[3:-1] == meter.table_bytes(0, clock.now())


def test_response_larger_than_negotiated_answers_rno(client):
    assert client.request(b"\x20")[0] == 0
    assert client.request(H("60004001"))[0] == 0  # one 64-byte packet only
    assert client.request(b"\x50\x00\x01tester    ") == b"\x00"
    assert client.request(b"\x30\x00\x00") == b"\x09"  # BT00 needs 2 packets: renegotiate
    assert client.request(H("3F0000000000000A"))[0] == 0  # a partial read fits


def test_nak_and_ack_timeout_resend_then_give_up(client):
    out = client.send_packet(b"\x20")
    response = out[1:]
    assert client.raw(bytes([NAK])) == response  # NAK: same packet again
    deadline = client.link.next_deadline()
    assert client.link.poll(deadline - 0.1) == b""
    assert client.link.poll(deadline) == response  # third try after the ACK time-out
    assert client.link.poll(client.link.next_deadline()) == b""  # given up after 3 tries
    assert client.link.next_deadline() is None
    assert client.link.stats["gave_up"] == 1


def test_multi_packet_request_is_reassembled(client, meter, clock):
    client.logon(MK)
    serial = b"MULTI-PACKET-SERIAL"
    data = serial.ljust(30, b"\0")
    apdu = b"\x4F\x08\x03\x00\x00\x00" + len(data).to_bytes(2, "big") + data
    apdu += bytes([(-sum(data)) & 0xFF])
    first, second = apdu[:20], apdu[20:]
    assert client.raw(frame(first, ctrl=0xC0 | client.toggle, seq=1)) == bytes([ACK])
    out = client.raw(frame(second, ctrl=0x80 | (client.toggle ^ 0x20), seq=0))
    assert out[0] == ACK and parse_packet(out[1:])[0]["data"] == b"\x00"
    assert meter.table_bytes(2051, clock.now())[:30] == data


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_never_break_the_link(chunks):
    from meter_emu.clock import ManualClock
    from meter_emu.device.meter import Meter
    from meter_emu.ports.optical import optical_protocol
    from meter_emu.profile import load_profile

    link = optical_protocol(Meter(load_profile()), ManualClock())
    client = LinkClient(link)
    for chunk in chunks:
        out = client.raw(chunk)
        assert isinstance(out, bytes)
    # and it still answers a proper request afterwards (after the inter-character time-out)
    client.now += 1.0
    client.raw(bytes([ACK]) * 4)
    out = client.raw(frame(b"\x20", ctrl=0x20))
    assert out[:1] == bytes([ACK])
