"""The four table services as every port encodes them (sans-I/O): full read 0x30, partial read
0x3F, full write 0x40, partial write 0x4F. All APDU fields are MSB first.

Two dialects differ only in framing details:

* optical (C12.18, reference/osgp-app-layer.md section 3.3): a full read is ``30 TT TT``; read
  responses and write requests end with the data checksum ``(-sum(data)) & 0xFF``;
* MEP and OSGP PLC (MEP guide table 2.6-2.7): a full read carries a length, ``30 TT TT LL LL``;
  there is no checksum anywhere.

Writes whose length field disagrees with the data, bad checksums and truncated requests answer
ERR (0x01); the device model answers the rest (IAR, ISC, layout validation).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device.errors import ResponseCode, ServiceError
from ..tables.catalog import WriteContext

TABLE_SERVICES = frozenset({0x30, 0x3F, 0x40, 0x4F})


@dataclass(frozen=True)
class Dialect:
    checksum: bool  # C12.18 data checksum after table data
    full_read_length: bool  # full read carries a 2-byte maximum length

    @property
    def full_read_size(self) -> int:
        return 5 if self.full_read_length else 3


OPTICAL = Dialect(checksum=True, full_read_length=False)
SECURED = Dialect(checksum=False, full_read_length=True)  # MEP and OSGP over PLC


def checksum(data: bytes) -> int:
    """C12.18 data checksum: two's complement of the 8-bit sum."""
    return (-sum(data)) & 0xFF


def _expect(apdu: bytes, size: int, name: str) -> None:
    if len(apdu) != size:
        raise ServiceError(ResponseCode.ERR, f"{name}: {len(apdu)} bytes, expected {size}")


def handle_table_service(dialect: Dialect, meter, apdu: bytes, key, now: float, *,
                         user_id: int = 0, port: str = "") -> bytes:
    """Execute one table-service APDU for ``key``; return the response APDU or raise
    ServiceError with the code the meter answers."""
    code = apdu[0]
    table_id = int.from_bytes(apdu[1:3], "big")
    if code == 0x30:
        _expect(apdu, dialect.full_read_size, "full read")
        data = meter.read_table(table_id, key, now)
        if dialect.full_read_length:
            limit = int.from_bytes(apdu[3:5], "big")
            if len(data) > limit:
                raise ServiceError(ResponseCode.ONP, f"table of {len(data)} bytes exceeds the "
                                                     f"read length {limit}; use partial reads")
        return _read_response(dialect, data)
    if code == 0x3F:
        _expect(apdu, 8, "partial read")
        offset = int.from_bytes(apdu[3:6], "big")
        count = int.from_bytes(apdu[6:8], "big")
        return _read_response(dialect, meter.read_table(table_id, key, now, offset, count))
    header = 5 if code == 0x40 else 8
    if len(apdu) < header:
        raise ServiceError(ResponseCode.ERR, "write shorter than its header")
    offset = int.from_bytes(apdu[3:6], "big") if code == 0x4F else 0
    count = int.from_bytes(apdu[header - 2:header], "big")
    trailer = 1 if dialect.checksum else 0
    if len(apdu) != header + count + trailer:
        raise ServiceError(ResponseCode.ERR,
                           f"write of {count} bytes carries {len(apdu) - header - trailer}")
    data = apdu[header:header + count]
    if dialect.checksum and checksum(data) != apdu[-1]:
        raise ServiceError(ResponseCode.ERR, "write data checksum does not match")
    meter.write_table(table_id, data, WriteContext(key, now, user_id, port), offset)
    return bytes([ResponseCode.OK])


def _read_response(dialect: Dialect, data: bytes) -> bytes:
    if len(data) > 0xFFFF:  # the count field cannot say it: read such a table in parts
        raise ServiceError(ResponseCode.RNO, f"{len(data)} bytes do not fit one read response")
    tail = bytes([checksum(data)]) if dialect.checksum else b""
    return bytes([ResponseCode.OK]) + len(data).to_bytes(2, "big") + data + tail
