"""Every table of the catalog through the optical port: full and partial reads decode with the
table's layout at the size it declares; tables nobody may write refuse writes with IAR. And the
catalog is the mission's: 41 basic and 68 extended tables, each with a provenance, with
docs/tables.md generated from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MK, LinkClient
from meter_emu.clock import ManualClock
from meter_emu.cli import markdown_listing, catalog_listing
from meter_emu.device.access import Key, OPEN
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG

MAX_FULL_READ = 16000  # the test client negotiates 2 packets of 8192 bytes
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def session():
    """One logged-on MK session for the whole module (reads change nothing)."""
    meter = Meter(load_profile())
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(MK)
    return meter, client


@pytest.mark.parametrize("number", sorted(CATALOG), ids=lambda n: CATALOG[n].label)
def test_table_reads_in_full_and_in_parts(session, number):
    meter, client = session
    table = CATALOG[number]
    assert Key.MK in table.read or OPEN in table.read, f"{table.label}: the MK cannot read it"
    layout = table.layout_for(meter)
    size = layout.sizeof()
    whole = meter.table_bytes(number, ManualClock().now())
    assert len(whole) == size
    if size <= MAX_FULL_READ:
        assert client.read(number) == whole
    else:  # too big for the negotiated packets (or for a read's 16-bit count): renegotiate
        assert client.read(number) == b"\x09"
    layout.parse(whole)  # decodes with its layout
    if size:
        middle, count = size // 3, max(1, min(size // 2, 4000))
        assert client.read(number, middle, count) == whole[middle:middle + count].ljust(count,
                                                                                       b"\0")


@pytest.mark.parametrize("number", sorted(n for n in CATALOG if not CATALOG[n].writable),
                         ids=lambda n: CATALOG[n].label)
def test_read_only_tables_refuse_writes_with_iar(session, number):
    meter, client = session
    assert client.write(number, b"\x00") == b"\x05"
    assert client.write(number, b"\x00", offset=0) == b"\x05"


def test_tables_json_lists_41_basic_and_68_extended_tables():
    done = subprocess.run([sys.executable, "-m", "meter_emu", "tables", "--json"],
                          capture_output=True, text=True, check=True)
    tables = json.loads(done.stdout)["tables"]
    basic = [t for t in tables if t["id"] < 2048]
    extended = [t for t in tables if 2048 <= t["id"] < 4096]
    assert (len(basic), len(extended), len(tables)) == (41, 68, 109)
    assert all(t["provenance"] in ("documented", "c12.19", "designed") and t["source"]
               for t in tables)
    assert {t["label"] for t in tables if t["pending"]} >= {"BT53", "BT54"}


def test_docs_tables_md_is_generated_from_the_catalog():
    assert (ROOT / "docs" / "tables.md").read_text() == markdown_listing(catalog_listing()), (
        "docs/tables.md is stale: run  meter-emu tables --markdown > docs/tables.md")
