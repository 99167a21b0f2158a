"""The optical port: ANSI C12.18 link (link.py) carrying PSEM services (psem.py)."""

from .link import C1218Link
from .psem import PsemSession


def optical_protocol(meter, clock) -> C1218Link:
    """A fresh link + session for one client connection (one per TCP connection; one per pty)."""
    session = PsemSession(meter, clock, profile_optical=meter.profile.optical,
                          port=f"{meter.id} optical")
    return C1218Link(session, name=f"{meter.id} optical")


__all__ = ["C1218Link", "PsemSession", "optical_protocol"]
