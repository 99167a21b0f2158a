"""Benchmark: secured partial reads through the full PLC stack over CN/IP (DESIGN.md section 6:
at least 5,000 requests/s per core). Not a test: prints figures and the machine.

    python benchmarks/bench_plc.py [--meters 50] [--seconds 5] [--window 15] [--count 84]

A ``meter-emu run --count N --cnip udp://127.0.0.1:0`` subprocess is the fleet (real UDP, its
own process and core); this process is the head-end (client/plc.py on cnip/client.py), keeping
up to ``--window`` requests in flight (one per meter: each meter's sequence numbers go in order;
at most 15, the 4-bit transaction numbers). Every request is a partial read of BT01/ET03 bytes,
sealed with the sequence number and the OMA digest and verified on return. Printed: requests/s
(wall), the fleet process's CPU seconds and requests per CPU-second of the fleet ("per core":
the budget's figure), the head-end's requests per CPU-second, and p50/p99 latency.
"""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meter_emu.client.plc import HeadEnd, PlcClient, meter_ref
from meter_emu.lon.node import Service
from meter_emu.profile import fleet_profiles, load_profile

ET03 = 2048 + 3


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_fleet(meters: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    ready = workdir / "ready.json"
    script = Path(sys.executable).with_name("meter-emu")
    proc = subprocess.Popen([str(script), "run", "--count", str(meters), "--cnip",
                             "udp://127.0.0.1:0", "--optical", "off", "--mep", "off", "--mqtt",
                             "off", "--ready-file", str(ready), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "stderr", "wb"))
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the fleet did not start: {(workdir / 'stderr').read_text()}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["ports"]["cnip"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=15, help="requests in flight (<= 15)")
    parser.add_argument("--count", type=int, default=84, help="bytes per partial read (<= 84)")
    args = parser.parse_args()
    print(machine.describe(f" | {args.meters} meters, window {args.window}, "
                           f"{args.count}-byte partial reads"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-plc-"))
    proc, url = start_fleet(args.meters, workdir)
    try:
        run(url, args, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def run(url: str, args, fleet_pid: int) -> None:
    profiles = fleet_profiles(load_profile(), args.meters)
    head_end = HeadEnd.over_cnip(url, timeout=10.0)
    client = PlcClient(head_end, load_profile().oma_key())
    refs = [meter_ref(p.identity.neuron_id) for p in profiles]
    for ref in refs:  # warm-up: each session learns its meter's sequence number
        client.read_table(ref, 1)
    apdu = bytes([0x3F]) + ET03.to_bytes(2, "big") + (0).to_bytes(3, "big") \
        + args.count.to_bytes(2, "big")
    window = min(args.window, 15, len(refs))
    pending: dict[int, tuple[object, float]] = {}  # handle -> (ref, sent at)
    idle = list(refs)
    latencies: list[float] = []
    done_count = errors = 0
    start_cpu = _cpu_seconds(fleet_pid)
    start_self = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    end = start + args.seconds

    def issue() -> None:
        while idle and len(pending) < window:
            ref = idle.pop(0)
            sealed = client.session(ref).request(apdu)
            handle = head_end.send(sealed, ref.dst, service=Service.REQUEST, domain_index=0)
            pending[handle] = (ref, time.perf_counter())

    issue()
    while time.perf_counter() < end:
        head_end.driver.run_until(lambda: any(h in head_end._done for h in pending), 5.0)
        for handle in [h for h in pending if h in head_end._done]:
            completion = head_end._done.pop(handle)
            head_end._waiting.discard(handle)
            ref, sent = pending.pop(handle)
            idle.append(ref)
            if not completion.ok or not completion.responses:
                errors += 1
                continue
            plain = client.session(ref).response(completion.responses[0].apdu)
            if plain[0] != 0 or len(plain) != 3 + args.count:
                errors += 1
                continue
            done_count += 1
            latencies.append(time.perf_counter() - sent)
        issue()
    wall = time.perf_counter() - start
    fleet_cpu = _cpu_seconds(fleet_pid) - start_cpu
    usage = resource.getrusage(resource.RUSAGE_SELF)
    self_cpu = (usage.ru_utime - start_self.ru_utime) + (usage.ru_stime - start_self.ru_stime)
    head_end.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(f"secured partial reads: {done_count} in {wall:.2f} s = {done_count / wall:,.0f} req/s "
          f"(wall), {errors} failed")
    print(f"fleet process: {fleet_cpu:.2f} CPU s = {done_count / max(fleet_cpu, 1e-9):,.0f} "
          f"req/s per core (budget 5,000)")
    print(f"head-end: {self_cpu:.2f} CPU s = {done_count / max(self_cpu, 1e-9):,.0f} req/s "
          f"per core")
    if latencies:
        print(f"latency: p50 {pct(0.50):.2f} ms, p99 {pct(0.99):.2f} ms")


if __name__ == "__main__":
    main()
