"""Shared helpers for the end-to-end tests (test_e2e_termineter.py, test_e2e_persistence.py).

Everything here goes through the paths a user takes: ``meter-emu run`` as a subprocess with a
ready file, a real TCP socket or pty, the real ``termineter`` 1.0.6 CLI driven through stdin
with a private HOME, and the ``c1218`` client library where termineter cannot do the job
(partial reads, a packet size large enough for BT74, an exact moment for ``kill -9``).

termineter's exit code is always 0, so callers look at its output: ``[-]`` marks an error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import mosquitto_program

# ---- default profile values -------------------------------------------------------------

MK = b"MK-meter-emu-default"  # optical Unique Key
PK = b"PK-meter-emu-default"  # optical Provisioning Key
RK = b"RK-meter-emu-default"  # optical Read-only Key
MK_HEX, PK_HEX, RK_HEX = MK.hex(), PK.hex(), RK.hex()
ZERO_PASSWORD_HEX = "00" * 20  # termineter's default PASSWORD

ET03 = 2048 + 3  # Utility Information: utility serial number (30 chars, NUL-padded) at offset 0
ET03_SIZE = 143
BT74_HEADER = 11
BT74_ENTRY = 14
EVENT_TIME_CHANGED = 3
EVENT_INVALID_PASSWORD = 72

READY_TIMEOUT = 15.0
TERMINETER_TIMEOUT = 60.0


def _script(name: str) -> str:
    """The console script installed next to this interpreter (no pyenv shim), else PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e /work/main termineter==1.0.6)")
    return found


def run_client(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``meter-emu client ARGS`` to completion (a test failure if it hangs)."""
    try:
        return subprocess.run([_script("meter-emu"), "client", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"meter-emu client {' '.join(args)} did not finish: {exc.stderr!r}")


# ---- the emulator -------------------------------------------------------------------------


class Emulator:
    """One ``meter-emu run`` subprocess. Its stdout/stderr go to files in ``workdir``."""

    def __init__(self, workdir: Path, args: list[str]):
        self.workdir = workdir
        self.ready_file = workdir / "ready.json"
        self.args = [_script("meter-emu"), "run", "--ready-file", str(self.ready_file), *args]
        # kept open for the child's lifetime; closed by stop()/kill9()
        self._stdout = open(workdir / "stdout.txt", "wb")  # noqa: SIM115
        self._stderr = open(workdir / "stderr.txt", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=self._stderr, cwd=workdir)
        self.ready: dict = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return (self.workdir / "stderr.txt").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.workdir / "stdout.txt").read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.ready = json.loads(self.ready_file.read_text())
                return self.ready
            if self.proc.poll() is not None:
                pytest.fail(f"meter-emu exited with status {self.proc.returncode} before it was "
                            f"ready: {' '.join(self.args)}\nstderr:\n{self.stderr()}")
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"meter-emu wrote no ready file within {timeout} s: {' '.join(self.args)}\n"
                    f"stderr:\n{self.stderr()}")

    @property
    def optical(self) -> str:
        """The optical port as the ready file gives it: tcp://HOST:PORT or a pty slave path."""
        return self.ready["ports"]["optical"]

    @property
    def client_url(self) -> str:
        """What termineter and the c1218 library take (pyserial URL or device path)."""
        url = self.optical
        return "socket://" + url[len("tcp://"):] if url.startswith("tcp://") else url

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._close_files()
        return self.proc.returncode

    def kill9(self) -> None:
        """``kill -9``: no signal handler, no final save."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._close_files()

    def _close_files(self) -> None:
        for handle in (self._stdout, self._stderr):
            if not handle.closed:
                handle.close()


@dataclass
class EmulatorFactory:
    tmp_path: Path
    started: list[Emulator] = field(default_factory=list)

    def __call__(self, *args: str, optical: str = "tcp://127.0.0.1:0", state: Path | None = None,
                 wait: bool = True, mep: str = "tcp://127.0.0.1:0",
                 mqtt: str = "off", cnip: str = "off") -> Emulator:
        argv = ["--optical", optical, "--mep", mep, "--mqtt", mqtt, "--cnip", cnip, *args]
        if state is not None:
            argv += ["--state", str(state)]
        workdir = Path(tempfile.mkdtemp(prefix="emu-", dir=self.tmp_path))
        emu = Emulator(workdir, argv)
        self.started.append(emu)
        if wait:
            emu.wait_ready()
        return emu

    def stop_all(self) -> None:
        for emu in self.started:
            try:
                emu.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                if emu.proc.poll() is None:
                    emu.proc.kill()


@pytest.fixture
def start_emulator(tmp_path):
    """``start_emulator(*extra_args, optical=..., state=...)`` -> a ready Emulator. Every
    emulator started is stopped when the test ends, pass or fail."""
    factory = EmulatorFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def run_meter_emu(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
    """``meter-emu ARGS`` to completion (for start-up failures). Killed after ``timeout``."""
    try:
        return subprocess.run([_script("meter-emu"), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"meter-emu {' '.join(args)} did not exit within {timeout} s "
                    f"(stderr: {exc.stderr!r})")


# ---- termineter ----------------------------------------------------------------------------


def termineter_preamble(url: str, password_hex: str = MK_HEX, user_id: int | None = None,
                        username: str | None = None) -> list[str]:
    """Framework options and ``connect``; modules come after it."""
    cmds = [
        f"set SERIAL_CONNECTION {url}",
        f"set PASSWORD {password_hex}",
        "set PASSWORD_HEX true",
        "set CACHE_TABLES false",
    ]
    if user_id is not None:
        cmds.append(f"set USER_ID {user_id}")
    if username is not None:
        cmds.append(f"set USERNAME {username}")
    return cmds + ["connect"]


def termineter(tmp_path: Path, commands: list[str], timeout: float = TERMINETER_TIMEOUT) -> str:
    """Run the termineter CLI with ``commands`` on stdin and a private HOME; return stdout.

    ``set USE_COLOR false`` comes first and ``exit`` last. The HOME (with termineter's frame
    log ``.termineter/termineter.log``) and stderr are kept under ``tmp_path`` for debugging.
    """
    home = Path(tempfile.mkdtemp(prefix="termineter-home-", dir=tmp_path))
    script = "\n".join(["set USE_COLOR false", *commands, "exit"]) + "\n"
    (home / "commands.txt").write_text(script)
    env = dict(os.environ, HOME=str(home), PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run([_script("termineter")], input=script, capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=home,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"termineter did not finish within {timeout} s\nstdout:\n{exc.stdout}\n"
                    f"stderr:\n{exc.stderr}")
    (home / "stdout.txt").write_text(done.stdout)
    (home / "stderr.txt").write_text(done.stderr)
    return done.stdout


def error_lines(out: str) -> list[str]:
    """termineter's ``[-]`` lines (a prompt may precede them on the same line)."""
    return [line for line in out.split("\n") if "[-]" in line]


_INFO = re.compile(r"^\[\*\] {5}(\S.*?)\.{2,}(.*)$")


def info_fields(out: str) -> dict[str, str]:
    """``get_info``'s ``[*]     Key.........Value`` lines as a dict."""
    fields = {}
    for line in out.split("\n"):
        match = _INFO.match(line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields


_DUMP_LINE = re.compile(r"^([0-9a-f]{4,})    ")


def hexdumps(out: str) -> list[bytes]:
    """Every hexdump termineter printed (``print_hexdump``), in order, as bytes."""
    dumps: list[bytes] = []
    current: bytearray | None = None
    for line in out.split("\n"):
        match = _DUMP_LINE.match(line)
        offset = int(match.group(1), 16) if match else None
        if match and offset == 0:
            current = bytearray()
            dumps.append(current)  # type: ignore[arg-type]
        elif not match or current is None or offset != len(current):
            current = None
            continue
        start = len(match.group(0))
        hex_area = line[start:start + 16 * 3 + 1]
        current += bytes.fromhex("".join(hex_area.split()))
    return [bytes(d) for d in dumps]


def read_dumps(out: str) -> list[bytes]:
    """The dumps that follow ``[*] Read N bytes`` (read_table), checked against N."""
    sizes = [int(n) for n in re.findall(r"\[\*\] Read (\d+) bytes", out)]
    dumps = hexdumps(out)
    assert len(dumps) >= len(sizes), out
    return [d for d in dumps if len(d) in sizes] if sizes else []


def read_table_cmds(*table_ids: int) -> list[str]:
    cmds = ["use read_table"]
    for table_id in table_ids:
        cmds += [f"set TABLE_ID {table_id}", "run"]
    return cmds + ["back"]


# ---- c1218 library ---------------------------------------------------------------------------


@contextmanager
def c1218_session(url: str, password: bytes | None = MK, user_id: int = 0,
                  username: str = "e2e", pktsize: int = 8000, nbrpkts: int = 2):
    """A logged-on C12.18 session through the ``c1218`` library termineter is built on.

    The packet size is large enough for a full read of BT74 (1411 bytes)."""
    from c1218.connection import Connection
    from termineter.utilities import get_default_serial_settings

    conn = Connection(url, c1218_settings={"pktsize": pktsize, "nbrpkts": nbrpkts},
                      serial_settings=get_default_serial_settings(), toggle_control=True,
                      enable_cache=False)
    try:
        assert conn.start(), "C12.18 ident/negotiate failed"
        assert conn.login(username, user_id, password), "C12.18 logon/security refused"
        yield conn
    finally:
        with suppress(Exception):  # the meter may be gone (kill -9 tests)
            conn.stop()
        with suppress(Exception):
            conn.serial_h.close()


def abandon(conn) -> None:
    """The meter went away (kill -9, SIGTERM): close without sending a terminate, which would
    only be retried for ~3 s."""
    conn._initialized = False


def read_table_lib(url: str, table_id: int, password: bytes | None = MK, **kwargs) -> bytes:
    with c1218_session(url, password) as conn:
        return conn.get_table_data(table_id, **kwargs)


# ---- table decoding --------------------------------------------------------------------------


def ltime_date(raw: bytes) -> dt.datetime | None:
    """LTIME_DATE: YY MM DD hh mm ss (YY = year - 2000); all zero = not set."""
    if not any(raw[:6]):
        return None
    return dt.datetime(2000 + raw[0], *raw[1:6])


def bp10_params(moment: dt.datetime, set_mask: int = 0x03, qualifier: int = 0) -> bytes:
    """BP10 Set Date and Time: SET_MASK, LTIME_DATE (UTC), TIME_DATE_QUAL."""
    return bytes([set_mask, moment.year - 2000, moment.month, moment.day, moment.hour,
                  moment.minute, moment.second, qualifier])


@dataclass
class HistoryEntry:
    time: dt.datetime | None
    sequence: int
    user_id: int
    event: int
    argument: int


@dataclass
class HistoryLog:
    flags: int
    valid_entries: int
    last_entry_element: int
    last_sequence: int
    unread: int
    entries: list[HistoryEntry]  # the non-empty elements, in element order

    def events(self, number: int) -> list[HistoryEntry]:
        return [e for e in self.entries if e.event == number]


def le(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def parse_bt74(raw: bytes) -> HistoryLog:
    """BT74 History Log Data: 11-byte header, then 14-byte entries."""
    assert len(raw) >= BT74_HEADER, raw.hex()
    entries = []
    body = raw[BT74_HEADER:]
    for start in range(0, len(body) - BT74_ENTRY + 1, BT74_ENTRY):
        e = body[start:start + BT74_ENTRY]
        if not any(e):
            continue
        entries.append(HistoryEntry(ltime_date(e[0:6]), le(e[6:8]), le(e[8:10]),
                                    le(e[10:12]) & 0x0FFF, le(e[12:14])))
    return HistoryLog(raw[0], le(raw[1:3]), le(raw[3:5]), le(raw[5:9]), le(raw[9:11]), entries)


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something true (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# ---- MQTT ------------------------------------------------------------------------------------


def scrape_metrics(url: str) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape of a ``--metrics`` URL
    (tcp://...), parsed with prometheus-client's own parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url.replace("tcp://", "http://") + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def mosquitto_pub(url: str, topic: str, message: str) -> None:
    host, _, port = url.removeprefix("mqtt://").rpartition(":")
    subprocess.run([mosquitto_program("mosquitto_pub"), "-h", host, "-p", port, "-t", topic,
                    "-m", message], check=True, timeout=10)


# ---- PLC over CN/IP ----------------------------------------------------------------------------

OMA_KEY = b"OMA-emu-dflt"  # the default profile's PLC OMA key (RC4 mode)
DEFAULT_NEURON_ID = bytes.fromhex("0A0B0C0D0E0F")  # meter i of a fleet: + i


class CnipHeadEnd:
    """The client library's head-end (client/plc.py HeadEnd over a CnipDriver) with what the
    CN/IP end-to-end tests need at the frame level: requests in the flex domain by default, as
    a head-end reaches uncommissioned meters (its own domain must then differ from the
    zero-length one, or the meters' flex-domain answers are not its)."""

    def __init__(self, url: str, *, neuron_id: bytes = bytes.fromhex("FE0000000001"),
                 domain: bytes = b"\x01"):
        from meter_emu.client.plc import HeadEnd
        from meter_emu.lon.config import CONFIGURED, Domain, NodeConfig

        config = NodeConfig(neuron_id, domains=[Domain(domain, 1, 126)], state=CONFIGURED)
        self.head_end = HeadEnd.over_cnip(url, config)
        self.node, self.driver = self.head_end.node, self.head_end.driver

    def send(self, apdu: bytes, dst, *, timeout: float = 8.0, domain_index=None, **options):
        """Send and wait for the Completion (fails the test when none comes)."""
        from meter_emu.lon.node import Service

        options.setdefault("service", Service.REQUEST)
        done = self.head_end.transact(apdu, dst, timeout=timeout, domain_index=domain_index,
                                      **options)
        if done is None:
            pytest.fail(f"no completion within {timeout} s for APDU {apdu.hex()} to {dst}")
        return done

    def secured(self, session, apdu: bytes, dst, **options) -> bytes:
        """One secured OSGP request (plc/secure.py ClientSession); returns code ‖ data. A
        sequence refusal (0x0C/0x1F) is retried once with the meter's number."""
        for _ in range(2):
            done = self.send(session.request(apdu), dst, **options)
            assert done.ok and done.responses, f"no answer to {apdu.hex()}: {done.reason}"
            plain = session.response(done.responses[0].apdu)
            if len(plain) > 1 or plain[0] not in (0x0C, 0x1F):
                return plain
        return plain

    def close(self) -> None:
        self.head_end.close()


def partial_read(table: int, offset: int, count: int) -> bytes:
    """OSGP partial read 0x3F: table (2), offset (3), count (2) (DESIGN.md D1)."""
    return b"\x3f" + table.to_bytes(2, "big") + offset.to_bytes(3, "big") + count.to_bytes(2, "big")


def partial_write(table: int, offset: int, data: bytes) -> bytes:
    """OSGP partial write 0x4F: table (2), offset (3), count (2), data."""
    return (b"\x4f" + table.to_bytes(2, "big") + offset.to_bytes(3, "big")
            + len(data).to_bytes(2, "big") + data)
