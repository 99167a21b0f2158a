"""The CN/IP packet (ISO/IEC 14908-4, EIA-852): a 20-byte big-endian header and, for data
packets, one 14908.1 LPDU with its CRC (reference/lower-layers.md section 11.1).

    off size field
      0    2 packet length, header included
      2    1 version (low 5 bits): 1
      3    1 packet type: 0x01 data (others: configuration, statistics, segments)
      4    1 extended header size in 4-byte words (skipped when present)
      5    1 flags: bit 5 security (a 16-byte MD5 digest follows the payload), bits 4..0 protocol
             (0 = LonTalk / ISO/IEC 14908.1)
      6    2 vendor code
      8    4 session ID
     12    4 sequence number
     16    4 timestamp (ms)
     20    n LPDU: L2 header, NPDU, CRC-16

Only plain LonTalk data packets carry frames here; anything else is refused by ``decode`` with
a ``CnipError`` naming the reason, which the endpoint logs before dropping the datagram (this
emulator has no configuration server: a CN/IP device that registers or asks for channel
members gets no answer, as when its configuration server is down). Hot path: struct only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">HBBBBHIII")
HEADER_SIZE = HEADER.size  # 20
VERSION = 1
DATA = 0x01
PROTOCOL_LON = 0
SECURITY_FLAG = 0x20
#: names of the packet types an endpoint may see, for its log lines
PACKET_TYPES = {0x01: "data", 0x03: "device registration", 0x04: "channel membership",
                0x06: "send list", 0x07: "acknowledge", 0x08: "routing", 0x7F: "segment"}
MAX_PACKET = 0xFFFF


class CnipError(ValueError):
    """A datagram that is not a CN/IP data packet this endpoint takes; the message says why."""


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    version: int
    type: int
    flags: int
    vendor: int
    session: int
    sequence: int
    timestamp: int


def encode(lpdu: bytes, seq: int, session: int = 0, timestamp: int = 0, *,
           vendor: int = 0) -> bytes:
    """One CN/IP data packet carrying ``lpdu`` (L2 header + NPDU + CRC, as lon/frame.encode
    makes it)."""
    length = HEADER_SIZE + len(lpdu)
    if length > MAX_PACKET:
        raise CnipError(f"an LPDU of {len(lpdu)} bytes does not fit a CN/IP packet")
    return HEADER.pack(length, VERSION, DATA, 0, PROTOCOL_LON, vendor, session & 0xFFFFFFFF,
                       seq & 0xFFFFFFFF, timestamp & 0xFFFFFFFF) + lpdu


def decode(data: bytes) -> tuple[Header, bytes]:
    """(header, LPDU bytes with CRC) of a data packet; ``CnipError`` for anything else."""
    if len(data) < HEADER_SIZE:
        raise CnipError(f"{len(data)} bytes are too short for a CN/IP header")
    (length, version, kind, ext_words, flags, vendor, session, sequence,
     timestamp) = HEADER.unpack_from(data)
    if length != len(data):
        raise CnipError(f"the header says {length} bytes, the datagram has {len(data)}")
    if version & 0x1F != VERSION:
        raise CnipError(f"CN/IP version {version & 0x1F} is not supported (only 1)")
    if kind != DATA:
        name = PACKET_TYPES.get(kind, "unknown")
        raise CnipError(f"packet type 0x{kind:02X} ({name}) is not served: no configuration "
                        "server here, only data packets")
    if flags & SECURITY_FLAG:
        raise CnipError("secured (MD5-authenticated) CN/IP packets are not supported")
    if flags & 0x1F != PROTOCOL_LON:
        raise CnipError(f"protocol code {flags & 0x1F} is not LonTalk (0)")
    start = HEADER_SIZE + 4 * ext_words
    if start >= length:
        raise CnipError("data packet without an LPDU")
    header = Header(length, version & 0x1F, kind, flags, vendor, session, sequence, timestamp)
    return header, bytes(data[start:length])
