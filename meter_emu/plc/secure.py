"""The secured OSGP APDU on the power line, both ends, sans-I/O (DESIGN.md D1-D3).

Request ``command ‖ parameters ‖ sequence (4, MSB) ‖ digest (8)``; response ``code ‖ data ‖
digest (8)``. As on the MEP port (ports/mep/session.py), of which this is the PLC twin:

* **RC4 mode** (ET04.127 = 0): the digest is the OMA digest with the 12-byte OMA key (144-byte
  blocks) over ``command … sequence``; the response digest continues that state over ``code …
  data``. The client may encrypt any request (``PlcRc4``: RC4 keyed from the base key and the
  plaintext digest, which travels in clear); the meter tries the plaintext first, then the
  decryption, and encrypts the response of an encrypted request by continuing the request's RC4
  stream (as MEP App. B).
* **AES mode** (ET04.127 = 2): ``AesPsk`` seals instead (security/aes.py: the 8-byte tag takes
  the digest's place, so every size and limit stays that of the RC4 mode). The Invalid
  Sequence Number answer is its ``seal_resync`` frame. Context: none (``b""``): the 14908.1
  addressing is not bound into the tag, because the head-end's session API has no addresses.
* **The command code travels in clear** (designed) in both modes: it is the 14908.1 APDU
  header (destination/type, D1) that the stack and the meter's station route by. RC4 still
  runs over the whole ``command … sequence`` (keystream positions as in the exercise code,
  reference section 11.5), and the first byte is then sent as it was; AES seals ``parameters``
  with the command code bound in as associated data (``context ‖ code``). Responses are
  encrypted whole.
* A message no key authenticates answers ``0B`` alone: no digest, never encrypted.
* ``0C ‖ expected (4, MSB)`` (sequence refused) and ``1F ‖ expected`` (Interface Change, see
  plc/server.py) are signed like any response. Designed, AES: ``1F ‖ e ‖ T`` is the resync
  frame of ``e`` with context ``1F`` and its first byte set to 1F (``seal_resync`` only makes
  0C frames; the context keeps the two tags apart).

**Secure broadcast** (designed): the secured inner message is ``command ‖ parameters ‖ group
ID (2, MSB)``, so an RC4-mode broadcast on the wire is ``command ‖ parameters ‖ group ‖
sequence (4) ‖ digest (8)``, digest over everything before it, under the broadcast key (OMA key
slot 1); it may be encrypted as a unicast request. In AES mode the sealed inner message is the
same, under ``AesPsk(derive_key(K, "broadcast"))``, so that a broadcast's nonce can never meet a
unicast one under the same CCM key even when both slots hold the same key. No response exists.

Key objects are expensive to prepare (round tables, RC4 base key, CMAC KDF), so ``suite``
caches them per (mode, key); keys never reach a log line or a repr.
"""

from __future__ import annotations

import functools

from ..security import AesPsk, OmaKey, PlcRc4, Rc4Stream
from ..security.aes import derive_key

DIGEST = 8
SEQUENCE = 4
OVERHEAD = SEQUENCE + DIGEST  # what security adds to a request APDU
DIGEST_ERROR, INVALID_SEQUENCE, INTERFACE_CHANGE = 0x0B, 0x0C, 0x1F
RC4, AES = "rc4", "aes"
#: ET04.127 Security Mode (device/keys.py) -> the mode names of the client API
MODE_NAMES = {0: RC4, 2: AES}
_RESYNC_SIZE = 1 + SEQUENCE + DIGEST


class SecurityError(Exception):
    """A response that cannot be trusted, or a meter's digest refusal (``code`` 0x0B)."""

    def __init__(self, reason: str, code: int | None = None):
        super().__init__(reason)
        self.code = code


# ---- one key, one mode -------------------------------------------------------------------

class _Rc4Exchange:
    """One request's security state: the digest state after the request and its RC4 stream
    (meter side, live) or the RC4 key and request length (client side, rebuilt per try so that
    a forged response cannot spoil the real one)."""

    __slots__ = ("state", "stream", "rc4_key", "skip")

    def __init__(self, state, stream=None, rc4_key=None, skip=0):
        self.state, self.stream, self.rc4_key, self.skip = state, stream, rc4_key, skip

    def seal(self, response: bytes) -> bytes:
        state = self.state
        state.update(response)
        tag = state.digest()
        if self.stream is not None:
            response = self.stream.process(response)
        return response + tag

    def refuse(self, code: int, expected: int) -> bytes:
        return self.seal(bytes([code]) + expected.to_bytes(SEQUENCE, "big"))

    def open(self, message: bytes) -> bytes | None:
        if len(message) <= DIGEST:
            return None
        body, tag = message[:-DIGEST], message[-DIGEST:]
        if self.rc4_key is not None:
            stream = Rc4Stream(self.rc4_key)
            stream.process(bytes(self.skip))
            body = stream.process(body)
        state = self.state.copy()
        state.update(body)
        return body if state.verify(tag) else None


class _AesExchange:
    __slots__ = ("psk", "sequence", "context")

    def __init__(self, psk: AesPsk, sequence: int, context: bytes):
        self.psk, self.sequence, self.context = psk, sequence, context

    def seal(self, response: bytes) -> bytes:
        return self.psk.seal_response(response, self.sequence, self.context)

    def refuse(self, code: int, expected: int) -> bytes:
        if code == INVALID_SEQUENCE:
            return self.psk.seal_resync(expected, self.context)
        frame = self.psk.seal_resync(expected, self.context + bytes([code]))
        return bytes([code]) + frame[1:]

    def open(self, message: bytes) -> bytes | None:
        plain = self.psk.open_response(message, self.sequence, self.context)
        if plain is not None or len(message) != _RESYNC_SIZE:
            return plain
        code = message[0]
        if code == INVALID_SEQUENCE:
            expected = self.psk.open_resync(message, self.context)
        elif code == INTERFACE_CHANGE:
            expected = self.psk.open_resync(bytes([INVALID_SEQUENCE]) + message[1:],
                                            self.context + bytes([code]))
        else:
            return None
        return None if expected is None else message[:1 + SEQUENCE]


class Rc4Suite:
    """OMA digest (+ optional RC4) under one 12-byte key (6 and 16 work too)."""

    mode = RC4

    def __init__(self, key: bytes):
        self.oma = OmaKey(key)
        self.rc4 = PlcRc4(self.oma)

    def __repr__(self) -> str:
        return "Rc4Suite(<key>)"

    def seal_request(self, apdu: bytes, sequence: int, *, encrypt: bool = False):
        """(message, exchange) for a client's request."""
        plain = apdu + sequence.to_bytes(SEQUENCE, "big")
        state = self.oma.new(plain)
        tag = state.digest()
        if not encrypt:
            return plain + tag, _Rc4Exchange(state)
        key = self.rc4.rc4_key(tag)
        cipher = Rc4Stream(key).process(plain)
        return plain[:1] + cipher[1:] + tag, _Rc4Exchange(state, rc4_key=key, skip=len(plain))

    def open_request(self, message: bytes, context: bytes = b""):
        """(apdu, sequence, exchange), or None when the digest fails both ways."""
        if len(message) <= OVERHEAD:
            return None
        body, tag = message[:-DIGEST], message[-DIGEST:]
        state = self.oma.new(body)
        stream = None
        if not state.verify(tag):
            stream = self.rc4.stream(tag)
            body = body[:1] + stream.process(body)[1:]  # the command code was in clear
            state = self.oma.new(body)
            if not state.verify(tag):
                return None
        return (body[:-SEQUENCE], int.from_bytes(body[-SEQUENCE:], "big"),
                _Rc4Exchange(state, stream))


class AesSuite:
    """OSGP-AES-128-PSK under one 16-byte key (``context`` bound into every tag)."""

    mode = AES

    def __init__(self, key: bytes, context: bytes = b""):
        self.psk = AesPsk(key)
        self.context = context

    def __repr__(self) -> str:
        return "AesSuite(<key>)"

    def seal_request(self, apdu: bytes, sequence: int, *, encrypt: bool = True):
        message = self.psk.seal_request(apdu[1:], sequence, self.context + apdu[:1])
        return apdu[:1] + message, _AesExchange(self.psk, sequence, self.context)

    def open_request(self, message: bytes, context: bytes = b""):
        opened = self.psk.open_request(message[1:], self.context + message[:1])
        if opened is None:
            return None
        params, sequence = opened
        return message[:1] + params, sequence, _AesExchange(self.psk, sequence, self.context)


@functools.lru_cache(maxsize=4096)
def suite(key: bytes, mode: str = RC4, broadcast: bool = False):
    """The prepared suite for ``key`` in ``mode`` ("rc4" or "aes"), unicast or broadcast."""
    key = bytes(key)
    if mode == RC4:
        return Rc4Suite(key)
    if mode == AES:
        return AesSuite(derive_key(key, b"broadcast") if broadcast else key)
    raise ValueError(f"unknown PLC security mode {mode!r} (rc4, aes)")


# ---- the head-end's end --------------------------------------------------------------------

class ClientSession:
    """A head-end's secured session with one meter. ``request`` seals an APDU under the next
    sequence number; ``response`` verifies (and decrypts) the answer to the last request and
    returns ``code ‖ data``. On 0x0C / 0x1F it adopts the meter's number and returns the bare
    code, so the caller sends the request again. Raises ``SecurityError`` for a response that
    does not authenticate, and for the meter's 0x0B (``code`` 0x0B)."""

    def __init__(self, key: bytes, *, mode: str = RC4, sequence: int = 0,
                 encrypt: bool = False):
        self._suite = suite(bytes(key), mode)
        self.mode = mode
        self.sequence = sequence & 0xFFFFFFFF
        self.encrypt = encrypt
        self._pending = None

    def __repr__(self) -> str:
        return f"ClientSession(mode={self.mode!r}, sequence={self.sequence})"

    def request(self, apdu: bytes) -> bytes:
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFFFFFF
        message, self._pending = self._suite.seal_request(bytes(apdu), sequence,
                                                          encrypt=self.encrypt)
        return message

    def response(self, sealed: bytes) -> bytes:
        sealed = bytes(sealed)
        if sealed == bytes([DIGEST_ERROR]):
            raise SecurityError("the meter refused the digest (0x0B): wrong key or mode",
                                DIGEST_ERROR)
        if self._pending is None:
            raise SecurityError("no request waits for a response")
        plain = self._pending.open(sealed)
        if not plain:
            raise SecurityError(f"a {len(sealed)}-byte response does not authenticate")
        self._pending = None
        if plain[0] in (INVALID_SEQUENCE, INTERFACE_CHANGE) and len(plain) == 1 + SEQUENCE:
            self.sequence = int.from_bytes(plain[1:], "big")
            return plain[:1]
        return plain


class BroadcastSession:
    """A head-end's secure broadcasts to ``group`` (OSGP group ID: exact, 0xYYFF, 0xFFYY,
    0xFFFF). ``sequence`` is the next broadcast number: it must lie in the meters' ET04 window
    (base < sequence <= base + delta)."""

    def __init__(self, key: bytes, *, group: int, sequence: int, mode: str = RC4,
                 encrypt: bool = False):
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"a group ID is 0..0xFFFF, not {group!r}")
        self._suite = suite(bytes(key), mode, True)
        self.mode = mode
        self.group = group
        self.sequence = sequence & 0xFFFFFFFF
        self.encrypt = encrypt

    def __repr__(self) -> str:
        return f"BroadcastSession(group=0x{self.group:04X}, sequence={self.sequence})"

    def request(self, apdu: bytes) -> bytes:
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFFFFFF
        inner = bytes(apdu) + self.group.to_bytes(2, "big")
        return self._suite.seal_request(inner, sequence, encrypt=self.encrypt)[0]
