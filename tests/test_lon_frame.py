"""ISO/IEC 14908.1 frame codec (meter_emu/lon/frame.py) against the frames of
reference/lower-layers.md sections 11.3 and 12: every known frame decodes to the fields the
fact sheet states and re-encodes to the same bytes; arbitrary bytes only ever raise FrameError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.lon import frame as fr
from meter_emu.lon.frame import (Apdu, AuthPdu, Broadcast, FrameError, Group, GroupAck, Lpdu,
                                 NeuronId, Npdu, Spdu, SubnetNode, Tpdu, crc16_lon, decode,
                                 encode)

NID = bytes.fromhex("010203040506")

# (hex with CRC, expected Lpdu) -- section 12.1 / 12.2 / 11.3
KNOWN = [
    # 12.1 (EX LonLink.cpp): broadcast unackd query status from 1/2, domain length 0
    ("00 30 01 82 03 51 c1 08",
     Lpdu(Npdu(1, 2, Broadcast(3), Apdu(b"\x51")))),
    # 12.2: APDU, 2a 1/5 -> 1/9, domain 42, NV selector 0x0123 value 0064
    ("01 39 01 85 01 89 42 81 23 00 64 0c 40",
     Lpdu(Npdu(1, 5, SubnetNode(1, 9), Apdu(bytes.fromhex("81230064")), b"\x42"),
          delta_backlog=1)),
    # 12.2: SPDU REQUEST TID 3, ND query status
    ("01 19 01 85 01 89 42 03 51 af 07",
     Lpdu(Npdu(1, 5, SubnetNode(1, 9), Spdu(fr.REQUEST, 3, b"\x51"), b"\x42"), delta_backlog=1)),
    # 12.2: TPDU ACK TID 3
    ("01 09 01 89 01 85 42 23 b4 63",
     Lpdu(Npdu(1, 9, SubnetNode(1, 5), Tpdu(fr.ACK, 3), b"\x42"), delta_backlog=1)),
    # 12.2: broadcast service pin message (NID + program ID), source 0/0
    ("01 30 00 80 00 7f 01 02 03 04 05 06 9f 00 00 00 00 00 00 00 1e 2e",
     Lpdu(Npdu(0, 0, Broadcast(0), Apdu(b"\x7f" + NID + bytes.fromhex("9f00000000000000"))),
          delta_backlog=1)),
    # 12.2: unique-ID SPDU REQUEST TID 5, NM read memory
    ("01 1c 00 80 00 01 02 03 04 05 06 05 6d 01 00 00 06 c7 7a",
     Lpdu(Npdu(0, 0, NeuronId(NID, 0), Spdu(fr.REQUEST, 5, bytes.fromhex("6d01000006"))),
          delta_backlog=1)),
    # 12.2: AuthPDU CHALLENGE, format 2, TID 3, 8 random bytes
    ("01 29 01 89 01 85 42 83 00 01 02 03 04 05 06 07 b2 80",
     Lpdu(Npdu(1, 9, SubnetNode(1, 5), AuthPdu(fr.CHALLENGE, 3, bytes(range(8)), 2), b"\x42"),
          delta_backlog=1)),
    # 11.3 (captured from lon-stack-dx): ACKD wink to a Neuron ID, TID 3
    ("00 0c 01 85 00 80 00 00 0c 0f fe 03 70 4e 51",
     Lpdu(Npdu(1, 5, NeuronId(bytes.fromhex("8000000c0ffe"), 0), Tpdu(fr.ACKD, 3, b"\x70")))),
    # 11.3: lon-stack-dx's ACK back, flex domain, source 0/0x80 (CRC 1917, section 12.2)
    ("00 08 00 80 01 85 23 19 17",
     Lpdu(Npdu(0, 0, SubnetNode(1, 5), Tpdu(fr.ACK, 3)))),
]


@pytest.mark.parametrize("hexframe, expected", KNOWN, ids=[k[0][:23] for k in KNOWN])
def test_known_frames_decode_and_reencode(hexframe, expected):
    data = bytes.fromhex(hexframe)
    lpdu = decode(data)
    assert lpdu == expected
    assert lpdu.crc == int.from_bytes(data[-2:], "big")
    assert encode(lpdu) == data
    assert encode(expected) == data


def test_crc_check_values():
    # section 2.2 / 12.2: CRC-16/GENIBUS check value, and the DX ACK frame
    assert crc16_lon(b"123456789") == 0xD64E
    assert crc16_lon(bytes.fromhex("00080080018523")) == 0x1917
    assert encode(decode(bytes.fromhex("0030018203 51c108".replace(" ", ""))))[-2:] == b"\xc1\x08"


def test_header_bits():
    # section 2.1: priority bit 7, alternate path bit 6, backlog bits 5..0
    lpdu = Lpdu(Npdu(1, 2, SubnetNode(3, 4), Tpdu(fr.ACKD, 7, b"\x30")), True, True, 63)
    data = encode(lpdu)
    assert data[0] == 0xFF
    assert data[1] == 0x08  # version 0, TPDU, format 2, no domain
    assert decode(data) == lpdu


@pytest.mark.parametrize("domain, code", [(b"", 0), (b"\x42", 1), (b"abc", 2), (b"abcdef", 3)])
def test_domain_lengths(domain, code):
    lpdu = Lpdu(Npdu(1, 2, SubnetNode(3, 4), Spdu(fr.REQUEST, 1, b"\x30"), domain))
    data = encode(lpdu)
    assert data[1] & 3 == code
    assert data[6:6 + len(domain)] == domain
    assert decode(data) == lpdu


def test_domain_of_two_bytes_is_refused():
    with pytest.raises(FrameError):
        encode(Lpdu(Npdu(1, 2, SubnetNode(3, 4), Apdu(b"\x30"), b"ab")))


@pytest.mark.parametrize("dst, fmt, address", [
    (Broadcast(0), 0, "01 82 00"),
    (Broadcast(7), 0, "01 82 07"),
    (Group(200), 1, "01 82 c8"),
    (SubnetNode(3, 127), 2, "01 82 03 ff"),
    (GroupAck(3, 4, 200, 63), 2, "01 02 03 84 c8 3f"),  # 2b: source selector bit clear
    (NeuronId(NID, 9), 3, "01 82 09 01 02 03 04 05 06"),
])
def test_address_formats(dst, fmt, address):
    # section 3.2
    lpdu = Lpdu(Npdu(1, 2, dst, Tpdu(fr.ACK, 1)))
    data = encode(lpdu)
    assert (data[1] >> 2) & 3 == fmt
    assert data[2:-3] == bytes.fromhex(address)
    assert decode(data) == lpdu


def test_pdu_layouts():
    # section 4.1: REMINDER = header, M_List length, M_List; REM_MSG adds the APDU
    rem = Lpdu(Npdu(1, 2, Group(5), Tpdu(fr.REMINDER, 4, mlist=b"\x05\x80\x01")))
    assert encode(rem)[5:-2] == bytes.fromhex("44 03 05 80 01")
    remmsg = Lpdu(Npdu(1, 2, Group(5), Spdu(fr.REM_MSG, 4, b"\x30\x01", True, b"\x03")))
    assert encode(remmsg)[5:-2] == bytes.fromhex("d4 01 03 30 01")
    # section 4.4: group AuthPDU carries the group after the 8 bytes
    auth = Lpdu(Npdu(1, 2, GroupAck(3, 4, 5, 6), AuthPdu(fr.CHALLENGE_OMA, 9, bytes(8), 1, 5)))
    assert encode(auth)[8:-2] == bytes.fromhex("59 0000000000000000 05")
    for lpdu in (rem, remmsg, auth):
        assert decode(encode(lpdu)) == lpdu


def test_version_2_twelve_bit_transaction_numbers():
    # section 4.2: high 4 bits in the header nibble, low 8 bits in the next byte
    lpdu = Lpdu(Npdu(1, 2, SubnetNode(3, 4), Spdu(fr.REQUEST, 0xABC, b"\x30"), version=2))
    data = encode(lpdu)
    assert data[1] >> 6 == 2
    assert data[6:9] == bytes.fromhex("0a bc 30")
    assert decode(data) == lpdu
    auth = Lpdu(Npdu(1, 2, SubnetNode(3, 4), AuthPdu(fr.REPLY, 0x123, bytes(8)), version=2))
    assert decode(encode(auth)) == auth


@pytest.mark.parametrize("hexframe, reason", [
    ("00 30 01 82 03 51 c1 09", "CRC"),
    ("00 30 01 82", "too short"),
    ("40 30 01 82 03 51", "version"),  # version 1 (CRC fixed below)
    ("00 09 01 89 01 85", "domain"),  # frame ends inside the domain
    ("00 08 01 89 01 85 23 00", "after an acknowledgement"),
    ("00 18 01 89 01 85 13", "type"),  # SPDU type 1 is not defined
])
def test_bad_frames_say_why(hexframe, reason):
    body = bytes.fromhex(hexframe)
    if reason not in ("CRC", "too short"):
        body = body[:1] + bytes([body[1] | (0x40 if reason == "version" else 0)]) + body[2:]
        crc = crc16_lon(body)
        body += bytes((crc >> 8, crc & 0xFF))
    with pytest.raises(FrameError, match=reason):
        decode(body)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_frame_error(data):
    for candidate in (data, data + crc16_lon(data).to_bytes(2, "big")):
        try:
            lpdu = decode(candidate)
        except FrameError:
            continue
        assert encode(lpdu) == candidate  # what decodes re-encodes to the same bytes


_byte = st.integers(0, 255)
_node = st.integers(0, 127)
_addresses = st.one_of(
    st.builds(Broadcast, _byte), st.builds(Group, _byte), st.builds(SubnetNode, _byte, _node),
    st.builds(GroupAck, _byte, _node, _byte, st.integers(0, 63)),
    st.builds(NeuronId, st.binary(min_size=6, max_size=6), _byte))
_apdu = st.binary(min_size=1, max_size=40)
_mlist = st.binary(max_size=8)


def _pdus(version):
    tid = st.integers(0, 0xFFF if version == 2 else 15)
    return st.one_of(
        st.builds(Apdu, _apdu),
        st.builds(Tpdu, st.sampled_from([fr.ACKD, fr.UNACKD_RPT]), tid, _apdu, st.booleans()),
        st.builds(Tpdu, st.just(fr.ACK), tid, st.just(b""), st.booleans()),
        st.builds(Tpdu, st.just(fr.REMINDER), tid, st.just(b""), st.booleans(), _mlist),
        st.builds(Spdu, st.sampled_from([fr.REQUEST, fr.RESPONSE]), tid, _apdu, st.booleans()),
        st.builds(Spdu, st.just(fr.REM_MSG), tid, _apdu, st.booleans(), _mlist),
        st.builds(AuthPdu, st.integers(0, 3), tid, st.binary(min_size=8, max_size=8),
                  st.sampled_from([0, 2, 3]), st.none()),
        st.builds(AuthPdu, st.integers(0, 3), tid, st.binary(min_size=8, max_size=8),
                  st.just(1), _byte))


@st.composite
def _lpdus(draw):
    version = draw(st.sampled_from([0, 2]))
    npdu = Npdu(draw(_byte), draw(_node), draw(_addresses), draw(_pdus(version)),
                draw(st.sampled_from([b"", b"\x01", b"abc", b"abcdef"])), version)
    return Lpdu(npdu, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 63)))


@settings(max_examples=400, deadline=None)
@given(_lpdus())
def test_round_trip(lpdu):
    assert decode(encode(lpdu)) == lpdu
