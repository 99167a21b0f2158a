"""Human-readable table layouts and values, for ``meter-emu tables show`` and docs/tables.md.

A layout is described as rows (offset, size, name, type) in the guides' vocabulary (UINT16,
BOOL(3), UINT(0..2), ARRAY[n] OF ..., LTIME_DATE), so a row can be checked against a guide's
table by eye. Arrays of records print their first element's fields once, with ``[i]`` in the name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from construct import (Array, Bytes, Construct, FormatField, GreedyBytes, Padded, Renamed,
                       Struct)

from ..datatypes import BCD, BitSet, Bits, Chars, PackedVersion, Time, _TimeDate

_FORMATS = {"<B": "UINT8", "<H": "UINT16", "<L": "UINT32", "<Q": "UINT64", "<b": "INT8",
            "<h": "INT16", "<l": "INT32", "<q": "INT64", ">H": "UINT16 (MSB first)",
            ">L": "UINT32 (MSB first)"}


@dataclass(frozen=True)
class Row:
    offset: int
    size: int
    name: str
    type: str


def _type_name(con: Construct) -> str:
    if isinstance(con, Renamed):
        return _type_name(con.subcon)
    if isinstance(con, FormatField):
        return _FORMATS.get(con.fmtstr, con.fmtstr)
    if isinstance(con, Bits):
        parts = [f"{name} {'BOOL(%d)' % lsb if width == 1 else 'UINT(%d..%d)' % (lsb, lsb + width - 1)}"
                 for name, (lsb, width) in con.fields.items()]
        return f"bit fields of {con.sizeof() * 8} bits: " + ", ".join(parts)
    if isinstance(con, BitSet):
        return f"SET({con.size})"
    if isinstance(con, Chars):
        return f"ARRAY[{con.size}] OF CHAR"
    if isinstance(con, BCD):
        return f"BCD({con.size})"
    if isinstance(con, _TimeDate):
        return con.name
    if isinstance(con, Time):
        return "TIME"
    if isinstance(con, PackedVersion):
        return "version x.yy.zz packed in a UINT16 (MSB first)"
    if isinstance(con, (Bytes, Padded)):
        return f"ARRAY[{con.sizeof()}] OF UINT8"
    if isinstance(con, Array):
        return f"ARRAY[{con.count}] OF {_type_name(con.subcon)}"
    if isinstance(con, Struct):
        return "record"
    return type(con).__name__


def field_type(con: Construct) -> str:
    """One field's type in the guides' vocabulary; 'the remaining bytes' for a greedy tail."""
    inner = _unwrap(con)
    if isinstance(inner, GreedyBytes.__class__):
        return "the remaining bytes"
    return _type_name(con)


def _unwrap(con: Construct) -> Construct:
    return _unwrap(con.subcon) if isinstance(con, Renamed) else con


def describe(layout: Construct, prefix: str = "", offset: int = 0) -> list[Row]:
    """Rows for every field, recursing into records and arrays of records."""
    rows: list[Row] = []
    inner = _unwrap(layout)
    if not isinstance(inner, Struct):
        return [Row(offset, layout.sizeof(), prefix or "value", _type_name(layout))]
    for sub in inner.subcons:
        name = f"{prefix}{sub.name}"
        body = _unwrap(sub)
        size = sub.sizeof()
        if isinstance(body, Array) and isinstance(_unwrap(body.subcon), Struct) and body.count:
            rows.append(Row(offset, size, name, f"ARRAY[{body.count}] OF record "
                                                 f"({body.subcon.sizeof()} bytes each)"))
            rows += describe(body.subcon, f"{name}[i].", offset)
        elif isinstance(body, Struct):
            rows.append(Row(offset, size, name, "record"))
            rows += describe(body, f"{name}.", offset)
        else:
            rows.append(Row(offset, size, name, _type_name(body)))
        offset += size
    return rows


def layout_text(layout: Construct) -> str:
    lines = [f"{'offset':>7}  {'size':>5}  {'field':<40} type"]
    for row in describe(layout):
        lines.append(f"{row.offset:>7}  {row.size:>5}  {row.name:<40} {row.type}")
    return "\n".join(lines)


def plain(value):
    """Parsed construct values as JSON-friendly data (bytes as hex, sets as sorted lists)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (dt.datetime, dt.time)):
        return value.isoformat()
    return value
