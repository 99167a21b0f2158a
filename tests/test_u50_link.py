"""The U50/MIP link (phy/u50.py): every packet kind byte for byte (lower-layers.md §10.2-10.3,
bytes from the §11.3 capture), escaping, extended length, duplicates, CpFail, ACK timeout,
CpMsgReject, resync, piggybacked ACKs, the partial-frame timeout; a noisy serial line between
a host link and an NI link; arbitrary input bytes (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.phy.u50 import (CP_FAIL, CP_MSG_REJECT, CP_NULL, Message, U50Link, code_packet,
                               message_packet)

H = bytes.fromhex


def pair(**options):
    return U50Link("host", name="host", **options), U50Link("ni", name="ni", **options)


def shuttle(a: U50Link, b: U50Link, now: float, rounds: int = 10) -> None:
    """Carry bytes both ways until both are quiet."""
    for _ in range(rounds):
        out_a, out_b = a.take_output(), b.take_output()
        if not out_a and not out_b:
            return
        if out_a:
            b.feed(out_a, now)
        if out_b:
            a.feed(out_b, now)


def codes(data: bytes) -> list[tuple[int, bool, int, int]]:
    """The code packets in ``data`` (seq, ack, code, param), skipping message bodies."""
    probe = U50Link("ni")
    found = []
    original = probe._code_packet
    probe._code_packet = lambda seq, ack, code, param, now: (
        found.append((seq, ack, code, param)), original(seq, ack, code, param, now))
    probe.feed(data, 0.0)
    return found


# ---- packet formats -----------------------------------------------------------------------


def test_code_packets_match_the_capture():  # §11.3
    assert code_packet(0, False, 7) == H("7e07007b")          # CpNiResync
    assert code_packet(0, True, CP_NULL) == H("7e100072")     # CpNull + ACK
    assert code_packet(1, False, 2, 1) == H("7e22015f")       # CpMsg seq 1
    assert code_packet(3, False, 6, 0xD1) == H("7e66d14b")    # CpNiCmdShort D1 seq 3
    assert code_packet(4, True, 2, 1) == H("7e9201ef")        # CpMsg + ACK seq 4
    assert code_packet(0, False, 6, 0xE0) == H("7e06e09c")    # CpNiCmdShort E0


def test_message_packets_match_the_capture():  # §11.3
    assert message_packet(0x50, H("000f")) == H("0350000f9e")
    assert message_packet(0xD1) == H("01d12e")
    assert message_packet(0xE0, H("1ea00100")) == H("05e01ea001005c")
    nid = message_packet(0x16, H("700107") + bytes(11) + H("2d8000000c0ffe"))
    assert nid == H("1616700107") + bytes(11) + H("2d8000000c0ffe96")


def test_7e_is_doubled_everywhere_and_undone_on_receipt():
    # 0x7D payload bytes make the length byte 0x7E; a payload 7E; a checksum that is 7E
    for payload in (bytes(0x7D), b"\x7e\x01\x7e", H("00"), bytes([0x7E] * 5)):
        wire = message_packet(0x1A, payload)
        body = bytes([1 + len(payload), 0x1A]) + payload
        body += bytes([-sum(body) & 0xFF])
        assert wire == body.replace(b"\x7e", b"\x7e\x7e")
        host, ni = pair()
        host.send(0x1A, payload)
        data = host.take_output()
        for i in range(len(data)):  # any split of the byte stream
            receiver = U50Link("ni")
            receiver.feed(data[:i], 0.0)
            receiver.feed(data[i:], 0.0)
            assert receiver.take_messages() == [Message(0x1A, payload)]
    body = bytes([2, 0x01, 0x7F])
    assert (-sum(body)) & 0xFF == 0x7E
    assert message_packet(0x01, b"\x7f") == body + b"\x7e\x7e"


def test_extended_length():
    payload = bytes(range(256)) + bytes(44)  # 300 bytes: length 301 = FF 01 2D
    wire = message_packet(0x1A, payload)
    assert wire[:4] == H("ff012d1a")
    host, ni = pair()
    host.send(0x1A, payload)
    shuttle(host, ni, 0.0)
    assert ni.take_messages() == [Message(0x1A, payload)]
    assert host.idle


# ---- reliability --------------------------------------------------------------------------


def test_sequence_runs_1_to_7_and_wraps():
    host = U50Link("host")
    seqs = []
    for n in range(9):
        host.send(0x12, bytes([n]))
        seqs.append(codes(host.take_output()[:4])[0][0])
        host.feed(code_packet(0, True, CP_NULL), 0.0)
    assert seqs == [1, 2, 3, 4, 5, 6, 7, 1, 2]


def test_duplicate_is_acked_again_but_delivered_once():
    host, ni = pair()
    host.send(0x12, H("0102030405"))
    wire = host.take_output()
    ni.feed(wire, 0.0)
    assert ni.take_output() == code_packet(0, True, CP_NULL)
    ni.feed(wire, 0.1)  # the same sequence number again: our ACK was lost
    assert ni.take_output() == code_packet(0, True, CP_NULL)
    assert ni.take_messages() == [Message(0x12, H("0102030405"))]
    assert ni.stats["duplicates"] == 1


def test_bad_checksum_gets_cpfail_and_the_sender_repeats():
    host, ni = pair()
    host.send(0x12, H("aabbcc"))
    wire = bytearray(host.take_output())
    wire[-1] ^= 0x01
    ni.feed(bytes(wire), 0.0)
    assert ni.take_output() == code_packet(0, False, CP_FAIL)
    assert ni.take_messages() == []
    host.feed(code_packet(0, False, CP_FAIL), 0.01)
    repeat = host.take_output()
    assert repeat == bytes(wire[:-1]) + bytes([wire[-1] ^ 0x01])  # same seq, same bytes
    ni.feed(repeat, 0.02)
    assert ni.take_messages() == [Message(0x12, H("aabbcc"))]
    host.feed(ni.take_output(), 0.03)
    assert host.idle and host.stats["retries"] == 1


def test_cpfail_after_a_delivered_copy_does_not_deliver_twice():
    host, ni = pair()
    host.send(0x12, H("01"))
    wire = host.take_output()
    ni.feed(wire, 0.0)          # delivered; its ACK is lost
    ni.take_output()
    broken = wire[:-1] + bytes([wire[-1] ^ 0xFF])
    ni.feed(broken, 0.3)        # the repeat arrives broken: CpFail
    assert ni.take_output() == code_packet(0, False, CP_FAIL)
    ni.feed(wire, 0.31)         # the next repeat is whole: still the same message
    assert ni.take_messages() == [Message(0x12, H("01"))]
    assert ni.take_output() == code_packet(0, True, CP_NULL)


def test_ack_timeout_repeats_then_gives_up():
    host = U50Link("host", ack_timeout=0.3, max_retries=2)
    host.send(0x12, H("0102"))
    first = host.take_output()
    assert host.next_deadline() == 0.3
    host.poll(0.29)
    assert host.take_output() == b""
    host.poll(0.3)
    assert host.take_output() == first
    host.poll(0.6)
    assert host.take_output() == first
    host.poll(0.9)
    assert host.take_output() == b"" and host.idle
    assert host.stats["given_up"] == 1 and host.stats["ack_timeouts"] == 3


def test_full_receive_queue_rejects_until_the_application_takes_messages():
    host, ni = pair(rx_capacity=1)
    host.send(0x12, H("01"))
    host.send(0x12, H("02"))
    shuttle(host, ni, 0.0)
    assert ni.stats["rejects_sent"] == 1 and host.stats["rejects_received"] == 1
    assert codes(code_packet(0, False, CP_MSG_REJECT))[0][2] == CP_MSG_REJECT
    host.poll(1.0)  # still full: rejected again
    shuttle(host, ni, 1.0)
    assert ni.stats["rejects_sent"] == 2
    assert ni.take_messages() == [Message(0x12, H("01"))]
    host.poll(2.0)
    shuttle(host, ni, 2.0)
    assert ni.take_messages() == [Message(0x12, H("02"))]
    assert host.idle


def test_resync_restarts_sequence_numbers():
    host, ni = pair()
    for n in range(3):
        host.send(0x12, bytes([n]))
        shuttle(host, ni, 0.0)
    ni.take_messages()
    host.resync(1.0)
    assert host.take_output() == H("7e07007b")
    ni.feed(H("7e07007b"), 1.0)
    assert ni.take_messages() == [Message(None)]
    assert ni.take_output() == H("7e100072")   # CpNull + ACK (§11.3)
    ni.send(0x50, H("000f"), reliable=False)
    assert ni.take_output()[:4] == H("7e22015f")  # seq 1 again
    host.send(0x12, H("00"))  # same payload and seq 1 as before the resync: new, delivered
    shuttle(host, ni, 1.0)
    assert ni.take_messages() == [Message(0x12, H("00"))]


def test_ack_rides_on_the_next_message_when_one_is_waiting():
    host, ni = pair()
    ni.send(0x1A, H("01"))       # in flight
    ni.send(0x1A, H("02"))       # waits for the first's ACK
    first = ni.take_output()
    host.feed(first, 0.0)
    ack = host.take_output()
    host.send(0x12, H("09"))     # the host's own message, with nothing to ACK
    msg = host.take_output()
    ni.feed(ack[:4] + msg, 0.01)  # ACK of the first, then a host message
    out = ni.take_output()
    assert codes(out)[0] == (2, True, 2, 1)  # the second message carries the ACK: no CpNull
    assert len(codes(out)) == 1


def test_partial_message_times_out_and_the_repeat_is_delivered_once():
    host, ni = pair()
    host.send(0x12, bytes(range(1, 30)))
    wire = host.take_output()
    ni.feed(wire[:10], 0.0)
    assert ni.next_deadline() == 0.1
    ni.poll(0.1)
    assert ni.stats["partial_timeouts"] == 1
    host.poll(0.3)  # no ACK: repeated
    ni.feed(host.take_output(), 0.3)
    assert ni.take_messages() == [Message(0x12, bytes(range(1, 30)))]


def test_short_commands_and_receive_error_expansion():
    ni = U50Link("ni")
    ni.feed(code_packet(1, False, 6, 0xE0), 0.0)
    assert ni.take_messages() == [Message(0xE0, b"", short=True)]
    assert ni.take_output() == b""  # answered by the status, not ACKed (§11.3)
    host = U50Link("host")
    host.feed(code_packet(1, False, 6, 0x31), 0.0)
    assert host.take_messages() == [Message(0x31, bytes(4), short=True)]
    assert host.take_output() == code_packet(0, True, CP_NULL)


# ---- a noisy serial line ------------------------------------------------------------------


def noisy(data: bytes, rng: random.Random, stats: dict) -> bytes:
    """Damage a chunk: drop it, cut it, change a byte, or add garbage before or after.
    Garbage has no 7E (a 7E starts a packet by definition; a damaged byte may become one)."""
    roll = rng.random()
    if roll < 0.08:
        stats["dropped"] += 1
        return b""
    if roll < 0.14 and len(data) > 1:
        stats["cut"] += 1
        return data[:rng.randrange(1, len(data))]
    if roll < 0.20:
        stats["flipped"] += 1
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ rng.randrange(1, 256)]) + data[i + 1:]
    if roll < 0.26:
        stats["garbage"] += 1
        junk = bytes(rng.choice([b for b in range(256) if b != 0x7E])
                     for _ in range(rng.randrange(1, 12)))
        return junk + data if rng.random() < 0.5 else data + junk
    return data


def test_noisy_line_delivers_every_message_once_in_order():
    rng = random.Random(20261121)
    host, ni = pair(ack_timeout=0.05, max_retries=50)
    sent_down = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
                 for _ in range(150)]
    sent_up = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
               for _ in range(150)]
    for payload in sent_down:
        host.send(0x12, payload)
    for payload in sent_up:
        ni.send(0x1A, payload)
    got_down, got_up = [], []
    stats = dict.fromkeys(("dropped", "cut", "flipped", "garbage"), 0)
    now = 0.0
    while now < 200 and (len(got_down) < 150 or len(got_up) < 150 or not host.idle
                         or not ni.idle):
        now += 0.01
        host.poll(now)
        ni.poll(now)
        down, up = host.take_output(), ni.take_output()
        if down:
            ni.feed(noisy(down, rng, stats), now)
        if up:
            host.feed(noisy(up, rng, stats), now)
        got_down += [m.payload for m in ni.take_messages()]
        got_up += [m.payload for m in host.take_messages()]
    assert got_down == sent_down
    assert got_up == sent_up
    assert min(stats.values()) > 20  # every kind of damage happened, many times
    assert host.stats["given_up"] == ni.stats["given_up"] == 0
    assert ni.stats["cp_fails_sent"] + host.stats["cp_fails_sent"] > 0
    assert ni.stats["duplicates"] + host.stats["duplicates"] > 0


# ---- arbitrary input ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["ni", "host"]))
def test_arbitrary_bytes_never_raise(data, role):
    link = U50Link(role)
    link.feed(data, 0.0)
    link.poll(1.0)
    link.take_messages()
    out = link.take_output()
    for packet in (out[i:i + 4] for i in range(0, len(out), 4)):  # only code packets go out
        assert packet[0] == 0x7E and sum(packet) & 0xFF == 0


no_sync = st.binary(max_size=60).map(lambda b: b.replace(b"\x7e", b""))


@settings(max_examples=300, deadline=None)
@given(no_sync, no_sync, st.binary(max_size=300), st.integers(1, 7))
def test_message_inside_garbage_is_delivered_exactly_once(before, after, payload, seq):
    wire = code_packet(seq, False, 2, 1) + message_packet(0x12, payload)
    ni = U50Link("ni")
    ni.feed(before + wire + after, 0.0)
    ni.feed(before + wire + after, 0.01)  # the sender's repeat: a duplicate
    assert ni.take_messages() == [Message(0x12, payload)]
