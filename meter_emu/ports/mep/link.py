"""MEP framing and timing, sans-I/O: ``length (2, MSB) | message`` both ways (MEP p.9-10;
printed page footers, the guide's contents list is two pages short here).

Framing. The length counts the bytes after itself. A message longer than 476 bytes (MEP p.8)
cannot be a MEP request: the meter ignores bytes until the line has been quiet for the
inter-character time-out, so the rest of that frame cannot pass for a new one, and answers
nothing (the client's 500 ms response time-out, MEP p.21, makes it retry). A frame left
unfinished for longer than the inter-character time-out is dropped the same silent way. A
complete frame always gets the session's answer (0x0B when no key authenticates it). A zero
length from the client is skipped: ``00 00`` is the meter's alert, not a request.

Inter-character time-out (MEP p.21: a client sends at least one byte every 50 ms inside a
frame). ``INTER_CHAR_TIMEOUT`` (50 ms) is the guide's figure and what a serial device gets;
TCP and ptys get ``INTER_CHAR_TIMEOUT_STREAM`` (0.5 s), since TCP segmentation and a busy
client host can pause a frame far longer than a UART ever does (see ``inter_char_timeout``).

Alert sequence (MEP p.17-18, p.21). While the session reports an alert for its client (ET13
"Alert Flags"), the meter sends ``00 00`` once per second, held off for one second after any
byte received. It is checked on the same one-second timer, so an alert begins at most a second
after its condition; ``poll``/``next_deadline`` carry it.

Pacing (``paced=True``, what ``meter-emu run`` uses; MEP p.21 "Response timing"): a response
frame of more than 117 bytes leaves in 117-byte segments (length field included) 25 ms apart,
and at most one request is served per 100 ms; requests that come faster wait their turn (up to
``MAX_WAITING`` of them; more are dropped with a log line, as a meter's receive buffer would).
Unpaced links (the default, for tests at the session level) answer every complete frame at once.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)

MAX_MESSAGE = 476
INTER_CHAR_TIMEOUT = 0.05  # MEP p.21, a serial line
INTER_CHAR_TIMEOUT_STREAM = 0.5  # TCP and ptys (designed)
ALERT = b"\x00\x00"
ALERT_PERIOD = 1.0  # once per second (MEP p.17)
ALERT_HOLD_OFF = 1.0  # after a received frame (MEP p.21)
SEGMENT = 117  # bytes per response segment (MEP p.21)
SEGMENT_GAP = 0.025
REQUEST_SPACING = 0.1  # at most one request per 100 ms
MAX_WAITING = 16


def inter_char_timeout(url: str) -> float:
    """The guide's 50 ms on a serial device (a path); 0.5 s on TCP and ptys."""
    return INTER_CHAR_TIMEOUT if url.startswith("/") else INTER_CHAR_TIMEOUT_STREAM


class MepLink:
    def __init__(self, session, *, inter_char_timeout: float = INTER_CHAR_TIMEOUT_STREAM,
                 name: str = "mep", paced: bool = False):
        self.session = session
        self.inter_char_timeout = inter_char_timeout
        self.name = name
        self.paced = paced
        self._rx = bytearray()
        self._rx_at = float("-inf")
        self._discarding = False  # after an oversize length: until the line is quiet
        self._waiting: deque[bytes] = deque()  # complete requests not yet served (paced)
        self._segments: deque[bytes] = deque()  # response bytes not yet sent (paced)
        self._segment_at = float("-inf")
        self._request_at = float("-inf")
        self._alert_at: float | None = None  # next alert check; None: at the first poll

    def receive(self, data: bytes, now: float) -> bytes:
        quiet = now - self._rx_at > self.inter_char_timeout
        if quiet and self._rx:
            log.debug("%s: inter-character time-out, %d partial bytes dropped", self.name,
                      len(self._rx))
            self._rx.clear()
        self._discarding = self._discarding and not quiet
        self._rx_at = now
        self._alert_at = now + ALERT_HOLD_OFF
        if self._discarding:
            return self._run(now)
        self._rx += data
        while len(self._rx) >= 2:
            length = int.from_bytes(self._rx[:2], "big")
            if length == 0:
                del self._rx[:2]  # an alert is meter -> client only
                continue
            if length > MAX_MESSAGE:
                log.debug("%s: frame length %d exceeds %d; ignoring input until the line is "
                          "quiet", self.name, length, MAX_MESSAGE)
                self._rx.clear()
                self._discarding = True
                break
            if len(self._rx) < 2 + length:
                break
            if len(self._waiting) < MAX_WAITING:
                self._waiting.append(bytes(self._rx[2:2 + length]))
            else:
                log.debug("%s: %d requests already wait; request dropped", self.name,
                          MAX_WAITING)
            del self._rx[:2 + length]
        return self._run(now)

    def poll(self, now: float) -> bytes:
        return self._run(now)

    def next_deadline(self) -> float | None:
        if self._segments:
            return self._segment_at
        if self._waiting:
            return self._request_at
        return 0.0 if self._alert_at is None else self._alert_at

    def _run(self, now: float) -> bytes:
        out = bytearray()
        while True:
            if self._segments:
                if now < self._segment_at:
                    break
                out += self._segments.popleft()
                self._segment_at = now + SEGMENT_GAP
            elif self._waiting and now >= self._request_at:
                response = self.session.handle(self._waiting.popleft(), now)
                frame = len(response).to_bytes(2, "big") + response
                if not self.paced:
                    out += frame
                    continue
                self._segments.extend(frame[i:i + SEGMENT] for i in range(0, len(frame), SEGMENT))
                self._segment_at = now
                self._request_at = now + REQUEST_SPACING
            else:
                break
        if (not self._segments and not self._waiting
                and (self._alert_at is None or now >= self._alert_at)):
            if self._rx:  # a second after its last byte, a partial frame is long dead
                log.debug("%s: inter-character time-out, %d partial bytes dropped", self.name,
                          len(self._rx))
                self._rx.clear()
            self._alert_at = now + ALERT_PERIOD
            if self.session.alert_pending():
                out += ALERT
        return bytes(out)
