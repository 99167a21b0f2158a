"""The PHY's forward error correction (designed: the TS 103 908 code is not public; DESIGN.md D4).

Code: the binary BCH(255, 239) code (t = 2, designed distance 5, generator m1(x)·m3(x) over
GF(2^8) with primitive polynomial x^8+x^4+x^3+x^2+1), shortened to **(160, 144)**: 18 data
bytes + 16 parity bits per block, rate 0.9 exactly. A frame of b data bits uses
B = ceil(b / 144) blocks of nearly equal size (b/B data bits each, within one bit, + 16
parity), so the rate is 0.9 for multiples of 144 bits and a little less otherwise (880/992 =
0.887 for a 110-byte LPDU); the PHY header uses the same code as (24, 8).

What it corrects: **every pattern of at most 2 bit errors in a block**, at any positions (parity
included). With 3 or more errors a block is either flagged uncorrectable (its syndrome is not one
of a ≤ 2-error pattern's) or miscorrected to another codeword; the LPDU's CRC-16 catches the
latter. Why BCH t=2 rather than a product of Hamming codes: at the same rate it corrects any
two errors per 160 bits instead of one per 80, and decoding stays one table look-up per block.

Decoding is a syndrome table: the syndrome of a received block is the XOR of the remainders
x^p mod g(x) of its set positions (a 16-bit int); a 65536-entry table maps each syndrome of a
≤ 2-error pattern to its positions (distance 5 makes those syndromes distinct). Everything is
numpy on (blocks x 160) bit arrays: no per-bit Python.

Interleaver (designed): a frame's coded bits are sent column-wise (bit j of every block, then
bit j+1, ...). The blocks being of equal length (within one bit, longer first), any burst of up
to 2·B consecutive channel bits in a frame of B blocks puts at most two errors in any block and
is corrected: a 110-byte LPDU (7 blocks) survives any 14-symbol (3.9 ms) burst.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N = 160          # block length (bits)
K = 144          # data bits per full block
PARITY = N - K   # 16
_PRIMITIVE = 0x11D


def _gf_tables() -> tuple[list[int], list[int]]:
    exp, log = [0] * 510, [0] * 256
    v = 1
    for i in range(255):
        exp[i] = exp[i + 255] = v
        log[v] = i
        v <<= 1
        if v & 0x100:
            v ^= _PRIMITIVE
    return exp, log


def _minimal_poly(power: int, exp: list[int], log: list[int]) -> int:
    """GF(2) polynomial (bit i = coefficient of x^i) whose roots are the conjugates of
    alpha^power."""
    roots, r = [], power % 255
    while r not in roots:
        roots.append(r)
        r = (r * 2) % 255
    poly = [1]  # coefficients in GF(256), lowest degree first
    for root in roots:
        a = exp[root]
        new = [0] * (len(poly) + 1)
        for i, c in enumerate(poly):
            new[i + 1] ^= c
            if c:
                new[i] ^= exp[log[c] + log[a]]
        poly = new
    assert all(c in (0, 1) for c in poly)
    return sum(c << i for i, c in enumerate(poly))


def _poly_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        b >>= 1
    return out


def _generator() -> int:
    exp, log = _gf_tables()
    return _poly_mul(_minimal_poly(1, exp, log), _minimal_poly(3, exp, log))


GENERATOR = _generator()  # degree 16


def _remainders() -> np.ndarray:
    """REM[p] = x^p mod g(x), for polynomial positions 0..N-1."""
    rem, v = [], 1
    for _ in range(N):
        rem.append(v)
        v <<= 1
        if v & (1 << PARITY):
            v ^= GENERATOR
    return np.array(rem, dtype=np.int64)


_REM = _remainders()
# Column t of a block in transmit order holds polynomial position N-1-t (data first, MSB first).
_COL = _REM[::-1].copy()


def _syndrome_table() -> tuple[np.ndarray, np.ndarray]:
    """ERR1/ERR2[syndrome] = the transmit-order columns of the (≤ 2) errors; -1 = none;
    UNCORRECTABLE marks syndromes of no ≤ 2-error pattern."""
    e1 = np.full(1 << PARITY, -2, dtype=np.int16)   # -2: uncorrectable
    e2 = np.full(1 << PARITY, -1, dtype=np.int16)
    e1[0] = -1
    cols = np.arange(N)
    e1[_COL] = cols
    i, j = np.triu_indices(N, 1)
    s = _COL[i] ^ _COL[j]
    assert len(np.unique(s)) == len(s) and not np.isin(s, _COL).any()
    e1[s], e2[s] = i, j
    return e1, e2


_ERR1, _ERR2 = _syndrome_table()


def block_sizes(n_data_bits: int) -> tuple[int, ...]:
    """Data bits per block: as few blocks as hold the message, sizes within one bit of each
    other (longer ones first), so the interleaver sees blocks of equal length."""
    blocks = -(-n_data_bits // K)
    base, longer = divmod(n_data_bits, blocks) if blocks else (0, 0)
    return (base + 1,) * longer + (base,) * (blocks - longer)


def coded_length(n_data_bits: int) -> int:
    return n_data_bits + PARITY * len(block_sizes(n_data_bits))


@lru_cache(maxsize=512)
def _layout(n_data_bits: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(where data bit i sits in the flat (blocks x N) array, the flat indices of the sent
    bits in channel order, block sizes). Each block's data is right-aligned before its
    parity; its leading columns are the (unsent) padding of the shortened code."""
    sizes = block_sizes(n_data_bits)
    first_real = np.array([K - s for s in sizes], dtype=np.int64)
    blk = np.repeat(np.arange(len(sizes)), sizes)
    offset = np.concatenate([np.arange(s) for s in sizes]) if sizes else np.zeros(0, np.int64)
    data_at = blk * N + first_real[blk] + offset
    # interleaver: column by column (offset from each block's first real column), blocks in
    # order within a column
    blk = np.repeat(np.arange(len(sizes)), [s + PARITY for s in sizes])
    offset = (np.concatenate([np.arange(s + PARITY) for s in sizes]) if sizes
              else np.zeros(0, np.int64))
    order = np.lexsort((blk, offset))
    channel = (blk * N + first_real[blk] + offset)[order]
    for a in (data_at, channel):
        a.setflags(write=False)
    return data_at, channel, sizes


def encode_blocks(data_bits: np.ndarray) -> np.ndarray:
    """(n_data_bits,) uint8 bits -> (blocks, N) array, each row a codeword in transmit order,
    shortened blocks padded with leading zeros (padding columns are not sent)."""
    data_at, _, sizes = _layout(len(data_bits))
    rows = np.zeros(len(sizes) * N, dtype=np.uint8)
    rows[data_at] = data_bits
    rows = rows.reshape(len(sizes), N)
    parity = np.bitwise_xor.reduce(np.where(rows[:, :K] == 1, _COL[:K], 0), axis=1)
    rows[:, K:] = (parity[:, None] >> np.arange(PARITY - 1, -1, -1)) & 1
    return rows


def decode_blocks(rows: np.ndarray, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correct ``rows`` (blocks x N, padding columns zero) in place. Returns (rows, bits
    corrected per block, ok per block); a block is not ok (and left as received) when its
    syndrome is not that of ≤ 2 errors, or points into the padding."""
    syn = np.bitwise_xor.reduce(np.where(rows == 1, _COL, 0), axis=1)
    e1, e2 = _ERR1[syn].astype(np.int64), _ERR2[syn].astype(np.int64)
    first_real = K - np.asarray(sizes, dtype=np.int64)  # columns before this are padding
    ok = (e1 != -2) & ((e1 < 0) | (e1 >= first_real)) & ((e2 < 0) | (e2 >= first_real))
    b = np.arange(len(rows))
    for e in (e1, e2):
        hit = ok & (e >= 0)
        rows[b[hit], e[hit]] ^= 1
    corrected = np.where(ok, (e1 >= 0).astype(np.int64) + (e2 >= 0), 0)
    return rows, corrected, ok


def encode_bits(data_bits: np.ndarray) -> np.ndarray:
    """Data bits -> coded, interleaved channel bits."""
    return encode_blocks(data_bits).reshape(-1)[_layout(len(data_bits))[1]]


def decode_bits(channel_bits: np.ndarray, n_data_bits: int, *, partial: bool = False
                ) -> tuple[np.ndarray | None, int]:
    """Channel bits (hard, 0/1) -> (data bits, bits corrected). When a block fails the data is
    None, or with ``partial`` the data with that block's bits as received (for BER counts)."""
    data_at, channel, sizes = _layout(n_data_bits)
    rows = np.zeros(len(sizes) * N, dtype=np.uint8)
    rows[channel] = channel_bits
    rows, corrected, ok = decode_blocks(rows.reshape(len(sizes), N), sizes)
    if not (partial or ok.all()):
        return None, 0
    return rows.reshape(-1)[data_at], int(corrected.sum())
