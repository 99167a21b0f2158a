"""The fleet's metrics across shards (``--shards K --metrics tcp://HOST:PORT``, designed): the
supervisor serves ``/metrics`` at the URL given, the sum of its shards' ``meter_emu_*``
series; shard i serves its own at PORT+1+i (port 0: any free port), as the ready file lists.

Each scrape of the supervisor scrapes every shard first (concurrently, ``SHARD_TIMEOUT_S``
each) and adds series of the same name and labels: the request, event and injection counters,
the latency histograms (buckets, sums, counts) and the meters gauge; per-meter series are
disjoint, so they pass through. Why a sum and not one target per shard: a head-end test
team watches one fleet, and its dashboards should not change with K.

A restarted shard counts from zero again. The supervisor sees it by the shard's
``process_start_time_seconds`` and carries what that shard had counted at its last scrape,
so the fleet's counters never go backwards (what the dead process counted after that scrape
is lost, as it would be for a Prometheus server scraping the shard itself). A shard that does
not answer counts with its last values; ``meter_emu_shards_up`` says how many answered. The
``process_*`` series are the supervisor's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Callable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .metrics import parse_url

log = logging.getLogger(__name__)

SHARD_TIMEOUT_S = 5.0
#: families whose samples only grow (and so are carried over a shard's restart)
GROWING = ("counter", "histogram")


class _Shard:
    """What one shard said at its last answered scrape."""

    def __init__(self):
        self.started: float | None = None  # its process_start_time_seconds
        self.samples: dict = {}  # (sample name, labels) -> value
        self.carried: dict = defaultdict(float)  # counted by its earlier processes


class Aggregate:
    """A prometheus-client collector of the shards' sum. ``urls()`` gives each shard's
    metrics URL, or None while it is down; ``refresh()`` scrapes them (the endpoint awaits it
    before each answer)."""

    def __init__(self, urls: Callable[[], list[str | None]]):
        self.urls = urls
        self.shards: list[_Shard] = []
        self.families: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self.up = 0

    async def refresh(self) -> None:
        urls = self.urls()
        while len(self.shards) < len(urls):
            self.shards.append(_Shard())
        answers = await asyncio.gather(*(_scrape(url) for url in urls))
        self.up = 0
        for shard, text in zip(self.shards, answers):
            if text is not None:
                self._take(shard, text)
                self.up += 1

    def _take(self, shard: _Shard, text: str) -> None:
        samples, started = {}, None
        for family in text_string_to_metric_families(text):
            if family.name == "process_start_time_seconds":
                started = family.samples[0].value
            if not family.name.startswith("meter_emu_"):
                continue
            self.families[family.name] = (family.type, family.documentation)
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    samples[family.name, sample.name, _labels(sample.labels)] = sample.value
        if shard.started is not None and started != shard.started:  # a new process
            for key, value in shard.samples.items():
                if self.families[key[0]][0] in GROWING:
                    shard.carried[key] += value
        shard.started, shard.samples = started, samples

    def collect(self):
        totals: dict = defaultdict(float)
        for shard in self.shards:
            for source in (shard.carried, shard.samples):
                for key, value in source.items():
                    totals[key] += value
        metrics: dict[str, Metric] = {}
        for (family, name, labels), value in sorted(totals.items(), key=_order):
            if family not in metrics:
                kind, documentation = self.families[family]
                metrics[family] = Metric(family, documentation, kind)
            metrics[family].add_sample(name, dict(labels), value)
        yield from metrics.values()
        shards = Metric("meter_emu_shards", "Shard processes of the fleet.", "gauge")
        shards.add_sample("meter_emu_shards", {}, len(self.urls()))
        yield shards
        up = Metric("meter_emu_shards_up", "Shards that answered the last scrape.", "gauge")
        up.add_sample("meter_emu_shards_up", {}, self.up)
        yield up


def _labels(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def _order(item) -> tuple:
    """Series in a stable order, histogram buckets by their bound (+Inf last)."""
    (family, name, labels), _ = item
    return family, name, tuple((k, float(v)) if k == "le" else (k, v) for k, v in labels)


async def _scrape(url: str | None) -> str | None:
    """One shard's exposition text, or None (down, slow or not answering 200)."""
    if url is None:
        return None
    host, port = parse_url(url)
    try:
        return await asyncio.wait_for(_get(host, port), SHARD_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, ValueError) as error:
        log.info("metrics: shard at %s did not answer (%s)", url, error)
        return None


async def _get(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: shard\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return body.decode()
