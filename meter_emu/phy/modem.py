"""The BPSK modem of the software power line (ETSI TS 103 908 rebuilt; DESIGN.md D4).

BPSK at 3600 symbol/s on the primary carrier (86 kHz) or the secondary (75 kHz, when the L2
alternate-path bit is set); root-raised-cosine pulses (roll-off 0.5, 8 symbols long) keep each
carrier within +-2.7 kHz, far inside the A-band (9-95 kHz). Bit 0 is +1, bit 1 is -1.

Frame on air (symbols; the parts marked *designed* are ours, the real ones are not public):
  bit sync   16  alternating 0101..., as 14908.1 preambles
  byte sync  32  word 0xB90C0D86 (*designed*: the 48-symbol preamble with the lowest peak
                 aperiodic autocorrelation sidelobe, 10 of 48, in a seeded search)
  header     24  the LPDU length (1 byte, CRC included) in the (24, 8) shortened BCH code
  body           the LPDU (CRC-16 of 14908.1 included, checked by the receiver) in the
                 rate-0.9 BCH(160, 144) code, interleaved over the frame (phy/fec.py, *designed*)
plus the pulse tails (4 symbols each side). ``airtime`` is the exact length of ``modulate``.

Receiver (*designed*): mix the carrier to 0 Hz, matched filter, correlate with the preamble and
normalise by the in-band energy (rho = 1 for a clean frame; "no-carrier" below ``DETECT_RHO``),
take the strongest qualifying peak, refine timing by a parabola through the peak (linear
interpolation of the 8x oversampled filter output), carrier phase from the preamble, then
header, de-interleave, FEC, CRC. Strength and margin come from all the frame's symbols: phase
refined by squaring (BPSK), noise from the quadrature component (ISI and the signal stay in
phase), signal = in-phase power minus its noise share. Reasons: "ok"; "no-carrier" (no
preamble on this carrier); "no-sync" (preamble, but the header does not decode); "truncated"
(the array ends inside the frame); "fec" (a block has more errors than the code corrects);
"crc" (decoded, CRC-16 wrong). Not modelled: carrier frequency offset (the simulated carriers
are exact; the phase is estimated once per frame).

Units, shared with phy/line.py:
* complex baseband samples at ``Modem.fs`` (28.8 kHz, 8 per symbol) around ``CENTER_HZ``
  (80.5 kHz) hold both carriers, so signals on either carrier can be summed into one array;
* sample values are in microvolts: a signal scaled by ``10 ** (level_dbuv / 20)`` has that level
  (its mean power ``|x|**2`` is the level squared), so ``Reception.strength_db`` is in dBuV;
* ``awgn`` makes noise of a given power spectral density in dBuV/Hz (conventions written once,
  in ``awgn``); ``margin_db`` is Es/N0 (= SNR in the symbol bandwidth, = Eb/N0 uncoded).
* passband samples are real, ``sqrt(2)·Re{x·e^(j2pi·CENTER_HZ·t)}`` (same power as ``x``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import fft as sfft
from scipy.signal import resample_poly, upfirdn

from ..lon.frame import crc16_lon
from . import fec

log = logging.getLogger(__name__)

PRIMARY_HZ = 86_000.0
SECONDARY_HZ = 75_000.0
SYMBOL_RATE = 3600.0
CENTER_HZ = (PRIMARY_HZ + SECONDARY_HZ) / 2
SPS = 8                      # samples per symbol at the baseband rate
ROLLOFF = 0.5
SPAN = 8                     # pulse length, symbols
SYNC_WORD = 0xB90C0D86
DETECT_RHO = 0.3             # normalised preamble correlation needed to call it a frame
MAX_LPDU = 255               # the header's length byte
_IMAGE_FILTER = ("kaiser", 10.0)   # resampling to/from passband: images below -90 dB
MAX_UV = 1e9                 # samples beyond a kilovolt are not a power line's


def carrier_hz(alt_path: bool) -> float:
    return SECONDARY_HZ if alt_path else PRIMARY_HZ


@dataclass(frozen=True, slots=True)
class Reception:
    """One demodulation attempt. ``lpdu`` is the LPDU with its CRC when the CRC checked (reason
    "ok"), else None with ``reason`` one of "no-carrier", "no-sync", "fec", "crc", "truncated".
    Without a frame (no-carrier) the estimates are -inf."""
    lpdu: bytes | None
    reason: str
    strength_db: float      # received level, dBuV (designed unit)
    margin_db: float        # estimated SNR in the symbol bandwidth, dB
    corrected: int = 0      # bits the FEC corrected
    start: int = 0          # sample index where the frame was found


def _rrc(rolloff: float, span: int, sps: int) -> np.ndarray:
    t = np.arange(-span * sps // 2, span * sps // 2 + 1) / sps
    h = np.empty_like(t)
    for i, ti in enumerate(t):
        if abs(ti) < 1e-12:
            h[i] = 1 - rolloff + 4 * rolloff / math.pi
        elif abs(abs(4 * rolloff * ti) - 1) < 1e-9:
            h[i] = rolloff / math.sqrt(2) * ((1 + 2 / math.pi) * math.sin(math.pi / (4 * rolloff))
                                           + (1 - 2 / math.pi) * math.cos(math.pi / (4 * rolloff)))
        else:
            h[i] = ((math.sin(math.pi * ti * (1 - rolloff))
                     + 4 * rolloff * ti * math.cos(math.pi * ti * (1 + rolloff)))
                    / (math.pi * ti * (1 - (4 * rolloff * ti) ** 2)))
    return h * math.sqrt(sps / np.sum(h * h))   # unit mean power for random symbols


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


_PREAMBLE_BITS = np.concatenate([np.tile([0, 1], 8),
                                 (SYNC_WORD >> np.arange(31, -1, -1)) & 1]).astype(np.uint8)
PREAMBLE = 1.0 - 2.0 * _PREAMBLE_BITS
HEADER_BITS = fec.coded_length(8)   # 24
_MIN_FRAME_SYMBOLS = len(PREAMBLE) + HEADER_BITS + fec.coded_length(64)


class Modem:
    """Stateless apart from its tables; one instance serves a whole line."""

    fs: float = SYMBOL_RATE * SPS  # complex baseband sample rate

    def __init__(self) -> None:
        self.taps = _rrc(ROLLOFF, SPAN, SPS)
        self._mf = self.taps / SPS           # matched filter: a clean symbol comes out as +-1
        kernel = np.zeros((len(PREAMBLE) - 1) * SPS + 1)
        kernel[::SPS] = PREAMBLE
        # matched filter then preamble correlator, as one filter (correlation = reversed taps)
        self._mf_corr = np.convolve(self._mf, kernel[::-1])
        self._spectra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lo: dict[tuple[bool, int], np.ndarray] = {}

    # -- transmit ----------------------------------------------------------------------

    def n_symbols(self, lpdu_len: int) -> int:
        """Preamble, header and coded body (no pulse tails)."""
        return len(PREAMBLE) + HEADER_BITS + fec.coded_length(8 * lpdu_len)

    def airtime(self, lpdu_len: int) -> float:
        """Seconds on air for an LPDU of ``lpdu_len`` bytes (CRC included): preamble, sync,
        header, FEC-coded body, pulse tails. The MAC adds the inter-packet gap."""
        return (self.n_symbols(lpdu_len) + SPAN) / SYMBOL_RATE

    def frame_bits(self, lpdu: bytes) -> np.ndarray:
        """The channel bits after the preamble: coded header, then the interleaved coded body."""
        if not 1 <= len(lpdu) <= MAX_LPDU:
            raise ValueError(f"LPDU of {len(lpdu)} bytes: the PHY carries 1..{MAX_LPDU}")
        return np.concatenate([fec.encode_bits(_bits(bytes([len(lpdu)]))),
                               fec.encode_bits(_bits(lpdu))])

    def modulate(self, lpdu: bytes, alt_path: bool = False) -> np.ndarray:
        """Complex baseband samples (unit mean power) of one frame; ``lpdu`` carries its CRC."""
        symbols = np.concatenate([PREAMBLE, 1.0 - 2.0 * self.frame_bits(lpdu)])
        n = (len(symbols) + SPAN) * SPS
        wave = np.zeros(n, dtype=np.complex128)
        shaped = upfirdn(self.taps, symbols, up=SPS)
        wave[:len(shaped)] = shaped
        return wave * self._oscillator(alt_path, n, +1)

    def passband(self, lpdu: bytes, alt_path: bool = False, fs: float = 480_000.0) -> np.ndarray:
        """Real samples of the frame at ``fs`` (for waveform files and demo rigs)."""
        up, down = self._ratio(fs)
        x = resample_poly(self.modulate(lpdu, alt_path), up, down, window=_IMAGE_FILTER)
        t = np.arange(len(x)) / fs
        return math.sqrt(2) * np.real(x * np.exp(2j * math.pi * CENTER_HZ * t))

    # -- receive -----------------------------------------------------------------------

    def demodulate_passband(self, samples: np.ndarray, fs: float = 480_000.0,
                            alt_path: bool = False) -> Reception:
        try:
            x = np.asarray(samples, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            log.warning("demodulate_passband: samples of type %s dropped", type(samples))
            return Reception(None, "no-carrier", -math.inf, -math.inf)
        if not (np.abs(x) < MAX_UV).all():
            return self.demodulate(x[:1] * np.nan, alt_path)   # dropped, with the log line
        up, down = self._ratio(fs)
        t = np.arange(len(x)) / fs
        mixed = math.sqrt(2) * x * np.exp(-2j * math.pi * CENTER_HZ * t)
        return self.demodulate(resample_poly(mixed, down, up, window=_IMAGE_FILTER), alt_path)

    def demodulate(self, samples: np.ndarray, alt_path: bool = False) -> Reception:
        """Find a frame on the given carrier in ``samples`` (which may hold noise, other
        carriers, a colliding frame) and decode it."""
        found = self._find(samples, alt_path)
        if isinstance(found, Reception):
            return found
        y, start = found
        head = self._symbols(y, start, len(PREAMBLE), HEADER_BITS)
        if head is None:
            return self._report(y, start, len(PREAMBLE) + HEADER_BITS, "truncated")
        length_bits, _ = fec.decode_bits((head.real < 0).astype(np.uint8), 8)
        if length_bits is None or int(np.packbits(length_bits)[0]) < 1:
            # estimates over the shortest frame 14908.1 sends (8 bytes), as far as it goes
            return self._report(y, start, _MIN_FRAME_SYMBOLS, "no-sync")
        n_body = 8 * int(np.packbits(length_bits)[0])
        total = len(PREAMBLE) + HEADER_BITS + fec.coded_length(n_body)
        z = self._symbols(y, start, 0, total)
        if z is None:
            return self._report(y, start, len(PREAMBLE) + HEADER_BITS, "truncated")
        body = (z[len(PREAMBLE) + HEADER_BITS:].real < 0).astype(np.uint8)
        data, corrected = fec.decode_bits(body, n_body)
        if data is None:
            return self._report(y, start, total, "fec", z)
        lpdu = np.packbits(data).tobytes()
        if len(lpdu) < 3 or crc16_lon(lpdu[:-2]) != int.from_bytes(lpdu[-2:], "big"):
            return self._report(y, start, total, "crc", z, corrected=corrected)
        return self._report(y, start, total, "ok", z, lpdu=lpdu, corrected=corrected)

    def filtered(self, samples: np.ndarray, alt_path: bool = False
                 ) -> tuple[np.ndarray, float] | None:
        """The matched-filter output (carrier at 0 Hz, derotated so that symbols lie on the
        real axis) and the position of the first preamble symbol in it; None: no frame. For
        eye diagrams and constellations."""
        found = self._find(samples, alt_path)
        if isinstance(found, Reception):
            return None
        y, start = found
        h = np.dot(self._sample(y, start + np.arange(len(PREAMBLE)) * SPS), PREAMBLE)
        return y * (np.conj(h) / max(abs(h), 1e-30)), start

    def soft_symbols(self, samples: np.ndarray, count: int, alt_path: bool = False
                     ) -> np.ndarray | None:
        """The ``count`` symbols after the preamble (header, body) as complex values, before
        any decision or decoding: the uncoded path. None: no frame, or cut off."""
        found = self._find(samples, alt_path)
        if isinstance(found, Reception):
            return None
        return self._symbols(found[0], found[1], len(PREAMBLE), count)

    def channel_bits(self, samples: np.ndarray, count: int, alt_path: bool = False
                     ) -> np.ndarray | None:
        """Hard decisions on ``soft_symbols``, for BER measurements."""
        z = self.soft_symbols(samples, count, alt_path)
        return None if z is None else (z.real < 0).astype(np.uint8)

    # -- internals ---------------------------------------------------------------------

    def _find(self, samples, alt_path: bool):
        """(matched-filter output with the carrier at 0 Hz and phase-corrected later, index of
        the first preamble symbol) or a Reception saying why there is no frame."""
        try:
            x = np.asarray(samples, dtype=np.complex128).reshape(-1)
        except (TypeError, ValueError):
            log.warning("demodulate: samples of type %s dropped", type(samples))
            return Reception(None, "no-carrier", -math.inf, -math.inf)
        if len(x) == 0:
            return Reception(None, "no-carrier", -math.inf, -math.inf)
        if not (np.abs(x) < MAX_UV).all():   # NaN, inf or beyond a kilovolt: not a line
            log.warning("demodulate: %d samples with non-physical values dropped", len(x))
            return Reception(None, "no-carrier", -math.inf, -math.inf)
        if len(x) < (len(PREAMBLE) + SPAN) * SPS:
            return Reception(None, "truncated", -math.inf, -math.inf)
        y, corr = self._filter(x * self._oscillator(alt_path, len(x), -1))
        energy = _sliding_energy(np.abs(y) ** 2, len(corr))
        energy = np.maximum(energy, 1e-9 * float(energy.max()) + 1e-30)
        mag = np.abs(corr) ** 2
        qualifies = mag >= DETECT_RHO * len(PREAMBLE) * energy
        if not qualifies.any():
            return Reception(None, "no-carrier", -math.inf, -math.inf)
        k = int(np.argmax(np.where(qualifies, mag, -1.0)))
        frac = 0.0
        if 0 < k < len(mag) - 1:
            a, b, c = math.sqrt(mag[k - 1]), math.sqrt(mag[k]), math.sqrt(mag[k + 1])
            denom = a - 2 * b + c
            if denom < 0:
                frac = max(-0.5, min(0.5, 0.5 * (a - c) / denom))
        return y, k + frac

    def _filter(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matched-filter output aligned with ``x``, preamble correlation where entry k
        assumes the first preamble symbol at k), from one FFT of ``x``."""
        half, span = SPAN * SPS // 2, (len(PREAMBLE) - 1) * SPS
        nfft = sfft.next_fast_len(len(x) + len(self._mf_corr) - 1)
        spectra = self._spectra.get(nfft)
        if spectra is None:
            spectra = (sfft.fft(self._mf, nfft), sfft.fft(self._mf_corr, nfft))
            if len(self._spectra) > 64:
                self._spectra.clear()
            self._spectra[nfft] = spectra
        spectrum = sfft.fft(x, nfft)
        y = sfft.ifft(spectrum * spectra[0])[half:half + len(x)]
        corr = sfft.ifft(spectrum * spectra[1])[half + span:len(x) + half]
        return y, corr

    def _symbols(self, y: np.ndarray, start: float, first: int, count: int
                 ) -> np.ndarray | None:
        """Matched-filter output at symbols first..first+count-1, derotated by the preamble's
        channel estimate (so a clean frame gives +-1 times the amplitude); None if cut off."""
        pre = self._sample(y, start + np.arange(len(PREAMBLE)) * SPS)
        h = np.dot(pre, PREAMBLE) / len(PREAMBLE)
        pos = start + (first + np.arange(count)) * SPS
        if len(pos) and pos[-1] > len(y) - 2:
            return None
        return self._sample(y, pos) * (np.conj(h) / max(abs(h), 1e-30))

    @staticmethod
    def _sample(y: np.ndarray, pos: np.ndarray) -> np.ndarray:
        i = np.floor(pos).astype(np.int64)
        f = pos - i
        return y[i] * (1 - f) + y[np.minimum(i + 1, len(y) - 1)] * f

    def _report(self, y, start: float, n_sym: int, reason: str, z=None, *, lpdu=None,
                corrected: int = 0) -> Reception:
        if z is None:
            available = int((len(y) - 2 - start) // SPS) + 1
            z = self._symbols(y, start, 0, max(len(PREAMBLE), min(n_sym, available)))
        strength, margin = _estimate(z)
        return Reception(lpdu, reason, strength, margin, corrected,
                         int(round(start)) - SPAN * SPS // 2)

    def _oscillator(self, alt_path: bool, n: int, sign: int) -> np.ndarray:
        key = (alt_path, sign)
        lo = self._lo.get(key)
        if lo is None or len(lo) < n:
            size = max(n, 1 << 16)
            w = 2 * math.pi * (carrier_hz(alt_path) - CENTER_HZ) / self.fs
            lo = np.exp(1j * sign * w * np.arange(size))
            self._lo[key] = lo
        return lo[:n]

    def _ratio(self, fs: float) -> tuple[int, int]:
        r = Fraction(fs / self.fs).limit_denominator(1000)
        if r <= 0:
            raise ValueError(f"sample rate {fs} Hz")
        return r.numerator, r.denominator


def _sliding_energy(power: np.ndarray, count: int) -> np.ndarray:
    """entry k = sum of power[k + i*SPS] over the preamble's symbols i, for k < count."""
    rows = -(-len(power) // SPS) + 1
    padded = np.zeros(rows * SPS)
    padded[:len(power)] = power
    cs = np.zeros((rows + 1, SPS))
    np.cumsum(padded.reshape(rows, SPS), axis=0, out=cs[1:])
    return (cs[len(PREAMBLE):] - cs[:-len(PREAMBLE)]).reshape(-1)[:count]


def _estimate(z: np.ndarray) -> tuple[float, float]:
    """(strength dBuV, SNR dB) from derotated symbols: phase refined by squaring, noise from
    the quadrature part (twice its power: the noise is circular), signal from the rest."""
    if len(z) == 0:
        return -math.inf, -math.inf
    phase = 0.5 * np.angle(np.sum(z * z))
    z = z * np.exp(-1j * phase)
    q = float(np.mean(z.imag ** 2))
    signal = max(float(np.mean(z.real ** 2)) - q, 1e-30)
    noise = max(2 * q, 1e-30)
    return 10 * math.log10(signal), 10 * math.log10(signal / noise)


def awgn(n: int, density_dbuv_hz: float, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Complex white Gaussian noise, ``n`` samples at ``fs``, with the given one-sided power
    spectral density (dBuV/Hz).

    Convention: the complex envelope of a real passband signal of power P has mean |x|^2 = P,
    so real noise of one-sided density N0 becomes complex noise of variance N0·fs (N0 per Hz
    over the whole +-fs/2). After the matched filter the noise is N0·SYMBOL_RATE, hence
    Es/N0 = level^2 / (N0·SYMBOL_RATE): with level L dBuV and Eb/N0 E dB (uncoded, Eb = Es),
    ``density_dbuv_hz = L - 10·log10(3600) - E``.
    """
    sigma = math.sqrt(10 ** (density_dbuv_hz / 10) * fs / 2)
    return rng.standard_normal(2 * n).view(np.complex128) * sigma
