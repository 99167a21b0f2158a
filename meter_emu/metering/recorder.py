"""The load profile recorder: closes intervals into the BT64..BT67 images (OPG p.29-40, MEP
p.229-239 printed pages).

Where the guides leave a choice, this is what the recorder does:

* Schedule. Intervals are BT61.12 minutes long and aligned to the meter's UTC clock; a block is
  one UTC day. The guide says load profiling "is scheduled by the meter system clock which is
  always in standard time" (OPG p.36), keeps the block start time in UTC (ET21.83-90, OPG
  p.39) and ends a complete block at "midnight of the following day" in UTC (BT64 End Time,
  OPG p.35). DST never moves an interval; it only sets the common DST flag.
* Values. Snapshot: a channel holds its source's value at the interval end
  (``engine.source_value``), as BT62 format 32 "implies" (OPG p.33). The profile option
  ``[load_profile] mode = "delta"`` (designed: no guide documents it) records the increase of the
  source over the interval instead.
* Blocks. A block is entered when its first interval is written (OPG p.35: valid from one
  interval): Valid Blocks and Unread Blocks + 1, Last Block Sequence Number + 1, the next slot of
  the ring (slot 0 after a reset). End Time is the end of the block's last written interval.
  BT63 Valid Intervals is the last written interval's index + 1, so intervals 0..n-1 of the last
  block are the ones to read and Simple Status says which were processed (recording that starts
  during a day leaves the earlier intervals unprocessed).
* Missed intervals. Intervals that ended while the recorder was not run (a late catch-up, the
  clock set forward) are written as skipped: channel status 4, values 0, Simple Status bit set.
  A day in which nothing was recorded gets no block, so a long gap does not overwrite the ring
  with empty days.
* Clock set forward: the interval in progress closes at once with the values of that moment,
  flagged "clock reset forward" with channel status 2 (partial interval); intervals jumped
  over are skipped; the interval the clock lands in is partial and flagged too (OPG p.36-37).
* Clock set backward (or virtual time going back when a run restarts): the interval in progress
  stays open until the clock reaches its end again, flagged "clock reset backward" with channel
  status 3 (long interval). Written intervals are never rewritten: when the clock lands before
  the end of the last written interval, 'Load Profile Backfill Failed' (event 79) is raised.
* Power fail (``note``): common flag "power fail in interval" on the interval in progress; from
  "power_down" to "power_up" every interval carries it.
* Overflow. Entering a block while all blocks are unread sets BT63's overflow flag (OPG p.34)
  and logs 'Load Profile Overflow' (64, argument: the data set number 1..4) once until the flag
  is cleared; the BT03 alarm is raised for the primary data set only (ET55; OPG p.31). A block
  completing while blocks are unread raises the set's 'Unread Entries Exist' alarm (event 94
  for set 1).

Keys the recorder keeps in each set's status dict (``tables.load_profile.status_for_change``),
beside BT63's counts: ``next_end`` (meter UTC end of the interval in progress; absent: not
started), ``last_end`` (end of the last written interval), ``block_day`` (UTC day number of the
last block), ``common`` / ``channel`` (flags gathered for the interval in progress; ``common``
is ET21.27), ``outage`` (between power_down and power_up), ``writes`` (changes to the image, for
the store) and, in delta mode, ``previous`` (the values the interval in progress started from).

Closing an interval is a ``struct.pack_into`` into the image: nothing is rendered or parsed.
"""

from __future__ import annotations

import logging
import math
import struct
import time

from ..device import conditions
from ..events import by_alarm
from ..tables import load_profile as lp
from ..tables.catalog import CATALOG, et
from ..tables.dimensions import firmware_at_least
from . import engine, tou

log = logging.getLogger(__name__)

DAY = 86_400
#: common status flags, the high nibble of extended status byte 0 (OPG p.36-37)
DST, POWER_FAIL, CLOCK_FORWARD, CLOCK_BACKWARD = 1, 2, 4, 8
#: channel status values (OPG p.37) and their precedence (the higher one is recorded)
OVERFLOW, PARTIAL, LONG, SKIPPED = 1, 2, 3, 4
_PRECEDENCE = {0: 0, OVERFLOW: 10, PARTIAL: 5, LONG: 4, SKIPPED: 11}
#: what ``note`` accepts: flag -> (common flag, channel status)
NOTES = {"power_fail": (POWER_FAIL, 0), "power_down": (POWER_FAIL, 0),
         "power_up": (POWER_FAIL, 0), "clock_forward": (CLOCK_FORWARD, PARTIAL),
         "clock_backward": (CLOCK_BACKWARD, LONG)}
_UNREAD_ALARMS = ("lp_set1_unread", "lp_set2_unread", "lp_set3_unread", "lp_set4_unread")
_OVERFLOW_EVENT = by_alarm("load_profile_overflow").number
_INT32 = (-2**31, 2**31 - 1)
END_TIME_SIZE = lp.END_TIME_SIZE  # the simple status follows End Time (no End Readings)
_NO_STATE: dict = {}


class _Set:
    """One active data set compiled for recording: its sizes, packer, cached bytes, its image,
    and mirrors of its status' ``next_end`` / ``last_end`` for the fast path."""

    __slots__ = ("index", "step", "sources", "channels", "intervals", "blocks", "header",
                 "record_size", "block_size", "pack", "blank_block", "statuses", "dates",
                 "memory", "image", "next_end", "floor")

    def __init__(self, index: int, geometry, memory, status: dict):
        self.index = index
        self.step = 60 * geometry.interval_minutes
        self.sources = geometry.sources
        self.channels, self.intervals, self.blocks = (geometry.channels, geometry.intervals,
                                                      geometry.blocks)
        self.header, self.record_size = geometry.header_size, geometry.interval_size
        self.block_size = geometry.block_size
        self.pack = struct.Struct(
            f"<{geometry.extended_status_size}s{geometry.channels}i").pack_into
        self.blank_block = bytes(geometry.block_size)
        self.statuses: dict[int, bytes] = {}
        self.dates = (None, b"", b"")
        self.memory = memory
        self.image = memory.rings.get(index)  # allocated at the first write
        next_end, last_end = status.get("next_end"), status.get("last_end")
        self.next_end = -math.inf if next_end is None else next_end  # -inf: not started
        self.floor = -math.inf if last_end is None else last_end  # below: the clock went back

    def writable(self, meter, block: int) -> bytearray:
        """The image, allocated on first use, holding at least the block at byte offset
        ``block`` (the ring grows a block at a time; a status kept without its image, as from
        an older version, finds zeros there), marked for the store."""
        image = self.image
        if image is None:
            geometry = lp.load_profile_geometry(meter)[self.index]
            image = self.image = lp.ring_for_writing(meter, self.index, geometry)
        if len(image) < block + self.block_size:
            image.extend(bytes(block + self.block_size - len(image)))
        self.memory.changed.add(self.index)
        return image

    def extended_status(self, common: int, nibble: int) -> bytes:
        """The extended status bytes with every channel at ``nibble`` (cached)."""
        key = common << 4 | nibble
        found = self.statuses.get(key)
        if found is None:
            found = self.statuses[key] = _extended_status(common, [nibble] * self.channels)
        return found

    def end_time(self, end: int) -> bytes:
        """STIME_DATE of meter-UTC instant ``end`` (two-digit year, as the meter stores it)."""
        day = (end - 1) // DAY
        if self.dates[0] != day:
            this, after = time.gmtime(day * DAY), time.gmtime((day + 1) * DAY)
            self.dates = (day, bytes([this.tm_year % 100, this.tm_mon, this.tm_mday]),
                          bytes([after.tm_year % 100, after.tm_mon, after.tm_mday]))
        into = end - day * DAY
        if into == DAY:
            return self.dates[2] + b"\0\0"
        return self.dates[1] + bytes([into // 3600, into % 3600 // 60])


class _Recorder:
    """A meter's compiled recording state; rebuilt when the configuration changes."""

    __slots__ = ("profile", "configured", "sets", "due", "floor", "delta", "overflow_status")

    def __init__(self, meter, configured, memory):
        self.profile = meter.profile
        self.configured = configured
        self.delta = lp.recording_mode(meter) == "delta"
        self.overflow_status = firmware_at_least(meter, "3.70")  # channel status 1 (OPG p.37)
        self.sets = [_Set(index, geometry, memory, lp.data_set_status(meter, index))
                     for index, geometry in enumerate(lp.load_profile_geometry(meter))
                     if geometry.active]
        self.due = self.floor = -math.inf
        _refresh(self)


def _extended_status(common: int, nibbles: list[int]) -> bytes:
    """Byte 0: common flags (high nibble), channel 0 (low); then channels 1, 2 in byte 1's high
    and low nibbles, and so on: (channels / 2) + 1 bytes (OPG p.36-37)."""
    out = bytearray(len(nibbles) // 2 + 1)
    out[0] = common << 4
    for channel, nibble in enumerate(nibbles):
        byte = (channel + 1) // 2
        out[byte] |= nibble << 4 if channel % 2 else nibble
    return bytes(out)


def _recorder(meter) -> _Recorder:
    found = lp.memory(meter)
    recorder = found.recorder
    configured = meter.state.subsystems.get(lp.LP_STATE, _NO_STATE).get("data_sets")
    if recorder is None or recorder.profile is not meter.profile \
            or recorder.configured is not configured:
        recorder = found.recorder = _Recorder(meter, configured, found)
    return recorder


def _refresh(recorder: _Recorder) -> None:
    """The earliest interval end and the lowest written end over the sets (the fast path of
    ``run_due`` compares against them)."""
    due = floor = math.inf
    for data_set in recorder.sets:
        if data_set.next_end < due:
            due = data_set.next_end
        if data_set.floor < floor:
            floor = data_set.floor
    recorder.due, recorder.floor = due, floor


def _status(meter, index: int) -> dict:
    """Data set ``index``'s status dict, for changing."""
    statuses = meter.state.subsystems.get(lp.LP_STATE, _NO_STATE).get("status")
    if statuses is not None and index < len(statuses):
        meter.dirty = True
        return statuses[index]
    return lp.status_for_change(meter, index)


# ---------------------------------------------------------------------------------------
# The hooks the engine calls


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant of the next interval end of any active data set, or None. A set
    that has not started recording starts now."""
    recorder = _recorder(meter)
    if recorder.due == -math.inf:
        utc = meter.utc_seconds(now)
        for data_set in recorder.sets:
            if data_set.next_end == -math.inf:
                _start(meter, recorder, data_set, _status(meter, data_set.index), now, utc)
        _refresh(recorder)
    return None if recorder.due == math.inf else recorder.due


def run_due(meter, now: float) -> None:
    """Close every interval that ended by virtual time ``now`` (once: calling again with the
    same or an earlier time writes nothing)."""
    recorder = _recorder(meter)
    utc = now + meter.state.clock_offset
    if recorder.floor <= utc < recorder.due:
        return
    for data_set in recorder.sets:
        if data_set.floor <= utc < data_set.next_end:
            continue
        status = _status(meter, data_set.index)
        if data_set.next_end == -math.inf:
            _start(meter, recorder, data_set, status, now, utc)
            continue
        if utc < data_set.floor:
            _moved_back(meter, data_set, status, now, utc)
        if utc >= data_set.next_end:
            _catch_up(meter, recorder, data_set, status, now, utc)
    _refresh(recorder)


def note(meter, now: float, flag: str) -> None:
    """Mark the interval in progress: 'power_fail' (this interval), 'power_down' / 'power_up'
    (this interval and every one up to power up), 'clock_forward', 'clock_backward'."""
    if flag not in NOTES:
        raise ValueError(f"unknown load profile note {flag!r}; known: {', '.join(NOTES)}")
    run_due(meter, now)  # an interval that ended at ``now`` does not get the flag
    common, nibble = NOTES[flag]
    for data_set in _recorder(meter).sets:
        status = _status(meter, data_set.index)
        _mark(status, common, nibble)
        if flag == "power_down":
            status["outage"] = True
        elif flag == "power_up":
            status.pop("outage", None)


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set from ``old_utc`` to ``new_utc`` (``Meter.move_clock`` has run
    everything due at the old time first)."""
    recorder = _recorder(meter)
    for data_set in recorder.sets:
        status = _status(meter, data_set.index)
        if data_set.next_end == -math.inf:
            _start(meter, recorder, data_set, status, now, new_utc)
        elif new_utc > old_utc:
            _mark(status, CLOCK_FORWARD, PARTIAL)
            if new_utc >= data_set.next_end:
                _catch_up(meter, recorder, data_set, status, now, new_utc)
                if new_utc % data_set.step:  # the clock landed inside this interval
                    _mark(status, CLOCK_FORWARD, PARTIAL)
        elif new_utc < old_utc:
            _moved_back(meter, data_set, status, now, new_utc)
    _refresh(recorder)


# ---------------------------------------------------------------------------------------
# Recording


def _mark(status: dict, common: int, nibble: int) -> None:
    status["common"] = status.get("common", 0) | common
    if _PRECEDENCE[nibble] > _PRECEDENCE[status.get("channel", 0)]:
        status["channel"] = nibble


def _dst(meter) -> int:
    """The DST flag while the TOU calendar has DST in effect (its state: the engine runs the
    calendar before the recorder)."""
    return DST if tou.dst_in_effect(meter) else 0


def _open(meter, data_set: _Set, status: dict, next_end: int) -> None:
    """A new interval in progress, ending at ``next_end``."""
    status["next_end"] = data_set.next_end = next_end
    status["common"] = (POWER_FAIL if status.get("outage") else 0) | _dst(meter)
    status["channel"] = 0


def _start(meter, recorder: _Recorder, data_set: _Set, status: dict, now: float,
           utc: float) -> None:
    """Recording begins with the interval in progress at ``utc``."""
    for key, value in lp.status_defaults().items():  # a status saved by an older version
        status.setdefault(key, value)
    step = data_set.step
    _open(meter, data_set, status, int(utc // step) * step + step)
    if recorder.delta:
        status["previous"] = _values(meter, data_set, now)


def _moved_back(meter, data_set: _Set, status: dict, now: float, utc: float) -> None:
    """The clock is behind the interval in progress: it gets longer; landing before the end of
    written intervals, which are never rewritten, is a failed backfill."""
    _mark(status, CLOCK_BACKWARD, LONG)
    last_end = status.get("last_end")
    if last_end is not None and utc < last_end:
        log.warning("meter %s: load profile data set %d: the clock went back before the last "
                    "recorded interval; recording resumes at its end", meter.id,
                    data_set.index + 1)
        conditions.begin(meter, "load_profile_backfill_failed", now)
    data_set.floor = min(data_set.floor, utc)


def _catch_up(meter, recorder: _Recorder, data_set: _Set, status: dict, now: float,
              utc: float) -> None:
    """Close the interval in progress with the values of ``now``; intervals that ended after it
    without being run are skipped; open the interval in progress at ``utc``."""
    end, step = data_set.next_end, data_set.step
    _write(meter, recorder, data_set, status, now, end)
    current = int(utc // step) * step  # start of the interval in progress at utc
    if current > end:
        _skip(meter, data_set, status, now, end, current)
        if recorder.delta:
            status["previous"] = _values(meter, data_set, now)
    _open(meter, data_set, status, max(current, end) + step)


def _values(meter, data_set: _Set, now: float) -> list:
    read = engine.source_value
    return [read(meter, source, now) for source in data_set.sources]


def _block(meter, data_set: _Set, status: dict, start: int, now: float) -> int:
    """Byte offset of the block holding the interval that starts at ``start``, entering a new
    block when it lies in another day than the last one."""
    day = start // DAY
    if status.get("block_day") != day:
        _enter_block(meter, data_set, status, day, now)
    return status["last_block"] * data_set.block_size


def _enter_block(meter, data_set: _Set, status: dict, day: int, now: float) -> None:
    if status.get("block_day") is not None and status["valid_intervals"] < data_set.intervals:
        _block_complete(meter, data_set, status, now)  # a block left early is complete too
    valid = status["valid_blocks"]
    slot = (status["last_block"] + 1) % data_set.blocks if valid else 0
    unread = status["unread_blocks"]
    if unread < data_set.blocks:
        status["unread_blocks"] = unread + 1
    elif not status["overflow"]:  # an unread block is overwritten
        status["overflow"] = True
        _overflowed(meter, data_set, now)
    status.update(valid_blocks=min(data_set.blocks, valid + 1), last_block=slot,
                  last_block_sequence=(status["last_block_sequence"] + 1) & 0xFFFFFFFF,
                  block_day=day, valid_intervals=0)
    start = slot * data_set.block_size
    data_set.writable(meter, start)[start:start + data_set.block_size] = data_set.blank_block


def _write(meter, recorder: _Recorder, data_set: _Set, status: dict, now: float,
           end: int) -> None:
    """Write the interval ending at ``end`` with the sources' values at ``now``."""
    step = data_set.step
    block = _block(meter, data_set, status, end - step, now)
    index = (end - step) % DAY // step
    values = _values(meter, data_set, now)
    recorded = values
    if recorder.delta:
        previous = status.get("previous")
        if previous is not None and len(previous) == len(values):
            recorded = [value - before for value, before in zip(values, previous)]
        status["previous"] = values
    common = status.get("common", 0) | _dst(meter)
    nibble = status.get("channel", 0)
    image = data_set.writable(meter, block)
    offset = block + data_set.header + index * data_set.record_size
    try:
        data_set.pack(image, offset, data_set.extended_status(common, nibble), *recorded)
    except struct.error:  # a value that is no INT32 (or no integer)
        _pack_checked(recorder, data_set, image, offset, common, nibble, recorded)
    _written(meter, data_set, status, image, block, index, end, now)


def _pack_checked(recorder: _Recorder, data_set: _Set, image: bytearray, offset: int,
                  common: int, nibble: int, values: list) -> None:
    """Values outside INT32 are clamped; from firmware 3.70 their channel says overflow."""
    nibbles, clamped = [], []
    for value in values:
        value = int(value)
        inside = min(max(value, _INT32[0]), _INT32[1])
        clamped.append(inside)
        overflowed = inside != value and recorder.overflow_status
        nibbles.append(OVERFLOW if overflowed and _PRECEDENCE[OVERFLOW] > _PRECEDENCE[nibble]
                       else nibble)
    data_set.pack(image, offset, _extended_status(common, nibbles), *clamped)


def _written(meter, data_set: _Set, status: dict, image: bytearray, block: int, index: int,
             end: int, now: float) -> None:
    """Book-keeping after interval ``index`` of ``block`` was written: simple status, End Time,
    BT63 / ET21 counts."""
    image[block + END_TIME_SIZE + (index >> 3)] |= 1 << (index & 7)
    image[block:block + END_TIME_SIZE] = data_set.end_time(end)
    status["valid_intervals"] = index + 1
    status["last_end"] = data_set.floor = end
    status["writes"] = status.get("writes", 0) + 1
    if index == data_set.intervals - 1:
        _block_complete(meter, data_set, status, now)


def _skip(meter, data_set: _Set, status: dict, now: float, first: int, stop: int) -> None:
    """Write the intervals starting in [first, stop) as skipped: the rest of the last block's
    day and the day of the last one; days between them get no block."""
    step, size = data_set.step, data_set.record_size
    common = POWER_FAIL if status.get("outage") else 0
    record = data_set.extended_status(common, SKIPPED) + bytes(4 * data_set.channels)
    first_day, last_day = first // DAY, (stop - step) // DAY
    spans = []
    if first_day == status.get("block_day"):
        spans.append((first, min(stop, (first_day + 1) * DAY)))
    if last_day != first_day or not spans:
        spans.append((max(first, last_day * DAY), stop))
    for begin, finish in spans:
        block = _block(meter, data_set, status, begin, now)
        image = data_set.writable(meter, block)
        intervals = range(begin % DAY // step, (finish - 1) % DAY // step + 1)
        for index in intervals:
            offset = block + data_set.header + index * size
            image[offset:offset + size] = record
            image[block + END_TIME_SIZE + (index >> 3)] |= 1 << (index & 7)
        _written(meter, data_set, status, image, block, intervals[-1], finish, now)


def _block_complete(meter, data_set: _Set, status: dict, now: float) -> None:
    if status["unread_blocks"]:
        conditions.begin(meter, _UNREAD_ALARMS[data_set.index], now, data_set.index + 1)


def _overflowed(meter, data_set: _Set, now: float) -> None:
    """Event 64 for any data set; the BT03 alarm (which logs it) for the primary one."""
    number = data_set.index + 1
    if data_set.index == _primary_index(meter, now):
        if conditions.begin(meter, "load_profile_overflow", now, number):
            return
    meter.log_event(_OVERFLOW_EVENT, number, now)


def _primary_index(meter, now: float) -> int:
    """ET55 Primary Load Profile Index (0 where the firmware lacks the field)."""
    layout = CATALOG[et(55)].layout_for(meter)
    return layout.parse(meter.table_bytes(et(55), now)).get("primary_load_profile_index", 0)
