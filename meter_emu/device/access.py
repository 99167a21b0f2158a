"""Keys and access levels.

A request reaches the device model with the key it was authenticated with (or none). The optical
port knows MK, PK and RK (Optical Port guide p.13), the MEP port MAK and MBK (MEP guide p.12), the
power line the OMA key. Catalog entries name which keys may read, write or execute them; ``OPEN``
marks what may be read before any security exchange (BT00, BT01, ET03).
"""

from __future__ import annotations

import enum


class Key(enum.Enum):
    MK = "MK"  # optical Unique Key: everything
    PK = "PK"  # optical Provisioning Key: no keys, no firmware download
    RK = "RK"  # optical Read-only Key: reads except keys, calibration, download information
    MAK = "MAK"  # MEP Advanced Key
    MBK = "MBK"  # MEP Basic Key
    PLC = "PLC"  # the OMA key used on the power line (head-end)

    def __str__(self) -> str:
        return self.value


OPEN = "OPEN"  # readable with no key at all

#: Every key that can read ordinary metering tables.
READERS = frozenset({Key.MK, Key.PK, Key.RK, Key.MAK, Key.MBK, Key.PLC})
#: Keys that may change configuration (the head-end's PLC key and the optical MK/PK, MEP MAK).
CONFIGURERS = frozenset({Key.MK, Key.PK, Key.MAK, Key.PLC})
NOBODY: frozenset = frozenset()


def parse_access(spec) -> frozenset:
    """Turn ``"OPEN"``, ``"MK PK RK"`` or an iterable of Keys into a frozenset of keys (and OPEN)."""
    if isinstance(spec, str):
        spec = spec.split()
    result = set()
    for item in spec:
        if item == OPEN:
            result.add(OPEN)
        else:
            result.add(item if isinstance(item, Key) else Key(item))
    return frozenset(result)


def allows(access: frozenset, key: Key | None) -> bool:
    """Whether ``key`` (None = no security yet) passes ``access``."""
    return OPEN in access or (key is not None and key in access)
