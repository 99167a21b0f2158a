"""One station's access to the simulated power line: the predictive p-persistent CSMA of
ISO/IEC 14908.1 (lower-layers.md section 7). Sans-I/O: the line (phy/line.py) owns time and
carrier sense and tells the MAC what happened; the MAC answers when it wants to transmit.

The channel cycle after a frame ends, as this station saw it::

    end ─ Beta1 ─ priority slot 1 .. P ─ randomizing window: 16 x backlog Beta2 slots ─ ...

* a priority frame (L2 bit 7) goes in the station's own priority slot; others pick a slot
  uniformly in ``[0, 16 x backlog)`` after the priority slots;
* a frame queued after Beta1 ended (the channel has been idle a while) starts a new cycle at
  the next slot boundary: the idle channel stays slotted and priority still comes first;
* a station that senses carrier before its slot defers (a *backoff*) and starts again after
  that frame; carrier is sensed ``RX_START_DELAY`` after a frame starts, so two stations whose
  slots are closer than that collide (there is no collision detection on power line);
* backlog: starts at 1, adds each frame's delta backlog (sent or received), loses 1 for a frame
  with delta 0 and for every 16 slots of idle channel; clamped to 1..63, overflows counted.

Timing comes from the PL-20 channel timing in bit times (section 7) at the A-band bit rate of
3600 bit/s: minimum inter-packet gap 17.5, receive start delay 7.3, receive end delay 1.6,
indeterminate time 10.1, 8 priority slots. designed (not public): Beta1 after a received frame
is the minimum inter-packet gap counted from the moment receivers notice the end (receive end
delay); Beta1 after a transmitted frame adds the receive end delay, so sender and receivers
share one slot grid; Beta2 (a slot) is the indeterminate time, longer than the carrier-sense
delay, so only stations picking the same slot collide; the packet-cycle decay is one backlog
step per 16 idle slots. ``MacTiming`` holds them all, replaceable.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BIT_S = 1.0 / 3600.0


@dataclass(frozen=True)
class MacTiming:
    """Channel timing in bit times (PL-20, section 7) and the window constants."""
    bit_s: float = BIT_S
    min_interpacket_bits: float = 17.5
    rx_start_delay_bits: float = 7.3
    rx_end_delay_bits: float = 1.6
    beta2_bits: float = 10.1          # designed: the indeterminate time
    priority_slots: int = 8
    wbase: int = 16
    max_backlog: int = 63

    @property
    def beta1_rx(self) -> float:
        return self.min_interpacket_bits * self.bit_s

    @property
    def beta1_tx(self) -> float:
        return (self.min_interpacket_bits + self.rx_end_delay_bits) * self.bit_s

    @property
    def beta2(self) -> float:
        return self.beta2_bits * self.bit_s

    @property
    def detect(self) -> float:
        """How long after a frame starts a station senses its carrier."""
        return self.rx_start_delay_bits * self.bit_s

    @property
    def end_delay(self) -> float:
        return self.rx_end_delay_bits * self.bit_s


@dataclass
class StationStats:
    """What one station's MAC and receiver counted. ``collisions``: frames it sent that
    overlapped another station's frame on the line (the simulator sees it; no station can).
    ``crc_errors``: frames found but not decoded (FEC or CRC failed); ``missed``: frames not
    found (too weak, no sync, or the station was transmitting); ``overheard``: frames for other
    stations it is predicted to have decoded (not demodulated: phy/line.py)."""
    sent: int = 0
    received: int = 0
    collisions: int = 0
    crc_errors: int = 0
    missed: int = 0
    backlog_overflows: int = 0
    backoffs: int = 0
    overheard: int = 0
    dropped: int = 0          # queue full


@dataclass(slots=True)
class Queued:
    raw: bytes
    priority: bool
    alt_path: bool
    delta_backlog: int


#: frames a station's MAC holds before it drops new ones (a runaway node guard)
MAX_QUEUE = 64


@dataclass
class Mac:
    """One station's CSMA state. Times are the line's virtual seconds."""
    timing: MacTiming = field(default_factory=MacTiming)
    rng: random.Random = field(default_factory=random.Random)
    stats: StationStats = field(default_factory=StationStats)
    priority_slot: int = 1                 # 1..timing.priority_slots
    backlog: int = 1
    queue: deque = field(default_factory=deque)
    grid: float = 0.0                      # when Beta1 ended: priority slot 1 starts here
    decay_from: float = 0.0                # idle-channel backlog decay counted from here
    attempt: float | None = None           # when this station means to transmit
    busy_until: float = 0.0                # transmitting until

    def enqueue(self, raw: bytes, *, front: bool = False) -> bool:
        """Queue a frame (LPDU with CRC); priority frames go before ordinary ones, ``front``
        before all (a frame sent bypassing the MAC)."""
        if len(self.queue) >= MAX_QUEUE and not front:
            self.stats.dropped += 1
            log.warning("MAC queue full (%d frames): a frame is dropped", MAX_QUEUE)
            return False
        l2 = raw[0]
        item = Queued(bytes(raw), bool(l2 & 0x80), bool(l2 & 0x40), l2 & 0x3F)
        if front:
            self.queue.appendleft(item)
        elif item.priority:
            position = sum(1 for q in self.queue if q.priority)
            self.queue.insert(position, item)
        else:
            self.queue.append(item)
        return True

    # -- what the line tells the MAC ----------------------------------------------------

    def channel_idle(self, end: float, *, own: bool) -> None:
        """The channel went idle here: a frame this station sent (``own``) or sensed ended at
        ``end``. A new cycle starts; any planned attempt is void."""
        timing = self.timing
        self.grid = end + (timing.beta1_tx if own else timing.end_delay + timing.beta1_rx)
        self.decay_from = self.grid + timing.priority_slots * timing.beta2
        self.attempt = None

    def defer(self) -> None:
        """Carrier sensed before this station's slot: wait for the next cycle."""
        self.attempt = None
        self.stats.backoffs += 1

    def frame_done(self, delta_backlog: int) -> None:
        """A frame was sent or received successfully: the backlog follows its delta."""
        if delta_backlog == 0:
            self.backlog = max(1, self.backlog - 1)
            return
        value = self.backlog + delta_backlog
        if value > self.timing.max_backlog:
            self.stats.backlog_overflows += 1
            value = self.timing.max_backlog
        self.backlog = value

    def decay(self, now: float) -> None:
        """One backlog step per ``wbase`` slots of idle channel (the packet-cycle rule)."""
        period = self.timing.wbase * self.timing.beta2
        steps = int((now - self.decay_from) // period)
        if steps > 0:
            self.decay_from += steps * period
            self.backlog = max(1, self.backlog - steps)

    def plan(self, now: float) -> float | None:
        """When to transmit the head of the queue (None: nothing to send or transmitting);
        draws the random slot once per cycle."""
        if self.attempt is not None:
            return self.attempt
        if not self.queue or now < self.busy_until:
            return None
        timing = self.timing
        beta2 = timing.beta2
        self.decay(now)
        grid = self.grid
        if now > grid:  # an idle channel: a new cycle from the next slot boundary
            grid += math.ceil((now - grid) / beta2 - 1e-9) * beta2
        if self.queue[0].priority:
            slot = grid + (self.priority_slot - 1) * beta2
        else:
            slot = grid + (timing.priority_slots
                           + self.rng.randrange(timing.wbase * self.backlog)) * beta2
        self.attempt = slot
        return slot

    def start(self, now: float, airtime: float) -> Queued:
        """Transmit the head of the queue now, for ``airtime`` seconds."""
        self.attempt = None
        self.busy_until = now + airtime
        self.stats.sent += 1
        return self.queue.popleft()
