"""Load profile tables: BT60-BT67 (C12.19 load profile as NES meters implement it), ET21 (its
internal geometry), ET62 (its display), ET66 (mapped source IDs) and ET75 (channel change log).

One function, ``load_profile_geometry``, turns the configuration (the profile's
``[load_profile]``: data sets, channels, interval, blocks, sources, until EP11 or EP52 configure
the meter's own) into every size and offset the tables publish, so BT61, BT62, BT63, BT64-BT67
and ET21 move together when the configuration does. The meter's configuration, the per-set
recording status (BT63), the ET66 source mapping and the ET75 change log live in the
``load_profile`` subsystem; the recorder (metering/recorder.py) fills the status and the data.

The data tables are not rendered: each active data set has one ``bytearray`` holding its
BT64..BT67 image itself (``LoadProfileMemory``, kept beside the meter's state but not in its
JSON document), so a read is a slice of it. It is allocated at the set's first interval and
grows a block at a time up to BT61's table size (the ring fills its slots in order), so a meter
that recorded a day holds one block, not forty.
``store.py`` saves each image as a binary file whose header names the geometry and carries a
copy of the set's status (``ring_file_image``); a file that does not match the configuration,
or that is older than the JSON state, is ignored with a log line and the set starts empty
(``_adopt_ring_files``).

Data sets: firmware 3.50 and newer supports four, and the per-set arrays of BT60-BT63 and ET21 then
always have four elements; a set beyond ``data_sets`` is inactive, with zero blocks (ET42 calls a
set active when its block count is non-zero, MEP p.117), so its BT65-BT67 table is zero bytes long.
Older firmware has a single set: one element, and only BT64 holds data.

OPG = Optical Port Programmer's Guide (2021), MEP = MEP Client Developer's Guide (2022); printed
page numbers (the MEP table of contents gives numbers two lower than the printed pages here).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import struct
import zlib
from dataclasses import dataclass

from construct import Array, Bytes, Int32sl, Struct

from ..datatypes import (UINT8, UINT16, UINT32, BitSet, Bits, Chars, LTimeDate, STimeDate,
                         list_header, parse_version)
from ..device.access import CONFIGURERS, READERS, Key
from ..device.errors import ResponseCode, ServiceError
from ..provenance import documented
from .catalog import CATALOG, bt, declare, et
from .dimensions import firmware_at_least

log = logging.getLogger(__name__)

MAX_DATA_SETS = 4  # BT64..BT67
MAX_CHANNELS = 16  # BT60.11; also sizes ET62, ET66 and ET75 (ARRAY[BT60.11])
MAX_INTERVALS = 1440  # BT60.9: one-minute intervals in a one-day block
MAX_INTERVAL_TIME = 255  # BT60.12
DAILY_INTERVAL_TIME = 84  # BT61.12 / ET21.29 code for a 24-hour interval
INT32_FORMAT = 32  # BT62 "Format": INT32 snapshots, the only format BT60.6 supports
END_TIME_SIZE = STimeDate().sizeof()  # block header: End Time; no End Readings (BT61.4.4 false)
NVM_RESERVED_BYTES = 24576  # BT60.0 = NVM - 24576 - 2 bytes of overhead per 128 (MEP p.231)
#: ET36 "Current Entries" of ET75: 0 until EP06 configures the log (MEP p.108).
ET75_CURRENT_ENTRIES = 0

_FLAGS = Bits(
    2, set1_inhibit_overflow=0, set2_inhibit_overflow=1, set3_inhibit_overflow=2,
    set4_inhibit_overflow=3, end_reading_supported=4, end_pulse_supported=5,
    set1_scalar_divisor=6, set2_scalar_divisor=7, set3_scalar_divisor=8, set4_scalar_divisor=9,
    extended_interval_status=10, simple_interval_status=11,
)
_FORMATS = Bits(1, uint8=0, uint16=1, uint32=2, int8=3, int16=4, int32=5, ni_fmat1=6, ni_fmat2=7)
#: BT60/BT61 offsets 4 and 6: the same capabilities in both (OPG p.31-32, MEP p.231-234).
_CAPABILITIES = dict(flags=dict(extended_interval_status=1, simple_interval_status=1),
                     formats=dict(int32=1))


# ---------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class DataSetGeometry:
    """Sizes of one data set, in the guides' terms (OPG p.35-39; fact sheet 9.12)."""

    blocks: int  # BT61.7
    intervals: int  # BT61.9, per block (a block is one day)
    channels: int  # BT61.11
    interval_minutes: int
    sources: tuple[int, ...] = ()  # BT62 interval source per channel

    @property
    def active(self) -> bool:
        return self.blocks > 0

    @property
    def interval_time(self) -> int:
        """BT61.12 / ET21.29: minutes, or 84 for a whole day."""
        return DAILY_INTERVAL_TIME if self.interval_minutes == 1440 else self.interval_minutes

    @property
    def extended_status_size(self) -> int:
        """One nibble of common status plus one per channel: (channels / 2) + 1 bytes."""
        return self.channels // 2 + 1

    @property
    def interval_size(self) -> int:
        return self.extended_status_size + 4 * self.channels

    @property
    def simple_status_offset(self) -> int:
        return END_TIME_SIZE

    @property
    def simple_status_size(self) -> int:
        return (self.intervals + 7) // 8

    @property
    def header_size(self) -> int:
        """End Time + Simple Status: the offset of interval 0 in a block (ET21.12 = ET21.24)."""
        return self.simple_status_offset + self.simple_status_size

    @property
    def block_size(self) -> int:
        return self.header_size + self.intervals * self.interval_size

    @property
    def table_size(self) -> int:
        return self.blocks * self.block_size

    def config_id(self) -> int:
        """ET21.78: CRC-32 of the configuration, so any reconfiguration changes it."""
        if not self.active:
            return 0
        return zlib.crc32(bytes([self.blocks >> 8, self.blocks & 0xFF, self.channels,
                                 self.interval_time, *self.sources]))


_INACTIVE = DataSetGeometry(blocks=0, intervals=0, channels=0, interval_minutes=0)


def data_set_count(meter) -> int:
    """Elements of the per-set arrays: four from firmware 3.50 (OPG p.30), else one."""
    return MAX_DATA_SETS if firmware_at_least(meter, "3.50") else 1


LP_STATE = "load_profile"


def lp_state(meter) -> dict:
    """The load profile subsystem for changing (``data_sets``: the configuration EP11/EP52 set,
    ``status``: per set recording status, ``mapping``: ET66, ``channel_log``: ET75). Whoever
    changes it sets ``meter.dirty``."""
    return meter.subsystem(LP_STATE)


def _lp_peek(meter) -> dict:
    return meter.state.subsystems.get(LP_STATE, {})


def geometry_of(configuration: dict) -> DataSetGeometry:
    """One data set's geometry from its configuration (as ``data_set_configuration`` gives)."""
    return _geometry(**configuration)


def _geometry(blocks: int, interval_minutes: int, channels: int, sources) -> DataSetGeometry:
    if not blocks:
        return _INACTIVE
    return DataSetGeometry(blocks=blocks, intervals=1440 // interval_minutes, channels=channels,
                           interval_minutes=interval_minutes, sources=tuple(sources))


def load_profile_geometry(meter) -> tuple[DataSetGeometry, ...]:
    """The actual geometry of every data set (BT61 order); inactive sets have zero blocks."""
    count = data_set_count(meter)
    configured = _lp_peek(meter).get("data_sets")
    if configured is not None:
        sets = tuple(_geometry(**c) for c in configured[:count])
        return sets + (_INACTIVE,) * (count - len(sets))
    lp = meter.profile.load_profile
    active = _geometry(lp.blocks, lp.interval_minutes, lp.channels, lp.sources)
    used = min(lp.data_sets, count)
    return (active,) * used + (_INACTIVE,) * (count - used)


def data_set_configuration(meter) -> list[dict]:
    """The configuration of every data set as ``_geometry`` takes it (EP11 edits a copy and
    stores it as ``lp_state(meter)["data_sets"]``)."""
    return [dict(blocks=g.blocks, interval_minutes=g.interval_minutes, channels=g.channels,
                 sources=list(g.sources)) for g in load_profile_geometry(meter)]


def status_defaults() -> dict:
    """BT63's counts of a data set that has recorded nothing."""
    return dict(overflow=False, valid_blocks=0, last_block=0, last_block_sequence=0,
                unread_blocks=0, valid_intervals=0)


def data_set_status(meter, index: int) -> dict:
    """BT63's counts for data set ``index`` (0-based), with what the recorder keeps beside them
    (metering/recorder.py lists those keys). A state loaded from a store is first reconciled
    with its ring files, so the counts always describe the image a client reads."""
    memory(meter)
    statuses = _lp_peek(meter).get("status", [])
    return {**status_defaults(), **(statuses[index] if index < len(statuses) else {})}


def status_for_change(meter, index: int) -> dict:
    """Data set ``index``'s status dict itself, for the recorder and the procedures to change
    (sets ``meter.dirty``)."""
    statuses = lp_state(meter).setdefault("status", [])
    statuses.extend(status_defaults() for _ in range(index + 1 - len(statuses)))
    meter.dirty = True
    return statuses[index]


#: the recorder's keys for the interval in progress (metering/recorder.py)
_IN_PROGRESS = ("next_end", "common", "channel", "outage", "previous")


def reset_data_set(meter, index: int, now: float | None = None) -> None:
    """EP11 (or a ring file that cannot be used): no valid or unread blocks, the overflow flag
    cleared (OPG p.34), the image dropped. The block sequence number and the image's write count
    carry on, so a reader never sees an old number again. Recording goes on with the interval
    in progress: at ``now``, or, without it, the one the recorder had open when it still fits the
    set's interval length (else recording starts when the recorder next runs)."""
    status = status_for_change(meter, index)
    kept = {key: status[key] for key in ("last_block_sequence", "writes") if key in status}
    geometry = _data_set(meter, index)
    step = 60 * geometry.interval_minutes
    if geometry.active and now is not None:
        kept.update(next_end=int(meter.utc_seconds(now) // step) * step + step,
                    **{key: status[key] for key in ("outage", "previous") if key in status})
    elif geometry.active and status.get("next_end", 1) % step == 0:
        kept.update({key: status[key] for key in _IN_PROGRESS if key in status})
    status.clear()
    status.update(status_defaults(), **kept)
    found = memory(meter)
    found.rings.pop(index, None)
    found.changed.add(index)  # the store deletes the set's file
    found.recorder = None


def acknowledge_blocks(meter, index: int, count: int) -> int:
    """BP05/BP04: ``count`` blocks of data set ``index`` were read. Clears the overflow flag
    (OPG p.34); returns how many unread blocks that took."""
    status = status_for_change(meter, index)
    unread = status.get("unread_blocks", 0)
    taken = min(count, unread)
    status.update(unread_blocks=unread - taken, overflow=False)
    return taken


# ---------------------------------------------------------------------------------------
# The data set images (BT64..BT67) and their files

#: how channel values are recorded: "snapshot" (the source's value at the interval end, BT62
#: format 32, OPG p.33) or "delta" (its increase over the interval; designed, not documented)
MODES = ("snapshot", "delta")


class LoadProfileMemory:
    """One meter's BT64..BT67 images (per data set that has recorded something, a
    ``bytearray`` holding its first blocks, at most BT61's table size: the rest reads as zeros),
    the sets changed since the store saved them, and the recorder's compiled state
    (``recorder``; None makes the recorder build it again)."""

    __slots__ = ("rings", "changed", "recorder")

    def __init__(self):
        self.rings: dict[int, bytearray] = {}
        self.changed: set[int] = set()
        self.recorder = None


def memory(meter) -> LoadProfileMemory:
    """The meter's load profile memory, created (and reconciled with the ring files a store
    loaded) on first use."""
    found = meter.state.load_profile_memory
    if found is None:
        found = meter.state.load_profile_memory = LoadProfileMemory()
        _adopt_ring_files(meter, found)
    return found


def recording_mode(meter) -> str:
    """The profile's ``[load_profile] mode``."""
    return meter.profile.load_profile.mode


def ring_for_writing(meter, index: int, geometry: DataSetGeometry) -> bytearray:
    """Data set ``index``'s image for the recorder (empty on first use: whoever enters a block
    extends it to hold that block), marked for the store."""
    found = memory(meter)
    image = found.rings.get(index)
    if image is None or len(image) > geometry.table_size:
        image = found.rings[index] = bytearray()
    found.changed.add(index)
    return image


def _full_image(image: bytearray | None, size: int) -> bytes | bytearray | None:
    """The table image: the blocks held, then zeros for the slots not used yet."""
    if image is None or len(image) > size:
        return None
    return image if len(image) == size else bytes(image) + bytes(size - len(image))


#: magic, format version, data set index, mode, blocks, intervals, channels, interval minutes,
#: block size, CRC-32 of the image, interval writes, length of the status copy (JSON)
_RING_HEADER = struct.Struct("<4sBBBHHBHIIQI")
RING_MAGIC, RING_VERSION = b"MELP", 1


def ring_file_image(meter, index: int) -> bytes | None:
    """The file store.py keeps for data set ``index``: header, a copy of the set's status, the
    image. None when the set has no image (its file goes)."""
    geometry = _data_set(meter, index)
    image = _full_image(memory(meter).rings.get(index), geometry.table_size)
    if image is None:
        return None
    status = data_set_status(meter, index)
    text = json.dumps(status, separators=(",", ":")).encode()
    mode = recording_mode(meter)
    header = _RING_HEADER.pack(
        RING_MAGIC, RING_VERSION, index, MODES.index(mode) if mode in MODES else 0xFF,
        geometry.blocks, geometry.intervals, geometry.channels, geometry.interval_minutes,
        geometry.block_size, zlib.crc32(image), status.get("writes", 0), len(text))
    return header + text + image


def changed_ring_files(meter) -> list[tuple[int, bytes | None]]:
    """(set index, file contents or None to delete) for every set changed since the last save."""
    found = meter.state.load_profile_memory
    if found is None or not found.changed:
        return []
    return [(index, ring_file_image(meter, index)) for index in sorted(found.changed)]


def ring_files_saved(meter) -> None:
    found = meter.state.load_profile_memory
    if found is not None:
        found.changed.clear()


def _read_ring_file(raw: bytes, index: int, geometry: DataSetGeometry,
                    mode: str) -> tuple[dict, int, bytes]:
    """(status copy, writes, image) from a ring file; ValueError says why it cannot be used."""
    if len(raw) < _RING_HEADER.size:
        raise ValueError(f"{len(raw)} bytes, shorter than its header")
    (magic, version, set_index, mode_code, blocks, intervals, channels, minutes, block_size,
     crc, writes, text_length) = _RING_HEADER.unpack_from(raw)
    if magic != RING_MAGIC or version != RING_VERSION:
        raise ValueError("not a load profile ring file of this version")
    saved = (set_index, blocks, intervals, channels, minutes, block_size)
    wanted = (index, geometry.blocks, geometry.intervals, geometry.channels,
              geometry.interval_minutes, geometry.block_size)
    if saved != wanted:
        raise ValueError(f"it holds {blocks} blocks x {intervals} intervals x {channels} "
                         f"channels of {minutes} min; the configuration has {geometry.blocks} x "
                         f"{geometry.intervals} x {geometry.channels} of "
                         f"{geometry.interval_minutes} min")
    if mode_code >= len(MODES) or MODES[mode_code] != mode:
        raise ValueError(f"recorded in another mode than {mode!r}")
    start = _RING_HEADER.size + text_length
    image = raw[start:]
    if len(image) != geometry.table_size:
        raise ValueError(f"{len(image)} image bytes, the data set has {geometry.table_size}")
    if zlib.crc32(image) != crc:
        raise ValueError("its checksum does not match")
    try:
        status = json.loads(raw[_RING_HEADER.size:start])
    except ValueError:
        status = None
    if not isinstance(status, dict):
        raise ValueError("its status copy is damaged")
    return status, writes, image


def _adopt_ring_files(meter, found: LoadProfileMemory) -> None:
    """Take the images a store loaded. The store writes a ring file before the JSON state, so
    after a crash the file may be newer (more writes): then its status copy is the right one;
    a file that is older, damaged, or made for another configuration is ignored (logged) and
    the set starts empty, as it does when a set with valid blocks has no file."""
    files = meter.state.load_profile_files
    if files is None:
        return  # not loaded from a store: the status stands as it is
    meter.state.load_profile_files = None  # adopted once
    geometry = load_profile_geometry(meter)
    mode = recording_mode(meter)
    statuses = _lp_peek(meter).get("status", [])
    for index in sorted(set(files) | set(range(len(statuses)))):
        g = geometry[index] if index < len(geometry) else _INACTIVE
        raw = files.get(index)
        status = statuses[index] if index < len(statuses) else {}
        if raw is None or not g.active:
            if raw is not None or status.get("valid_blocks"):
                why = "the data set is switched off" if raw is not None else "no ring file"
                _ring_lost(meter, index, why)
            continue
        try:
            saved, writes, image = _read_ring_file(raw, index, g, mode)
        except ValueError as exc:
            _ring_lost(meter, index, str(exc))
            continue
        known = status.get("writes", 0)
        if writes < known:
            _ring_lost(meter, index, f"it holds {writes} interval writes, the state {known}")
            continue
        found.rings[index] = bytearray(image)
        if writes > known:  # saved just before a crash kept the JSON from following
            current = status_for_change(meter, index)
            current.clear()
            current.update(saved)


def _ring_lost(meter, index: int, reason: str) -> None:
    log.warning("meter %s: load profile data set %d: ring file not used (%s); the set starts "
                "empty", meter.id, index + 1, reason)
    if index < MAX_DATA_SETS:
        reset_data_set(meter, index)


def source_mapping(meter) -> list[list[int]]:
    """ET66: per data set, the extended source ID behind mapped source 112 + n (0: none)."""
    mapping = _lp_peek(meter).get("mapping")
    return mapping if mapping else [[0] * MAX_CHANNELS for _ in range(MAX_DATA_SETS)]


def memory_length_max(meter, now) -> int:
    """BT60.0 / ET21.107 from ET04.100, the NVM size in 1K blocks (MEP p.63, p.231)."""
    nvm_kbytes = int.from_bytes(meter.table_bytes(et(4), now)[100:102], "little")
    data = nvm_kbytes * 1024 - NVM_RESERVED_BYTES
    return data - 2 * (data // 128)


# ---------------------------------------------------------------------------------------
# BT60 Dimension Load Profile, BT61 Actual Load Profile

_SET_DIMENSIONS = Struct(
    "number_of_blocks" / UINT16,
    "number_of_intervals" / UINT16,
    "number_of_channels" / UINT8,
    "maximum_interval_time" / UINT8,
)


def _dimensions_layout(meter):
    return Struct(
        "memory_length" / UINT32,
        "flags" / _FLAGS,
        "formats" / _FORMATS,
        "data_sets" / Array(data_set_count(meter), _SET_DIMENSIONS),
    )


def _bt60_render(meter, now):
    memory = memory_length_max(meter, now)
    smallest_block = DataSetGeometry(blocks=1, intervals=1, channels=1, interval_minutes=1440)
    maxima = dict(number_of_blocks=memory // smallest_block.block_size,
                  number_of_intervals=MAX_INTERVALS, number_of_channels=MAX_CHANNELS,
                  maximum_interval_time=MAX_INTERVAL_TIME)
    return dict(memory_length=memory, data_sets=[maxima] * data_set_count(meter),
                **_CAPABILITIES)


declare(
    bt(60), "Dimension Load Profile",
    read=READERS,
    layout=_dimensions_layout,
    render=_bt60_render,
    provenance=documented(
        "MEP p.231-232 (blocks = BT60.0 / 11, the smallest block: 1 channel, 1 interval); "
        "OPG p.60 (access)"
    ),
)


def _bt61_render(meter, now):
    geometry = load_profile_geometry(meter)
    return dict(
        memory_length=sum(g.table_size for g in geometry),
        data_sets=[dict(number_of_blocks=g.blocks, number_of_intervals=g.intervals,
                        number_of_channels=g.channels, maximum_interval_time=g.interval_time)
                   for g in geometry],
        **_CAPABILITIES,
    )


declare(
    bt(61), "Actual Load Profile",
    read=READERS,
    layout=_dimensions_layout,
    render=_bt61_render,
    provenance=documented("OPG p.31-32, MEP p.233-234 (memory length = sum of BT64-BT67 sizes)"),
)

# ---------------------------------------------------------------------------------------
# BT62 Load Profile Control

_CHANNEL_SETTING = Struct(
    "flags" / Bits(1, end_reading=0),
    "interval_source" / UINT8,
    "end_reading_source" / UINT8,
)


def _bt62_layout(meter):
    return Struct(*(
        f"data_set_{n}" / Struct("channels" / Array(g.channels, _CHANNEL_SETTING),
                                 "format" / UINT8)
        for n, g in enumerate(load_profile_geometry(meter), start=1)
    ))


def _bt62_defaults(meter):
    return {
        f"data_set_{n}": dict(
            channels=[dict(flags={}, interval_source=s, end_reading_source=0) for s in g.sources],
            format=INT32_FORMAT,
        )
        for n, g in enumerate(load_profile_geometry(meter), start=1)
    }


declare(
    bt(62), "Load Profile Control",
    read=READERS,
    layout=_bt62_layout,
    defaults=_bt62_defaults,  # configured via EP11 only: no client writes it (MEP p.235)
    provenance=documented("OPG p.32-33, MEP p.235-236 (no scalars/divisors: BT60.4.6-9 false)"),
)

# ---------------------------------------------------------------------------------------
# BT63 Load Profile Status

_SET_STATUS = Struct(
    "flags" / Bits(1, block_order=0, overflow=1, list_type=2, block_inhibit_overflow=3,
                   interval_order=4, active_mode=5, test_mode=6),
    "number_of_valid_blocks" / UINT16,
    "last_block" / UINT16,
    "last_block_sequence_number" / UINT32,
    "number_of_unread_blocks" / UINT16,
    "number_of_valid_intervals" / UINT16,
)


def _bt63_render(meter, now):
    """Each set's recording status (``data_set_status``; EP11 resets it). A set with no blocks
    reads as FIFO and inactive (list type 0 when there are no entries)."""
    sets = []
    for n, g in enumerate(load_profile_geometry(meter)):
        status = data_set_status(meter, n)
        sets.append(dict(
            flags=dict(overflow=int(status["overflow"]), list_type=int(g.active),
                       active_mode=int(g.active)),
            number_of_valid_blocks=status["valid_blocks"], last_block=status["last_block"],
            last_block_sequence_number=status["last_block_sequence"],
            number_of_unread_blocks=status["unread_blocks"],
            number_of_valid_intervals=status["valid_intervals"],
        ))
    return dict(data_sets=sets)


declare(
    bt(63), "Load Profile Status",
    read=READERS,
    layout=lambda meter: Struct("data_sets" / Array(data_set_count(meter), _SET_STATUS)),
    render=_bt63_render,
    provenance=documented("OPG p.33-35, MEP p.236-237"),
)

# ---------------------------------------------------------------------------------------
# BT64-BT67 Load Profile Data, Data Sets 1-4


@functools.lru_cache(maxsize=32)
def data_table_layout(geometry: DataSetGeometry):
    """BT64 layout for one data set: ARRAY[BT61.7] of blocks (no End Readings)."""
    interval = Struct(
        "extended_status" / Bytes(geometry.extended_status_size),
        "channel_values" / Array(geometry.channels, Int32sl),
    )
    block = Struct(
        "end_time" / STimeDate(),
        "simple_status" / BitSet(geometry.simple_status_size),
        "intervals" / Array(geometry.intervals, interval),
    )
    return Struct("blocks" / Array(geometry.blocks, block))


def _data_set(meter, index: int) -> DataSetGeometry:
    geometry = load_profile_geometry(meter)
    return geometry[index] if index < len(geometry) else _INACTIVE


def _declare_data_table(index: int) -> None:
    def render(meter, now):
        """The set's image as the recorder wrote it (a slice of it is a partial read); all
        zeros, no valid block, until its first interval."""
        size = _data_set(meter, index).table_size
        image = _full_image(memory(meter).rings.get(index), size)
        return bytes(size) if image is None else image

    declare(
        bt(64 + index), f"Load Profile Data Set {index + 1}",
        read=READERS,
        layout=lambda meter: data_table_layout(_data_set(meter, index)),
        render=render,
        provenance=documented(
            "OPG p.35-38, MEP p.238-240 (End Readings absent: BT61.4.4 false; "
            "an inactive set has zero blocks, so zero bytes)"
        ),
    )


for _index in range(MAX_DATA_SETS):
    _declare_data_table(_index)

# ---------------------------------------------------------------------------------------
# ET21 Load Profile Internal Configuration

#: Firmware 2.10q and 2.10s added fields; a letter build is its place in the alphabet (q = 17).
_FIRMWARE_2_10Q = (2, 10, 17)
_FIRMWARE_2_10S = (2, 10, 19)


def _firmware_since(meter, version: tuple[int, int, int]) -> bool:
    return parse_version(meter.profile.identity.firmware_version) >= version


def _et21_element(meter):
    """One data set's element. Both guides put Interval End Time (local) at 101, one byte after
    the 6-byte UTC time ends at 100: that byte is kept as ``unused_100`` so later offsets match."""
    fields = [
        "current_block_address" / UINT32,
        "current_interval_address" / UINT32,
        "block_size" / UINT32,
        "block_header_size" / UINT16,
        "number_of_valid_blocks" / UINT16,
        "number_of_valid_intervals" / UINT16,
        "last_block_index" / UINT16,
        "last_interval_number" / UINT16,
        "simple_status_offset" / UINT8,
        "simple_status_size" / UINT8,
        "interval_0_offset" / UINT8,
        "interval_size" / UINT8,
        "channel_0_offset" / UINT8,
        "extended_status_common" / UINT8,
        "number_of_channels" / UINT8,
        "interval_time" / UINT8,
        "sources" / Array(8, UINT8),
    ]
    if _firmware_since(meter, _FIRMWARE_2_10Q):
        fields.append("placeholders" / Array(8, Int32sl))
    if _firmware_since(meter, _FIRMWARE_2_10S):
        fields += ["sources_expansion" / Array(8, UINT8), "lp_config_id" / UINT32,
                   "mep_billing_start_channel" / UINT8]
    if firmware_at_least(meter, "3.10"):
        fields += ["block_start_time" / LTimeDate(), "block_start_hour" / UINT8,
                   "block_start_minute" / UINT8, "interval_in_progress" / UINT16,
                   "options" / Bits(1, end_readings=0, scalar_divisor=1, data_reference=2,
                                    ansi_compliance=3)]
    if firmware_at_least(meter, "3.30"):
        fields += ["interval_end_time_utc" / LTimeDate(), "unused_100" / Bytes(1),
                   "interval_end_time_local" / LTimeDate()]
    if firmware_at_least(meter, "3.60"):
        fields += ["max_memory_length" / UINT32, "flags" / Bits(1, nvmf_occurred=0),
                   "reserved" / Bytes(19)]
    elif firmware_at_least(meter, "3.50"):
        fields += ["max_memory_length" / UINT32, "reserved" / Bytes(20)]
    return Struct(*fields)


def _et21_layout(meter):
    return Struct("data_sets" / Array(data_set_count(meter), _et21_element(meter)))


def _ltime(utc: float | None) -> dt.datetime | None:
    """An instant as LTIME_DATE can carry it (years 2000-2099), else None (all zeros)."""
    if utc is None:
        return None
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(utc))
    return moment if 2000 <= moment.year <= 2099 else None


def _et21_render(meter, now):
    """Geometry from ``load_profile_geometry``, the counts and positions from the set's status.
    Addresses are byte offsets into the load profile memory, where the data sets follow each
    other in BT64..BT67 order; the current block and interval are those of the last recorded
    interval (block 0, interval 0 before the first). Block start: 00:00 UTC (the recorder's
    blocks are UTC days); no interval waits for MEP data, so Interval In Progress is 0."""
    element = _et21_element(meter)
    zero = element.parse(bytes(element.sizeof()))
    memory_max = memory_length_max(meter, now)
    values, base = [], 0
    for n, g in enumerate(load_profile_geometry(meter)):
        if not g.active:
            values.append(zero)
            continue
        sources = list(g.sources) + [0] * (MAX_CHANNELS - g.channels)
        status = data_set_status(meter, n)
        last_interval = max(0, status["valid_intervals"] - 1)
        block_address = base + status["last_block"] * g.block_size
        last_end = status.get("last_end")
        block_day = status.get("block_day")
        local_end = _local_time(meter, last_end) if _ltime(last_end) is not None else None
        values.append(dict(
            zero,
            number_of_valid_blocks=status["valid_blocks"],
            number_of_valid_intervals=status["valid_intervals"],
            last_block_index=status["last_block"],
            last_interval_number=last_interval,
            current_block_address=block_address,
            current_interval_address=block_address + g.header_size
            + last_interval * g.interval_size,
            block_size=g.block_size,
            block_header_size=g.header_size,
            simple_status_offset=g.simple_status_offset,
            simple_status_size=g.simple_status_size,
            interval_0_offset=g.header_size,
            interval_size=g.interval_size,
            channel_0_offset=g.extended_status_size,
            extended_status_common=status.get("common", 0),
            number_of_channels=g.channels,
            interval_time=g.interval_time,
            sources=sources[:8],
            sources_expansion=sources[8:16],
            lp_config_id=g.config_id(),
            mep_billing_start_channel=g.channels,  # no M-Bus channels: an empty range
            block_start_time=_ltime(None if block_day is None else block_day * 86400),
            interval_end_time_utc=_ltime(last_end),
            interval_end_time_local=local_end,
            max_memory_length=memory_max,
        ))
        base += g.table_size
    return dict(data_sets=values)


def _local_time(meter, utc: float) -> dt.datetime | None:
    """BT55's local time at meter-UTC instant ``utc``."""
    local = meter.local(utc - meter.state.clock_offset)
    return local if 2000 <= local.year <= 2099 else None


declare(
    et(21), "Load Profile Internal Configuration",
    read={Key.MK, Key.PK, Key.MBK, Key.MAK, Key.PLC},
    layout=_et21_layout,
    render=_et21_render,
    provenance=documented("OPG p.38-40, MEP p.95-97 (fields by firmware 2.10q ... 3.60)"),
)

# ---------------------------------------------------------------------------------------
# ET62 Load Profile Display Configuration


def _id_size(meter) -> int:
    """Display ID codes: 4 characters, 5 on Gen 4 meters (firmware 4.0+; MEP p.167)."""
    return 5 if firmware_at_least(meter, "4.0") else 4


def _channel_display(meter):
    """One channel's display entry; ET75 copies it (MEP p.171, p.180)."""
    return Struct(
        "id_code" / Chars(_id_size(meter)),
        "id_dp_state" / UINT8,
        "data_format" / Bits(1, fields_after_dp=(0, 3), fields_before_dp=(3, 4),
                             zero_suppression=7),
    )


def _et62_layout(meter):
    code = Chars(_id_size(meter))
    fields = [
        "flags" / Bits(1, display_local_time=0, use_all_channel_id_characters=1,
                       disable_load_profile_display=2),
        "load_profile_list_id_code" / code,
        "load_profile_list_id_dp_state" / UINT8,
        "load_profile_date_id_code" / code,
        "load_profile_date_id_dp_state" / UINT8,
        "interval_time_id_code" / code,
        "interval_time_id_dp_state" / UINT8,
        "extended_status_id_code" / code,
        "extended_status_id_dp_state" / UINT8,
        "channels" / Array(MAX_CHANNELS, _channel_display(meter)),
    ]
    if firmware_at_least(meter, "3.70"):
        fields += ["power_outage_list_id_code" / code, "power_outage_list_id_dp_state" / UINT8,
                   "power_outage_number_id_code" / code,
                   "power_outage_number_id_dp_state" / UINT8]
    return Struct(*fields)


#: The guide gives no default Data Format: eight digits, none after the point, leading zeros shown.
_DEFAULT_DATA_FORMAT = dict(fields_after_dp=0, fields_before_dp=8, zero_suppression=0)


def _et62_defaults(meter):
    return dict(
        flags={},
        load_profile_list_id_code="P01",
        load_profile_list_id_dp_state=4,
        load_profile_date_id_code="DATE",
        load_profile_date_id_dp_state=0,
        interval_time_id_code="TIME",
        interval_time_id_dp_state=0,
        extended_status_id_code="STAT",
        extended_status_id_dp_state=0,
        channels=[dict(id_code=f"CH{n:02d}", id_dp_state=0, data_format=_DEFAULT_DATA_FORMAT)
                  for n in range(1, MAX_CHANNELS + 1)],
        power_outage_list_id_code="",
        power_outage_list_id_dp_state=0,
        power_outage_number_id_code="NUM",
        power_outage_number_id_dp_state=0,
    )


def _et62_apply(meter, values, ctx):
    """Decimal point states have one bit per ID character; a data format shows 1..8 digits
    before the point and 0..3 after, at most 8 in all (MEP p.168-172)."""
    dp_limit = 1 << _id_size(meter)
    states = [v for name, v in values.items() if name.endswith("_dp_state")]
    states += [channel.id_dp_state for channel in values.channels]
    if any(state >= dp_limit for state in states):
        raise ServiceError(ResponseCode.ERR, f"ET62 decimal point state must be below {dp_limit}")
    for n, channel in enumerate(values.channels, start=1):
        fmt = channel.data_format
        before, after = fmt["fields_before_dp"], fmt["fields_after_dp"]
        if not (after <= 3 and 1 <= before and before + after <= 8):
            raise ServiceError(ResponseCode.ERR, f"ET62 channel {n}: digits before the point "
                               "1..8, after it 0..3, at most 8 in all")


declare(
    et(62), "Load Profile Display Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_et62_layout,
    defaults=_et62_defaults,
    apply=_et62_apply,
    provenance=documented(
        "MEP p.167-172 (Gen 4 = firmware 4.0+: 5-character IDs; power outage fields from 3.70); "
        "OPG p.61 (access)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET66 Load Profile Source ID Mapping

declare(
    et(66), "Load Profile Source ID Mapping",
    read=READERS,  # changed only by EP11/EP52 (MEP p.173)
    layout=Struct("extended_source_ids" / Array(MAX_DATA_SETS, Array(MAX_CHANNELS, UINT16))),
    render=lambda meter, now: dict(extended_source_ids=source_mapping(meter)),
    provenance=documented("MEP p.173 (ARRAY[4][BT60.11] of UINT16; nothing mapped by default); "
                          "OPG p.61 (access)"),
)

# ---------------------------------------------------------------------------------------
# ET75 Primary Load Profile Channel Change Log


def _demand_count(meter) -> int:
    """BT20.4, Number of Demands: ET75 keeps the demand sources used before each change."""
    return meter.table_bytes(bt(20), 0.0)[4]


def et75_entry_layout(meter):
    """143 bytes with 4-character display IDs (ET36 "Entry Size", MEP p.108), 159 on Gen 4."""
    return Struct(
        "timestamp" / STimeDate(),
        "extended_source_ids" / Array(MAX_CHANNELS, UINT16),
        "demand_sources" / Array(_demand_count(meter), UINT8),
        "demand_sub_interval" / UINT8,
        "demand_interval_multiplier" / UINT8,
        "lp_display_config" / Array(MAX_CHANNELS, _channel_display(meter)),
    )


def _et75_layout(meter):
    return Struct(*list_header(), "entries" / Array(ET75_CURRENT_ENTRIES,
                                                     et75_entry_layout(meter)))


def _channel_log_defaults() -> dict:
    return dict(sequence=0, unread=0, overflow=False, entries=[])


def channel_log_view(meter) -> dict:
    """ET75's list for reading."""
    return _lp_peek(meter).get("channel_log") or _channel_log_defaults()


def channel_log_state(meter) -> dict:
    """ET75's list for changing (EP52 appends; BP05/EP26 take unread entries)."""
    return lp_state(meter).setdefault("channel_log", _channel_log_defaults())


def et75_has_room(meter) -> bool:
    """ET75 is no circular queue: when it is full, a change it would have to log is refused
    (MEP p.177-178)."""
    return len(channel_log_view(meter)["entries"]) < ET75_CURRENT_ENTRIES


def log_channel_change(meter, now: float, extended_source_ids, demand_sources,
                       sub_interval: int, multiplier: int) -> None:
    """Append an ET75 entry: what the primary data set used before a change, stamped (UTC) with
    the end of the interval that first records the change (MEP p.178-180)."""
    primary = load_profile_geometry(meter)[0]
    step = 60 * primary.interval_minutes
    utc = meter.utc_seconds(now)
    stamp = dt.datetime.fromtimestamp(-(-utc // step) * step, dt.timezone.utc)
    et62 = CATALOG[et(62)].layout_for(meter).parse(meter.table_bytes(et(62), now))
    display = Array(MAX_CHANNELS, _channel_display(meter)).build(et62.channels)
    log = channel_log_state(meter)
    log["sequence"] += 1
    log["unread"] = min(log["unread"] + 1, ET75_CURRENT_ENTRIES)
    log["entries"].append(dict(
        time=stamp.replace(tzinfo=None).isoformat(timespec="minutes"),
        extended_source_ids=list(extended_source_ids), demand_sources=list(demand_sources),
        sub_interval=sub_interval, multiplier=multiplier, display=display.hex(),
    ))
    meter.dirty = True


def _et75_render(meter, now):
    """The logged changes in order (changes are logged only with Welmec 11.2 compliance,
    ET54.71.0, by EP52 and ET62 writes). List type is false while the log has no entries
    (MEP p.177)."""
    layout = _et75_layout(meter)
    prefix = Struct(*et75_entry_layout(meter).subcons[:-1])
    demands = _demand_count(meter)
    log = channel_log_view(meter)
    entries = log["entries"][:ET75_CURRENT_ENTRIES]
    body = b"".join(prefix.build(dict(
        timestamp=dt.datetime.fromisoformat(e["time"]),
        extended_source_ids=e["extended_source_ids"],
        demand_sources=(e["demand_sources"] + [0] * demands)[:demands],
        demand_sub_interval=e["sub_interval"], demand_interval_multiplier=e["multiplier"],
    )) + bytes.fromhex(e["display"]) for e in entries)
    header = Struct(*list_header()).build(dict(
        flags=dict(list_type=int(ET75_CURRENT_ENTRIES > 0)),
        valid_entries=len(entries),
        last_entry_element=max(0, len(entries) - 1),
        last_entry_sequence_number=log["sequence"] & 0xFFFF,
        unread_entries=log["unread"],
    ))
    return (header + body).ljust(layout.sizeof(), b"\0")


declare(
    et(75), "Primary Load Profile Channel Change Log",
    read=READERS,
    layout=_et75_layout,
    render=_et75_render,
    provenance=documented("MEP p.177-180 (entries: ET36 current entries); OPG p.62 (access)"),
)
