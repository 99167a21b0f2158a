"""The state store of a fleet (store.py): one document per meter, batched flushes, shards
sharing a DIR, the conversion of the one-file layout of earlier versions, and damage that is
refused with a message naming the file."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from tinydb import TinyDB

from meter_emu.device.access import Key
from meter_emu.device.meter import Meter
from meter_emu.fleet.progress import Progress
from meter_emu.metering import recorder
from meter_emu.profile import fleet_profiles, load_profile
from meter_emu.store import BATCH, FORMAT_VERSION, StateStore, StoreError
from meter_emu.tables import bt

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
Q = 900
ROOT = Path(__file__).resolve().parent.parent


def fleet(count: int) -> list[Meter]:
    """Meters with distinct states (clock offset = index, an alarm on odd ones), all dirty."""
    meters = [Meter(p) for p in fleet_profiles(load_profile(), count)]
    for index, meter in enumerate(meters):
        meter.state.clock_offset = float(index)
        if index % 2:
            meter.state.alarms.add(3)
        meter.dirty = True
    return meters


def doc_of(state) -> dict:
    return json.loads(json.dumps(state.to_doc()))


def files(directory: Path) -> dict[str, tuple[int, bytes]]:
    """name -> (inode, contents) of the per-meter documents."""
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in (directory / "meters").iterdir()}


def test_one_document_per_meter_and_a_save_touches_only_its_own(tmp_path):
    meters = fleet(3)
    store = StateStore(tmp_path)
    for meter in meters:
        store.save(meter)
    before = files(tmp_path)
    assert sorted(before) == sorted(f"{m.id}.json" for m in meters)
    assert not (tmp_path / "meters.json").exists()
    assert all(not m.dirty for m in meters)

    meters[1].state.clock_offset = 1234.5
    meters[1].dirty = True
    store.flush(meters)  # only the dirty one is written
    after = files(tmp_path)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {f"{meters[1].id}.json"}
    assert StateStore(tmp_path).load(meters[1].id).clock_offset == 1234.5
    assert StateStore(tmp_path).load("never-saved") is None


def test_a_batched_flush_saves_every_meter_and_leaves_no_temporary_file(tmp_path):
    meters = fleet(BATCH * 3)
    progress = Progress(len(meters), "saving", stream=io.StringIO())
    StateStore(tmp_path).flush(meters, progress=progress)
    assert progress.done == len(meters)
    assert all(not m.dirty for m in meters)
    assert not list(tmp_path.rglob("*.tmp"))
    again = StateStore(tmp_path)
    for meter in meters:
        assert doc_of(again.load(meter.id)) == doc_of(meter.state), meter.id


def _recorded(meters, intervals: int) -> None:
    """Each meter records ``intervals`` load profile intervals of its own values."""
    for index, meter in enumerate(meters):
        recorder.run_due(meter, T0)
        for k in range(1, intervals + 1):
            meter.state.registers["fwd_active_wh"] = 1000 * index + 10 * k
            recorder.run_due(meter, T0 + Q * k)


def test_a_batched_flush_keeps_each_meters_load_profile_ring(tmp_path):
    meters = fleet(BATCH)
    _recorded(meters, 5)
    StateStore(tmp_path).flush(meters)
    store = StateStore(tmp_path)
    assert store.ring_path(meters[0].id, 0).exists()
    now = T0 + 6 * Q
    for meter in meters:
        again = Meter(meter.profile, store.load(meter.id))
        assert again.read_table(bt(64), Key.MK, now) == meter.read_table(bt(64), Key.MK, now)
        assert again.read_table(bt(63), Key.MK, now) == meter.read_table(bt(63), Key.MK, now)
    images = {meter.read_table(bt(64), Key.MK, now) for meter in meters}
    assert len(images) == len(meters)  # the check compares distinct rings


def test_a_torn_temporary_file_is_ignored_and_the_old_document_loads(tmp_path):
    meter = fleet(1)[0]
    store = StateStore(tmp_path)
    store.save(meter)
    path = store.document_path(meter.id)
    torn = path.with_name(path.name + ".tmp")
    torn.write_bytes(b'{"id": "' + meter.id.encode() + b'", "format": 1, "sta')  # kill -9
    again = StateStore(tmp_path)
    assert doc_of(again.load(meter.id)) == doc_of(meter.state)
    meter.state.clock_offset = 77.0
    meter.dirty = True
    again.save(meter)  # the next save writes over the leftover
    assert StateStore(tmp_path).load(meter.id).clock_offset == 77.0
    assert not torn.exists()


DAMAGE = {
    "text": b"this is not JSON {{{",
    "binary": b"\xff\xfe\x00\x81garbage",
    "list": b"[1, 2, 3]",
    "other-meter": b'{"id": "someone-else", "format": 1, "state": {}}',
    "unknown-format": b'{"id": "%s", "format": 99, "state": {}}',
    "damaged-state": b'{"id": "%s", "format": 1, "state": {"alarms": 5}}',
}


@pytest.mark.parametrize("content", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_document_is_refused_naming_its_file(tmp_path, content):
    meter = fleet(1)[0]
    store = StateStore(tmp_path)
    store.save(meter)
    path = store.document_path(meter.id)
    path.write_bytes(content.replace(b"%s", meter.id.encode()))
    with pytest.raises(StoreError) as error:
        StateStore(tmp_path).load(meter.id)
    assert str(path) in str(error.value)


def test_two_stores_on_one_directory_keep_each_others_writes(tmp_path):
    meters = fleet(2 * BATCH)
    first, second = StateStore(tmp_path), StateStore(tmp_path)
    mine, theirs = meters[:BATCH], meters[BATCH:]
    for round_ in range(3):
        for meter in meters:
            meter.state.clock_offset += 1000
            meter.dirty = True
        first.flush(mine if round_ != 1 else mine[:1])
        second.flush(theirs if round_ != 1 else theirs[:1])
    first.flush(mine)
    second.flush(theirs)
    again = StateStore(tmp_path)
    for meter in meters:
        assert doc_of(again.load(meter.id)) == doc_of(meter.state), meter.id


WRITER = """
import sys
from meter_emu.device.meter import Meter
from meter_emu.profile import fleet_profiles, load_profile
from meter_emu.store import StateStore

directory, first, count, rounds = sys.argv[1], *map(int, sys.argv[2:])
profiles = fleet_profiles(load_profile(), first + count, range(first, first + count))
meters = [Meter(p) for p in profiles]
store = StateStore(directory)
for round_ in range(1, rounds + 1):
    for meter in meters:
        meter.state.clock_offset = round_ * 1000.0 + first
        meter.dirty = True
    if round_ % 2:
        store.flush(meters)
    else:
        store.save(meters[0])
        store.flush(meters)
print(sorted(m.id for m in meters))
"""


def test_two_processes_writing_disjoint_meters_at_once_keep_every_write(tmp_path):
    count, rounds = BATCH + 2, 20
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(first),
                                 str(count), str(rounds)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for first in (0, count)]
    ids = {}
    for first, writer in zip((0, count), writers):
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        ids[first] = json.loads(out.replace("'", '"'))
    store = StateStore(tmp_path)
    for first, meter_ids in ids.items():
        for meter_id in meter_ids:
            assert store.load(meter_id).clock_offset == rounds * 1000.0 + first, meter_id
    assert not list(tmp_path.rglob("*.tmp"))


# ---- the one-file layout of earlier versions -----------------------------------------------


def write_legacy(directory: Path, meters) -> Path:
    """``meters.json`` as the earlier store wrote it: TinyDB, table "meters"."""
    path = directory / "meters.json"
    db = TinyDB(path)
    db.table("meters").insert_multiple(
        {"id": m.id, "format": FORMAT_VERSION, "state": m.state.to_doc()} for m in meters)
    db.close()
    return path


def test_a_legacy_state_file_is_converted_once(tmp_path, caplog):
    meters = fleet(4)
    legacy = write_legacy(tmp_path, meters)
    with caplog.at_level(logging.INFO, logger="meter_emu.store"):
        store = StateStore(tmp_path)
    assert "converted" in caplog.text and str(legacy) in caplog.text
    assert not legacy.exists()
    assert (tmp_path / "meters.json.migrated").exists()
    for meter in meters:
        assert doc_of(store.load(meter.id)) == doc_of(meter.state), meter.id

    meters[0].state.clock_offset = 999.0
    meters[0].dirty = True
    store.save(meters[0])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meter_emu.store"):
        again = StateStore(tmp_path)
    assert "converted" not in caplog.text
    assert again.load(meters[0].id).clock_offset == 999.0


def test_a_conversion_interrupted_keeps_the_documents_already_written(tmp_path):
    """kill -9 after some documents were written, before meters.json was renamed: the next
    start converts the rest and keeps what is there."""
    meters = fleet(3)
    write_legacy(tmp_path, meters)
    running = StateStore(tmp_path)
    (tmp_path / "meters.json.migrated").rename(tmp_path / "meters.json")
    (tmp_path / "meters" / f"{meters[2].id}.json").unlink()
    meters[0].state.clock_offset = 555.0
    running.save(meters[0])  # a document newer than meters.json
    store = StateStore(tmp_path)
    assert store.load(meters[0].id).clock_offset == 555.0
    assert doc_of(store.load(meters[2].id)) == doc_of(meters[2].state)


def test_a_damaged_legacy_file_is_refused_and_left_alone(tmp_path):
    meters = fleet(2)
    legacy = write_legacy(tmp_path, meters)
    data = json.loads(legacy.read_text())
    data["meters"]["2"]["state"] = {}
    legacy.write_text(json.dumps(data))
    content = legacy.read_bytes()
    with pytest.raises(StoreError) as error:
        StateStore(tmp_path)
    assert str(legacy) in str(error.value)
    assert legacy.read_bytes() == content
    assert not list((tmp_path / "meters").iterdir())  # nothing converted from a bad file


CONVERTER = """
import sys
from meter_emu.store import StateStore
store = StateStore(sys.argv[1])
print(",".join(str(store.load(m).clock_offset) for m in sys.argv[2:]))
"""


def test_shards_opening_a_legacy_directory_together_convert_it_once(tmp_path):
    meters = fleet(BATCH * 4)
    write_legacy(tmp_path, meters)
    ids = [m.id for m in meters]
    openers = [subprocess.Popen([sys.executable, "-c", CONVERTER, str(tmp_path), *ids],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    expected = ",".join(str(m.state.clock_offset) for m in meters)
    for opener in openers:
        out, err = opener.communicate(timeout=60)
        assert opener.returncode == 0, err
        assert out.strip() == expected
    assert (tmp_path / "meters.json.migrated").exists()
    assert len(list((tmp_path / "meters").iterdir())) == len(meters)


# ---- meter-emu run ---------------------------------------------------------------------------

TEN_YEARS = 10 * 365 * 86_400.0


def test_meter_emu_run_converts_a_legacy_directory_and_serves_its_state(start_emulator,
                                                                        tmp_path):
    meters = fleet(300)  # two start batches
    meters[0].state.clock_offset = TEN_YEARS  # the optical port serves meter 0
    state = tmp_path / "state"
    state.mkdir()
    write_legacy(state, meters)
    emu = start_emulator("--count", "300", state=state, cnip="udp://127.0.0.1:0")
    assert "converted" in emu.stderr(), emu.stderr()
    with e2e.c1218_session(emu.client_url, e2e.RK) as conn:
        clock = e2e.ltime_date(conn.get_table_data(52))
    assert clock.year >= 2035, clock  # the converted state, not a fresh meter's clock
    emu.kill9()
    assert len(list((state / "meters").glob("*.json"))) == 300
    again = start_emulator("--count", "300", state=state, cnip="udp://127.0.0.1:0")
    assert "converted" not in again.stderr()


def test_meter_emu_run_refuses_a_damaged_document_of_a_later_batch(tmp_path):
    meters = fleet(300)
    store = StateStore(tmp_path)
    store.flush(meters)
    path = store.document_path(meters[280].id)  # built after the ports opened
    path.write_bytes(b"garbage")
    done = e2e.run_meter_emu("run", "--count", "300", "--cnip", "udp://127.0.0.1:0",
                             "--optical", "off", "--mep", "off", "--mqtt", "off",
                             "--state", str(tmp_path), "--ready-file", str(tmp_path / "r.json"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert str(path) in done.stderr
    assert path.read_bytes() == b"garbage"
