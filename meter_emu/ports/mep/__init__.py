"""The MEP port (OSGP Alliance MEP Client Developer's Guide, chapter 2, RC4 security):
length-framed messages (link.py) carrying secured table services (session.py)."""

from .link import MepLink
from .session import MepSession


def mep_protocol(meter, clock) -> MepLink:
    """A fresh link + session for one client connection."""
    return MepLink(MepSession(meter, clock, port=f"{meter.id} mep"), name=f"{meter.id} mep")


__all__ = ["MepLink", "MepSession", "mep_protocol"]
