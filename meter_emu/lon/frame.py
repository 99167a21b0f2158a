"""ISO/IEC 14908.1 frames, bytes in and bytes out: the L2 LPDU (header byte, NPDU, CRC-16), the
L3 NPDU (header, address, domain) and the PDUs it encloses (TPDU, SPDU, AuthPDU or a bare APDU).

Layouts and bit positions: reference/lower-layers.md section 2 (L2 header, CRC), 3 (NPDU,
addresses) and 4 (TPDU/SPDU/AuthPDU). The decoder checks everything it can and raises
``FrameError`` with the reason; nothing else escapes it, whatever the bytes (a property test holds
it to that). Hot path: plain ``bytes`` indexing, no construct.

NPDU version 2 ("enhanced" mode) carries a 12-bit transaction number: its high 4 bits in the
header nibble, its low 8 bits in the byte after the header (section 4.2, inferred from public
code). Version 1 (IP encapsulation) is refused.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

__all__ = [
    "ACK", "ACKD", "APDU", "AUTH", "Address", "Apdu", "AuthPdu", "Broadcast", "CHALLENGE",
    "CHALLENGE_OMA", "FrameError", "Group", "GroupAck", "Lpdu", "NeuronId", "Npdu", "REMINDER",
    "REM_MSG", "REPLY", "REPLY_OMA", "REQUEST", "RESPONSE", "SPDU", "Spdu", "SubnetNode", "TPDU",
    "Tpdu", "UNACKD_RPT", "crc16_lon", "decode", "encode",
]

# NPDU PDU formats (section 3.1)
TPDU, SPDU, AUTH, APDU = 0, 1, 2, 3
# TPDU types: ACKD, UNACKD_RPT, ACK; SPDU types: REQUEST, RESPONSE; both: REMINDER, REM_MSG
ACKD, UNACKD_RPT, ACK = 0, 1, 2
REQUEST, RESPONSE = 0, 2
REMINDER, REM_MSG = 4, 5
# AuthPDU types
CHALLENGE, CHALLENGE_OMA, REPLY, REPLY_OMA = 0, 1, 2, 3

_TPDU_TYPES = frozenset({ACKD, UNACKD_RPT, ACK, REMINDER, REM_MSG})
_SPDU_TYPES = frozenset({REQUEST, RESPONSE, REMINDER, REM_MSG})
_DOMAIN_LENGTHS = (0, 1, 3, 6)
_DOMAIN_CODES = {0: 0, 1: 1, 3: 2, 6: 3}


class FrameError(ValueError):
    """A frame that cannot be taken: the message says why (it goes to the log)."""


# ---------------------------------------------------------------------------------------
# CRC-16 (section 2.2): poly 0x1021 MSB first, init 0xFFFF, complemented, sent high byte first.
# That is CRC-16/GENIBUS; binascii's CRC-CCITT (poly 0x1021, MSB first, caller's init) computes it
# in C, which matters: the CRC is the costliest step of every frame (tests pin the check values).

def crc16_lon(data: bytes) -> int:
    """CRC-16 of an LPDU's header and NPDU. Check value: crc16_lon(b"123456789") == 0xD64E."""
    return binascii.crc_hqx(data, 0xFFFF) ^ 0xFFFF


# ---------------------------------------------------------------------------------------
# Destination addresses (section 3.2). The source is always subnet + node.

@dataclass(frozen=True, slots=True)
class Broadcast:
    """Format 0: every node of the domain (``subnet`` 0) or of one subnet."""
    subnet: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    """Format 1: the members of a group (0-255)."""
    group: int


@dataclass(frozen=True, slots=True)
class SubnetNode:
    """Format 2a: one node (subnet 1-255, node 1-127)."""
    subnet: int
    node: int


@dataclass(frozen=True, slots=True)
class GroupAck:
    """Format 2b: an acknowledgement or response from group member ``member`` of ``group``,
    addressed to the sender's subnet/node."""
    subnet: int
    node: int
    group: int
    member: int


@dataclass(frozen=True, slots=True)
class NeuronId:
    """Format 3: one node by its 48-bit unique ID; ``subnet`` is the routing subnet."""
    nid: bytes
    subnet: int = 0


Address = Broadcast | Group | SubnetNode | GroupAck | NeuronId


# ---------------------------------------------------------------------------------------
# Enclosed PDUs (section 4)

@dataclass(frozen=True, slots=True)
class Tpdu:
    """Transport PDU: ACKD / UNACKD_RPT carry an APDU, ACK nothing, REMINDER an M_List,
    REM_MSG an M_List and the APDU."""
    type: int
    tid: int
    apdu: bytes = b""
    auth: bool = False
    mlist: bytes = b""


@dataclass(frozen=True, slots=True)
class Spdu:
    """Session PDU: REQUEST / RESPONSE carry an APDU; REMINDER and REM_MSG as in Tpdu."""
    type: int
    tid: int
    apdu: bytes = b""
    auth: bool = False
    mlist: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthPdu:
    """Authentication PDU: a CHALLENGE (8 random bytes) or a REPLY (8 crypto bytes) about the
    transaction ``tid``; ``fmt`` is the address format of the message authenticated and a
    group (fmt 1) adds the group ID."""
    type: int
    tid: int
    data: bytes
    fmt: int = 2
    group: int | None = None


@dataclass(frozen=True, slots=True)
class Apdu:
    """A bare APDU (unacknowledged service: no transport header)."""
    apdu: bytes


Pdu = Tpdu | Spdu | AuthPdu | Apdu


@dataclass(slots=True)
class Npdu:
    src_subnet: int
    src_node: int
    dst: Address
    pdu: Pdu
    domain: bytes = b""
    version: int = 0

    @property
    def pdu_format(self) -> int:
        return _PDU_FORMATS[type(self.pdu)]


@dataclass(slots=True)
class Lpdu:
    npdu: Npdu
    priority: bool = False
    alt_path: bool = False
    delta_backlog: int = 0
    crc: int | None = field(default=None, compare=False)  # as received (decode fills it)


_PDU_FORMATS = {Tpdu: TPDU, Spdu: SPDU, AuthPdu: AUTH, Apdu: APDU}


# ---------------------------------------------------------------------------------------
# Encoding

def _byte(value: int, name: str, top: int = 255) -> int:
    if not 0 <= value <= top:
        raise FrameError(f"{name} {value} is outside 0..{top}")
    return value


def _address(npdu: Npdu) -> tuple[int, bytes]:
    src_subnet = _byte(npdu.src_subnet, "source subnet")
    src_node = _byte(npdu.src_node, "source node", 127)
    dst = npdu.dst
    if isinstance(dst, Broadcast):
        return 0, bytes((src_subnet, 0x80 | src_node, _byte(dst.subnet, "subnet")))
    if isinstance(dst, Group):
        return 1, bytes((src_subnet, 0x80 | src_node, _byte(dst.group, "group")))
    if isinstance(dst, SubnetNode):
        return 2, bytes((src_subnet, 0x80 | src_node, _byte(dst.subnet, "subnet"),
                         0x80 | _byte(dst.node, "node", 127)))
    if isinstance(dst, GroupAck):
        return 2, bytes((src_subnet, src_node, _byte(dst.subnet, "subnet"),
                         0x80 | _byte(dst.node, "node", 127), _byte(dst.group, "group"),
                         _byte(dst.member, "member", 63)))
    if isinstance(dst, NeuronId):
        if len(dst.nid) != 6:
            raise FrameError(f"a Neuron ID is 6 bytes, not {len(dst.nid)}")
        return 3, bytes((src_subnet, 0x80 | src_node, _byte(dst.subnet, "subnet"))) + dst.nid
    raise FrameError(f"not a destination address: {dst!r}")


def _tid(pdu, version: int) -> tuple[int, bytes]:
    """(header nibble, extra byte) of a transaction number."""
    if version == 2:
        _byte(pdu.tid, "transaction number", 0xFFF)
        return pdu.tid >> 8, bytes((pdu.tid & 0xFF,))
    return _byte(pdu.tid, "transaction number", 15), b""


def _pdu(pdu: Pdu, version: int) -> bytes:
    if isinstance(pdu, Apdu):
        return bytes(pdu.apdu)
    if isinstance(pdu, AuthPdu):
        if len(pdu.data) != 8:
            raise FrameError(f"an authentication PDU carries 8 bytes, not {len(pdu.data)}")
        nibble, extra = _tid(pdu, version)
        head = bytes(((_byte(pdu.fmt, "address format", 3) << 6)
                      | (_byte(pdu.type, "authentication type", 3) << 4) | nibble,)) + extra
        tail = b"" if pdu.group is None else bytes((_byte(pdu.group, "group"),))
        return head + pdu.data + tail
    types = _TPDU_TYPES if isinstance(pdu, Tpdu) else _SPDU_TYPES
    if pdu.type not in types:
        raise FrameError(f"{type(pdu).__name__} type {pdu.type} is not defined")
    nibble, extra = _tid(pdu, version)
    head = bytes(((0x80 if pdu.auth else 0) | (pdu.type << 4) | nibble,)) + extra
    if pdu.type in (REMINDER, REM_MSG):
        head += bytes((_byte(len(pdu.mlist), "M_List length"),)) + pdu.mlist
        if pdu.type == REMINDER:
            return head
    elif pdu.type == ACK and isinstance(pdu, Tpdu):  # an SPDU RESPONSE (also 2) has an APDU
        return head
    return head + pdu.apdu


def encode(lpdu: Lpdu) -> bytes:
    """The LPDU on the wire: L2 header, NPDU, CRC-16 (high byte first)."""
    npdu = lpdu.npdu
    if npdu.version not in (0, 2):
        raise FrameError(f"NPDU version {npdu.version} is not supported")
    if len(npdu.domain) not in _DOMAIN_CODES:
        raise FrameError(f"a domain ID is 0, 1, 3 or 6 bytes, not {len(npdu.domain)}")
    fmt, address = _address(npdu)
    l2 = ((0x80 if lpdu.priority else 0) | (0x40 if lpdu.alt_path else 0)
          | _byte(lpdu.delta_backlog, "delta backlog", 63))
    head = bytes((l2, (npdu.version << 6) | (npdu.pdu_format << 4) | (fmt << 2)
                  | _DOMAIN_CODES[len(npdu.domain)]))
    body = head + address + bytes(npdu.domain) + _pdu(npdu.pdu, npdu.version)
    crc = crc16_lon(body)
    return body + bytes((crc >> 8, crc & 0xFF))


# ---------------------------------------------------------------------------------------
# Decoding

def decode(data: bytes, *, check_crc: bool = True) -> Lpdu:
    """Parse an LPDU with its CRC; ``FrameError`` says what is wrong with a bad one."""
    data = bytes(data)
    if len(data) < 7:  # L2 header, NPDU header, 3 address bytes, CRC
        raise FrameError(f"{len(data)} bytes are too short for an LPDU")
    crc = (data[-2] << 8) | data[-1]
    if check_crc and crc16_lon(data[:-2]) != crc:
        raise FrameError(f"CRC {crc:04x} does not match the frame ({crc16_lon(data[:-2]):04x})")
    body = data[:-2]
    l2, header = body[0], body[1]
    version, pdu_format, fmt = header >> 6, (header >> 4) & 3, (header >> 2) & 3
    if version not in (0, 2):
        raise FrameError(f"NPDU version {version} is not supported")
    domain_length = _DOMAIN_LENGTHS[header & 3]
    pos = 2
    src_subnet, src_byte = body[pos], body[pos + 1]
    selector = src_byte & 0x80
    if fmt == 0:
        dst, pos = Broadcast(body[pos + 2]), pos + 3
    elif fmt == 1:
        dst, pos = Group(body[pos + 2]), pos + 3
    elif fmt == 2 and selector:
        _need(body, pos + 4, "subnet/node address")
        dst, pos = SubnetNode(body[pos + 2], body[pos + 3] & 0x7F), pos + 4
        if not body[pos - 1] & 0x80:
            raise FrameError("subnet/node destination without its selector bit")
    elif fmt == 2:
        _need(body, pos + 6, "group acknowledgement address")
        if body[pos + 5] > 63:
            raise FrameError(f"group member {body[pos + 5]} is outside 0..63")
        if not body[pos + 3] & 0x80:
            raise FrameError("group acknowledgement destination without its selector bit")
        dst = GroupAck(body[pos + 2], body[pos + 3] & 0x7F, body[pos + 4], body[pos + 5])
        pos += 6
    else:
        _need(body, pos + 9, "Neuron ID address")
        dst, pos = NeuronId(body[pos + 3:pos + 9], body[pos + 2]), pos + 9
    if fmt != 2 and not selector:
        raise FrameError("source node byte without its selector bit")
    _need(body, pos + domain_length, f"{domain_length}-byte domain")
    domain = body[pos:pos + domain_length]
    pos += domain_length
    pdu = _decode_pdu(body, pos, pdu_format, version)
    npdu = Npdu(src_subnet, src_byte & 0x7F, dst, pdu, domain, version)
    return Lpdu(npdu, bool(l2 & 0x80), bool(l2 & 0x40), l2 & 0x3F, crc)


def _need(body: bytes, end: int, what: str) -> None:
    if len(body) < end:
        raise FrameError(f"frame ends inside its {what}")


def _decode_tid(body: bytes, pos: int, version: int) -> tuple[int, int]:
    nibble = body[pos] & 0x0F
    if version == 2:
        _need(body, pos + 2, "transaction number")
        return (nibble << 8) | body[pos + 1], pos + 2
    return nibble, pos + 1


def _decode_pdu(body: bytes, pos: int, pdu_format: int, version: int) -> Pdu:
    if pdu_format == APDU:
        if pos >= len(body):
            raise FrameError("unacknowledged message without an APDU")
        return Apdu(body[pos:])
    _need(body, pos + 1, "PDU header")
    first = body[pos]
    if pdu_format == AUTH:
        fmt, kind = first >> 6, (first >> 4) & 3
        tid, pos = _decode_tid(body, pos, version)
        _need(body, pos + 8, "authentication bytes")
        data, rest = body[pos:pos + 8], body[pos + 8:]
        if fmt == 1:
            if len(rest) != 1:
                raise FrameError("group authentication PDU without exactly one group byte")
            return AuthPdu(kind, tid, data, fmt, rest[0])
        if rest:
            raise FrameError(f"{len(rest)} bytes after the authentication bytes")
        return AuthPdu(kind, tid, data, fmt)
    auth, kind = bool(first & 0x80), (first >> 4) & 7
    cls, types = (Tpdu, _TPDU_TYPES) if pdu_format == TPDU else (Spdu, _SPDU_TYPES)
    if kind not in types:
        raise FrameError(f"{cls.__name__} type {kind} is not defined")
    tid, pos = _decode_tid(body, pos, version)
    mlist = b""
    if kind in (REMINDER, REM_MSG):
        _need(body, pos + 1, "M_List length")
        length = body[pos]
        _need(body, pos + 1 + length, "M_List")
        mlist, pos = body[pos + 1:pos + 1 + length], pos + 1 + length
        if kind == REMINDER:
            if pos != len(body):
                raise FrameError(f"{len(body) - pos} bytes after a reminder's M_List")
            return cls(kind, tid, b"", auth, mlist)
    elif cls is Tpdu and kind == ACK:
        if pos != len(body):
            raise FrameError(f"{len(body) - pos} bytes after an acknowledgement")
        return cls(kind, tid, b"", auth)
    if pos >= len(body):
        raise FrameError(f"{cls.__name__} without its APDU")
    return cls(kind, tid, body[pos:], auth, mlist)
