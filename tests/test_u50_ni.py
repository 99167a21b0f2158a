"""The NI role (phy/ni.py) and the host role (phy/u50_host.py) of the U50 link, in memory.

The §11.3 capture (lower-layers.md) is replayed from the host's side and the NI's bytes are
compared byte for byte, with the capture's NI Neuron ID 80 00 00 0c 0f fe: start-up (resync,
reset, Neuron ID, D1, E0), a layer-2 transmit (CRC added by the NI), the uplink 1A of the
ACKD wink and the host's ACK frame, whose CRC 19 17 §12.2 gives.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.lon.frame import crc16_lon
from meter_emu.lon.node import LinkInfo
from meter_emu.phy.ni import NI_NEURON_ID, NetworkInterface
from meter_emu.phy.u50 import CP_NULL, code_packet, message_packet
from meter_emu.phy.u50_host import HostSession

H = bytes.fromhex
CAPTURE_NID = H("8000000c0ffe")
WINK = H("000c01850080 00000c0ffe 0370 4e51".replace(" ", ""))  # the 1A frame of §11.3
ACK_OUT = H("0008008001852319 17".replace(" ", ""))             # the DX ACK frame, CRC 1917


def with_crc(lpdu: bytes) -> bytes:
    crc = crc16_lon(lpdu)
    return lpdu + bytes([crc >> 8, crc & 0xFF])


def ni_at(layer2: bool = True, **kwargs) -> tuple[NetworkInterface, list]:
    line: list[bytes] = []
    ni = NetworkInterface(line.append, **kwargs)
    ni.feed(H("7e07007b"), 0.0)
    if layer2:
        ni.feed(code_packet(1, True, 2, 1) + message_packet(0xD1), 0.0)
    ni.take_output()
    return ni, line


def test_capture_11_3_byte_for_byte():
    line: list[bytes] = []
    ni = NetworkInterface(line.append, neuron_id=CAPTURE_NID)
    steps = [  # (host -> NI, NI -> host), as §11.3 lists them
        ("7e07007b", "7e100072 7e22015f 0350000f9e"),
        ("7e300052", ""),
        ("7e52012f 1422700005" + "00" * 11 + "6d01000006e1",
         "7e100072 7e42013f 1616700107" + "00" * 11 + "2d8000000c0ffe96"),
        ("7e9201ef 01d12e", "7e66d14b 7e000082 7e8201ff 0350010f9d"),
        ("7e06e09c", "7ea201df 05e01ea001005c"),
        ("7e32014f 1512003000800 07f8000000c0ffe9fffff0000000001 73".replace(" ", ""),
         "7e100072"),
    ]
    for now, (host, want) in enumerate(steps):
        ni.feed(H(host.replace(" ", "")), now * 0.01)
        assert ni.take_output().hex() == want.replace(" ", ""), f"step {now}"
    # the 12 frame went on the line with the CRC the NI added
    assert line == [with_crc(H("003000800 07f8000000c0ffe9fffff0000000001".replace(" ", "")))]
    # two frames the capture leaves out ("ND query status and NM read memory ... the same
    # way") take sequence numbers 6 and 7; the wink then comes up as seq 1, byte for byte
    for seq, frame in ((6, with_crc(H("00190185018942 0351".replace(" ", "")))),
                       (7, with_crc(H("001c008000 01020304050605 6d01000006".replace(" ", ""))))):
        ni.deliver(frame, 1.0)
        assert ni.take_output()[:4] == code_packet(seq, False, 2, 1)
        ni.feed(code_packet(0, True, CP_NULL), 1.0)
    ni.deliver(WINK, 1.1)
    assert ni.take_output().hex() == "7e22015f101a" + WINK.hex() + "99"
    ni.feed(H("7e9201ef 0812000800800185 23b5".replace(" ", "")), 1.2)
    assert line[-1] == ACK_OUT


def test_status_mode_switch_and_layer5_behaviour():
    ni, line = ni_at(layer2=False)
    ni.feed(code_packet(1, False, 6, 0xE0), 0.0)
    assert ni.take_output() == code_packet(2, False, 2, 1) + message_packet(0xE0, H("1ea00000"))
    # layer 5: nothing from the line goes up, a layer-2 transmit is dropped
    ni.deliver(WINK, 0.1)
    ni.feed(code_packet(2, True, 2, 1) + message_packet(0x12, WINK[:-2]), 0.1)
    assert ni.take_output() == code_packet(0, True, CP_NULL) and line == []
    # D1 via the host API form E5 01, then D0 back
    ni.feed(code_packet(3, False, 2, 1) + message_packet(0xE5, H("01")), 0.2)
    assert ni.take_output() == (code_packet(0, True, CP_NULL)  # E5 is no MIP command: ACKed
                                + code_packet(3, False, 6, 0xD1) + code_packet(0, False, CP_NULL)
                                + code_packet(4, False, 2, 1) + message_packet(0x50, H("010f")))
    ni.feed(code_packet(4, False, 2, 1) + message_packet(0xD0), 0.3)
    assert ni.take_output()[:4] == code_packet(5, False, 6, 0xD0)
    assert ni.layer == 0


def test_phase_and_ssi_modes():
    ni, _ = ni_at()
    info = LinkInfo(strength_db=71.4, margin_db=18.6)
    ni.feed(code_packet(2, False, 2, 1) + message_packet(0x42, H("00")), 0.0)
    assert ni.take_output() == code_packet(4, False, 2, 1) + message_packet(0x40, H("32"))
    ni.feed(code_packet(0, True, CP_NULL), 0.0)
    ni.deliver(WINK, 0.0, info)
    assert ni.take_output()[4:] == message_packet(0x1C, b"\x01" + WINK + bytes([71, 19]))
    ni.feed(code_packet(0, True, CP_NULL), 0.0)
    ni.deliver(WINK, 0.0)  # the line measured nothing: FF FF
    assert ni.take_output()[4:] == message_packet(0x1C, b"\x01" + WINK + H("ffff"))
    ni.feed(code_packet(0, True, CP_NULL) + code_packet(3, False, 2, 1)
            + message_packet(0x41), 0.0)
    ni.take_output()
    ni.feed(code_packet(0, True, CP_NULL), 0.0)
    ni.deliver(WINK, 0.0, info)
    assert ni.take_output()[4:] == message_packet(0x1B, b"\x01" + WINK)


def test_local_network_management():
    ni, _ = ni_at(layer2=False)

    def nm(seq, apdu):
        sicb = bytes([0x6F, 0x08, len(apdu)]) + bytes(11) + apdu
        ni.feed(code_packet(seq, False, 2, 1) + message_packet(0x22, sicb), 0.0)
        out = ni.take_output()
        assert out[:4] == code_packet(0, True, CP_NULL)  # ACKed first, answered after
        ni.feed(code_packet(0, True, CP_NULL), 0.0)
        return out[8:]

    assert nm(1, H("6d01000006")) == message_packet(0x16, H("6f0107") + bytes(11) + H("2d")
                                                    + NI_NEURON_ID)
    assert nm(2, H("6d01000d08")) == message_packet(0x16, H("6f0109") + bytes(11) + H("2d")
                                                    + b"MTREMUNI")
    status = nm(3, H("51"))
    assert status == message_packet(0x16, H("6f0110") + bytes(11) + H("31") + bytes(10)
                                    + H("0104a0001e"))
    assert nm(4, H("6d010000ff")) == message_packet(0x16, H("6f0101") + bytes(11) + H("0d"))
    # malformed (APDU length beyond the SICB): ACKed, not answered
    ni.feed(code_packet(5, False, 2, 1) + message_packet(0x22, H("6f0809")), 0.0)
    assert ni.take_output() == code_packet(0, True, CP_NULL)


def test_receive_errors_and_flow_control():
    ni, _ = ni_at()
    broken = WINK[:-1] + bytes([WINK[-1] ^ 1])
    ni.deliver(broken, 0.0)
    assert ni.take_output() == code_packet(4, False, 6, 0x31)
    ni.deliver(WINK[:6], 0.0)
    assert ni.take_output() == code_packet(5, False, 6, 0x35)
    ni.feed(code_packet(2, False, 6, 0xC1), 0.0)  # host: no room, hold the uplink
    assert ni.take_output() == b""                 # C0/C1 are not ACKed
    ni.deliver(WINK, 0.0)
    ni.deliver(ACK_OUT, 0.0)
    assert ni.take_output() == b""
    ni.feed(code_packet(3, False, 6, 0xC0), 0.0)  # room again: in order
    assert ni.take_output() == code_packet(6, False, 2, 1) + message_packet(0x1A, WINK)
    ni.feed(code_packet(0, True, CP_NULL), 0.0)
    assert ni.take_output() == code_packet(7, False, 2, 1) + message_packet(0x1A, ACK_OUT)


def test_transmit_with_pl_flags_and_too_short():
    ni, line = ni_at()
    ni.feed(code_packet(2, False, 2, 1) + message_packet(0x1A, ACK_OUT[:-2]), 0.0)  # 12|08
    ni.feed(code_packet(3, False, 2, 1) + message_packet(0x12, H("0001")), 0.0)
    assert line == [ACK_OUT] and ni.stats["dropped"] == 1


def run(host: HostSession, ni: NetworkInterface, until: float, now: float = 0.0,
        step: float = 0.01) -> float:
    while now < until:
        now += step
        host.poll(now)
        ni.poll(now)
        out = host.take_output()
        if out:
            ni.feed(out, now)
        out = ni.take_output()
        if out:
            host.feed(out, now)
    return now


def test_host_session_brings_up_the_ni_and_carries_frames():
    line: list[bytes] = []
    ni = NetworkInterface(line.append)
    host = HostSession()
    host.start(0.0)
    assert host.transmit(WINK, 0.0)  # waits for the start-up
    now = run(host, ni, 0.5)
    assert host.ready and host.neuron_id == NI_NEURON_ID and host.status == (0x1E, 0xA0, 1, 0)
    assert line == [WINK]
    assert ni.phase_mode == 2  # the host asked for phase and SSI bytes (42 00)
    ni.deliver(ACK_OUT, now, LinkInfo(40.2, 12.0))
    run(host, ni, now + 0.1, now)
    assert host.take_frames() == [(ACK_OUT, LinkInfo(40.0, 12.0))]
    # the NI falls back to layer 5 by itself: the host switches it back
    ni.layer = 0
    ni.feed(H("7e07007b"), now)
    ni.take_output()
    ni.link.send(0x50, H("000f"), reliable=False)
    now = run(host, ni, now + 0.6, now)
    assert ni.layer == 1 and host.ready


def test_host_session_without_an_ni_fails_cleanly():
    host = HostSession()
    host.start(0.0)
    now = 0.0
    while now < 20 and host.state != "failed":
        now += 0.05
        host.poll(now)
        host.take_output()
    assert host.state == "failed"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_hurt_ni_or_host(data):
    line: list[bytes] = []
    ni = NetworkInterface(line.append)
    ni.feed(data, 0.0)
    ni.deliver(data, 0.0)
    ni.poll(1.0)
    host = HostSession()
    host.start(0.0)
    host.feed(data, 0.0)
    host.poll(1.0)
    assert isinstance(ni.take_output(), bytes) and isinstance(host.take_output(), bytes)
