"""Issue 7: every key x table x operation rule of the two guides, from a generated matrix.

tests/data/access_rules.json transcribes the guides' access statements (optical MK, PK, RK:
Optical Port guide; MEP MAK, MBK: MEP guide), one cell per table x {read, write} and procedure x
execute x key, each with its page. Every cell is tried through a real session: a C12.18 logon
with the key's password on the optical link, or a MEP message authenticated with the key.

* read: a 4-byte partial read answers OK with the data, or ISC (0x03);
* write: a 1-byte partial write of the byte already there (harmless) answers anything but
  ISC/IAR, or ISC (IAR when no key at all may write the table, meter.py's documented rule);
* execute: a BT07 request with empty parameters (which fail validation, result 2, for every
  procedure that takes any; the few without parameters run, on a fresh meter) posts a BT08
  result other than 5, or 5 "no authorization".

Cells the guides state (``test_guide_rule``) are kept apart from cells where they are silent and
the JSON records the emulator's own choice (``test_code_choice``). A cell whose "needs" names a
file is a disagreement still to be fixed there: xfail(strict) until it is (then drop "needs").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LinkClient, bt07
from meter_emu.clock import ManualClock
from meter_emu.device.errors import ResponseCode
from meter_emu.device.meter import Meter
from meter_emu.ports.mep import mep_protocol
from meter_emu.ports.optical import optical_protocol
from meter_emu.procedures import PROCEDURES
from meter_emu.profile import load_profile
from meter_emu.security import OmaKey
from meter_emu.tables import CATALOG

RULES = json.loads((Path(__file__).parent / "data" / "access_rules.json").read_text())
PROFILE = load_profile()
#: ET92-ET98 have no bytes before firmware 4.10 (MEP p.190): their writes are tried on this one.
LATE_FIRMWARE = load_profile(overrides=["identity.firmware_version=4.20.00"])
OPTICAL_KEYS = ("MK", "PK", "RK")
NO_AUTHORIZATION, UNRECOGNIZED = 5, 6
TABLE_IDS = {table.label: number for number, table in CATALOG.items()}
PROCEDURE_IDS = {proc.label: number for number, proc in PROCEDURES.items()}


# ---- sessions ---------------------------------------------------------------------------

class OpticalSession:
    """A C12.18 session logged on with the key's password (OPG p.13)."""

    def __init__(self, meter, key: str):
        self.client = LinkClient(optical_protocol(meter, ManualClock()))
        self.client.logon(meter.profile.key(key.lower()))

    def request(self, apdu: bytes, data: bytes = b"") -> bytes:
        trailer = bytes([(-sum(data)) & 0xFF]) if apdu[0] in (0x40, 0x4F) else b""
        return self.client.request(apdu + data + trailer)


class MepSession:
    """MEP messages authenticated with the key, the sequence number the meter expects."""

    def __init__(self, meter, key: str):
        self.meter = meter
        self.link = mep_protocol(meter, ManualClock())
        self.oma = OmaKey(meter.profile.key(key.lower())[:16])

    def request(self, apdu: bytes, data: bytes = b"") -> bytes:
        body = apdu + data + self.meter.mep_sequence.to_bytes(4, "big")
        message = body + self.oma.digest(body)
        out = self.link.receive(len(message).to_bytes(2, "big") + message, 1.0)
        assert int.from_bytes(out[:2], "big") == len(out) - 2
        assert len(out) > 2 + 8, f"the key was not accepted: {out.hex()}"
        return out[2:-8]


def session(meter, key: str):
    return OpticalSession(meter, key) if key in OPTICAL_KEYS else MepSession(meter, key)


# ---- the three operations ----------------------------------------------------------------

def try_read(meter, label: str, key: str) -> bool:
    table_id = TABLE_IDS[label]
    response = session(meter, key).request(b"\x3F" + table_id.to_bytes(2, "big") + bytes(3)
                                           + (4).to_bytes(2, "big"))
    if response[:1] == b"\x00":
        assert response[1:3] == b"\x00\x04" and len(response) >= 7
        return True
    assert response == bytes([ResponseCode.ISC]), f"{label}: {response.hex()}"
    return False


def try_write(meter, label: str, key: str) -> bool:
    table_id = TABLE_IDS[label]
    now = ManualClock().now()
    if not meter.table_bytes(table_id, now):
        meter = Meter(LATE_FIRMWARE)
    same = meter.table_bytes(table_id, now)[:1] or b"\0"  # BT65-BT67 stay empty: no data set
    response = session(meter, key).request(
        b"\x4F" + table_id.to_bytes(2, "big") + bytes(3) + (1).to_bytes(2, "big"), same)
    assert len(response) == 1, response.hex()
    refusal = ResponseCode.ISC if CATALOG[table_id].writable else ResponseCode.IAR
    if response[0] == refusal:
        return False
    assert response[0] not in (ResponseCode.ISC, ResponseCode.IAR), f"{label}: {response.hex()}"
    return True


def try_execute(meter, label: str, key: str) -> bool:
    number = PROCEDURE_IDS[label]
    link = session(meter, key)
    request = bt07(number, 1)  # PSN 1, no parameters
    assert link.request(b"\x40\x00\x07" + len(request).to_bytes(2, "big"), request) == b"\x00"
    bt08 = link.request(b"\x3F\x00\x08" + bytes(3) + (4).to_bytes(2, "big"))
    assert bt08[:1] == b"\x00", bt08.hex()
    posted = bt08[3:7]
    assert posted[:3] == number.to_bytes(2, "little") + b"\x01", posted.hex()
    assert posted[3] != UNRECOGNIZED
    return posted[3] != NO_AUTHORIZATION


# ---- the matrix --------------------------------------------------------------------------

def cells():
    for table in RULES["tables"]:
        for op in ("read", "write"):
            for key, cell in table[op].items():
                yield table["label"], op, key, cell
    for proc in RULES["procedures"]:
        for key, cell in proc["execute"].items():
            yield proc["label"], "execute", key, cell


def matrix(guide: bool, when: bool = True):
    """pytest params for the guide-backed cells (or the silent ones), needs-cells xfail."""
    params = []
    for label, op, key, cell in cells():
        if (cell["guide"] != "silent") != guide or (not when and "when" in cell):
            continue
        marks = ()
        if "needs" in cell:
            marks = pytest.mark.xfail(strict=True, reason=f"needs {cell['needs']} change")
        allowed = cell["guide"] == "yes" or cell.get("code") == "yes"
        params.append(pytest.param(label, op, key, allowed, cell["source"], marks=marks,
                                   id=f"{label}-{op}-{key}"))
    return params


SHARED = Meter(PROFILE)  # reads change nothing that another read depends on
OPERATIONS = {"read": try_read, "write": try_write, "execute": try_execute}


def check(label: str, op: str, key: str, allowed: bool, source: str) -> None:
    meter = SHARED if op == "read" else Meter(PROFILE)  # writes and procedures: a fresh meter
    got = OPERATIONS[op](meter, label, key)
    verdict = "allowed" if allowed else "refused"
    assert got == allowed, f"{label} {op} with {key}: should be {verdict} ({source})"


@pytest.mark.parametrize("label, op, key, allowed, source", matrix(guide=True))
def test_guide_rule(label, op, key, allowed, source):
    check(label, op, key, allowed, source)


@pytest.mark.parametrize("label, op, key, allowed, source", matrix(guide=False))
def test_code_choice(label, op, key, allowed, source):
    """The guides are silent: the emulator's choice, recorded in the JSON, holds."""
    check(label, op, key, allowed, source)


# ---- the catalog's own view agrees with the guides ----------------------------------------

@pytest.fixture(scope="module")
def listing():
    out = subprocess.run([sys.executable, "-m", "meter_emu", "tables", "--json"], check=True,
                         capture_output=True, text=True).stdout
    doc = json.loads(out)
    return {row["label"]: row for row in doc["tables"] + doc["procedures"]}


# Conditional cells (RK on BP10/EP16, by ET04.71.0) are not in the listing's execute column.
@pytest.mark.parametrize("label, op, key, allowed, source", matrix(guide=True, when=False))
def test_catalog_listing_agrees(listing, label, op, key, allowed, source):
    column = listing[label][op].split()
    assert ("OPEN" in column or key in column) == allowed, f"{label} {op} {column} ({source})"


def test_rules_cover_the_catalog():
    """One row per declared table and procedure; the guide tables the emulator lacks are named."""
    assert [t["label"] for t in RULES["tables"]] == [t.label for _, t in sorted(CATALOG.items())]
    assert [p["label"] for p in RULES["procedures"]] == \
        [p.label for _, p in sorted(PROCEDURES.items())]
    assert not set(RULES["not_emulated"]) & set(TABLE_IDS)
    for label, op, key, cell in cells():
        assert cell["guide"] in ("yes", "no", "silent") and cell["source"], (label, op, key)
        assert (cell["guide"] == "silent") == ("code" in cell), (label, op, key)
    for table in RULES["tables"]:
        assert set(table["read"]) == set(table["write"]) == {"MK", "PK", "RK", "MAK", "MBK"}


def test_rk_clock_rule_follows_et04():
    """The one conditional rule: with ET04.71.0 set, the RK may no longer run BP10 (MEP p.60)."""
    meter = Meter(load_profile(overrides=["security.rk_may_set_clock=false"]))
    assert not try_execute(meter, "BP10", "RK")
    assert try_execute(Meter(PROFILE), "BP10", "RK")
