"""The MEP port: the MEP guide's worked frames byte for byte (key 16 x 0x01; reference/
osgp-app-layer.md section 11.1 and the derived RC4 vectors of 11.5), keys, sequence numbers,
malformed input, and a real TCP client against ``meter-emu run``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.ports.mep import mep_protocol
from meter_emu.profile import load_profile
from meter_emu.security import MepRc4, OmaKey


def H(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


GUIDE_METER = [  # the meter of the MEP guide's examples
    "keys.mak=hex:" + "01" * 16,
    "mep.sequence_number=0x77635B90",
    "registers.power_outage_seconds=8",
    "registers.power_outage_count=3",
    "registers.error_counter=6",
]

# section 11.1 item 1: partial read BT23 (44 bytes) with a wrong sequence number, and the answer
WRONG_SEQ = H("0014 3F0017 000000 002C 01020304 74861F6D7658DD56")
WRONG_SEQ_ANSWER = H("000D 0C 77635B90 35863C1DF5B91482")
# item 2: the retry with 0x77635B91, and the 44 bytes of BT23
RETRY = H("0014 3F0017 000000 002C 77635B91 13DB85A135A0575E")
RETRY_ANSWER = H(
    "0037 00 002C 00000000 00000000 00000000 00000000 08000000 03000000 00000000 00000000"
    " 00000000 00000000 06000000 ADDCB82C3D417F91"
)
# section 11.5: the same retry RC4-encrypted, and the meter's encrypted answer
RETRY_ENCRYPTED = H("0014 5445ec99f5cb4c265df268c1 13db85a135a0575e")
RETRY_ENCRYPTED_ANSWER = H(
    "0037 7ac379648872 6eb50b0bb93a2f434 1c1417564930e6245801ad30893825120 80f2fdab15c8e30cd32eca3f1798b2fb"
    " ADDCB82C3D417F91"
)


@pytest.fixture
def guide_meter():
    return Meter(load_profile(overrides=GUIDE_METER))


@pytest.fixture
def link(guide_meter):
    return mep_protocol(guide_meter, ManualClock())


def frame(apdu: bytes, sequence: int, key: bytes = b"\x01" * 16, encrypt: bool = False) -> bytes:
    body = apdu + sequence.to_bytes(4, "big")
    tag = OmaKey(key).digest(body)
    if encrypt:
        body = MepRc4(key).stream(tag).process(body)
    message = body + tag
    return len(message).to_bytes(2, "big") + message


def test_guide_frames_byte_exact(link, guide_meter):
    assert link.receive(WRONG_SEQ, 1.0) == WRONG_SEQ_ANSWER
    assert link.receive(RETRY, 2.0) == RETRY_ANSWER
    assert guide_meter.mep_sequence == 0x77635B92
    assert guide_meter.dirty  # the new sequence number is saved before the answer leaves


def test_encrypted_request_gets_an_encrypted_answer(link):
    assert link.receive(RETRY_ENCRYPTED, 1.0) == RETRY_ENCRYPTED_ANSWER


def test_frames_split_across_reads_and_back_to_back(link):
    both = WRONG_SEQ + RETRY
    out = b""
    for i in range(0, len(both), 5):
        out += link.receive(both[i:i + 5], 1.0)
    assert out == WRONG_SEQ_ANSWER + RETRY_ANSWER


def test_unknown_key_answers_0b_plain(link, guide_meter):
    assert link.receive(frame(b"\x30\x00\x01\x01\x00", 0x77635B90, key=b"\x02" * 16), 1.0) == \
        H("0001 0B")
    assert link.receive(H("0003 300001"), 1.0) == H("0001 0B")  # too short to carry a digest
    assert guide_meter.mep_sequence == 0x77635B90  # nothing accepted


def test_sequence_window(link, guide_meter):
    base = 0x77635B90
    assert link.receive(frame(H("3F0001000000 0004"), base + 8), 1.0)[2] == 0x00  # +8 accepted
    replay = link.receive(frame(H("3F0001000000 0004"), base + 8), 1.0)  # the same number again
    assert replay[2:7] == b"\x0C" + (base + 9).to_bytes(4, "big")
    assert link.receive(frame(H("3F0001000000 0004"), base + 9 + 9), 1.0)[2] == 0x0C  # +9 refused
    wrapped = Meter(load_profile(overrides=GUIDE_METER[:1] + ["mep.sequence_number=0xFFFFFFFE"]))
    wrap_link = mep_protocol(wrapped, ManualClock())
    assert wrap_link.receive(frame(H("3F0001000000 0004"), 3), 1.0)[2] == 0x00  # across 2^32
    assert wrapped.mep_sequence == 4


def test_basic_key_reads_but_cannot_write_utility_tables(link, guide_meter):
    mbk = load_profile().key("mbk")[:16]
    read = link.receive(frame(H("300001 0200"), 0x77635B90, key=mbk), 1.0)
    assert read[2:5] == H("00 0018") and read[5:9] == b"NES "
    # the digest of the answer continues the request's, under the same key
    body = H("300001 0200") + (0x77635B90).to_bytes(4, "big")
    assert read[-8:] == OmaKey(mbk).digest(body + read[2:-8])
    write = link.receive(frame(H("4F0803 000000 0002") + b"XX", 0x77635B91, key=mbk), 1.0)
    assert write[2] == 0x03  # ISC: the MBK writes only BT07, ET50-ET52
    advanced = link.receive(frame(H("4F0803 000000 0002") + b"XX", 0x77635B92), 1.0)
    assert advanced[2] == 0x00
    assert guide_meter.table_bytes(2051, 0.0)[:2] == b"XX"


def test_secured_dialect_full_read_length_and_errors(link):
    seq = iter(range(0x77635B90, 0x77635B90 + 100))
    ok = link.receive(frame(H("300001 0018"), next(seq)), 1.0)
    assert ok[2:5] == H("00 0018") and len(ok) == 2 + 3 + 24 + 8  # no checksum byte
    assert link.receive(frame(H("300001 0010"), next(seq)), 1.0)[2] == 0x04  # too small a buffer
    assert link.receive(frame(H("300063 0200"), next(seq)), 1.0)[2] == 0x05  # no BT99
    assert link.receive(frame(H("3000"), next(seq)), 1.0)[2] == 0x01  # malformed
    assert link.receive(frame(H("20"), next(seq)), 1.0)[2] == 0x02  # no PSEM ident on MEP
    assert link.receive(frame(H("30004A 0200"), next(seq)), 1.0)[2] == 0x04  # BT74 > 476 bytes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_arbitrary_bytes_never_break_the_port(chunks):
    meter = Meter(load_profile(overrides=GUIDE_METER))
    link = mep_protocol(meter, ManualClock())
    for chunk in chunks:
        assert isinstance(link.receive(chunk, 1.0), bytes)
    assert link.receive(RETRY, 5.0) == RETRY_ANSWER  # after the time-out it answers properly
    assert meter.table_bytes(2051, 0.0)[:12] == b"UTIL-0000001"


def test_mep_port_over_tcp_with_meter_emu_run(tmp_path):
    ready = tmp_path / "ready.json"
    args = [sys.executable, "-m", "meter_emu", "run", "--optical", "off", "--mep",
            "tcp://127.0.0.1:0", "--mqtt", "off", "--ready-file", str(ready)]
    for item in GUIDE_METER:
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        ports = json.loads(ready.read_text())["ports"]
        assert set(ports) == {"mep"}
        host, port = ports["mep"][len("tcp://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            for request, answer in ((WRONG_SEQ, WRONG_SEQ_ANSWER), (RETRY, RETRY_ANSWER)):
                conn.sendall(request)
                got = b""
                while len(got) < len(answer):
                    got += conn.recv(1024)
                assert got == answer
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
