"""PSEM services of the optical port (ANSI C12.18), sans-I/O: one request APDU in, one response
APDU out. Request layouts: reference/osgp-app-layer.md section 3.3; all APDU fields MSB first.

States: BASE --ident--> IDENTIFIED --logon--> SESSION (--security--> a key) --logoff--> IDENTIFIED;
terminate returns to BASE from anywhere, and so does a channel idle longer than the session
time-out. A service outside its state answers ISSS (0x0A). Ident is accepted in every state and
starts over, because real clients (termineter, ESPHome) begin each session with it on a port
that may still hold a session a crashed client left behind.

Table reads and writes need a session. With no security (or a wrong password) only the open tables
(BT00, BT01, ET03) can be read. Read responses and write requests carry the C12.18 data checksum
``(-sum(data)) & 0xFF``. A response larger than the negotiated packet size x packet count is
replaced by RNO (0x09), the C12.18 "renegotiate" answer, so a client never receives more than it
said it can reassemble.

Every request the session answers counts in the fleet's statistics (fleet/stats.py, port
"optical") with its response code and service time.
"""

from __future__ import annotations

import enum
import logging
import time

from ...device.access import Key
from ...device.errors import ResponseCode, ServiceError
from ...events import (ACCESSED_FOR_READ, ACCESSED_FOR_WRITE, INVALID_PASSWORD, SESSION_ABORTED,
                       SESSION_ENDED)
from ...fleet import stats
from ..table_services import OPTICAL, handle_table_service
from .link import OVERHEAD

log = logging.getLogger(__name__)

DEFAULT_PACKET_SIZE = 64
DEFAULT_PACKETS = 1
BAUD_9600 = 6


class State(enum.Enum):
    BASE = "base"
    IDENTIFIED = "identified"
    SESSION = "session"


class PsemSession:
    def __init__(self, meter, clock, *, profile_optical, port: str = "optical"):
        self.meter = meter
        self.clock = clock  # virtual clock for the meter; ``now`` given to handle() is real time
        self.max_packet_size = profile_optical.max_packet_size
        self.max_packets_allowed = profile_optical.max_packets
        self.session_timeout = profile_optical.session_timeout_s
        self.port = port
        self.baud_code = BAUD_9600
        self._last_activity: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._end_session(normally=False)
        self.state = State.BASE
        self.key: Key | None = None
        self.user_id = 0
        self.user_name = ""
        self.packet_size = DEFAULT_PACKET_SIZE
        self.max_packets = DEFAULT_PACKETS
        self._deadline_extension = 0.0
        self._accessed: set[int] = set()  # events 7/8 already logged in this session

    def _end_session(self, normally: bool) -> None:
        """A logged-on session ends: 'Communication Terminated Normally' (12) after Logoff or
        Terminate, 'Abnormally' (13) when it times out or a new Ident abandons it."""
        if getattr(self, "state", None) is not State.SESSION:
            return
        event = SESSION_ENDED if normally else SESSION_ABORTED
        self.meter.log_event(event.number, 0, self.clock.now(), self.user_id)
        self.state = State.IDENTIFIED

    @property
    def in_base_state(self) -> bool:
        return self.state is State.BASE

    # ---- dispatch ---------------------------------------------------------------------
    def handle(self, apdu: bytes, now: float) -> bytes:
        """The response APDU to one request APDU (``now``: real time, for the idle time-out)."""
        started = time.perf_counter()
        response = self._answer(apdu, now)
        stats.STATS.request("optical", self.meter.id, response[0] if response else -1,
                            time.perf_counter() - started)
        return response

    def _answer(self, apdu: bytes, now: float) -> bytes:
        if (
            self._last_activity is not None
            and self.state is not State.BASE
            and now - self._last_activity > self.session_timeout + self._deadline_extension
        ):
            log.info("%s: session idle for %.0f s, back to the base state", self.port,
                     now - self._last_activity)
            self._reset()
        self._last_activity = now
        self._deadline_extension = 0.0  # a Wait service stretches only the next idle gap
        if not apdu:
            return self._refuse(ResponseCode.ERR, "empty request")
        code = apdu[0]
        service = self._SERVICES.get(code)
        if service is None and 0x60 <= code <= 0x6B:
            service = PsemSession._negotiate
        if service is None:
            return self._refuse(ResponseCode.SNS, f"service 0x{code:02X} not supported")
        try:
            response = service(self, apdu)
        except ServiceError as error:
            return self._refuse(error.code, error.reason)
        except Exception:  # noqa: BLE001 - a bug must cost one answer, not the port
            log.exception("%s: internal error on request %02x", self.port, code)
            return self._refuse(ResponseCode.ERR, "internal error (logged)")
        if len(response) > self.packet_size_limit():
            return self._refuse(
                ResponseCode.RNO,
                f"response of {len(response)} bytes exceeds {self.max_packets} packet(s) of "
                f"{self.packet_size} bytes; renegotiate or read in parts",
            )
        return response

    def packet_size_limit(self) -> int:
        return self.max_packets * (self.packet_size - OVERHEAD)

    def _refuse(self, code: ResponseCode, reason: str) -> bytes:
        log.debug("%s: answering %s (0x%02X): %s", self.port, code.name, code, reason)
        return bytes([code])

    def _need(self, *states: State) -> None:
        if self.state not in states:
            raise ServiceError(ResponseCode.ISSS, f"not allowed in the {self.state.value} state")

    @staticmethod
    def _length(apdu: bytes, expected: int, name: str) -> None:
        if len(apdu) != expected:
            raise ServiceError(ResponseCode.ERR, f"{name}: {len(apdu)} bytes, expected {expected}")

    # ---- session services ------------------------------------------------------------
    def _ident(self, apdu: bytes) -> bytes:
        self._length(apdu, 1, "ident")
        self._reset()
        self.state = State.IDENTIFIED
        # ok, reference standard 0 (C12.18), version 2, revision 0, no features (end of list)
        return bytes([ResponseCode.OK, 0x00, 0x02, 0x00, 0x00])

    def _negotiate(self, apdu: bytes) -> bytes:
        self._need(State.IDENTIFIED)
        bauds = apdu[0] - 0x60
        self._length(apdu, 4 + bauds, "negotiate")
        requested_size = int.from_bytes(apdu[1:3], "big")
        requested_packets = apdu[3]
        if requested_size < OVERHEAD + 1 or requested_packets == 0:
            raise ServiceError(ResponseCode.ERR, "negotiate: packet size or count too small")
        self.packet_size = min(requested_size, self.max_packet_size)
        self.max_packets = min(requested_packets, self.max_packets_allowed)
        offered = [b for b in apdu[4:] if 1 <= b <= 10]
        if offered:
            self.baud_code = offered[0]
        return bytes([ResponseCode.OK]) + self.packet_size.to_bytes(2, "big") + bytes(
            [self.max_packets, self.baud_code]
        )

    def _logon(self, apdu: bytes) -> bytes:
        self._need(State.IDENTIFIED)
        self._length(apdu, 13, "logon")
        self.user_id = int.from_bytes(apdu[1:3], "big")
        self.user_name = apdu[3:13].decode("ascii", errors="replace").rstrip()
        self.state = State.SESSION
        self.key = None
        # "first sequence number after login must be other than 255"
        self.meter.state.last_psn = 255
        log.info("%s: logon user %d %r", self.port, self.user_id, self.user_name)
        return bytes([ResponseCode.OK])

    def _security(self, apdu: bytes) -> bytes:
        self._need(State.SESSION)
        self._length(apdu, 21, "security")
        key = self.meter.check_password(apdu[1:21])
        if key is None:  # every wrong password is logged, the alarm latches until EP03
            self.key = None
            self.meter.raise_alarm("invalid_password")
            self.meter.count("invalid_passwords")
            self.meter.log_event(INVALID_PASSWORD.number, 0, self.clock.now(), self.user_id)
            raise ServiceError(ResponseCode.ISC, "password matches no key")
        self.key = key
        log.info("%s: security accepted, %s access", self.port, key)
        return bytes([ResponseCode.OK])

    def _logoff(self, apdu: bytes) -> bytes:
        self._need(State.SESSION)
        self._length(apdu, 1, "logoff")
        self._end_session(normally=True)
        self.key = None
        return bytes([ResponseCode.OK])

    def _terminate(self, apdu: bytes) -> bytes:
        self._length(apdu, 1, "terminate")
        self._end_session(normally=True)
        self._reset()
        return bytes([ResponseCode.OK])

    def _wait(self, apdu: bytes) -> bytes:
        self._need(State.IDENTIFIED, State.SESSION)
        self._length(apdu, 2, "wait")
        self._deadline_extension = float(apdu[1])
        return bytes([ResponseCode.OK])

    # ---- table services ----------------------------------------------------------------
    def _table_service(self, apdu: bytes) -> bytes:
        self._need(State.SESSION)
        now = self.clock.now()
        response = handle_table_service(OPTICAL, self.meter, apdu, self.key, now,
                                        user_id=self.user_id, port=self.port)
        access = ACCESSED_FOR_WRITE if apdu[0] in (0x40, 0x4F) else ACCESSED_FOR_READ
        if response[:1] == bytes([ResponseCode.OK]) and access.number not in self._accessed:
            # once a session: its first read and first write that BT73 lets into the log
            if self.meter.log_event(access.number, 0, now, self.user_id):
                self._accessed.add(access.number)
        if apdu[0] in (0x40, 0x4F):
            log.info("%s: table %d written with %s", self.port,
                     int.from_bytes(apdu[1:3], "big"), self.key)
        return response

    _SERVICES = {
        0x20: _ident,
        0x21: _terminate,
        0x30: _table_service,
        0x3F: _table_service,
        0x40: _table_service,
        0x4F: _table_service,
        0x50: _logon,
        0x51: _security,
        0x52: _logoff,
        0x70: _wait,
    }
