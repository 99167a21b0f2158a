"""End to end: what ``meter-emu run --state DIR`` keeps across restarts and ``kill -9``, and how
``meter-emu run`` refuses bad state and bad profiles (exit status 2, a message, no traceback).
"""

from __future__ import annotations

import datetime as dt

import pytest

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

NEW_SERIAL = b"E2E-PERSIST-0042".ljust(30, b"\0")
DEFAULT_SERIAL = b"UTIL-0000001".ljust(30, b"\0")
TARGET = dt.datetime(2030, 6, 15, 12, 34, 56)


def _write_serial_and_set_clock(url: str, emu: e2e.Emulator | None = None) -> None:
    """Write ET03's utility serial number and run BP10 with the MK; with ``emu``, kill -9 it
    right after the meter acknowledged the last of them."""
    with e2e.c1218_session(url, e2e.MK, user_id=3) as conn:
        code, _ = conn.run_procedure(10, False, e2e.bp10_params(TARGET))
        assert code == 0, f"BP10 result code {code}"
        conn.set_table_data(e2e.ET03, NEW_SERIAL, 0)  # returns once the meter answered OK
        if emu is not None:
            emu.kill9()
            e2e.abandon(conn)
            assert emu.proc.returncode == -9


def _read_serial_and_clock(url: str) -> tuple[bytes, dt.datetime]:
    with e2e.c1218_session(url, e2e.RK) as conn:
        et03 = conn.get_table_data(e2e.ET03)
        bt52 = conn.get_table_data(52)
    assert len(et03) == e2e.ET03_SIZE, et03.hex(" ")
    return et03[:30], e2e.ltime_date(bt52)


def test_state_survives_kill_9(start_emulator, tmp_path):
    state = tmp_path / "state"
    emu = start_emulator(state=state)
    serial, clock = _read_serial_and_clock(emu.client_url)
    assert serial == DEFAULT_SERIAL and clock.year < 2030

    _write_serial_and_set_clock(emu.client_url, emu)

    again = start_emulator(state=state)
    serial, clock = _read_serial_and_clock(again.client_url)
    assert serial == NEW_SERIAL, serial
    assert clock.year == 2030, clock
    assert TARGET <= clock <= TARGET + dt.timedelta(seconds=60), clock

    # the history log came back too: the BP10 'time changed' entry of user 3
    log = e2e.parse_bt74(e2e.read_table_lib(again.client_url, 74))
    changed = log.events(e2e.EVENT_TIME_CHANGED)
    assert [e.user_id for e in changed] == [3], log


def test_state_survives_sigterm_restart_twice(start_emulator, tmp_path):
    """A clean stop (SIGTERM, exit 0) keeps the state too, and a second restart still has it."""
    state = tmp_path / "state"
    emu = start_emulator(state=state)
    _write_serial_and_set_clock(emu.client_url)
    assert emu.stop() == 0, emu.stderr()
    assert "meter-emu: stopped" in emu.stdout()
    assert not emu.ready_file.exists(), "a stopped emulator leaves no ready file behind"
    for _ in range(2):
        again = start_emulator(state=state)
        serial, clock = _read_serial_and_clock(again.client_url)
        assert serial == NEW_SERIAL and clock.year == 2030, (serial, clock)
        assert again.stop() == 0, again.stderr()


def test_sigterm_with_a_client_connected_stops_cleanly(start_emulator, tmp_path):
    """termineter's ``connect`` leaves its connection open until the next ``run``, so a user
    often stops the emulator with a client still connected: that must be a clean stop too."""
    state = tmp_path / "state"
    emu = start_emulator(state=state)
    with e2e.c1218_session(emu.client_url, e2e.MK) as conn:
        conn.set_table_data(e2e.ET03, NEW_SERIAL, 0)
        assert emu.stop() == 0, emu.stderr()
        e2e.abandon(conn)
    assert "meter-emu: stopped" in emu.stdout()
    again = start_emulator(state=state)
    assert _read_serial_and_clock(again.client_url)[0] == NEW_SERIAL
    assert "Traceback" not in emu.stderr(), (
        "SIGTERM with a TCP client connected logged a traceback:\n" + emu.stderr())


def test_without_state_a_restart_forgets(start_emulator, tmp_path):
    emu = start_emulator()
    _write_serial_and_set_clock(emu.client_url)
    serial, clock = _read_serial_and_clock(emu.client_url)
    assert serial == NEW_SERIAL and clock.year == 2030  # it did take effect in this run
    assert emu.stop() == 0

    again = start_emulator()
    serial, clock = _read_serial_and_clock(again.client_url)
    assert serial == DEFAULT_SERIAL, serial
    assert clock.year < 2030, clock


GARBAGE = {
    "text": b"this is not JSON {{{",
    "truncated-json": b'{"meters": {"1": {"id": "meter-1", "format": 1, "sta',
    "binary": b"\xff\xfe\x00\x81garbage\x00\xc3",
    "json-list": b"[1, 2, 3]",
    "json-wrong-shape": b'{"meters": 5}',
    "damaged-meter-state": b'{"meters": {"1": {"id": "meter-1", "format": 1, "state": {}}}}',
    "unknown-format": b'{"meters": {"1": {"id": "meter-1", "format": 99, "state": {}}}}',
}


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_corrupted_state_file_is_refused(tmp_path, content):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "meters.json"
    path.write_bytes(content)
    done = e2e.run_meter_emu("run", "--optical", "tcp://127.0.0.1:0", "--mep", "off", "--state", str(state),
                             "--ready-file", str(tmp_path / "ready.json"))
    assert "Traceback" not in done.stderr, (
        f"meter-emu crashed on a corrupted state file instead of refusing it:\n{done.stderr}")
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr, (
        f"the message does not name the state file {path}: {done.stderr.strip()!r}")
    assert not (tmp_path / "ready.json").exists()
    assert path.read_bytes() == content, "the damaged file must be left alone for inspection"


@pytest.mark.parametrize("args, names", [
    (["--set", "identity.model=TOO-LONG-MODEL"], "identity.model"),
    (["--profile", "/nonexistent.toml"], "/nonexistent.toml"),
    (["--set", "meter.colour=red"], "meter.colour"),
], ids=["model-too-long", "missing-profile-file", "unknown-key"])
def test_bad_profile_is_refused(tmp_path, args, names):
    done = e2e.run_meter_emu("run", "--optical", "tcp://127.0.0.1:0", "--mep", "off",
                             "--ready-file", str(tmp_path / "ready.json"), *args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert names in done.stderr, done.stderr
    assert done.stderr.startswith("meter-emu: "), done.stderr
    assert not (tmp_path / "ready.json").exists()
