"""CONTRACT (the integration helper implements and rewrites this docstring).

The simulated BPSK line (phy/line.py) driven in real time for ``meter-emu run --phy bpsk``: the
meters' stations are nodes on a PowerLine; each gateway (CN/IP endpoint, serial NI) gets its own
data-concentrator port on the line. It offers gateways the same calls as phy/ideal.py's
IdealLine, so they do not know which line they are on.
"""

from __future__ import annotations

from typing import Callable


class RealtimeLine:
    def __init__(self, stations, persist: Callable[[], None], *, topology: str | None = None,
                 dump: str | None = None, seed: int | None = None):
        raise NotImplementedError

    stations: list

    def attach(self, gateway) -> None:
        """``gateway.deliver(raw, now, info)`` for each frame its concentrator decodes."""
        raise NotImplementedError

    def detach(self, gateway) -> None:
        raise NotImplementedError

    def inject(self, raw: bytes, source=None) -> bool:
        """Queue ``raw`` (LPDU with CRC) on ``source``'s concentrator MAC; False if it does
        not decode."""
        raise NotImplementedError

    def kick(self, station=None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
