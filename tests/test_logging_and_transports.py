"""Debug logs explain every refusal and never show a password; the serial-device and pty:LINK
transports carry the optical port (a real pseudo-terminal stands in for the serial device)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

from conftest import MK, parse_packet

from meter_emu.ports.optical.link import ACK, frame


def test_debug_log_names_reasons_and_hides_passwords(client, caplog):
    caplog.set_level(logging.DEBUG, logger="meter_emu")
    client.logon(MK)
    bad = frame(b"\x20")[:-1] + b"\x00"
    client.raw(bad)
    client.request(b"\x30\x00\x63")  # BT99 does not exist
    client.request(b"\x51" + b"wrong-password-12345")
    text = caplog.text
    assert "bad CRC" in text
    assert "BT99 does not exist" in text
    assert "password matches no key" in text
    for secret in (MK, b"wrong-password-12345"):
        assert secret.decode() not in text
        assert secret.hex(" ") not in text and secret.hex() not in text
    assert "password bytes hidden" in text


def _wait_ready(path: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("emulator did not become ready")


def _exchange(fd: int, payload: bytes, toggle: int) -> bytes:
    """Send one request over a raw fd, return the meter's response APDU (single packet)."""
    os.write(fd, frame(payload, toggle))
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if len(data) > 7 and len(data) >= 1 + 8 + int.from_bytes(data[5:7], "big"):
            break
    assert data[0] == ACK, data.hex()
    packet, rest = parse_packet(data[1:])
    assert rest == b""
    os.write(fd, bytes([ACK]))
    return packet["data"]


def test_optical_port_on_a_serial_device(tmp_path):
    # The test owns a pty pair: the emulator opens the slave as its "serial device",
    # the test talks through the master like a client at the far end of the cable.
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    device = os.ttyname(slave)
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meter_emu", "run", "--optical", device, "--mep", "off", "--ready-file",
         str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_ready(ready, proc)["ports"]["optical"] == device
        assert _exchange(master, b"\x20", 0x00) == bytes.fromhex("0000020000")
        assert _exchange(master, b"\x50\x00\x01tester    ", 0x20) == b"\x00"
        response = _exchange(master, b"\x30\x00\x01", 0x00)
        assert response[3:15] == b"NES OSGP1PH "
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        os.close(master)
        os.close(slave)
    assert not ready.exists()  # the ready file goes away with the emulator


def test_pty_with_a_symlink(tmp_path):
    link = tmp_path / "meter-optical"
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meter_emu", "run", "--optical", f"pty:{link}", "--mep", "off",
         "--ready-file",
         str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_ready(ready, proc)["ports"]["optical"] == str(link)
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        try:
            assert _exchange(fd, b"\x20", 0x00) == bytes.fromhex("0000020000")
        finally:
            os.close(fd)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped" in out
    assert not link.exists()
