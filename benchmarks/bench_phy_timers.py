"""Do the head-end's transaction timers fit PLC airtime? Reads over the simulated BPSK line
(phy/line.py, virtual time: the same airtime and CSMA delays as ``meter-emu run --phy bpsk``,
only faster) with the head-end at the concentrator's position, for several head-end transmit
timer codes: the time a read takes, and how many requests the head-end sent per read (more than
one: its transmit timer ran out while the answer was still on its way, a wasted retry on air).

    python3 benchmarks/bench_phy_timers.py [--reads 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from meter_emu.client.plc import HeadEnd, PlcClient, head_end_config, meter_ref  # noqa: E402
from meter_emu.clock import ManualClock  # noqa: E402
from meter_emu.device.meter import Meter  # noqa: E402
from meter_emu.lon.timers import transmit_timer_s  # noqa: E402
from meter_emu.phy import topology as topo  # noqa: E402
from meter_emu.phy.line import PowerLine  # noqa: E402
from meter_emu.plc.station import MeterStation  # noqa: E402
from meter_emu.profile import fleet_profiles, load_profile  # noqa: E402

ET03 = 2048 + 3
STREET = Path(__file__).resolve().parents[1] / "profiles" / "topology" / "street.toml"


def rig(tx_code: int, seed: int):
    profile = load_profile("default", ["identity.subnet=1", "identity.node=1"])
    clock = ManualClock()
    stations = [MeterStation(Meter(p, now=clock.now()), clock, rng=random.Random(i))
                for i, p in enumerate(fleet_profiles(profile, 10))]
    t = topo.load_topology(STREET, [s.meter.id for s in stations], seed=seed)
    line = PowerLine(noise=t.noise, tx_level_dbuv=t.tx_level_dbuv, seed=seed)
    index = [line.attach(s.node, s.meter.id) for s in stations]
    config = head_end_config()
    config.transmit_timer = tx_code
    head_end = HeadEnd.on_channel(line, config, rng=random.Random(seed), timeout=60.0)
    for i, a in enumerate(index):
        line.set_attenuation(head_end.link, a, t.attenuation(topo.CONCENTRATOR, i))
        for j in range(i + 1, len(index)):
            line.set_attenuation(a, index[j], t.attenuation(i, j))
    sent = []
    line.taps.append(lambda raw, sender, start, end: sent.append(sender == head_end.link))
    return line, PlcClient(head_end, b"OMA-emu-dflt", rng=random.Random(seed)), sent


def measure(tx_code: int, what: str, reads: int) -> str:
    line, client, sent = rig(tx_code, seed=11)
    durations, requests = [], []
    for n in range(reads):
        ref = meter_ref(f"1/{1 + n % 9}")
        before, count = line.now, len(sent)
        if what == "BT01 full read (24 B)":
            client.read_table(ref, 1)
        elif what == "84-byte partial read":
            client.read_table(ref, ET03, 0, 84)
        elif what == "BT01 via repeater 1/5":
            client.read_table(meter_ref("1/10").via("1/5"), 1)
        else:
            client.read_table(meter_ref("1/10").via("1/5"), ET03, 0, 84)
        durations.append(line.now - before)
        requests.append(sum(sent[count:]))
    extra = sum(r - 1 for r in requests)
    return (f"  timer {transmit_timer_s(tx_code) * 1000:5.0f} ms (code {tx_code:2d})  "
            f"{what:<28} median {statistics.median(durations):5.2f} s  "
            f"max {max(durations):5.2f} s  head-end frames/read {statistics.mean(requests):.2f}"
            f"  ({extra} extra in {reads} reads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args()
    print(describe())
    print("reads over the BPSK line (profiles/topology/street.toml), virtual time:")
    for what in ("BT01 full read (24 B)", "84-byte partial read", "BT01 via repeater 1/5",
                 "84 bytes via repeater 1/5"):
        for code in (10, 11, 12):
            print(measure(code, what, args.reads), flush=True)


if __name__ == "__main__":
    main()
