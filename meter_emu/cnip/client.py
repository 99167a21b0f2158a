"""The head-end's CN/IP transport: a blocking UDP socket driving one sans-I/O 14908.1 node
(lon/node.py) against a CN/IP endpoint (``meter-emu run --cnip``).

It has the same ``now()`` / ``run_until(done, timeout)`` contract as the in-memory channel
(lon/channel.py), so head-end code (client/plc.py) runs unchanged over either. Time is
``time.monotonic()``: the node's retry and receive timers are real seconds here, as the
meters' are behind the endpoint.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import time
from typing import Callable

from . import packet

log = logging.getLogger(__name__)


def parse_udp_url(url: str, *, default_port: int = 1628) -> tuple[str, int]:
    """``udp://HOST:PORT`` (or ``HOST:PORT``) -> (host, port); ValueError says what is wrong."""
    rest = url.removeprefix("udp://")
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{url!r}: expected udp://HOST:PORT")
    return host, int(port_text)


class CnipDriver:
    """``node``'s frames to and from the CN/IP endpoint at ``url``."""

    def __init__(self, url: str, node, *, bind: str = "", session: int | None = None,
                 pcap=None):
        host, port = parse_udp_url(url)
        self.address = (socket.gethostbyname(host), port)
        self.node = node
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind or ("127.0.0.1" if host.startswith("127.") else ""), 0))
        self.sock.setblocking(False)
        self.session = random.getrandbits(32) if session is None else session
        self.sequence = 0
        self.pcap = pcap  # optional PcapWriter: what this head-end sent and received
        self.stats = {"sent": 0, "received": 0, "dropped": 0}

    def now(self) -> float:
        return time.monotonic()

    def _transmit(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.sequence = (self.sequence + 1) & 0xFFFFFFFF
            data = packet.encode(frame, self.sequence, self.session,
                                 int(time.time() * 1000))
            try:
                self.sock.sendto(data, self.address)
            except OSError as exc:  # ICMP port unreachable and friends: the retries cover it
                log.debug("CN/IP send to %s failed: %s", self.address, exc)
                continue
            self.stats["sent"] += 1
            if self.pcap is not None:
                self.pcap.write(data, self.sock.getsockname(), self.address)

    def _receive_ready(self, now: float) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier send
                log.debug("CN/IP receive: %s", exc)
                return
            try:
                _, lpdu = packet.decode(data)
            except packet.CnipError as exc:
                self.stats["dropped"] += 1
                log.debug("CN/IP datagram from %s dropped: %s", peer, exc)
                continue
            self.stats["received"] += 1
            if self.pcap is not None:
                self.pcap.write(data, peer, self.sock.getsockname())
            self._transmit(self.node.receive(lpdu, now))

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Pump the node (poll, send, receive) until ``done()`` or ``timeout`` seconds pass;
        returns ``done()``."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._transmit(self.node.poll(now))
            if done():
                return True
            if now >= end:
                return bool(done())
            wait = end - now
            deadline = self.node.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                self._receive_ready(time.monotonic())

    def run(self, duration: float) -> None:
        self.run_until(lambda: False, duration)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "CnipDriver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
