"""End to end: the MEP guide's worked frames (reference/osgp-app-layer.md 11.1 items 1-7; MEP
p.14-17, p.45-49, p.52-53) byte for byte against the MEP port of ``meter-emu run --profile
mep-guide``, over TCP and over a pty. Items at other sequence numbers run in their own emulator
(``--set mep.sequence_number=``); nothing else is set up, so every frame meets the meter as the
profile leaves it. Item 6 runs on mep-guide-p45, the guide's later meter."""

from __future__ import annotations

import os
import select
import socket
import time
import tty

import pytest
from e2e import start_emulator  # noqa: F401 - the fixture
from test_transactions import GUIDE, H

TRANSPORTS = ["tcp://127.0.0.1:0", "pty"]
TIMEOUT = 5.0


class MepClient:
    """Length-framed MEP messages over the port the ready file names (tcp://... or a pty)."""

    def __init__(self, where: str):
        if where.startswith("tcp://"):
            host, port = where[len("tcp://"):].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            self.fd = self.sock.fileno()
        else:
            self.sock = None
            self.fd = os.open(where, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.fd)

    def _read(self, count: int) -> bytes:
        data, deadline = b"", time.monotonic() + TIMEOUT
        while len(data) < count:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"no answer: {data.hex()} after {TIMEOUT} s")
            chunk = os.read(self.fd, count - len(data))
            if not chunk:
                pytest.fail("the MEP port closed the connection")
            data += chunk
        return data

    def exchange(self, frame: bytes) -> bytes:
        os.write(self.fd, frame)
        while True:
            head = self._read(2)
            length = int.from_bytes(head, "big")
            if length:  # a zero length is the meter's alert sequence (MEP p.15), not an answer
                return head + self._read(length)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)


def replay(start_emulator, transport: str, items,  # noqa: F811
           profile: str = "mep-guide") -> list[bytes]:
    sequence = GUIDE[items[0]][0]
    emu = start_emulator("--profile", profile, "--set",
                         f"mep.sequence_number={sequence:#x}", mep=transport)
    client = MepClient(emu.ready["ports"]["mep"])
    try:
        return [client.exchange(H(GUIDE[item][1])) for item in items]
    finally:
        client.close()


def expected(*items: int) -> list[bytes]:
    return [H(GUIDE[item][2]) for item in items]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("items", [(1, 2), (3,), (4, 5), (7,)], ids=str)
def test_guide_frames_through_meter_emu_run(start_emulator, transport, items):  # noqa: F811
    assert replay(start_emulator, transport, items) == expected(*items)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_item_6_through_meter_emu_run(start_emulator, transport):  # noqa: F811
    """Item 6 on mep-guide-p45, the guide's later meter (see test_transactions)."""
    assert replay(start_emulator, transport, (4, 5, 6), "mep-guide-p45")[2] == H(GUIDE[6][2])
