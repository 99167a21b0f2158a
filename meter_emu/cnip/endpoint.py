"""One CN/IP endpoint (UDP) for a whole fleet process: a gateway between CN/IP peers and the
fleet's line (phy/ideal.py, or the simulated BPSK line through phy/realtime.py).

A data packet from a peer is unwrapped (packet.decode; bad ones are dropped with a logged
reason) and its LPDU put on the line; every frame on the line that this gateway hears goes to
the peers. designed: the peers are every address a datagram came from in the last ``PEER_TTL``
seconds; a CN/IP device learns peers from a configuration server, which a head-end talking to
this endpoint does not run, so what the endpoint heard from is all it knows. A head-end that is
silent for longer re-joins with its next request.

The line persists state before frames reach its gateways, so an answer never leaves before the
state it reports is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..lon.node import LinkInfo
from ..ports.transport import PortUrlError
from . import packet
from .client import parse_udp_url
from .pcap import CHANNEL, CNIP_PORT, PcapWriter

log = logging.getLogger(__name__)

#: seconds a peer stays a destination after its last datagram
PEER_TTL = 300.0


class Endpoint:
    """The fleet's CN/IP endpoint on ``line``. ``url`` is the bound ``udp://HOST:PORT``."""

    name = "CN/IP"

    def __init__(self, line, *, pcap=None):
        self.line = line
        self.pcap = PcapWriter(pcap) if isinstance(pcap, (str, bytes)) or hasattr(
            pcap, "__fspath__") else pcap
        self.url = ""
        self.transport: asyncio.DatagramTransport | None = None
        self.local = ("127.0.0.1", CNIP_PORT)
        self.peers: dict[tuple, float] = {}
        self.session = int(time.time()) & 0xFFFFFFFF
        self.sequence = 0
        self.stats = {"received": 0, "sent": 0, "dropped": 0}
        self.owns_line = False  # open_cnip made the line: closing the endpoint closes it
        line.attach(self)

    @property
    def stations(self):
        return self.line.stations

    def kick(self, station=None) -> None:
        self.line.kick(station)

    def datagram(self, data: bytes, peer: tuple) -> None:
        """A datagram from ``peer``: unwrap it and put its frame on the line."""
        try:
            _, raw = packet.decode(data)
        except packet.CnipError as exc:
            self.stats["dropped"] += 1
            log.info("CN/IP datagram from %s:%s dropped: %s", peer[0], peer[1], exc)
            return
        self.peers[peer] = time.monotonic()
        self.stats["received"] += 1
        if self.pcap is not None:
            self.pcap.write(data, peer, self.local)
        if not self.line.inject(raw, self):
            self.stats["dropped"] += 1

    def deliver(self, raw: bytes, now: float, info: LinkInfo) -> None:
        """A frame on the line: to every live peer."""
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        data = packet.encode(raw, self.sequence, self.session, int(time.time() * 1000))
        if self.pcap is not None:
            self.pcap.write(data, self.local, CHANNEL)
        wall = time.monotonic()
        stale = [peer for peer, heard in self.peers.items() if wall - heard > PEER_TTL]
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

    def close(self) -> None:
        self.line.detach(self)
        if self.owns_line:
            self.line.close()
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


async def open_cnip(url: str, line, persist: Callable[[], None] | None = None, *, pcap=None,
                    clock: Callable[[], float] | None = None) -> Endpoint | None:
    """Listen on ``udp://HOST:PORT`` (port 0: a free port) as a gateway of ``line`` (an
    IdealLine or a BPSK line's real-time driver), or, given a list of plc/station.py
    MeterStations, of a new ideal line joining them (``persist``, ``clock`` are its own).
    ``pcap``: a path or a PcapWriter for the frames the endpoint sends and receives. ``off``
    gives None."""
    if url == "off":
        return None
    if not url.startswith("udp://"):
        raise PortUrlError(f"--cnip {url!r}: use udp://HOST:PORT (0 = any free port) or off")
    try:
        host, port = parse_udp_url(url)
    except ValueError as exc:
        raise PortUrlError(f"--cnip {exc}") from None
    owns_line = isinstance(line, (list, tuple))
    if owns_line:
        from ..phy.ideal import IdealLine
        line = IdealLine(line, persist or (lambda: None), clock=clock)
    try:
        endpoint = Endpoint(line, pcap=pcap)
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
    endpoint.owns_line = owns_line
    endpoint.transport = transport
    bound = transport.get_extra_info("sockname")
    endpoint.url = f"udp://{bound[0]}:{bound[1]}"
    endpoint.local = (bound[0], CNIP_PORT)
    endpoint.kick()  # a node may have something to say at start (nothing, usually)
    return endpoint
