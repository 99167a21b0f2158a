"""The meters' timed actions (load profile intervals, pending activations, relay switches,
...): a heap of each meter's next deadline, so a process wakes only the meters that are due.

Why a heap: scanning 10,000 meters twice a second costs a core; an idle meter's next action is
usually minutes ahead. Actions are stamped with their own instant (Meter.advance), so waking a
meter late changes nothing a client can see, and a client's request advances its meter itself
first. A meter whose state a client changed is rescheduled (``schedule``; the runner calls it
for every meter it saves), since a change can bring its next action nearer.

A fresh meter starts its engine on its first advance; the start schedules every meter for
``now`` and the loop works through them in slices of at most ``SLICE`` seconds, so the event
loop keeps answering while 10,000 meters start.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time

log = logging.getLogger(__name__)

#: the longest stretch of work before the loop yields to the ports (seconds)
SLICE = 0.02


class TimedActions:
    def __init__(self, clock, persist, *, max_sleep: float = 5.0):
        self.clock = clock
        self.persist = persist
        self.max_sleep = max_sleep
        self._heap: list = []  # (virtual deadline, order, meter)
        self._due: dict[int, float] = {}  # id(meter) -> its deadline in the heap
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None
        #: set once nothing is due any more: the start's wave of first advances is through
        self.caught_up = asyncio.Event()

    def schedule(self, meter, at: float | None = None) -> None:
        """Wake ``meter`` at ``at`` (virtual time), else at its own next deadline."""
        due = meter.next_deadline() if at is None else at
        if due is None:
            return
        known = self._due.get(id(meter))
        if known is not None and known <= due:
            return  # an entry at or before it is in the heap already
        self._due[id(meter)] = due
        heapq.heappush(self._heap, (due, next(self._order), meter))
        if self._sleeping_until is None or due < self._sleeping_until:
            self._wake.set()

    def due(self) -> int:
        """Meters waiting in the heap (each counted once)."""
        return len(self._due)

    def run_due(self, budget: float = SLICE) -> bool:
        """Advance the meters due by now, for at most ``budget`` seconds; True when some are
        still due."""
        start, now = time.perf_counter(), self.clock.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, meter = heapq.heappop(heap)
            if self._due.get(id(meter)) != due:
                continue  # superseded by an earlier entry
            del self._due[id(meter)]
            try:
                meter.advance(now)
            except Exception:  # noqa: BLE001 - a bug in one action must not stop the meters
                log.exception("meter %s: timed actions failed", meter.id)
            self.schedule(meter)
            if time.perf_counter() - start > budget:
                return bool(heap) and heap[0][0] <= now
        return False

    async def run(self) -> None:
        while True:
            more = self.run_due()
            try:
                self.persist()
            except Exception:  # noqa: BLE001 - retried on the next round
                log.exception("saving state after timed actions failed; retrying")
            if more:
                await asyncio.sleep(0)
                continue
            self.caught_up.set()
            wait = self.max_sleep
            if self._heap:
                wait = min(wait, max(0.0, (self._heap[0][0] - self.clock.now())
                                     / self.clock.rate))
            self._sleeping_until = self.clock.now() + wait * self.clock.rate
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._sleeping_until = None
