"""Download a firmware image into a meter's inactive code bank and switch to it, through any
``OpticalClient`` session logged on with a key that may download (MK; the head-end key on PLC).

The image format and the procedures are the meter's (device/firmware.py, procedures/firmware.py):
EP08 erases the inactive bank, EP09 stores one 64-byte packet (offset UINT32, data), ET17 has one
bit per packet received, EP10 switches. A download resumes: the packets ET17 already shows are
not sent again, so a transfer cut by a lost link or a restarted meter continues where it
stopped. Only a bank with nothing received is erased first (it may hold the previous image).
A resumed download sends packet 0 again: the meter refuses it (result 3) unless the bank holds
the same header (program ID, version, length, CRC-32, MAC), so a bank that holds part of another
image is noticed at once ("start over with --erase").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..device.firmware import PACKET_SIZE, DownloadRefused, Image, parse_header
from .optical import ClientError, OpticalClient

BT01 = 1
EP08, EP09, EP10 = (2048 + n for n in (8, 9, 10))
ET17 = 2048 + 17
BT01_FIRMWARE_VERSION = slice(14, 16)  # OPG p.19

#: BT08 result codes (ANSI C12.19; MEP p.51) and what they mean for a download
RESULTS = {
    1: "not completed",
    2: "invalid parameter (a packet the meter cannot take: offset, size, header)",
    3: "conflict with the meter's set-up",
    4: "timing constraint",
    5: "no authorization",
    6: "unrecognized procedure: this meter has no code bank download",
}


class DownloadError(ClientError):
    """The meter refused a step of the download; ``result`` is its BT08 result code."""

    def __init__(self, message: str, result: int | None = None):
        super().__init__(message)
        self.result = result


def image_info(image: bytes) -> Image:
    """The header of an image file, checked against the file's size; DownloadError if not."""
    try:
        header = parse_header(image, 1 << 32)
    except DownloadRefused as refused:
        raise DownloadError(f"not a meter-emu firmware image: {refused.reason}") from None
    if header.length != len(image):
        raise DownloadError(f"the image header says {header.length} bytes, the file has "
                            f"{len(image)}")
    return header


def packet_count(length: int) -> int:
    return -(-length // PACKET_SIZE)


def received(client: OpticalClient, count: int) -> set[int]:
    """The packets (of the first ``count``) ET17 shows as received, by partial reads."""
    bitmap = client.read_range(ET17, 0, -(-count // 8))
    return {n for n in range(count) if bitmap[n // 8] >> (n % 8) & 1}


def packet_params(image: bytes, number: int) -> bytes:
    """EP09's parameters for packet ``number``: its offset (UINT32) and its bytes."""
    return (number * PACKET_SIZE).to_bytes(4, "little") \
        + image[number * PACKET_SIZE:(number + 1) * PACKET_SIZE]


def _call(client: OpticalClient, number: int, params: bytes, what: str) -> bytes:
    result, data = client.procedure(number, params)
    if result != 0:
        raise DownloadError(f"{what}: the meter answered result {result} "
                            f"({RESULTS.get(result, 'unknown')})", result)
    return data


#: the same call for other clients (client/plc.py runs this module over the power line)
call = _call


@dataclass
class DownloadSummary:
    packets: int  # in the image
    already: int  # found in ET17 before sending: a resumed download
    sent: int  # EP09 calls made
    erased: bool


def download(client: OpticalClient, image: bytes, *, order: Iterable[int] | None = None,
             erase: bool = False, progress: Callable[[str], None] | None = None
             ) -> DownloadSummary:
    """Send the packets of ``image`` that ET17 does not show yet (``order``: the packet numbers
    to send and in which order, repeats allowed; default ascending), then check that ET17
    shows them all. ``erase``: start over (EP08) even if a download is under way."""
    say = progress or (lambda text: None)
    count = packet_count(image_info(image).length)
    have = set() if erase else received(client, count)
    already = len(have)
    if have:
        say(f"resuming: ET17 shows {len(have)} of {count} packets already received")
    else:
        bank = _call(client, EP08, b"", "EP08 erase code bank")[0]
        say(f"code bank {bank} erased")
    todo = [n for n in (range(count) if order is None else order) if n not in have]
    if 0 in have:  # the header again: the meter refuses it (result 3) if it is another image's
        todo.insert(0, 0)
    step = max(1, -(-len(todo) // 10))
    for index, number in enumerate(todo, 1):
        if not 0 <= number < count:
            raise ValueError(f"packet {number} is not one of the image's {count}")
        try:
            _call(client, EP09, packet_params(image, number), f"EP09 packet {number}")
        except DownloadError as error:
            if error.result == 3:
                raise DownloadError(f"{error}: the inactive bank holds other data (another "
                                    "image or a previous download); start over with --erase",
                                    3) from None
            raise
        if index % step == 0 or index == len(todo):
            say(f"sent {index}/{len(todo)} packets ({100 * index // len(todo)} %)")
    have = received(client, count)
    missing = sorted(set(range(count)) - have)
    say(f"ET17: {len(have)} of {count} packets received")
    if missing:
        raise DownloadError(f"ET17 misses {len(missing)} packets after the download (first "
                            f"{missing[0]})")
    return DownloadSummary(count, already, len(todo), erased=not already)


def switch(client: OpticalClient) -> tuple[int, str]:
    """EP10: the meter restarts into the downloaded image. Returns (active bank, version as
    BT01 reports it afterwards)."""
    try:
        data = _call(client, EP10, b"", "EP10 switch code bank")
    except DownloadError as error:
        hint = {3: "the image is incomplete or its CRC-32 fails (BT03 Software CRC Error; "
                   "download it again with --erase)",
                5: "in AES security mode: the image MAC does not verify under the meter's "
                   "OMA key (or this key may not switch banks)"}.get(error.result)
        raise DownloadError(f"{error}: {hint}" if hint else str(error), error.result) from None
    return data[0], bt01_version(client)


def bt01_version(client: OpticalClient) -> str:
    packed = int.from_bytes(client.read(BT01)[BT01_FIRMWARE_VERSION], "big")
    return f"{packed >> 12}.{packed >> 5 & 0x7F:02d}.{packed & 0x1F:02d}"
