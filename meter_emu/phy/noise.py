"""The power line's noise and interference, rendered in complex baseband (phy/modem.py units:
samples in microvolts, a level in dBuV is the mean power of the samples).

Four kinds, each off by default apart from the AWGN floor:

* AWGN with a one-sided power spectral density (dBuV/Hz), made by ``modem.awgn``;
* impulsive noise: Poisson arrivals (``impulses_per_s``), each a burst of white noise
  ``impulse_s`` long at ``impulse_dbuv`` (switching transients, broadband within the band);
* narrow-band interferers: tones ``(Hz, dBuV)`` (a tone inside a carrier's band jams it);
* mains-synchronous noise: bursts of white noise ``mains_sync_s`` long at ``mains_sync_dbuv``,
  twice per mains period, locked to the line's absolute time (rectifiers, dimmers).

designed: the shapes (white bursts, one common phase per tone) and the default durations are
ours; every receiver draws its own noise (independent receivers, a shortcut: on a real line an
impulse reaches every meter, attenuated differently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Noise:
    """The line's noise and interference (levels in dBuV; designed defaults)."""
    floor_dbuv_hz: float | None = 0.0          # AWGN one-sided PSD (None: no AWGN)
    impulses_per_s: float = 0.0                # Poisson impulsive noise
    impulse_dbuv: float = 90.0
    impulse_s: float = 100e-6
    interferers: list[tuple[float, float]] = field(default_factory=list)  # (Hz, dBuV) tones
    mains_hz: float = 50.0
    mains_sync_dbuv: float | None = None       # bursts at twice the mains frequency
    mains_sync_s: float = 1e-3                 # designed burst length

    def band_dbuv(self, bandwidth_hz: float) -> float:
        """AWGN power in ``bandwidth_hz`` (dBuV): what carrier sense and the receive shortcuts
        compare a frame's level with."""
        if self.floor_dbuv_hz is None:
            return -300.0
        return self.floor_dbuv_hz + 10.0 * math.log10(bandwidth_hz)

    def render(self, t0: float, n: int, fs: float, center_hz: float,
               rng: np.random.Generator, awgn) -> np.ndarray:
        """``n`` complex samples at ``fs`` starting at line time ``t0``."""
        out = awgn(n, self.floor_dbuv_hz, fs, rng) if self.floor_dbuv_hz is not None \
            else np.zeros(n, np.complex128)
        duration = n / fs
        if self.impulses_per_s > 0:
            for _ in range(rng.poisson(self.impulses_per_s * duration)):
                _burst(out, int(rng.integers(n)), self.impulse_s, self.impulse_dbuv, fs, rng)
        if self.mains_sync_dbuv is not None and self.mains_hz > 0:
            period = 1.0 / (2.0 * self.mains_hz)
            k = math.ceil(t0 / period)
            while k * period < t0 + duration:
                _burst(out, int(round((k * period - t0) * fs)), self.mains_sync_s,
                       self.mains_sync_dbuv, fs, rng)
                k += 1
        if self.interferers:
            t = t0 + np.arange(n) / fs
            for hz, dbuv in self.interferers:
                offset = hz - center_hz
                if abs(offset) < fs / 2:  # outside the baseband: the receive filter took it
                    out += 10 ** (dbuv / 20) * np.exp(2j * np.pi * offset * t)
        return out


def _burst(out: np.ndarray, start: int, seconds: float, dbuv: float, fs: float,
           rng: np.random.Generator) -> None:
    length = max(1, int(round(seconds * fs)))
    lo, hi = max(0, start), min(len(out), start + length)
    if hi <= lo:
        return
    scale = 10 ** (dbuv / 20) / math.sqrt(2)
    out[lo:hi] += scale * (rng.standard_normal(hi - lo) + 1j * rng.standard_normal(hi - lo))
