"""Issue 8 "done when", end to end: ``meter-emu run --count 20 --cnip udp://127.0.0.1:0 --pcap
x.pcap`` as a subprocess, then ``meter-emu client`` subprocesses over real UDP: discover finds
the 20 meters, ``read 1`` prints BT01 decoded with the meter's serial number (authenticated
with the OMA digest: a wrong key fails with 0x0B), and tshark decodes x.pcap frame by frame as
our stack does (tests/tshark_decode.py)."""

from __future__ import annotations

import re
import subprocess

import pytest
from e2e import run_client, start_emulator  # noqa: F401 - the fixture
from tshark_decode import our_frames, tshark_available, tshark_frames

from meter_emu.profile import fleet_profiles, load_profile

COUNT = 20
CLIENT_TIMEOUT = 60.0


def client(*args: str) -> subprocess.CompletedProcess:
    return run_client(*args, timeout=CLIENT_TIMEOUT)


@pytest.fixture
def fleet(start_emulator, tmp_path):  # noqa: F811 - pytest fixture injection
    pcap = tmp_path / "x.pcap"
    emu = start_emulator("--count", str(COUNT), "--cnip", "udp://127.0.0.1:0", "--pcap",
                         str(pcap), optical="off", mep="off")
    return emu, pcap


def test_discover_read_wrong_key_and_tshark_agree(fleet):
    emu, pcap = fleet
    ready = ["--ready-file", str(emu.ready_file)]
    profiles = fleet_profiles(load_profile(), COUNT)

    found = client("discover", *ready)
    assert found.returncode == 0, found.stderr
    nids = set(re.findall(r"^([0-9A-F]{12})\b", found.stdout, re.M))
    assert nids == {p.identity.neuron_id.upper() for p in profiles}, found.stdout

    target = profiles[7]
    read = client("read", "1", "--meter", target.identity.neuron_id, *ready)
    assert read.returncode == 0, read.stderr
    lines = dict(line.split(" = ", 1) for line in read.stdout.splitlines() if " = " in line)
    assert lines["serial_number"] == target.identity.serial_number
    assert lines["manufacturer"] == "NES"

    partial = client("read", "BT01", "--offset", "16", "--count", "8", "--meter",
                     target.identity.neuron_id, *ready)
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.strip() == bytes.fromhex(target.identity.serial_number).hex()

    wrong = client("read", "1", "--meter", target.identity.neuron_id, "--key", "not-the-key!",
                   *ready)
    assert wrong.returncode == 1
    assert "0x0B digest error" in wrong.stderr and target.identity.neuron_id.upper() in \
        wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1

    emu.stop()  # the pcap is complete once the endpoint closed
    if not tshark_available():
        pytest.skip("tshark is not installed")
    ours, theirs = our_frames(pcap), tshark_frames(pcap)
    assert len(ours) == len(theirs) > COUNT * 2
    for mine, shark in zip(ours, theirs):
        assert mine == shark
    # the reads were secured: requests carry the sequence number and the OMA digest (12 bytes
    # after the 3-byte full read), the answer the digest
    codes = [f["apdu_code"] for f in ours]
    assert 0x30 in codes and 0x3F in codes
