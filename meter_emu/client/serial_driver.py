"""The head-end's serial PLC transport: a blocking loop over a serial port (or pty) driving one
sans-I/O 14908.1 node (lon/node.py) through a PLC network interface with the U50 link, in the
host role (phy/u50_host.py). The NI is ``meter-emu run --serial-plc pty`` or real hardware.

Same ``now()`` / ``run_until(done, timeout)`` contract as the in-memory channel and the CN/IP
driver, so client/plc.py runs unchanged over it. Time is ``time.monotonic()``.
"""

from __future__ import annotations

import errno
import os
import select
import termios
import time
from typing import Callable

from ..phy.serial_plc import open_tty
from ..phy.u50_host import HostSession

STARTUP_TIMEOUT = 6.0


class SerialDriver:
    """``node``'s frames through the NI on ``path``. Raises ConnectionError when no NI comes
    up in layer 2 within ``startup_timeout`` seconds, OSError when the port cannot be opened."""

    def __init__(self, path: str, node, *, startup_timeout: float = STARTUP_TIMEOUT):
        try:
            self.fd = open_tty(path)
        except termios.error as exc:
            raise OSError(f"{path} is not a serial port ({exc})") from None
        self.path, self.node = path, node
        self.host = HostSession(name=f"U50 host {path}")
        self.host.start(self.now())
        self._pump_until(lambda: self.host.state in ("ready", "failed"), startup_timeout)
        if not self.host.ready:
            self.close()
            raise ConnectionError(f"no PLC network interface came up on {path} "
                                  f"(start-up stopped at {self.host.state!r})")

    def now(self) -> float:
        return time.monotonic()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        end = time.monotonic() + 2.0
        while view and time.monotonic() < end:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)
        # what did not fit in 2 s is lost like a line error: the link repeats it

    def _exchange(self, now: float) -> None:
        """Write what the host session says; frames from the NI to the node, its answers
        down."""
        for raw, info in self.host.take_frames():
            for frame in self.node.receive(raw, now, info):
                self.host.transmit(frame, now)
        out = self.host.take_output()
        if out:
            self._write(out)

    def _pump_until(self, done: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self.host.poll(now)
            if self.host.ready:
                for frame in self.node.poll(now):
                    self.host.transmit(frame, now)
            self._exchange(now)
            if done():
                return True
            if now >= end:
                return bool(done())
            wait = end - now
            for deadline in (self.host.next_deadline(),
                             self.node.next_deadline() if self.host.ready else None):
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
            readable, _, _ = select.select([self.fd], [], [], wait)
            if readable:
                try:
                    data = os.read(self.fd, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    time.sleep(0.05)  # the other end is not open (yet)
                    continue
                self.host.feed(data, time.monotonic())

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Pump the node and the link until ``done()`` or ``timeout`` seconds pass."""
        return self._pump_until(done, timeout)

    def run(self, duration: float) -> None:
        self.run_until(lambda: False, duration)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "SerialDriver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
