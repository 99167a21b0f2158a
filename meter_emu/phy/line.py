"""One simulated power line (the ETSI TS 103 908 channel, DESIGN.md D4) in virtual time: the
physical big brother of lon/channel.py. Stations share it through the CSMA MAC of 14908.1
(phy/mac.py); every frame is modulated and demodulated by phy/modem.py in complex baseband, so
what a receiver gets, its signal strength and its margin come out of the signal.

Stations:
* a 14908.1 node (``attach(node)``): the line hands it ``node.receive(lpdu, now,
  LinkInfo(strength_db, margin_db, alt_path))`` for frames it decodes and ``node.addressed``
  takes, queues what ``receive`` and ``poll`` return on its MAC, and polls it at
  ``node.next_deadline()``; the node's stack time is ``line.now``;
* a port (``attach_port(on_frame)``): a data concentrator or serial NI relaying raw frames:
  ``on_frame(raw, now, info)`` for every frame it decodes; ``send(index, raw)`` queues one.

The signal: a frame occupies ``modem.airtime(len)`` seconds. When it ends, each station that
must decode it gets the frame at ``tx_level_dbuv - attenuation(sender, station)``, plus every
other transmission that overlapped it (its own level, time offset and carrier), plus the
line's noise (phy/noise.py), and ``modem.demodulate`` decides. Collisions and weak links come
out of that. A station that was transmitting meanwhile hears nothing (half duplex).

Carrier sense is a level test, not a demodulation: a station senses a frame whose level at its
position is ``CARRIER_SNR_DB`` above the AWGN power in the symbol bandwidth, ``RX_START_DELAY``
(phy/mac.MacTiming.detect) after it starts.

Shortcuts (documented because they are not physics):
* a frame ``SKIP_SNR_DB`` (-10 dB) or more below the noise in the symbol bandwidth is counted
  as missed without demodulation: uncoded BPSK there has a bit error rate of 0.33, so even the
  shortest LPDU (56 bits) decodes with probability below 1e-9;
* a node the frame does not address is not demodulated: its MAC still needs the frame's delta
  backlog, so it is *predicted* to decode it when no other frame overlapped and its SNR is at
  least ``PREDICT_SNR_DB`` (counted as ``overheard``);
* when a receiver, looking for a weak frame, finds a stronger overlapping one instead
  (capture), the weak one counts as missed: the strong one is delivered at its own end, once;
* the receiver listens on the carrier the frame uses (a real one runs both demodulators; the
  other would find nothing);
* each receiver draws its own noise.

``taps`` get ``(raw, sender, start, end)`` for every frame put on the line. ``run_until``
picks up ``node.send`` calls made from outside (it re-reads every node's deadline first), so
``HeadEnd.on_channel(line)`` (client/plc.py) works as on a Channel; ``advance``/``next_event``
let a real-time driver (phy/realtime.py) pace the line.
"""

from __future__ import annotations

import heapq
import logging
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..lon import frame as lon_frame
from ..lon.channel import VirtualTime
from ..lon.node import LinkInfo, Node
from . import modem as modem_module
from .mac import Mac, MacTiming, StationStats
from .modem import Modem
from .noise import Noise

__all__ = ["PowerLine", "Noise", "StationStats", "MacTiming"]

log = logging.getLogger(__name__)

CARRIER_SNR_DB = 3.0      # designed: carrier-sense threshold above the in-band noise
SKIP_SNR_DB = -10.0       # below this a frame cannot be decoded (see the docstring)
PREDICT_SNR_DB = 8.0      # designed: bystanders "decode" a clean frame at or above this SNR
_LEAD_S = 0.004           # noise before and after a frame in a receiver's window

_POLL, _ATTEMPT, _END = 0, 1, 2


@dataclass(eq=False)
class _Tx:
    sender: int
    raw: bytes
    lpdu: object            # lon_frame.Lpdu, or None when it does not decode
    alt_path: bool
    delta_backlog: int
    start: float
    end: float
    overlaps: list = field(default_factory=list)
    samples: np.ndarray | None = None


@dataclass(eq=False)
class _Station:
    name: str
    mac: Mac
    node: Node | None = None
    on_frame: Callable | None = None


class PowerLine(VirtualTime):
    def __init__(self, *, modem: Modem | None = None, noise: Noise | None = None,
                 tx_level_dbuv: float = 122.0, default_attenuation_db: float = 40.0,
                 seed: int | None = None, timing: MacTiming | None = None):
        self.modem = modem or Modem()
        self.noise = noise or Noise()
        self.tx_level_dbuv = tx_level_dbuv
        self.default_attenuation_db = default_attenuation_db
        self.timing = timing or MacTiming()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._mac_seed = random.Random(seed)
        self.now = 0.0
        self.taps: list[Callable[[bytes, int, float, float], None]] = []
        self.stats: list[StationStats] = []
        self.names: list[str] = []
        self._stations: list[_Station] = []
        self._attenuation: dict[tuple[int, int], float] = {}
        self._events: list = []
        self._seq = 0
        self._polls: dict[int, float] = {}
        self._active: list[_Tx] = []
        self._center = getattr(modem_module, "CENTER_HZ",
                               (modem_module.PRIMARY_HZ + modem_module.SECONDARY_HZ) / 2)
        self._band = self.noise.band_dbuv(modem_module.SYMBOL_RATE)

    # -- stations and links ---------------------------------------------------------------

    def _add(self, station: _Station, priority_slot: int | None) -> int:
        index = len(self._stations)
        slots = self.timing.priority_slots
        slot = 1 + index % slots if priority_slot is None else priority_slot
        if not 1 <= slot <= slots:
            raise ValueError(f"priority slot {slot} is outside 1..{slots}")
        station.mac.priority_slot = slot
        self._stations.append(station)
        self.stats.append(station.mac.stats)
        self.names.append(station.name)
        return index

    def _mac(self) -> Mac:
        return Mac(self.timing, random.Random(self._mac_seed.getrandbits(64)))

    def attach(self, node: Node, name: str | None = None, *,
               priority_slot: int | None = None) -> int:
        return self._add(_Station(name or node.name, self._mac(), node=node), priority_slot)

    def attach_station(self, station, name: str | None = None) -> int:
        """Attach a plc.station.MeterStation (its node), as Channel.attach_station does."""
        return self.attach(station.node, name)

    def attach_port(self, on_frame: Callable[[bytes, float, LinkInfo], None],
                    name: str | None = None, *, priority_slot: int | None = None) -> int:
        index = len(self._stations)
        return self._add(_Station(name or f"port{index}", self._mac(), on_frame=on_frame),
                         priority_slot)

    def set_attenuation(self, a: int, b: int, db: float) -> None:
        """Both ways; links never set use ``default_attenuation_db``."""
        if a == b:
            raise ValueError("a station has no link to itself")
        self._attenuation[(min(a, b), max(a, b))] = float(db)

    def attenuation(self, a: int, b: int) -> float:
        return self._attenuation.get((min(a, b), max(a, b)), self.default_attenuation_db)

    def randomize_attenuation(self, low_db: float, high_db: float) -> None:
        """Every link uniform in [low, high] dB, from the line's seed."""
        count = len(self._stations)
        draw = random.Random(self.seed)
        for a in range(count):
            for b in range(a + 1, count):
                self.set_attenuation(a, b, draw.uniform(low_db, high_db))

    def mac(self, index: int) -> Mac:
        """Station ``index``'s MAC (its backlog, queue, priority slot)."""
        return self._stations[index].mac

    def level_dbuv(self, sender: int, receiver: int) -> float:
        return self.tx_level_dbuv - self.attenuation(sender, receiver)

    def _senses(self, station: int, tx: _Tx) -> bool:
        return (tx.sender != station and
                self.level_dbuv(tx.sender, station) - self._band >= CARRIER_SNR_DB)

    def _busy_at(self, station: int, now: float) -> bool:
        detect = self.timing.detect
        return any(tx.start + detect <= now and self._senses(station, tx)
                   for tx in self._active)

    # -- queueing frames ------------------------------------------------------------------

    def send(self, index: int, raw: bytes) -> bool:
        """Queue ``raw`` (LPDU with CRC) on station ``index``'s MAC; the L2 header's priority
        and alternate-path bits pick the slot and the carrier. False (logged) when it does not
        decode or the queue is full."""
        try:
            lon_frame.decode(raw)
        except lon_frame.FrameError as exc:
            log.info("%s: frame refused, it does not decode: %s", self.names[index], exc)
            return False
        if not self._stations[index].mac.enqueue(raw):
            return False
        self._plan(index)
        return True

    def transmit_now(self, index: int, raw: bytes) -> None:
        """Put ``raw`` on the line from station ``index`` at once, bypassing its MAC (a jammer,
        a test of what the MAC prevents). Any bytes go; receivers sort them out."""
        if not raw:
            raise ValueError("nothing to transmit")
        self._stations[index].mac.enqueue(raw, front=True)
        self._start(index)

    def wake(self, index) -> None:
        """Poll station ``index`` (or its Node) at its deadline, after a ``node.send`` made
        from outside."""
        if isinstance(index, Node):
            found = [i for i, s in enumerate(self._stations) if s.node is index]
            if not found:
                raise ValueError(f"{index.name} is not on this line")
            index = found[0]
        self._refresh(index)

    # -- running --------------------------------------------------------------------------

    def next_event(self) -> float | None:
        self._refresh_all()
        events = self._events
        while events and self._stale(events[0]):
            heapq.heappop(events)
        return events[0][0] if events else None

    # -- the event engine -----------------------------------------------------------------

    def _push(self, when: float, kind: int, index: int, payload=None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, index, payload))

    def _stale(self, event) -> bool:
        when, _, kind, index, _ = event
        if kind == _POLL:
            return self._polls.get(index) != when
        if kind == _ATTEMPT:
            return self._stations[index].mac.attempt != when
        return False

    def _step(self) -> None:
        event = heapq.heappop(self._events)
        if self._stale(event):
            return
        when, _, kind, index, payload = event
        self.now = when
        if kind == _END:
            self._end(payload)
        elif kind == _ATTEMPT:
            mac = self._stations[index].mac
            if self._busy_at(index, when):
                mac.defer()  # planned again when the channel goes idle here
            else:
                self._start(index)
        else:
            del self._polls[index]
            station = self._stations[index]
            try:
                frames = station.node.poll(when)
            except Exception:  # noqa: BLE001 - one node's bug must not stop the line
                log.exception("%s: internal error in poll", station.name)
                frames = []
            self._queue(index, frames)
            self._refresh(index)

    def _queue(self, index: int, frames) -> None:
        mac = self._stations[index].mac
        for raw in frames:
            mac.enqueue(raw)
        if frames:
            self._plan(index)

    def _plan(self, index: int) -> None:
        mac = self._stations[index].mac
        if mac.attempt is not None or not mac.queue or self._busy_at(index, self.now):
            return
        when = mac.plan(self.now)
        if when is not None:
            self._push(max(when, self.now), _ATTEMPT, index)
            mac.attempt = max(when, self.now)

    def _start(self, index: int) -> None:
        now = self.now
        mac = self._stations[index].mac
        head = mac.queue[0]
        airtime = self.modem.airtime(len(head.raw))
        item = mac.start(now, airtime)
        try:
            lpdu = lon_frame.decode(item.raw)
        except lon_frame.FrameError as exc:
            log.warning("%s put a frame on the line that does not decode (%s): %s",
                      self.names[index], exc, item.raw.hex())
            lpdu = None
        tx = _Tx(index, item.raw, lpdu, item.alt_path, item.delta_backlog, now, now + airtime)
        for other in self._active:
            other.overlaps.append(tx)
            tx.overlaps.append(other)
        self._active.append(tx)
        for tap in self.taps:
            try:
                tap(item.raw, index, now, tx.end)
            except Exception:  # noqa: BLE001 - a tap must not stop the line
                log.exception("a line tap failed")
        sensed_from = now + self.timing.detect
        for other, station in enumerate(self._stations):
            station.mac.decay(now)  # the idle channel's backlog steps end here
            attempt = station.mac.attempt
            if attempt is not None and attempt >= sensed_from and self._senses(other, tx):
                station.mac.defer()
        self._push(tx.end, _END, index, tx)

    def _end(self, tx: _Tx) -> None:
        now = self.now
        self._active.remove(tx)
        sender = self._stations[tx.sender]
        if any(o.sender != tx.sender for o in tx.overlaps):
            sender.mac.stats.collisions += 1
        sender.mac.frame_done(tx.delta_backlog)
        for index, station in enumerate(self._stations):
            if index == tx.sender:
                if not self._busy_at(index, now):
                    station.mac.channel_idle(now, own=True)
                continue
            self._receive(index, station, tx)
            if station.mac.busy_until <= now and self._senses(index, tx) \
                    and not self._busy_at(index, now):
                station.mac.channel_idle(now, own=False)
        for index in range(len(self._stations)):
            self._plan(index)

    # -- receiving ------------------------------------------------------------------------

    def _receive(self, index: int, station: _Station, tx: _Tx) -> None:
        node = station.node
        lpdu = tx.lpdu
        wanted = node is None
        if node is not None and lpdu is not None:
            try:
                wanted = node.addressed(lpdu)
            except Exception:  # noqa: BLE001
                log.exception("%s: internal error in addressed", station.name)
        stats = station.mac.stats
        snr = self.level_dbuv(tx.sender, index) - self._band
        deaf = any(o.sender == index for o in tx.overlaps)
        if not wanted:
            if not deaf and snr >= PREDICT_SNR_DB and not tx.overlaps:
                stats.overheard += 1
                station.mac.frame_done(tx.delta_backlog)
            return
        if deaf or snr < SKIP_SNR_DB:
            stats.missed += 1
            return
        reception = self.modem.demodulate(self._signal(index, tx), tx.alt_path)
        if reception.lpdu is None:
            if reception.reason in ("fec", "crc", "truncated"):
                stats.crc_errors += 1
            else:
                stats.missed += 1
            return
        raw = bytes(reception.lpdu)
        if raw != tx.raw and any(raw == other.raw for other in tx.overlaps):
            stats.missed += 1  # a stronger overlapping frame was found: it has its own turn
            return
        stats.received += 1
        station.mac.frame_done(raw[0] & 0x3F)
        info = LinkInfo(round(reception.strength_db, 1), round(reception.margin_db, 1),
                        tx.alt_path)
        if node is None:
            try:
                station.on_frame(raw, self.now, info)
            except Exception:  # noqa: BLE001 - a port's bug must not stop the line
                log.exception("%s: the port failed on a frame", station.name)
            return
        try:
            frames = node.receive(lpdu if raw == tx.raw else raw, self.now, info)
        except Exception:  # noqa: BLE001
            log.exception("%s: internal error on a received frame", station.name)
            frames = []
        self._queue(index, frames)
        self._refresh(index)

    def _samples(self, tx: _Tx) -> np.ndarray:
        if tx.samples is None:
            tx.samples = self.modem.modulate(tx.raw, tx.alt_path)
        return tx.samples

    def _signal(self, index: int, tx: _Tx) -> np.ndarray:
        """What station ``index`` has on the line while ``tx`` is on air: the frame at its
        level, the frames overlapping it, noise."""
        fs = self.modem.fs
        wanted = self._samples(tx)
        lead = int(_LEAD_S * fs)
        first = int(round(tx.start * fs)) - lead
        n = len(wanted) + 2 * lead
        signal = self.noise.render(first / fs, n, fs, self._center, self.rng, modem_module.awgn)
        signal[lead:lead + len(wanted)] += self._amplitude(tx.sender, index) * wanted
        for other in tx.overlaps:
            samples = self._samples(other)
            offset = int(round(other.start * fs)) - first
            lo, hi = max(0, offset), min(n, offset + len(samples))
            if hi > lo:
                signal[lo:hi] += (self._amplitude(other.sender, index)
                                  * samples[lo - offset:hi - offset])
        return signal

    def _amplitude(self, sender: int, receiver: int) -> float:
        return 10 ** (self.level_dbuv(sender, receiver) / 20)

    # -- node timers ----------------------------------------------------------------------

    def _refresh(self, index: int) -> None:
        node = self._stations[index].node
        if node is None:
            return
        try:
            deadline = node.next_deadline()
        except Exception:  # noqa: BLE001
            log.exception("%s: internal error in next_deadline", node.name)
            return
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        scheduled = self._polls.get(index)
        if scheduled is not None and scheduled <= deadline:
            return
        self._polls[index] = deadline
        self._push(deadline, _POLL, index)

    def _refresh_all(self) -> None:
        for index in range(len(self._stations)):
            self._refresh(index)
