"""``meter-emu tables show``: a table's layout and values, from the profile or a state directory."""

from __future__ import annotations

import json
import subprocess
import sys

from meter_emu.device.meter import Meter
from meter_emu.profile import load_profile
from meter_emu.store import StateStore
from meter_emu.tables import CATALOG, WriteContext, et
from meter_emu.device.access import Key


def meter_emu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meter_emu", *args], capture_output=True,
                          text=True, check=False)


def test_show_prints_the_layout_with_the_guides_offsets():
    done = meter_emu("tables", "show", "ET04")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ET04 (wire ID 2052) System Information: 140 bytes, stored")
    rows = {line.split()[2]: line.split()[:2] for line in lines if line[:7].strip().isdigit()}
    # MEP p.56-66: Program ID at 14, PK Access at 52, IDT Version at 116, Security Mode at 127
    assert rows["program_id"] == ["14", "8"] and rows["pk_access"] == ["52", "1"]
    assert rows["idt_version"] == ["116", "1"] and rows["security_mode"] == ["127", "1"]
    assert '"self_identification": "meter_emu OSGP meter"' in done.stdout


def test_show_json_follows_the_profile_and_firmware():
    done = meter_emu("tables", "show", "2059", "--json", "--set",
                     "identity.firmware_version=4.30.01")
    shown = json.loads(done.stdout)
    assert shown["table"]["label"] == "ET11" and shown["table"]["size"] == 39
    assert shown["values"]["devices"] == 6  # Gen4: two MEP clients (MEP p.77)
    assert shown["layout"][0] == {"offset": 0, "size": 1, "name": "devices",
                                  "type": "UINT8"}


def test_show_reads_a_state_directory(tmp_path):
    profile = load_profile()
    meter = Meter(profile)
    serial = b"FROM-STATE-DIR".ljust(30, b"\0")
    meter.write_table(et(3), serial, WriteContext(Key.MK, 1_767_225_600.0))
    store = StateStore(tmp_path)
    store.save(meter)
    done = meter_emu("tables", "show", "ET03", "--json", "--state", str(tmp_path))
    assert json.loads(done.stdout)["values"]["utility_serial_number"] == "FROM-STATE-DIR"


def test_show_pending_table_prints_the_ped(tmp_path):
    done = meter_emu("tables", "show", "4150", "--json")
    shown = json.loads(done.stdout)
    assert shown["table"]["label"] == "pending BT54" and shown["ped"] == "00" * 6


def test_show_refuses_unknown_tables_with_a_message():
    for name, message in (("XX", "is not a table"), ("BT02", "is not one of this meter's tables"),
                          ("4097", "has no pending table")):
        done = meter_emu("tables", "show", name)
        assert done.returncode == 2 and message in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    assert 2 not in CATALOG


def test_a_reader_that_leaves_early_is_no_error():
    """`meter-emu tables | head -1`: the closed pipe ends the listing quietly."""
    result = subprocess.run(f"{sys.executable} -m meter_emu tables | head -1", shell=True,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("table") and result.stderr == ""
