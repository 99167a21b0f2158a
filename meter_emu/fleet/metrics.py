"""The fleet's Prometheus endpoint (``--metrics tcp://HOST:PORT``): ``GET /metrics`` answers
the text exposition of the process's ``stats.STATS``.

The ports count into ``STATS`` with plain dict updates (fleet/stats.py); nothing here is on the
per-request path. A custom collector turns ``STATS`` into metric families when Prometheus
scrapes. The HTTP server is a small asyncio one, not prometheus-client's threaded server: the
scrape runs on the event loop that serves the meters, so it reads the counters between two
requests, never in the middle of one, and the statistics line (runner) and a scrape taken at
the same moment agree. Anything but ``GET``/``HEAD /metrics`` is answered 404 (unknown path),
405 (other method) or 400 (no HTTP request line) and the connection closed; a client that sends
nothing is dropped after ``READ_TIMEOUT_S``.

Designed (no public text fixes them) -- the metric names and labels:

* ``meter_emu_meters`` (gauge): meters up in this process (a shard counts its own);
* ``meter_emu_requests_total{port,code}``: requests answered, ``port`` one of ``plc``,
  ``optical``, ``mep``, ``mep2``; ``code`` the response code's name (``ok``, ``iar``, ``sme``,
  ``sequence``, ... as the statistics line; ``stats.CODE_NAMES``);
* ``meter_emu_request_duration_seconds{port}`` (histogram, ``stats.LATENCY_BUCKETS``): service
  time inside the emulator, request in to answer out (not the network);
* ``meter_emu_events_total``: events the meters logged; ``meter_emu_injections_total``: meters
  whose quantities an MQTT message changed (a batch to 1,000 meters counts 1,000);
* ``meter_emu_meter_requests_total{meter,port}``: only with ``--metrics-per-meter N``, for the
  first N meters of the process (at most ``MAX_PER_METER``: per-meter series are what makes a
  Prometheus server slow, so they are opt-in and capped); counted from when the endpoint is up;
* prometheus-client's ``process_*`` series (CPU, RSS, open files) of the emulator process.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..ports.transport import PortUrlError
from . import stats

log = logging.getLogger(__name__)

#: per-meter series are capped at this many meters
MAX_PER_METER = 1000
READ_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100
FORMS = "use tcp://HOST:PORT (0 = any free port) or off"


def parse_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); PortUrlError naming the accepted forms."""
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    if not url.startswith("tcp://") or not host or not port.isdigit() or int(port) > 65535:
        raise PortUrlError(f"--metrics {url!r}: {FORMS}")
    return host, int(port)


class FleetCollector:
    """Reads ``stats.STATS`` at scrape time (the module attribute: ``stats.reset()`` works)."""

    def collect(self):
        now = stats.STATS
        yield GaugeMetricFamily("meter_emu_meters", "Meters up in this process.", now.meters)
        requests = CounterMetricFamily("meter_emu_requests", "Requests answered, by port and "
                                       "response code.", labels=["port", "code"])
        for (port, code), count in sorted(now.requests.items()):
            requests.add_metric([port, stats.code_name(code)], count)
        yield requests
        duration = HistogramMetricFamily("meter_emu_request_duration_seconds", "Service time "
                                         "of a request inside the emulator.", labels=["port"])
        for port, latency in sorted(now.latency.items()):
            buckets, running = [], 0
            for bound, count in zip(stats.LATENCY_BUCKETS, latency.counts):
                running += count
                buckets.append((repr(bound), running))
            buckets.append(("+Inf", latency.count))
            duration.add_metric([port], buckets, latency.total)
        yield duration
        yield CounterMetricFamily("meter_emu_events", "Events logged by the meters.",
                                  sum(now.events.values()))
        yield CounterMetricFamily("meter_emu_injections", "Meters whose quantities an MQTT "
                                  "message changed.", now.injections)
        if now.tracked:
            per_meter = CounterMetricFamily("meter_emu_meter_requests", "Requests answered by "
                                            "one meter (--metrics-per-meter).",
                                            labels=["meter", "port"])
            ports = sorted(now.latency) or ["plc"]
            for meter_id in sorted(now.tracked):
                for port in ports:
                    per_meter.add_metric([meter_id, port], now.per_meter[meter_id, port])
            yield per_meter


class MetricsEndpoint:
    """The listening endpoint: ``url`` (the real port) and ``close()``."""

    def __init__(self, server: asyncio.base_events.Server, registry: CollectorRegistry,
                 refresh=None):
        self.server, self.registry = server, registry
        self.refresh = refresh  # awaited before a scrape is answered (the shards' sum)
        host, port = server.sockets[0].getsockname()[:2]
        self.url = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"

    def close(self) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT_S)
            except (asyncio.TimeoutError, ValueError, asyncio.IncompleteReadError):
                head = None  # too slow, too long or cut short: answered 400 if anything came
            if head and self.refresh is not None:
                await self.refresh()
            writer.write(self.answer(head))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the scraper went away; nothing to tell it
        except Exception:  # noqa: BLE001 - a scrape bug must never reach the meters' loop
            log.exception("metrics: internal error answering a scrape")
        finally:
            writer.close()

    def answer(self, head: bytes | None) -> bytes:
        """The whole HTTP/1.1 response to a request head (None: none could be read)."""
        parts = (head or b"").split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _response(400, b"not an HTTP request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return _response(404, b"not found; metrics are at /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _response(405, b"use GET\n", extra=b"Allow: GET, HEAD\r\n")
        body = generate_latest(self.registry)
        return _response(200, body, CONTENT_TYPE_LATEST.encode(), head_only=method == b"HEAD")


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers (up to the empty line); bodies are not read."""
    lines = []
    while len(lines) < MAX_HEADER_LINES:
        line = await reader.readline()
        if not line.strip():
            return b"".join(lines) if line or lines else b""
        lines.append(line.rstrip(b"\r\n") + b"\r\n")
    raise ValueError("too many header lines")


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def _response(status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
              *, extra: bytes = b"", head_only: bool = False) -> bytes:
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s"
            b"Connection: close\r\n\r\n" % (status, _REASONS[status], content_type, len(body),
                                            extra))
    return head if head_only else head + body


async def start(url: str, meters: list, *, per_meter: int = 0) -> MetricsEndpoint | None:
    """Serve ``/metrics`` at ``url`` (``tcp://HOST:PORT``); None for ``off``. Per-meter series
    for the first ``per_meter`` of ``meters`` (capped at MAX_PER_METER, with a warning).
    PortUrlError for a bad URL, a port that cannot be taken or a bad ``per_meter``."""
    if per_meter < 0:
        raise PortUrlError(f"--metrics-per-meter {per_meter}: use 0 (none) to {MAX_PER_METER}")
    if url == "off":
        if per_meter:
            raise PortUrlError("--metrics-per-meter needs the endpoint: --metrics "
                               "tcp://HOST:PORT")
        return None
    parse_url(url)
    if per_meter > MAX_PER_METER:
        log.warning("--metrics-per-meter %d: per-meter series are capped at %d meters",
                    per_meter, MAX_PER_METER)
        per_meter = MAX_PER_METER
    endpoint = await listen(url, FleetCollector())
    stats.STATS.tracked = {meter.id for meter in meters[:per_meter]}
    return endpoint


async def listen(url: str, collector, refresh=None) -> MetricsEndpoint:
    """An endpoint at ``url`` answering ``collector``'s families and this process's
    ``process_*``; ``refresh`` (a coroutine function) is awaited before each answer."""
    host, port = parse_url(url)
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    endpoint = None

    async def serve(reader, writer):
        await endpoint.serve(reader, writer)

    try:
        server = await asyncio.start_server(serve, host, port, limit=8192)
    except OSError as exc:
        raise PortUrlError(f"--metrics {url}: cannot listen on {host}:{port} ({exc.strerror}); "
                           f"{FORMS}") from None
    endpoint = MetricsEndpoint(server, registry, refresh)
    return endpoint
