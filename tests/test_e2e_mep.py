"""End to end: the MEP port of a running ``meter-emu run`` over TCP, a pty and a serial device
(a pty pair whose slave the emulator opens with pyserial), for MEP clients 1 and 2.

Pages are the MEP guide's printed footers. The module's emulator runs firmware 4.30 (two MEP
clients, MEP p.21-25): client 1 on TCP, client 2 on a pty, both registered in the state it
starts from (ET14, as the server's discovery leaves it), so that EP19 can raise and EP39 clear
an ET13 alert. What a client sees: replays answer 0x0C with the expected number, frames that
do not authenticate 0x0B (plain, no digest), truncated and oversize frames silence (then the
next good frame is answered), and ``00 00`` once a second while an alert lasts (MEP p.17-18).
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import time
import tty
from pathlib import Path

import pytest

from meter_emu.device.meter import Meter
from meter_emu.profile import load_profile
from meter_emu.security import OmaKey
from meter_emu.store import StateStore
from meter_emu.tables import CATALOG, et, mep_devices

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

MAK = b"\x01" * 16
SEQUENCE = 0x77635B90
METER = ["keys.mak=hex:" + MAK.hex(), f"mep.sequence_number={SEQUENCE:#x}"]
GEN4 = METER + ["identity.firmware_version=4.30.01"]
HANDLES = {1: 1000, 2: 2000}  # the first handle of each MEP client (MEP p.22)
BT07, BT08, ET50 = 7, 8, et(50)
EP19, EP39 = 2048 + 19, 2048 + 39
READ_BT01 = bytes.fromhex("3F0001 000000 0004")
_PSN = itertools.count(1)
QUIET = 0.8  # longer than the 0.5 s inter-character time-out of TCP and ptys


class MepWire:
    """A MEP client at the far end of a TCP connection, pty or serial line. It keeps the
    sequence number it last learned and records every alert (``00 00``) it reads."""

    def __init__(self, fd: int, sock: socket.socket | None = None, key: bytes = MAK):
        self.fd, self.sock, self.key = fd, sock, key
        self.sequence = 0
        self.alerts: list[float] = []
        self._buffer = bytearray()
        self.last_sent = 0.0

    @classmethod
    def connect(cls, url: str, key: bytes = MAK) -> "MepWire":
        if url.startswith("tcp://"):
            host, port = url[len("tcp://"):].rsplit(":", 1)
            sock = socket.create_connection((host, int(port)), timeout=5)
            return cls(sock.fileno(), sock, key)
        fd = os.open(url, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return cls(fd, None, key)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)

    def send(self, raw: bytes) -> None:
        self.last_sent = time.monotonic()
        if self.sock is not None:
            self.sock.sendall(raw)
        else:
            os.write(self.fd, raw)

    def _fill(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        data = self.sock.recv(4096) if self.sock is not None else os.read(self.fd, 4096)
        assert data, "the meter closed the connection"
        self._buffer += data
        return True

    def reply(self, timeout: float = 2.0) -> bytes | None:
        """The next message the meter sends (alerts are recorded and skipped); None if none
        comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self._buffer) >= 2:
                length = int.from_bytes(self._buffer[:2], "big")
                if length == 0:
                    self.alerts.append(time.monotonic())
                    del self._buffer[:2]
                    continue
                if len(self._buffer) < 2 + length:
                    break
                message = bytes(self._buffer[2:2 + length])
                del self._buffer[:2 + length]
                return message
            if not self._fill(deadline):
                return None

    def frame(self, apdu: bytes, sequence: int | None = None) -> bytes:
        body = apdu + (self.sequence if sequence is None else sequence).to_bytes(4, "big")
        message = body + OmaKey(self.key).digest(body)
        return len(message).to_bytes(2, "big") + message

    def exchange(self, raw: bytes) -> bytes:
        self.send(raw)
        answer = self.reply()
        assert answer is not None, f"no answer to {raw.hex()}"
        return answer

    def checked(self, raw: bytes, answer: bytes) -> bytes:
        """The response APDU, after checking its digest continues the request's (MEP p.11)."""
        body = raw[2:-8]
        assert answer[-8:] == OmaKey(self.key).digest(body + answer[:-8]), answer.hex()
        return answer[:-8]

    def sync(self) -> int:
        """Learn the expected sequence number the way the guide's client does (MEP p.15)."""
        raw = self.frame(READ_BT01, sequence=(self.sequence - 100) % 2**32)
        response = self.checked(raw, self.exchange(raw))
        assert response[0] == 0x0C, response.hex()
        self.sequence = int.from_bytes(response[1:5], "big")
        return self.sequence

    def request(self, apdu: bytes) -> bytes:
        raw = self.frame(apdu)
        response = self.checked(raw, self.exchange(raw))
        assert response[0] != 0x0C, f"sequence {self.sequence:08x} refused: {response.hex()}"
        self.sequence += 1
        return response

    def write(self, table_id: int, data: bytes, offset: int = 0) -> int:
        head = b"\x4F" + table_id.to_bytes(2, "big") + offset.to_bytes(3, "big")
        return self.request(head + len(data).to_bytes(2, "big") + data)[0]

    def call(self, number: int, params: bytes) -> None:
        """Write BT07 with a fresh procedure sequence number (a repeated one is refused);
        the result goes to BT08, ET59 or ET85, by client."""
        psn = next(_PSN) % 256
        assert self.write(BT07, number.to_bytes(2, "little") + bytes([psn]) + params) == 0

    def watch(self, seconds: float) -> list[float]:
        """Read for ``seconds``; return the alerts that came (nothing else may come)."""
        before = len(self.alerts)
        assert self.reply(seconds) is None, "an unexpected message"
        return self.alerts[before:]


def seed_registered_clients(directory: Path, overrides: list[str]) -> None:
    """A state in which the server has discovered MEP clients (ET14 entries with their
    handles), as it does once a client sets ET50 "MEP Device Registered" (MEP p.17)."""
    meter = Meter(load_profile(overrides=overrides))
    now = time.time()
    for channel in range(1, meter_channels(meter) + 1):
        mep_devices.register(meter, mep_devices.mep_slot(meter, channel), now,
                             handle=HANDLES[channel])
    store = StateStore(directory)
    store.save(meter)
    store.close()


def meter_channels(meter) -> int:
    from meter_emu.tables.dimensions import product_dimensions

    return product_dimensions(meter).mep_channels


def et50_registered_offset(channel: int) -> int:
    """ET50 "MEP Device Registered" (byte 30 of each client's record, MEP p.124)."""
    meter = Meter(load_profile(overrides=GEN4))
    record = CATALOG[ET50].layout_for(meter).sizeof() // meter_channels(meter)
    return (channel - 1) * record + 30


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-mep")
    state = workdir / "state"
    seed_registered_clients(state, GEN4)
    factory = e2e.EmulatorFactory(workdir)
    args = [arg for item in GEN4 for arg in ("--set", item)]
    try:
        yield factory(*args, "--mep2", "pty", optical="off", state=state)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def clients(emulator):
    wires = {"tcp": MepWire.connect(emulator.ready["ports"]["mep"]),
             "pty": MepWire.connect(emulator.ready["ports"]["mep2"])}
    try:
        yield wires
    finally:
        for wire in wires.values():
            wire.close()


def test_ready_file_and_banner_name_both_mep_ports(emulator):
    ports = emulator.ready["ports"]
    assert set(ports) == {"mep", "mep2"}
    assert ports["mep"].startswith("tcp://127.0.0.1:") and ports["mep2"].startswith("/dev/")
    out = emulator.stdout()
    assert f"mep2     {ports['mep2']}" in out
    assert f"MEP clients: client 1 on {ports['mep']} and client 2 on {ports['mep2']}" in out


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_a_replayed_frame_answers_0c_with_the_expected_number(clients, transport):
    wire = clients[transport]
    wire.sync()
    raw = wire.frame(READ_BT01)
    first = wire.checked(raw, wire.exchange(raw))
    assert first[:3] == b"\x00\x00\x04"
    again = wire.checked(raw, wire.exchange(raw))  # the captured frame, sent again
    assert again == b"\x0C" + (wire.sequence + 1).to_bytes(4, "big")


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_one_flipped_bit_anywhere_answers_0b(clients, transport):
    wire = clients[transport]
    wire.sync()
    raw = wire.frame(READ_BT01)
    for i in range(2, len(raw)):  # every byte of the message: APDU, sequence, digest
        flipped = bytearray(raw)
        flipped[i] ^= 1 << (i % 8)
        assert wire.exchange(bytes(flipped)) == b"\x0B", f"bit {i % 8} of byte {i}"
    longer = bytearray(raw)
    longer[1] ^= 0x01  # a flipped length: the frame never completes, so no answer
    wire.send(bytes(longer))
    assert wire.reply(QUIET) is None
    assert wire.checked(raw, wire.exchange(raw))[0] == 0x00  # nothing moved meanwhile


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_a_truncated_frame_is_dropped_after_the_inter_character_time_out(clients, transport):
    wire = clients[transport]
    wire.sync()
    raw = wire.frame(READ_BT01)
    wire.send(raw[:11])
    assert wire.reply(QUIET) is None  # silence (MEP p.21: the client retries after 500 ms)
    assert wire.checked(raw, wire.exchange(raw))[:3] == b"\x00\x00\x04"


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_garbage_and_oversize_lengths_leave_the_port_working(clients, emulator, transport):
    wire = clients[transport]
    wire.send(b"\xFF\xFF" + os.urandom(200))  # 65535 > 476 bytes: ignored until quiet
    assert wire.reply(QUIET) is None
    assert wire.exchange(b"\x00\x10" + os.urandom(16)) == b"\x0B"  # a frame, no key fits
    assert wire.exchange(b"\x00\x03\x30\x00\x01") == b"\x0B"  # too short for a digest
    wire.sync()
    assert wire.request(READ_BT01)[:3] == b"\x00\x00\x04"
    assert emulator.proc.poll() is None


def test_alert_sequence_while_an_on_demand_request_waits(clients):
    # EP19 posts a billing read for MEP client 1: ET13 "On-demand Request in ET15" is set and
    # the meter sends 00 00 once a second, one second after the last frame (MEP p.17-18, p.21),
    # until the client answers with EP39 (the guide's expected action)
    wire = clients["tcp"]
    wire.sync()
    assert wire.write(ET50, b"\x01", et50_registered_offset(1)) == 0
    wire.call(EP19, bytes.fromhex("0100") + HANDLES[1].to_bytes(2, "little") + b"\x02")
    bt08 = wire.request(b"\x30" + BT08.to_bytes(2, "big") + b"\x01\xDC")
    assert bt08[3:5] == EP19.to_bytes(2, "little") and bt08[6] == 0, bt08.hex()
    alerts = wire.watch(2.6)
    assert len(alerts) >= 2, alerts
    assert alerts[0] - wire.last_sent >= 0.95  # held off for a second after our frame
    assert all(0.8 <= b - a <= 1.3 for a, b in zip(alerts, alerts[1:])), alerts
    wire.call(EP39, bytes.fromhex("01 01 0000"))  # on-demand result: success
    bt08 = wire.request(b"\x30" + BT08.to_bytes(2, "big") + b"\x01\xDC")
    assert bt08[3:5] == EP39.to_bytes(2, "little") and bt08[6] == 0, bt08.hex()
    assert wire.watch(2.5) == []


def test_mep_client_2_gets_its_own_alerts_on_its_own_port(clients):
    one, two = clients["tcp"], clients["pty"]
    two.sync()
    assert two.write(ET50, b"\x01", et50_registered_offset(2)) == 0
    one.sync()
    one.call(EP19, bytes.fromhex("0200") + HANDLES[2].to_bytes(2, "little") + b"\x02")
    assert len(two.watch(2.2)) >= 1
    assert one.watch(0.3) == []  # client 1 was not alerted meanwhile
    two.sync()
    two.call(EP39, bytes.fromhex("01 01 0000"))
    assert two.watch(2.5) == []


def test_sequence_number_survives_restart_and_kill_9(start_emulator, tmp_path):
    state = tmp_path / "state"
    args = [arg for item in METER for arg in ("--set", item)]
    emu = start_emulator(*args, optical="off", state=state)
    wire = MepWire.connect(emu.ready["ports"]["mep"])
    expected = wire.sync()
    raw = wire.frame(READ_BT01)
    assert wire.checked(raw, wire.exchange(raw))[0] == 0x00
    wire.close()
    emu.stop()
    emu = start_emulator(*args, optical="off", state=state)
    wire = MepWire.connect(emu.ready["ports"]["mep"])
    assert wire.checked(raw, wire.exchange(raw)) == b"\x0C" + (expected + 1).to_bytes(4, "big")
    wire.sequence = expected + 1
    raw = wire.frame(READ_BT01)
    assert wire.checked(raw, wire.exchange(raw))[0] == 0x00
    emu.kill9()  # right after the answer: the new number was on disk before it left
    wire.close()
    emu = start_emulator(*args, optical="off", state=state)
    wire = MepWire.connect(emu.ready["ports"]["mep"])
    assert wire.checked(raw, wire.exchange(raw)) == b"\x0C" + (expected + 2).to_bytes(4, "big")
    wire.close()


def test_mep_port_on_a_serial_device(start_emulator):
    # the test owns a pty pair: the emulator opens the slave with pyserial as its serial
    # device; the test is the MEP client at the other end of the "cable"
    master, slave = os.openpty()
    tty.setraw(slave)
    device = os.ttyname(slave)
    try:
        args = [arg for item in METER for arg in ("--set", item)]
        emu = start_emulator(*args, optical="off", mep=device)
        assert emu.ready["ports"]["mep"] == device
        wire = MepWire(master)
        assert wire.sync() == SEQUENCE
        assert wire.request(READ_BT01)[:3] == b"\x00\x00\x04"
        raw = wire.frame(READ_BT01)
        wire.send(raw[:9])
        time.sleep(0.2)  # four times the serial line's 50 ms (MEP p.21): the half is dropped
        assert wire.checked(raw, wire.exchange(raw))[:3] == b"\x00\x00\x04"
    finally:
        os.close(master)
        os.close(slave)


def test_mep2_is_refused_before_firmware_4():
    done = e2e.run_meter_emu("run", "--optical", "off", "--mqtt", "off", "--mep", "off",
                             "--mep2", "tcp://127.0.0.1:0")
    assert done.returncode == 2
    assert "--mep2" in done.stderr and "4.0" in done.stderr and "Traceback" not in done.stderr
