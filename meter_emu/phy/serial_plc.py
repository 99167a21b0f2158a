"""``--serial-plc``: the U50/MIP serial link (phy/u50.py) as a gateway of the fleet's line
(phy/ideal.py, or the BPSK line's phy/realtime.py: both have ``attach`` and ``inject``).

* ``pty`` or a device path (``/dev/ttyUSB0``): NI role (phy/ni.py). The fleet appears as a PLC
  network interface; host software resets it, reads its status and Neuron ID, switches it to
  layer 2 and sends LPDUs (NI command 12/13) that go onto the line; every frame on the line
  comes back as layer-2 receive (1A, or 1B/1C with phase and SSI bytes after 41/42). ``pty``
  reports the slave path a host opens; the emulator keeps the slave open too, so hosts may come
  and go.
* ``host:DEVICE``: host role (phy/u50_host.py). The emulator drives an NI on DEVICE (a real one,
  or another emulator's ``--serial-plc pty``): start-up, then frames the meters send leave as
  12/13 and frames the NI receives (1A/1B/1C) go onto the line.

Serial devices are opened 115200 8N1, no flow control (lower-layers.md §10.1), and nothing
here reads or sets modem lines (a pty has none).
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import time
import tty

from ..lon.node import LinkInfo
from ..ports.transport import PortUrlError
from .ni import NetworkInterface
from .u50_host import HostSession

log = logging.getLogger(__name__)

BAUD = 115200


def open_tty(path: str) -> int:
    """A serial device or pty slave as a raw, non-blocking fd at 115200 8N1, no flow control."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        configure_raw(fd)
    except termios.error:
        os.close(fd)
        raise
    return fd


def configure_raw(fd: int) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
                | termios.CS8 | termios.CLOCAL | termios.CREAD)
    attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY)
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class SerialPlc:
    """One serial PLC port on ``line``: ``session`` is a NetworkInterface or a HostSession."""

    def __init__(self, line, session, fd: int, url: str, close_fds):
        self.line, self.session, self.fd, self.url = line, session, fd, url
        self.name = getattr(session, "name", "serial PLC")
        self._close_fds = close_fds
        self._pending = bytearray()
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        line.attach(self)
        self.loop.add_reader(fd, self._readable)
        if isinstance(session, HostSession):
            session.start(time.monotonic())
        self._flush()

    # the line's side
    def deliver(self, raw: bytes, now: float, info: LinkInfo) -> None:
        if isinstance(self.session, HostSession):
            self.session.transmit(raw, time.monotonic())
        else:
            self.session.deliver(raw, time.monotonic(), info)
        self._flush()

    # the port's side
    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: no one has the other end open; look again soon
            log.debug("%s: read error %s; waiting for the other end", self.name, exc)
            self.loop.remove_reader(self.fd)
            self.loop.call_later(0.2, self._rearm_reader)
            return
        if data:
            self.session.feed(data, time.monotonic())
            self._flush()

    def _rearm_reader(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.fd, self._readable)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.poll(time.monotonic())
        self._flush()

    def _flush(self) -> None:
        """Write what the session said, hand received frames to the line, re-arm the timer."""
        if self._closed:
            return
        self._pending += self.session.take_output()
        self._write_pending()
        if isinstance(self.session, HostSession):
            for raw, _info in self.session.take_frames():
                self.line.inject(raw, self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()),
                                               self._on_timer)

    def _write_pending(self) -> None:
        if not self._pending:
            return
        try:
            written = os.write(self.fd, self._pending)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            log.debug("%s: write failed (%s); %d bytes dropped", self.name, exc,
                      len(self._pending))
            self._pending.clear()
            return
        del self._pending[:written]
        if self._pending:
            if len(self._pending) > 1 << 16:  # nobody reads: drop, the link repeats
                log.info("%s: %d bytes unread by the other end; dropped", self.name,
                         len(self._pending))
                self._pending.clear()
                return
            self.loop.remove_writer(self.fd)
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        self.loop.remove_writer(self.fd)
        self._write_pending()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.line.detach(self)
        if self._timer is not None:
            self._timer.cancel()
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self._close_fds()


async def open_serial_plc(url: str, line):
    """The gateway (with ``url``: the path a host opens, ``close()``); PortUrlError on a bad
    URL."""
    if url == "off":
        return None
    host = url.startswith("host:")
    path = url[5:] if host else url
    if path == "pty":
        if host:
            raise PortUrlError("--serial-plc host:pty: the host role needs the NI's device path")
        master, slave = os.openpty()
        configure_raw(slave)
        os.set_blocking(master, False)
        fd, shown = master, os.ttyname(slave)

        def close_fds():
            os.close(master)
            os.close(slave)
    elif path.startswith("/"):
        try:
            fd = open_tty(path)
        except (OSError, termios.error) as exc:
            raise PortUrlError(f"--serial-plc {url}: cannot open {path}: {exc}") from None
        shown = url

        def close_fds():
            os.close(fd)
    else:
        raise PortUrlError(f"--serial-plc {url!r}: use pty, a device path, host:DEVICE or off")
    session = HostSession(name=f"U50 host {path}") if host else NetworkInterface(
        lambda raw: None, name=f"serial NI {shown}")
    gateway = SerialPlc(line, session, fd, shown, close_fds)
    if not host:
        session.inject = lambda raw: line.inject(raw, gateway)
    return gateway
