"""The BPSK PHY's figures against issue 9's bars: uncoded BER gap to theory at 1e-4 (<= 0.5 dB),
effective data rate on maximum-size OSGP frames (>= 2.36 kbps), real-time factor of modulate +
AWGN + demodulate on one core (>= 200x), SNR estimate error from 0 to 30 dB (<= +-1 dB).

    python3 benchmarks/bench_phy.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from machine import describe  # noqa: E402
from meter_emu.lon import frame  # noqa: E402
from meter_emu.phy import plots  # noqa: E402
from meter_emu.phy.modem import SYMBOL_RATE, Modem  # noqa: E402

MIN_GAP_BIT_TIMES = 17.5   # lower-layers.md §7, PL-20 timing: minimum inter-packet


def max_osgp_lpdu() -> bytes:
    """A 95-byte APDU (DESIGN.md D1) in a request, subnet/node addressing, 6-byte domain."""
    npdu = frame.Npdu(src_subnet=1, src_node=5, dst=frame.SubnetNode(1, 9),
                      pdu=frame.Spdu(type=0, tid=3, apdu=bytes(range(95))),
                      domain=bytes(6))
    return frame.encode(frame.Lpdu(npdu, delta_backlog=1))


def ber_gap(modem: Modem, frames: int) -> float | None:
    rng = np.random.default_rng(42)
    points = []
    for ebn0 in (7.5, 8.0, 8.5, 9.0):
        errors, bits = plots.measure_uncoded(modem, ebn0, frames, rng)
        points.append(plots.BerPoint(ebn0, errors, bits, 0, 0, frames, 0))
        print(f"  Eb/N0 {ebn0:4.1f} dB: uncoded BER {errors / bits:.3e} ({errors} errors in "
              f"{bits} bits), theory {float(plots.theory_ber(ebn0)):.3e}")
    at = plots.ebn0_at(points, 1e-4)
    return None if at is None else at - plots.theory_ebn0_at(1e-4)


def real_time_factor(modem: Modem, seconds: float) -> tuple[float, float]:
    """(airtime / CPU time of this process, airtime / wall time): CPU time is the per-core
    figure (numpy and scipy.fft run single-threaded here); wall time suffers from neighbours."""
    rng = np.random.default_rng(1)
    lpdu = max_osgp_lpdu()
    air = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        r = modem.demodulate(plots.noisy(modem, lpdu, 12.0, rng))
        air += modem.airtime(len(lpdu))
        assert r.lpdu == lpdu
    return air / (time.process_time() - cpu0), air / (time.perf_counter() - wall0)


def snr_errors(modem: Modem, frames: int) -> list[tuple[float, float, float, float, int]]:
    """(true SNR, mean error, RMS error, max |error|, frames found) per SNR."""
    rng = np.random.default_rng(7)
    rows = []
    for snr in range(0, 31, 3):
        err = []
        for _ in range(frames):
            r = modem.demodulate(plots.noisy(modem, plots.random_lpdu(rng), snr, rng))
            if r.reason != "no-carrier":
                err.append(r.margin_db - snr)
        e = np.array(err)
        rows.append((snr, float(e.mean()), float(np.sqrt((e ** 2).mean())),
                     float(np.abs(e).max()), len(e)))
    return rows


def main() -> int:
    quick = "--quick" in sys.argv
    print(describe(f" | numpy {np.__version__}"))
    modem = Modem()

    print("uncoded BER near 1e-4 (110-byte frames, real sync/phase/timing recovery):")
    gap = ber_gap(modem, 300 if quick else 2500)
    print(f"uncoded BER gap to theory at 1e-4: {gap:+.2f} dB (bar <= 0.5 dB)"
          if gap is not None else "uncoded BER gap: not bracketed")

    lpdu = max_osgp_lpdu()
    air = modem.airtime(len(lpdu))
    gap_s = MIN_GAP_BIT_TIMES / SYMBOL_RATE
    rate = 95 * 8 / (air + gap_s)
    print(f"maximum OSGP frame: {len(lpdu)}-byte LPDU (95-byte APDU, 6-byte domain, subnet/node),"
          f" airtime {air * 1e3:.2f} ms + inter-packet gap {gap_s * 1e3:.2f} ms")
    print(f"effective data rate: {rate:.0f} bit/s of APDU (bar >= 2360), raw 3600, "
          f"overhead {100 * (1 - rate / 3600):.1f} %")

    cpu, wall = real_time_factor(modem, 1.0 if quick else 4.0)
    print(f"real-time factor, modulate + AWGN + demodulate of {len(lpdu)}-byte frames, one core:"
          f" {cpu:.0f}x of CPU time (bar >= 200x); {wall:.0f}x of wall time")

    print("SNR (margin) estimate error, 110-byte frames, every frame found counted:")
    worst = 0.0
    for snr, mean, rms, peak, n in snr_errors(modem, 30 if quick else 200):
        worst = max(worst, abs(mean))
        print(f"  SNR {snr:2d} dB: mean error {mean:+.2f} dB, RMS {rms:.2f} dB, "
              f"max {peak:.2f} dB ({n} frames)")
    print(f"SNR estimate: worst mean error {worst:.2f} dB from 0 to 30 dB (bar <= 1 dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
