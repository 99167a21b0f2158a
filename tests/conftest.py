"""Shared fixtures: a meter on a manual clock, and a tiny C12.18 client that talks to the
sans-I/O optical link byte by byte (frames in, ACKs and frames out)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from meter_emu.clock import ManualClock
from meter_emu.crc import crc16
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.ports.optical.link import ACK, frame
from meter_emu.profile import load_profile

MK = b"MK-meter-emu-default"
PK = b"PK-meter-emu-default"
RK = b"RK-meter-emu-default"


class LinkClient:
    """Drives a C1218Link as a client would: sends packets, checks the meter's ACK, ACKs and
    reassembles the response packets."""

    def __init__(self, link, now: float = 100.0):
        self.link = link
        self.now = now
        self.toggle = 0

    def raw(self, data: bytes) -> bytes:
        return self.link.receive(data, self.now)

    def send_packet(self, payload: bytes, ctrl: int | None = None, seq: int = 0) -> bytes:
        if ctrl is None:
            ctrl = self.toggle
            self.toggle ^= 0x20
        return self.raw(frame(payload, ctrl, seq))

    def request(self, payload: bytes) -> bytes:
        """Send one request, return the reassembled response APDU."""
        out = self.send_packet(payload)
        assert out[:1] == bytes([ACK]), f"meter did not ACK: {out.hex()}"
        return self.collect(out[1:])

    def collect(self, out: bytes) -> bytes:
        apdu = b""
        while True:
            packet, rest = parse_packet(out)
            assert rest == b"", f"unexpected bytes after a packet: {rest.hex()}"
            apdu += packet["data"]
            if packet["seq"] == 0:
                assert self.raw(bytes([ACK])) == b""
                return apdu
            out = self.raw(bytes([ACK]))

    def logon(self, password: bytes | None = MK, user_id: int = 1) -> None:
        assert self.request(b"\x20")[0] == 0
        assert self.request(b"\x61\x20\x00\x02\x06")[0] == 0  # 8192-byte packets, 2 packets
        assert self.request(b"\x50" + user_id.to_bytes(2, "big") + b"tester    ") == b"\x00"
        if password is not None:
            assert self.request(b"\x51" + password.ljust(20, b"\0")) == b"\x00"

    def read(self, table_id: int, offset: int | None = None, count: int | None = None) -> bytes:
        if offset is None:
            response = self.request(b"\x30" + table_id.to_bytes(2, "big"))
        else:
            response = self.request(
                b"\x3F" + table_id.to_bytes(2, "big") + offset.to_bytes(3, "big")
                + count.to_bytes(2, "big")
            )
        if response[0] != 0:
            return response
        length = int.from_bytes(response[1:3], "big")
        data = response[3:3 + length]
        assert len(response) == 4 + length
        assert response[-1] == (-sum(data)) & 0xFF, "bad C12.18 data checksum"
        return data

    def write(self, table_id: int, data: bytes, offset: int | None = None) -> bytes:
        cksum = bytes([(-sum(data)) & 0xFF])
        if offset is None:
            apdu = b"\x40" + table_id.to_bytes(2, "big") + len(data).to_bytes(2, "big")
        else:
            apdu = (b"\x4F" + table_id.to_bytes(2, "big") + offset.to_bytes(3, "big")
                    + len(data).to_bytes(2, "big"))
        return self.request(apdu + data + cksum)


def parse_packet(data: bytes) -> tuple[dict, bytes]:
    assert data[0] == 0xEE, f"not a packet: {data.hex()}"
    length = int.from_bytes(data[4:6], "big")
    packet, rest = data[: 8 + length], data[8 + length:]
    assert crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little"), "bad CRC from the meter"
    return {"ctrl": packet[2], "seq": packet[3], "data": packet[6:-2]}, rest


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def meter():
    return Meter(load_profile())


@pytest.fixture
def client(meter, clock):
    return LinkClient(optical_protocol(meter, clock))


def bt07(number: int, psn: int, params: bytes = b"", selector: int = 0) -> bytes:
    """A BT07 procedure request: procedure word (LSB first, selector in bits 12..15), PSN,
    parameters."""
    return (number | selector << 12).to_bytes(2, "little") + bytes([psn]) + params


class Procedures:
    """Calls procedures through BT07/BT08 with a fresh PSN each time; returns (result code,
    response data)."""

    def __init__(self, client: LinkClient):
        self.client, self.psn = client, 0

    def __call__(self, number: int, params: bytes = b"") -> tuple[int, bytes]:
        self.psn = self.psn % 250 + 1
        assert self.client.write(7, bt07(number, self.psn, params)) == b"\x00"
        bt08 = self.client.read(8)
        assert bt08[:3] == number.to_bytes(2, "little") + bytes([self.psn])
        return bt08[3], bt08[4:]


# ---- a real mosquitto (Debian's mosquitto and mosquitto-clients: .ci/run installs them) -----

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_program(name: str) -> str:
    """mosquitto, mosquitto_pub, mosquitto_sub: a missing one fails the test (never skips)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed (apt-get install -y mosquitto mosquitto-clients)")
    return found


class Mosquitto:
    """mosquitto on a fixed free loopback port, so a test can stop it and start it again."""

    def __init__(self, directory):
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               "persistence false\n")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_program("mosquitto"), "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait (polling) until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class CompletionsApp:
    """A head-end node's application in tests: ignores indications, keeps each Completion by
    its handle."""

    def __init__(self):
        self.done = {}

    def indicate(self, node, ind, now):
        return None

    def completed(self, node, completion, now):
        self.done[completion.handle] = completion
