"""The table catalog: every OSGP table is declared once, here-registered, and everything else
(BT00's bitmaps, ``meter-emu tables``, the services, the docs) derives from the declaration.

A declaration says: wire number (BT n = n, ET n = 2048 + n), name, which keys read and write it,
its construct layout (a fixed ``Construct`` or a function of the meter, for tables dimensioned by
BT00/BT21/BT71/...), provenance, and behaviour:

* ``render(meter, now) -> dict`` for tables produced from the meter's live state (lazily, on read);
  large tables (load profile data, logs) may return the built ``bytes`` instead, skipping
  construct on the hot path (the layout still decodes them);
* ``defaults(meter) -> dict`` for *stored* configuration tables, whose bytes the meter keeps once
  written (until then they are built from the profile, so an idle meter costs nothing);
* ``apply(meter, values, ctx)`` for what a write changes; it may raise ``ServiceError``;
* ``pending=True`` for tables a client may also write as a pending table (ID + 4096, OPG p.8-12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from construct import Construct

from ..device.access import NOBODY, parse_access
from ..device.errors import ResponseCode, ServiceError
from ..provenance import Provenance

EXTENDED_BASE = 2048
PENDING_BASE = 4096


def bt(n: int) -> int:
    """Wire ID of basic table n."""
    return n


def et(n: int) -> int:
    """Wire ID of extended table n (Optical Port guide p.8: 2048 + n)."""
    return EXTENDED_BASE + n


def label(table_id: int) -> str:
    """'BT01', 'ET03', 'pending BT54' for a wire table ID."""
    prefix = "pending " if table_id >= PENDING_BASE else ""
    number = table_id % PENDING_BASE
    if number >= EXTENDED_BASE:
        return f"{prefix}ET{number - EXTENDED_BASE:02d}"
    return f"{prefix}BT{number:02d}"


@dataclass(frozen=True)
class WriteContext:
    """Who wrote what, and when (virtual seconds since the epoch)."""

    key: Any
    now: float
    user_id: int = 0
    port: str = ""
    written: bytes = b""  # the bytes the client sent (after cutting to the table)
    offset: int = 0


@dataclass(frozen=True)
class Table:
    number: int
    name: str
    read: frozenset
    write: frozenset
    layout: Construct | Callable[[Any], Construct]
    provenance: Provenance
    render: Callable[[Any, float], dict] | None = None
    defaults: Callable[[Any], dict] | None = None
    apply: Callable[[Any, Any, WriteContext], None] | None = None
    pending: bool = False

    def __post_init__(self):
        if (self.render is None) == (self.defaults is None):
            raise ValueError(f"{self.label}: give either render (live) or defaults (stored)")

    @property
    def label(self) -> str:
        return label(self.number)

    @property
    def extended(self) -> bool:
        return self.number >= EXTENDED_BASE

    @property
    def stored(self) -> bool:
        """Configuration tables keep their bytes; the others are rendered from state."""
        return self.defaults is not None

    @property
    def writable(self) -> bool:
        return bool(self.write)

    def layout_for(self, meter) -> Construct:
        return self.layout if isinstance(self.layout, Construct) else self.layout(meter)


CATALOG: dict[int, Table] = {}


def declare(
    number: int,
    name: str,
    *,
    read,
    write=NOBODY,
    layout,
    provenance: Provenance,
    render=None,
    defaults=None,
    apply=None,
    pending: bool = False,
) -> Table:
    """Register one table. Declaring the same number twice is a programming error."""
    if number in CATALOG:
        raise ValueError(f"{label(number)} declared twice")
    table = Table(
        number=number,
        name=name,
        read=parse_access(read),
        write=parse_access(write),
        layout=layout,
        provenance=provenance,
        render=render,
        defaults=defaults,
        apply=apply,
        pending=pending,
    )
    if pending and not table.writable:
        raise ValueError(f"{table.label}: only a writable table can be pending")
    CATALOG[number] = table
    return table


def refuse(*parts) -> NoReturn:
    """Refuse a write with ERR (0x01); nothing changes. ``parts`` are a table ID (printed as its
    label) or text: ``refuse(et(50), "flag bits 4..7 are reserved")``."""
    text = ": ".join(label(p) if isinstance(p, int) else str(p) for p in parts)
    raise ServiceError(ResponseCode.ERR, text)


def zeros(layout: Construct):
    """The values an all-zero image decodes to (counts 0, times None): a record never written."""
    return layout.parse(bytes(layout.sizeof()))
