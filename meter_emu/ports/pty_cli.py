"""``meter-emu pty``: a pseudo-terminal pair, the null-modem cable of this project (no socat
needed). Two ptys are made and this process relays bytes between their masters; their slave
paths are printed on one line (``A B``) and opened by two programs as serial ports, e.g. an NI
and a host. Both slaves are held open here too, so either program may close and reopen its end.
Raw mode, 8N1, no flow control; the baud rate a program sets is accepted and has no effect.
Runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import select
import signal
import sys


def add_parser(sub) -> None:
    sub.add_parser("pty", help="create a pseudo-terminal pair and print both paths",
                   description="Create two pseudo-terminals joined by this process (a "
                               "null-modem cable: no socat needed), print their paths on one "
                               "line and relay until Ctrl-C or SIGTERM. Open one path as the "
                               "NI's port (meter-emu run --serial-plc PATH) and the other as "
                               "the host's (meter-emu client --serial PATH).")


def make_pair() -> tuple[list[int], list[int], list[str]]:
    """Two raw ptys: (masters, slaves, slave paths)."""
    from ..phy.serial_plc import configure_raw

    masters, slaves = [], []
    for _ in range(2):
        master, slave = os.openpty()
        configure_raw(slave)
        os.set_blocking(master, False)
        masters.append(master)
        slaves.append(slave)
    return masters, slaves, [os.ttyname(s) for s in slaves]


def relay(masters: list[int], stop: list[bool]) -> None:
    """Copy bytes between the two masters until ``stop[0]``; what cannot be written waits."""
    backlog = {fd: bytearray() for fd in masters}  # bytes waiting to be written to fd
    while not stop[0]:
        writers = [fd for fd in masters if backlog[fd]]
        try:
            readable, writable, _ = select.select(masters, writers, [], 0.5)
        except InterruptedError:
            continue
        for fd in readable:
            other = masters[1] if fd == masters[0] else masters[0]
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):  # EIO: no program has this slave open
                continue
            if len(backlog[other]) < 1 << 20:
                backlog[other] += data
        for fd in writable:
            try:
                written = os.write(fd, backlog[fd])
            except (BlockingIOError, OSError):
                continue
            del backlog[fd][:written]


def main(args) -> int:
    masters, slaves, paths = make_pair()
    stop = [False]

    def finish(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    print(f"{paths[0]} {paths[1]}", flush=True)
    print(f"meter-emu pty: {paths[0]} <-> {paths[1]} (raw, 8N1); Ctrl-C ends it",
          file=sys.stderr, flush=True)
    try:
        relay(masters, stop)
    finally:
        for fd in masters + slaves:
            os.close(fd)
    return 0
