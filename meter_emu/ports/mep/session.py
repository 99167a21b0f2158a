"""MEP security and services, sans-I/O (MEP guide p.9-13, App. A and B).

A request message is ``APDU | sequence number (4, MSB) | OMA digest (8)``. The meter finds the
key: the MAK, then the MBK, on the plaintext; then, the same order, after RC4 decryption keyed by
that key and the request digest (the client may encrypt any request; no configuration). No key
fits: 0x0B, never encrypted, with no digest (there is no key to compute one with).

The sequence number must lie within 8 increments ahead of the one the meter expects (MEP guide
p.10); otherwise the answer is ``0C | expected (4, MSB)``, and the expected number does not move.
An accepted request moves it to the request's number + 1. It is kept in the meter's state.
Designed: both MEP clients of a firmware 4.0+ meter (MEP p.21-25) share this one number (the
guide names one and says nothing of a second); a client that finds it moved by the other gets
0x0C with the number and retries, as after any loss of step.

Two MEP clients: the session of MEP client 2 is named "<meter> mep2" (``channel`` 2), which is
how the tables tell the clients apart (tables/mep_client.py ``mep_channel``); while it serves a
request, ``mep_devices.serving`` says which client asks (ET70.142 "Current Comm Channel Index").

The response message is ``response APDU | digest`` where the digest continues the request's
(request APDU and sequence number, then the response APDU); if the request was encrypted, the
response is encrypted by continuing the request's RC4 stream. Table services use the secured
dialect (full read with a length, no checksums); a response that would exceed the 476-byte
message limit answers ONP (0x04).

Every request answered counts in the fleet's statistics (fleet/stats.py, port "mep", or "mep2"
for MEP client 2) with its response code, taken before encryption, and its service time.
"""

from __future__ import annotations

import logging
import time

from ...device.access import Key
from ...device.errors import ResponseCode, ServiceError
from ...events import USER_MEP
from ...fleet import stats
from ...security import MepRc4, OmaKey
from ...tables import mep_devices
from ..table_services import SECURED, TABLE_SERVICES, handle_table_service
from .link import MAX_MESSAGE

log = logging.getLogger(__name__)

SEQUENCE_WINDOW = 8
DIGEST = 8


class MepSession:
    def __init__(self, meter, clock, *, port: str = "mep"):
        self.meter = meter
        self.clock = clock
        self.port = port
        self.channel = 2 if port.endswith("mep2") else 1
        self.stats_port = "mep2" if self.channel == 2 else "mep"
        self._keys = []
        for key, name in ((Key.MAK, "mak"), (Key.MBK, "mbk")):
            raw = meter.profile.key(name)[:16]  # keys may be given as 20 bytes; 16 are used
            self._keys.append((key, OmaKey(raw), MepRc4(raw)))

    def handle(self, message: bytes, now: float) -> bytes:
        started = time.perf_counter()
        code, response = self._answer(message)
        stats.STATS.request(self.stats_port, self.meter.id, code, time.perf_counter() - started)
        return response

    def _answer(self, message: bytes) -> tuple[int, bytes]:
        """(plaintext response code, response message)."""
        if len(message) > DIGEST + 4:
            body, tag = message[:-DIGEST], message[-DIGEST:]
            for key, oma, _ in self._keys:
                state = oma.new(body)
                if state.verify(tag):
                    return self._serve(key, state, body, None)
            for key, oma, rc4 in self._keys:
                stream = rc4.stream(tag)
                plain = stream.process(body)
                state = oma.new(plain)
                if state.verify(tag):
                    return self._serve(key, state, plain, stream)
        log.debug("%s: answering SME (0x0B): no key authenticates the %d-byte message",
                  self.port, len(message))
        return ResponseCode.SME, bytes([ResponseCode.SME])

    def alert_pending(self) -> bool:
        """Whether this client has an ET13 alert to be told about (MEP p.17-18)."""
        try:
            return mep_devices.alerting(self.meter, self.channel, self.clock.now())
        except Exception:  # noqa: BLE001 - a bug must not silence the port
            log.exception("%s: cannot read the alert flags", self.port)
            return False

    def _serve(self, key: Key, digest_state, plain: bytes, stream) -> tuple[int, bytes]:
        apdu, sequence = plain[:-4], int.from_bytes(plain[-4:], "big")
        expected = self.meter.mep_sequence
        if (sequence - expected) % 2**32 > SEQUENCE_WINDOW:
            log.debug("%s: answering UAT (0x0C): sequence %08x, expected %08x", self.port,
                      sequence, expected)
            response = bytes([ResponseCode.UAT]) + expected.to_bytes(4, "big")
        else:
            self.meter.set_mep_sequence((sequence + 1) % 2**32)
            response = self._execute(key, apdu)
        code = response[0]
        digest_state.update(response)
        tag = digest_state.digest()
        if stream is not None:
            response = stream.process(response)
        return code, response + tag

    def _execute(self, key: Key, apdu: bytes) -> bytes:
        try:
            if not apdu:
                raise ServiceError(ResponseCode.ERR, "empty request")
            if apdu[0] not in TABLE_SERVICES:
                raise ServiceError(ResponseCode.SNS, f"request 0x{apdu[0]:02X} not supported")
            with mep_devices.serving(self.channel):
                response = handle_table_service(SECURED, self.meter, apdu, key,
                                                self.clock.now(), user_id=USER_MEP,
                                                port=self.port)
            if len(response) + DIGEST > MAX_MESSAGE:
                raise ServiceError(ResponseCode.ONP, f"response of {len(response)} bytes exceeds "
                                                     "the MEP message size; use partial reads")
            return response
        except ServiceError as error:
            log.debug("%s: answering %s (0x%02X): %s", self.port, error.code.name, error.code,
                      error.reason)
            return bytes([error.code])
        except Exception:  # noqa: BLE001 - a bug must cost one answer, not the port
            log.exception("%s: internal error on request %s", self.port, apdu[:1].hex())
            return bytes([ResponseCode.ERR])
