"""The MEP port: the MEP guide's worked frames byte for byte (key 16 x 0x01; reference/
osgp-app-layer.md section 11.1 and the derived RC4 vectors of 11.5), keys, sequence numbers,
malformed input, and a real TCP client against ``meter-emu run``; then, on a manual clock, the
alert sequence, paced answers, inter-character time-outs, MEP client 2, ET15's MEP download
entry and on-demand expiry (printed pages; tests/test_e2e_mep.py does the same over real ports)."""

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
from meter_emu.device import firmware
from meter_emu.device.meter import Meter
from meter_emu.ports.mep import inter_char_timeout, mep_protocol
from meter_emu.ports.mep.link import ALERT, MAX_WAITING
from meter_emu.profile import load_profile
from meter_emu.security import MepRc4, OmaKey
from meter_emu.tables import CATALOG, et, mep_devices


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
            "tcp://127.0.0.1:0", "--mqtt", "off", "--cnip", "off", "--ready-file", str(ready)]
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


# ---- timing, alerts and the two MEP clients (link level, a manual clock) -------------------

GEN4 = "identity.firmware_version=4.30.01"


def next_frame(link, apdu: bytes, key: bytes = b"\x01" * 16) -> bytes:
    """A request at the sequence number the meter expects."""
    return frame(apdu, link.session.meter.mep_sequence, key)


def test_alert_sequence_once_a_second_held_off_after_frames(link, guide_meter):
    # MEP p.17-18: "00 00" once per second while an ET13 alert condition lasts; p.21: held off
    # for one second after a received frame
    assert link.poll(0.0) == b"" and link.next_deadline() == 1.0  # checked once a second
    assert link.poll(1.0) == b""
    mep_devices.set_alert_flags(guide_meter, 1, 0.0, delta_data_alert=1)
    assert link.poll(1.5) == b""  # not yet time
    assert link.poll(2.0) == ALERT and link.next_deadline() == 3.0
    assert link.poll(3.0) == ALERT
    answer = link.receive(next_frame(link, H("3F0001000000 0004")), 3.3)
    assert answer[2] == 0x00 and ALERT not in answer[:2]  # an answer, not an alert
    assert link.next_deadline() == pytest.approx(4.3)
    assert link.poll(4.0) == b""  # held off
    assert link.poll(4.3) == ALERT
    mep_devices.set_alert_flags(guide_meter, 1, 0.0, delta_data_alert=0, reserved=1)
    assert link.poll(5.3) == b""  # the reserved bit is not an alert condition (MEP p.83)
    for name in mep_devices.ALERT_CONDITIONS:
        mep_devices.set_alert_flags(guide_meter, 1, 0.0, **{name: 1})
        assert mep_devices.alerting(guide_meter, 1, 0.0), name
        mep_devices.set_alert_flags(guide_meter, 1, 0.0, **{name: 0})
    assert not mep_devices.alerting(guide_meter, 1, 0.0)


def test_a_partial_frame_does_not_stop_the_alert(link, guide_meter):
    mep_devices.set_alert_flags(guide_meter, 1, 0.0, on_demand_request=1)
    assert link.receive(RETRY[:7], 1.0) == b""
    assert link.poll(2.0) == ALERT  # the half frame died long before
    assert link.receive(RETRY, 2.2) == RETRY_ANSWER


def test_alerts_go_to_their_own_mep_client():
    meter = Meter(load_profile(overrides=GUIDE_METER + [GEN4]))
    one, two = (mep_protocol(meter, ManualClock(), channel=c) for c in (1, 2))
    assert one.session.port.endswith(" mep") and two.session.port.endswith(" mep2")
    mep_devices.set_alert_flags(meter, 2, 0.0, scheduled_read_request=1)
    assert one.poll(5.0) == b"" and two.poll(5.0) == ALERT
    gen3 = Meter(load_profile(overrides=GUIDE_METER))
    assert not mep_devices.alerting(gen3, 2, 0.0)  # no client 2 before firmware 4.0


def test_paced_answers_leave_in_117_byte_segments(guide_meter):
    # MEP p.21: 117-byte segments 25 ms apart, no more than one request per 100 ms
    twin = Meter(load_profile(overrides=GUIDE_METER))
    unpaced = mep_protocol(twin, ManualClock())
    paced = mep_protocol(guide_meter, ManualClock(), paced=True)
    big = frame(H("3F0803 000000 008F"), 0x77635B90)  # ET03, 143 bytes: a 156-byte frame
    whole = unpaced.receive(big, 10.0)
    assert len(whole) == 156
    assert paced.receive(big, 10.0) == whole[:117]
    assert paced.next_deadline() == pytest.approx(10.025)
    assert paced.poll(10.02) == b""
    assert paced.poll(10.025) == whole[117:]
    two = frame(H("3F0001000000 0004"), 0x77635B91) + frame(H("3F0001000000 0004"), 0x77635B92)
    first = paced.receive(two, 10.05)  # 50 ms after the last request: waits its turn
    assert first == b"" and paced.next_deadline() == pytest.approx(10.1)
    assert paced.poll(10.1)[2] == 0x00
    assert paced.poll(10.15) == b"" and paced.poll(10.2)[2] == 0x00  # 100 ms later
    assert guide_meter.mep_sequence == 0x77635B93


def test_largest_answer_takes_five_segments(guide_meter):
    paced = mep_protocol(guide_meter, ManualClock(), paced=True)
    out = [paced.receive(frame(H("3F0803 000000 01D1"), 0x77635B90), 1.0)]  # 465 data bytes
    while paced.next_deadline() < 2.0:
        out.append(paced.poll(paced.next_deadline()))
    sizes = [len(part) for part in out if part]
    assert sizes == [117, 117, 117, 117, 10] and out[0][:2] == H("01DC")  # 476 + 2 bytes


def test_inter_character_time_out_serial_and_stream(guide_meter):
    # MEP p.21: at least one byte every 50 ms inside a frame; TCP and ptys get 0.5 s
    assert inter_char_timeout("/dev/ttyUSB0") == 0.05
    assert inter_char_timeout("pty") == inter_char_timeout("tcp://127.0.0.1:0") == 0.5
    serial = mep_protocol(guide_meter, ManualClock(), inter_char_timeout=0.05)
    assert serial.receive(WRONG_SEQ[:9], 1.0) == b""
    assert serial.receive(WRONG_SEQ[9:], 1.06) == b""  # 60 ms: the first half was dropped
    assert serial.receive(WRONG_SEQ, 1.2) == WRONG_SEQ_ANSWER
    stream = mep_protocol(guide_meter, ManualClock())
    assert stream.receive(WRONG_SEQ[:9], 2.0) == b""
    assert stream.receive(WRONG_SEQ[9:], 2.3) == WRONG_SEQ_ANSWER


def test_oversize_length_ignores_input_until_the_line_is_quiet(link, guide_meter):
    assert link.receive(H("01DD") + bytes(100), 1.0) == b""  # 477 > 476 (MEP p.8)
    assert link.receive(RETRY, 1.3) == b""  # still the same burst: ignored
    assert link.receive(RETRY, 1.9) == RETRY_ANSWER  # after 0.6 s of quiet
    garbage = H("01DC") + bytes(476)  # 476 bytes is a frame: it does not authenticate
    assert link.receive(garbage, 3.0) == H("0001 0B")
    assert guide_meter.mep_sequence == 0x77635B92


def test_a_flood_of_requests_is_bounded(guide_meter):
    paced = mep_protocol(guide_meter, ManualClock(), paced=True)
    flood = b"".join(frame(H("3F0001000000 0001"), 0x77635B90 + i) for i in range(40))
    paced.receive(flood, 1.0)
    answers = 1
    while paced.next_deadline() < 100:
        answers += bool(paced.poll(paced.next_deadline()))
    assert answers == MAX_WAITING


def test_et15_shows_the_pending_mep_download(meter, clock):
    # ET15 request type 7 "MEP download start (created internally as a result of EP41)"
    # (MEP p.91), transaction number and handle as EP41 gave them, result 0
    now = clock.now()
    image = firmware.build_image(b"PROGID01", "3.20.05", bytes(range(256)) * 3)
    for offset in range(0, len(image), firmware.PACKET_SIZE):
        firmware.write_packet(meter, offset, image[offset:offset + firmware.PACKET_SIZE])
    firmware.initialize_mep_download(meter, 0x1234, 1000, now)
    layout = CATALOG[et(15)].layout_for(meter)
    et15 = layout.parse(meter.table_bytes(et(15), now))
    entry = et15.request_queue[0]
    assert (entry.transaction_number, entry.device_handle, entry.request_type, entry.result) == (
        0x1234, 1000, 7, 0)
    assert et15.pointers == dict(write_pointer=1, read_pointer=0)
    raw = meter.table_bytes(et(15), now)
    assert raw[1:7] == H("3412 E803 07 00")  # UINT16s LSB first (MEP p.89-90)
    slot = mep_devices.mep_slot(meter, 1)
    mep_devices.register(meter, slot, now, handle=1000)
    mep_devices.post_request(meter, now, transaction_number=5, device_handle=1000,
                             request_type=mep_devices.BILLING_READ, targets=[slot])
    et15 = layout.parse(meter.table_bytes(et(15), now))
    assert [(e.transaction_number, e.request_type) for e in et15.request_queue[:2]] == [
        (5, 2), (0x1234, 7)]  # the download stays the newest entry
    assert et15.pointers == dict(write_pointer=2, read_pointer=0)


def test_on_demand_requests_expire_on_the_timer(meter, clock):
    # ET51 "On-demand Timeout" (30 s by default) ends a request as "no response" (MEP p.24-25)
    now = clock.now()
    slot = mep_devices.mep_slot(meter, 1)
    mep_devices.register(meter, slot, now, handle=1000)
    assert mep_devices.next_due(meter) is None
    mep_devices.post_request(meter, now, transaction_number=9, device_handle=1000,
                             request_type=mep_devices.BILLING_READ, targets=[slot])
    assert mep_devices.alerting(meter, 1, now)
    assert mep_devices.next_due(meter) == pytest.approx(meter.utc_seconds(now + 30))
    mep_devices.run_due(meter, now + 29)
    assert mep_devices.alerting(meter, 1, now + 29)
    mep_devices.run_due(meter, now + 30)
    entry = CATALOG[et(15)].layout_for(meter).parse(meter.table_bytes(et(15), now)).request_queue[0]
    assert entry.result == mep_devices.NO_RESPONSE
    assert not mep_devices.alerting(meter, 1, now + 30) and mep_devices.next_due(meter) is None


def test_meter_timer_expires_on_demand_requests(meter, clock):
    now = clock.now()
    slot = mep_devices.mep_slot(meter, 1)
    mep_devices.register(meter, slot, now, handle=1000)
    mep_devices.post_request(meter, now, transaction_number=9, device_handle=1000,
                             request_type=mep_devices.BILLING_READ, targets=[slot])
    assert meter.next_deadline() <= now + 30
    meter.advance(now + 30)
    assert not mep_devices.alerting(meter, 1, now + 30)


def test_et70_names_the_mep_client():
    # ET70.142 "Current Comm Channel Index": 1 or 2, the MEP port in use (MEP p.23)
    meter = Meter(load_profile(overrides=GUIDE_METER + [GEN4]))
    for channel in (1, 2):
        link = mep_protocol(meter, ManualClock(), channel=channel)
        answer = link.receive(next_frame(link, H("3F0846 00008E 0001")), 1.0)
        assert answer[2:6] == b"\x00\x00\x01" + bytes([channel])
    assert mep_devices.channel_in_service() == 1
