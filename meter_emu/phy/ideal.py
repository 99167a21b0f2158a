"""The ideal power line: a whole fleet's 14908.1 nodes on one medium with no airtime, loss or
collisions, in real time. It is the default medium of ``meter-emu run`` (``--phy ideal``); the
simulated BPSK line (phy/line.py) is the other.

Gateways join a line from outside: the CN/IP endpoint (cnip/endpoint.py) and the serial PLC
interface (phy/ni.py). A gateway puts head-end frames on the line with ``inject`` and hears
every frame on it through ``gateway.deliver(raw, now, info)`` (raw = LPDU with CRC), except the
ones it injected itself. The BPSK line's real-time driver (phy/realtime.py) offers the same two
calls, so gateways do not know which line they are on.

A frame is decoded once and handed to each station whose ``node.addressed`` takes it. An index
by subnet/node, group and Neuron ID picks the candidates, so a unicast to one of 10,000 meters
does not ask 10,000 nodes; a broadcast asks them all. Domains are left to ``addressed``: the
index only narrows.

Whatever the nodes send (acknowledgements, responses, challenges, repeated or originated
messages) is on the line: every other station hears it too (meters hear each other, so
repeating through LTEP and meter-to-meter traffic work inside one process), processed
breadth-first from a queue, and every gateway gets it.

State a client is told about is persisted first: after each burst, ``persist()`` runs if a
meter the burst touched is dirty, and only then do the frames reach the gateways (as the MEP
and optical transports do, ports/transport.py).

Time: the nodes' stack time is ``time.monotonic()`` (real seconds). Retry, repeat and receive
timers are about real frames reaching a real head-end that counts real seconds; the meters'
virtual clock (which may run 3600x) is for the table operations only and the station reads it
itself. One timer (``loop.call_later``) sleeps until the earliest ``node.next_deadline()`` (a
heap of deadlines, refreshed for every node touched) and polls the nodes due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from typing import Callable, Protocol

from ..lon import frame
from ..lon.frame import Broadcast, Group, GroupAck, NeuronId, SubnetNode
from ..lon.node import NO_LINK_INFO, LinkInfo

log = logging.getLogger(__name__)

#: frames one burst may put on the line before the rest is dropped (a runaway loop guard)
MAX_BURST = 100_000


class Gateway(Protocol):
    """Something outside the line that hears it: a CN/IP endpoint, a serial PLC interface."""

    def deliver(self, raw: bytes, now: float, info: LinkInfo) -> None: ...


class IdealLine:
    def __init__(self, stations, persist: Callable[[], None], *,
                 clock: Callable[[], float] | None = None):
        self.stations = list(stations)
        self.persist = persist
        self.clock = clock or time.monotonic
        self.gateways: list[Gateway] = []
        self.stats = {"injected": 0, "dropped": 0, "delivered": 0, "frames": 0}
        self._by_node: dict[tuple[int, int], list] = {}
        self._by_group: dict[int, list] = {}
        self._by_nid: dict[bytes, list] = {}
        self._indexed: dict[int, tuple[int, list]] = {}  # id(station) -> (version, entries)
        self._heap: list = []
        self._scheduled: dict[int, float] = {}  # id(station) -> deadline in the heap
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        for station in self.stations:
            self._index(station)

    def add(self, stations) -> None:
        """More stations on the line (a fleet coming up in stages, ``--ramp``)."""
        for station in stations:
            self.stations.append(station)
            self._index(station)

    def attach(self, gateway: Gateway) -> None:
        self.gateways.append(gateway)

    def detach(self, gateway: Gateway) -> None:
        if gateway in self.gateways:
            self.gateways.remove(gateway)

    # -- the address index ----------------------------------------------------------------

    def _index(self, station) -> None:
        config = station.node.config
        old = self._indexed.get(id(station))
        if old is not None:
            if old[0] == config.version:
                return
            for table, key in old[1]:
                members = table.get(key)
                if members and station in members:
                    members.remove(station)
        entries = [(self._by_nid, bytes(config.neuron_id))]
        entries += [(self._by_node, (d.subnet, d.node)) for d in config.domains]
        entries += [(self._by_group, g.group) for g in config.groups]
        for table, key in entries:
            table.setdefault(key, []).append(station)
        self._indexed[id(station)] = (config.version, entries)

    def _candidates(self, lpdu) -> list:
        dst = lpdu.npdu.dst
        if isinstance(dst, Broadcast):
            return self.stations
        if isinstance(dst, (SubnetNode, GroupAck)):
            return self._by_node.get((dst.subnet, dst.node), [])
        if isinstance(dst, Group):
            return self._by_group.get(dst.group, [])
        if isinstance(dst, NeuronId):
            return self._by_nid.get(bytes(dst.nid), [])
        return []

    # -- frames -----------------------------------------------------------------------------

    def inject(self, raw: bytes, source: Gateway | None = None) -> bool:
        """A frame (LPDU with CRC) from outside: the other gateways hear it, the addressed
        stations get it, and what they answer goes out. False when it does not decode."""
        now = self.clock()
        try:
            lpdu = frame.decode(raw)
        except frame.FrameError as exc:
            self.stats["dropped"] += 1
            log.info("frame from %s dropped: %s", _name(source), exc)
            return False
        self.stats["injected"] += 1
        for gateway in self.gateways:
            if gateway is not source:
                gateway.deliver(raw, now, NO_LINK_INFO)
        self._burst([(lpdu, None)], now)
        return True

    def _burst(self, queue: list, now: float, touched: dict | None = None,
               emitted: list | None = None) -> None:
        """Deliver queued (lpdu, sender) frames to the local stations, breadth-first, then
        persist and hand what the stations sent (after ``emitted``) to the gateways."""
        pending = deque(queue)
        touched = {} if touched is None else touched
        emitted = [] if emitted is None else emitted
        while pending:
            lpdu, sender = pending.popleft()
            for station in self._candidates(lpdu):
                if station is sender:
                    continue
                node = station.node
                try:
                    if not node.addressed(lpdu):
                        continue
                    frames = node.receive(lpdu, now)
                except Exception:  # noqa: BLE001 - one node's bug must not stop the line
                    log.exception("%s: internal error on a received frame; dropped", node.name)
                    continue
                self.stats["delivered"] += 1
                touched[id(station)] = station
                self._emit(frames, station, pending, emitted)
        self._settle(touched, emitted, now)

    def _emit(self, frames, station, pending: deque, emitted: list) -> None:
        for raw in frames:
            if len(emitted) >= MAX_BURST:
                log.error("%s: more than %d frames in one burst; the rest is dropped",
                          station.node.name, MAX_BURST)
                return
            emitted.append(raw)
            try:
                pending.append((frame.decode(raw), station))
            except frame.FrameError as exc:  # our own node made it: a bug, say so
                log.error("%s sent a frame the line cannot decode (%s): %s",
                          station.node.name, exc, raw.hex())

    def _settle(self, touched: dict, emitted: list, now: float) -> None:
        for station in touched.values():
            self._index(station)
            self._schedule(station)
        if any(station.meter.dirty for station in touched.values()):
            try:
                self.persist()
            except Exception:  # noqa: BLE001 - the answer waits for a state we could not save
                log.exception("persisting before an answer failed; answers withheld")
                return
        self.stats["frames"] += len(emitted)
        for raw in emitted:
            for gateway in self.gateways:
                try:
                    gateway.deliver(raw, now, NO_LINK_INFO)
                except Exception:  # noqa: BLE001 - one gateway must not stop the others
                    log.exception("gateway %s failed on a frame", _name(gateway))

    # -- timers -----------------------------------------------------------------------------

    def _schedule(self, station) -> None:
        try:
            deadline = station.node.next_deadline()
        except Exception:  # noqa: BLE001 - a node bug must not stop the line
            log.exception("%s: internal error in next_deadline", station.node.name)
            deadline = None
        if deadline is None:
            self._scheduled.pop(id(station), None)
            return
        if self._scheduled.get(id(station)) == deadline:
            return
        self._scheduled[id(station)] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), station))
        if self._timer_at is None or deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not inside the loop (a synchronous test): poll() does the work
            self._timer = None
            return
        self._timer = loop.call_later(max(0.0, deadline - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, None
        try:
            self.poll(self.clock())
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("line timer failed")
        if self._heap and self._timer is None:
            self._arm(self._heap[0][0])

    def poll(self, now: float) -> None:
        """Poll every node whose deadline has come, and put what they send on the line."""
        touched: dict = {}
        queue = []
        emitted: list[bytes] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, _, station = heapq.heappop(self._heap)
            if self._scheduled.get(id(station)) != deadline:
                continue  # superseded by a later entry
            del self._scheduled[id(station)]
            self._poll_station(station, now, touched, queue, emitted)
        self._burst(queue, now, touched, emitted)

    def press_service_pin(self, station) -> None:
        """The station's service pin: its node broadcasts the service pin message now."""
        from ..lon import netmgmt

        netmgmt.service_pin(station, self.clock())
        self.kick(station)

    def kick(self, station=None) -> None:
        """Poll ``station`` (or every station) now: after code outside the line queued a
        message with ``station.send`` (a service pin, a test)."""
        now = self.clock()
        touched: dict = {}
        queue: list = []
        emitted: list[bytes] = []
        for one in ([station] if station is not None else self.stations):
            self._poll_station(one, now, touched, queue, emitted)
        self._burst(queue, now, touched, emitted)

    def _poll_station(self, station, now, touched, queue, emitted) -> None:
        try:
            frames = station.node.poll(now)
        except Exception:  # noqa: BLE001
            log.exception("%s: internal error in poll", station.node.name)
            frames = []
        touched[id(station)] = station
        pending: deque = deque()
        self._emit(frames, station, pending, emitted)
        queue.extend(pending)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _name(gateway) -> str:
    return getattr(gateway, "name", None) or type(gateway).__name__
