"""Firmware download: two code banks, as EP08 (Erase Code Bank), EP09 (Download Code Packets) and
EP10 (Switch Code Bank) name them (Echelon user's guide p.46). The meter runs the image in the
active bank; a download goes into the other one, packet by packet, in any order, and ET17
shows which packets arrived (one bit per packet, ET11.36 bytes: OPG p.42). NES publishes
neither the parameters nor the image format, so both are ours (designed):

* a **packet** is ``PACKET_SIZE`` bytes of the image at a multiple of ``PACKET_SIZE``; only the
  image's last packet may be shorter. 64 bytes keep a BT07 request short (3 + 4 + 64 = 71
  bytes) for the slow power line; ET17's 10,000 bits then cap an image at 640,000 bytes;
* the **image** starts with a 34-byte header, then its body:

  ====== ====== ==========================================================================
  offset size   field
  ====== ====== ==========================================================================
  0      8      program ID (reported in ET04.14 once the image runs)
  8      2      firmware version, packed as BT01.14-15 (OPG p.19), MSB first
  10     4      image length, header included (UINT32, LSB first)
  14     4      CRC-32 (ISO-HDLC, as zlib computes it) of the body: the bytes after the header
  18     16     image MAC for OSGP-AES-128-PSK: ``security.aes.image_mac(OMA key, image
                without these 16 bytes)``, i.e. over header bytes 0..17 and the body
  ====== ====== ==========================================================================

  The CRC-32 says the bytes arrived whole (any mode); the MAC says who made the image and
  covers the program ID, version, length and CRC too. With RC4 security (ET04.127 = 0) the MAC
  is not checked and is usually zero; with AES (2) EP10 refuses an image whose MAC does not
  verify under the meter's unicast OMA key (result 5, "no authorization": the image is not
  authorized for this meter). The MAC sits in the header so that an image is one file whose
  length and CRC mean the same in both modes; MEP's EP19 type 9 carries the same two facts,
  Image Length and Image MAC (MEP p.245). ``build_image`` and ``inspect_image`` are the
  tooling's view of this format (``meter-emu firmware build/inspect``).

Switching (EP10) is a restart into the new image: events 1 (power down) and 2 (power up, reset
cause 5 "code bank switchover"), BT03 "Code Bank Changed" with event 78 (argument: the new active
bank), event 36 "Meter Reprogrammed" (the new packed version), ET04's IDT version incremented
once, with the MEP sequence number moved on by 25 (MEP p.54-55, p.65), and the new program ID
there. The meter then reports the new version everywhere it reads the profile's identity (BT01,
ET03's image CRC, every layout that depends on the firmware version): the running image's
identity replaces the profile's, and ``restore`` does the same when a saved meter starts again.
The other bank keeps the previous image, so switching again goes back to it. Only the packets
of an unfinished download are stored (hex, in the meter's state, which a port persists before it
answers: an acknowledged packet survives ``kill -9`` and a download resumes from ET17); a
switched image keeps only its identity.
"""

from __future__ import annotations

import hmac
import logging
import zlib
from dataclasses import dataclass

from construct import Bytes, Int16ub, Int32ul, Struct, ValidationError

from ..datatypes import PackedVersion
from ..events import CODE_BANK_CHANGED, POWER_DOWN, POWER_UP, REPROGRAMMED, USER_NONE
from ..profile import ProfileError
from ..security.aes import MAC_SIZE
from . import conditions

log = logging.getLogger(__name__)

PACKET_SIZE = 64
HEADER = Struct(
    "program_id" / Bytes(8),
    "firmware_version" / Int16ub,
    "length" / Int32ul,
    "crc32" / Int32ul,
    "mac" / Bytes(MAC_SIZE),
)
MAC_OFFSET = 18
HEADER_SIZE = HEADER.sizeof()
#: Event 2's reset cause for a restart into the other code bank (Echelon user's guide, ID 2).
RESET_CODE_BANK_SWITCHOVER = 5


class DownloadRefused(Exception):
    """A packet or a switch the bank cannot take. ``conflict`` tells a packet that disagrees
    with the bank's content (C12.19 result 3) from one that is malformed (result 2); ``crc``
    marks an image whose CRC-32 fails, ``mac`` one whose AES image MAC does not verify."""

    def __init__(self, reason: str, conflict: bool = False, crc: bool = False,
                 mac: bool = False):
        super().__init__(reason)
        self.reason, self.conflict, self.crc, self.mac = reason, conflict, crc, mac


@dataclass(frozen=True)
class Image:
    program_id: bytes
    version: str  # "x.yy.zz"
    length: int
    crc32: int
    mac: bytes = bytes(MAC_SIZE)


def _bitmap_bytes(meter) -> int:
    """ET11.36, the size of ET17. Imported here, late: the table modules import the
    procedures, which import this module."""
    from ..tables.dimensions import product_dimensions

    return product_dimensions(meter).verification_bitmap_size


def packed_version(version: str) -> int:
    """"x.yy.zz" as BT01.14-15 pack it (OPG p.19): major << 12 | minor << 5 | build."""
    return int.from_bytes(PackedVersion().build(version), "big")


def max_image_size(meter) -> int:
    """ET17 has one bit per packet (ET11.36 bytes)."""
    return _bitmap_bytes(meter) * 8 * PACKET_SIZE


def _state(meter) -> dict:
    # a bank: {"image": None or {"version", "program_id"}, "packets": {str(n): hex}}. The
    # active bank's image None means the profile's firmware; the other bank's: erased.
    empty = {"image": None, "packets": {}}
    return meter.subsystem("firmware", active=0, banks=[dict(empty), dict(empty)],
                           mep_download=None)


def _existing(meter) -> dict | None:
    """The firmware state if a download procedure ever ran, without creating it."""
    return _state(meter) if "firmware" in meter.state.subsystems else None


def active_bank(meter) -> int:
    state = _existing(meter)
    return 0 if state is None else state["active"]


def inactive_bank(meter) -> int:
    return 1 - active_bank(meter)


def _packets(meter) -> dict:
    state = _existing(meter)
    return {} if state is None else state["banks"][1 - state["active"]]["packets"]


def received(meter) -> list[int]:
    """The packet numbers the inactive bank holds, in order."""
    return sorted(int(n) for n in _packets(meter))


def verification_bitmap(meter) -> bytes:
    """ET17: bit n (of byte n // 8, LSB first) set once packet n of the download arrived."""
    out = bytearray(_bitmap_bytes(meter))
    for n in received(meter):
        out[n // 8] |= 1 << (n % 8)
    return bytes(out)


def parse_header(raw: bytes, limit: int) -> Image:
    """The image header at the start of packet 0, checked; DownloadRefused if it is invalid."""
    if len(raw) < HEADER_SIZE:
        raise DownloadRefused(f"packet 0 has {len(raw)} bytes; the header needs {HEADER_SIZE}")
    header = HEADER.parse(raw)
    packed = header.firmware_version
    major, minor, build = packed >> 12, packed >> 5 & 0x7F, packed & 0x1F
    if minor > 99:
        raise DownloadRefused(f"image header: firmware version 0x{packed:04X} has minor {minor}")
    version = f"{major}.{minor:02d}.{build:02d}"
    if not HEADER_SIZE <= header.length <= limit:
        raise DownloadRefused(f"image length {header.length} outside {HEADER_SIZE}..{limit}")
    return Image(bytes(header.program_id), version, header.length, header.crc32,
                 bytes(header.mac))


def mac_input(image: bytes) -> bytes:
    """What the image MAC covers: the whole image but the MAC field itself."""
    return image[:MAC_OFFSET] + image[HEADER_SIZE:]


def build_image(program_id: bytes, version: str, body: bytes, mac_key: bytes | None = None
                ) -> bytes:
    """An image in the format above; the MAC stays zero without a key. ValueError (with the
    reason) for a program ID that is not 8 bytes or a version out of range."""
    if len(program_id) != 8:
        raise ValueError(f"a program ID has 8 bytes, not {len(program_id)}")
    try:
        packed = packed_version(version)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    header = dict(program_id=program_id, firmware_version=packed,
                  length=HEADER_SIZE + len(body), crc32=zlib.crc32(body), mac=bytes(MAC_SIZE))
    image = HEADER.build(header) + body
    if mac_key is None:
        return image
    from ..security.aes import image_mac

    return image[:MAC_OFFSET] + image_mac(mac_key, mac_input(image)) + image[HEADER_SIZE:]


def inspect_image(data: bytes, mac_key: bytes | None = None) -> tuple[Image, list[str]]:
    """The header of an image file and what is wrong with the file (empty: nothing): length,
    CRC-32 and, given a key, the MAC. DownloadRefused if there is no valid header at all."""
    if len(data) < HEADER_SIZE:
        raise DownloadRefused(f"{len(data)} bytes; an image has a {HEADER_SIZE}-byte header")
    image = parse_header(data, 1 << 32)
    problems = []
    if len(data) != image.length:
        problems.append(f"the file has {len(data)} bytes, the header says {image.length}")
    elif zlib.crc32(data[HEADER_SIZE:]) != image.crc32:
        problems.append("the CRC-32 of the body does not match the header")
    if mac_key is not None and not _mac_matches(mac_key, data, image):
        problems.append("the image MAC does not verify with this key")
    return image, problems


def _mac_matches(key: bytes, data: bytes, image: Image) -> bool:
    from ..security.aes import image_mac

    return hmac.compare_digest(image_mac(key, mac_input(data)), image.mac)


def _expected_size(image: Image, number: int) -> int:
    return min(PACKET_SIZE, image.length - number * PACKET_SIZE)


def _header_of(packets: dict, limit: int) -> Image | None:
    first = packets.get("0")
    return None if first is None else parse_header(bytes.fromhex(first), limit)


def write_packet(meter, offset: int, data: bytes) -> int:
    """Store one packet in the inactive bank; returns its number. A packet sent again with the
    same bytes is accepted (retries are normal); with other bytes it is refused: erase first."""
    limit = max_image_size(meter)
    if offset % PACKET_SIZE:
        raise DownloadRefused(f"offset {offset} is not a multiple of the {PACKET_SIZE}-byte "
                              "packet size")
    if not 0 < len(data) <= PACKET_SIZE:
        raise DownloadRefused(f"a packet carries 1..{PACKET_SIZE} bytes, not {len(data)}")
    if offset + len(data) > limit:
        raise DownloadRefused(f"bytes up to {offset + len(data)} exceed the {limit}-byte bank")
    number = offset // PACKET_SIZE
    state = _state(meter)
    bank = state["banks"][1 - state["active"]]
    if bank["image"] is not None:
        raise DownloadRefused(f"code bank {1 - state['active']} holds an image: erase it (EP08)",
                              conflict=True)
    packets = bank["packets"]
    previous = packets.get(str(number))
    if previous is not None:
        if bytes.fromhex(previous) != data:
            raise DownloadRefused(f"packet {number} already holds other bytes: erase (EP08)",
                                  conflict=True)
        return number
    image = parse_header(data, limit) if number == 0 else _header_of(packets, limit)
    if image is not None:
        _check_against(image, {**packets, str(number): data.hex()}, number)
    packets[str(number)] = data.hex()
    meter.dirty = True
    return number


def _check_against(image: Image, packets: dict, new: int) -> None:
    """Every packet must lie inside the image the header describes and have its size. A fault
    in the new packet is an invalid parameter; one in a packet already stored (the header came
    after it) is a conflict."""
    count = -(-image.length // PACKET_SIZE)
    for key, value in packets.items():
        number = int(key)
        if number >= count:
            raise DownloadRefused(f"packet {number} lies past the image's {image.length} bytes",
                                  conflict=number != new)
        if len(value) // 2 != _expected_size(image, number):
            raise DownloadRefused(f"packet {number} has {len(value) // 2} bytes; the image "
                                  f"needs {_expected_size(image, number)} there",
                                  conflict=number != new)


def complete_image(meter) -> tuple[Image, bytes]:
    """The downloaded image in the inactive bank, whole and checked; DownloadRefused (as a
    conflict) if packets are missing or its CRC-32 fails."""
    packets = _packets(meter)
    image = _header_of(packets, max_image_size(meter))
    if image is None:
        raise DownloadRefused("no image: packet 0 (the header) has not arrived", conflict=True)
    count = -(-image.length // PACKET_SIZE)
    missing = [n for n in range(count) if str(n) not in packets]
    if missing:
        raise DownloadRefused(f"{len(missing)} of {count} packets missing (first {missing[0]})",
                              conflict=True)
    data = b"".join(bytes.fromhex(packets[str(n)]) for n in range(count))
    if zlib.crc32(data[HEADER_SIZE:]) != image.crc32:
        raise DownloadRefused("the image's CRC-32 does not match its header", conflict=True,
                              crc=True)
    return image, data


def erase(meter) -> int:
    """EP08: empty the inactive bank (and forget a MEP download of its image); returns it."""
    state = _state(meter)
    bank = 1 - state["active"]
    state["banks"][bank] = {"image": None, "packets": {}}
    state["mep_download"] = None
    meter.dirty = True
    return bank


def switch(meter, now: float, user_id: int = USER_NONE) -> tuple[int, str]:
    """EP10: restart into the inactive bank, a checked download or the previous image. Returns
    (new active bank, its version). DownloadRefused if the bank has nothing runnable; a
    download whose CRC-32 fails also raises BT03 "Software CRC Error"."""
    state = _state(meter)
    target = 1 - state["active"]
    identity = state["banks"][target]["image"]
    if identity is None:
        try:
            image, data = complete_image(meter)
        except DownloadRefused as refused:
            if refused.crc:
                conditions.begin(meter, "software_crc_error", now, target, user_id)
            raise
        _check_mac(meter, image, data)
        identity = {"version": image.version, "program_id": image.program_id.hex().upper()}
    running = meter.profile.identity
    try:
        _apply_identity(meter, identity)
    except ProfileError as exc:
        raise DownloadRefused(f"the meter cannot run this image: {exc}", conflict=True) from None
    state["banks"][state["active"]] = {
        "image": {"version": running.firmware_version, "program_id": running.program_id},
        "packets": {},
    }
    state["banks"][target] = {"image": identity, "packets": {}}
    state["active"] = target
    state["mep_download"] = None
    meter.dirty = True
    _restart(meter, target, identity, now, user_id)
    log.warning("meter %s: switched to code bank %d, firmware %s", meter.id, target,
                identity["version"])
    return target, identity["version"]


def _check_mac(meter, image: Image, data: bytes) -> None:
    """With OSGP-AES-128-PSK only an image whose MAC verifies under the unicast OMA key runs."""
    from . import keys

    if keys.security_mode(meter) != keys.AES_PSK:
        return
    key = keys.oma_key(meter, 0)  # None: no AES key provisioned, nothing can verify
    if key is None or not _mac_matches(key, data, image):
        raise DownloadRefused("the image MAC does not verify under the meter's OMA key",
                              mac=True)


def mac_matches(meter, length: int, mac: bytes) -> bool:
    """For EP19 type 9 (MEP download switchover): do Image Length and Image MAC name the
    complete image in the inactive bank, under the meter's unicast OMA key?"""
    from . import keys

    try:
        image, data = complete_image(meter)
    except DownloadRefused:
        return False
    from ..security.aes import image_mac

    key = keys.oma_key(meter, 0)
    return key is not None and length == image.length and hmac.compare_digest(
        image_mac(key, mac_input(data)), mac)


def _apply_identity(meter, identity: dict) -> None:
    meter.profile = meter.profile.with_overrides([
        f'identity.firmware_version="{identity["version"]}"',
        f'identity.program_id="{identity["program_id"]}"',
    ])


def _restart(meter, bank: int, identity: dict, now: float, user_id: int) -> None:
    """What the new firmware finds and records as it starts."""
    meter.log_event(POWER_DOWN.number, 0, now, user_id)
    meter.log_event(POWER_UP.number, RESET_CODE_BANK_SWITCHOVER, now, user_id)
    meter.drop_mismatched_tables(now)  # the start-up check: layouts may follow the version
    from ..tables.catalog import CATALOG, et

    layout = CATALOG[et(4)].layout_for(meter)
    idt_before = layout.parse(meter.table_bytes(et(4), now)).idt_version
    meter.check_interface()  # ET42 changed: IDT version + 1 and "Dimension Change"
    values = layout.parse(meter.table_bytes(et(4), now))
    if values.idt_version == idt_before:  # ET42 is the same: the new firmware alone counts
        values.idt_version = (values.idt_version + 1) & 0xFF
        meter.set_mep_sequence((meter.mep_sequence + 25) & 0xFFFFFFFF)
    values.program_id = bytes.fromhex(identity["program_id"])
    meter.state.tables[et(4)] = layout.build(values)
    if not conditions.begin(meter, CODE_BANK_CHANGED.alarm, now, bank, user_id):
        meter.log_event(CODE_BANK_CHANGED.number, bank, now, user_id)  # bit still set
    meter.log_event(REPROGRAMMED.number, packed_version(identity["version"]), now, user_id)


def restore(meter) -> None:
    """At start: run the image of the active bank, if a switch put one there (the profile
    still names the firmware the meter was made with)."""
    state = _existing(meter)
    if state is None:
        return
    identity = state["banks"][state["active"]]["image"]
    if identity is None:
        return
    try:
        _apply_identity(meter, identity)
    except ProfileError as exc:  # the profile changed so that the image no longer fits it
        log.warning("meter %s: keeps the profile's firmware, not bank %d's: %s", meter.id,
                    state["active"], exc)


# ---- EP41: MEP download ------------------------------------------------------------------
def initialize_mep_download(meter, transaction: int, handle: int, now: float) -> Image:
    """EP41: hand the downloaded image (complete and checked) to the MEP client ``handle``:
    recorded here as the ET15 "MEP download start" request (type 7) it creates."""
    image, _ = complete_image(meter)
    _state(meter)["mep_download"] = dict(transaction=transaction, device_handle=handle,
                                         version=image.version, length=image.length,
                                         utc=meter.utc_seconds(now))
    meter.dirty = True
    return image


def mep_download(meter) -> dict | None:
    """The MEP download EP41 started: {transaction, device_handle, version, length, utc}, the
    ET15 request of type 7 to show (request result 0: not yet completed)."""
    state = _existing(meter)
    return None if state is None else state["mep_download"]
