"""The event catalog: each event ID declared once with its name and provenance.

Events are recorded in the history log (BT74, Optical Port guide p.51-52): UTC time, sequence
number, the C12.18 user ID of whoever was logged on (0xFFFF none, 0xFFFE PLC, 0xFFFD MEP device),
the event ID (UINT(0..11)) and a 2-byte argument. IDs and arguments follow the NES/Echelon meter
family (reference/osgp-app-layer.md section 10.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from .provenance import Provenance, documented

USER_NONE = 0xFFFF
USER_PLC = 0xFFFE
USER_MEP = 0xFFFD


@dataclass(frozen=True)
class Event:
    number: int
    name: str
    argument: str
    provenance: Provenance


EVENTS: dict[int, Event] = {}


def declare(number: int, name: str, argument: str, provenance: Provenance) -> Event:
    if number in EVENTS:
        raise ValueError(f"event {number} declared twice")
    EVENTS[number] = Event(number, name, argument, provenance)
    return EVENTS[number]


_ECH = "Echelon ANSI meter v3.1 user's guide pp.32-43 (same NES firmware family); OPG p.13"

TIME_CHANGED = declare(3, "Time Changed", "0 = absolute time written, else the change (s)",
                       documented(_ECH))
PENDING_ACTIVATED = declare(
    28, "Pending Table Activation", "the pending table's ID (4096 + table ID; 4150 = BT54)",
    documented(_ECH + "; argument from the Echelon TOU changeover example"),
)
PENDING_CLEARED = declare(29, "Pending Table Clear", "the pending table's ID (4096 + table ID)",
                          documented(_ECH))
INVALID_PASSWORD = declare(72, "Invalid Password", "0", documented(_ECH))
