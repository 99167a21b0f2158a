"""Firmware download procedures (EP08, EP09, EP10, EP41) through the optical port: the two code
banks, ET17's verification bitmap, the switch's restart and what the meter reports after it."""

from __future__ import annotations

import json
import zlib

import pytest
from conftest import LinkClient, Procedures, MK, PK, RK

from meter_emu.device import firmware
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.security.aes import image_mac

EP08, EP09, EP10, EP41 = (2048 + n for n in (8, 9, 10, 41))
ET04, ET17, ET54 = (2048 + n for n in (4, 17, 54))
COMPLETED, INVALID, CONFLICT, NO_AUTH = 0, 2, 3, 5
PROGRAM_ID = bytes.fromhex("9FFFFF0500000042")
SIZE = firmware.PACKET_SIZE


def packed(version: str) -> int:
    major, minor, build = (int(part) for part in version.split("."))
    return major << 12 | minor << 5 | build


def image(version: str = "3.20.05", body: bytes = bytes(range(256)) * 2,
          program_id: bytes = PROGRAM_ID) -> bytes:
    """An image in the designed format: program ID, packed version (MSB first), length
    (header included), CRC-32 of the body, MAC (zero: RC4 mode does not check it); then the
    body."""
    length = 34 + len(body)
    return (program_id + packed(version).to_bytes(2, "big") + length.to_bytes(4, "little")
            + zlib.crc32(body).to_bytes(4, "little") + bytes(16) + body)


def packet(data: bytes, number: int) -> bytes:
    """EP09's parameters for packet ``number`` of ``data``."""
    return (number * SIZE).to_bytes(4, "little") + data[number * SIZE:(number + 1) * SIZE]


def count(data: bytes) -> int:
    return -(-len(data) // SIZE)


def events(meter, *numbers: int) -> list[tuple[int, int]]:
    return [(e[3], e[4]) for e in meter.state.history.entries if e[3] in numbers]


def download(proc, data: bytes) -> None:
    for n in range(count(data)):
        assert proc(EP09, packet(data, n))[0] == COMPLETED


@pytest.fixture
def proc(client):
    client.logon(MK)
    return Procedures(client)


def test_download_and_switch_reprograms_the_meter(proc, client, meter):
    data = image("3.20.05")  # 546 bytes: 9 packets, the last one 34 bytes
    idt = client.read(ET04)[116]
    assert client.read(1)[14:16] == packed("3.10.21").to_bytes(2, "big")
    assert proc(EP08) == (COMPLETED, bytes([1]) + bytes(11))  # bank 1 is the inactive one
    for n in range(count(data)):
        result, response = proc(EP09, packet(data, n))
        assert result == COMPLETED
        assert response[:4] == n.to_bytes(2, "little") + (n + 1).to_bytes(2, "little")
    et17 = client.read(ET17)
    assert et17[:2] == bytes([0xFF, 0x01]) and not any(et17[2:])  # packets 0..8
    result, response = proc(EP10)
    assert result == COMPLETED
    assert response[:3] == bytes([1]) + packed("3.20.05").to_bytes(2, "little")
    assert client.read(1)[14:16] == packed("3.20.05").to_bytes(2, "big")  # BT01 (OPG p.19)
    et04 = client.read(ET04)
    assert et04[14:22] == PROGRAM_ID and et04[116] == idt + 1  # program ID, IDT version
    assert client.read(3)[5] >> 6 & 1  # BT03 Code Bank Changed
    # restart (power down, power up with cause 5), code bank changed (bank 1), reprogrammed
    assert events(meter, 1, 2, 78, 36) == [(1, 0), (2, 5), (78, 1), (36, packed("3.20.05"))]
    assert not any(client.read(ET17))  # no download in progress


def test_packets_may_arrive_in_any_order_and_et17_shows_the_gaps(proc, client):
    data = image()
    for n in (2, 0, 4, 5, 6, 7, 8):
        assert proc(EP09, packet(data, n))[0] == COMPLETED
    assert client.read(ET17)[:2] == bytes([0b11110101, 0b1])
    assert proc(EP10)[0] == CONFLICT  # packets 1 and 3 missing
    assert client.read(1)[14:16] == packed("3.10.21").to_bytes(2, "big")
    assert proc(EP09, packet(data, 1))[0] == COMPLETED
    assert proc(EP09, packet(data, 3))[0] == COMPLETED
    assert proc(EP09, packet(data, 3))[0] == COMPLETED  # a retry with the same bytes
    assert proc(EP10)[0] == COMPLETED


def test_header_arriving_late_is_checked_against_the_packets(proc):
    data = image(body=bytes(84))  # 118 bytes: packets 0 (64) and 1 (54)
    assert proc(EP09, (2 * SIZE).to_bytes(4, "little") + bytes(SIZE))[0] == COMPLETED
    assert proc(EP09, packet(data, 0))[0] == CONFLICT  # packet 2 lies past the image
    assert proc(EP08)[0] == COMPLETED
    assert proc(EP09, packet(data, 0))[0] == COMPLETED
    assert proc(EP09, (2 * SIZE).to_bytes(4, "little") + bytes(SIZE))[0] == INVALID


def header(version: int, length: int) -> bytes:
    """EP09 parameters for packet 0 holding just a header (CRC and MAC zero)."""
    return (0).to_bytes(4, "little") + PROGRAM_ID + version.to_bytes(2, "big") \
        + length.to_bytes(4, "little") + bytes(4 + 16)


@pytest.mark.parametrize("params", [
    (1).to_bytes(4, "little") + bytes(SIZE),  # not on a packet boundary
    (0).to_bytes(4, "little") + bytes(SIZE + 1),  # longer than a packet
    (SIZE).to_bytes(4, "little"),  # no data
    (0).to_bytes(4, "little") + bytes(33),  # packet 0 shorter than the header
    (640_000).to_bytes(4, "little") + bytes(SIZE),  # past the bank (ET11.36 x 8 packets)
    header(packed("3.20.05"), 640_001),  # an image longer than the bank
    header(packed("3.20.05"), 33),  # shorter than its own header
    header(3 << 12 | 100 << 5, 34),  # version 3.100.00
    (0).to_bytes(3, "little"),  # no offset
])
def test_ep09_invalid_packets(proc, client, params):
    assert proc(EP09, params)[0] == INVALID
    assert not any(client.read(ET17))


def test_ep09_short_packet_must_be_the_images_last(proc):
    data = image()
    assert proc(EP09, packet(data, 0))[0] == COMPLETED
    assert proc(EP09, (SIZE).to_bytes(4, "little") + bytes(10))[0] == INVALID
    assert proc(EP09, packet(data, 8))[0] == COMPLETED  # 34 bytes: the last one


def test_ep09_other_bytes_for_a_received_packet_conflict(proc, client):
    data = image()
    assert proc(EP09, packet(data, 1))[0] == COMPLETED
    assert proc(EP09, (SIZE).to_bytes(4, "little") + bytes(SIZE))[0] == CONFLICT
    assert proc(EP08)[0] == COMPLETED
    assert not any(client.read(ET17))
    assert proc(EP09, (SIZE).to_bytes(4, "little") + bytes(SIZE))[0] == COMPLETED


def test_crc_failure_refuses_the_switch_and_raises_software_crc_error(proc, client, meter):
    data = bytearray(image())
    data[100] ^= 0xFF
    download(proc, bytes(data))
    assert proc(EP10)[0] == CONFLICT
    assert client.read(3)[5] >> 5 & 1  # BT03 Software CRC Error
    assert events(meter, 77) == [(77, 1)]  # its event, with the bank
    assert events(meter, 1, 2, 36, 78) == []
    assert client.read(1)[14:16] == packed("3.10.21").to_bytes(2, "big")


def test_switching_again_goes_back_and_the_old_bank_must_be_erased(proc, client, meter):
    download(proc, image("3.20.05"))
    assert proc(EP10)[0] == COMPLETED
    assert proc(EP09, packet(image("3.30.01"), 0))[0] == CONFLICT  # bank 0 holds 3.10.21
    assert proc(EP10)[:2] == (COMPLETED, bytes([0]) + packed("3.10.21").to_bytes(2, "little")
                              + bytes(9))
    assert client.read(1)[14:16] == packed("3.10.21").to_bytes(2, "big")
    assert client.read(ET04)[14:22] == bytes.fromhex(load_profile().identity.program_id)
    assert events(meter, 78) == [(78, 1), (78, 0)]  # logged again while the bit is set
    assert proc(EP08) == (COMPLETED, bytes([1]) + bytes(11))
    assert proc(EP10)[0] == CONFLICT  # nothing to run in an erased bank
    download(proc, image("3.30.01"))
    assert proc(EP10)[0] == COMPLETED
    assert client.read(1)[14:16] == packed("3.30.01").to_bytes(2, "big")


def test_new_version_changes_the_layouts_the_meter_reports(proc, client, meter):
    assert len(client.read(ET54)) == 82
    download(proc, image("3.80.05"))
    assert proc(EP10)[0] == COMPLETED
    assert len(client.read(ET54)) == 91  # key usage counts from 3.80 (MEP p.137)
    assert client.read(3)[7] & 1  # BT03 Dimension Change: ET42 differs


def test_switched_firmware_survives_a_restart(proc, meter, clock):
    download(proc, image("3.20.05"))
    assert proc(EP10)[0] == COMPLETED
    saved = MeterState.from_doc(json.loads(json.dumps(meter.state.to_doc())))
    again = Meter(load_profile(), saved)
    firmware.restore(again)  # the call Meter.__init__ is asked to make
    assert again.table_bytes(1, clock.now())[14:16] == packed("3.20.05").to_bytes(2, "big")
    assert firmware.active_bank(again) == 1


def test_ep41_needs_a_checked_image_and_records_the_mep_download(proc, meter):
    params = (0x0400).to_bytes(2, "little") + (0x03F8).to_bytes(2, "little")
    assert proc(EP41, params)[0] == CONFLICT
    data = image("1.20.03")
    download(proc, data)
    result, response = proc(EP41, params)
    assert result == COMPLETED
    assert response[:6] == len(data).to_bytes(4, "little") + packed("1.20.03").to_bytes(2,
                                                                                         "little")
    request = firmware.mep_download(meter)
    assert (request["transaction"], request["device_handle"]) == (0x0400, 0x03F8)
    assert proc(EP41, b"\x00")[0] == INVALID
    assert proc(EP08)[0] == COMPLETED
    assert firmware.mep_download(meter) is None


@pytest.mark.parametrize("key", [PK, RK])
@pytest.mark.parametrize("number, params", [
    (EP08, b""), (EP09, packet(image(), 0)), (EP10, b""), (EP41, bytes(4)),
])
def test_only_mk_and_the_head_end_may_download(client, meter, key, number, params):
    client.logon(key)
    assert Procedures(client)(number, params)[0] == NO_AUTH
    assert firmware.received(meter) == [] and meter.state.subsystems.get("firmware") is None


# ---- the image MAC (OSGP-AES-128-PSK) ------------------------------------------------------

AES_KEY = b"AES-key-for-emu!"  # 16 bytes: keys.oma in AES mode


@pytest.fixture
def aes_meter():
    return Meter(load_profile("default", ['security.mode="aes"', 'keys.oma="AES-key-for-emu!"',
                                          'identity.firmware_version="3.80.01"']))


@pytest.fixture
def aes_proc(aes_meter, clock):
    client = LinkClient(optical_protocol(aes_meter, clock))
    client.logon(MK)
    return Procedures(client), client


def test_image_format_is_the_documented_header():
    body = bytes(range(200))
    data = firmware.build_image(PROGRAM_ID, "3.20.05", body)
    assert data == image("3.20.05", body)  # the layout the module docstring gives, by hand
    signed = firmware.build_image(PROGRAM_ID, "3.20.05", body, AES_KEY)
    assert signed[18:34] == image_mac(AES_KEY, data[:18] + body)  # MAC over all but itself
    assert signed[:18] == data[:18] and signed[34:] == body  # CRC-32 still of the body alone
    assert firmware.inspect_image(signed, AES_KEY)[1] == []
    assert firmware.inspect_image(signed, bytes(16))[1] == ["the image MAC does not verify "
                                                            "with this key"]
    broken = bytearray(signed)
    broken[40] ^= 1
    assert firmware.inspect_image(bytes(broken))[1] == ["the CRC-32 of the body does not match "
                                                        "the header"]


def test_aes_mode_switches_only_to_an_image_whose_mac_verifies(aes_proc, aes_meter):
    proc, client = aes_proc
    body = bytes(range(256)) * 3
    forged = firmware.build_image(PROGRAM_ID, "3.81.00", body, b"not-the-OMA-key!")
    download(proc, forged)
    before = (client.read(1), client.read(ET04), len(aes_meter.state.history.entries))
    assert proc(EP10)[0] == NO_AUTH  # result 5: the image is not authorized for this meter
    assert (client.read(1), client.read(ET04)) == before[:2]  # nothing changed
    assert events(aes_meter, 1, 2, 36, 78) == []
    assert proc(EP10)[0] == NO_AUTH  # and it stays refused
    unsigned = firmware.build_image(PROGRAM_ID, "3.81.00", body)
    assert proc(EP08)[0] == COMPLETED
    download(proc, unsigned)
    assert proc(EP10)[0] == NO_AUTH  # a zero MAC is no MAC
    assert proc(EP08)[0] == COMPLETED
    download(proc, firmware.build_image(PROGRAM_ID, "3.81.00", body, AES_KEY))
    assert proc(EP10)[0] == COMPLETED
    assert client.read(1)[14:16] == packed("3.81.00").to_bytes(2, "big")
    assert events(aes_meter, 2, 78, 36) == [(2, 5), (78, 1), (36, packed("3.81.00"))]


def test_rc4_mode_ignores_the_mac(proc, client):
    download(proc, firmware.build_image(PROGRAM_ID, "3.20.05", bytes(300), b"any-key-16-bytes"))
    assert proc(EP10)[0] == COMPLETED


def test_mac_matches_for_ep19_switchover(aes_proc, aes_meter):
    proc, _ = aes_proc
    data = firmware.build_image(PROGRAM_ID, "3.81.00", bytes(500), AES_KEY)
    mac = data[18:34]
    assert not firmware.mac_matches(aes_meter, len(data), mac)  # nothing downloaded yet
    download(proc, data)
    assert firmware.mac_matches(aes_meter, len(data), mac)
    assert not firmware.mac_matches(aes_meter, len(data) - 1, mac)
    assert not firmware.mac_matches(aes_meter, len(data), bytes(16))
