"""OMA digest: the 8-byte keyed authenticator of OSGP (PLC, 12-byte "OMA key") and of the MEP
port (16-byte MAK/MBK), plus its EN 14908 variant (6-byte key, caller-provided initial state,
message read backwards) that the public OSGP crypto notes use to derive the PLC RC4 base key.

Provenance: documented in the MEP Client Developer's Guide, Appendix A (reference C function
``Digest``), restated in reference/osgp-app-layer.md section 5.1. This is our own implementation of
that description; the known-answer tests (section 11 of the same file) pin it byte for byte.

The algorithm (``L`` = key length, ``ITER = L`` for a 6-byte key else ``L + L/2``, block
``B = 8*ITER`` message bytes: 48 / 144 / 192 for 6 / 12 / 16-byte keys)::

    state a[0..7] (zero, or a caller-provided initial state)
    for every B-byte block X of the zero-padded message, step s = 8*i + t (i < ITER, t < 8):
        v    = 7 - t                                   # state byte updated: 7, 6, ..., 0
        n    = NOT(a[v] + v) mod 256
        f    = ROL8(n, 1) if bit t of K[i mod L] else -ROR8(n, 1)
        a[v] = a[(v + 1) mod 8] + X[s] + f   (mod 256)
    digest = a[0] .. a[7]

Conventions (deliberate, keep them):

* Zero padding, no finalisation: ``D(M) == D(M || 00..)`` as long as the zeros stay inside the
  last block. A MEP ``00`` write response therefore carries the same digest as its request. This
  is the protocol's weakness; a faithful meter must reproduce it, so do not "fix" it.
* Empty message: like the C reference (its ``do .. while`` loop always runs once), a digest over
  zero bytes processes one all-zero block, so ``D(b"") == D(b"\\x00")`` (consistent with the
  padding rule). The Rust and CTF ports return the untouched (all-zero) state instead; we do not
  follow them. (Section 11.5's 12-byte-key vector is the same for ``b""`` and ``b"\\x00"``.)
* Block boundary: if at least one byte was fed and the total length is a multiple of ``B``, no
  extra zero block is processed: what one C call with ``bEnd = 1`` over the whole message does,
  and what Rust/CTF do. The C reference finalised by a *separate* call (``apduSize = 0``, App. A
  recipe 1) exactly at a block boundary would process one more zero block; which one a real meter
  uses is unknown. It only matters for a digest input of exactly 192 or 384 bytes (MEP) / 144,
  288 .. bytes (PLC).

Speed (DESIGN.md section 6; measured by ``benchmarks/bench_digest.py``, never in timed tests): the
round function is a lookup in one of 16 shared 256-entry tables (8 state positions x 2 key-bit
values), so a key is just the choice of table per step (``OmaKey``). The steps are unrolled into
generated Python functions, one per (block size, number of message bytes in the block); steps that
only see zero padding skip the message term. The code objects are shared by all keys and compiled
lazily; a key keeps small function objects bound to its tables.
"""

from __future__ import annotations

import hmac
import types

__all__ = [
    "DIGEST_SIZE",
    "KEY_LENGTHS",
    "OmaDigest",
    "OmaKey",
    "block_size",
    "en14908_digest",
    "oma_digest",
]

DIGEST_SIZE = 8
#: key lengths the digest is defined for: 6 (EN 14908 authentication), 12 (OSGP OMA key), 16 (MEP)
KEY_LENGTHS = (6, 12, 16)

#: what the functions accept as data (``collections.abc.Buffer`` needs Python 3.12)
Buffer = bytes | bytearray | memoryview
_State = tuple[int, int, int, int, int, int, int, int]
_ZERO_STATE: _State = (0, 0, 0, 0, 0, 0, 0, 0)


def key_iterations(key_length: int) -> int:
    """Key bytes walked per block: all of a 6-byte key once, other keys 1.5 times."""
    return key_length if key_length == 6 else key_length + key_length // 2


def block_size(key_length: int) -> int:
    """Message bytes per block (one message byte per key bit): 48, 144 or 192."""
    return 8 * key_iterations(key_length)


def _round_table(v: int, bit: int) -> tuple[int, ...]:
    """f(a[v]) for state position v and key bit ``bit``, as a 256-entry table (mod 256)."""
    out = []
    for a in range(256):
        n = ~(a + v) & 0xFF
        if bit:
            f = ((n << 1) | (n >> 7)) & 0xFF
        else:
            f = -(((n >> 1) | (n << 7)) & 0xFF) & 0xFF
        out.append(f)
    return tuple(out)


# _ROUND[v][bit]: shared by every key
_ROUND = tuple((_round_table(v, 0), _round_table(v, 1)) for v in range(8))

# (block size, message bytes in the block) -> code object of the unrolled block function
_CODE: dict[tuple[int, int], types.CodeType] = {}


def _block_code(size: int, nbytes: int) -> types.CodeType:
    """Code of ``f(s, x, t0=.., .., t{size-1}=..) -> new state``: one block of ``size`` steps, the
    first ``nbytes`` with message bytes ``x`` (len(x) == nbytes), the rest with zero padding. The
    per-step tables are bound as parameter defaults, so inside the function they are fast locals."""
    code = _CODE.get((size, nbytes))
    if code is not None:
        return code
    tables = ", ".join(f"t{k}" for k in range(size))
    lines = [f"def _oma_block_{size}_{nbytes}(s, x, {tables}):",
             "    a0, a1, a2, a3, a4, a5, a6, a7 = s"]
    if nbytes:
        lines.append("    " + ", ".join(f"x{k}" for k in range(nbytes)) + ", = x")
    for k in range(size):
        v = 7 - k % 8
        prev = (v + 1) % 8
        if k < nbytes:
            lines.append(f"    a{v} = (a{prev} + x{k} + t{k}[a{v}]) & 255")
        else:
            lines.append(f"    a{v} = (a{prev} + t{k}[a{v}]) & 255")
    lines.append("    return (a0, a1, a2, a3, a4, a5, a6, a7)")
    namespace: dict = {}
    # generated from the constants above only (no outside input): S102 does not apply
    source = compile("\n".join(lines), f"<oma-digest block {size}/{nbytes}>", "exec")
    exec(source, namespace)  # noqa: S102
    code = namespace[f"_oma_block_{size}_{nbytes}"].__code__
    _CODE[(size, nbytes)] = code
    return code


def _as_bytes(data: Buffer) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (int, str)):  # bytes(5) would silently mean five zero bytes
        raise TypeError(f"expected a bytes-like object, got {type(data).__name__}")
    return bytes(data)


def _as_state(initial_state: Buffer | None) -> _State:
    if initial_state is None:
        return _ZERO_STATE
    state = tuple(_as_bytes(initial_state))
    if len(state) != DIGEST_SIZE:
        raise ValueError(f"initial state must be {DIGEST_SIZE} bytes, got {len(state)}")
    return state  # type: ignore[return-value]


class OmaKey:
    """A key prepared for digesting: the per-step round tables it selects, and the unrolled block
    functions bound to them (created on first use, one per message length seen in a final block).
    Build one per key and keep it (a meter holds one per MAK/MBK/OMA key); it is logically
    immutable and can be shared. ``OmaDigest`` also accepts raw key bytes and builds one itself
    (about 20 us per key, see the benchmark)."""

    __slots__ = ("_fns", "_tables", "block_size", "key")

    def __init__(self, key: Buffer):
        key = _as_bytes(key)
        if len(key) not in KEY_LENGTHS:
            raise ValueError(f"OMA digest key must be 6, 12 or 16 bytes, got {len(key)}")
        self.key = key
        size = block_size(len(key))
        self.block_size = size
        length = len(key)
        self._tables = tuple(
            _ROUND[7 - s % 8][(key[(s // 8) % length] >> (s % 8)) & 1] for s in range(size)
        )
        self._fns: dict[int, types.FunctionType] = {}

    def __repr__(self) -> str:  # never show key material
        return f"OmaKey(<{len(self.key)} bytes>)"

    def _fn(self, nbytes: int) -> types.FunctionType:
        fn = self._fns.get(nbytes)
        if fn is None:
            fn = types.FunctionType(_block_code(self.block_size, nbytes), {}, "oma_block",
                                    self._tables)
            self._fns[nbytes] = fn
        return fn

    def new(self, data: Buffer = b"", *, initial_state: Buffer | None = None) -> OmaDigest:
        """A streaming digest under this key (optionally primed with ``data``)."""
        return OmaDigest(self, data, initial_state=initial_state)

    def digest(self, data: Buffer, *, initial_state: Buffer | None = None) -> bytes:
        """One-shot digest of ``data`` (same result as ``new(data).digest()``)."""
        data = _as_bytes(data)
        state = _as_state(initial_state)
        size = self.block_size
        n = len(data)
        if n <= size:  # the common case: one (possibly padded) block, or the empty message
            return bytes(self._fn(n)(state, data))
        full = n - n % size
        block = self._fn(size)
        for off in range(0, full, size):
            state = block(state, data[off:off + size])
        if full < n:
            state = self._fn(n - full)(state, data[full:])
        return bytes(state)


class OmaDigest:
    """Streaming OMA digest, hashlib style::

        d = OmaDigest(key); d.update(request)        # request code .. sequence number
        response_state = d.copy()                     # keep the state before finalising
        request_tag = d.digest()
        response_state.update(response)               # response code .. data
        response_tag = response_state.digest()        # digest over request || response

    ``update(a); update(b)`` equals ``update(a + b)``; ``digest()`` pads with zeros (see the module
    docstring for the empty-message and block-boundary conventions), does not change the object, and
    may be called again or followed by more ``update`` calls.

    ``initial_state`` pre-loads the 8-byte state (the C reference's ``digestValueOut`` as input);
    zero by default."""

    __slots__ = ("_buf", "_fed", "_key", "_state")

    name = "oma-digest"
    digest_size = DIGEST_SIZE

    def __init__(self, key: OmaKey | Buffer, data: Buffer = b"", *,
                 initial_state: Buffer | None = None):
        self._key = key if isinstance(key, OmaKey) else OmaKey(key)
        self._state = _as_state(initial_state)
        self._buf = b""
        self._fed = False
        if data:
            self.update(data)

    @property
    def block_size(self) -> int:
        return self._key.block_size

    @property
    def key(self) -> OmaKey:
        return self._key

    def update(self, data: Buffer) -> None:
        data = _as_bytes(data)
        if not data:
            return
        self._fed = True
        if self._buf:
            data = self._buf + data
        size = self._key.block_size
        n = len(data)
        if n < size:
            self._buf = data
            return
        full = n - n % size
        block = self._key._fn(size)
        state = self._state
        for off in range(0, full, size):
            state = block(state, data[off:off + size])
        self._state = state
        self._buf = data[full:]

    def copy(self) -> OmaDigest:
        other = OmaDigest.__new__(OmaDigest)
        other._key = self._key
        other._state = self._state
        other._buf = self._buf
        other._fed = self._fed
        return other

    def digest(self) -> bytes:
        buf = self._buf
        if buf or not self._fed:
            return bytes(self._key._fn(len(buf))(self._state, buf))
        return bytes(self._state)

    def hexdigest(self) -> str:
        return self.digest().hex()

    def verify(self, tag: Buffer) -> bool:
        """Constant-time comparison of ``digest()`` with a received 8-byte tag."""
        return hmac.compare_digest(self.digest(), _as_bytes(tag))


def oma_digest(key: OmaKey | Buffer, data: Buffer, *, initial_state: Buffer | None = None) -> bytes:
    """One-shot OMA digest of ``data`` under a 6-, 12- or 16-byte key."""
    prepared = key if isinstance(key, OmaKey) else OmaKey(key)
    return prepared.digest(data, initial_state=initial_state)


def en14908_digest(key: OmaKey | Buffer, data: Buffer = b"",
                   initial_state: Buffer = bytes(8)) -> bytes:
    """EN 14908 flavour of the digest: the same round function with an explicit initial state, only
    the first 6 key bytes (ITER = 6, 48-byte blocks) and the message consumed from its last byte
    backwards (then zero padding, as usual).

    Provenance: public OSGP crypto exercise code (reference/osgp-app-layer.md section 5.4, "CTF"),
    where it is only called with an empty message, to derive the PLC RC4 base key; that case
    equals the MEP reference ``Digest()`` with ``keyLen = 6``, the state pre-loaded,
    ``apduSize = 0`` and ``bEnd = 1`` (one all-zero block), and a test vector pins it. For a
    non-empty message the "reverse, then pad at the end" reading is our interpretation (no vector
    checks it). A longer key is cut to its first 6 bytes; an ``OmaKey`` must be a 6-byte key."""
    if isinstance(key, OmaKey):
        if len(key.key) != 6:
            raise ValueError("en14908_digest needs a 6-byte OmaKey (or raw key bytes)")
        prepared = key
    else:
        raw = _as_bytes(key)
        if len(raw) < 6:
            raise ValueError(f"EN 14908 digest key needs at least 6 bytes, got {len(raw)}")
        prepared = OmaKey(raw[:6])
    return prepared.digest(_as_bytes(data)[::-1], initial_state=initial_state)
