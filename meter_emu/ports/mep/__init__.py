"""The MEP port (OSGP Alliance MEP Client Developer's Guide, chapter 2, RC4 security):
length-framed messages (link.py) carrying secured table services (session.py)."""

from .link import INTER_CHAR_TIMEOUT_STREAM, MepLink, inter_char_timeout
from .session import MepSession


def mep_protocol(meter, clock, *, channel: int = 1, paced: bool = False,
                 inter_char_timeout: float = INTER_CHAR_TIMEOUT_STREAM) -> MepLink:
    """A fresh link + session for one connection of MEP client ``channel`` (1, or 2 on
    firmware 4.0+). ``meter-emu run`` paces its answers as a meter does (link.py)."""
    name = f"{meter.id} {'mep2' if channel == 2 else 'mep'}"
    return MepLink(MepSession(meter, clock, port=name), name=name, paced=paced,
                   inter_char_timeout=inter_char_timeout)


__all__ = ["MepLink", "MepSession", "inter_char_timeout", "mep_protocol"]
