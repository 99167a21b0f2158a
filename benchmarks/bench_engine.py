"""Benchmark of the metering engine on the virtual clock. Not a test: prints meter-days per
second for a fleet of meters with a constant load (230 V, 10 A, PF 0.95) advanced through one
virtual day in 15-minute steps, and the machine it ran on.

    python benchmarks/bench_engine.py [--meters 1000] [--hooks scaffolding|installed]

Figures: ``engine.advance`` alone, and ``Meter.advance`` (what the runner calls: pending
tables, relay, engine), both with the hook modules (TOU, demand, power quality, load profile
recorder) as installed (``--hooks installed``, the default: what a fleet costs) or replaced by
no-ops (``--hooks scaffolding``: the engine's own cost). A varying load (a sine current, 60-second steps) is timed
on a tenth of the fleet for comparison. The budget (DESIGN.md section 6) is 10,000 meters x one
day of 15-minute load profile in 30 s: 333 meter-days per second for everything."""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import contextlib
import time

from meter_emu.device.meter import Meter
from meter_emu.metering import demand, engine, power_quality, quantities, recorder, tou
from meter_emu.profile import load_profile

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
STEP = 900.0


@contextlib.contextmanager
def scaffolding_hooks():
    """The hook modules as their scaffolding was: nothing due, nothing to do, tier 0."""
    replaced = {
        (tou, "current_tier"): lambda meter, now: 0,
        (tou, "next_due"): lambda meter, now: None,
        (tou, "run_due"): lambda meter, now: None,
        (demand, "accumulate"): lambda meter, start, end, energy: None,
        (demand, "next_due"): lambda meter, now: None,
        (demand, "run_due"): lambda meter, now: None,
        (power_quality, "check"): lambda meter, now, sample, duration: None,
        (recorder, "next_due"): lambda meter, now: None,
        (recorder, "run_due"): lambda meter, now: None,
        (recorder, "note"): lambda meter, now, flag: None,
    }
    saved = {key: getattr(*key) for key in replaced}
    for (module, name), function in replaced.items():
        setattr(module, name, function)
    try:
        yield
    finally:
        for (module, name), function in saved.items():
            setattr(module, name, function)


def fleet(count: int, load: dict) -> list[Meter]:
    profile = load_profile()
    meters = []
    for _ in range(count):
        meter = Meter(profile)
        meter.advance(START)
        quantities.apply(meter, load, START)
        meters.append(meter)
    return meters


def run_day(meters: list[Meter], advance) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to advance every meter through one day in 15-minute steps.
    The figure uses the CPU time: on a shared machine the wall time measures the neighbours."""
    began, wall = time.process_time(), time.perf_counter()
    now = START
    while now < START + DAY:
        now += STEP
        for meter in meters:
            advance(meter, now)
    return time.process_time() - began, time.perf_counter() - wall


def figure(label: str, meters: list[Meter], advance) -> None:
    seconds, wall = run_day(meters, advance)
    energy = meters[0].state.registers["fwd_active_wh"]
    print(f"  {label:<44} {len(meters) / seconds:>10,.0f} meter-days/s "
          f"({seconds:.2f} s CPU, {wall:.2f} s wall; meter 1: {energy} Wh)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--hooks", choices=("scaffolding", "installed"), default="installed",
                        help="use the hook modules (default) or replace them by no-ops")
    args = parser.parse_args()
    print(machine.describe())
    print(f"fleet:   {args.meters} single-phase meters, one virtual day in 15-minute steps, "
          f"hooks {args.hooks}; one core")
    constant = {"voltage": 230, "current": 10, "pf": 0.95}
    varying = {"voltage": 230, "pf": 0.95,
               "current": {"type": "sine", "mean": 10, "amplitude": 2, "period_s": 3600}}
    hooks = scaffolding_hooks() if args.hooks == "scaffolding" else contextlib.nullcontext()
    with hooks:
        figure("constant load, engine.advance", fleet(args.meters, constant), engine.advance)
        figure("constant load, Meter.advance", fleet(args.meters, constant), Meter.advance)
        few = max(1, args.meters // 10)
        figure(f"sine current ({few} meters), Meter.advance", fleet(few, varying),
               Meter.advance)


if __name__ == "__main__":
    main()
