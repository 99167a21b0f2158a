"""``meter-emu procedures`` and ``meter-emu events``: the counts the mission names (8 + 46
procedures, 50 + 46 events), every entry with its provenance, and the generated docs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meter_emu import cli
from meter_emu.device.alarms import ALARMS
from meter_emu.events import EVENTS
from meter_emu.procedures import PROCEDURES
from meter_emu.provenance import KINDS

ROOT = Path(__file__).resolve().parent.parent


def meter_emu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meter_emu", *args], capture_output=True,
                          text=True, check=False)


def test_procedures_json_lists_8_basic_and_46_extended():
    done = meter_emu("procedures", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    kinds = [p["kind"] for p in listing]
    assert kinds.count("basic") == 8 and kinds.count("extended") == 46
    assert {p["label"] for p in listing if p["kind"] == "basic"} == {
        "BP04", "BP05", "BP09", "BP10", "BP12", "BP13", "BP14", "BP15"}
    for p in listing:
        assert p["provenance"] in KINDS and p["source"], p
        assert p["effect"] and p["execute"] != "-", p
    ep17 = next(p for p in listing if p["label"] == "EP17")
    assert ep17["number"] == 2065


def test_events_json_lists_50_basic_and_46_extended():
    done = meter_emu("events", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    kinds = [e["kind"] for e in listing]
    assert kinds.count("basic") == 50 and kinds.count("extended") == 46
    for e in listing:
        assert e["provenance"] in KINDS and e["source"] and e["trigger"], e
        assert (e["number"] < 64) == (e["kind"] == "basic")
    by_number = {e["number"]: e for e in listing}
    assert by_number[66]["alarm"] == "load_disconnect_changed"  # BT03 byte 4 bit 2
    assert by_number[18]["log"] == "ET79" and by_number[3]["log"] == "BT74"


def test_the_documented_nes_event_ids_line_up_with_bt03_alarm_bits():
    """The rule events.py builds on: 64 + k is BT03 manufacturer alarm bit k."""
    for number, alarm in ((66, "load_disconnect_changed"), (67, "control_relay_open"),
                          (72, "invalid_password"), (78, "code_bank_changed"),
                          (79, "load_profile_backfill_failed"), (94, "lp_set1_unread")):
        offset, bit = ALARMS[alarm]
        assert number == 64 + (offset - 4) * 8 + bit
        assert EVENTS[number].alarm == alarm


@pytest.mark.parametrize("command", ["procedures", "events"])
def test_plain_listing_counts(command):
    done = meter_emu(command)
    assert done.returncode == 0, done.stderr
    expected = "8 basic and 46 extended" if command == "procedures" else "50 basic and 46 extended"
    assert expected in done.stdout


@pytest.mark.parametrize("name, listing, markdown", [
    ("procedures", cli.procedure_listing, cli._markdown_procedures),
    ("events", cli.event_listing, cli._markdown_events),
])
def test_generated_docs_are_current(name, listing, markdown):
    assert (ROOT / "docs" / f"{name}.md").read_text() == markdown(listing()), (
        f"docs/{name}.md is stale: run  meter-emu {name} --markdown > docs/{name}.md")


def test_every_procedure_number_is_declared_once_and_labelled():
    assert len(PROCEDURES) == 54
    for number, proc in PROCEDURES.items():
        assert proc.number == number
        assert proc.label == (f"EP{number - 2048:02d}" if number >= 2048 else f"BP{number:02d}")
