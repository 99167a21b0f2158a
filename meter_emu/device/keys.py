"""The meter's security state: which mode secures its messages (ET04.127), its OMA keys (profile
or EP20) and how often they were used (ET54.82 / ET54.86 against ET04.123). (Contract: filled in
by the security work of issue 7.)"""

from __future__ import annotations

RC4, AES_PSK = 0, 2  # ET04.127 Security Mode (MEP p.66)


def security_mode(meter) -> int:
    """ET04.127: RC4 (0) or OSGP-AES-128-PSK (2)."""
    raise NotImplementedError


def oma_key(meter, slot: int = 0) -> bytes:
    """The OMA key in use: EP20's key for ``slot`` (0 unicast, 1 broadcast) or the profile's."""
    raise NotImplementedError


def count_use(meter, now: float, *, broadcast: bool = False) -> None:
    """One authenticated message under the unicast (or broadcast) key: ET54.82 (.86) + 1, with
    the ET04.123 limit and its event at 80 %."""
    raise NotImplementedError


def usage(meter) -> tuple[int, int]:
    """(unicast, broadcast) key usage counts."""
    raise NotImplementedError
