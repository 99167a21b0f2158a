"""Shards: ``--shard I/K`` serves one slice of a fleet with the whole fleet's identities, and
``--shards K`` supervises K real shard processes: each answers its own meters on its own
endpoint, one killed with ``kill -9`` comes back on the same port with its acknowledged
writes, and nothing is left running after a stop or a failed start."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

import e2e
from e2e import ET03, OMA_KEY, CnipHeadEnd, partial_read, partial_write, wait_for
from meter_emu.fleet.shards import shifted, without_shards
from meter_emu.lon.frame import NeuronId
from meter_emu.plc.secure import ClientSession
from meter_emu.ports.transport import PortUrlError
from meter_emu.profile import fleet_profiles, load_profile

start_emulator = e2e.start_emulator  # the fixture, used by name
BT01 = 1  # General Manufacturer Identification: serial number at offset 16 (8 bytes BCD)
NM_READ_NEURON_ID = bytes.fromhex("6d01000006")  # NM read memory: the Neuron ID


def _nid(ready: dict, meter: str) -> NeuronId:
    return NeuronId(bytes.fromhex(ready["neuron_ids"][meter]))


def _serial(head_end: CnipHeadEnd, nid: NeuronId) -> str:
    plain = head_end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(BT01, 16, 8), nid)
    assert plain[:3] == b"\x00\x00\x08", plain.hex()
    return plain[3:].hex()


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a test's private path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                status = (entry / "status").read_text()
            except OSError:
                continue
            if text in cmdline and "State:\tZ" not in status:
                found.append(int(entry.name))
    return found


def test_port_shift_and_argument_rewrite():
    assert shifted("cnip", "udp://127.0.0.1:1628", 3) == "udp://127.0.0.1:1631"
    assert shifted("cnip", "udp://127.0.0.1:0", 3) == "udp://127.0.0.1:0"  # each picks its own
    assert shifted("metrics", "off", 3) == "off"
    with pytest.raises(PortUrlError, match="65536"):
        shifted("metrics", "tcp://127.0.0.1:65535", 1)
    assert without_shards(["run", "--shards", "2", "--count", "9", "--shards=3", "--shard",
                           "0/2"]) == ["run", "--count", "9", "--shard", "0/2"]


def test_shard_1_of_3_serves_meters_11_to_20_with_fleet_identities(start_emulator):
    emu = start_emulator("--count", "30", "--shard", "1/3", cnip="udp://127.0.0.1:0",
                         optical="off", mep="off")
    fleet = fleet_profiles(load_profile(), 30)
    assert emu.ready["shard"] == "1/3"
    assert emu.ready["meters"] == [f"meter-{i}" for i in range(11, 21)]
    assert emu.ready["neuron_ids"] == {p.meter.id: p.identity.neuron_id.upper()
                                       for p in fleet[10:20]}
    read = e2e.run_client("read", "BT01", "--offset", "16", "--count", "8", "--meter",
                          "meter-15", "--ready-file", str(emu.ready_file))
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == bytes.fromhex(fleet[14].identity.serial_number).hex()
    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    try:  # meter-10 belongs to shard 0: nobody here answers for it
        outsider = NeuronId(bytes.fromhex(fleet[9].identity.neuron_id))
        done = head_end.head_end.transact(NM_READ_NEURON_ID, outsider, timeout=1.0)
        assert done is None or not done.ok
    finally:
        head_end.close()


def test_shards_restart_a_killed_shard_with_its_writes_and_ports(start_emulator, tmp_path):
    state = tmp_path / "state"
    emu = start_emulator("--count", "200", "--shards", "2", cnip="udp://127.0.0.1:0",
                         optical="off", mep="off", state=state)
    ready = emu.ready
    zero, one = ready["shards"]
    assert [zero["shard"], one["shard"]] == ["0/2", "1/2"]
    assert zero["meters"] == [f"meter-{i}" for i in range(1, 101)]
    assert one["meters"] == [f"meter-{i}" for i in range(101, 201)]
    assert ready["meters"] == zero["meters"] + one["meters"]
    assert ready["ports"]["cnip"] == zero["ports"]["cnip"] != one["ports"]["cnip"]
    assert "mqtt" not in one["ports"] and "optical" not in one["ports"]
    fleet = fleet_profiles(load_profile(), 200)

    ends = [CnipHeadEnd(zero["ports"]["cnip"]), CnipHeadEnd(one["ports"]["cnip"])]
    try:  # each endpoint answers its own meters, with their own identities
        assert _serial(ends[0], _nid(ready, "meter-3")) == fleet[2].identity.serial_number
        assert _serial(ends[1], _nid(ready, "meter-150")) == fleet[149].identity.serial_number
        done = ends[0].head_end.transact(NM_READ_NEURON_ID, _nid(ready, "meter-150"),
                                         timeout=1.0)
        assert done is None or not done.ok  # meter-150 is not behind shard 0's endpoint
        written = ends[1].secured(ClientSession(OMA_KEY, mode="rc4"),
                                  partial_write(ET03, 0, b"UTIL-SHARD-ONE"),
                                  _nid(ready, "meter-150"))
        assert written == b"\x00"
    finally:
        for end in ends:
            end.close()

    os.kill(one["pid"], 9)
    after = wait_for(lambda: _restarted(emu.ready_file, one["pid"]), 30,
                     "the ready file showing shard 1's new pid")
    assert after["shards"][0]["pid"] == zero["pid"]  # shard 0 was not restarted
    os.kill(zero["pid"], 0)
    assert after["shards"][1]["ports"]["cnip"] == one["ports"]["cnip"]  # pinned
    assert f"shard 1/2 (pid {one['pid']}) died (signal 9); restarting" in emu.stderr()
    end = CnipHeadEnd(one["ports"]["cnip"])
    try:
        plain = end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(ET03, 0, 14),
                            _nid(ready, "meter-150"))
        assert plain == b"\x00\x00\x0e" + b"UTIL-SHARD-ONE"
        plain = end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(ET03, 0, 12),
                            _nid(ready, "meter-151"))
        assert plain[3:] == b"UTIL-0000151"  # its neighbour kept its own
    finally:
        end.close()

    assert emu.stop(timeout=30) == 0
    assert emu.stdout().rstrip().endswith("meter-emu: stopped")
    assert not emu.ready_file.exists()
    assert _processes_naming(str(state)) == []  # no shard left behind

    # the shards shared DIR: one process on it finds shard 1's write
    single = start_emulator("--count", "200", cnip="udp://127.0.0.1:0", optical="off",
                            mep="off", state=state)
    end = CnipHeadEnd(single.ready["ports"]["cnip"])
    try:
        plain = end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(ET03, 0, 14),
                            _nid(ready, "meter-150"))
        assert plain[3:] == b"UTIL-SHARD-ONE"
    finally:
        end.close()


_scrape = e2e.scrape_metrics


def _plc_ok(samples: dict) -> float:
    return samples.get(("meter_emu_requests_total",
                        frozenset({"port": "plc", "code": "ok"}.items())), 0)


def _reads(ready: dict, shard: int, meters: list[str]) -> None:
    end = CnipHeadEnd(ready["shards"][shard]["ports"]["cnip"])
    try:
        for meter in meters:
            plain = end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(ET03, 0, 4),
                                _nid(ready, meter))
            assert plain[:1] == b"\x00", plain.hex()
    finally:
        end.close()


def test_the_supervisors_metrics_are_the_shards_sum_also_across_a_restart(start_emulator,
                                                                          tmp_path):
    emu = start_emulator("--count", "40", "--shards", "2", "--metrics", "tcp://127.0.0.1:0",
                         cnip="udp://127.0.0.1:0", optical="off", mep="off",
                         state=tmp_path / "state")
    ready = emu.ready
    total_url = ready["ports"]["metrics"]
    shard_urls = [s["ports"]["metrics"] for s in ready["shards"]]
    assert len({total_url, *shard_urls}) == 3  # the sum and each shard's own
    assert f"metrics  {total_url} (the sum of the shards')" in emu.stdout()

    _reads(ready, 0, ["meter-1", "meter-2", "meter-3"])
    _reads(ready, 1, ["meter-21", "meter-30"])
    each = [_scrape(url) for url in shard_urls]
    total = _scrape(total_url)
    # a secured request is counted once where it is answered; a first one may take a resync
    assert _plc_ok(each[0]) >= 3 and _plc_ok(each[1]) >= 2
    assert _plc_ok(total) == _plc_ok(each[0]) + _plc_ok(each[1])
    assert total[("meter_emu_meters", frozenset())] == 40
    assert total[("meter_emu_shards", frozenset())] == 2
    assert total[("meter_emu_shards_up", frozenset())] == 2
    count = ("meter_emu_request_duration_seconds_count", frozenset({"port": "plc"}.items()))
    assert total[count] == each[0][count] + each[1][count]
    inf = ("meter_emu_request_duration_seconds_bucket",
           frozenset({"port": "plc", "le": "+Inf"}.items()))
    assert total[inf] == total[count]
    before = _plc_ok(total)

    one = ready["shards"][1]
    os.kill(one["pid"], 9)
    after = wait_for(lambda: _restarted(emu.ready_file, one["pid"]), 30,
                     "the ready file showing shard 1's new pid")
    assert after["shards"][1]["ports"]["metrics"] == shard_urls[1]  # pinned
    assert _plc_ok(_scrape(shard_urls[1])) == 0  # the new process counts afresh
    _reads(after, 1, ["meter-22"])
    restarted = _plc_ok(_scrape(shard_urls[1]))
    assert restarted >= 1
    total = _scrape(total_url)
    assert _plc_ok(total) == before + restarted  # carried over the restart: never backwards
    assert total[("meter_emu_meters", frozenset())] == 40
    assert emu.stop(timeout=30) == 0


def _restarted(path: Path, old_pid: int) -> dict | None:
    import json

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if document["shards"][1]["pid"] != old_pid else None


def test_a_child_refusing_its_arguments_stops_the_fleet_with_exit_2(tmp_path):
    marker = tmp_path / "bad-state"
    done = e2e.run_meter_emu("run", "--shards", "2", "--count", "4", "--optical", "bogus://x",
                             "--mep", "off", "--mqtt", "off", "--cnip", "udp://127.0.0.1:0",
                             "--state", str(marker), timeout=30)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("meter-emu: shard 0/2: ") and "bogus://x" in last, done.stderr
    assert "Traceback" not in done.stderr
    assert _processes_naming(str(marker)) == []  # shard 1 came up, and was stopped


def test_supervisor_refuses_bad_shard_counts():
    done = e2e.run_meter_emu("run", "--shards", "5", "--count", "3", "--mqtt", "off")
    assert done.returncode == 2 and "more shards than the 3 meters" in done.stderr
    done = e2e.run_meter_emu("run", "--shards", "2", "--shard", "0/2", "--count", "3")
    assert done.returncode == 2 and "give one" in done.stderr


def test_a_shard_that_keeps_dying_on_restart_stops_the_fleet(start_emulator, tmp_path):
    """Its pinned port taken by someone else: restarting would only fail again."""
    emu = start_emulator("--count", "4", "--shards", "2", cnip="udp://127.0.0.1:0",
                         optical="off", mep="off")
    one = emu.ready["shards"][1]
    host, port = re.match(r"udp://(.+):(\d+)$", one["ports"]["cnip"]).groups()
    os.kill(one["pid"], 9)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 5
        while True:  # the kernel frees the port once the process is gone
            try:
                squatter.bind((host, int(port)))
                break
            except OSError:
                assert time.monotonic() < deadline, "the killed shard's port stayed taken"
                time.sleep(0.01)
        code = emu.proc.wait(30)
    finally:
        squatter.close()
    assert code == 1
    last = emu.stderr().strip().splitlines()[-1]
    assert last.startswith("meter-emu: shard 1/2 died 3 times") and port in last, last
    assert not emu.ready_file.exists()


def test_shards_connect_to_the_supervisors_embedded_broker(start_emulator):
    """``--mqtt embedded:0``: one broker in the supervisor, one connection per shard, each
    publishing its own meters' retained info there."""
    import subprocess

    emu = start_emulator("--count", "4", "--shards", "2", cnip="udp://127.0.0.1:0",
                         optical="off", mep="off", mqtt="embedded:0")
    url = emu.ready["ports"]["mqtt"]
    assert [s["ports"]["mqtt"] for s in emu.ready["shards"]] == [url, url]
    host, _, port = url.removeprefix("mqtt://").rpartition(":")
    infos = subprocess.run([e2e.mosquitto_program("mosquitto_sub"), "-h", host, "-p", port,
                            "-t", "meter-emu/+/info", "-C", "4", "-W", "10", "-v"],
                           capture_output=True, text=True, timeout=15, check=False).stdout
    assert sorted(line.split()[0] for line in infos.splitlines()) == [
        f"meter-emu/meter-{i}/info" for i in range(1, 5)]
    clients = re.findall(r"^\[shard (\d)/2\] .*connected to \S+ as (\S+);", emu.stderr(), re.M)
    assert sorted(shard for shard, _ in clients) == ["0", "1"]
    assert len({client for _, client in clients}) == 2  # distinct MQTT client ids


def test_shards_die_with_a_killed_supervisor(start_emulator):
    """``kill -9`` of the supervisor leaves no shard holding the fleet's ports."""
    emu = start_emulator("--count", "2", "--shards", "2", cnip="udp://127.0.0.1:0",
                         optical="off", mep="off")
    pids = [s["pid"] for s in emu.ready["shards"]]
    emu.kill9()

    def gone(pid: int) -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()  # not yet reaped
        except OSError:
            return True

    wait_for(lambda: all(gone(pid) for pid in pids), 10, "both shards ending")
