"""Issue 11's first two tests, end to end: a real ``meter-emu run --count 1000 --fleet-secret``
process behind one CN/IP endpoint, its key file from ``meter-emu keys export``, and a head-end
(the client library in-process over real UDP, and ``meter-emu client --key-file``
subprocesses). Authenticated reads addressed to random meters answer with each meter's own
identity under its own key, and another meter's key is refused with 0x0B; a write to one meter
reads back there, is invisible in two others, and survives a restart with ``--state``."""

from __future__ import annotations

import random
import subprocess

import pytest
from e2e import ET03, _script, run_client, start_emulator  # noqa: F401 - the fixture

from meter_emu.client.plc import HeadEnd, PlcClient, PlcError, head_end_config
from meter_emu.fleet.keys import read_key_file
from meter_emu.profile import fleet_profiles, load_profile

COUNT = 1000
SECRET = "e2e-fleet-secret"
SAMPLE = 60
BT01, ET04 = 1, 2048 + 4


def export_keys(path, count=COUNT) -> dict:
    """``meter-emu keys export`` of the fleet; returns {Neuron ID: OMA key}."""
    done = subprocess.run([_script("meter-emu"), "keys", "export", "--count", str(count),
                           "--fleet-secret", SECRET, "-o", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return {row["neuron_id"]: row["oma"] for row in read_key_file(str(path)).rows}


def start_fleet(start_emulator, *extra):  # noqa: F811 - the fixture
    return start_emulator("--count", str(COUNT), "--fleet-secret", SECRET, *extra,
                          cnip="udp://127.0.0.1:0", optical="off", mep="off")


def client_for(emu, keys: dict, rng: random.Random) -> PlcClient:
    config = head_end_config(b"", 255, rng.randint(1, 126))
    head_end = HeadEnd.over_cnip(emu.ready["ports"]["cnip"], config, timeout=10.0)
    return PlcClient(head_end, b"not-a-key-12", keys=keys, timeout=10.0)


@pytest.fixture(scope="module")
def identities():
    return fleet_profiles(load_profile(), COUNT)


def test_random_meters_answer_with_their_own_identity_under_their_own_key(
        start_emulator, tmp_path, identities):  # noqa: F811
    key_file = tmp_path / "keys.csv"
    keys = export_keys(key_file)
    emu = start_fleet(start_emulator)
    assert len(emu.ready["meters"]) == COUNT
    assert len(set(keys.values())) == COUNT  # a key of its own for every meter
    rng = random.Random(11)
    client = client_for(emu, keys, rng)
    try:
        for index in rng.sample(range(COUNT), SAMPLE):
            profile = identities[index]
            nid = profile.identity.neuron_id
            bt01 = client.read_table(nid, BT01)  # a full read
            assert bt01[16:24] == bytes.fromhex(profile.identity.serial_number)
            assert client.read_table(nid, ET04, 4, 6) == bytes.fromhex(nid)  # partial
        # another meter's key: the digest does not verify, the meter refuses with 0x0B
        swapped = {nid: keys[other] for nid, other in zip(list(keys)[:3], list(keys)[3:6])}
        wrong = client_for(emu, swapped, rng)
        try:
            for nid in swapped:
                with pytest.raises(PlcError) as refused:
                    wrong.read_table(nid, ET04, 4, 6)
                assert refused.value.code == 0x0B
        finally:
            wrong.head_end.close()
    finally:
        client.head_end.close()

    ready = ["--ready-file", str(emu.ready_file), "--key-file", str(key_file)]
    for index in rng.sample(range(COUNT), 3):
        meter = emu.ready["meters"][index]
        read = run_client("read", "BT01", "--meter", meter, *ready)
        assert read.returncode == 0, read.stderr
        assert f"serial_number = {identities[index].identity.serial_number}" in read.stdout
    nid = identities[index].identity.neuron_id
    partial = run_client("read", "ET04", "--offset", "4", "--count", "6", "--meter", nid,
                         *ready)
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.strip() == nid.lower()
    profile_key = run_client("read", "BT01", "--meter", meter, "--ready-file",
                             str(emu.ready_file))  # the default profile's key: refused
    assert profile_key.returncode == 1 and "0x0B digest error" in profile_key.stderr
    small = tmp_path / "small.csv"
    export_keys(small, count=10)
    unlisted = run_client("read", "BT01", "--meter", emu.ready["meters"][500], "--ready-file",
                          str(emu.ready_file), "--key-file", str(small))
    assert unlisted.returncode == 2
    assert "has no OMA key for it" in unlisted.stderr and "Traceback" not in unlisted.stderr


def _usn(text: str) -> bytes:
    return text.encode().ljust(30, b"\0")


def test_a_write_to_one_meter_is_invisible_in_others_and_survives_a_restart(
        start_emulator, tmp_path, identities):  # noqa: F811
    keys = export_keys(tmp_path / "keys.csv")
    state = tmp_path / "state"
    rng = random.Random(12)
    target, *others = rng.sample(range(COUNT), 3)
    written = _usn("UTILITY-WRITTEN-11")

    def check(emu) -> None:
        client = client_for(emu, keys, rng)
        try:
            nid = identities[target].identity.neuron_id
            assert client.read_table(nid, ET03, 0, 30) == written
            for index in others:
                profile = identities[index]
                mine = client.read_table(profile.identity.neuron_id, ET03, 0, 30)
                assert mine == _usn(profile.identity.utility_serial_number) != written
        finally:
            client.head_end.close()

    emu = start_fleet(start_emulator, "--state", str(state))
    client = client_for(emu, keys, rng)
    try:  # ET03 is writable with the PLC key (tables/extended.py)
        client.write_table(identities[target].identity.neuron_id, ET03, written, 0)
    finally:
        client.head_end.close()
    check(emu)
    assert emu.stop() == 0
    check(start_fleet(start_emulator, "--state", str(state)))


def test_a_sharded_ready_file_sends_each_meter_to_its_shards_endpoint(
        start_emulator, tmp_path):  # noqa: F811
    """The ready file ``--shards K`` writes (fleet/shards.py), made here from two real ``--shard``
    processes: the client reads a meter through its own shard's CN/IP port."""
    import json

    key_file = tmp_path / "keys.csv"
    export_keys(key_file, count=20)
    shards = [start_emulator("--count", "20", "--fleet-secret", SECRET, "--shard", f"{i}/2",
                             cnip="udp://127.0.0.1:0", optical="off", mep="off")
              for i in range(2)]
    document = {"meters": [m for s in shards for m in s.ready["meters"]],
                "ports": shards[0].ready["ports"],
                "neuron_ids": {k: v for s in shards for k, v in s.ready["neuron_ids"].items()},
                "shards": [{"shard": s.ready["shard"], "ports": s.ready["ports"],
                            "meters": s.ready["meters"]} for s in shards]}
    ready = tmp_path / "fleet.json"
    ready.write_text(json.dumps(document))
    where = ["--ready-file", str(ready), "--key-file", str(key_file), "--timeout", "3"]
    for meter in ("meter-3", "meter-15", document["neuron_ids"]["meter-18"]):
        read = run_client("read", "ET04", "--offset", "4", "--count", "6", "--meter", meter,
                          *where)
        assert read.returncode == 0, read.stderr
        nid = document["neuron_ids"].get(meter, meter)
        assert read.stdout.strip() == nid.lower()
    mixed = run_client("read", "BT01", "--meter", "meter-3", "--meter", "meter-15", *where)
    assert mixed.returncode == 2 and "different shards (0/2, 1/2)" in mixed.stderr


def test_firmware_broadcast_reaches_a_per_meter_key_fleet_under_the_fleets_key(
        start_emulator, tmp_path):  # noqa: F811
    """Unicast under each meter's own key (EP27, ET17, fill-in), the broadcast under the fleet
    profile's key: every packet arrives by broadcast. A wrong --broadcast-key: none does, and
    the unicast fill-in sends them all."""
    import json

    image = tmp_path / "image.bin"
    built = subprocess.run([_script("meter-emu"), "firmware", "build", "--program-id",
                            "9FFFFF0500000001", "--version", "3.11.00", "--size", "192", "-o",
                            str(image)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    key_file = tmp_path / "keys.csv"
    export_keys(key_file, count=20)
    emu = start_emulator("--count", "20", "--fleet-secret", SECRET, cnip="udp://127.0.0.1:0",
                         optical="off", mep="off")
    where = ["--ready-file", str(emu.ready_file), "--key-file", str(key_file)]
    for meter in ("meter-3", "meter-9", "meter-12"):
        joined = run_client("procedure", "EP27", "013412", "--meter", meter, *where)
        assert joined.returncode == 0 and "result 0" in joined.stdout, joined.stderr

    def broadcast(*meters, extra=()):
        args = [a for m in meters for a in ("--meter", m)]
        done = run_client("firmware-broadcast", str(image), "--group", "0x1234", "--json",
                          *args, *where, *extra)
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout).values())

    assert broadcast("meter-3", "meter-9") == [{"broadcast": 3, "filled_in": 0}] * 2
    assert broadcast("meter-12", extra=["--broadcast-key", "not-the-key!"]) == [
        {"broadcast": 0, "filled_in": 3}]
