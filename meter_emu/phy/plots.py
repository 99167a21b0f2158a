"""Measurements of the BPSK modem (BER, FER, spectrum) and their pictures.

The measurements are plain numpy (the benchmark uses them too); matplotlib is imported only by
the ``draw_*`` functions, with the Agg backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import welch
from scipy.special import erfc

from ..lon.frame import crc16_lon
from . import fec
from .modem import SPS, SYMBOL_RATE, Modem, awgn, carrier_hz

LEVEL_DBUV = 100.0
A_BAND = (9e3, 95e3)
CODE_RATE = fec.K / fec.N


def theory_ber(ebn0_db) -> np.ndarray:
    """Coherent BPSK: Q(sqrt(2 Eb/N0))."""
    return 0.5 * erfc(np.sqrt(10 ** (np.asarray(ebn0_db, float) / 10)))


def random_lpdu(rng: np.random.Generator, n: int = 110) -> bytes:
    body = bytes(rng.integers(0, 256, n - 2, dtype=np.uint8))
    return body + crc16_lon(body).to_bytes(2, "big")


def noisy(modem: Modem, lpdu: bytes, esn0_db: float, rng: np.random.Generator,
          alt: bool = False, guard: int = 64) -> np.ndarray:
    """The frame at LEVEL_DBUV with guard samples each side, in AWGN giving Es/N0."""
    wave = modem.modulate(lpdu, alt)
    x = np.zeros(len(wave) + 2 * guard, complex)
    x[guard:len(x) - guard] = wave * 10 ** (LEVEL_DBUV / 20)
    return x + awgn(len(x), LEVEL_DBUV - 10 * math.log10(SYMBOL_RATE) - esn0_db, modem.fs, rng)


@dataclass
class BerPoint:
    ebn0_db: float
    uncoded_errors: int
    uncoded_bits: int
    coded_errors: int
    coded_bits: int
    frames: int
    frame_errors: int

    @property
    def uncoded_ber(self) -> float:
        return self.uncoded_errors / max(self.uncoded_bits, 1)

    @property
    def coded_ber(self) -> float:
        return self.coded_errors / max(self.coded_bits, 1)

    @property
    def fer(self) -> float:
        return self.frame_errors / max(self.frames, 1)


def measure_uncoded(modem: Modem, ebn0_db: float, frames: int, rng, lpdu_len: int = 110
                    ) -> tuple[int, int]:
    """(bit errors, bits) on the channel bits after the preamble, Es = Eb (no coding)."""
    errors = bits = 0
    for _ in range(frames):
        lpdu = random_lpdu(rng, lpdu_len)
        sent = modem.frame_bits(lpdu)
        got = modem.channel_bits(noisy(modem, lpdu, ebn0_db, rng), len(sent))
        errors += len(sent) // 2 if got is None else int(np.count_nonzero(got != sent))
        bits += len(sent)
    return errors, bits


def measure_ber(modem: Modem, ebn0_dbs, frames: int, seed: int, lpdu_len: int = 110
                ) -> list[BerPoint]:
    """Uncoded BER (channel bits, Es/N0 = Eb/N0) and coded BER / FER (Eb per information bit:
    Es/N0 = Eb/N0 + 10 log10(0.9)) at each Eb/N0, ``frames`` random LPDUs each."""
    rng = np.random.default_rng(seed)
    points = []
    for ebn0 in ebn0_dbs:
        u_err, u_bits = measure_uncoded(modem, ebn0, frames, rng, lpdu_len)
        c_err = f_err = 0
        esn0 = ebn0 + 10 * math.log10(CODE_RATE)
        for _ in range(frames):
            lpdu = random_lpdu(rng, lpdu_len)
            samples = noisy(modem, lpdu, esn0, rng)
            r = modem.demodulate(samples)
            if r.lpdu != lpdu:
                f_err += 1
                c_err += _coded_errors(modem, samples, lpdu)
        points.append(BerPoint(ebn0, u_err, u_bits, c_err, 8 * lpdu_len * frames, frames, f_err))
    return points


def _coded_errors(modem: Modem, samples: np.ndarray, lpdu: bytes) -> int:
    """Information-bit errors after FEC (failed blocks count as received)."""
    sent = np.unpackbits(np.frombuffer(lpdu, np.uint8))
    n_channel = len(modem.frame_bits(lpdu))
    got = modem.channel_bits(samples, n_channel)
    if got is None:
        return len(sent) // 2
    data, _ = fec.decode_bits(got[n_channel - fec.coded_length(len(sent)):], len(sent),
                              partial=True)
    return int(np.count_nonzero(data != sent))


def ebn0_at(points: list[BerPoint], target: float, coded: bool = False) -> float | None:
    """Eb/N0 where the measured BER crosses ``target`` (log-linear interpolation)."""
    xs = [p.ebn0_db for p in points]
    ys = [p.coded_ber if coded else p.uncoded_ber for p in points]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 >= target > y1 > 0:
            t = (math.log10(y0) - math.log10(target)) / (math.log10(y0) - math.log10(y1))
            return x0 + t * (x1 - x0)
    return None


def theory_ebn0_at(target: float) -> float:
    lo, hi = -5.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if theory_ber(mid) > target else (lo, mid)
    return (lo + hi) / 2


def spectrum(modem: Modem, seed: int = 1, fs: float = 480_000.0, frames: int = 4
             ) -> tuple[np.ndarray, dict[bool, np.ndarray], dict[bool, float], dict[bool, float]]:
    """(frequencies, PSD per carrier in dB re its peak, 99 % occupied bandwidth per carrier in
    Hz, fraction of power outside the A-band per carrier) of passband frames."""
    rng = np.random.default_rng(seed)
    psds, occupied, outside = {}, {}, {}
    f = np.zeros(0)
    for alt in (False, True):
        p = np.concatenate([modem.passband(random_lpdu(rng, 110), alt, fs)
                            for _ in range(frames)])
        f, psd = welch(p, fs, nperseg=16384)
        psds[alt] = 10 * np.log10(psd / psd.max() + 1e-30)
        outside[alt] = float(psd[(f < A_BAND[0]) | (f > A_BAND[1])].sum() / psd.sum())
        order = np.argsort(np.abs(f - carrier_hz(alt)))
        cum = np.cumsum(psd[order]) / psd.sum()
        occupied[alt] = 2 * float(np.abs(f[order][np.searchsorted(cum, 0.99)]
                                         - carrier_hz(alt)))
    return f, psds, occupied, outside


def constellation_and_eye(modem: Modem, esn0_db: float, seed: int = 2
                          ) -> tuple[np.ndarray, np.ndarray, float]:
    """(received symbols, eye traces (rows of 2 symbol periods of the in-phase matched-filter
    output), the frame's SNR estimate) for one noisy 110-byte frame."""
    rng = np.random.default_rng(seed)
    lpdu = random_lpdu(rng, 110)
    samples = noisy(modem, lpdu, esn0_db, rng)
    count = len(modem.frame_bits(lpdu))
    symbols = modem.soft_symbols(samples, count) / 10 ** (LEVEL_DBUV / 20)
    y, start = modem.filtered(samples)
    y = y.real / 10 ** (LEVEL_DBUV / 20)
    first = int(round(start)) + 48 * SPS - SPS // 2   # half a symbol before the header
    rows = (len(y) - first - 2 * SPS) // SPS
    idx = first + np.arange(rows)[:, None] * SPS + np.arange(2 * SPS + 1)[None, :]
    return symbols, y[idx[:min(rows, count - 2)]], modem.demodulate(samples).margin_db


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_ber(points: list[BerPoint], out: str, lpdu_len: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    x = np.array([p.ebn0_db for p in points])
    fine = np.linspace(x.min(), x.max(), 200)
    ax.semilogy(fine, theory_ber(fine), "k-", label="theory, coherent BPSK Q(√(2Eb/N0))")
    for values, style, label in (
            ([p.uncoded_ber for p in points], "o-", "measured BER, uncoded"),
            ([p.coded_ber for p in points], "s-", "measured BER, BCH(160,144) coded"),
            ([p.fer for p in points], "^--", f"measured FER, coded, {lpdu_len}-byte LPDU")):
        v = np.array(values, float)
        ax.semilogy(x[v > 0], v[v > 0], style, label=label)
    ax.set_xlabel("Eb/N0 (dB), Eb per information bit")
    ax.set_ylabel("error rate")
    ax.set_ylim(1e-6, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"meter_emu BPSK PHY, 3600 symbol/s, {points[0].frames} frames per point")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def draw_spectrum(f, psds, symbols, eye, margin_db: float, out: str) -> None:
    plt = _pyplot()
    fig = plt.figure(figsize=(12, 8))
    ax = fig.add_subplot(2, 1, 1)
    for alt, name in ((False, "primary 86 kHz"), (True, "secondary 75 kHz")):
        ax.plot(f / 1e3, psds[alt], label=name)
    for edge in A_BAND:
        ax.axvline(edge / 1e3, color="r", linestyle="--")
    ax.text(A_BAND[0] / 1e3, 2, " 9 kHz", color="r")
    ax.text(A_BAND[1] / 1e3, 2, " 95 kHz (A-band edges)", color="r")
    ax.set_xlim(0, 140)
    ax.set_ylim(-110, 10)
    ax.set_xlabel("frequency (kHz)")
    ax.set_ylabel("PSD (dB re peak)")
    ax.set_title("power spectral density of passband frames (Welch)")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.85))
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(2, 2, 3)
    ax.plot(symbols.real, symbols.imag, ".", markersize=2)
    ax.set_aspect("equal")
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    ax.set_title(f"constellation (estimated SNR {margin_db:.1f} dB)")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(2, 2, 4)
    t = np.arange(eye.shape[1]) / SPS
    ax.plot(t, eye.T, color="C0", alpha=0.08)
    ax.set_xlabel("time (symbols)")
    ax.set_title("eye diagram, matched-filter output (in phase)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
