"""An in-memory medium joining 14908.1 nodes in virtual time: a discrete-event simulator that
tests, the head-end client library and (later) the BPSK PHY build on.

* Every frame a node transmits reaches each other connected node ``latency`` seconds later,
  unless that delivery is lost (probability ``loss``, or the link's own). By default every node
  hears every other; once a link is set with ``connect``, only links that were set exist (a
  line topology for repeating tests, say). Links are symmetric.
* A frame is decoded once and handed to receivers as an ``Lpdu``; nodes the frame does not
  address when it is sent (``Node.addressed``) are skipped, which keeps big fleets cheap.
* Timers: after every call into a node the channel asks it for ``next_deadline`` and calls
  ``poll`` then. A ``send`` made from outside the run (a test, a client) is picked up when
  ``run``/``run_until`` starts; one made during the run on a node other than the one being
  called needs ``wake(node)``.
* No airtime, collisions or CSMA (the PHY issue adds them): frames only take ``latency``.

``taps`` get ``(lpdu_bytes, sender_index, now)`` for every frame put on the medium (pcap
writers, tshark comparisons, test assertions).
"""

from __future__ import annotations

import heapq
import logging
import random
from dataclasses import dataclass
from typing import Callable

from .frame import FrameError, decode
from .node import NO_LINK_INFO, LinkInfo, Node

log = logging.getLogger(__name__)

_DELIVER, _POLL = 0, 1


@dataclass(slots=True)
class _Link:
    loss: float | None
    info: LinkInfo
    info_alt: LinkInfo


class VirtualTime:
    """Discrete-event driving shared by the in-memory channel and the BPSK line (phy/line.py):
    a heap ``_events`` of ``(time, ...)`` tuples, ``_step()`` handling the first one,
    ``_refresh_all()`` picking up node sends made from outside, and ``now``."""

    now: float
    _events: list

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Advance virtual time event by event, as fast as the CPU allows, until ``done()``
        (True) or ``timeout`` virtual seconds pass or nothing is left to happen (False)."""
        end = self.now + timeout
        self._refresh_all()
        events = self._events
        while not done():
            if not events or events[0][0] > end:
                self.now = end
                return done()
            self._step()
        return True

    def advance(self, until: float) -> None:
        """Process every event up to virtual time ``until`` (real-time drivers call this)."""
        self._refresh_all()
        events = self._events
        while events and events[0][0] <= until:
            self._step()
        self.now = max(self.now, until)

    def run(self, duration: float) -> None:
        """Advance virtual time by ``duration``, processing everything due."""
        self.advance(self.now + duration)


class Channel(VirtualTime):
    def __init__(self, *, loss: float = 0.0, latency: float = 0.002,
                 rng: random.Random | None = None):
        self.loss = loss
        self.latency = latency
        self.rng = rng or random.Random()
        self.nodes: list[Node] = []
        self.now = 0.0
        self.taps: list[Callable[[bytes, int, float], None]] = []
        self.stats = {"frames": 0, "deliveries": 0, "lost": 0, "skipped": 0}
        self._links: dict[int, dict[int, _Link]] = {}
        self._explicit = False
        self._events: list = []  # (time, seq, kind, node index, payload)
        self._seq = 0
        self._polls: dict[int, float] = {}

    # -- topology ------------------------------------------------------------------------

    def attach(self, node: Node) -> int:
        self.nodes.append(node)
        self._links[len(self.nodes) - 1] = {}
        return len(self.nodes) - 1

    def attach_station(self, station) -> int:
        """Attach a plc.station.MeterStation (its node)."""
        return self.attach(station.node)

    def _index(self, node: int | Node) -> int:
        return node if isinstance(node, int) else self.nodes.index(node)

    def connect(self, a: int | Node, b: int | Node, *, loss: float | None = None,
                strength_db: float | None = None, margin_db: float | None = None) -> None:
        """Set the link between ``a`` and ``b`` (both ways): its loss probability (None: the
        channel's) and the signal strength / margin receivers see."""
        a, b = self._index(a), self._index(b)
        self._explicit = True
        link = _Link(loss, LinkInfo(strength_db, margin_db, False),
                     LinkInfo(strength_db, margin_db, True))
        self._links[a][b] = link
        self._links[b][a] = link

    def disconnect(self, a: int | Node, b: int | Node) -> None:
        a, b = self._index(a), self._index(b)
        self._explicit = True
        self._links[a].pop(b, None)
        self._links[b].pop(a, None)

    # -- running -------------------------------------------------------------------------

    def wake(self, node: int | Node) -> None:
        """Re-read a node's next deadline (after a send made from outside its own calls)."""
        self._refresh(self._index(node))

    def _step(self) -> None:
        when, _, kind, index, payload = heapq.heappop(self._events)
        self.now = when
        node = self.nodes[index]
        if kind == _POLL:
            if self._polls.get(index) != when:
                return  # superseded by an earlier poll
            del self._polls[index]
            frames = node.poll(when)
        else:
            lpdu, link = payload
            self.stats["deliveries"] += 1
            frames = node.receive(lpdu, when, link)
        if frames:
            self.transmit(index, frames)
        self._refresh(index)

    def transmit(self, sender: int, frames: list[bytes]) -> None:
        """Put frames from node ``sender`` on the medium now."""
        now = self.now
        for frame in frames:
            self.stats["frames"] += 1
            for tap in self.taps:
                tap(frame, sender, now)
            try:
                lpdu = decode(frame)
            except FrameError as exc:
                log.warning("node %d put a bad frame on the channel: %s", sender, exc)
                lpdu = None
            links = self._links[sender]
            targets = links.keys() if self._explicit else range(len(self.nodes))
            for index in targets:
                if index == sender:
                    continue
                link = links.get(index)
                loss = self.loss if link is None or link.loss is None else link.loss
                if lpdu is not None and not self.nodes[index].addressed(lpdu):
                    self.stats["skipped"] += 1
                    continue
                if loss and self.rng.random() < loss:
                    self.stats["lost"] += 1
                    continue
                if link is None:
                    info = NO_LINK_INFO if lpdu is None or not lpdu.alt_path else _ALT
                else:
                    info = link.info_alt if lpdu is not None and lpdu.alt_path else link.info
                self._push(now + self.latency, _DELIVER, index,
                           (lpdu if lpdu is not None else frame, info))

    def _push(self, when: float, kind: int, index: int, payload) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, index, payload))

    def _refresh(self, index: int) -> None:
        deadline = self.nodes[index].next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        scheduled = self._polls.get(index)
        if scheduled is not None and scheduled <= deadline:
            return
        self._polls[index] = deadline
        self._push(deadline, _POLL, index, None)

    def _refresh_all(self) -> None:
        for index in range(len(self.nodes)):
            self._refresh(index)


_ALT = LinkInfo(alt_path=True)
