"""Table layouts against the guides' documented bytes, and catalog invariants."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.datatypes import PackedVersion
from meter_emu.device.meter import Meter
from meter_emu.procedures import PROCEDURES
from meter_emu.profile import load_profile
from meter_emu.provenance import KINDS
from meter_emu.tables import CATALOG

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_every_entry_has_provenance_and_renders_at_a_fixed_size(meter):
    for number, table in CATALOG.items():
        assert table.provenance.kind in KINDS and table.provenance.source
        image = meter.table_bytes(number, NOW)
        layout = table.layout_for(meter)
        assert len(image) == layout.sizeof(), table.label
        assert layout.build(layout.parse(image)) == image, f"{table.label} does not round-trip"
        if table.provenance.kind == "documented":
            assert "p." in table.provenance.source, f"{table.label}: cite the page"
    for proc in PROCEDURES.values():
        assert proc.provenance.kind in KINDS and proc.provenance.source


def test_bt00_fixed_part_matches_the_guide(meter):
    bt00 = meter.table_bytes(0, NOW)
    # OPG p.48-49: LSB first + ASCII; time format 2, offset/count access, BCD ids; INT32 x2
    assert bt00[:3] == bytes([0x02, 0x2A, 0x88])
    assert bt00[3:7] == b"NES "
    assert bt00[7:13] == bytes([2, 0, 255, 12, 1, 0])  # electric, no default set, 255, 12, C12.19 v1.0
    assert bt00[13:19] == bytes([10, 13, 2, 12, 6, 3])


def _bits(raw: bytes) -> set[int]:
    return {i for i in range(len(raw) * 8) if raw[i // 8] >> (i % 8) & 1}


def test_bt00_bitmaps_are_derived_from_the_catalog(meter):
    bt00 = meter.table_bytes(0, NOW)
    d13, d14, d15, d16 = bt00[13:17]
    cursor = 19
    sections = []
    for size in (d13, d14, d15, d16, d13, d14):
        sections.append(_bits(bt00[cursor:cursor + size]))
        cursor += size
    assert cursor == len(bt00)
    basic_used, ext_used, basic_procs, ext_procs, basic_write, ext_write = sections
    assert basic_used == {n for n in CATALOG if n < 2048}
    assert ext_used == {n - 2048 for n in CATALOG if n >= 2048}
    assert basic_procs == {n for n in PROCEDURES if n < 2048}
    assert ext_procs == {n - 2048 for n in PROCEDURES if n >= 2048}
    assert basic_write == {n for n, t in CATALOG.items() if n < 2048 and t.writable}
    assert ext_write == {n - 2048 for n, t in CATALOG.items() if n >= 2048 and t.writable}
    assert {0, 1, 3, 5, 7, 8, 23, 74} <= basic_used and {3, 4} <= ext_used and 10 in basic_procs


def test_bt01_layout_and_firmware_packing(meter):
    bt01 = meter.table_bytes(1, NOW)
    assert bt01 == b"NES OSGP1PH " + bytes.fromhex("1000 3155 0000000012345678".replace(" ", ""))
    packed = PackedVersion()
    assert packed.build("3.00.24") == b"\x30\x18"  # OPG p.19 examples
    assert packed.build("3.10.21") == b"\x31\x55"
    assert packed.parse(b"\x31\x55") == "3.10.21"


def test_char_id_format_changes_bt00_bt01_and_bt05():
    m = Meter(load_profile(overrides=["identity.id_format=char", "identity.serial_number=SN-1",
                                      "identity.device_id=DEV-7"]))
    assert m.table_bytes(0, NOW)[1] == 0x0A  # ID format bit 5 clear
    assert m.table_bytes(1, NOW)[16:] == b"SN-1".ljust(16)
    assert m.table_bytes(5, NOW) == b"DEV-7".ljust(20)


def test_bt20_bt21_match_the_mep_guide_sample():
    # MEP p.47-48: BT20 = 3F 0E FD 0F 08 10 01 04 08 1A on a meter with 26 present values
    m = Meter(load_profile(overrides=["dimensions.present_values=26"]))
    assert m.table_bytes(20, NOW) == bytes.fromhex("3F0EFD0F081001040 81A".replace(" ", ""))
    bt21 = m.table_bytes(21, NOW)
    assert bt21[2:] == bytes.fromhex("000F000001040 01A".replace(" ", ""))
    assert bt21[0] & 0x04 == 0 and bt21[8] == 0  # no demand reset counter, no present demands


def test_bt23_and_bt28_offsets(meter):
    meter.state.registers.update(fwd_active_wh=1000, rev_active_wh=250)
    bt23 = meter.table_bytes(23, NOW)
    values = [int.from_bytes(bt23[i:i + 4], "little", signed=True) for i in range(0, 60, 4)]
    assert values[:8] == [1000, 250, 0, 0, 0, 0, 1250, 750]
    assert len(bt23) == 4 * 15 * (1 + 4)  # totals + 4 tiers
    bt28 = meter.table_bytes(28, NOW)
    present = [int.from_bytes(bt28[i:i + 4], "little", signed=True) for i in range(0, 164, 4)]
    assert present[7] == 230_000 and present[10] == 1000 and present[11] == 50_000


def test_bt52_sample_from_the_mep_guide(meter):
    # MEP App. A/B: 04 02 10 0F 3B 37 = 2004-02-16 15:59:55, a Monday
    meter.set_utc(NOW, dt.datetime(2004, 2, 16, 15, 59, 55))
    bt52 = meter.table_bytes(52, NOW)
    assert bt52 == bytes.fromhex("0402100F3B37") + bytes([0x10 | 1])  # GMT flag, Monday


def test_et03_and_et04_sizes_and_fields(meter):
    et03 = meter.table_bytes(2051, NOW)
    assert len(et03) == 143 and et03[:13] == b"UTIL-0000001\0"
    et04 = meter.table_bytes(2052, NOW)
    assert len(et04) == 140
    assert et04[4:10] == bytes.fromhex("0A0B0C0D0E0F")  # Neuron ID at offset 4
    assert int.from_bytes(et04[60:62], "little") == 230  # rated voltage at 60
    assert et04[127] == 0  # security mode RC4


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(CATALOG)), st.integers(0, 300), st.binary(min_size=1, max_size=40))
def test_any_write_either_applies_or_leaves_the_table_unchanged(number, offset, data):
    from meter_emu.device.access import Key
    from meter_emu.device.errors import ServiceError
    from meter_emu.tables.catalog import WriteContext

    m = Meter(load_profile())
    before = {n: m.table_bytes(n, NOW) for n in CATALOG if n != 7}
    try:
        m.write_table(number, data, WriteContext(Key.MK, NOW), offset)
    except ServiceError:
        after = {n: m.table_bytes(n, NOW) for n in CATALOG if n != 7}
        assert after == before
    for n in CATALOG:
        assert len(m.table_bytes(n, NOW)) == CATALOG[n].layout_for(m).sizeof()


def test_tables_command_lists_the_catalog_as_json():
    out = subprocess.run([sys.executable, "-m", "meter_emu", "tables", "--json"],
                         capture_output=True, text=True, check=True).stdout
    listing = json.loads(out)
    labels = {t["label"]: t for t in listing["tables"]}
    assert set(labels) == {t.label for t in CATALOG.values()}
    assert labels["BT01"]["read"] == "OPEN" and labels["BT01"]["size"] == 24
    assert labels["BT05"]["provenance"] == "c12.19"
    assert labels["ET04"]["source"].startswith("MEP p.")
    assert [p["label"] for p in listing["procedures"]] == [p.label for _, p in
                                                           sorted(PROCEDURES.items())]
    assert {e["number"] for e in listing["events"]} >= {3, 72}


@pytest.mark.parametrize("table", [7, 8])
def test_procedure_tables_are_sized_by_bt00(meter, table):
    bt00 = meter.table_bytes(0, NOW)
    expected = 3 + bt00[9] if table == 7 else 4 + bt00[10]
    assert len(meter.table_bytes(table, NOW)) == expected
