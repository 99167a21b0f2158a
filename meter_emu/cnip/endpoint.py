"""One CN/IP endpoint (UDP) for a whole fleet process: every meter's 14908.1 node sits behind
it on one simulated channel.

A data packet from a peer is decoded once (packet.decode, then lon/frame.decode; bad ones are
dropped with a logged reason) and handed to each station whose ``node.addressed`` takes it. An
index by subnet/node, group and Neuron ID picks the candidates, so a unicast to one of 10,000
meters does not ask 10,000 nodes; a broadcast asks them all. Domains are left to
``addressed``: the index only narrows.

Whatever the nodes send (acknowledgements, responses, challenges, repeated or originated
messages) is "on the channel":

* every local station hears it too (meters hear each other, so repeating through LTEP and
  meter-to-meter traffic work inside one process), processed breadth-first from a queue;
* it goes to the CN/IP peers. designed: the peers are every address a datagram came from in
  the last ``PEER_TTL`` seconds; a CN/IP device learns peers from a configuration server,
  which a head-end talking to this endpoint does not run, so what the endpoint heard from is
  all it knows. A head-end that is silent for longer re-joins with its next request.

State a client is told about is persisted first: after each burst, ``persist()`` runs if a
meter the burst touched is dirty, and only then do the frames leave (as the MEP and optical
transports do, ports/transport.py).

Time: the nodes' stack time is ``time.monotonic()`` (real seconds). Retry, repeat and receive
timers are about real datagrams crossing a real network to a head-end that counts real
seconds; the meters' virtual clock (which may run 3600x) is for the table operations only and
the station reads it itself. One timer (``loop.call_later``) sleeps until the earliest
``node.next_deadline()`` (a heap of deadlines, refreshed for every node touched) and polls the
nodes due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from typing import Callable

from ..lon import frame
from ..lon.frame import Broadcast, Group, GroupAck, NeuronId, SubnetNode
from ..ports.transport import PortUrlError
from . import packet
from .client import parse_udp_url
from .pcap import CHANNEL, CNIP_PORT, PcapWriter

log = logging.getLogger(__name__)

#: seconds a peer stays a destination after its last datagram
PEER_TTL = 300.0
#: frames one burst may put on the channel before the rest is dropped (a runaway loop guard)
MAX_BURST = 100_000


class Endpoint:
    """The fleet's CN/IP endpoint. ``url`` is the bound ``udp://HOST:PORT``."""

    def __init__(self, stations, persist: Callable[[], None], *, pcap=None,
                 clock: Callable[[], float] | None = None):
        self.stations = list(stations)
        self.persist = persist
        self.pcap = PcapWriter(pcap) if isinstance(pcap, (str, bytes)) or hasattr(
            pcap, "__fspath__") else pcap
        self.clock = clock or time.monotonic
        self.url = ""
        self.transport: asyncio.DatagramTransport | None = None
        self.local = ("127.0.0.1", CNIP_PORT)
        self.peers: dict[tuple, float] = {}
        self.session = int(time.time()) & 0xFFFFFFFF
        self.sequence = 0
        self.stats = {"received": 0, "sent": 0, "dropped": 0, "delivered": 0}
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

    # -- the channel ------------------------------------------------------------------------

    def datagram(self, data: bytes, peer: tuple) -> None:
        """A datagram from ``peer``: decode, deliver, answer."""
        now = self.clock()
        try:
            _, raw = packet.decode(data)
        except packet.CnipError as exc:
            self.stats["dropped"] += 1
            log.info("CN/IP datagram from %s:%s dropped: %s", peer[0], peer[1], exc)
            return
        self.peers[peer] = now
        self.stats["received"] += 1
        if self.pcap is not None:
            self.pcap.write(data, peer, self.local)
        try:
            lpdu = frame.decode(raw)
        except frame.FrameError as exc:
            self.stats["dropped"] += 1
            log.info("CN/IP frame from %s:%s dropped: %s", peer[0], peer[1], exc)
            return
        self._burst([(lpdu, None)], now)

    def _burst(self, queue: list, now: float, touched: dict | None = None,
               emitted: list | None = None) -> None:
        """Deliver queued (lpdu, sender) frames to the local stations, breadth-first, then
        persist and put what the stations sent (after ``emitted``) on the wire."""
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
                except Exception:  # noqa: BLE001 - one node's bug must not stop the channel
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
                log.error("%s sent a frame the channel cannot decode (%s): %s",
                          station.node.name, exc, raw.hex())

    def _settle(self, touched: dict, emitted: list, now: float) -> None:
        for station in touched.values():
            self._index(station)
            self._schedule(station)
        if any(station.meter.dirty for station in touched.values()):
            try:
                self.persist()
            except Exception:  # noqa: BLE001 - the answer waits for a state we could not save
                log.exception("persisting before a CN/IP answer failed; answers withheld")
                return
        for raw in emitted:
            self._send(raw, now)

    def _send(self, raw: bytes, now: float) -> None:
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        data = packet.encode(raw, self.sequence, self.session, int(time.time() * 1000))
        if self.pcap is not None:
            self.pcap.write(data, self.local, CHANNEL)
        stale = [peer for peer, heard in self.peers.items() if now - heard > PEER_TTL]
        for peer in stale:
            del self.peers[peer]
        if self.transport is None:
            return
        for peer in self.peers:
            try:
                self.transport.sendto(data, peer)
                self.stats["sent"] += 1
            except OSError as exc:
                log.debug("CN/IP send to %s failed: %s", peer, exc)

    # -- timers -----------------------------------------------------------------------------

    def _schedule(self, station) -> None:
        try:
            deadline = station.node.next_deadline()
        except Exception:  # noqa: BLE001 - a node bug must not stop the channel
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
            log.exception("CN/IP timer failed")
        if self._heap and self._timer is None:
            self._arm(self._heap[0][0])

    def poll(self, now: float) -> None:
        """Poll every node whose deadline has come, and put what they send on the channel."""
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

    def kick(self, station=None) -> None:
        """Poll ``station`` (or every station) now: after code outside the channel queued a
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
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.pcap is not None:
            self.pcap.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.endpoint.datagram(data, addr[:2])
        except Exception:  # noqa: BLE001 - the endpoint must survive anything
            log.exception("CN/IP: internal error on a datagram from %s; dropped", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("CN/IP socket error: %s", exc)


async def open_cnip(url: str, stations, persist: Callable[[], None], *, pcap=None,
                    clock: Callable[[], float] | None = None) -> Endpoint | None:
    """Listen on ``udp://HOST:PORT`` (port 0: a free port) for every station in ``stations``
    (plc/station.py MeterStations). ``pcap``: a path or a PcapWriter for the channel's
    frames; ``clock``: the stack time (default ``time.monotonic``). ``off`` gives None."""
    if url == "off":
        return None
    if not url.startswith("udp://"):
        raise PortUrlError(f"--cnip {url!r}: use udp://HOST:PORT (0 = any free port) or off")
    try:
        host, port = parse_udp_url(url)
    except ValueError as exc:
        raise PortUrlError(f"--cnip {exc}") from None
    try:
        endpoint = Endpoint(stations, persist, pcap=pcap, clock=clock)
    except OSError as exc:
        raise PortUrlError(f"--pcap {pcap}: cannot write it ({exc.strerror})") from None
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(endpoint),
                                                           local_addr=(host, port))
    except OSError as exc:
        endpoint.close()
        raise PortUrlError(f"--cnip {url}: cannot listen on {host}:{port} "
                           f"({exc.strerror})") from None
    endpoint.transport = transport
    bound = transport.get_extra_info("sockname")
    endpoint.url = f"udp://{bound[0]}:{bound[1]}"
    endpoint.local = (bound[0], CNIP_PORT)
    endpoint.kick()  # a node may have something to say at start (nothing, usually)
    return endpoint
