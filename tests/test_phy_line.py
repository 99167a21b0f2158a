"""The simulated power line (phy/line.py) with the real modem: collisions, the CSMA MAC among
stations, signal strength and margin, noise, the alternate carrier. Seeded throughout.

Levels: tx 122 dBuV, so a link of A dB delivers 122 - A dBuV; the AWGN power in the symbol
bandwidth is floor + 10 log10(3600) = floor + 35.56 dB (phy/modem.awgn), so the SNR a test sets
is ``level - floor - 35.56``."""

from __future__ import annotations

import math
import random

import pytest

from meter_emu.lon.config import CONFIGURED, Domain, NodeConfig
from meter_emu.lon.frame import Apdu, Lpdu, Npdu, SubnetNode, decode, encode
from meter_emu.lon.node import Node, Service
from meter_emu.phy.line import Noise, PowerLine
from tests.conftest import CompletionsApp

BAND_DB = 10 * math.log10(3600)


def frame(tag: int = 0, *, priority=False, alt=False, delta=0, size=20) -> bytes:
    apdu = bytes((0x30, tag & 0xFF)) + bytes(size)
    return encode(Lpdu(Npdu(1, 2, SubnetNode(1, 3), Apdu(apdu)), priority, alt, delta))


class Ports:
    """``count`` ports on one line; each records (raw, info) of what it decodes."""

    def __init__(self, count=3, *, snr_db=30.0, attenuation_db=50.0, noise=None, seed=1):
        noise = noise or Noise()
        noise.floor_dbuv_hz = 122 - attenuation_db - BAND_DB - snr_db
        self.line = PowerLine(noise=noise, seed=seed, default_attenuation_db=attenuation_db)
        self.heard = [[] for _ in range(count)]
        for index in range(count):
            self.line.attach_port(lambda raw, now, info, i=index: self.heard[i].append(
                (raw, info)))
        self.on_air = []
        self.line.taps.append(lambda raw, sender, start, end: self.on_air.append(
            (sender, start, end, raw)))


def test_a_frame_gets_through_with_strength_tx_level_minus_attenuation_and_its_margin():
    ports = Ports(2, snr_db=20.0, attenuation_db=57.0)
    assert ports.line.send(0, frame(1))
    ports.line.run(1.0)
    ((raw, info),) = ports.heard[1]
    assert raw == frame(1)
    assert info.strength_db == pytest.approx(122 - 57, abs=1.0)
    assert info.margin_db == pytest.approx(20.0, abs=1.0)
    assert not info.alt_path
    assert ports.line.stats[0].sent == 1 and ports.line.stats[1].received == 1
    (sender, start, end, on_air), = ports.on_air
    assert end - start == pytest.approx(ports.line.modem.airtime(len(raw)))


def test_a_weak_link_loses_frames_and_reports_a_low_margin_a_lost_one_is_missed():
    """At 4 dB SNR a 31-byte frame's BCH(255,239) t=2 blocks see about 2.5 errors each
    (uncoded BER Q(sqrt(2*2.51)) = 0.0125): roughly half the frames fail; at -10 dB and
    below nothing can decode (the line counts them missed without demodulating)."""
    ports = Ports(3, snr_db=4.0)
    ports.line.set_attenuation(0, 2, 50.0 + 4.0 + 20.0)  # 16 dB below the noise
    for k in range(60):
        ports.line.send(0, frame(k))
        ports.line.run(0.5)
    stats = ports.line.stats[1]
    assert 10 <= len(ports.heard[1]) <= 50
    assert stats.received == len(ports.heard[1])
    assert stats.crc_errors + stats.missed == 60 - stats.received
    assert all(info.margin_db < 7.0 for _, info in ports.heard[1])
    assert ports.heard[2] == [] and ports.line.stats[2].missed == 60


def test_two_senders_bypassing_the_mac_collide_and_neither_decodes():
    ports = Ports(3)
    ports.line.transmit_now(0, frame(1))
    ports.line.transmit_now(1, frame(2))
    ports.line.run(1.0)
    assert ports.heard[2] == []  # equal levels on one carrier: 0 dB signal-to-interference
    assert ports.line.stats[2].crc_errors + ports.line.stats[2].missed == 2
    assert ports.line.stats[0].collisions == ports.line.stats[1].collisions == 1
    assert ports.heard[0] == [] and ports.heard[1] == []  # half duplex: busy sending


def test_a_much_stronger_colliding_frame_is_captured():
    ports = Ports(3)
    ports.line.set_attenuation(1, 2, 80.0)  # 30 dB weaker at port 2
    ports.line.transmit_now(0, frame(1))
    ports.line.transmit_now(1, frame(2))
    ports.line.run(1.0)
    assert [raw for raw, _ in ports.heard[2]] == [frame(1)]


def test_with_the_mac_two_simultaneous_senders_both_get_through_unless_same_slot():
    """Two stations queue a frame at the same instant, 320 times. Delta backlog 0 keeps the
    backlog at 1: each picks one of 16 slots; only the same slot collides (a slot is longer
    than carrier sense takes), so collisions are binomial(320, 1/16): mean 20, sd 4.33; the
    bounds are mean +- 4.5 sd. Every other round, the later station senses the first and
    defers exactly once (one backoff), and both frames arrive."""
    ports = Ports(3, seed=5)
    rounds, collided = 320, 0
    for k in range(rounds):
        before = len(ports.heard[2])
        ports.line.send(0, frame(2 * k))
        ports.line.send(1, frame(2 * k + 1))
        ports.line.run(1.0)
        got = len(ports.heard[2]) - before
        assert got in (0, 2)
        collided += got == 0
    stats = ports.line.stats
    assert 20 - 4.5 * 4.33 <= collided <= 20 + 4.5 * 4.33
    assert stats[0].collisions == stats[1].collisions == collided
    assert stats[0].backoffs + stats[1].backoffs == rounds - collided
    assert stats[2].received == 2 * (rounds - collided)
    assert ports.line.mac(0).backlog == ports.line.mac(1).backlog == 1


def test_priority_frames_win_the_priority_slot():
    ports = Ports(4, seed=2)
    ports.line.mac(1).priority_slot = 3
    ports.line.mac(2).priority_slot = 2
    for k in range(30):
        ports.line.send(0, frame(k))  # ordinary
        ports.line.send(1, frame(k, priority=True))  # slot 3
        ports.line.send(2, frame(k + 1, priority=True))  # slot 2: first
        ports.line.run(2.0)
    order = [sender for sender, *_ in ports.on_air]
    assert order == [2, 1, 0] * 30
    assert ports.line.stats[3].received == 90
    # slot 2 starts one Beta2 after Beta1: the second frame of a round starts right there
    timing = ports.line.timing
    (_, _, end, _), (_, start, _, _) = ports.on_air[0], ports.on_air[1]
    assert start - end == pytest.approx(timing.beta1_tx + 2 * timing.beta2, abs=1e-9)


def test_backlog_follows_delta_backlog_on_the_line():
    ports = Ports(2)
    line, mac = ports.line, ports.line.mac(1)
    gap = line.modem.airtime(len(frame())) + 0.01  # the next frame before any idle decay

    def send(delta, tag=0):
        line.transmit_now(0, frame(tag, delta=delta))
        line.run(gap)

    send(5)
    assert mac.backlog == 6  # 1 + 5, from the frame it decoded
    send(0)
    assert mac.backlog == 5  # a delta-0 frame: one less
    line.run(16 * line.timing.beta2 * 2.5)  # idle: one step per 16 slots
    send(0)
    assert mac.backlog == 2  # 5 - 2 (idle) - 1 (delta 0)
    for k in range(13):  # 2 + 13 x 5 > 63
        send(5, k)
    assert mac.backlog == 63
    assert line.stats[1].backlog_overflows == 1
    assert line.mac(0).backlog == 63  # the sender counts its own frames too


def test_a_tone_on_the_carrier_and_impulsive_and_mains_noise_raise_fer():
    """At 20 dB SNR no frame is lost (uncoded BER Q(sqrt(200)) < 1e-40). Each kind of noise
    costs frames: a tone at the signal's level on 86 kHz, 100 impulses/s of 1 ms at 90 dBuV
    (25 dB above the 65 dBuV signal), bursts at 85 dBuV twice per mains cycle."""
    def received(noise):
        ports = Ports(2, snr_db=20.0, attenuation_db=57.0, noise=noise, seed=9)
        for k in range(40):
            ports.line.send(0, frame(k))
            ports.line.run(0.5)
        return len(ports.heard[1])
    assert received(Noise()) == 40
    assert received(Noise(interferers=[(86_000.0, 65.0)])) <= 36
    assert received(Noise(impulses_per_s=100, impulse_dbuv=90, impulse_s=1e-3)) <= 20
    assert received(Noise(mains_sync_dbuv=85.0)) <= 20
    # a tone off both carriers (9 kHz from each) costs nothing
    assert received(Noise(interferers=[(95_000.0, 90.0)])) == 40


def test_a_tone_on_the_primary_carrier_leaves_the_secondary_free():
    ports = Ports(2, snr_db=20.0, noise=Noise(interferers=[(86_000.0, 82.0)]))
    for k in range(10):
        ports.line.send(0, frame(k))
        ports.line.send(0, frame(k, alt=True))
        ports.line.run(1.0)
    assert [raw for raw, _ in ports.heard[1]] == [frame(k, alt=True) for k in range(10)]
    assert all(info.alt_path for _, info in ports.heard[1])


def test_the_last_retries_go_on_the_alternate_carrier():
    """An ACKD message nobody acknowledges: 1 + 3 retries; the node sets the alternate-path
    bit on the last ones (lon/node.py ALT_PATH_COUNT), the line sends those on 75 kHz and the
    receiver's LinkInfo says so."""
    ports = Ports(2)
    app = CompletionsApp()
    node = Node(NodeConfig(bytes(6), [Domain(b"\x01", 1, 2)], state=CONFIGURED), app,
                rng=random.Random(1), name="sender")
    index = ports.line.attach(node)
    handle = node.send(b"\x30\x01", SubnetNode(1, 99), ports.line.now, service=Service.ACKD)
    assert ports.line.run_until(lambda: handle in app.done, 30.0)
    assert not app.done[handle].ok
    heard = [(decode(raw).alt_path, info.alt_path) for raw, info in ports.heard[0]]
    assert [alt for alt, _ in heard] == [False, False, True, True]
    assert all(bit == carrier for bit, carrier in heard)
    assert ports.line.stats[index].sent == 4


def test_a_node_gets_only_frames_it_takes_and_bad_frames_are_refused():
    ports = Ports(1)
    nodes = []
    for domain in (b"\x01", b""):  # frame() is to 1/3 in the zero-length domain
        node = Node(NodeConfig(bytes(6), [Domain(domain, 1, 3)], state=CONFIGURED),
                    CompletionsApp(), rng=random.Random(1))
        nodes.append((node, ports.line.attach(node)))
    ports.line.send(0, frame(7))
    ports.line.run(1.0)
    (other, other_index), (ours, our_index) = nodes
    assert other.stats["received"] == 0 and ports.line.stats[other_index].overheard == 1
    assert ours.stats["received"] == 1 and ports.line.stats[our_index].received == 1
    assert not ports.line.send(0, frame(1)[:-1] + b"\x00")  # bad CRC
    assert not ports.line.send(0, b"\x01\x02")
    ports.line.run(1.0)
    assert len(ports.on_air) == 1


def test_same_seed_same_line():
    def trace(seed):
        ports = Ports(3, snr_db=5.0, seed=seed)
        for k in range(20):
            ports.line.send(0, frame(k))
            ports.line.send(1, frame(k + 100))
            ports.line.run(1.0)
        return ports.on_air, [len(h) for h in ports.heard], ports.line.stats
    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_garbage_on_the_line_hurts_nobody():
    """Random bytes sent through the MAC are refused; put on air bypassing it, they reach
    the port only if they carry a valid CRC (they do not) and never raise; the line then
    carries a good frame as before."""
    ports = Ports(2)
    node = Node(NodeConfig(bytes(6), [Domain(b"", 1, 3)], state=CONFIGURED), CompletionsApp(),
                rng=random.Random(1))
    ports.line.attach(node)
    rng = random.Random(4)
    for _ in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        assert not ports.line.send(0, junk)
        ports.line.transmit_now(0, junk)
        ports.line.run(0.5)
    assert ports.heard[1] == [] and node.stats["received"] == 0
    assert ports.line.send(0, frame(1))
    ports.line.run(1.0)
    assert [raw for raw, _ in ports.heard[1]] == [frame(1)] and node.stats["received"] == 1
