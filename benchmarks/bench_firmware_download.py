"""Benchmark of a firmware download through the optical port of a real ``meter-emu run`` with
``--state`` (every acknowledged EP09 packet is on disk before its answer leaves). Not a test:
prints packets per second and the state file's size for a few image sizes, to show what
rewriting the state document per packet costs as the download grows.

    python benchmarks/bench_firmware_download.py [--sizes 16000,64000,256000]
"""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meter_emu.client import firmware as fw
from meter_emu.client.optical import connect, parse_password
from meter_emu.device.firmware import build_image


def start(workdir: Path) -> tuple[subprocess.Popen, str]:
    ready = workdir / "ready.json"
    script = Path(sys.executable).with_name("meter-emu")
    proc = subprocess.Popen([str(script), "run", "--optical", "tcp://127.0.0.1:0", "--mep",
                             "off", "--mqtt", "off", "--state", str(workdir / "state"),
                             "--ready-file", str(ready)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("meter-emu run exited")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["ports"]["optical"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="16000,64000,256000")
    args = parser.parse_args()
    print(machine.describe())
    for size in (int(s) for s in args.sizes.split(",")):
        image = build_image(bytes(8), "3.20.05", os.urandom(size - 34))
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start(Path(tmp))
            try:
                client = connect(url)
                with client.session(parse_password("MK-meter-emu-default")):
                    began = time.perf_counter()
                    summary = fw.download(client, image)
                    took = time.perf_counter() - began
                client.close()
                state = (Path(tmp) / "state" / "meters.json").stat().st_size
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        print(f"image {size:>7} bytes: {summary.packets:>5} packets in {took:6.2f} s = "
              f"{summary.packets / took:7.1f} packets/s, {size / took / 1000:7.1f} kB/s; "
              f"state file at the end {state / 1000:.0f} kB")


if __name__ == "__main__":
    main()
