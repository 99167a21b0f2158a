"""MEP framing, sans-I/O: ``length (2, MSB) | message`` in both directions (MEP guide p.9-10).

The length counts the bytes after itself. A message longer than 476 bytes (MEP guide p.8) cannot
be a MEP request: the buffer is dropped and the client's retry starts clean. A frame left
unfinished for longer than the inter-character time-out is dropped as well (clients must send a
byte at least every 50 ms inside a frame, MEP guide p.19).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MAX_MESSAGE = 476


class MepLink:
    def __init__(self, session, *, inter_char_timeout: float = 0.5, name: str = "mep"):
        self.session = session
        self.inter_char_timeout = inter_char_timeout
        self.name = name
        self._rx = bytearray()
        self._rx_at = 0.0

    def receive(self, data: bytes, now: float) -> bytes:
        if self._rx and now - self._rx_at > self.inter_char_timeout:
            log.debug("%s: inter-character time-out, %d partial bytes dropped", self.name,
                      len(self._rx))
            self._rx.clear()
        self._rx_at = now
        self._rx += data
        out = bytearray()
        while len(self._rx) >= 2:
            length = int.from_bytes(self._rx[:2], "big")
            if length == 0:
                del self._rx[:2]  # an empty frame (the alert sequence is meter -> client only)
                continue
            if length > MAX_MESSAGE:
                log.debug("%s: frame length %d exceeds %d; buffer dropped", self.name, length,
                          MAX_MESSAGE)
                self._rx.clear()
                break
            if len(self._rx) < 2 + length:
                break
            message = bytes(self._rx[2:2 + length])
            del self._rx[:2 + length]
            response = self.session.handle(message, now)
            out += len(response).to_bytes(2, "big") + response
        return bytes(out)

    def poll(self, now: float) -> bytes:
        return b""

    def next_deadline(self) -> float | None:
        return None
