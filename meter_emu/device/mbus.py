"""The meter's wired M-Bus: simulated M-Bus devices on the bus, and the meter's M-Bus master
that commissions them into ET14 and serves the ET15 on-demand requests addressed to them.

Why: the MEP guide's meter (worked example 6, MEP p.48) has an M-Bus device in ET14 slot 1
(handle 1, 2400 Bd, a 47-byte billing read) and completed billing reads of it in ET15. Those
bytes come from a device answering the meter, not from a table image.

The master (documented behaviour, MEP p.25-28, p.83-94, p.244-246): auto-discovery at start
finds each device answering at a primary address and installs it in the slot of that address
(slot 1 for address 1, "typically", MEP p.26; else the first free M-Bus slot) through
``mep_devices.register`` (next M-Bus handle from 1, ET13's baud rate, event 96 "commissioned",
BT03 "MEP Installed or Removed"), then raises BT03 "M-Bus Auto-Discovery Complete". EP19
requests to an M-Bus device wait in ET15 until the bus exchange is over, oldest first; a billing
read goes to ET16 (timestamp, Response Info, telegram length L, telegram) and sets ET14 "Billing
Read Length" (7 + 1 + L); no answer ends the request as "no response" and latches ET14 "Failed
Comms On Read".

``designed`` (no public source gives these):
* the simulated device: a water meter (medium 7) whose volume grows at a constant flow from
  the profile, answering REQ_UD2 with an EN 13757-3 variable data structure (CI 0x72): the
  12-byte header (serial BCD, manufacturer, version, medium, access number, status, signature
  0) and five records -- volume (``04 13``, litres), device date-time (``04 6D``, type F),
  volume at the due date (``44 13``, storage 1), the due date (``42 6C``, type G, the 1st of the
  month) and error flags (``01 FD 17``). 26 record bytes + a zero terminator: L = 39, so the
  ET14 billing read length is 47, the guide's figure;
* the time a request takes on the bus: REQ_UD2 (5 bytes) and a 47-byte answer at 11 bits per
  character, plus the nominal turn-around (330 bit times + 50 ms, MEP p.62): 0.43 s at 2400 Bd;
* status read (type 3) = REQ_UD2, keeping only the status byte (ET14 "MEP Device Alarms");
  application reset, write and time sync = SND_UD (CI 0x50, the written CI and data, CI 0x51
  with a type F time) acknowledged with E5; multicast = SND_UD to address 0xFF (no answer).
"""

from __future__ import annotations

import datetime as dt
import logging

from ..events import USER_NONE
from ..tables import mep_devices
from . import conditions

log = logging.getLogger(__name__)

SUBSYSTEM = "mbus"
ACK = b"\xE5"
SND_NKE, SND_UD, REQ_UD2, RSP_UD = 0x40, 0x53, 0x5B, 0x08
CI_APP_RESET, CI_DATA, CI_TIME_SYNC, CI_VARIABLE = 0x50, 0x51, 0x51, 0x72
BROADCAST_NO_ANSWER = 0xFF
ADDRESSES = range(1, 251)  # primary addresses (0 unconfigured, 251-255 special)
WATER = 7
_BITS_PER_CHAR = 11  # start, 8 data, even parity, stop
_TURNAROUND_BITS, _TURNAROUND_S = 330, 0.050
_EXCHANGE_BYTES = 5 + 47  # REQ_UD2 and the device's RSP_UD


class MbusError(ValueError):
    """A frame that is not a valid M-Bus frame (bad start, length, checksum or stop)."""


# ---- frames (EN 13757-2 link layer) ---------------------------------------------------------

def short_frame(control: int, address: int) -> bytes:
    return bytes([0x10, control, address, (control + address) & 0xFF, 0x16])


def long_frame(control: int, address: int, ci: int, data: bytes) -> bytes:
    body = bytes([control, address, ci]) + data
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


def parse_frame(raw: bytes) -> tuple[int, int, int | None, bytes]:
    """(control, address, CI or None for a short frame, data); MbusError if malformed."""
    if len(raw) == 5 and raw[0] == 0x10 and raw[4] == 0x16:
        if (raw[1] + raw[2]) & 0xFF != raw[3]:
            raise MbusError("short frame checksum")
        return raw[1], raw[2], None, b""
    if len(raw) < 9 or raw[0] != 0x68 or raw[3] != 0x68 or raw[1] != raw[2]:
        raise MbusError(f"not a long frame: {raw[:4].hex()}")
    if len(raw) != raw[1] + 6 or raw[-1] != 0x16:
        raise MbusError(f"long frame length {raw[1]} for {len(raw)} bytes")
    body = raw[4:-2]
    if sum(body) & 0xFF != raw[-2]:
        raise MbusError("long frame checksum")
    return body[0], body[1], body[2], bytes(body[3:])


# ---- data types (EN 13757-3) ----------------------------------------------------------------

def manufacturer_code(letters: str) -> int:
    a, b, c = (ord(ch) - 64 for ch in letters.upper())
    return (a * 32 + b) * 32 + c


def type_f(moment: dt.datetime) -> bytes:
    """CP32 date and time: minute, hour, day + year bits 0-2, month + year bits 3-6."""
    year = moment.year % 100
    return bytes([moment.minute & 0x3F, moment.hour & 0x1F,
                  (moment.day & 0x1F) | (year & 0x07) << 5,
                  (moment.month & 0x0F) | (year >> 3) << 4])


def type_g(day: dt.date) -> bytes:
    year = day.year % 100
    return bytes([(day.day & 0x1F) | (year & 0x07) << 5, (day.month & 0x0F) | (year >> 3) << 4])


def bcd(digits: str) -> bytes:
    """An 8-digit serial as 4 packed BCD bytes, least significant first."""
    return bytes.fromhex(digits.zfill(8))[::-1]


# ---- the simulated device -------------------------------------------------------------------

class Device:
    """One simulated M-Bus device, backed by its JSON document in the meter's state (``doc``:
    address, serial, manufacturer, version, medium, volume_l at meter-UTC ``since``,
    flow_l_per_h, access, status)."""

    def __init__(self, doc: dict):
        self.doc = doc

    @property
    def address(self) -> int:
        return self.doc["address"]

    def volume_l(self, utc: float) -> int:
        """Litres at meter-UTC ``utc``: the constant flow since ``since``, never below 0."""
        d = self.doc
        return max(0, int(d["volume_l"] + d["flow_l_per_h"] * (utc - d["since"]) / 3600))

    def answer(self, frame: bytes, utc: float, local: dt.datetime) -> bytes | None:
        """What the device sends back for ``frame`` (None: silence, as for another address or
        a frame it cannot read)."""
        try:
            control, address, ci, data = parse_frame(frame)
        except MbusError:
            return None
        if address not in (self.address, 0xFE):
            return None
        if ci is None and control == SND_NKE:
            return ACK
        if ci is None and control & 0xDF == REQ_UD2:  # FCB (bit 5) either way
            return self._rsp_ud(utc, local)
        if ci is not None and control & 0xDF == SND_UD:
            return ACK
        return None

    def _rsp_ud(self, utc: float, local: dt.datetime) -> bytes:
        d = self.doc
        due = local.date().replace(day=1)
        due_utc = utc - (local - dt.datetime.combine(due, dt.time())).total_seconds()
        header = (bcd(d["serial"]) + manufacturer_code(d["manufacturer"]).to_bytes(2, "little")
                  + bytes([d["version"], d["medium"], d["access"], d["status"], 0, 0]))
        records = (b"\x04\x13" + self.volume_l(utc).to_bytes(4, "little")
                   + b"\x04\x6D" + type_f(local)
                   + b"\x44\x13" + self.volume_l(due_utc).to_bytes(4, "little")
                   + b"\x42\x6C" + type_g(due)
                   + b"\x01\xFD\x17" + bytes([d["status"] & 0x1C]))
        d["access"] = (d["access"] + 1) & 0xFF  # "increased by one after each data response"
        return long_frame(RSP_UD, self.address, CI_VARIABLE, header + records)


# ---- the bus --------------------------------------------------------------------------------

def _bus(meter) -> dict | None:
    return meter.state.subsystems.get(SUBSYSTEM)


def connect(meter, documents: list[dict], now: float) -> None:
    """Put devices on the meter's bus (the profile's ``[[mbus.devices]]``); volumes count
    from ``now``."""
    bus = meter.subsystem(SUBSYSTEM, devices=[])
    for doc in documents:
        bus["devices"].append(dict(doc, since=meter.utc_seconds(now), access=0))
    meter.dirty = True


def transfer(meter, frame: bytes, now: float) -> bytes | None:
    """One exchange on the bus: every device hears ``frame``; the one addressed answers."""
    bus = _bus(meter)
    if bus is None:
        return None
    utc, local = meter.utc_seconds(now), meter.local(now)
    answers = [a for a in (Device(doc).answer(frame, utc, local) for doc in bus["devices"])
               if a is not None]
    if len(answers) > 1:  # two devices at one address: a collision, nothing readable
        return None
    meter.dirty = True
    return answers[0] if answers else None


def exchange_seconds(baud: int) -> float:
    return (_EXCHANGE_BYTES * _BITS_PER_CHAR + _TURNAROUND_BITS) / baud + _TURNAROUND_S


# ---- the master -----------------------------------------------------------------------------

def discover(meter, now: float, user_id: int = USER_NONE) -> list[int]:
    """Auto-discovery: SND_NKE to every primary address; each device that acknowledges and
    is not installed yet goes to the slot of its address, or the first free M-Bus slot.
    Returns the handles given."""
    if _bus(meter) is None:
        return []
    slots = mep_devices.mep_slot(meter, 1)  # the M-Bus slots come first
    installed = {d["mbus_primary_address"] for d in mep_devices.devices(meter)[:slots] if d}
    handles = []
    for address in ADDRESSES:
        if address in installed or transfer(meter, short_frame(SND_NKE, address), now) != ACK:
            continue
        registry = mep_devices.devices(meter)
        free = [s for s in range(slots) if registry[s] is None]
        if not free:
            log.warning("meter %s: M-Bus device at address %d found, every slot is taken",
                        meter.id, address)
            continue
        slot = address - 1 if address - 1 in free else free[0]
        handles.append(mep_devices.register(meter, slot, now, user_id=user_id))
        mep_devices.devices(meter)[slot]["mbus_primary_address"] = address
        meter.dirty = True
    if handles:
        conditions.begin(meter, "mbus_auto_discovery_complete", now, 0, user_id)
    return handles


def _mbus_request(meter, entry: dict) -> bool:
    targets = entry["targets"]
    return bool(targets) and all(mep_devices.slot_channel(meter, s) is None for s in targets)


def _due(meter, entry: dict) -> float:
    """Virtual instant the bus exchange of ``entry`` ends (the slowest addressed device)."""
    registry = mep_devices.devices(meter)
    bauds = [mep_devices.BAUD_RATES[registry[s]["baud_rate"]] for s in entry["targets"]
             if registry[s] is not None] or [mep_devices.BAUD_RATES[0]]
    return entry["posted"] + exchange_seconds(min(bauds))


def next_due(meter) -> float | None:
    """Meter-UTC instant the oldest waiting M-Bus request is answered (the meter's timer)."""
    if _bus(meter) is None:
        return None
    queue = mep_devices._queue(meter)
    entry = queue["entries"][queue["read"]]
    if entry is None or entry["result"] != mep_devices.PENDING or not _mbus_request(meter, entry):
        return None
    return _due(meter, entry) + meter.state.clock_offset


def run_due(meter, now: float) -> None:
    """Serve the waiting M-Bus requests whose exchange is over by ``now``, oldest first."""
    if _bus(meter) is None:
        return
    while True:
        oldest = mep_devices.oldest_request(meter, now)
        if oldest is None or not _mbus_request(meter, oldest[1]):
            return
        index, entry = oldest
        at = _due(meter, entry)
        if at > now:
            return
        mep_devices.complete_request(meter, index, _serve(meter, index, entry, at), at)


def _serve(meter, index: int, entry: dict, now: float) -> int:
    """Carry out one request on the bus; returns ET15's result."""
    kind = entry["request_type"]
    registry = mep_devices.devices(meter)
    queue = mep_devices._queue(meter)
    if kind == mep_devices.MULTICAST:
        message = bytes.fromhex(queue["multicast"])
        if len(message) >= 2:
            transfer(meter, long_frame(message[0], BROADCAST_NO_ANSWER, message[1],
                                       message[2:]), now)
        return mep_devices.SUCCESS
    result = mep_devices.SUCCESS
    for slot in entry["targets"]:
        device = registry[slot]
        address = device["mbus_primary_address"]
        if kind in (mep_devices.BILLING_READ, mep_devices.STATUS_READ):
            answer = transfer(meter, short_frame(REQ_UD2, address), now)
            telegram = _telegram(answer, address)
            if telegram is None:
                mep_devices.latch_alarms(meter, slot, now, "failed_comms_on_read")
                result = mep_devices.NO_RESPONSE
            elif kind == mep_devices.BILLING_READ:
                data = bytes([len(telegram) + 1]) + telegram + b"\0"  # L counts the terminator
                mep_devices.record_read(meter, slot, data, now, to_et16=True,
                                        header=MBUS_READ_HEADER)
            else:
                mep_devices.record_status(meter, slot, telegram[9], now)
                device["read_answers"] += 1
            continue
        if kind == mep_devices.TIME_SYNC:
            frame = long_frame(SND_UD, address, CI_TIME_SYNC,
                               b"\x04\x6D" + type_f(meter.local(now)))
        elif kind == mep_devices.APP_RESET:
            frame = long_frame(SND_UD, address, CI_APP_RESET, b"")
        else:  # write user data: the message is CI and data, sent as-is
            message = bytes.fromhex(queue["messages"][index]) or bytes([CI_DATA])
            frame = long_frame(SND_UD, address, message[0], message[1:])
        if transfer(meter, frame, now) != ACK:
            result = mep_devices.NO_RESPONSE
    return result


#: ET16's M-Bus record header: timestamp (6) and Response Info (1) before the telegrams
MBUS_READ_HEADER = 7


def _telegram(answer: bytes | None, address: int) -> bytes | None:
    """The header and records of a valid RSP_UD from ``address`` (variable structure)."""
    if answer is None:
        return None
    try:
        control, source, ci, data = parse_frame(answer)
    except MbusError as exc:
        log.info("M-Bus answer from %d dropped: %s", address, exc)
        return None
    if control & 0x0F != RSP_UD or source != address or ci != CI_VARIABLE or len(data) < 12:
        log.info("M-Bus answer from %d dropped: C %02X A %d CI %s", address, control, source, ci)
        return None
    return data
