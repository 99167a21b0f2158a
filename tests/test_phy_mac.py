"""The CSMA MAC of one station (phy/mac.py) on its own: slots, window, backlog (lower-layers.md
section 7). The MAC on a line with other stations is in tests/test_phy_line.py."""

from __future__ import annotations

import math
import random

import pytest

from meter_emu.lon.frame import Apdu, Lpdu, Npdu, SubnetNode, encode
from meter_emu.phy.mac import MAX_QUEUE, Mac, MacTiming

T = MacTiming()


def frame(priority=False, alt=False, delta=1, tag=0) -> bytes:
    return encode(Lpdu(Npdu(1, 2, SubnetNode(1, 3), Apdu(bytes((0x30, tag)))), priority, alt,
                       delta))


def test_timing_is_pl20_in_a_band_bit_times():
    bit = 1 / 3600
    assert T.beta1_rx == pytest.approx(17.5 * bit)  # minimum inter-packet gap
    assert T.beta1_tx == pytest.approx((17.5 + 1.6) * bit)  # + receive end delay: one grid
    assert T.detect == pytest.approx(7.3 * bit)  # receive start delay
    assert T.beta2 > T.detect  # a slot is longer than carrier sense takes
    assert (T.priority_slots, T.wbase, T.max_backlog) == (8, 16, 63)


def test_sender_and_receivers_share_the_slot_grid():
    sender, receiver = Mac(T), Mac(T)
    sender.channel_idle(1.0, own=True)
    receiver.channel_idle(1.0, own=False)
    assert sender.grid == pytest.approx(receiver.grid)


def test_backlog_follows_delta_backlog_clamped_with_overflows_counted():
    mac = Mac(T)
    assert mac.backlog == 1
    mac.frame_done(5)
    assert mac.backlog == 6
    mac.frame_done(0)  # a frame with delta 0: one less
    assert mac.backlog == 5
    mac.frame_done(40)
    mac.frame_done(40)  # 85 > 63
    assert (mac.backlog, mac.stats.backlog_overflows) == (63, 1)
    for _ in range(100):
        mac.frame_done(0)
    assert mac.backlog == 1  # never below 1


def test_backlog_decays_one_step_per_16_idle_slots():
    mac = Mac(T)
    mac.frame_done(9)  # 10
    mac.channel_idle(0.0, own=False)
    period = T.wbase * T.beta2
    mac.decay(mac.decay_from + 3 * period + period / 2)
    assert mac.backlog == 7
    mac.decay(mac.decay_from + 100 * period)
    assert mac.backlog == 1


def test_a_priority_frame_goes_in_its_own_priority_slot():
    for slot in (1, 4, 8):
        mac = Mac(T, random.Random(1), priority_slot=slot)
        mac.channel_idle(2.0, own=False)
        mac.enqueue(frame(priority=True))
        assert mac.plan(2.0) == pytest.approx(mac.grid + (slot - 1) * T.beta2)


def test_ordinary_frames_pick_a_uniform_slot_of_a_16_x_backlog_window():
    """Backlog 2: a 32-slot window, 6400 draws. Each slot's count is
    binomial(6400, 1/32): mean 200, sd 13.9; all within 200 +- 6 sd (a false alarm has
    probability < 1e-7 over the 32 slots)."""
    rng = random.Random(11)
    counts = [0] * 32
    for _ in range(6400):
        mac = Mac(T, rng)
        mac.frame_done(1)  # backlog 2
        mac.channel_idle(0.0, own=False)
        mac.enqueue(frame())
        when = mac.plan(0.0)
        slot = (when - mac.grid - T.priority_slots * T.beta2) / T.beta2
        assert slot == pytest.approx(round(slot), abs=1e-9)
        counts[round(slot)] += 1
    sd = math.sqrt(6400 * (1 / 32) * (31 / 32))
    assert all(abs(c - 200) < 6 * sd for c in counts), counts


def test_a_frame_queued_on_an_idle_channel_waits_for_a_slot_boundary():
    mac = Mac(T, random.Random(3))
    mac.channel_idle(0.0, own=False)
    now = 5.0  # long after the window
    mac.enqueue(frame())
    when = mac.plan(now)
    # a new cycle from the next slot boundary: its priority slots, then the window
    assert now + T.priority_slots * T.beta2 <= when
    assert when < now + (T.priority_slots + T.wbase + 1) * T.beta2
    slots = (when - mac.grid) / T.beta2
    assert slots == pytest.approx(round(slots))
    assert mac.backlog == 1


def test_defer_counts_a_backoff_and_forgets_the_slot():
    mac = Mac(T, random.Random(3))
    mac.enqueue(frame())
    assert mac.plan(0.0) is not None
    mac.defer()
    assert (mac.attempt, mac.stats.backoffs) == (None, 1)


def test_queue_orders_priority_first_and_is_bounded():
    mac = Mac(T)
    mac.enqueue(frame(tag=1))
    mac.enqueue(frame(priority=True, tag=2))
    mac.enqueue(frame(tag=3))
    mac.enqueue(frame(priority=True, tag=4))
    assert [q.raw for q in mac.queue] == [frame(priority=True, tag=2),
                                          frame(priority=True, tag=4),
                                          frame(tag=1), frame(tag=3)]
    head = mac.start(0.0, 0.1)
    assert head.priority and mac.busy_until == 0.1 and mac.stats.sent == 1
    assert mac.plan(0.05) is None  # transmitting: no plan
    while len(mac.queue) < MAX_QUEUE:
        mac.enqueue(frame())
    assert not mac.enqueue(frame()) and mac.stats.dropped == 1


def test_alt_path_and_delta_are_read_from_the_l2_header():
    mac = Mac(T)
    mac.enqueue(frame(alt=True, delta=7))
    item = mac.queue[0]
    assert (item.alt_path, item.priority, item.delta_backlog) == (True, False, 7)
