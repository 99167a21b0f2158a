"""CONTRACT (the lead wrote the names; the line helper implements and rewrites this docstring).

One simulated power line (ETSI TS 103 908 channel, DESIGN.md D4) joining a data concentrator
and N meters, in virtual time: per-link attenuation, AWGN, impulsive noise, narrow-band
interferers, mains-synchronous noise; overlapping transmissions collide; every station reaches
the line through the predictive p-persistent CSMA MAC of 14908.1 (phy/mac.py); every frame is
modulated and demodulated by phy/modem.py (complex baseband: the fast mode), so what a receiver
gets, its signal strength and its margin come out of the signal, not out of a table.

Two kinds of station:
* a 14908.1 node (``attach(node)``): the line hands it ``node.receive(lpdu_bytes, now,
  LinkInfo(strength_db, margin_db, alt_path))``, queues what ``receive`` and ``poll`` return on
  its MAC, and polls it at ``node.next_deadline()``; the node's stack time is the line's ``now``;
* a port (``attach_port(on_frame)``): a data concentrator or serial NI that relays frames it
  does not process: ``on_frame(raw, now, info)`` for every frame it decodes, ``send(index, raw)``
  to queue one on its MAC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..lon.node import LinkInfo, Node
from .modem import Modem


@dataclass
class Noise:
    """The line's noise and interference (levels in dBuV; designed defaults)."""
    floor_dbuv_hz: float = 0.0                 # AWGN one-sided PSD
    impulses_per_s: float = 0.0                # Poisson impulsive noise
    impulse_dbuv: float = 90.0
    impulse_s: float = 100e-6
    interferers: list[tuple[float, float]] = field(default_factory=list)  # (Hz, dBuV) tones
    mains_hz: float = 50.0
    mains_sync_dbuv: float | None = None       # bursts at twice the mains frequency


@dataclass
class StationStats:
    sent: int = 0
    received: int = 0
    collisions: int = 0
    crc_errors: int = 0
    missed: int = 0            # frames not found at all (no sync, too weak)
    backlog_overflows: int = 0
    backoffs: int = 0


class PowerLine:
    def __init__(self, *, modem: Modem | None = None, noise: Noise | None = None,
                 tx_level_dbuv: float = 122.0, default_attenuation_db: float = 40.0,
                 seed: int | None = None):
        raise NotImplementedError

    now: float
    taps: list[Callable[[bytes, int, float, float], None]]  # (raw, sender, start, end)
    stats: list[StationStats]
    names: list[str]

    def attach(self, node: Node, name: str | None = None) -> int:
        raise NotImplementedError

    def attach_port(self, on_frame: Callable[[bytes, float, LinkInfo], None],
                    name: str | None = None) -> int:
        raise NotImplementedError

    def send(self, index: int, raw: bytes) -> None:
        """Queue ``raw`` (LPDU with CRC) on station ``index``'s MAC; the L2 header's priority
        and alternate-path bits pick the slot and the carrier."""
        raise NotImplementedError

    def set_attenuation(self, a: int, b: int, db: float) -> None:
        """Both ways; links never set use ``default_attenuation_db``."""
        raise NotImplementedError

    def wake(self, index: int) -> None:
        """Poll station ``index`` at the next step (after a ``node.send`` made from outside)."""
        raise NotImplementedError

    def next_event(self) -> float | None:
        raise NotImplementedError

    def advance(self, until: float) -> None:
        """Process every event up to virtual time ``until`` (real-time drivers call this)."""
        raise NotImplementedError

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """As fast as the CPU allows, until ``done()`` or ``timeout`` virtual seconds pass."""
        raise NotImplementedError

    def run(self, duration: float) -> None:
        raise NotImplementedError
