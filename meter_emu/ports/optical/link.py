"""ANSI C12.18 data link layer, sans-I/O: bytes in, bytes out, time passed in.

Packet (both directions, reference/osgp-app-layer.md section 3.2):
``EE | identity | control | sequence | length (2, MSB) | data | CRC-16/X-25 (low byte first)``.
Control bit 7 = part of a multi-packet transmission, bit 6 = its first packet, bit 5 = toggle bit
(alternates per new packet); sequence = packets still to follow.

Receiving: bytes before ``EE`` are noise; a packet with a bad CRC, an impossible length or a gap
longer than the inter-character time-out is answered NAK (0x15) or dropped; a good one is
answered ACK (0x06) at once. A packet equal to the previous one (same toggle bit, same bytes) is a
retransmission: the cached response is sent again and nothing is executed twice.

Sending: the response APDU is cut into packets of the negotiated size; each waits for the
client's ACK, is sent again on NAK or after the response time-out, and is given up after 3 tries.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ...crc import crc16

log = logging.getLogger(__name__)

STP, ACK, NAK = 0xEE, 0x06, 0x15
HEADER = 6
OVERHEAD = HEADER + 2  # header + CRC
MAX_LENGTH = 8183 - OVERHEAD
CTRL_MULTI, CTRL_FIRST, CTRL_TOGGLE = 0x80, 0x40, 0x20
SECURITY_REQUEST = 0x51


def frame(data: bytes, ctrl: int = 0, seq: int = 0, identity: int = 0) -> bytes:
    """One C12.18 packet around ``data``."""
    head = bytes([STP, identity, ctrl, seq]) + len(data).to_bytes(2, "big") + data
    return head + crc16(head).to_bytes(2, "little")


def packetize(apdu: bytes, size: int, toggle: int) -> tuple[list[bytes], int]:
    """Cut an APDU into packets of at most ``size`` data bytes (multi-packet flags and the
    countdown in the sequence byte); each packet flips the toggle bit. Returns the packets and
    the toggle bit the next packet starts with. Both sides of the link use it."""
    chunks = [apdu[i:i + size] for i in range(0, len(apdu), size)] or [b""]
    packets = []
    for index, chunk in enumerate(chunks):
        ctrl = toggle
        if len(chunks) > 1:
            ctrl |= CTRL_MULTI | (CTRL_FIRST if index == 0 else 0)
        packets.append(frame(chunk, ctrl, len(chunks) - 1 - index))
        toggle ^= CTRL_TOGGLE
    return packets, toggle


def describe(payload: bytes) -> str:
    """Hex for the log, with passwords (security request) never shown."""
    if payload[:1] == bytes([SECURITY_REQUEST]):
        return f"51 <{len(payload) - 1} password bytes hidden>"
    return payload.hex(" ")


class Session(Protocol):
    """What the link hands complete requests to (the PSEM session)."""

    packet_size: int
    max_packets: int
    in_base_state: bool

    def handle(self, apdu: bytes, now: float) -> bytes: ...


class C1218Link:
    def __init__(
        self,
        session: Session,
        *,
        response_timeout: float = 2.0,
        inter_char_timeout: float = 0.5,
        retries: int = 3,
        name: str = "optical",
    ):
        self.session = session
        self.response_timeout = response_timeout
        self.inter_char_timeout = inter_char_timeout
        self.retries = retries
        self.name = name
        self._rx = bytearray()
        self._rx_at = 0.0
        self._assembling: bytearray | None = None
        self._last_packet: bytes | None = None  # last good packet received, for duplicates
        self._last_response: list[bytes] = []
        self._toggle = 0
        self._queue: list[bytes] = []  # packets of the response not yet sent
        self._unacked: bytes | None = None
        self._sent_at = 0.0
        self._tries = 0
        self.stats = {"rx_packets": 0, "naks_sent": 0, "duplicates": 0, "gave_up": 0}

    # ---- input ------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> bytes:
        out = bytearray()
        if self._rx and now - self._rx_at > self.inter_char_timeout:
            log.debug("%s: inter-character time-out, %d partial bytes dropped", self.name,
                      len(self._rx))
            self._rx.clear()
        for byte in data:
            if not self._rx:
                if byte == STP:
                    self._rx.append(byte)
                elif byte in (ACK, NAK) and self._unacked is not None:
                    out += self._on_ack(now) if byte == ACK else self._on_nak(now)
                else:
                    log.debug("%s: ignored byte %02x outside a packet", self.name, byte)
                continue
            self._rx.append(byte)
            if len(self._rx) == HEADER:
                length = int.from_bytes(self._rx[4:6], "big")
                if length > MAX_LENGTH:
                    log.debug("%s: NAK, impossible length %d", self.name, length)
                    self._rx.clear()
                    self.stats["naks_sent"] += 1
                    out.append(NAK)
                    continue
            if len(self._rx) >= HEADER and len(self._rx) == HEADER + self._length() + 2:
                packet, self._rx = bytes(self._rx), bytearray()
                out += self._on_packet(packet, now)
        self._rx_at = now
        return bytes(out)

    def _length(self) -> int:
        return int.from_bytes(self._rx[4:6], "big")

    def _on_packet(self, packet: bytes, now: float) -> bytes:
        body, crc = packet[:-2], int.from_bytes(packet[-2:], "little")
        if crc16(body) != crc:
            log.debug("%s: NAK, bad CRC %04x (expected %04x)", self.name, crc, crc16(body))
            self.stats["naks_sent"] += 1
            return bytes([NAK])
        self.stats["rx_packets"] += 1
        ctrl, seq, payload = packet[2], packet[3], packet[HEADER:-2]
        log.debug("%s: <- ctrl %02x seq %d: %s", self.name, ctrl, seq, describe(payload))
        out = bytearray([ACK])
        if packet == self._last_packet:
            self.stats["duplicates"] += 1
            log.debug("%s: retransmitted packet, resending the cached response", self.name)
            if seq == 0 and self._last_response:
                out += self._send(self._last_response, now)
            return bytes(out)
        self._last_packet = packet
        self._unacked, self._queue = None, []  # a new request supersedes an unfinished answer
        if ctrl & CTRL_MULTI:
            if ctrl & CTRL_FIRST or self._assembling is None:
                self._assembling = bytearray()
            self._assembling += payload
            if seq:
                return bytes(out)
            payload, self._assembling = bytes(self._assembling), None
        response = self.session.handle(payload, now)
        self._last_response = self._packetize(response)
        if self.session.in_base_state:
            self._last_packet = None  # the next session starts afresh (toggle may repeat)
            self._toggle = 0
        out += self._send(self._last_response, now)
        return bytes(out)

    # ---- output -----------------------------------------------------------------------
    def _packetize(self, apdu: bytes) -> list[bytes]:
        """Frame a response in packets of the negotiated size; each new packet flips the toggle."""
        packets, self._toggle = packetize(apdu, max(1, self.session.packet_size - OVERHEAD),
                                          self._toggle)
        return packets

    def _send(self, packets: list[bytes], now: float) -> bytes:
        self._queue = list(packets)
        return self._send_next(now)

    def _send_next(self, now: float) -> bytes:
        if not self._queue:
            self._unacked = None
            return b""
        self._unacked = self._queue.pop(0)
        self._sent_at, self._tries = now, 1
        log.debug("%s: -> %s", self.name, describe(self._unacked[HEADER:-2]))
        return self._unacked

    def _on_ack(self, now: float) -> bytes:
        return self._send_next(now)

    def _on_nak(self, now: float) -> bytes:
        log.debug("%s: client sent NAK", self.name)
        return self._retransmit(now)

    def _retransmit(self, now: float) -> bytes:
        if self._tries >= self.retries:
            log.debug("%s: no ACK after %d tries, response abandoned", self.name, self._tries)
            self.stats["gave_up"] += 1
            self._unacked, self._queue = None, []
            return b""
        self._tries += 1
        self._sent_at = now
        return self._unacked

    # ---- time -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._sent_at + self.response_timeout if self._unacked is not None else None

    def poll(self, now: float) -> bytes:
        """Call at ``next_deadline()``: resends a packet whose ACK did not come."""
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            log.debug("%s: ACK time-out", self.name)
            return self._retransmit(now)
        return b""
