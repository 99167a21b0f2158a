"""``meter-emu phy ber`` and ``meter-emu phy spectrum``: the BPSK PHY's pictures, with the
figures they show printed (phy/plots.py measures and draws)."""

from __future__ import annotations

import sys
import time

import numpy as np


def add_parser(sub) -> None:
    phy = sub.add_parser("phy", help="the software BPSK PHY's pictures (BER, spectrum)")
    cmds = phy.add_subparsers(dest="phy_command", required=True)
    ber = cmds.add_parser("ber", help="measured BER (uncoded, coded) and FER vs Eb/N0, with "
                                      "the theory curve, as a PNG")
    ber.add_argument("--out", default="ber.png", help="PNG to write (default ber.png)")
    ber.add_argument("--frames", type=int, default=300,
                     help="110-byte frames per Eb/N0 point and curve (default 300)")
    ber.add_argument("--seed", type=int, default=1, help="noise and data seed (default 1)")
    ber.add_argument("--ebn0", default="0:10:1", metavar="FIRST:LAST:STEP",
                     help="Eb/N0 points in dB (default 0:10:1)")
    spec = cmds.add_parser("spectrum", help="PSD (both carriers, A-band edges), constellation "
                                            "and eye diagram, as a PNG")
    spec.add_argument("--out", default="spectrum.png", help="PNG to write (default spectrum.png)")
    spec.add_argument("--snr", type=float, default=15.0,
                      help="Es/N0 (dB) of the constellation and eye frame (default 15)")
    spec.add_argument("--seed", type=int, default=1)


def _points(text: str) -> list[float]:
    first, last, step = (float(v) for v in text.split(":"))
    if step <= 0 or last < first or (last - first) / step > 100:
        raise ValueError(text)
    return [round(v, 6) for v in np.arange(first, last + step / 2, step)]


def main(args) -> int:
    try:
        import matplotlib  # noqa: F401  (only to know it is there)
    except ImportError:
        print("matplotlib is missing: install meter_emu[plots]", file=sys.stderr)
        return 2
    from . import plots
    from .modem import Modem
    modem = Modem()
    if args.phy_command == "ber":
        try:
            ebn0 = _points(args.ebn0)
        except ValueError:
            print(f"--ebn0 {args.ebn0!r}: want FIRST:LAST:STEP in dB", file=sys.stderr)
            return 2
        if args.frames < 1:
            print("--frames must be at least 1", file=sys.stderr)
            return 2
        began = time.perf_counter()
        points = plots.measure_ber(modem, ebn0, args.frames, args.seed)
        plots.draw_ber(points, args.out, 110)
        print(f"wrote {args.out} ({args.frames} frames of 110 bytes per point, seed {args.seed},"
              f" {time.perf_counter() - began:.1f} s)")
        print(f"{'Eb/N0 dB':>8} {'theory':>10} {'uncoded':>10} {'coded':>10} {'FER':>8}")
        for p in points:
            print(f"{p.ebn0_db:8.1f} {float(plots.theory_ber(p.ebn0_db)):10.3e} "
                  f"{p.uncoded_ber:10.3e} {p.coded_ber:10.3e} {p.fer:8.3f}")
        for target in (1e-3, 1e-4):
            at = plots.ebn0_at(points, target)
            if at is not None:
                print(f"uncoded BER {target:.0e} at Eb/N0 {at:.2f} dB (theory "
                      f"{plots.theory_ebn0_at(target):.2f} dB, gap "
                      f"{at - plots.theory_ebn0_at(target):+.2f} dB)")
            coded = plots.ebn0_at(points, target, coded=True)
            if coded is not None:
                print(f"coded BER {target:.0e} at Eb/N0 {coded:.2f} dB")
        return 0
    f, psds, occupied, outside = plots.spectrum(modem, args.seed)
    symbols, eye, margin = plots.constellation_and_eye(modem, args.snr, args.seed)
    plots.draw_spectrum(f, psds, symbols, eye, margin, args.out)
    print(f"wrote {args.out}")
    for alt, name in ((False, "primary 86 kHz"), (True, "secondary 75 kHz")):
        print(f"{name}: 99% occupied bandwidth {occupied[alt] / 1e3:.2f} kHz, power outside "
              f"9-95 kHz {10 * np.log10(outside[alt] + 1e-30):.1f} dB")
    print(f"constellation frame: Es/N0 {args.snr:.1f} dB, estimated {margin:.2f} dB")
    return 0
