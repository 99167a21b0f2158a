"""Load profile tables (BT60-BT67, ET21, ET62, ET66, ET75) against the guides, and the geometry
they share: a reconfiguration must move every dependent size and offset together."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import MK, PK, RK, LinkClient

from meter_emu.datatypes import STimeDate
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, bt, et
from meter_emu.tables.dimensions import firmware_at_least
from meter_emu.tables.load_profile import data_table_layout, et75_entry_layout, \
    load_profile_geometry

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SMALL_TABLES = [bt(60), bt(61), bt(62), bt(63), et(21), et(62), et(66), et(75)]
DATA_TABLES = [bt(64), bt(65), bt(66), bt(67)]
WRITE_OK, ERR, ISC, IAR, RNO = b"\x00", b"\x01", b"\x03", b"\x05", b"\x09"


def u16(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 2], "little")


def u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 4], "little")


def meter_with(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=list(overrides)))


# ---- reads through the optical port -------------------------------------------------------


@pytest.mark.parametrize("table_id", SMALL_TABLES + DATA_TABLES[1:])
def test_full_and_partial_reads_match_the_layout(client, meter, table_id):
    client.logon(MK)
    full = client.read(table_id)
    layout = CATALOG[table_id].layout_for(meter)
    assert len(full) == layout.sizeof() == len(meter.table_bytes(table_id, client.now))
    layout.parse(full)
    if full:
        count = min(7, len(full) - 2)
        assert client.read(table_id, 2, count) == full[2:2 + count]


def test_bt64_is_read_in_parts(client, meter):
    client.logon(RK)
    image = meter.table_bytes(bt(64), client.now)
    assert len(image) == 40 * 1841
    parts = b"".join(client.read(bt(64), offset, 8000) for offset in range(0, len(image), 8000))
    assert parts[:len(image)] == image
    CATALOG[bt(64)].layout_for(meter).parse(image)


def test_full_read_of_a_big_data_table_answers_rno(clock):
    client = LinkClient(optical_protocol(meter_with("load_profile.blocks=20"), clock))
    client.logon(MK)
    assert client.read(bt(64)) == RNO  # 36820 bytes: more than 2 packets of 8192 bytes
    assert len(client.read(bt(64), 36_000, 820)) == 820


def test_inactive_data_sets_are_zero_length_tables(client):
    client.logon(MK)
    for table_id in DATA_TABLES[1:]:
        assert client.read(table_id) == b""


def test_et21_is_not_readable_with_rk(client):
    client.logon(RK)
    assert client.read(et(21)) == ISC  # OPG p.38: MK, PK only
    assert len(client.read(bt(61))) == 13


def test_full_data_table_renders_the_same_every_time(meter):
    """Its speed is a figure of benchmarks/bench_load_profile.py."""
    first = meter.table_bytes(bt(64), NOW)
    assert len(first) == 73_640
    assert meter.table_bytes(bt(64), NOW) == first


# ---- documented values --------------------------------------------------------------------


def test_bt60_product_maxima(meter):
    # MEP p.231-232: 233856 bytes for 256K NVM (ET04.100 = 256), extended and simple interval
    # status, INT32 only, 21259 blocks, 1440 intervals, 16 channels, interval time 255
    assert meter.table_bytes(bt(60), NOW) == bytes.fromhex("80910300 000C 20 0B53 A005 10 FF")
    assert u16(meter.table_bytes(et(4), NOW), 100) == 256


def test_bt61_to_bt63_default_configuration(meter):
    # OPG p.31-35: 73640 bytes (40 blocks of 1841), 96 intervals of 15 minutes, 4 channels
    assert meter.table_bytes(bt(61), NOW) == bytes.fromhex("A81F0100 000C 20 2800 6000 04 0F")
    # OPG p.32-33: 3-byte channel records (no end reading, source, 0), then format 32 (INT32)
    assert meter.table_bytes(bt(62), NOW) == bytes.fromhex("000000 000100 000200 000300 20")
    # OPG p.33-35: circular list (bit 2), active (bit 5), nothing recorded yet
    assert meter.table_bytes(bt(63), NOW) == bytes([0x24]) + bytes(12)


def test_et21_default_geometry(meter):
    et21 = meter.table_bytes(et(21), NOW)
    assert len(et21) == 94  # OPG p.38-39: the last 3.10 field is at 93
    assert u32(et21, 8) == 1841  # block size
    assert u16(et21, 12) == 17  # header: 5-byte End Time + 12 bytes of simple status
    assert et21[22:30] == bytes([5, 12, 17, 19, 3, 0, 4, 15])
    assert et21[30:38] == bytes([0, 1, 2, 3, 0, 0, 0, 0])  # sources
    assert et21[78:82] != bytes(4)  # LP Config ID
    assert et21[82] == 4  # MEP billing start channel: none of the 4 channels is M-Bus


def test_et62_defaults(meter):
    # MEP p.167-172: "P01" with DP state 4, "DATE", "TIME", "STAT", channels "CH01".."CH16"
    et62 = meter.table_bytes(et(62), NOW)
    assert len(et62) == 1 + 4 * 5 + 16 * 6
    assert et62[:21] == b"\x00P01 \x04DATE\x00TIME\x00STAT\x00"
    assert et62[21:27] == b"CH01\x00\x40" and et62[111:117] == b"CH16\x00\x40"


def test_et66_and_et75_are_empty(meter):
    assert meter.table_bytes(et(66), NOW) == bytes(4 * 16 * 2)  # MEP p.173: ARRAY[4][BT60.11]
    assert meter.table_bytes(et(75), NOW) == bytes(6)  # MEP p.108: 0 current entries
    assert et75_entry_layout(meter).sizeof() == 143  # MEP p.108 (ET36 entry size)


# ---- one geometry for every table ----------------------------------------------------------

CONFIGURATIONS = [
    (),
    ("load_profile.channels=1", "load_profile.sources=[7]", "load_profile.interval_minutes=60",
     "load_profile.blocks=3"),
    ("load_profile.channels=16", f"load_profile.sources={list(range(16))}",
     "load_profile.interval_minutes=1", "load_profile.blocks=2"),
    ("identity.firmware_version=3.60.00", "load_profile.data_sets=3", "load_profile.channels=5",
     "load_profile.sources=[1,2,3,4,5]", "load_profile.interval_minutes=1440",
     "load_profile.blocks=7"),
    ("identity.firmware_version=4.30.01", "load_profile.data_sets=4", "load_profile.channels=9",
     f"load_profile.sources={list(range(20, 29))}", "load_profile.interval_minutes=5",
     "load_profile.blocks=4"),
]


def _block_end(block: int) -> dt.datetime:
    return dt.datetime(2026, 1, 2) + dt.timedelta(days=block)


def _marked_image(layout, block_count, intervals, channels, marked_block, marked_interval):
    """A data table whose blocks carry their index in End Time and whose marked interval holds
    recognisable channel values."""
    empty_interval = dict(extended_status=bytes(channels // 2 + 1), channel_values=[0] * channels)
    marked = dict(extended_status=b"\x10" * (channels // 2 + 1),
                  channel_values=[1000 + c for c in range(channels)])
    blocks = []
    for b in range(block_count):
        rows = [empty_interval] * intervals
        if b == marked_block:
            rows = rows[:marked_interval] + [marked] + rows[marked_interval + 1:]
        blocks.append(dict(end_time=_block_end(b), simple_status=frozenset({0}), intervals=rows))
    return layout.build(dict(blocks=blocks)), marked


@pytest.mark.parametrize("overrides", CONFIGURATIONS)
def test_geometry_is_consistent_across_tables_and_the_read_recipe(overrides):
    m = meter_with(*overrides)
    lp = m.profile.load_profile
    sets = 4 if firmware_at_least(m, "3.50") else 1
    bt61 = CATALOG[bt(61)].layout_for(m).parse(m.table_bytes(bt(61), NOW))
    bt62 = CATALOG[bt(62)].layout_for(m).parse(m.table_bytes(bt(62), NOW))
    bt63 = CATALOG[bt(63)].layout_for(m).parse(m.table_bytes(bt(63), NOW))
    et21 = CATALOG[et(21)].layout_for(m).parse(m.table_bytes(et(21), NOW))
    sizes = [len(m.table_bytes(t, NOW)) for t in DATA_TABLES]
    assert len(bt61.data_sets) == len(et21.data_sets) == len(bt63.data_sets) == sets
    assert bt61.memory_length == sum(sizes)
    for n in range(4):
        if n >= min(lp.data_sets, sets):  # inactive: no blocks, no table
            assert sizes[n] == 0
            if n < sets:
                assert bt61.data_sets[n].number_of_blocks == 0 == et21.data_sets[n].block_size
                assert bt63.data_sets[n].flags["active_mode"] == 0
                assert bt62[f"data_set_{n + 1}"].channels == []
            continue
        dims, internal, status = bt61.data_sets[n], et21.data_sets[n], bt63.data_sets[n]
        channels, intervals = lp.channels, 1440 // lp.interval_minutes
        # BT61 from the profile (OPG p.31-32)
        assert (dims.number_of_blocks, dims.number_of_intervals, dims.number_of_channels) == (
            lp.blocks, intervals, channels)
        assert dims.maximum_interval_time == (84 if lp.interval_minutes == 1440
                                              else lp.interval_minutes)
        # ET21 agrees with BT61 and BT64's record sizes (OPG p.35-39)
        assert internal.number_of_channels == channels
        assert internal.interval_time == dims.maximum_interval_time
        assert internal.interval_size == (channels // 2 + 1) + 4 * channels
        assert internal.channel_0_offset == channels // 2 + 1
        assert internal.simple_status_offset == 5
        assert internal.simple_status_size == (intervals + 7) // 8
        assert internal.block_header_size == internal.interval_0_offset == 5 + (intervals + 7) // 8
        assert internal.block_size == (internal.block_header_size
                                       + intervals * internal.interval_size)
        assert sizes[n] == dims.number_of_blocks * internal.block_size
        sources = [c.interval_source for c in bt62[f"data_set_{n + 1}"].channels]
        assert sources == list(lp.sources)
        assert (list(internal.sources) + list(internal.sources_expansion))[:channels] == sources
        # the read recipe (OPG p.30-31) lands on the right block and interval of BT64..BT67
        layout = CATALOG[bt(64 + n)].layout_for(m)
        assert layout.sizeof() == sizes[n]
        last_block, last_interval = dims.number_of_blocks - 1, intervals - 1
        image, marked = _marked_image(data_table_layout(load_profile_geometry(m)[n]),
                                      dims.number_of_blocks, intervals, channels,
                                      last_block, last_interval)
        offset = ((last_block - 1) % dims.number_of_blocks) * internal.block_size
        block = image[offset:offset + internal.block_size]
        previous = (last_block - 1) % dims.number_of_blocks
        assert block[:5] == STimeDate().build(_block_end(previous))
        offset = (last_block * internal.block_size + internal.block_header_size
                  + last_interval * internal.interval_size)
        record = image[offset:offset + internal.interval_size]
        assert record[:channels // 2 + 1] == marked["extended_status"]
        values = record[internal.channel_0_offset:]
        assert [int.from_bytes(values[4 * c:4 * c + 4], "little") for c in range(channels)] == \
            marked["channel_values"]
        # and with the live BT63/ET21 values it stays inside the table
        offset = ((status.last_block - 1) % dims.number_of_blocks) * internal.block_size
        assert offset + internal.block_size <= sizes[n]
        offset = (status.last_block * internal.block_size + internal.block_header_size
                  + internal.last_interval_number * internal.interval_size)
        assert offset + internal.interval_size <= sizes[n]


def test_reconfiguration_changes_the_config_id():
    ids = {u32(meter_with(*c).table_bytes(et(21), NOW), 78) for c in CONFIGURATIONS[:3]}
    assert len(ids) == 3


def test_data_sets_need_firmware_3_50():
    # OPG p.30: multiple data sets only from firmware 3.50; before, BT64 holds everything
    old = meter_with("load_profile.data_sets=2")
    assert len(old.table_bytes(bt(61), NOW)) == 13 and len(old.table_bytes(bt(65), NOW)) == 0
    new = meter_with("load_profile.data_sets=2", "identity.firmware_version=3.50.00")
    assert len(new.table_bytes(bt(61), NOW)) == 7 + 4 * 6
    assert len(new.table_bytes(bt(65), NOW)) == len(new.table_bytes(bt(64), NOW)) > 0
    assert len(new.table_bytes(bt(63), NOW)) == 4 * 13


# ---- firmware-dependent layouts ------------------------------------------------------------


@pytest.mark.parametrize("firmware, element", [
    ("2.10.00", 38), ("2.10.17", 70), ("2.10.19", 83), ("3.10.21", 94), ("3.30.00", 107),
])
def test_et21_single_set_sizes_by_firmware(firmware, element):
    # OPG p.38-40: fields added in 2.10q (38), 2.10s (70), 3.10 (83), 3.30 (94)
    m = meter_with(f"identity.firmware_version={firmware}")
    assert len(m.table_bytes(et(21), NOW)) == element


@pytest.mark.parametrize("firmware", ["3.50.00", "3.60.00"])
def test_et21_from_3_50_has_four_131_byte_elements(firmware):
    m = meter_with(f"identity.firmware_version={firmware}")
    et21 = m.table_bytes(et(21), NOW)
    assert len(et21) == 4 * 131  # OPG p.39-40: reserved bytes end at 130
    assert u32(et21, 107) == 233_856  # Max Memory Length = BT60.0
    assert et21[131:262] == bytes(131)  # data set 2 inactive


def test_et62_sizes_and_gen4_offsets():
    assert len(meter_with().table_bytes(et(62), NOW)) == 117
    m370 = meter_with("identity.firmware_version=3.70.00")
    et62 = m370.table_bytes(et(62), NOW)
    assert len(et62) == 127 and et62[117:] == b"    \x00NUM \x00"  # MEP p.172
    gen4 = meter_with("identity.firmware_version=4.30.01")
    et62 = gen4.table_bytes(et(62), NOW)
    assert len(et62) == 149  # MEP p.168-172, Gen 4 offsets
    assert et62[1:7] == b"P01  \x04" and et62[7:12] == b"DATE "
    assert et62[25:32] == b"CH01 \x00\x40" and et62[137:] == b"     \x00NUM  \x00"
    assert et75_entry_layout(gen4).sizeof() == 159  # 5-character IDs in the copied display part


# ---- writes --------------------------------------------------------------------------------


def test_et62_write_is_read_back_and_validated(client, meter):
    client.logon(PK)
    original = client.read(et(62))
    assert client.write(et(62), b"KWH1\x02", 27) == WRITE_OK  # channel 2 ID and DP state
    assert client.read(et(62), 27, 6) == b"KWH1\x02\x40"
    changed = client.read(et(62))
    new = bytearray(changed)
    new[0] = 0x01  # display local time
    assert client.write(et(62), bytes(new)) == WRITE_OK
    assert client.read(et(62)) == bytes(new)
    for offset, byte in ((26, 0x00), (26, 8 << 3 | 3), (5, 0x10), (31, 0x10)):
        # no digit before the point; 11 digits; DP state beyond 4 characters (MEP p.168-171)
        assert client.write(et(62), bytes([byte]), offset) == ERR
        assert client.read(et(62)) == bytes(new)
    assert original != bytes(new)


def test_et62_write_needs_a_configuring_key(client):
    client.logon(RK)
    assert client.write(et(62), b"X", 1) == ISC


@pytest.mark.parametrize("table_id", [bt(60), bt(61), bt(62), bt(63), bt(64), et(21), et(66),
                                      et(75)])
def test_read_only_tables_refuse_writes(client, meter, table_id):
    client.logon(MK)
    before = meter.table_bytes(table_id, client.now)
    assert client.write(table_id, b"\x01", 0) == IAR  # MEP: write "None"; BT62 via EP11 only
    assert meter.table_bytes(table_id, client.now) == before
