"""ISO/IEC 14908.1 4-bit encodings (reference/lower-layers.md section 4.3) and the delta-backlog
values a sender writes into the L2 header (section 4.6).

A node's configuration stores timers and buffers as 4-bit codes, as the real configuration
structure does; these functions turn them into seconds and counts. The tables are small enough
to precompute, so the hot path is one tuple lookup.
"""

from __future__ import annotations

__all__ = [
    "BUFFER_COUNTS", "BUFFER_SIZES", "UNIQUE_ID_RECEIVE_TIMER_S", "buffer_count", "buffer_size",
    "delta_backlog", "receive_timer_s", "transmit_timer_s",
]

# transmit / repeat timer: 16 << (code / 2) ms, times 1.5 for odd codes (16, 24, 32 .. 3072 ms);
# the proxy "long timer" flag adds 16 to the code before decoding.
_TX_MS = tuple((16 << (code // 2)) * (3 if code & 1 else 2) // 2 for code in range(32))
# receive timer: 128, 192, 256 .. 24576 ms (the transmit timer of code + 6)
_RX_MS = tuple(_TX_MS[code + 6] for code in range(16))
BUFFER_SIZES = (255, 20, 20, 21, 22, 24, 26, 30, 34, 42, 50, 66, 82, 114, 146, 210)
BUFFER_COUNTS = (0, 1, 1, 2, 3, 5, 7, 11, 15, 23, 31, 47, 63, 95, 127, 191)
#: Neuron-ID-addressed messages use a fixed 8192 ms receive timer (section 4.2)
UNIQUE_ID_RECEIVE_TIMER_S = 8.192
#: delta backlog of a broadcast ACKD / REQUEST with no backlog override (section 4.6)
BROADCAST_BACKLOG = 15


def _code(code: int) -> int:
    if not 0 <= code <= 15:
        raise ValueError(f"a 4-bit code is 0..15, not {code}")
    return code


def transmit_timer_s(code: int, long: bool = False) -> float:
    """Transmit (ACKD / REQUEST retry) or repeat (UNACKD_RPT) timer of a 4-bit code, seconds."""
    return _TX_MS[_code(code) + (16 if long else 0)] / 1000.0


def receive_timer_s(code: int) -> float:
    """Receive timer (how long duplicates are recognised) of a 4-bit code, seconds."""
    return _RX_MS[_code(code)] / 1000.0


def buffer_size(code: int) -> int:
    return BUFFER_SIZES[_code(code)]


def buffer_count(code: int) -> int:
    return BUFFER_COUNTS[_code(code)]


def delta_backlog(kind: str, *, retries_left: int = 0, first: bool = True, group_size: int = 0,
                  outstanding: int = 0, override: int = 0) -> int:
    """The L2 delta backlog of a frame the node sends (section 4.6), i.e. how many frames it is
    expected to cause. ``kind``: "unicast" (ACKD/REQUEST to subnet/node or Neuron ID), "group",
    "broadcast" (ACKD/REQUEST), "repeat" (UNACKD_RPT) or "none" (ACK, RESPONSE, REMINDER,
    CHALLENGE, REPLY, an unacknowledged APDU). Clamped to the 6-bit field."""
    if kind == "unicast":
        value = 1
    elif kind == "group":
        value = group_size if first else outstanding
    elif kind == "broadcast":
        value = override or BROADCAST_BACKLOG
    elif kind == "repeat":
        value = retries_left if first else 0
    else:
        value = 0
    return max(0, min(63, value))
