"""C12.19 / OSGP data types as construct building blocks.

The guides define the types once (Optical Port guide p.5-7, MEP guide p.38-40): integers are
little endian inside tables, BOOL(x)/UINT(a..b) are bit fields counted from the least significant
bit, LTIME_DATE/STIME_DATE are plain byte sequences with a two-digit year. Everything a table layout
needs is here so layouts read like the guides' tables.
"""

from __future__ import annotations

import datetime as dt

from construct import (
    Adapter,
    Bytes,
    BytesInteger,
    Int8ul,
    Int16ub,
    Int16ul,
    Int32sl,
    Int32ul,
    ValidationError,
)

UINT8 = Int8ul
UINT16 = Int16ul
UINT32 = Int32ul
NI_FMAT = Int32sl  # NI_FMAT1 = NI_FMAT2 = INT32 on OSGP meters (BT00.2 = 0x88)


class Bits(Adapter):
    """An unsigned little-endian integer split into named bit fields.

    ``Bits(1, metering_mode=0, test_mode=1)`` is BOOL(0)/BOOL(1) of one byte;
    ``Bits(2, tier=(0, 3))`` is UINT(0..2) of a UINT16. Unnamed bits build as zero.
    """

    def __init__(self, size: int, **fields: int | tuple[int, int]):
        super().__init__(BytesInteger(size, swapped=True))
        self.fields = {
            name: (spec, 1) if isinstance(spec, int) else spec for name, spec in fields.items()
        }

    def _decode(self, obj, context, path):
        return {
            name: (obj >> lsb) & ((1 << width) - 1) for name, (lsb, width) in self.fields.items()
        }

    def _encode(self, obj, context, path):
        value = 0
        for name, (lsb, width) in self.fields.items():
            field = int(obj.get(name, 0))
            if not 0 <= field < (1 << width):
                raise ValidationError(f"bit field {name}={field} does not fit in {width} bit(s)")
            value |= field << lsb
        return value


class BitSet(Adapter):
    """SET(n): n bytes of flags, bit i of byte i//8 is element i. Python side: a frozenset of ints."""

    def __init__(self, size: int):
        super().__init__(Bytes(size))
        self.size = size

    def _decode(self, obj, context, path):
        return frozenset(i for i in range(self.size * 8) if obj[i // 8] >> (i % 8) & 1)

    def _encode(self, obj, context, path):
        out = bytearray(self.size)
        for i in obj:
            if not 0 <= i < self.size * 8:
                raise ValidationError(f"bit {i} outside SET({self.size})")
            out[i // 8] |= 1 << (i % 8)
        return bytes(out)


class Chars(Adapter):
    """ARRAY[n] OF CHAR: ASCII, padded with ``pad`` (space for left-justified names, NUL for
    NUL-terminated strings such as ET03's utility serial number)."""

    def __init__(self, size: int, pad: bytes = b" "):
        super().__init__(Bytes(size))
        self.size, self.pad = size, pad

    def _decode(self, obj, context, path):
        text = obj.split(b"\0", 1)[0] if self.pad == b"\0" else obj.rstrip(self.pad)
        return text.decode("ascii", errors="replace")

    def _encode(self, obj, context, path):
        raw = obj.encode("ascii")
        if len(raw) > self.size:
            raise ValidationError(f"{obj!r} is longer than {self.size} characters")
        return raw.ljust(self.size, self.pad)


class BCD(Adapter):
    """ARRAY[2n] OF BCD packed in n bytes, most significant digit first. Python side: digit string."""

    def __init__(self, size: int):
        super().__init__(Bytes(size))
        self.size = size

    def _decode(self, obj, context, path):
        return obj.hex()

    def _encode(self, obj, context, path):
        digits = str(obj).rjust(self.size * 2, "0")
        if len(digits) != self.size * 2 or not digits.isdigit():
            raise ValidationError(f"{obj!r} is not {self.size * 2} BCD digits")
        return bytes.fromhex(digits)


def _two_digit_year(year: int) -> int:
    if not 2000 <= year <= 2099:
        raise ValidationError(f"year {year} cannot be sent as a two-digit OSGP year (2000-2099)")
    return year - 2000


class _TimeDate(Adapter):
    """Date/time as UINT8 fields YY MM DD hh mm [ss], YY = years since 2000.
    Python side: naive datetime; an all-zero value (never set) is None."""

    def __init__(self, size: int, name: str):
        super().__init__(Bytes(size))
        self.size, self.name = size, name

    def _decode(self, obj, context, path):
        if not any(obj):
            return None
        if obj[0] > 99:
            raise ValidationError(f"invalid {self.name} {obj.hex()}: year byte above 99")
        try:
            return dt.datetime(2000 + obj[0], *obj[1:self.size])
        except ValueError as exc:
            raise ValidationError(f"invalid {self.name} {obj.hex()}: {exc}") from None

    def _encode(self, obj, context, path):
        if obj is None:
            return bytes(self.size)
        fields = [_two_digit_year(obj.year), obj.month, obj.day, obj.hour, obj.minute, obj.second]
        return bytes(fields[: self.size])


def LTimeDate() -> _TimeDate:
    """LTIME_DATE: YY MM DD hh mm ss."""
    return _TimeDate(6, "LTIME_DATE")


def STimeDate() -> _TimeDate:
    """STIME_DATE: YY MM DD hh mm (no seconds)."""
    return _TimeDate(5, "STIME_DATE")


def Date() -> _TimeDate:
    """DATE (C12.19 ANSI date): YY MM DD. Python side: naive datetime at midnight, or None."""
    return _TimeDate(3, "DATE")


class Time(Adapter):
    """TIME: hh mm ss as three UINT8. Python side: datetime.time."""

    def __init__(self):
        super().__init__(Bytes(3))

    def _decode(self, obj, context, path):
        try:
            return dt.time(*obj)
        except ValueError as exc:
            raise ValidationError(f"invalid TIME {obj.hex()}: {exc}") from None

    def _encode(self, obj, context, path):
        return bytes([obj.hour, obj.minute, obj.second])


class PackedVersion(Adapter):
    """Firmware/hardware version x.yy.zz packed in a UINT16 sent MSB first (BT01.12-15, OPG p.19):
    bits 15..12 major, 11..5 minor, 4..0 build; 3.10.21 = 0x3155. Python side: "x.yy.zz"."""

    def __init__(self):
        super().__init__(Int16ub)

    def _decode(self, obj, context, path):
        return f"{obj >> 12}.{(obj >> 5) & 0x7F:02d}.{obj & 0x1F:02d}"

    def _encode(self, obj, context, path):
        major, minor, build = parse_version(obj)
        return major << 12 | minor << 5 | build


def parse_version(text: str) -> tuple[int, int, int]:
    """'3.10.21' -> (3, 10, 21), checked against the packed field's ranges."""
    try:
        major, minor, build = (int(part) for part in str(text).split("."))
    except ValueError:
        raise ValidationError(f"version {text!r} is not of the form x.yy.zz") from None
    if not (0 <= major <= 9 and 0 <= minor <= 99 and 0 <= build <= 31):
        raise ValidationError(f"version {text!r} out of range (x 0..9, yy 0..99, zz 0..31)")
    return major, minor, build




#: The list flags every OSGP log and list table starts with (OPG p.28, MEP p.107-110).
LIST_FLAGS = Bits(1, order=0, overflow=1, list_type=2, inhibit_overflow=3)


def list_header() -> list:
    """The 6-byte header of the small logs (BT26, ET31, ET32, ET38, ET41, ET45, ET75, ET81):
    flags, valid entries, last entry element, last entry sequence number (UINT16), unread
    entries. ET36 reads ``entries`` and ``unread_entries`` by these names."""
    return [
        "flags" / LIST_FLAGS,
        "valid_entries" / Int8ul,
        "last_entry_element" / Int8ul,
        "last_entry_sequence_number" / Int16ul,
        "unread_entries" / Int8ul,
    ]
