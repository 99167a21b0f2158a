"""Byte-stream transports: the only code that touches ptys, serial devices and sockets.

A port URL says where a sans-I/O stream protocol (``receive(data, now) -> bytes``,
``poll(now) -> bytes``, ``next_deadline()``) is reachable:

* ``tcp://HOST:PORT`` - a TCP server (port 0 picks a free port); every connection gets a fresh
  protocol object, so pyserial ``socket://`` clients such as termineter work;
* ``pty`` or ``pty:LINK`` - a pseudo-terminal pair; clients open the reported slave path (or the
  symlink LINK). The emulator keeps the slave open too, so clients may come and go;
* any other path - a serial device (``/dev/ttyUSB0``), opened 9600 8N1 with pyserial;
* ``off`` - no endpoint.

``after_input`` runs after every input and every ``poll``, before their output is written: it
persists state a client is about to be told about (see store.py; a paced MEP request is served
from ``poll``). Each protocol's ``next_deadline`` is asked
after every input and every ``poll`` (and once at the start), and ``poll`` runs when it comes:
that is how delayed output (paced MEP segments) and unprompted output (the MEP alert) leave.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tty
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger(__name__)


class StreamProtocol(Protocol):
    def receive(self, data: bytes, now: float) -> bytes: ...

    def poll(self, now: float) -> bytes: ...

    def next_deadline(self) -> float | None: ...


class PortUrlError(ValueError):
    """A port URL that cannot be opened; the message says why."""


class Endpoint:
    """A listening port. ``url`` is what a client uses (printed and put in the ready file)."""

    def __init__(self, url: str, closer: Callable[[], None]):
        self.url = url
        self._closer = closer

    def close(self) -> None:
        self._closer()


def _guarded(name: str, action: Callable[[], bytes]) -> bytes:
    """Run protocol code; a bug there is logged, never allowed to kill the port."""
    try:
        return action()
    except Exception:  # noqa: BLE001 - the port must survive anything a client sends
        log.exception("%s: internal error while handling input; input dropped", name)
        return b""


async def open_endpoint(
    url: str, factory: Callable[[], StreamProtocol], after_input: Callable[[], None], name: str
) -> Endpoint | None:
    if url == "off":
        return None
    if url.startswith("tcp://"):
        return await _open_tcp(url, factory, after_input, name)
    if url == "pty" or url.startswith("pty:"):
        return _open_pty(url[4:] or None, factory, after_input, name)
    if url.startswith("/"):
        return _open_serial(url, factory, after_input, name)
    raise PortUrlError(
        f"{name}: unknown port {url!r}; use tcp://HOST:PORT, pty, pty:LINK, a device path or off"
    )


# ---- TCP ------------------------------------------------------------------------------------


async def _open_tcp(url, factory, after_input, name) -> Endpoint:
    host, _, port_text = url[len("tcp://"):].rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise PortUrlError(f"{name}: {url!r} has no numeric port") from None
    host = host.strip("[]") or "127.0.0.1"

    async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername")
        log.debug("%s: client %s connected", name, peer)
        proto = factory()
        try:
            while True:
                deadline = proto.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout)
                except asyncio.TimeoutError:
                    out = _guarded(name, lambda: proto.poll(time.monotonic()))
                    after_input()
                else:
                    if not data:
                        break
                    out = _guarded(name, lambda: proto.receive(data, time.monotonic()))
                    after_input()
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("%s: client %s dropped: %s", name, peer, exc)
        except asyncio.CancelledError:
            log.debug("%s: client %s closed at shutdown", name, peer)
        finally:
            writer.close()
            log.debug("%s: client %s disconnected", name, peer)

    try:
        server = await asyncio.start_server(serve_client, host, port, backlog=16)
    except OSError as exc:
        raise PortUrlError(f"{name}: cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = server.sockets[0].getsockname()
    return Endpoint(f"tcp://{bound[0]}:{bound[1]}", server.close)


# ---- file descriptors (pty, serial) -----------------------------------------------------------


class _FdPump:
    """Moves bytes between one file descriptor and one protocol object on the event loop."""

    def __init__(self, read_fd, write, factory, after_input, name):
        self.loop = asyncio.get_running_loop()
        self.read_fd, self.write, self.name = read_fd, write, name
        self.proto = factory()
        self.after_input = after_input
        self._timer: asyncio.TimerHandle | None = None
        self.loop.add_reader(read_fd, self._readable)
        self._send(b"")  # start the protocol's timer: it may speak first (the MEP alert)

    def _readable(self) -> None:
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO while no client has the pty open: wait for one
            log.debug("%s: read error %s; waiting for a client", self.name, exc)
            self.loop.remove_reader(self.read_fd)
            self.loop.call_later(0.2, self.loop.add_reader, self.read_fd, self._readable)
            return
        if data:
            out = _guarded(self.name, lambda: self.proto.receive(data, time.monotonic()))
            self.after_input()
            self._send(out)

    def _on_timer(self) -> None:
        self._timer = None
        out = _guarded(self.name, lambda: self.proto.poll(time.monotonic()))
        self.after_input()
        self._send(out)

    def _send(self, out: bytes) -> None:
        if out:
            try:
                self.write(out)
            except OSError as exc:
                log.debug("%s: write failed (%s); answer dropped", self.name, exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.proto.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()),
                                               self._on_timer)

    def close(self) -> None:
        self.loop.remove_reader(self.read_fd)
        if self._timer is not None:
            self._timer.cancel()


def _open_pty(link: str | None, factory, after_input, name) -> Endpoint:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    if link:
        link_path = Path(link)
        if link_path.is_symlink() or link_path.exists():
            if not link_path.is_symlink():
                os.close(master)
                os.close(slave)
                raise PortUrlError(f"{name}: {link} exists and is not a symlink; not replacing it")
            link_path.unlink()
        link_path.symlink_to(path)
    pump = _FdPump(master, lambda out: os.write(master, out), factory, after_input, name)

    def close():
        pump.close()
        os.close(master)
        os.close(slave)
        if link and Path(link).is_symlink():
            Path(link).unlink()

    return Endpoint(link or path, close)


def _open_serial(path: str, factory, after_input, name) -> Endpoint:
    import serial

    try:
        device = serial.Serial(path, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=0)
    except (serial.SerialException, OSError) as exc:
        raise PortUrlError(f"{name}: cannot open serial device {path}: {exc}") from None
    pump = _FdPump(device.fileno(), device.write, factory, after_input, name)

    def close():
        pump.close()
        device.close()

    return Endpoint(path, close)
