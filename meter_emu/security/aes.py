"""OSGP-AES-128-PSK, the security mode ET04.127 = 2 selects (MEP p.64-66): designed.

The normative format (ETSI TS 104 001 V2.x) is not public. The public hints are that CLC/TS 50586
cites NIST SP 800-38C (AES-CCM) and RFC 5433 (EAP-GPSK, whose KDF and MAC are AES-CMAC), and that
the firmware image carries a 16-byte "Image MAC" (MEP p.243). This module is our design on those
hints, written down once, here. A real meter's frames will differ; keep the API and swap the body.

**Keys.** The 16-byte pre-shared key ``K`` (the OMA key of a meter in AES mode) is never used
directly. Each purpose gets its own key by the NIST SP 800-108 KDF in counter mode with AES-CMAC
(RFC 4493) as PRF, one 128-bit block (counter 1)::

    K_p = AES-CMAC(K, 01 || label_p || 00 || "OSGP-AES-128-PSK" || 00 00 00 80)
    label_p = "request" | "response" | "image"        (ASCII; 0x80 = 128 output bits)

so a CCM key never computes a plain CMAC, the image key never encrypts, and the two directions
never share a key.

**Sealing.** AES-CCM (SP 800-38C) with an 8-byte tag (the frame keeps the 8-byte slot of the OMA
digest, so sizes and the D1 limits are those of the RC4 mode) and a 13-byte nonce (q = 2: up to
65535 bytes, far above any OSGP APDU)::

    N(d, s)  = d || 00 x 8 || s        d: 01 request, 02 response, 03 resync; s: UINT32, MSB first
    request  = C || s || T     (C, T) = CCM(K_request,  N(01, s), AAD = s || context, APDU)
    response = C || T          (C, T) = CCM(K_response, N(02, s), AAD = s || context, response)
    resync   = 0C || e || T    T      = CCM(K_response, N(03, e), AAD = 0C || e || context, "")

The whole APDU is encrypted (command code included); ``s`` travels in clear because the meter
needs it to build the nonce. A response is bound to its request's sequence number (not sent
again) and direction, ``context`` binds clear data the frame depends on but does not carry (the
PLC addresses, the MEP client ID); both sides must pass the same bytes. Any changed bit, wrong
key, direction, sequence number or context makes ``open_*`` return None.

**Nonce uniqueness** (CCM's one requirement: a key never seals two different messages under one
nonce). Requests: a client uses each sequence number once (D3: they only move forward). Responses
reuse the request's ``s``: safe, because the direction byte differs (and so does the key). The
meter seals at most one response per *accepted* sequence number: a request whose number was
already used is refused, and its Invalid Sequence Number answer (0x0C and the expected number
``e``) is the authenticated-only *resync* frame, whose nonce ``N(03, e)`` repeats only with the
same ``0C || e`` (only the tags of different contexts differ, and no keystream covers data). A
lower-layer retransmission of a request already answered gets the stored response bytes, never a
new sealing. A replayed old resync frame can at worst cost the client one more refused request.

**Image MAC.** ``image_mac(K, image) = AES-CMAC(K_image, image)``, 16 bytes: what EP10 and EP19
request type 9 check in AES mode.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.cmac import CMAC

KEY_SIZE = 16
TAG_SIZE = 8  # the frame keeps the 8-byte slot of the OMA digest
MAC_SIZE = 16  # the firmware image MAC (MEP p.243: "Image MAC UINT8[16]")
SEQUENCE_SIZE = 4
NONCE_SIZE = 13
MAX_PAYLOAD = 0xFFFF  # q = 15 - NONCE_SIZE = 2 length bytes

REQUEST, RESPONSE, RESYNC = 0x01, 0x02, 0x03  # nonce direction bytes
INVALID_SEQUENCE = 0x0C  # the response code a resync frame carries (MEP p.10)
KDF_CONTEXT = b"OSGP-AES-128-PSK"


def _key(key) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"an AES key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"an OSGP-AES-128-PSK key is {KEY_SIZE} bytes, got {len(key)}")
    return key


def cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493, NIST SP 800-38B), 16 bytes."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def derive_key(psk: bytes, label: bytes) -> bytes:
    """SP 800-108 counter-mode KDF with AES-CMAC, one block: the key for one purpose."""
    return cmac(_key(psk), b"\x01" + label + b"\x00" + KDF_CONTEXT + (128).to_bytes(4, "big"))


def nonce(direction: int, sequence: int) -> bytes:
    return bytes([direction]) + bytes(8) + sequence.to_bytes(SEQUENCE_SIZE, "big")


def _sequence(sequence: int) -> bytes:
    if not isinstance(sequence, int) or not 0 <= sequence <= 0xFFFFFFFF:
        raise ValueError(f"a sequence number is 0..2^32-1, not {sequence!r}")
    return sequence.to_bytes(SEQUENCE_SIZE, "big")


def _payload(data) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):  # bytes(5) is five zero bytes
        raise TypeError(f"expected bytes to seal, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"{len(data)} bytes; AES-CCM with a 13-byte nonce seals at most "
                         f"{MAX_PAYLOAD}")
    return data


def _wire(message) -> bytes | None:
    """Received bytes, or None for anything that is not a bytes-like object."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    return None


class AesPsk:
    """One 16-byte pre-shared key; sans-I/O sealing and opening of secured APDU messages.

    A request message is ``ciphertext(APDU) | sequence (4, MSB, in clear) | tag (8)``; the
    response to it is ``ciphertext(response) | tag (8)``, bound to the request's sequence
    number and direction. ``context`` binds extra clear data (e.g. PLC addressing) into the tag.
    The Invalid Sequence Number answer is ``seal_resync`` (see the module docstring: never seal
    it with ``seal_response``). Opening never raises: whatever does not authenticate is None.
    """

    __slots__ = ("_request", "_response")

    def __init__(self, key: bytes):
        key = _key(key)
        self._request = AESCCM(derive_key(key, b"request"), tag_length=TAG_SIZE)
        self._response = AESCCM(derive_key(key, b"response"), tag_length=TAG_SIZE)

    def __repr__(self) -> str:  # never show key material
        return "AesPsk(<16-byte key>)"

    def seal_request(self, apdu: bytes, sequence: int, context: bytes = b"") -> bytes:
        seq = _sequence(sequence)
        sealed = self._request.encrypt(nonce(REQUEST, sequence), _payload(apdu), seq + context)
        return sealed[:-TAG_SIZE] + seq + sealed[-TAG_SIZE:]

    def open_request(self, message: bytes, context: bytes = b"") -> tuple[bytes, int] | None:
        """(APDU, sequence number), or None when the message does not authenticate."""
        message = _wire(message)
        if message is None or len(message) <= SEQUENCE_SIZE + TAG_SIZE:
            return None
        seq = message[-TAG_SIZE - SEQUENCE_SIZE:-TAG_SIZE]
        sequence = int.from_bytes(seq, "big")
        sealed = message[:-TAG_SIZE - SEQUENCE_SIZE] + message[-TAG_SIZE:]
        apdu = self._open(self._request, nonce(REQUEST, sequence), sealed, seq + context)
        return None if apdu is None else (apdu, sequence)

    def seal_response(self, response: bytes, sequence: int, context: bytes = b"") -> bytes:
        seq = _sequence(sequence)
        return self._response.encrypt(nonce(RESPONSE, sequence), _payload(response),
                                      seq + context)

    def open_response(self, message: bytes, sequence: int, context: bytes = b"") -> bytes | None:
        message = _wire(message)
        if message is None or len(message) <= TAG_SIZE:
            return None
        if not isinstance(sequence, int) or not 0 <= sequence <= 0xFFFFFFFF:
            return None
        seq = sequence.to_bytes(SEQUENCE_SIZE, "big")
        return self._open(self._response, nonce(RESPONSE, sequence), message, seq + context)

    def seal_resync(self, expected: int, context: bytes = b"") -> bytes:
        """The Invalid Sequence Number answer ``0C | expected (4, MSB) | tag``, authenticated
        but not encrypted (its content is no secret)."""
        clear = bytes([INVALID_SEQUENCE]) + _sequence(expected)
        return clear + self._response.encrypt(nonce(RESYNC, expected), b"", clear + context)

    def open_resync(self, message: bytes, context: bytes = b"") -> int | None:
        """The sequence number a resync frame says the meter expects, or None."""
        message = _wire(message)
        if message is None or len(message) != 1 + SEQUENCE_SIZE + TAG_SIZE:
            return None
        clear = message[:1 + SEQUENCE_SIZE]
        if clear[0] != INVALID_SEQUENCE:
            return None
        expected = int.from_bytes(clear[1:], "big")
        tag = message[1 + SEQUENCE_SIZE:]
        ok = self._open(self._response, nonce(RESYNC, expected), tag, clear + context)
        return None if ok is None else expected

    @staticmethod
    def _open(ccm: AESCCM, nonce_: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        if len(sealed) - TAG_SIZE > MAX_PAYLOAD:
            return None
        try:
            return ccm.decrypt(nonce_, sealed, aad)
        except (InvalidTag, ValueError, TypeError):
            return None


def image_mac(key: bytes, image: bytes) -> bytes:
    """The 16-byte MAC over a firmware image that EP10 / EP19 type 9 check in AES mode."""
    return cmac(derive_key(key, b"image"), bytes(image))
