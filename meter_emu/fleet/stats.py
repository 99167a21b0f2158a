"""What a running fleet did: requests by port and response code, service latency, events
logged, quantities injected. The ports count into the one ``STATS`` of the process (a process
runs one fleet); the runner prints a line of it every minute and the metrics endpoint
(fleet/metrics.py) exposes it. Counting is a few dict updates, cheap enough for every request.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

#: latency histogram bucket bounds in seconds (the last bucket is everything slower)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)

#: response code bytes and the names C12.18 / OSGP give them (metering errors by code)
CODE_NAMES = {0x00: "ok", 0x01: "err", 0x02: "sns", 0x03: "isc", 0x04: "onp", 0x05: "iar",
              0x06: "bsy", 0x07: "dnr", 0x08: "dlk", 0x09: "rno", 0x0A: "isss", 0x0B: "sme",
              0x0C: "sequence", 0x1E: "incompatible", 0x1F: "interface_change"}


def code_name(code: int) -> str:
    return CODE_NAMES.get(code, f"0x{code:02x}")


@dataclass
class Latency:
    """A cumulative-free histogram: counts per bucket (``LATENCY_BUCKETS`` + one for slower)."""
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


class FleetStats:
    def __init__(self):
        self.requests: Counter = Counter()  # (port, code) -> requests answered with it
        self.latency: dict[str, Latency] = {}  # port -> service time of its requests
        self.events: Counter = Counter()  # event number -> events logged
        self.injections = 0  # meters whose quantities an MQTT message set (bridge)
        self.meters = 0  # meters up in this process
        #: meters whose own series are kept (--metrics-per-meter); empty: none are
        self.tracked: set[str] = set()
        self.per_meter: Counter = Counter()  # (meter id, port) -> requests, tracked meters only

    def request(self, port: str, meter_id: str, code: int, seconds: float) -> None:
        """One request answered by a meter on ``port`` with response ``code``, after
        ``seconds`` of service (request in to answer out, inside the emulator)."""
        self.requests[port, code] += 1
        latency = self.latency.get(port)
        if latency is None:
            latency = self.latency[port] = Latency()
        latency.add(seconds)
        if meter_id in self.tracked:
            self.per_meter[meter_id, port] += 1

    def event(self, meter, document: dict) -> None:
        """A Meter.event_listeners listener: one event logged by a meter."""
        self.events[document["number"]] += 1

    def injected(self, count: int = 1) -> None:
        self.injections += count

    def totals(self) -> dict:
        """The numbers the minute line compares: requests, errors by code name, events,
        injections."""
        errors = Counter()
        for (_, code), n in self.requests.items():
            if code != 0:
                errors[code_name(code)] += n
        return {"requests": sum(self.requests.values()), "errors": errors,
                "events": sum(self.events.values()), "injections": self.injections}

    def summary_line(self, since: dict | None = None) -> str:
        """'requests 1234 (+56), errors sme 3, iar 1, events 7, injections 100' -- the figures
        since ``since`` (an earlier ``totals()``) in parentheses."""
        now = self.totals()
        before = since or {"requests": 0, "errors": Counter(), "events": 0, "injections": 0}

        def figure(name: str) -> str:
            return f"{name} {now[name]} (+{now[name] - before[name]})"

        errors = ", ".join(f"{name} {n}" for name, n in sorted(now["errors"].items())) or "none"
        return (f"{self.meters} meters; {figure('requests')}; errors {errors}; "
                f"{figure('events')}; {figure('injections')}")


#: the process's fleet statistics
STATS = FleetStats()


def reset() -> FleetStats:
    """Zero ``STATS`` (a new run in the same process, a test); returns it."""
    STATS.__init__()
    return STATS
