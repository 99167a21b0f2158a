"""CRC-16/X-25 (ANSI C12.18 link layer): polynomial 0x1021 reflected (0x8408), initial value
0xFFFF, final XOR 0xFFFF; sent low byte first. Check value: crc16(b"123456789") == 0x906E.
Table-driven: it runs on every optical frame."""

from __future__ import annotations


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF
