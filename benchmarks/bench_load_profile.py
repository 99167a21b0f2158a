"""Benchmark of the load profile recorder. Not a test: prints virtual days of 15-minute load
profile per second for a fleet of meters (recorder only: ``recorder.run_due`` at each interval
end, the registers set directly), and the machine it ran on.

    python benchmarks/bench_load_profile.py [--meters 1000] [--days 3]

Figures: closing intervals (96 per meter-day, 4 channels of BT16 sources 0-3 read through
``engine.source_value``), the fast path (``run_due`` between interval ends, as the engine calls
it at every step), the memory the rings take, and a full BT64 render. The budget (DESIGN.md
section 6) is 10,000 meters x one day of 15-minute load profile in 30 s, engine included: 333
meter-days per second for everything."""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import time

from meter_emu.device.meter import Meter
from meter_emu.metering import recorder
from meter_emu.profile import load_profile
from meter_emu.tables import bt
from meter_emu.tables import load_profile as lp

START = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
STEP = 900


def record_days(meters: list[Meter], first_day: int, days: int) -> float:
    """Seconds to close every interval of ``days`` days on every meter."""
    began = time.perf_counter()
    for step in range(1, days * DAY // STEP + 1):
        now = START + first_day * DAY + step * STEP
        for meter in meters:
            registers = meter.state.registers
            registers["fwd_active_wh"] += 575
            registers["import_reactive_varh"] += 12
            recorder.run_due(meter, now)
    return time.perf_counter() - began


def fast_path(meters: list[Meter], now: float, calls: int) -> float:
    """Seconds for ``calls`` run_due calls per meter with no interval ending."""
    began = time.perf_counter()
    for k in range(calls):
        at = now + 1 + k * (STEP - 2) / calls
        for meter in meters:
            recorder.run_due(meter, at)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=3, help="virtual days timed (default 3)")
    args = parser.parse_args()

    print(machine.describe())
    profile = load_profile()
    geometry = lp.load_profile_geometry(Meter(profile))[0]
    print(f"fleet:   {args.meters} meters, {geometry.channels} channels of "
          f"{geometry.interval_minutes} min, {geometry.blocks} blocks of "
          f"{geometry.block_size} bytes")
    meters = [Meter(profile) for _ in range(args.meters)]
    for meter in meters:
        recorder.run_due(meter, START)  # recording starts; no ring yet
    record_days(meters, 0, 1)  # warm up: rings allocated, first blocks entered
    seconds = record_days(meters, 1, args.days)
    meter_days = args.meters * args.days
    intervals = meter_days * DAY // STEP
    print(f"\nclosing intervals ({args.days} virtual days, run_due at each interval end):")
    print(f"  {meter_days / seconds:>12,.0f} meter-days/s   "
          f"({intervals / seconds:,.0f} intervals/s, {seconds / intervals * 1e6:.2f} us each)")
    print(f"  10,000 meters x 1 day: {10_000 / (meter_days / seconds):.1f} s of recorder time")
    calls = 20
    now = START + (1 + args.days) * DAY
    seconds = fast_path(meters, now, calls)
    print(f"\nfast path (run_due with nothing due, {calls} calls per meter):")
    print(f"  {calls * args.meters / seconds:>12,.0f} calls/s   "
          f"({seconds / (calls * args.meters) * 1e6:.2f} us each)")
    renders = 20
    meters[0].table_bytes(bt(64), now)
    began = time.perf_counter()
    for _ in range(renders):
        size = len(meters[0].table_bytes(bt(64), now))
    seconds = (time.perf_counter() - began) / renders
    print(f"\nfull BT64 read (render of {size:,} bytes): {seconds * 1e3:.2f} ms each")
    ring = len(lp.memory(meters[0]).rings[0])
    print(f"\nmemory: after {1 + args.days} days each meter's ring holds {ring:,} bytes "
          f"({ring * args.meters / 2**20:.1f} MiB for the fleet); at most "
          f"{geometry.table_size:,} (BT61), none before the first interval")


if __name__ == "__main__":
    main()
