"""The load profile recorder (metering/recorder.py) and its ring images (BT64..BT67, ET21,
BT63), read back the way a head-end does: BT63 and ET21 through ``Meter.read_table``, then
partial reads of BT64 at the offsets the Optical Port guide's recipes give (OPG p.31).

Most tests call ``recorder.run_due`` at each interval end with the registers set directly (the
engine's ``source_value`` reads them; no current is injected, so the engine adds nothing); the
engine tests at the end let ``Meter.advance`` drive the recorder from injected quantities."""

from __future__ import annotations

import copy
import logging
import struct

import pytest
from conftest import MK, LinkClient, Procedures

from meter_emu.clock import ManualClock
from meter_emu.device.access import Key
from meter_emu.device.alarms import ALARMS
from meter_emu.device.meter import Meter
from meter_emu.metering import quantities, recorder
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import Profile, load_profile
from meter_emu.store import StateStore, atomic_write
from meter_emu.tables import bt, et
from meter_emu.tables import load_profile as lp

POWER_FAIL = 2  # extended status common flag bit 1 (OPG p.36-37)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86_400
Q = 900  # 15-minute intervals (the default profile)
BLOCK = 5 + 12 + 96 * 19  # End Time, simple status SET(12), 96 intervals of 3 + 4 x 4 bytes
HEADER, RECORD = 17, 19
BP04, BP05, EP11 = 4, 5, 2048 + 11


def meter_with(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=list(overrides)))


def u16(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 2], "little")


def u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 4], "little")


def read(meter, table_id: int, now: float, offset: int | None = None,
         count: int | None = None) -> bytes:
    if offset is None:
        return meter.read_table(table_id, Key.MK, now)
    return meter.read_table(table_id, Key.MK, now, offset, count)


def bt63(meter, now: float, data_set: int = 0) -> dict:
    raw = read(meter, bt(63), now)[13 * data_set:13 * data_set + 13]
    return dict(flags=raw[0], valid_blocks=u16(raw, 1), last_block=u16(raw, 3),
                sequence=u32(raw, 5), unread=u16(raw, 9), valid_intervals=u16(raw, 11))


def interval(image: bytes, block: int, index: int, channels: int = 4) -> tuple[bytes, list]:
    """(extended status bytes, channel values) of one interval of a default-geometry image."""
    status_size = channels // 2 + 1
    offset = block * BLOCK + HEADER + index * (status_size + 4 * channels)
    status = image[offset:offset + status_size]
    values = struct.unpack_from(f"<{channels}i", image, offset + status_size)
    return status, list(values)


def record(meter, start: int, count: int, step: int = Q, wh_per_interval: int = 100,
           base: int = 1000) -> None:
    """``count`` intervals from ``start``: before the k-th interval end Fwd Wh is
    base + wh_per_interval * k and Rev Wh is k."""
    recorder.run_due(meter, start)
    for k in range(1, count + 1):
        meter.state.registers["fwd_active_wh"] = base + wh_per_interval * k
        meter.state.registers["rev_active_wh"] = k
        recorder.run_due(meter, start + step * k)


def events(meter, number: int) -> list[int]:
    """Arguments of the BT74 entries of event ``number``."""
    return [entry[4] for entry in meter.state.history.entries if entry[3] == number]


def has_alarm(meter, name: str) -> bool:
    offset, bit = ALARMS[name]
    return bool(read(meter, bt(3), T0)[offset] >> bit & 1)


# ---- recording a day ----------------------------------------------------------------------


def test_a_day_of_15_minute_snapshots():
    meter = Meter(load_profile())
    record(meter, T0, 96)
    now = T0 + DAY
    image = read(meter, bt(64), now, 0, BLOCK)
    # End Time: the end of the block, midnight of the next day in UTC (OPG p.35)
    assert image[:5] == bytes([26, 1, 2, 0, 0])
    assert image[5:17] == b"\xff" * 12  # simple status: all 96 intervals processed
    for k in (0, 1, 47, 95):  # interval k ends at (k + 1) x 15 min: Fwd = 1000 + 100 (k + 1)
        assert interval(image, 0, k) == (bytes(3), [1000 + 100 * (k + 1), k + 1, 0, 0])
    assert bt63(meter, now) == dict(flags=0x24, valid_blocks=1, last_block=0, sequence=1,
                                    unread=1, valid_intervals=96)
    et21 = read(meter, et(21), now)
    assert u16(et21, 14) == 1 and u16(et21, 16) == 96 and u16(et21, 18) == 0
    assert u16(et21, 20) == 95  # last interval number
    assert u32(et21, 0) == 0 and u32(et21, 4) == HEADER + 95 * RECORD  # current addresses
    assert et21[83:89] == bytes([26, 1, 1, 0, 0, 0])  # block start time (3.10+): 00:00 UTC


def test_the_guides_read_recipes_return_the_last_block_and_the_last_interval():
    meter = Meter(load_profile())
    record(meter, T0, 96 + 10)  # a full day, then 10 intervals of the next
    now = T0 + DAY + 10 * Q
    status = read(meter, bt(63), now)
    bt61 = read(meter, bt(61), now)
    et21 = read(meter, et(21), now)
    last_block, blocks = u16(status, 3), u16(bt61, 7)
    block_size, header = u32(et21, 8), u16(et21, 12)
    last_interval, interval_size = u16(et21, 20), et21[25]
    assert (last_block, blocks, block_size, header, last_interval, interval_size) == (
        1, 40, BLOCK, HEADER, 9, RECORD)
    # OPG p.31: the most recent full block ...
    offset = ((last_block - 1) % blocks) * block_size
    full = read(meter, bt(64), now, offset, block_size)
    expected = bytearray([26, 1, 2, 0, 0]) + b"\xff" * 12
    for k in range(96):
        expected += bytes(3) + struct.pack("<4i", 1000 + 100 * (k + 1), k + 1, 0, 0)
    assert full == bytes(expected)
    # ... and the most recent interval: the 106th, ending 2026-01-02 02:30
    offset = last_block * block_size + header + last_interval * interval_size
    assert read(meter, bt(64), now, offset, interval_size) == bytes(3) + struct.pack(
        "<4i", 1000 + 100 * 106, 106, 0, 0)
    second = read(meter, bt(64), now, BLOCK, HEADER)
    assert second == bytes([26, 1, 2, 2, 30]) + b"\xff" + b"\x03" + bytes(10)
    assert bt63(meter, now) == dict(flags=0x24, valid_blocks=2, last_block=1, sequence=2,
                                    unread=2, valid_intervals=10)


def test_next_due_is_the_next_interval_end_on_the_meter_clock():
    meter = Meter(load_profile())
    meter.state.clock_offset = 120.0  # the meter clock is 2 minutes ahead
    assert recorder.next_due(meter, T0 + 5) == T0 + Q  # meter UTC 00:02:05 -> 00:15
    recorder.run_due(meter, T0 + Q - 120)
    assert recorder.next_due(meter, T0 + Q - 120) == T0 + 2 * Q


def test_the_ring_is_allocated_at_the_first_interval_and_grows_by_blocks(tmp_path):
    meter = Meter(load_profile())
    recorder.run_due(meter, T0 + 10)
    recorder.run_due(meter, T0 + Q - 1)
    assert lp.memory(meter).rings == {}
    assert read(meter, bt(64), T0 + Q - 1) == bytes(40 * BLOCK)
    store = StateStore(tmp_path)
    store.save(meter)
    assert not list(tmp_path.glob("*.bin"))
    recorder.run_due(meter, T0 + Q)
    assert len(lp.memory(meter).rings[0]) == BLOCK  # the first block only
    record(meter, T0 + Q, 2 * 96)
    assert len(lp.memory(meter).rings[0]) == 3 * BLOCK  # Jan 1, 2 and 3
    image = read(meter, bt(64), T0 + 2 * DAY + Q)
    assert len(image) == 40 * BLOCK and image[3 * BLOCK:] == bytes(37 * BLOCK)


def test_recording_that_starts_during_a_day_leaves_earlier_intervals_unprocessed():
    meter = Meter(load_profile())
    record(meter, T0 + 10 * Q + 300, 2)  # starts 02:35; intervals 10 (partly seen) and 11
    now = T0 + 10 * Q + 300 + 2 * Q
    header = read(meter, bt(64), now, 0, HEADER)
    assert header[:5] == bytes([26, 1, 1, 3, 0])  # end of interval 11
    assert header[5:7] == b"\x00\x0c"  # bits 10 and 11
    assert bt63(meter, now)["valid_intervals"] == 12  # intervals 0..11 to read


def test_a_daily_interval_records_one_value_per_block():
    meter = meter_with("load_profile.interval_minutes=1440", "load_profile.blocks=3")
    record(meter, T0, 2, step=DAY)
    size = 5 + 1 + 19
    image = read(meter, bt(64), T0 + 2 * DAY)
    assert image[:size] == bytes([26, 1, 2, 0, 0, 1]) + bytes(3) + struct.pack(
        "<4i", 1100, 1, 0, 0)
    assert image[size:2 * size] == bytes([26, 1, 3, 0, 0, 1]) + bytes(3) + struct.pack(
        "<4i", 1200, 2, 0, 0)


# ---- status flags --------------------------------------------------------------------------


def test_power_fail_flags_the_interval_of_the_note():
    meter = Meter(load_profile())
    recorder.run_due(meter, T0)
    recorder.note(meter, T0 + 1000, "power_fail")  # during interval 1 (00:15-00:30)
    for k in (1, 2, 3):
        recorder.run_due(meter, T0 + k * Q)
    image = read(meter, bt(64), T0 + 3 * Q)
    # high nibble of byte 0, bit 1: power fail within interval (OPG p.36-37)
    assert [interval(image, 0, k)[0] for k in range(3)] == [bytes(3), b"\x20\0\0", bytes(3)]


def test_an_outage_flags_every_interval_from_power_down_to_power_up():
    meter = Meter(load_profile())
    recorder.run_due(meter, T0)
    recorder.note(meter, T0 + 1000, "power_down")
    recorder.run_due(meter, T0 + 2 * Q)
    recorder.run_due(meter, T0 + 3 * Q)
    recorder.note(meter, T0 + 3 * Q + 10, "power_up")
    recorder.run_due(meter, T0 + 4 * Q)
    recorder.run_due(meter, T0 + 5 * Q)
    image = read(meter, bt(64), T0 + 5 * Q)
    flagged = [interval(image, 0, k)[0][0] >> 4 for k in range(5)]
    assert flagged == [0, 2, 2, 2, 0]


def test_clock_set_forward_within_an_interval_marks_it_partial():
    meter = Meter(load_profile())
    recorder.run_due(meter, T0 + 100)
    meter.move_clock(T0 + 100, T0 + 400)
    recorder.clock_changed(meter, T0 + 100, T0 + 100, T0 + 400)
    meter.state.registers["fwd_active_wh"] = 1234
    recorder.run_due(meter, T0 + Q - 300)  # meter UTC 00:15
    image = read(meter, bt(64), T0 + Q - 300)
    # common bit 2 (clock reset forward); channel status 2 (partial) on each of 4 channels
    assert interval(image, 0, 0) == (b"\x42\x22\x20", [1234, 0, 0, 0])


def test_clock_set_forward_over_intervals_skips_them():
    meter = Meter(load_profile())
    record(meter, T0, 1)
    meter.state.registers["fwd_active_wh"] = 5000
    now = T0 + Q + 200  # 00:18:20, set to 01:05:00
    recorder.run_due(meter, now)
    meter.move_clock(now, T0 + 65 * 60)
    recorder.clock_changed(meter, now, T0 + Q + 200, T0 + 65 * 60)
    image = read(meter, bt(64), now)
    assert interval(image, 0, 0) == (bytes(3), [1100, 1, 0, 0])
    # the interval the clock left: closed at once with the values then, partial
    assert interval(image, 0, 1) == (b"\x42\x22\x20", [5000, 1, 0, 0])
    for k in (2, 3):  # 00:30-01:00 jumped over: skipped (4), zero
        assert interval(image, 0, k) == (b"\x04\x44\x40", [0, 0, 0, 0])
    assert read(meter, bt(64), now, 5, 1) == b"\x0f"  # intervals 0..3 processed
    meter.state.registers["fwd_active_wh"] = 6000
    recorder.run_due(meter, T0 + 75 * 60 - (T0 + 65 * 60 - now))  # meter UTC 01:15
    image = read(meter, bt(64), now + 600)
    assert interval(image, 0, 4) == (b"\x42\x22\x20", [6000, 1, 0, 0])  # landed inside it
    assert bt63(meter, now + 600)["valid_intervals"] == 5


def test_clock_set_back_within_the_interval_makes_it_long():
    meter = Meter(load_profile())
    record(meter, T0, 1)
    now = T0 + Q + 600  # 00:25, set back to 00:20
    recorder.run_due(meter, now)
    meter.move_clock(now, T0 + Q + 300)
    recorder.clock_changed(meter, now, T0 + Q + 600, T0 + Q + 300)
    recorder.run_due(meter, now + 300)  # meter UTC 00:25 again: nothing ends
    assert bt63(meter, now + 300)["valid_intervals"] == 1
    recorder.run_due(meter, now + 600)  # meter UTC 00:30
    status, _ = interval(read(meter, bt(64), now + 600), 0, 1)
    assert status == b"\x83\x33\x30"  # clock reset backward, long interval (3)
    assert events(meter, 79) == []


def test_clock_set_back_over_recorded_intervals_fails_the_backfill():
    meter = Meter(load_profile())
    record(meter, T0, 4)  # intervals 0..3 written, up to 01:00
    now = T0 + 4 * Q + 100
    meter.move_clock(now, T0 + Q)  # back to 00:15
    recorder.clock_changed(meter, now, T0 + 4 * Q + 100, T0 + Q)
    assert events(meter, 79) == [0]
    assert has_alarm(meter, "load_profile_backfill_failed")
    before = read(meter, bt(64), now, 0, HEADER + 4 * RECORD)
    meter.state.registers["fwd_active_wh"] = 9999
    offset = (T0 + Q) - now  # virtual -> meter UTC
    recorder.run_due(meter, T0 + 2 * Q - offset)  # meter UTC 00:30: written intervals stay
    assert read(meter, bt(64), now, 0, HEADER + 4 * RECORD) == before
    recorder.run_due(meter, T0 + 5 * Q - offset)  # 01:15: the open interval closes, long
    assert interval(read(meter, bt(64), now), 0, 4) == (b"\x83\x33\x30", [9999, 4, 0, 0])


def test_virtual_time_going_back_rewrites_nothing():
    meter = Meter(load_profile())
    record(meter, T0, 8)
    before = read(meter, bt(64), T0 + 8 * Q)
    recorder.run_due(meter, T0)  # a run restarted with a fixed start time
    recorder.run_due(meter, T0 + 4 * Q)
    assert read(meter, bt(64), T0 + 8 * Q) == before
    assert events(meter, 79) == [0]
    recorder.run_due(meter, T0 + 9 * Q)
    assert interval(read(meter, bt(64), T0 + 9 * Q), 0, 8)[0] == b"\x83\x33\x30"


def test_intervals_missed_by_a_late_catch_up_are_skipped():
    meter = Meter(load_profile())
    record(meter, T0, 2)
    meter.state.registers["fwd_active_wh"] = 7777
    recorder.run_due(meter, T0 + 6 * Q + 60)  # nothing ran from 00:30 to 01:31
    image = read(meter, bt(64), T0 + 6 * Q + 60)
    assert interval(image, 0, 2) == (bytes(3), [7777, 2, 0, 0])  # closed late, values then
    for k in (3, 4, 5):
        assert interval(image, 0, k) == (b"\x04\x44\x40", [0, 0, 0, 0])
    assert image[:6] == bytes([26, 1, 1, 1, 30, 0x3f])  # End Time 01:30, intervals 0..5
    recorder.run_due(meter, T0 + 7 * Q)
    assert interval(read(meter, bt(64), T0 + 7 * Q), 0, 6) == (bytes(3), [7777, 2, 0, 0])


def test_a_gap_of_days_writes_no_empty_blocks():
    meter = Meter(load_profile())
    record(meter, T0 + DAY - 2 * Q, 1)  # 23:30-23:45 on Jan 1
    recorder.run_due(meter, T0 + 4 * DAY + 2 * Q + 1)  # back on Jan 5 00:30
    now = T0 + 4 * DAY + 2 * Q + 1
    # Jan 1 (block 0): 23:45-24:00 closed late; Jan 5 (block 1): 00:00-00:30 skipped
    assert bt63(meter, now) == dict(flags=0x24, valid_blocks=2, last_block=1, sequence=2,
                                    unread=2, valid_intervals=2)
    first = read(meter, bt(64), now, 0, BLOCK)
    assert first[:5] == bytes([26, 1, 2, 0, 0]) and first[5:17] == bytes(11) + b"\xc0"
    second = read(meter, bt(64), now, BLOCK, BLOCK)
    assert second[:6] == bytes([26, 1, 5, 0, 30, 0x03])


# ---- the ring ------------------------------------------------------------------------------


def test_the_ring_wraps_with_overflow_and_events():
    meter = meter_with("load_profile.blocks=3", "load_profile.interval_minutes=60")
    record(meter, T0, 24 * 3, step=3600)
    now = T0 + 3 * DAY
    assert events(meter, 94) == [1]  # a block completed unread: logged once (alarm latched)
    assert has_alarm(meter, "lp_set1_unread")
    assert events(meter, 64) == []
    assert bt63(meter, now)["unread"] == 3
    record(meter, now, 24 + 1, step=3600, base=50_000)  # a 4th day overwrites the unread 1st
    now += (24 + 1) * 3600
    assert bt63(meter, now) == dict(flags=0x26, valid_blocks=3, last_block=1, sequence=5,
                                    unread=3, valid_intervals=1)
    assert events(meter, 64) == [1]  # once, until BP04/BP05/EP11 clear the flag
    assert has_alarm(meter, "load_profile_overflow")
    size = 5 + 3 + 24 * 19
    oldest = read(meter, bt(64), now, 2 * size, 5)  # slot 2: Jan 3, the oldest kept
    assert oldest == bytes([26, 1, 4, 0, 0])
    recipe = read(meter, bt(64), now, ((1 - 1) % 3) * size, size)  # the last full block
    assert recipe[:8] == bytes([26, 1, 5, 0, 0, 0xff, 0xff, 0xff])
    assert recipe[8 + 23 * 19 + 3:8 + 23 * 19 + 7] == struct.pack("<i", 50_000 + 100 * 24)


def test_a_second_data_set_records_and_overflows_without_the_primary_alarm():
    meter = meter_with("identity.firmware_version=3.50.00", "load_profile.data_sets=2",
                       "load_profile.blocks=1", "load_profile.interval_minutes=60")
    record(meter, T0, 25, step=3600)
    size = 5 + 3 + 24 * 19
    assert read(meter, bt(65), T0 + DAY) == read(meter, bt(64), T0 + DAY)
    assert len(read(meter, bt(65), T0 + DAY)) == size
    assert bt63(meter, T0 + DAY, 1)["flags"] == 0x26
    assert sorted(events(meter, 64)) == [1, 2]  # the alarm (set 1) logs one, set 2 the other
    assert has_alarm(meter, "load_profile_overflow") and has_alarm(meter, "lp_set2_unread")


def test_values_outside_int32_are_clamped_with_the_overflow_status():
    meter = meter_with("identity.firmware_version=3.70.00")
    recorder.run_due(meter, T0)
    meter.state.registers["fwd_active_wh"] = 2**33
    recorder.run_due(meter, T0 + Q)
    assert interval(read(meter, bt(64), T0 + Q), 0, 0) == (b"\x01\x00\x00",
                                                            [2**31 - 1, 0, 0, 0])


def test_delta_mode_records_the_increase_over_each_interval():
    base = load_profile()
    data = copy.deepcopy(base.data)
    data["load_profile"]["mode"] = "delta"  # designed option; profile schema: lead's
    meter = Meter(Profile(base.origin, data))
    record(meter, T0, 3, wh_per_interval=250)
    image = read(meter, bt(64), T0 + 3 * Q)
    # recording began with Fwd at 0 Wh, so the first interval holds all of its 1250 Wh
    assert [interval(image, 0, k)[1] for k in range(3)] == [
        [1250, 1, 0, 0], [250, 1, 0, 0], [250, 1, 0, 0]]


def test_et21_live_fields_on_firmware_3_30():
    meter = meter_with("identity.firmware_version=3.30.00")
    record(meter, T0, 97)
    et21 = read(meter, et(21), T0 + 97 * Q)
    assert u32(et21, 0) == BLOCK and u32(et21, 4) == BLOCK + HEADER  # block 1, interval 0
    assert et21[27] == 0  # no flag gathered for the interval in progress
    assert et21[83:89] == bytes([26, 1, 2, 0, 0, 0])  # block start (UTC)
    assert et21[94:100] == bytes([26, 1, 2, 0, 15, 0])  # interval end time (UTC)
    assert et21[101:107] == bytes([26, 1, 2, 1, 15, 0])  # local: UTC + 60 min (profile)
    recorder.note(meter, T0 + 97 * Q + 5, "power_fail")
    assert read(meter, et(21), T0 + 97 * Q + 5)[27] == 2  # ET21.27: flags for the next record


def test_an_unknown_note_is_refused():
    meter = Meter(load_profile())
    with pytest.raises(ValueError, match="unknown load profile note"):
        recorder.note(meter, T0, "brownout")


# ---- BP04 / BP05 / EP11 through BT07 -------------------------------------------------------


def _client(meter, now: float) -> Procedures:
    client = LinkClient(optical_protocol(meter, ManualClock(now)))
    client.logon(MK)
    return Procedures(client)


def test_bp05_acknowledges_blocks_and_clears_the_overflow():
    meter = meter_with("load_profile.blocks=2", "load_profile.interval_minutes=60")
    record(meter, T0, 24 * 2 + 1, step=3600)
    now = T0 + 2 * DAY + 3600
    assert bt63(meter, now)["flags"] == 0x26
    call = _client(meter, now)
    assert call(BP05, bytes([3]) + (1).to_bytes(2, "little"))[0] == 0
    assert bt63(meter, now)["unread"] == 1 and bt63(meter, now)["flags"] == 0x24
    assert has_alarm(meter, "lp_set1_unread")
    assert call(BP04, bytes([3]))[0] == 0
    assert bt63(meter, now)["unread"] == 0 and not has_alarm(meter, "lp_set1_unread")
    # new blocks count as unread again; no overflow while blocks are read
    record(meter, now, 24, step=3600, base=90_000)
    assert bt63(meter, now + DAY)["unread"] == 1 and bt63(meter, now + DAY)["flags"] == 0x24


def test_ep11_reset_drops_the_ring_and_recording_restarts(tmp_path):
    meter = Meter(load_profile())
    record(meter, T0, 96 + 3)
    store = StateStore(tmp_path)
    store.save(meter)
    assert store.ring_path(meter.id, 0).exists()
    now = T0 + DAY + 3 * Q + 60
    call = _client(meter, now)
    assert call(EP11, b"\x00")[0] == 0
    assert bt63(meter, now) == dict(flags=0x24, valid_blocks=0, last_block=0, sequence=2,
                                    unread=0, valid_intervals=0)
    assert read(meter, bt(64), now) == bytes(40 * BLOCK)
    store.save(meter)
    assert not store.ring_path(meter.id, 0).exists()
    meter.state.registers["fwd_active_wh"] = 4242
    recorder.run_due(meter, T0 + DAY + 4 * Q)  # the interval in progress at the reset
    assert bt63(meter, now + Q) == dict(flags=0x24, valid_blocks=1, last_block=0, sequence=3,
                                        unread=1, valid_intervals=4)
    assert interval(read(meter, bt(64), now + Q), 0, 3) == (bytes(3), [4242, 99, 0, 0])


def test_a_reset_at_a_known_instant_restarts_with_the_interval_then_in_progress():
    meter = meter_with("load_profile.interval_minutes=60")  # the recorder had 00:00-01:00 open
    record(meter, T0, 1, step=3600)
    lp.reset_data_set(meter, 0, T0 + 3600 + 5)  # as EP11 passes its time (01:00:05)
    meter.state.registers["fwd_active_wh"] = 31
    recorder.run_due(meter, T0 + 2 * 3600)
    status = bt63(meter, T0 + 2 * 3600)
    assert (status["valid_blocks"], status["sequence"], status["valid_intervals"]) == (1, 2, 2)
    header = read(meter, bt(64), T0 + 2 * 3600, 0, 8)
    assert header == bytes([26, 1, 1, 2, 0, 0b10, 0, 0])  # only interval 1 (01:00-02:00)


def test_ep11_reconfiguration_records_with_the_new_geometry():
    meter = Meter(load_profile())
    record(meter, T0, 2)
    call = _client(meter, T0 + 2 * Q)
    # data set 1: 5 blocks of hourly intervals, one channel recording source 1 (Rev Wh)
    assert call(EP11, bytes([1, 5, 0, 60, 1, 1]))[0] == 0
    recorder.run_due(meter, T0 + 2 * Q)  # the recorder goes on with the hour in progress
    meter.state.registers["rev_active_wh"] = 77
    recorder.run_due(meter, T0 + 3600)
    image = read(meter, bt(64), T0 + 3600)
    assert len(image) == 5 * (5 + 3 + 24 * 5)
    assert image[:9] == bytes([26, 1, 1, 1, 0, 1, 0, 0, 0]) and u32(image, 9) == 77


# ---- persistence ---------------------------------------------------------------------------


def _recorded_meter() -> Meter:
    meter = Meter(load_profile())
    record(meter, T0, 96 + 20)
    return meter


def test_the_store_round_trip_keeps_the_ring(tmp_path):
    meter = _recorded_meter()
    now = T0 + DAY + 20 * Q
    store = StateStore(tmp_path)
    store.save(meter)
    again = Meter(load_profile(), StateStore(tmp_path).load(meter.id))
    assert read(again, bt(64), now) == read(meter, bt(64), now)
    assert read(again, bt(63), now) == read(meter, bt(63), now)
    record(again, now, 1, base=20_000)  # and it records on
    assert interval(read(again, bt(64), now + Q), 1, 20) == (bytes(3), [20_100, 1, 0, 0])


def test_a_meter_rebuilt_from_the_same_state_keeps_its_ring():
    meter = _recorded_meter()
    now = T0 + DAY + 20 * Q
    again = Meter(load_profile(), meter.state)
    assert read(again, bt(64), now) == read(meter, bt(64), now)
    record(again, now, 1, base=40_000)
    assert interval(read(again, bt(64), now + Q), 1, 20) == (bytes(3), [40_100, 1, 0, 0])


def test_a_ring_file_newer_than_the_json_state_wins(tmp_path):
    """kill -9 after the ring file was written and before the JSON was: the file's own status
    copy describes it."""
    meter = _recorded_meter()
    store = StateStore(tmp_path)
    store.save(meter)
    record(meter, T0 + DAY + 20 * Q, 1, base=30_000)
    atomic_write(store.ring_path(meter.id, 0), lp.ring_file_image(meter, 0))
    again = Meter(load_profile(), StateStore(tmp_path).load(meter.id))
    now = T0 + DAY + 21 * Q
    assert read(again, bt(64), now) == read(meter, bt(64), now)
    assert bt63(again, now)["valid_intervals"] == 21


@pytest.mark.parametrize("damage", ["other geometry", "truncated", "older", "missing"])
def test_a_ring_file_that_does_not_fit_is_ignored_with_a_log_line(tmp_path, caplog, damage):
    meter = _recorded_meter()
    store = StateStore(tmp_path)
    path = store.ring_path(meter.id, 0)
    store.save(meter)
    profile = load_profile()
    if damage == "other geometry":
        profile = load_profile(overrides=["load_profile.blocks=20"])
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "older":
        old = path.read_bytes()
        record(meter, T0 + DAY + 20 * Q, 1)
        store.save(meter)
        path.write_bytes(old)
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="meter_emu.tables.load_profile"):
        again = Meter(profile, StateStore(tmp_path).load(meter.id))
        now = T0 + DAY + 30 * Q
        status = bt63(again, now)
    assert "ring file not used" in caplog.text
    assert status == dict(flags=0x24, valid_blocks=0, last_block=0, sequence=2, unread=0,
                          valid_intervals=0)
    assert read(again, bt(64), now) == bytes(len(read(again, bt(64), now)))
    StateStore(tmp_path).save(again)
    assert not path.exists()  # the unusable file goes with the next save


# ---- driven by the metering engine ---------------------------------------------------------


def test_a_day_driven_by_the_engine_records_the_integral_of_the_load():
    meter = Meter(load_profile())
    meter.advance(T0)
    quantities.apply(meter, {"voltage": 230.0, "current": 10.0, "pf": 1.0}, T0)
    meter.advance(T0 + DAY)  # the engine steps to each interval end
    image = read(meter, bt(64), T0 + DAY, 0, BLOCK)
    # 230 V x 10 A = 2300 W: 575 Wh per 15 minutes; snapshots of Fwd Wh
    assert [interval(image, 0, k)[1][0] for k in (0, 1, 95)] == [575, 1150, 96 * 575]
    assert image[:17] == bytes([26, 1, 2, 0, 0]) + b"\xff" * 12
    assert bt63(meter, T0 + DAY)["valid_intervals"] == 96


def test_an_outage_seen_by_the_engine_flags_its_intervals():
    meter = Meter(load_profile())
    meter.advance(T0)
    quantities.apply(meter, {"voltage": 0.0}, T0 + 20 * 60)  # power down at 00:20
    quantities.apply(meter, {"voltage": 230.0}, T0 + 50 * 60)  # up at 00:50
    meter.advance(T0 + 4 * Q)
    image = read(meter, bt(64), T0 + 4 * Q)
    assert interval(image, 0, 0)[0][0] >> 4 == 0
    assert interval(image, 0, 1)[0][0] >> 4 == POWER_FAIL  # 00:15-00:30: the outage began
    assert interval(image, 0, 3)[0][0] >> 4 == POWER_FAIL  # 00:45-01:00: power came back
