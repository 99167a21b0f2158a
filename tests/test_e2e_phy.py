"""Issue 9 "done when", end to end: ``meter-emu run --phy bpsk --count 10 --cnip
udp://127.0.0.1:0`` as a subprocess answers ``meter-emu client`` subprocesses over real UDP,
through the data concentrator's modem on the simulated BPSK line (real airtime); and with
profiles/topology/street.toml, where meter 10 is out of the concentrator's reach, the direct
read gets no answer (exit 3) and the read through meter 5 as a repeater succeeds."""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

from e2e import run_client, run_meter_emu, start_emulator  # noqa: F401 - the fixture

from meter_emu.profile import fleet_profiles, load_profile

COUNT = 10
CLIENT_TIMEOUT = 90.0
STREET = str(Path(__file__).resolve().parents[1] / "profiles" / "topology" / "street.toml")


def client(*args: str) -> subprocess.CompletedProcess:
    return run_client(*args, timeout=CLIENT_TIMEOUT)


def fields(out: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)


def test_ten_meters_on_the_bpsk_line_answer_a_head_end(start_emulator, tmp_path):  # noqa: F811
    dump = tmp_path / "line.wav"
    emu = start_emulator("--phy", "bpsk", "--count", str(COUNT), "--phy-dump", str(dump),
                         cnip="udp://127.0.0.1:0", optical="off", mep="off")
    ready = ["--ready-file", str(emu.ready_file)]
    profiles = fleet_profiles(load_profile(), COUNT)

    found = client("discover", *ready)
    assert found.returncode == 0, found.stderr
    rows = re.findall(r"^([0-9A-F]{12})\s+strength=(\S+) dB\s+margin=(\S+) dB", found.stdout,
                      re.M)
    assert {nid for nid, _, _ in rows} == {p.identity.neuron_id.upper() for p in profiles}, \
        found.stdout
    # the meters measured the head-end's request on the line (no file: 30..62 dB away)
    for _, strength, margin in rows:
        assert 122 - 62 - 1.5 <= float(strength) <= 122 - 30 + 1.5 and float(margin) > 10

    for index in (0, 4, 9):
        target = profiles[index]
        read = client("read", "1", "--meter", target.meter.id, *ready)
        assert read.returncode == 0, read.stderr
        assert fields(read.stdout)["serial_number"] == target.identity.serial_number

    emu.stop()
    with wave.open(str(dump), "rb") as wav:  # every frame went into the dump
        assert wav.getframerate() == 480_000 and wav.getnframes() > 0


def test_a_far_meter_answers_only_through_a_repeater(start_emulator):  # noqa: F811
    emu = start_emulator("--phy", "bpsk", "--count", str(COUNT), "--topology", STREET,
                         "--set", "identity.subnet=1", "--set", "identity.node=1",
                         cnip="udp://127.0.0.1:0", optical="off", mep="off")
    ready = ["--ready-file", str(emu.ready_file)]
    far = fleet_profiles(load_profile("default", ["identity.subnet=1", "identity.node=1"]),
                         COUNT)[9]
    assert (far.identity.subnet, far.identity.node) == (1, 10)

    direct = client("read", "1", "--meter", "1/10", "--timeout", "6", *ready)
    assert direct.returncode == 3, (direct.stdout, direct.stderr)  # no answer: out of reach

    relayed = client("read", "1", "--meter", "1/10", "--via", "1/5", *ready)
    assert relayed.returncode == 0, relayed.stderr
    assert fields(relayed.stdout)["serial_number"] == far.identity.serial_number


def test_a_bad_topology_file_stops_the_run_with_its_reason(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[meter]]\nmeter = 12\nposition_m = 5\n")
    done = run_meter_emu("run", "--phy", "bpsk", "--count", "3", "--topology", str(bad),
                         "--cnip", "udp://127.0.0.1:0", "--optical", "off", "--mep", "off",
                         "--mqtt", "off")
    assert done.returncode == 2
    assert "meter 12: the fleet has meters 1..3" in done.stderr
    assert "Traceback" not in done.stderr
