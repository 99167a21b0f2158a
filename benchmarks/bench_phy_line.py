"""How much faster than real time a fleet runs on the simulated BPSK power line (phy/line.py):
N meters and a head-end; the head-end discovers the fleet (every meter answers inside one
window: the CSMA MAC at work; an answer still queued when the head-end's last timer ends is
not counted, see the README) and reads BT01 and ET03 (two parts) from each meter. Prints the
virtual seconds the line ran, the wall seconds it took, their ratio, and the line's counters.

    python3 benchmarks/bench_phy_line.py [--meters 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from meter_emu.client.plc import (ClientError, HeadEnd, PlcClient, head_end_config,  # noqa: E402
                                  meter_ref)
from meter_emu.clock import ManualClock  # noqa: E402
from meter_emu.device.meter import Meter  # noqa: E402
from meter_emu.phy.line import PowerLine  # noqa: E402
from meter_emu.plc.station import MeterStation  # noqa: E402
from meter_emu.profile import fleet_profiles, load_profile  # noqa: E402

ET03 = 2048 + 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--discover", type=float, default=10.0,
                        help="discovery duration, s (answers come in its first half)")
    args = parser.parse_args()
    print(describe())
    clock = ManualClock()
    line = PowerLine(seed=args.seed)
    stations = []
    for index, profile in enumerate(fleet_profiles(load_profile("default", []), args.meters)):
        station = MeterStation(Meter(profile, now=clock.now()), clock,
                               rng=random.Random(index))
        line.attach_station(station)
        stations.append(station)
    line.randomize_attenuation(30.0, 70.0)
    head_end = HeadEnd.on_channel(line, head_end_config(), rng=random.Random(99), timeout=30.0)
    client = PlcClient(head_end, b"OMA-emu-dflt", rng=random.Random(5))
    airtime = []
    line.taps.append(lambda raw, sender, start, end: airtime.append(end - start))
    wall = time.perf_counter()
    found = client.discover(duration=args.discover)
    line.run(args.discover)  # late answers drain before the reads
    reads = good = 0
    for station in stations:
        ref = meter_ref(station.meter.profile.identity.neuron_id)
        for table in (1, ET03):
            reads += 1
            try:
                good += client.read_table(ref, table) == station.meter.table_bytes(
                    table, clock.now())
            except ClientError as error:
                print("read failed:", error)
    wall = time.perf_counter() - wall
    total = {name: sum(getattr(s, name) for s in line.stats)
             for name in ("sent", "received", "collisions", "crc_errors", "missed", "backoffs",
                          "overheard")}
    print(f"fleet: {args.meters} meters + head-end, links 30..70 dB, noise floor 0 dBuV/Hz")
    print(f"discovered {len(found)}/{args.meters}; table reads right: {good}/{reads}")
    print(f"virtual {line.now:.1f} s in wall {wall:.2f} s: {line.now / wall:.0f}x real time")
    busy = sum(airtime)
    print(f"frames on air {len(airtime)}, {busy:.1f} s of airtime: {busy / wall:.0f}x real "
          f"time counting airtime only, {1000 * wall / len(airtime):.2f} ms wall per frame")
    print("line counters:", ", ".join(f"{k} {v}" for k, v in total.items()))


if __name__ == "__main__":
    main()
