"""The virtual clock: simulated time, passed into the sans-I/O core from outside.

A fleet shares one clock. It starts at a chosen instant and runs at a chosen rate (1x for interop,
3600x for load-profile tests). Protocol layers never read the wall clock; adapters ask the clock
and hand the result in. ``ManualClock`` is the clock tests move by hand.
"""

from __future__ import annotations

import time


class VirtualClock:
    """Virtual UTC seconds since the epoch = start + rate x real seconds elapsed."""

    def __init__(self, start: float | None = None, rate: float = 1.0, monotonic=time.monotonic):
        if rate <= 0:
            raise ValueError("clock rate must be > 0")
        self._monotonic = monotonic
        self._origin = monotonic()
        self.start = time.time() if start is None else float(start)
        self.rate = float(rate)

    def now(self) -> float:
        return self.start + (self._monotonic() - self._origin) * self.rate


class ManualClock:
    """A clock that moves only when told to (tests, batch simulations)."""

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self.value = float(start)

    def now(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds
