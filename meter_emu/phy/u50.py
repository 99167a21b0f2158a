"""The U50/MIP serial link ("SMP", lower-layers.md §10) between a host and a PLC network
interface, sans-I/O and for both ends (``role="ni"`` or ``"host"``).

Bytes in with ``feed(data, now)``, bytes out with ``take_output()``, messages the peer sent
with ``take_messages()``; ``send`` queues a message, ``poll(now)`` runs the timers at
``next_deadline()``. Nothing here raises on input bytes: what does not parse is skipped, counted
in ``stats`` and logged.

Wire format (§10.2-10.3): a 4-byte code packet ``7E | seq<<5 | ACK | code | param | checksum``
(the four bytes sum to 0), and after a CpMsg one message packet ``len | NI cmd | payload |
checksum`` (``FF hi lo`` for an extended length; every 7E data byte doubled; a 7E followed by
anything else starts a code packet and abandons the message in progress).

Reliability: one numbered packet (CpMsg, CpNiCmdShort) in flight; it is repeated with the same
sequence number after ``ack_timeout`` or at once on CpFail, and later on CpMsgReject (the
peer's receive queue is full: ``rx_capacity`` messages not yet taken). ACKs ride on the next
code packet we send, or on a CpNull when we have nothing to send. Local NI commands that the
NI answers (E0 status, D0/D1 layer mode, 40-42 phase mode, 51 unlock) are not ACKed by the NI:
the answer completes the host's transaction (``RESPONSE_TO``), as the MIP does.

designed (where the references leave a choice):
* a receiver remembers a sequence number as "seen" only when the message it numbers arrived
  whole; a CpFail therefore never makes a repeated message look new, and a repeated message
  whose first copy arrived is ACKed again but not delivered twice;
* code packets are checked beyond their checksum (known code, CpMsg parameter 1, code 14 never
  valid): a doubled 7E inside a message can never be taken for a code packet;
* an NI's announcements (the reset message after a reset) and its short answers to local
  commands are sent once, without waiting for an ACK: the host's own retry of the command, or
  the E0 status it asks next, recovers a lost one (this is what the §11.3 capture shows);
* CpNull, CpFail, CpMsgReject and CpNiResync carry sequence 0 (as the kernel driver sends);
* the sender gives up on a message after ``max_retries`` repeats or ``reject_limit`` seconds of
  rejects, with a log line (a dead peer must not grow our queue without bound).

Limits: an ACK cannot say which message it acknowledges (window of one, as the protocol has):
an ACK delayed past ``ack_timeout`` could acknowledge the next message. The timeouts here are
well above a serial line's latency, so this needs a peer that stalls for longer.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SYNC = 0x7E
ACK_BIT = 0x10
EXT_LENGTH = 0xFF
MAX_SHORT_LEN = 254            # len byte values 1..254; FF marks an extended length
MAX_EXT_LEN = 1280 + 1         # U50Defs.h MAXLONMSG, plus the command byte

CP_NULL, CP_FAIL, CP_MSG, CP_MSG_REQ, CP_MSG_ACK, CP_MSG_REJECT = range(6)
CP_NI_CMD_SHORT, CP_NI_RESYNC = 6, 7
_VALID_CODES = frozenset(range(10))  # 8/9 are defined (unused); 14/15 are never valid

#: local NI commands answered by a response (the response, not an ACK, completes them)
RESPONSE_TO = {0xE0: 0xE0, 0xD0: 0xD0, 0xD1: 0xD1, 0x40: 0x40, 0x41: 0x40, 0x42: 0x40,
               0x51: 0x52}
#: flow-control shorts that are never ACKed
NO_ACK_SHORTS = (0xC0, 0xC1)


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to 0 mod 256."""
    return -sum(data) & 0xFF


def code_packet(seq: int, ack: bool, code: int, param: int = 0) -> bytes:
    head = bytes([SYNC, (seq & 7) << 5 | (ACK_BIT if ack else 0) | code & 0x0F, param & 0xFF])
    return head + bytes([checksum(head)])


def message_packet(cmd: int, payload: bytes = b"") -> bytes:
    """A message packet as it goes on the wire (length, command, payload, checksum; 7E
    doubled)."""
    length = 1 + len(payload)
    if length <= MAX_SHORT_LEN:
        head = bytes([length])
    elif length <= MAX_EXT_LEN:
        head = bytes([EXT_LENGTH, length >> 8, length & 0xFF])
    else:
        raise ValueError(f"message of {len(payload)} bytes exceeds the NI's {MAX_EXT_LEN - 1}")
    body = head + bytes([cmd & 0xFF]) + payload
    return (body + bytes([checksum(body)])).replace(b"\x7e", b"\x7e\x7e")


@dataclass(frozen=True, slots=True)
class Message:
    """What the peer sent: a message packet (``short`` False), a CpNiCmdShort (the command in
    ``cmd``, no payload; receive errors 30-35 get their 4 zero bytes) or a resync
    (``cmd`` None)."""
    cmd: int | None
    payload: bytes = b""
    short: bool = False


@dataclass(slots=True)
class _Out:
    cmd: int
    payload: bytes
    short: bool
    reliable: bool
    null_first: bool = False
    seq: int = 0
    attempts: int = 0
    deadline: float = 0.0
    rejected_since: float | None = None


@dataclass(slots=True)
class _Rx:
    """A message packet being read after its CpMsg."""
    seq: int
    duplicate: bool
    rejected: bool
    data: bytearray = field(default_factory=bytearray)
    need: int | None = None  # unescaped bytes the whole packet has (header+cmd+payload+sum)


class U50Link:
    def __init__(self, role: str = "ni", *, ack_timeout: float = 0.3, max_retries: int = 8,
                 rx_capacity: int = 16, tx_capacity: int = 256, partial_timeout: float = 0.1,
                 reject_limit: float = 10.0, name: str = "U50"):
        if role not in ("ni", "host"):
            raise ValueError(f"role {role!r}: ni or host")
        self.role, self.name = role, name
        self.ack_timeout, self.max_retries = ack_timeout, max_retries
        self.rx_capacity, self.tx_capacity = rx_capacity, tx_capacity
        self.partial_timeout, self.reject_limit = partial_timeout, reject_limit
        self.stats = dict.fromkeys(
            ("sent", "received", "duplicates", "retries", "ack_timeouts", "cp_fails_sent",
             "cp_fails_received", "rejects_sent", "rejects_received", "checksum_errors",
             "garbage_bytes", "aborted", "partial_timeouts", "given_up", "overflow",
             "resyncs"), 0)
        self._out = bytearray()
        self._messages: list[Message] = []
        self._rx_buf = bytearray()
        self._rx: _Rx | None = None
        self._last_rx = 0.0
        self._reset_state()

    def _reset_state(self) -> None:
        self._tx_seq = 0            # last numbered sequence sent; the next is 1..7
        self._rx_seq: int | None = None
        self._queue: deque[_Out] = deque()
        self._pending: _Out | None = None
        self._ack_due = False

    # ---- the application's side -------------------------------------------------------------

    def send(self, cmd: int, payload: bytes = b"", *, short: bool = False,
             reliable: bool = True, now: float = 0.0) -> bool:
        """Queue a message (``short``: as a CpNiCmdShort, no payload). ``reliable`` False: sent
        once, not waiting for an ACK. False when the queue is full (the message is dropped)."""
        if short and payload:
            raise ValueError("a CpNiCmdShort carries no payload")
        message_packet(cmd, payload)  # size check now, not when it is sent
        if len(self._queue) >= self.tx_capacity:
            self.stats["overflow"] += 1
            count = self.stats["overflow"]
            if not count & (count - 1):  # the 1st, 2nd, 4th, 8th ... time: a dead peer
                log.warning("%s: transmit queue full (%d); NI command %02X dropped (%d so far)",
                            self.name, self.tx_capacity, cmd, count)
            return False
        self._queue.append(_Out(cmd, bytes(payload), short, reliable))
        self._pump(now)
        return True

    def announce(self, cmd: int, payload: bytes = b"", *, now: float = 0.0) -> None:
        """An NI's unprompted announcement after a reset: a CpNull, then the message, once."""
        self._queue.append(_Out(cmd, bytes(payload), False, False, null_first=True))
        self._pump(now)

    def resync(self, now: float = 0.0) -> None:
        """Start a session (the host's first word): CpNiResync, fresh sequence numbers."""
        self._forget("resync")
        self._write(code_packet(0, False, CP_NI_RESYNC))

    def null(self, now: float = 0.0) -> None:
        """A CpNull (carrying any ACK due): the host's "start-up done, link idle"."""
        self._ack_due = True
        self._pump(now)

    def clear(self, why: str) -> int:
        """Drop what waits to be sent and forget the peer's last sequence number (an NI
        reset); returns how many messages were dropped."""
        dropped = len(self._queue) + (self._pending is not None)
        if dropped:
            log.info("%s: %s drops %d queued message(s)", self.name, why, dropped)
        self._queue.clear()
        self._pending = None
        self._rx_seq = None
        return dropped

    def take_output(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def take_messages(self) -> list[Message]:
        out, self._messages = self._messages, []
        return out

    @property
    def idle(self) -> bool:
        """Nothing queued or waiting for an ACK."""
        return self._pending is None and not self._queue

    def next_deadline(self) -> float | None:
        deadlines = []
        if self._pending is not None:
            deadlines.append(self._pending.deadline)
        if self._rx_buf or self._rx is not None:
            deadlines.append(self._last_rx + self.partial_timeout)
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> None:
        if (self._rx_buf or self._rx is not None) and now >= self._last_rx + self.partial_timeout:
            self.stats["partial_timeouts"] += 1
            log.debug("%s: partial packet timed out (%d bytes); dropped", self.name,
                      len(self._rx_buf) + (len(self._rx.data) if self._rx else 0))
            self._rx_buf.clear()
            self._rx = None
        pending = self._pending
        if pending is not None and now >= pending.deadline:
            if pending.rejected_since is None:
                self.stats["ack_timeouts"] += 1
            self._retransmit(now, "no ACK")
        self._pump(now)

    # ---- sending ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out += data

    def _next_seq(self) -> int:
        self._tx_seq = self._tx_seq % 7 + 1
        return self._tx_seq

    def _take_ack(self) -> bool:
        ack, self._ack_due = self._ack_due, False
        return ack

    def _transmit(self, out: _Out) -> None:
        if out.short:
            self._write(code_packet(out.seq, self._take_ack(), CP_NI_CMD_SHORT, out.cmd))
        else:
            self._write(code_packet(out.seq, self._take_ack(), CP_MSG, 1))
            self._write(message_packet(out.cmd, out.payload))
        self.stats["sent"] += out.attempts == 0

    def _pump(self, now: float) -> None:
        while self._pending is None and self._queue:
            out = self._queue.popleft()
            if out.null_first:
                self._write(code_packet(0, self._take_ack(), CP_NULL))
            out.seq = self._next_seq()
            self._transmit(out)
            if out.reliable:
                out.deadline = now + self.ack_timeout
                self._pending = out
        if self._ack_due:
            self._write(code_packet(0, self._take_ack(), CP_NULL))

    def _retransmit(self, now: float, why: str) -> None:
        pending = self._pending
        if pending.rejected_since is not None:
            if now - pending.rejected_since > self.reject_limit:
                self._give_up(f"rejected for {self.reject_limit:g} s")
                return
        elif pending.attempts >= self.max_retries:
            self._give_up(f"{why} after {pending.attempts} repeats")
            return
        else:
            pending.attempts += 1
        self.stats["retries"] += 1
        log.debug("%s: %s; NI command %02X repeated (seq %d)", self.name, why, pending.cmd,
                  pending.seq)
        self._transmit(pending)
        pending.deadline = now + self.ack_timeout

    def _give_up(self, why: str) -> None:
        self.stats["given_up"] += 1
        log.warning("%s: NI command %02X not acknowledged (%s); dropped", self.name,
                    self._pending.cmd, why)
        self._pending = None

    def _completed(self) -> None:
        self._pending = None

    # ---- receiving ----------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the peer, as they came (any split). Never raises."""
        if not data:
            return
        self._last_rx = now
        self._rx_buf += data
        try:
            self._parse(now)
        except Exception:  # noqa: BLE001 - a parser bug must not take the link down
            log.exception("%s: internal error on input; %d bytes dropped", self.name,
                          len(self._rx_buf))
            self._rx_buf.clear()
            self._rx = None
        self._pump(now)

    def _parse(self, now: float) -> None:
        buf = self._rx_buf
        while buf:
            if self._rx is not None:
                if not self._read_message(now):
                    return
                continue
            start = buf.find(SYNC)
            if start < 0:
                self.stats["garbage_bytes"] += len(buf)
                buf.clear()
                return
            if start:
                self.stats["garbage_bytes"] += start
                del buf[:start]
            if len(buf) < 4:
                return
            packet = bytes(buf[:4])
            if not _plausible(packet):
                self.stats["garbage_bytes"] += 1
                del buf[:1]
                continue
            del buf[:4]
            self._code_packet(packet[1] >> 5, bool(packet[1] & ACK_BIT), packet[1] & 0x0F,
                              packet[2], now)

    def _read_message(self, now: float) -> bool:
        """Unescape message bytes into ``self._rx``; False when more input is needed."""
        buf, rx = self._rx_buf, self._rx
        while buf:
            if buf[0] == SYNC:
                if len(buf) < 2:
                    return False
                if buf[1] != SYNC:  # a code packet: the message was cut short
                    self.stats["aborted"] += 1
                    log.debug("%s: message cut by a code packet after %d bytes", self.name,
                              len(rx.data))
                    self._rx = None
                    return True
                rx.data.append(SYNC)
                del buf[:2]
            else:
                stop = buf.find(SYNC)
                stop = len(buf) if stop < 0 else stop
                if rx.need is not None:
                    stop = min(stop, rx.need - len(rx.data))
                rx.data += buf[:stop]
                del buf[:stop]
            if rx.need is None and not self._size_known(rx):
                if self._rx is None:
                    return True
                continue
            if len(rx.data) >= rx.need:
                self._rx = None
                self._message_done(rx, now)
                return True
        return False

    def _size_known(self, rx: _Rx) -> bool:
        data = rx.data
        if data[0] == EXT_LENGTH:
            if len(data) < 3:
                return False
            length, head = data[1] << 8 | data[2], 3
        else:
            length, head = data[0], 1
        if not 1 <= length <= MAX_EXT_LEN:
            self.stats["checksum_errors"] += 1
            log.info("%s: message length %d is impossible; CpFail", self.name, length)
            self._rx = None
            self._fail()
            return False
        rx.need = head + length + 1
        return True

    def _fail(self) -> None:
        self.stats["cp_fails_sent"] += 1
        self._write(code_packet(0, False, CP_FAIL))

    def _message_done(self, rx: _Rx, now: float) -> None:
        data = bytes(rx.data[:rx.need])
        if sum(data) & 0xFF:
            self.stats["checksum_errors"] += 1
            log.info("%s: message checksum wrong (seq %d, %d bytes); CpFail", self.name,
                     rx.seq, len(data))
            self._fail()
            return
        if rx.rejected:
            return  # CpMsgReject already said so; the peer repeats it later
        head = 3 if data[0] == EXT_LENGTH else 1
        message = Message(data[head], data[head + 1:-1])
        self._arrived(rx.seq, rx.duplicate, message)

    def _arrived(self, seq: int, duplicate: bool, message: Message) -> None:
        answered = self.role == "ni" and message.cmd in RESPONSE_TO
        if message.short and message.cmd in NO_ACK_SHORTS:
            answered = True
        pending = self._pending
        if pending is not None and RESPONSE_TO.get(pending.cmd) == message.cmd \
                and self.role == "host":
            self._completed()
        if duplicate and not answered:
            self.stats["duplicates"] += 1
            log.debug("%s: duplicate seq %d (NI command %02X) ACKed again", self.name, seq,
                      message.cmd)
            self._ack_due = True
            return
        # a repeated local command is answered again: its answer may be what got lost
        self._rx_seq = seq
        self.stats["received"] += 1
        self._messages.append(message)
        if not answered:
            self._ack_due = True

    def _code_packet(self, seq: int, ack: bool, code: int, param: int, now: float) -> None:
        refusal = code in (CP_FAIL, CP_MSG_REJECT)
        pending = self._pending
        if ack and not refusal and pending is not None and not (
                self.role == "host" and pending.cmd in RESPONSE_TO):
            self._completed()
        if code == CP_MSG:
            duplicate = seq == self._rx_seq
            rejected = not duplicate and len(self._messages) >= self.rx_capacity
            if rejected:
                self.stats["rejects_sent"] += 1
                log.info("%s: receive queue full (%d); CpMsgReject", self.name,
                         len(self._messages))
                self._write(code_packet(0, False, CP_MSG_REJECT))
            self._rx = _Rx(seq, duplicate, rejected)
        elif code == CP_NI_CMD_SHORT:
            payload = bytes(4) if param & 0xF0 == 0x30 else b""
            self._arrived(seq, seq == self._rx_seq, Message(param, payload, short=True))
        elif code == CP_FAIL:
            self.stats["cp_fails_received"] += 1
            if pending is not None:
                self._retransmit(now, "CpFail")
        elif code == CP_MSG_REJECT:
            self.stats["rejects_received"] += 1
            if pending is not None:
                if pending.rejected_since is None:
                    pending.rejected_since = now
                pending.deadline = now + self.ack_timeout
        elif code == CP_MSG_REQ:
            self._write(code_packet(0, self._take_ack(), CP_MSG_ACK))
        elif code == CP_NI_RESYNC:
            self.stats["resyncs"] += 1
            self._forget("peer resync")
            self._ack_due = True
            self._messages.append(Message(None))
        elif code not in (CP_NULL, CP_MSG_ACK):
            log.debug("%s: code packet %d ignored", self.name, code)

    def _forget(self, why: str) -> None:
        self.clear(why)
        self._tx_seq = 0
        self._rx = None


def _plausible(packet: bytes) -> bool:
    """A 4-byte window that is a code packet: checksum, a defined code, and the parameter
    the code has (1 for CpMsg, 0 for CpNull/CpFail/CpMsgReject/CpNiResync)."""
    if sum(packet) & 0xFF:
        return False
    code = packet[1] & 0x0F
    if code not in _VALID_CODES:
        return False
    if code == CP_MSG:
        return packet[2] == 1
    if code in (CP_NULL, CP_FAIL, CP_MSG_REJECT, CP_NI_RESYNC):
        return packet[2] == 0
    return True
