"""RC4 encryption of secured APDUs: the MEP scheme and the OSGP PLC scheme.

Both schemes key RC4 with a 16-byte base key whose bytes 0..7 are XORed with the 8-byte OMA digest
of the *plaintext* (the digest travels in clear, so it acts as an IV); encryption and decryption
are the same keystream XOR. They differ in how the base key is obtained:

* **MEP** -- documented (MEP Client Developer's Guide, p.9-11 and App. B p.255-257;
  reference/osgp-app-layer.md section 5.2): ``mep_EncryptKey = RC4(key = first 16 bytes of the
  MEP key (MAK or MBK), data = MEP_CONST_KEY)``, i.e. the first 16 keystream bytes XOR the
  constant. Per request the RC4 key is ``mep_EncryptKey`` with bytes 0..7 XOR the request digest;
  the response is encrypted by *continuing the same RC4 state* after the request (App. B p.257),
  so keep the request's ``Rc4Stream`` for the response.
* **PLC** -- NOT documented by the OSGP Alliance; follows only the public Jovanovic/Neves exercise
  code ("CTF" in section 5.4): ``K_base = EN14908(r1, K) || EN14908(r2, K)`` with the constants
  ``PLC_R1``/``PLC_R2`` (only the first 6 bytes of the 12-byte OMA key matter), then
  ``K_rc4 = K_base`` with bytes 0..7 XOR ``OMA(K, plaintext)``; output
  ``RC4(K_rc4, M) || digest``. Whether a real meter derives its key like this cannot be checked
  publicly, so the base-key derivation is swappable (``PlcRc4(key, derive_base_key=...)``).

RC4 itself comes from the ``cryptography`` package (``ARC4``: in ``hazmat.decrepit`` since
cryptography 43, in ``hazmat.primitives`` before). A small pure-Python RC4 takes over only where
that one cannot serve: if the OpenSSL build refuses RC4 (legacy provider disabled;
``RC4_BACKEND`` then says ``"python"``), or for key lengths ARC4 does not accept (it takes 5, 7,
8, 10, 16, 20, 24 or 32 bytes; both schemes here use 16).
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher

try:  # cryptography >= 43
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4 as _ARC4
except ImportError:  # pragma: no cover - cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4 as _ARC4

from .digest import DIGEST_SIZE, Buffer, OmaKey, _as_bytes, en14908_digest

__all__ = [
    "MEP_CONST_KEY",
    "PLC_R1",
    "PLC_R2",
    "RC4_BACKEND",
    "DigestMismatch",
    "MepRc4",
    "PlcRc4",
    "Rc4Stream",
    "mep_encrypt_key",
    "mix_digest",
    "plc_base_key",
    "rc4_crypt",
]

#: MEP guide App. B constant XORed with the RC4 keystream of the MEP key
MEP_CONST_KEY = bytes.fromhex("388B8FBC36A8558587AFC90FB23A3B99")
#: initial states of the two EN 14908 digests giving the PLC base key (exercise code, section 5.4)
PLC_R1 = bytes.fromhex("813F529A7BE389BA")
PLC_R2 = bytes.fromhex("72B0918D4405AA57")


class DigestMismatch(ValueError):
    """The decrypted plaintext does not carry the digest the message claims."""


# --- RC4 primitive ------------------------------------------------------------------------------

class _PyRc4:
    """Plain RC4 (key schedule + output generator) for what the cryptography backend refuses."""

    __slots__ = ("_i", "_j", "_s")

    def __init__(self, key: bytes):
        s = list(range(256))
        j = 0
        n = len(key)
        for i in range(256):
            j = (j + s[i] + key[i % n]) & 0xFF
            s[i], s[j] = s[j], s[i]
        self._s, self._i, self._j = s, 0, 0

    def update(self, data: Buffer) -> bytes:
        s, i, j = self._s, self._i, self._j
        out = bytearray(data)
        for k in range(len(out)):
            i = (i + 1) & 0xFF
            si = s[i]
            j = (j + si) & 0xFF
            sj = s[j]
            s[i], s[j] = sj, si
            out[k] ^= s[(si + sj) & 0xFF]
        self._i, self._j = i, j
        return bytes(out)


def _openssl_rc4(key: bytes):
    return Cipher(_ARC4(key), mode=None).encryptor()


#: key lengths (bytes) that ARC4 in cryptography accepts; other lengths (1..256) use _PyRc4
_BACKEND_KEY_LENGTHS = frozenset(size // 8 for size in _ARC4.key_sizes)

try:
    _openssl_rc4(bytes(16)).update(b"\x00")
    RC4_BACKEND = "cryptography"
except UnsupportedAlgorithm:  # pragma: no cover - depends on the OpenSSL build
    _BACKEND_KEY_LENGTHS = frozenset()
    RC4_BACKEND = "python"


class Rc4Stream:
    """One RC4 keystream. ``process(data)`` XORs the next ``len(data)`` keystream bytes into
    ``data`` (encryption and decryption are the same); successive calls continue the stream."""

    __slots__ = ("_ctx",)

    def __init__(self, key: Buffer):
        key = _as_bytes(key)
        if not 1 <= len(key) <= 256:
            raise ValueError(f"RC4 key must be 1..256 bytes, got {len(key)}")
        self._ctx = _openssl_rc4(key) if len(key) in _BACKEND_KEY_LENGTHS else _PyRc4(key)

    def process(self, data: Buffer) -> bytes:
        return self._ctx.update(_as_bytes(data))

    encrypt = process
    decrypt = process

    def keystream(self, n: int) -> bytes:
        return self._ctx.update(bytes(n))


def rc4_crypt(key: Buffer, data: Buffer) -> bytes:
    """One-shot RC4 of ``data`` under ``key``."""
    return Rc4Stream(key).process(data)


def mix_digest(base_key: Buffer, digest: Buffer) -> bytes:
    """``base_key`` with its bytes 0..7 XORed with the 8-byte ``digest`` (both schemes)."""
    base_key = _as_bytes(base_key)
    digest = _as_bytes(digest)
    if len(digest) != DIGEST_SIZE or len(base_key) < DIGEST_SIZE:
        raise ValueError("need an 8-byte digest and a base key of at least 8 bytes")
    return bytes(k ^ d for k, d in zip(base_key, digest)) + base_key[DIGEST_SIZE:]


# --- MEP (documented: MEP guide App. B) ----------------------------------------------------------

def mep_encrypt_key(mep_key: Buffer) -> bytes:
    """``mep_EncryptKey``: RC4 under the first 16 bytes of the MEP key, applied to MEP_CONST_KEY.
    MEP keys may be handed out as up to 20 bytes; only the first 16 count (MEP guide p.12)."""
    mep_key = _as_bytes(mep_key)
    if len(mep_key) < 16:
        raise ValueError(f"MEP key must have at least 16 bytes, got {len(mep_key)}")
    return rc4_crypt(mep_key[:16], MEP_CONST_KEY)


class MepRc4:
    """RC4 for one MEP key (MAK or MBK: the same key that makes the digest). Documented scheme.

    Server side::

        stream = mep.stream(request_digest)     # the digest at the end of the frame (in clear)
        plain_request = stream.process(encrypted_request_message)
        ...verify the digest over plain_request, build the response...
        encrypted_response = stream.process(response_message)   # continues the same stream

    The length fields and digests are never encrypted; 0x0B responses are sent in clear."""

    __slots__ = ("encrypt_key",)

    def __init__(self, mep_key: Buffer):
        self.encrypt_key = mep_encrypt_key(mep_key)

    def __repr__(self) -> str:
        return "MepRc4(<key>)"

    def packet_key(self, request_digest: Buffer) -> bytes:
        return mix_digest(self.encrypt_key, request_digest)

    def stream(self, request_digest: Buffer) -> Rc4Stream:
        """A fresh RC4 stream for one request/response exchange."""
        return Rc4Stream(self.packet_key(request_digest))


# --- OSGP PLC (public exercise code only; swappable) ---------------------------------------------

def plc_base_key(oma_key: OmaKey | Buffer) -> bytes:
    """16-byte PLC RC4 base key per the public exercise code ("CTF" ``OSGPKeyDerive``):
    ``EN14908(PLC_R1, K) || EN14908(PLC_R2, K)`` over an empty message; only ``K[0..5]`` count.
    NOT from an OSGP Alliance document; see ``PlcRc4`` for swapping it."""
    raw = oma_key.key if isinstance(oma_key, OmaKey) else _as_bytes(oma_key)
    six = raw[:6]
    return en14908_digest(six, b"", PLC_R1) + en14908_digest(six, b"", PLC_R2)


class PlcRc4:
    """RC4 + OMA digest for OSGP PLC messages with the 12-byte OMA key (structure per the public
    exercise code; the real ETSI TS 104 001 derivation is not public).

    ``derive_base_key(raw_key) -> 16 bytes`` replaces the base-key derivation (default
    ``plc_base_key``) if the real one becomes known; everything else (digest of the plaintext as IV,
    XOR into bytes 0..7, digest appended in clear) stays."""

    __slots__ = ("base_key", "oma_key")

    def __init__(self, oma_key: OmaKey | Buffer, *,
                 derive_base_key: Callable[[bytes], bytes] = plc_base_key):
        self.oma_key = oma_key if isinstance(oma_key, OmaKey) else OmaKey(oma_key)
        self.base_key = bytes(derive_base_key(self.oma_key.key))
        if len(self.base_key) < DIGEST_SIZE:
            raise ValueError("derived PLC base key must have at least 8 bytes")

    def __repr__(self) -> str:
        return "PlcRc4(<key>)"

    def rc4_key(self, digest: Buffer) -> bytes:
        return mix_digest(self.base_key, digest)

    def stream(self, digest: Buffer) -> Rc4Stream:
        return Rc4Stream(self.rc4_key(digest))

    def encrypt(self, plaintext: Buffer) -> bytes:
        """``RC4(K_rc4, M) || OMA(K, M)``."""
        plaintext = _as_bytes(plaintext)
        tag = self.oma_key.digest(plaintext)
        return self.stream(tag).process(plaintext) + tag

    def decrypt(self, data: Buffer) -> bytes:
        """Inverse of ``encrypt``; raises ``DigestMismatch`` if the digest does not verify."""
        data = _as_bytes(data)
        if len(data) < DIGEST_SIZE:
            raise DigestMismatch("message shorter than its digest")
        body, tag = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
        plaintext = self.stream(tag).process(body)
        if not self.oma_key.new(plaintext).verify(tag):
            raise DigestMismatch("OMA digest of the decrypted message does not match")
        return plaintext
