"""CONTRACT (the lead wrote the names; the modem helper implements and rewrites this docstring).

The BPSK modem of the software power line (ETSI TS 103 908 rebuilt; DESIGN.md D4): 3600 symbol/s
on the primary carrier (86 kHz) or the secondary (75 kHz, when the L2 alternate-path bit is set),
band-limited pulses inside 9-95 kHz, preamble (bit sync + byte sync), a rate-0.9 FEC of our
design, the 14908.1 CRC-16 carried inside the LPDU.

Units, shared with phy/line.py:
* complex baseband samples at ``Modem.fs`` around ``CENTER_HZ`` hold both carriers, so signals on
  either carrier can be summed into one array (collisions, interferers);
* sample values are in microvolts: a signal scaled by ``10 ** (level_dbuv / 20)`` has that level
  (its mean power ``|x|**2`` is the level squared), so ``Reception.strength_db`` is in dBuV;
* ``awgn`` makes noise of a given power spectral density in dBuV/Hz; Eb/N0 and SNR follow from
  it (conventions written once, in ``awgn``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMARY_HZ = 86_000.0
SECONDARY_HZ = 75_000.0
SYMBOL_RATE = 3600.0


def carrier_hz(alt_path: bool) -> float:
    return SECONDARY_HZ if alt_path else PRIMARY_HZ


@dataclass(frozen=True, slots=True)
class Reception:
    """One demodulation attempt. ``lpdu`` is the LPDU with its CRC when the CRC checked, else
    None with ``reason`` one of "no-carrier", "no-sync", "fec", "crc", "truncated"."""
    lpdu: bytes | None
    reason: str
    strength_db: float      # received level, dBuV (designed unit)
    margin_db: float        # estimated SNR in the symbol bandwidth, dB
    corrected: int = 0      # bits the FEC corrected
    start: int = 0          # sample index where the frame was found


class Modem:
    """Stateless apart from its tables; one instance serves a whole line."""

    fs: float  # complex baseband sample rate

    def airtime(self, lpdu_len: int) -> float:
        """Seconds on air for an LPDU of ``lpdu_len`` bytes (CRC included): preamble, sync,
        FEC-coded body, tail. The MAC adds the inter-packet gap."""
        raise NotImplementedError

    def modulate(self, lpdu: bytes, alt_path: bool = False) -> np.ndarray:
        """Complex baseband samples (unit mean power) of one frame; ``lpdu`` carries its CRC."""
        raise NotImplementedError

    def demodulate(self, samples: np.ndarray, alt_path: bool = False) -> Reception:
        """Find a frame on the given carrier in ``samples`` (which may hold noise, other
        carriers, a colliding frame) and decode it."""
        raise NotImplementedError

    def passband(self, lpdu: bytes, alt_path: bool = False, fs: float = 480_000.0) -> np.ndarray:
        """Real samples of the frame at ``fs`` (for waveform files and demo rigs)."""
        raise NotImplementedError

    def demodulate_passband(self, samples: np.ndarray, fs: float = 480_000.0,
                            alt_path: bool = False) -> Reception:
        raise NotImplementedError


def awgn(n: int, density_dbuv_hz: float, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Complex white Gaussian noise, ``n`` samples at ``fs``, with the given one-sided power
    spectral density (dBuV/Hz)."""
    raise NotImplementedError
