"""Firmware download procedures: EP08 Erase Code Bank, EP09 Download Code Packets, EP10 Switch
Code Bank (Echelon ANSI meter user's guide p.46) and EP41 MEP Download Initialize (ibid.; the MEP
guide's ET15 request type 7, p.91).

Names and numbers are documented; the parameters are not, so the layouts are ours (designed).
The code banks, the packet size and the image header are described once, in device/firmware.py.
Only the MK and the head-end may download: the PK "cannot be used to download firmware" and the
RK may not even read download information (OPG p.13).
"""

from __future__ import annotations

from construct import GreedyBytes, Struct

from ..datatypes import UINT8, UINT16, UINT32
from ..device import firmware
from ..device.access import Key
from ..provenance import designed
from .catalog import ProcedureFailed, Result, ResultCode, declare, ep

FIRMWARE_KEYS = {Key.MK, Key.PLC}
_ECH = "name and number: Echelon ANSI meter user's guide p.46"
_FORMAT = "the packet size and the image header are described in meter_emu/device/firmware.py"


def _failed(refused: firmware.DownloadRefused) -> ProcedureFailed:
    if refused.mac:
        return ProcedureFailed(ResultCode.NO_AUTHORIZATION, refused.reason)
    code = ResultCode.CONFLICT_WITH_SETUP if refused.conflict else ResultCode.INVALID_PARAMETER
    return ProcedureFailed(code, refused.reason)


# ---------------------------------------------------------------------------------------
# EP08 Erase Code Bank

_BANK = Struct("bank" / UINT8)


def _erase(meter, p, ctx) -> Result:
    """EP08: erase the inactive code bank (the running one cannot be): its packets and any
    image it kept are gone, ET17 reads all zero, a MEP download of it is forgotten. Response:
    the erased bank (0 or 1)."""
    return Result(ResultCode.COMPLETED, _BANK.build(dict(bank=firmware.erase(meter))))


declare(
    ep(8), "Erase Code Bank",
    execute=FIRMWARE_KEYS,
    params=Struct(),
    run=_erase,
    response=_BANK,
    provenance=designed(f"{_ECH}; no parameters: the meter erases the bank it does not run"),
)

# ---------------------------------------------------------------------------------------
# EP09 Download Code Packets

_EP09 = Struct(
    "offset" / UINT32,  # image byte offset, a multiple of the packet size
    "data" / GreedyBytes,  # the packet: the rest of the request
)
_EP09_RESPONSE = Struct("packet" / UINT16, "received" / UINT16)


def _download(meter, p, ctx) -> Result:
    """EP09: store one packet of the new image in the inactive code bank and set its ET17 bit.
    Offsets are multiples of 64; a packet is 64 bytes but the image's last; a packet sent again
    with the same bytes is accepted. Response: the packet number and how many packets the bank
    holds."""
    try:
        number = firmware.write_packet(meter, p.offset, bytes(p.data))
    except firmware.DownloadRefused as refused:
        raise _failed(refused) from None
    count = len(firmware.received(meter))
    return Result(ResultCode.COMPLETED,
                  _EP09_RESPONSE.build(dict(packet=number, received=min(count, 0xFFFF))))


declare(
    ep(9), "Download Code Packets",
    execute=FIRMWARE_KEYS,
    params=_EP09,
    run=_download,
    results={2: "offset not on a packet boundary, a wrong packet size, bytes beyond the bank "
                "(ET11.36 x 8 packets) or the image's length, or an invalid header",
             3: "the bank holds an image or other bytes for this packet (erase it with EP08), "
                "or packets already stored contradict the header"},
    response=_EP09_RESPONSE,
    provenance=designed(f"{_ECH}; no layout is public; ours: image offset (UINT32) and the "
                        f"packet's bytes; {_FORMAT}"),
)

# ---------------------------------------------------------------------------------------
# EP10 Switch Code Bank

_EP10_RESPONSE = Struct("bank" / UINT8, "firmware_version" / UINT16)


def _switch(meter, p, ctx) -> Result:
    """EP10: restart into the inactive code bank, which must hold a complete image whose
    CRC-32 matches its header (or the previous image) and, in AES security mode, whose image
    MAC verifies: events 1, 2 (reset cause 5), 78 (BT03 Code Bank Changed) and 36 (the new
    version); BT01 and ET04 report the new firmware version and program ID, ET04's IDT
    version increments. A CRC failure raises BT03 Software CRC Error. A refused image changes
    nothing else. Response: the new active bank and its packed version (as BT01.14-15)."""
    try:
        bank, version = firmware.switch(meter, ctx.now, ctx.user_id)
    except firmware.DownloadRefused as refused:
        raise _failed(refused) from None
    return Result(ResultCode.COMPLETED, _EP10_RESPONSE.build(dict(
        bank=bank, firmware_version=firmware.packed_version(version))))


declare(
    ep(10), "Switch Code Bank",
    execute=FIRMWARE_KEYS,
    params=Struct(),
    run=_switch,
    results={3: "the inactive bank holds no complete image, or its CRC-32 fails",
             5: "OSGP-AES-128-PSK: the image MAC does not verify under the OMA key"},
    response=_EP10_RESPONSE,
    idempotent=False,  # a second switch goes back to the other bank
    provenance=designed(f"{_ECH}; no parameters: the meter switches to the bank it does not "
                        f"run; the restart's events 2 (cause 5 'code bank switchover') and 78 "
                        f"are the guide's; {_FORMAT}"),
)

# ---------------------------------------------------------------------------------------
# EP41 MEP Download Initialize

_EP41 = Struct(
    "transaction_number" / UINT16,  # as EP19's (MEP p.245)
    "device_handle" / UINT16,  # the MEP client to update
)
_EP41_RESPONSE = Struct("image_length" / UINT32, "firmware_version" / UINT16)


def _mep_download(meter, p, ctx) -> Result:
    """EP41: start handing the image downloaded into the inactive code bank (complete, CRC-32
    checked) to a MEP client, the ET15 request "MEP download start" (type 7) the MEP guide
    describes; recorded in the firmware state. Response: the image's length and packed
    version."""
    try:
        image = firmware.initialize_mep_download(meter, p.transaction_number, p.device_handle,
                                                 ctx.now)
    except firmware.DownloadRefused as refused:
        raise _failed(refused) from None
    return Result(ResultCode.COMPLETED, _EP41_RESPONSE.build(dict(
        image_length=image.length, firmware_version=firmware.packed_version(image.version))))


declare(
    ep(41), "MEP Download Initialize",
    execute=FIRMWARE_KEYS,
    params=_EP41,
    run=_mep_download,
    results={3: "the inactive code bank holds no complete, checked image to send"},
    response=_EP41_RESPONSE,
    provenance=designed(
        f"{_ECH}; ET15 request type 7 'MEP download start (created internally as a result of "
        "EP41)' (MEP p.91). No layout is public; ours: EP19's transaction number and device "
        "handle (MEP p.245); the image sent is the one EP08/EP09 put in the inactive bank"),
)
