"""MEP/M-Bus device tables: ET13-ET16, ET34, ET45, ET57, ET58, ET71, ET74.

The MEP server keeps one slot per downstream device: the first four for M-Bus devices, then one
MEP client (two on firmware 4.0+). Every array here is sized by ET11 (``product_dimensions``), so
the tables follow the firmware version exactly as ET11 does. Configuration (ET13, ET34, ET57,
ET71) is stored with the guide's defaults. Status, queue, data and log (ET14, ET15, ET16, ET45)
are rendered from the MEP server's state kept at the end of this module (device registry,
on-demand queue, latest reads, recurring read log), which the MEP procedures (EP17, EP18, EP19,
EP39) and the MEP engine change through its functions; with no device they read empty. A MEP
client that sets ET50 "MEP Device Registered" is discovered and installed
(``request_discovery``). ET13's alert flags are the server's too. M-Bus devices are found,
installed and read by device/mbus.py. ET58 and ET74 read empty (no control status reads, no
ET74 entries).

ET57 (firmware 3.30+), ET71 (3.40+) and ET74 (3.60+) are declared for every firmware version,
since the catalog has no per-version table list (a real older meter lacks them).

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from construct import Array, Bytes, Struct

from ..datatypes import (
    LIST_FLAGS, NI_FMAT, UINT8, UINT16, UINT32, Bits, BitSet, Chars, LTimeDate, list_header,
)
from ..device import conditions
from ..device.access import CONFIGURERS, READERS, Key
from ..events import MEP_STATUS_CHANGED, USER_NONE
from ..provenance import documented
from .catalog import CATALOG, declare, et, refuse, zeros
from .dimensions import product_dimensions


def _mbus_slots(meter) -> int:
    """M-Bus device slots come first in every device array; the MEP clients follow."""
    d = product_dimensions(meter)
    return d.devices - d.mep_channels


def _current(meter, number: int, ctx):
    """The table as it is before this write (meter-controlled fields are kept from it)."""
    table_id = et(number)
    return CATALOG[table_id].layout_for(meter).parse(meter.table_bytes(table_id, ctx.now))


# ---------------------------------------------------------------------------------------
# ET13 MEP/M-Bus Device Configuration

#: ET13 "Baud Rate" codes (MEP p.81-82); codes 13..255 are reserved. Code 0 is the MEP default.
BAUD_RATES = (9600, 300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200)
MBUS_DEFAULT_BAUD_CODE = 4  # 2400 baud
MEP_DEFAULT_BAUD_CODE = 0  # 9600 baud

#: "Day" of the scheduled billing read: 0..28 day of month, 32..38 Sunday..Saturday (weekly),
#: 39 disables scheduled reads; 29..31 must not be used (MEP p.80-81).
_BILLING_DAYS = frozenset(range(29)) | frozenset(range(32, 40))
_NEVER = 4  # "Scheduled Billing Read Frequency": 0 hourly, 1 daily, 2 weekly, 3 monthly, 4 never
_KEY_PROTECTED = 8  # the first 8 security key bytes are write-only and read back as zeros

_DEVICE_COMMON = (
    "scheduled_billing_read_time" / Struct("day" / UINT8, "hour" / UINT8, "minute" / UINT8),
    "scheduled_billing_read_frequency" / UINT8,
    "scheduled_status_read_frequency" / UINT16,
    "baud_rate" / UINT8,
    "device_alarm_bitmask" / UINT8,
)

_MBUS_DEVICE_CONFIG = Struct(
    *_DEVICE_COMMON,
    "customer_id" / Chars(20, pad=b"\0"),
    "app_reset_parameter" / UINT8,
    "security_key_length" / UINT8,
    "security_key" / Bytes(32),
    "ta" / UINT16,
    "to" / UINT16,
)


def _et13_layout(meter):
    d = product_dimensions(meter)
    mep_client_config = Struct(
        *_DEVICE_COMMON,
        "alert_flags" / Bits(1, scheduled_read_request=0, on_demand_request=1, reserved=2,
                             mbus_change=3, delta_data_alert=4),
        "non_urgent_downlink_data" / Bytes(d.config_entry_size - 9),
    )
    return Struct(
        "mbus_devices" / Array(_mbus_slots(meter), _MBUS_DEVICE_CONFIG),
        "mep_clients" / Array(d.mep_channels, mep_client_config),
    )


def _schedule(baud_code: int) -> dict:
    return dict(scheduled_billing_read_time=dict(day=0, hour=0, minute=0),
                scheduled_billing_read_frequency=0, scheduled_status_read_frequency=0,
                baud_rate=baud_code, device_alarm_bitmask=0)


def _et13_defaults(meter):
    """No device configured: zeros, with each slot at its documented default baud rate."""
    d = product_dimensions(meter)
    mbus = dict(_schedule(MBUS_DEFAULT_BAUD_CODE), customer_id="", app_reset_parameter=0,
                security_key_length=0, security_key=bytes(32), ta=0, to=0)
    mep = dict(_schedule(MEP_DEFAULT_BAUD_CODE), alert_flags={},
               non_urgent_downlink_data=bytes(d.config_entry_size - 9))
    return dict(mbus_devices=[mbus] * _mbus_slots(meter), mep_clients=[mep] * d.mep_channels)


def _check_schedule(slot: str, entry) -> None:
    when = entry.scheduled_billing_read_time
    if when.day not in _BILLING_DAYS:
        refuse(f"ET13 {slot}: billing read day {when.day} is not 0..28, 32..38 or 39")
    if when.hour > 23 or when.minute > 59:
        refuse(f"ET13 {slot}: billing read time {when.hour}:{when.minute} is not a time of day")
    if entry.scheduled_billing_read_frequency > _NEVER:
        refuse(f"ET13 {slot}: billing read frequency must be 0..{_NEVER}")
    if entry.baud_rate >= len(BAUD_RATES):
        refuse(f"ET13 {slot}: baud rate code {entry.baud_rate} is reserved")


def _et13_apply(meter, values, ctx):
    """Checks the documented ranges; keeps the MEP alert flags (the server's) and stores the
    write-only head of each M-Bus security key as zeros, the way it reads back (the M-Bus
    subsystem will need the secret kept elsewhere)."""
    current = _current(meter, 13, ctx)
    for i, device in enumerate(values.mbus_devices):
        _check_schedule(f"M-Bus device {i + 1}", device)
        if device.security_key_length > len(device.security_key):
            refuse(f"ET13 M-Bus device {i + 1}: security key length above 32")
        device.security_key = bytes(_KEY_PROTECTED) + device.security_key[_KEY_PROTECTED:]
    for i, client in enumerate(values.mep_clients):
        _check_schedule(f"MEP client {i + 1}", client)
        client.alert_flags = current.mep_clients[i].alert_flags
    return values


declare(
    et(13), "MEP/M-Bus Device Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_et13_layout,
    defaults=_et13_defaults,
    apply=_et13_apply,
    provenance=documented("MEP p.80-83 (M-Bus and MEP client entries of ET11.1 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET14 MEP/M-Bus Device Status

_DEVICE_STATUS = Struct(
    "device_handle" / UINT16,
    "device_status" / UINT8,  # 0 empty slot, 1/2 M-Bus up/down, 3/4 MEP client up/down
    "baud_rate" / UINT8,
    "billing_read_length" / UINT16,
    "read_attempts" / UINT32,
    "read_answers" / UINT32,
    "mep_alarms" / Bits(2, billing_data_collected=0, app_error_response=1, new_device_alarm=2,
                        billing_read_overflow=3, failed_comms_on_read=4,
                        serial_number_mismatch=5, firmware_switchover_success=6,
                        firmware_switchover_failure=7),
    "mbus_primary_address" / UINT8,
    "reserved" / Bytes(6),
    "mep_device_alarms" / UINT8,
    "status_read_time" / LTimeDate(),
    "last_read_attempt" / LTimeDate(),
)


def _et14_layout(meter):
    return Struct(
        "mode" / Bits(1, auto_discovery=0),
        "reserved" / Bytes(4),
        "device_occupancy" / BitSet(1),
        "devices" / Array(product_dimensions(meter).devices, _DEVICE_STATUS),
    )


def _et14_render(meter, now):
    """One entry per occupied slot of the device registry (below); empty slots read as zeros.
    Removing a device clears its whole record, so the baud rate reads 0 = 9600 (MEP p.243)."""
    empty = dict(device_handle=0, device_status=EMPTY_SLOT, baud_rate=0, billing_read_length=0,
                 read_attempts=0, read_answers=0, mep_alarms={}, mbus_primary_address=0,
                 reserved=bytes(6), mep_device_alarms=0, status_read_time=None,
                 last_read_attempt=None)
    entries, occupied = [], set()
    for slot, device in enumerate(devices(meter)):
        if device is None:
            entries.append(empty)
            continue
        occupied.add(slot)
        entries.append(dict(
            empty,
            device_handle=device["handle"],
            device_status=device["status"],
            baud_rate=device["baud_rate"],
            billing_read_length=device["billing_read_length"],
            read_attempts=device["read_attempts"] & 0xFFFFFFFF,
            read_answers=device["read_answers"] & 0xFFFFFFFF,
            mep_alarms={name: 1 for name in device["mep_alarms"]},
            mbus_primary_address=device["mbus_primary_address"],
            mep_device_alarms=device["mep_device_alarms"],
            status_read_time=_when(device["status_read_time"]),
            last_read_attempt=_when(device["last_read_attempt"]),
        ))
    return dict(mode={}, reserved=bytes(4), device_occupancy=frozenset(occupied),
                devices=entries)


declare(
    et(14), "MEP/M-Bus Device Status",
    read=READERS,
    layout=_et14_layout,
    render=_et14_render,
    provenance=documented("MEP p.83-89 (6-byte header, ET11.0 entries of ET11.2 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET15 MEP/M-Bus On-demand Requests

_ON_DEMAND_REQUEST = Struct(
    "transaction_number" / UINT16,
    "device_handle" / UINT16,  # or the group mask, for request type 6
    "request_type" / UINT8,
    "result" / UINT8,
)


def _et15_layout(meter):
    d = product_dimensions(meter)
    return Struct(
        "pointers" / Bits(1, write_pointer=(0, 4), read_pointer=(4, 4)),
        "request_queue" / Array(d.on_demand_queue_size, _ON_DEMAND_REQUEST),
        "write_messages" / Array(d.on_demand_queue_size, Struct(
            "length" / UINT8, "data" / Bytes(d.on_demand_write_entry_size - 1))),
        "multicast_data" / Struct("length" / UINT8, "message" / Bytes(d.mbus_multicast_length - 1)),
    )


def _et15_render(meter, now):
    """The on-demand queue (below): requests EP19 posts and EP39 answers; empty until then.
    A MEP download EP41 started (device/firmware.py ``mep_download``) shows as the newest
    entry, request type 7 "MEP download start" with result 0 (MEP p.91), while it is not in
    the queue itself: at the write pointer, which it moves on, unless the queue is full."""
    d = product_dimensions(meter)
    queue = _queue(meter)
    entries, message_list = list(queue["entries"]), list(queue["messages"])
    write = queue["write"]
    download = _download_request(meter, entries)
    if download is not None and (entries[write] is None or entries[write]["result"] != PENDING):
        entries[write], message_list[write] = download, ""
        write = (write + 1) % len(entries)
    requests, messages = [], []
    for entry, message in zip(entries, message_list):
        entry = entry or dict(transaction_number=0, device_handle=0, request_type=NO_ENTRY,
                              result=PENDING)
        requests.append({name: entry[name] for name in _REQUEST_FIELDS})
        data = bytes.fromhex(message)
        messages.append(dict(length=len(data),
                             data=data.ljust(d.on_demand_write_entry_size - 1, b"\0")))
    multicast = bytes.fromhex(queue["multicast"])
    return dict(pointers=dict(write_pointer=write, read_pointer=queue["read"]),
                request_queue=requests, write_messages=messages,
                multicast_data=dict(length=len(multicast),
                                    message=multicast.ljust(d.mbus_multicast_length - 1, b"\0")))


def _download_request(meter, entries) -> dict | None:
    """EP41's pending MEP download as an ET15 entry, unless the queue already holds it."""
    from ..device.firmware import mep_download

    download = mep_download(meter)
    if download is None or any(
            entry and entry["request_type"] == DOWNLOAD_START
            and entry["transaction_number"] == download["transaction"] for entry in entries):
        return None
    return dict(transaction_number=download["transaction"] & 0xFFFF,
                device_handle=download["device_handle"] & 0xFFFF,
                request_type=DOWNLOAD_START, result=PENDING)


declare(
    et(15), "MEP/M-Bus On-demand Requests",
    read=READERS,
    layout=_et15_layout,
    render=_et15_render,
    provenance=documented("MEP p.89-92 (queue of ET11.3 x ET11.4 bytes, then ET11.3 write "
                          "messages of ET11.11 bytes and one ET11.20-byte multicast message)"),
)

# ---------------------------------------------------------------------------------------
# ET16 MEP/M-Bus Device Data

_RESPONSE_INFO = Bits(1, data_order=0, response_type=1, key_availability=2,
                      authentication=(3, 2), security_status=5)


def _mbus_read(size: int):
    """One M-Bus billing read (MBR) of ``size`` bytes: the telegrams (length byte, CI=0x72
    variable or CI=0x73 fixed structure) stay raw, as the device sent them."""
    return Struct("timestamp" / LTimeDate(), "response_info" / _RESPONSE_INFO,
                  "telegrams" / Bytes(size - 7))


def _mep_read(size: int):
    return Struct("timestamp" / LTimeDate(), "response_info" / _RESPONSE_INFO,
                  "read_count" / UINT16, "length" / UINT16, "data" / Bytes(size - 11))


def _et16_layout(meter):
    d = product_dimensions(meter)
    return Struct(
        "mbus_devices" / Array(_mbus_slots(meter), _mbus_read(d.data_entry_size)),
        "mep_clients" / Array(d.mep_channels, _mep_read(d.data_entry_size)),
    )


def _et16_render(meter, now):
    """The latest read each MEP client posted with EP39 (on-demand reads, and scheduled reads
    that ET45 cannot take) or the M-Bus master took (device/mbus.py); all zeros where no
    device has been read. Kept when a device is
    removed (MEP p.36)."""
    layout = _et16_layout(meter)
    server = _server(meter)
    if server is None or not server["reads"]:
        return bytes(layout.sizeof())
    values = zeros(layout)
    first_mep = _mbus_slots(meter)
    for key, read in server["reads"].items():
        channel = int(key) - first_mep
        if read.get("time") is None:
            continue
        if 0 <= int(key) < first_mep:  # an M-Bus device's telegrams (device/mbus.py)
            values.mbus_devices[int(key)] = dict(
                timestamp=_when(read["time"]), response_info={},
                telegrams=bytes.fromhex(read["data"]).ljust(
                    product_dimensions(meter).data_entry_size - 7, b"\0"))
            continue
        if not 0 <= channel < len(values.mep_clients):
            continue
        data = bytes.fromhex(read["data"])
        values.mep_clients[channel] = dict(
            timestamp=_when(read["time"]), response_info={},
            read_count=read["read_count"] & 0xFFFF, length=len(data),
            data=data.ljust(product_dimensions(meter).data_entry_size - MEP_READ_HEADER, b"\0"))
    return values


declare(
    et(16), "MEP/M-Bus Device Data",
    read=READERS,
    layout=_et16_layout,
    render=_et16_render,
    provenance=documented("MEP p.92-95; OPG p.42-45 (ET11.0 entries of ET11.5 = 517 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET34 Additional M-Bus/MEP Device Configuration

_MDT_MAX = 31  # an M-Bus Data Type is a 5-bit ordinal (MEP p.31)
_RETRY_ATTEMPTS_MAX = 254
DEFAULT_LOAD_PROFILE_POLL_MINUTES = 60

_DEVICE_CONFIG_2 = Struct(
    "reserved" / Bytes(2),
    "group_mask" / UINT8,
    "reserved_3" / Bytes(1),
    "load_profile_poll_rate" / UINT16,
    "control_mdt" / UINT8,
    "command_monitor_mdt" / UINT8,
    "time_stamp_mdt" / UINT8,
    "hour_locator" / Bits(1, start_bit=(0, 5), bit_count=(5, 3)),
    "minute_locator" / Bits(1, start_bit=(0, 5), bit_count=(5, 3)),
    "load_profile_poll_wait" / UINT8,
    "load_profile_poll_retry_attempts" / UINT8,
    "load_profile_poll_retry_wait" / UINT8,
    "reserved_14" / Bytes(8),
)
_MDT_FIELDS = ("control_mdt", "command_monitor_mdt", "time_stamp_mdt")


def _et34_layout(meter):
    d = product_dimensions(meter)
    return Struct("devices" / Array(d.devices, _DEVICE_CONFIG_2))


def _et34_defaults(meter):
    entry = dict(reserved=bytes(2), group_mask=0, reserved_3=bytes(1),
                 load_profile_poll_rate=DEFAULT_LOAD_PROFILE_POLL_MINUTES, control_mdt=0,
                 command_monitor_mdt=0, time_stamp_mdt=0, hour_locator={}, minute_locator={},
                 load_profile_poll_wait=0, load_profile_poll_retry_attempts=0,
                 load_profile_poll_retry_wait=0, reserved_14=bytes(8))
    return dict(devices=[entry] * product_dimensions(meter).devices)


def _et34_apply(meter, values, ctx):
    for i, device in enumerate(values.devices):
        for name in _MDT_FIELDS:
            if device[name] > _MDT_MAX:
                refuse(f"ET34 device {i + 1}: {name} {device[name]} is not an MDT (0..31)")
        if device.load_profile_poll_retry_attempts > _RETRY_ATTEMPTS_MAX:
            refuse(f"ET34 device {i + 1}: retry attempts must be 0..{_RETRY_ATTEMPTS_MAX}")


declare(
    et(34), "Additional M-Bus/MEP Device Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_et34_layout,
    defaults=_et34_defaults,
    apply=_et34_apply,
    provenance=documented("MEP p.106-107 (ET11.0 entries of ET11.13 = 22 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET45 MEP Recurring Read Log, ET74 MEP Recurring Read Extended Log


@dataclass(frozen=True)
class RecurringReadLogs:
    """The adjustable dimensions of ET45/ET74. ET36 (ET45 "Entry Size"/"Current Entries") and
    ET54.69 ("ET74 Entry Count") publish the same numbers; EP37 changes them."""

    entry_size: int  # bytes per ET45 entry, length field included; ET74 entries match
    entries: int  # ET45 entries
    extended_entries: int  # ET74 entries


#: A freshly commissioned meter: 525-byte entries (MEP p.108-109), no entries in either log
#: (ET36 "Current Entries" default 0, MEP p.109; ET54.69 default 0, MEP p.136).
RECURRING_READ_LOGS = RecurringReadLogs(entry_size=525, entries=0, extended_entries=0)

_ENTRY_HEAD = 8  # length, identifier (ET45) or filler (ET74), handle, execution status, result


def _recurring_read_entry(second_field, entry_size: int):
    return Struct(
        "length" / UINT16,
        second_field,
        "handle" / UINT16,
        "execution_status" / UINT8,
        "result" / UINT8,
        "data" / _mbus_read(entry_size - _ENTRY_HEAD),
    )


def _et45_layout(meter):
    logs = RECURRING_READ_LOGS
    entry = _recurring_read_entry("identifier" / Bits(2, identifier=(0, 11), namespace=(11, 5)),
                                  logs.entry_size)
    return Struct(*list_header(), "entries" / Array(logs.entries, entry))


def _et74_layout(meter):
    logs = RECURRING_READ_LOGS
    entry = _recurring_read_entry("reserved" / Bytes(2), logs.entry_size)
    return Struct(
        "flags" / LIST_FLAGS,
        "valid_entries" / UINT16,
        "last_entry_element" / UINT16,
        "last_entry_sequence_number" / UINT16,
        "unread_entries" / UINT16,
        "entries" / Array(logs.extended_entries, entry),
    )


def _empty_log(layout, circular: bool) -> bytes:
    """An empty log: its header, then every entry's space reserved as zeros."""
    header = layout.subcons[0].build(dict(list_type=int(circular)))
    return header + bytes(layout.sizeof() - len(header))


def _et45_render(meter, now):
    """Scheduled reads EP39 posted (the recurring read log below), as a circular queue, since
    ET36 "Max Entries" for ET45 is not 0 (MEP p.109); empty until the first one."""
    layout = _et45_layout(meter)
    server = _server(meter)
    size = RECURRING_READ_LOGS.entries
    log = server["recurring"] if server is not None else None
    if log is None or not log["entries"] or size == 0:
        return _empty_log(layout, circular=True)
    values = zeros(layout)
    kept = log["entries"][-size:]
    for record in kept:
        data = bytes.fromhex(record["data"])[:RECURRING_READ_LOGS.entry_size - _ENTRY_HEAD
                                             - MEP_READ_HEADER]
        mbr = MEP_READ_HEADER + len(data)
        telegrams = (record["read_count"].to_bytes(2, "little") + len(data).to_bytes(2, "little")
                     + data)  # the MEP form of an MBR after its timestamp and response info
        values.entries[(record["sequence"] - 1) % size] = dict(
            length=_ENTRY_HEAD - 2 + mbr,
            identifier=dict(identifier=0, namespace=0),
            handle=record["handle"], execution_status=0, result=RECURRING_READ_SUCCESS,
            data=dict(timestamp=_when(record["time"]), response_info={},
                      telegrams=telegrams.ljust(RECURRING_READ_LOGS.entry_size - _ENTRY_HEAD - 7,
                                                b"\0")))
    last = kept[-1]["sequence"]
    values.flags = dict(list_type=1, overflow=int(log["overflow"]))
    values.valid_entries = len(kept)
    values.last_entry_element = (last - 1) % size
    values.last_entry_sequence_number = last & 0xFFFF
    values.unread_entries = min(log["unread"], size)
    return values


def _et74_render(meter, now):
    """Empty; a circular queue only when it has room for entries (MEP p.176)."""
    return _empty_log(_et74_layout(meter), circular=RECURRING_READ_LOGS.extended_entries > 0)


declare(
    et(45), "MEP Recurring Read Log",
    read=READERS,
    layout=_et45_layout,
    render=_et45_render,
    provenance=documented("MEP p.119-120 (entries sized by ET36, MEP p.107-109)"),
)

declare(
    et(74), "MEP Recurring Read Extended Log",
    read=READERS,
    layout=_et74_layout,
    render=_et74_render,
    provenance=documented("MEP p.176-177 (entry count ET54.69, MEP p.136; entries as ET45's)"),
)

# ---------------------------------------------------------------------------------------
# ET57 M-Bus/MEP Data Type Table

EMPTY, MBUS_BASE, MEP_BASE, EXTENSION = range(4)  # ET57 "Entry Type"

_MDT_ENTRY = Struct(
    "descriptor" / Bits(1, entry_type=(0, 2), mdt=(2, 5), special=7),
    "drh" / Bytes(3),
)


def _et57_layout(meter):
    return Struct("entries" / Array(product_dimensions(meter).et57_entries, _MDT_ENTRY))


def _et57_defaults(meter):
    empty = dict(descriptor={}, drh=bytes(3))
    return dict(entries=[empty] * product_dimensions(meter).et57_entries)


def _et57_apply(meter, values, ctx):
    """An extension continues the DRH of the entry before it, so it needs a non-empty one."""
    previous = EMPTY
    for i, entry in enumerate(values.entries):
        kind = entry.descriptor["entry_type"]
        if kind == EXTENSION and previous == EMPTY:
            refuse(f"ET57 entry {i}: an extension must follow a base or extension entry")
        previous = kind


declare(
    et(57), "M-Bus/MEP Data Type Table",
    read=READERS,
    write=CONFIGURERS,
    layout=_et57_layout,
    defaults=_et57_defaults,
    apply=_et57_apply,
    provenance=documented("MEP p.163-164 (ET11.25 entries of 4 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET58 M-Bus/MEP Status Extension

_STATUS_EXTENSION = Struct("control_status" / UINT8, "reserved" / Bytes(19))


def _et58_layout(meter):
    return Struct("devices" / Array(product_dimensions(meter).devices, _STATUS_EXTENSION))


def _et58_render(meter, now):
    """No control status read yet (the MEP client subsystem records the ET34 "Control MDT")."""
    empty = dict(control_status=0, reserved=bytes(19))
    return dict(devices=[empty] * product_dimensions(meter).devices)


declare(
    et(58), "M-Bus/MEP Status Extension",
    read=READERS,
    layout=_et58_layout,
    render=_et58_render,
    provenance=documented("MEP p.165 (ET11.0 entries of 20 bytes)"),
)

# ---------------------------------------------------------------------------------------
# ET71 Delta Data Alerts

UNUSED_SOURCE = 255  # "Delta Data Monitor Source" of an entry not in use

_DELTA_DATA = Struct(
    "monitor_source" / UINT16,
    "configured_delta" / UINT16,
    "comparison_value" / NI_FMAT,
    "sampled_data_value" / NI_FMAT,
    "status" / Bits(1, source_id_invalid=0),
)


def _et71_layout(meter):
    return Struct("sources" / Array(product_dimensions(meter).delta_alert_sources, _DELTA_DATA))


def _et71_defaults(meter):
    """The listed defaults, which a real meter also restores at every power-up (RAM only)."""
    entry = dict(monitor_source=UNUSED_SOURCE, configured_delta=0, comparison_value=0,
                 sampled_data_value=0, status={})
    return dict(sources=[entry] * product_dimensions(meter).delta_alert_sources)


def _et71_apply(meter, values, ctx):
    """The sampled value and the status are the meter's (the delta data monitor will update
    them); the configuration and the comparison value are the client's."""
    current = _current(meter, 71, ctx)
    for entry, kept in zip(values.sources, current.sources):
        entry.sampled_data_value = kept.sampled_data_value
        entry.status = kept.status
    return values


declare(
    et(71), "Delta Data Alerts",
    read=READERS,
    write={Key.MK, Key.PK, Key.MBK, Key.MAK, Key.PLC},
    layout=_et71_layout,
    defaults=_et71_defaults,
    apply=_et71_apply,
    provenance=documented("MEP p.174-175 (ET11.27 entries of 13 bytes; firmware 3.40+)"),
)

# ---------------------------------------------------------------------------------------
# The MEP server's state: the device registry (ET14), the on-demand queue (ET15), the latest
# read per device (ET16), the recurring read log (ET45) and the alert flags (ET13).
#
# One JSON-able subsystem, created by the first change (an idle meter keeps nothing). The MEP
# procedures (procedures/mep.py) change it through the functions below; the MEP engine (ET50
# registration, the alert sequence, on-demand time-outs) calls the same functions, so every
# path leaves the tables alike. Times the guide gives in local time (ET14, ET16) are kept as the
# meter's local time when they happened.

SUBSYSTEM = "mep_devices"
ALL_DEVICES = 0xFFFF  # EP17 "remove all devices"; EP19 type 6 "all commissioned devices"

#: ET14 "Device Status" (MEP p.85)
EMPTY_SLOT, MBUS_UP, MBUS_DOWN, MEP_UP, MEP_DOWN = range(5)
#: ET14 "Device Handle" ranges (MEP p.84-85): 1..999 M-Bus devices, 1000..1999 MEP client 1,
#: 2000.. MEP client 2 ("typically only the first number will be used", MEP p.22)
MBUS_HANDLES = range(1, 1000)
MEP_HANDLE_SPAN = 1000
#: Event 96 "MEP Status Changed" codes; the argument is (device index << 13) | code
STATUS_COMMISSIONED, STATUS_REMOVED, STATUS_REGISTERED = 0, 4, 5
DEVICE_INDEX_SHIFT = 13

#: ET15 "Request Type" (MEP p.90-91) and "Result" (MEP p.91)
NO_ENTRY, APP_RESET, BILLING_READ, STATUS_READ, WRITE_DATA, TIME_SYNC, MULTICAST = range(7)
DOWNLOAD_START, DOWNLOAD_PACKET, DOWNLOAD_SWITCHOVER = range(7, 10)
PENDING, SUCCESS, NO_RESPONSE, FAILED = range(4)
_REQUEST_FIELDS = ("transaction_number", "device_handle", "request_type", "result")

#: An ET16 MEP record: timestamp, response info, read count and length before the data
MEP_READ_HEADER = 11
#: ET45 "Result" of a recorded read (MEP p.121)
RECURRING_READ_SUCCESS = 4


def _server(meter) -> dict | None:
    """The state, or None while nothing happened (reading never creates it)."""
    return meter.state.subsystems.get(SUBSYSTEM)


def _own(meter) -> dict:
    """The state, created on first use and fitted to ET11's dimensions."""
    d = product_dimensions(meter)
    own = meter.subsystem(SUBSYSTEM, slots=[], next_handle={}, reads={}, queue=None,
                          recurring=dict(entries=[], sequence=0, unread=0, overflow=False))
    slots = own["slots"]
    slots.extend([None] * (d.devices - len(slots)))
    del slots[d.devices:]
    if own["queue"] is None or len(own["queue"]["entries"]) != d.on_demand_queue_size:
        own["queue"] = _empty_queue(d.on_demand_queue_size)
    meter.dirty = True
    _discover(meter)
    return own


def _empty_queue(size: int) -> dict:
    return dict(write=0, read=0, entries=[None] * size, messages=[""] * size, multicast="")


def _queue(meter) -> dict:
    server = _server(meter)
    if server is None or server["queue"] is None:
        return _empty_queue(product_dimensions(meter).on_demand_queue_size)
    return server["queue"]


def _stamp(meter, now: float) -> str:
    return meter.local(now).isoformat()


def _when(stamp: str | None):
    return None if stamp is None else dt.datetime.fromisoformat(stamp)


def _parse(meter, number: int, now: float):
    return CATALOG[et(number)].layout_for(meter).parse(meter.table_bytes(et(number), now))


# ---- the registry --------------------------------------------------------------------------

def devices(meter) -> list[dict | None]:
    """One entry per ET14 slot: the device there (handle, status, counters, alarms) or None."""
    size = product_dimensions(meter).devices
    _discover(meter)
    server = _server(meter)
    slots = list(server["slots"]) if server is not None else []
    return (slots + [None] * size)[:size]


def mep_slot(meter, channel: int) -> int:
    """The ET13/ET14/ET16 slot of MEP client ``channel`` (1 or 2): after the M-Bus slots."""
    return _mbus_slots(meter) + channel - 1


def slot_channel(meter, slot: int) -> int | None:
    """The MEP client (1, 2) whose slot this is, or None for an M-Bus slot."""
    first = _mbus_slots(meter)
    return slot - first + 1 if slot >= first else None


def slot_of(meter, handle: int) -> int | None:
    """The slot of the installed device with this handle, or None."""
    for slot, device in enumerate(devices(meter)):
        if device is not None and device["handle"] == handle:
            return slot
    return None


def device_index(slot: int) -> int:
    """A slot's device index as EP19 counts it (MEP p.244-245: the 1st MEP client of a meter
    with four M-Bus slots is index 5); events 96 and 99 put it in argument bits 13..15."""
    return slot + 1


def _handles_of(meter, slot: int) -> range:
    channel = slot_channel(meter, slot)
    if channel is None:
        return MBUS_HANDLES
    return range(channel * MEP_HANDLE_SPAN, (channel + 1) * MEP_HANDLE_SPAN)


def request_discovery(meter, channel: int, now: float, user_id: int = USER_NONE) -> None:
    """ET50 "MEP Device Registered" was set: "the MEP server will see that this flag is set and
    perform discovery of the MEP client device" (MEP p.16), which installs it in its ET14 slot
    with a new handle (MEP p.22, p.36). The discovery is the server's next step: ``register``
    for that slot is it (with the handle it is given), and anything that looks at the registry
    first runs it, dated at the write. A client already installed is left as it is."""
    slot = mep_slot(meter, channel)
    if devices(meter)[slot] is None:
        _own(meter).setdefault("discovering", {})[str(slot)] = [now, user_id]


def _discover(meter) -> None:
    """Run the discoveries ET50 writes asked for (``request_discovery``)."""
    server = _server(meter)
    waiting = server.get("discovering") if server is not None else None
    while waiting:
        slot, (now, user_id) = waiting.popitem()
        if server["slots"][int(slot)] is None:
            register(meter, int(slot), now, user_id=user_id)


def register(meter, slot: int, now: float, *, handle: int | None = None,
             user_id: int = USER_NONE) -> int:
    """Install a device in ``slot`` as the MEP server does once discovery succeeds (a MEP
    client that set ET50 "MEP Device Registered", MEP p.17; an M-Bus device found by
    auto-discovery): ET14 entry "Up" with the ET13 baud rate, occupancy bit set, event 96
    (5 registered, or 0 commissioned for M-Bus) and BT03 "MEP Installed or Removed". Without a
    ``handle`` the next one of the slot's range is given. Returns the handle."""
    allowed = _handles_of(meter, slot)
    server = _server(meter)
    if server is not None:  # this is the discovery an ET50 write asked for
        server.get("discovering", {}).pop(str(slot), None)
    own = _own(meter)
    if own["slots"][slot] is not None:
        raise ValueError(f"ET14 slot {slot + 1} is occupied")
    counter = str(slot_channel(meter, slot) or 0)
    if handle is None:
        handle = own["next_handle"].get(counter, allowed.start)
    if handle not in allowed:
        raise ValueError(f"handle {handle} is outside {allowed.start}..{allowed.stop - 1}")
    own["next_handle"][counter] = handle + 1 if handle + 1 in allowed else allowed.start
    channel = slot_channel(meter, slot)
    config = _parse(meter, 13, now)
    entry = (config.mbus_devices[slot] if channel is None
             else config.mep_clients[channel - 1])
    own["slots"][slot] = dict(
        handle=handle, status=MBUS_UP if channel is None else MEP_UP,
        baud_rate=entry.baud_rate, billing_read_length=0, read_attempts=0, read_answers=0,
        mep_alarms=[], mbus_primary_address=0, mep_device_alarms=0, status_read_time=None,
        last_read_attempt=None, first_read=True,
    )
    code = STATUS_COMMISSIONED if channel is None else STATUS_REGISTERED
    meter.log_event(MEP_STATUS_CHANGED.number, device_index(slot) << DEVICE_INDEX_SHIFT | code,
                    now, user_id)
    conditions.begin(meter, "mep_installed_or_removed", now, 0, user_id)
    return handle


def remove(meter, slot: int, now: float, user_id: int = USER_NONE) -> dict:
    """Logically remove the device in ``slot`` (MEP p.36): its ET14 record and occupancy bit
    are cleared, its on-demand requests in ET15 end as "Request failed", a MEP client's alert
    flags in ET13 are cleared (it is no longer alerted), event 96 "device removed" is logged
    and BT03 "MEP Installed or Removed" raised. ET16 keeps its data. Returns the old record."""
    own = _own(meter)
    device = own["slots"][slot]
    if device is None:
        raise ValueError(f"ET14 slot {slot + 1} is empty")
    own["slots"][slot] = None
    queue = own["queue"]
    for entry in queue["entries"]:
        if entry and entry["result"] == PENDING and slot in entry["targets"]:
            entry["result"] = FAILED
    _settle(meter, now)
    channel = slot_channel(meter, slot)
    if channel is not None:
        set_alert_flags(meter, channel, now, scheduled_read_request=0, on_demand_request=0,
                        mbus_change=0, delta_data_alert=0)
    meter.log_event(MEP_STATUS_CHANGED.number,
                    device_index(slot) << DEVICE_INDEX_SHIFT | STATUS_REMOVED, now, user_id)
    conditions.begin(meter, "mep_installed_or_removed", now, 0, user_id)
    return device


def _device(meter, slot: int) -> dict:
    device = _own(meter)["slots"][slot]
    if device is None:
        raise ValueError(f"ET14 slot {slot + 1} is empty")
    return device


def count_attempt(meter, slot: int, now: float, *, billing: bool) -> None:
    """ET14 "Read Attempts" (any request to the device) and, for billing reads, "Last Read
    Attempt": both updated when the request is made (MEP p.86, p.89: "Pre")."""
    device = _device(meter, slot)
    device["read_attempts"] += 1
    if billing:
        device["last_read_attempt"] = _stamp(meter, now)


def record_read(meter, slot: int, data: bytes, now: float, *, to_et16: bool,
                header: int = MEP_READ_HEADER) -> None:
    """A successful read of ``data`` from the device in ``slot``: ET14 "Read Answers", the
    ET16 read count, and (``to_et16``) the ET16 record itself with ET14 "Billing Read Length"
    (timestamp, header fields and data, MEP p.86). ``header``: the ET16 bytes before ``data``
    (11 for a MEP client; 7 for an M-Bus device, whose ``data`` is its telegrams)."""
    device = _device(meter, slot)
    device["read_answers"] += 1
    device["first_read"] = False
    read = _own(meter)["reads"].setdefault(str(slot), dict(time=None, read_count=0, data=""))
    read["read_count"] += 1
    if to_et16:
        read.update(time=_stamp(meter, now), data=data.hex())
        device["billing_read_length"] = header + len(data)


def first_read_pending(meter, slot: int) -> bool:
    """True until the first read of a newly registered device, which always goes to ET16
    (MEP p.92, p.119)."""
    return _device(meter, slot)["first_read"]


def log_recurring_read(meter, slot: int, data: bytes, now: float,
                       user_id: int = USER_NONE) -> None:
    """Append a scheduled read to ET45 (MEP p.119-121) and raise BT03 "Mfg Log Entry
    Available" (ET36 logs post it, MEP p.107). Only while ET45 has entries: with ET36 "Current
    Entries" 0 (the default) scheduled reads go to ET16."""
    size = RECURRING_READ_LOGS.entries
    if size == 0:
        raise ValueError("ET45 has no entries (ET36 Current Entries = 0)")
    log = _own(meter)["recurring"]
    log["sequence"] += 1
    if log["unread"] >= size:
        log["overflow"] = True  # an unread entry is overwritten
    log["unread"] = min(log["unread"] + 1, size)
    log["entries"].append(dict(sequence=log["sequence"], handle=_device(meter, slot)["handle"],
                               time=_stamp(meter, now),
                               read_count=_own(meter)["reads"].get(str(slot), {})
                               .get("read_count", 0) & 0xFFFF, data=data.hex()))
    del log["entries"][:-253]  # ET36 "Max Entries" for ET45 (MEP p.109)
    conditions.begin(meter, "mfg_log_entry_available", now, et(45), user_id)


# ---- alarms ---------------------------------------------------------------------------------

def latch_alarms(meter, slot: int, now: float, *names: str, user_id: int = USER_NONE) -> None:
    """Latch ET14 "MEP Alarms" bits of a device until EP18 clears them (MEP p.87-88). A newly
    latched bit "triggers the MEP alarm in BT03" (MEP p.87): BT03 "M-Bus Alarm" (OPG p.46),
    its event's argument the device handle."""
    device = _device(meter, slot)
    new = [name for name in names if name not in device["mep_alarms"]]
    device["mep_alarms"] += new
    if new:
        conditions.begin(meter, "mbus_alarm", now, device["handle"], user_id)


def record_status(meter, slot: int, device_alarms: int, now: float,
                  user_id: int = USER_NONE) -> None:
    """A status read's device alarm byte: ET14 "Status Read Timestamp" and "MEP Device Alarms",
    whose bits stay latched until EP18 (MEP p.89); new bits latch "New Device Alarm" (p.87)."""
    device = _device(meter, slot)
    device["status_read_time"] = _stamp(meter, now)
    fresh = device_alarms & ~device["mep_device_alarms"]
    device["mep_device_alarms"] |= device_alarms
    if fresh:
        latch_alarms(meter, slot, now, "new_device_alarm", user_id=user_id)


def clear_alarms(meter, slots) -> None:
    """EP18: clear the latched ET14 alarm bits of ``slots``; once no device has any latched,
    BT03 "M-Bus Alarm" is cleared as well (the condition it reports is over)."""
    own = _own(meter)
    for slot in slots:
        device = own["slots"][slot]
        if device is not None:
            device["mep_alarms"] = []
            device["mep_device_alarms"] = 0
    if not any(device and (device["mep_alarms"] or device["mep_device_alarms"])
               for device in own["slots"]):
        conditions.end(meter, "mbus_alarm")


# ---- ET13 alert flags -----------------------------------------------------------------------

def set_alert_flags(meter, channel: int, now: float, **flags: int) -> None:
    """Set or clear MEP client ``channel``'s ET13 "Alert Flags" (MEP p.82-83). The flags are
    the meter's: ET13 keeps them across client writes, so they are changed in place here."""
    table = CATALOG[et(13)]
    layout = table.layout_for(meter)
    values = layout.parse(meter.table_bytes(et(13), now))
    values.mep_clients[channel - 1].alert_flags.update(flags)
    meter.state.tables[et(13)] = layout.build(values)
    meter.dirty = True


def alert_flags(meter, channel: int, now: float) -> dict:
    return dict(_parse(meter, 13, now).mep_clients[channel - 1].alert_flags)


#: The ET13 flags that make the MEP port send its alert sequence (MEP p.17-18, p.82-83); bit 2
#: is "reserved for internal use"
ALERT_CONDITIONS = ("scheduled_read_request", "on_demand_request", "mbus_change",
                    "delta_data_alert")


def alerting(meter, channel: int, now: float) -> bool:
    """Whether MEP client ``channel`` has a condition to be alerted about. ET13 holds the
    flags; until something stores it (a write or a flag), it has none."""
    if et(13) not in meter.state.tables or channel > product_dimensions(meter).mep_channels:
        return False
    flags = alert_flags(meter, channel, now)
    return any(flags[name] for name in ALERT_CONDITIONS)


_SERVING = ContextVar("mep_channel_in_service", default=1)


def channel_in_service() -> int:
    """The MEP client (1 or 2) whose request is being served: ET70.142 "Current Comm Channel
    Index" (MEP p.23). 1 outside a MEP request."""
    return _SERVING.get()


@contextmanager
def serving(channel: int):
    """The MEP port wraps each request it serves in this."""
    token = _SERVING.set(channel)
    try:
        yield
    finally:
        _SERVING.reset(token)


# ---- the on-demand queue (ET15) -------------------------------------------------------------

def post_request(meter, now: float, *, transaction_number: int, device_handle: int,
                 request_type: int, targets, message: bytes = b"",
                 multicast: bytes | None = None) -> int | None:
    """Post a request at ET15's write pointer (MEP p.89-91) for the devices in ``targets``
    (slots). None when the queue is full: the entry there still waits for its result. A
    request to a MEP client raises its ET13 "On-demand Request in ET15" alert."""
    expire_requests(meter, now)
    queue = _own(meter)["queue"]
    index = queue["write"]
    if queue["entries"][index] is not None and queue["entries"][index]["result"] == PENDING:
        return None
    queue["entries"][index] = dict(transaction_number=transaction_number,
                                   device_handle=device_handle, request_type=request_type,
                                   result=PENDING, posted=now, targets=sorted(targets))
    queue["messages"][index] = message.hex()
    if multicast is not None:
        queue["multicast"] = multicast.hex()
    queue["write"] = (index + 1) % len(queue["entries"])
    _settle(meter, now)
    return index


def oldest_request(meter, now: float) -> tuple[int, dict] | None:
    """The entry at ET15's read pointer while it waits for its result: "only the oldest entry
    can be cleared" (MEP p.24-25)."""
    expire_requests(meter, now)
    queue = _queue(meter)
    entry = queue["entries"][queue["read"]]
    if entry is None or entry["result"] != PENDING:
        return None
    return queue["read"], entry


def complete_request(meter, index: int, result: int, now: float) -> None:
    """Give ET15 entry ``index`` its result (MEP p.91); the read pointer moves past it."""
    _own(meter)["queue"]["entries"][index]["result"] = result
    _settle(meter, now)


def _expiries(meter) -> list[tuple[float, dict]]:
    """(virtual instant it expires, entry) of each request still waiting: posted + ET51
    "On-demand Timeout" of the client it addresses (client 1's for M-Bus devices)."""
    server = _server(meter)
    if server is None or server["queue"] is None:
        return []
    waiting = [e for e in server["queue"]["entries"] if e is not None and e["result"] == PENDING]
    if not waiting:  # the usual case, on every advance: no ET51 parse
        return []
    clients = _parse(meter, 51, 0.0).clients
    expiries = []
    for entry in waiting:
        channels = [slot_channel(meter, slot) or 1 for slot in entry["targets"]] or [1]
        timeout = clients[min(channels[0], len(clients)) - 1].on_demand_timeout
        expiries.append((entry["posted"] + timeout, entry))
    return expiries


def expire_requests(meter, now: float) -> None:
    """Requests older than ET51 "On-demand Timeout" end as "No response from device" (MEP
    p.24-25, p.128). Run before every queue operation, and on the meter's timer (``run_due``)."""
    expired = [entry for due, entry in _expiries(meter) if now >= due]
    for entry in expired:
        entry["result"] = NO_RESPONSE
    if expired:
        _settle(meter, now)


def next_due(meter) -> float | None:
    """The meter-UTC instant the next waiting ET15 request expires (the meter's timer hook,
    like pending.next_due)."""
    dues = [due for due, _ in _expiries(meter)]
    return min(dues) + meter.state.clock_offset if dues else None


def run_due(meter, now: float) -> None:
    """The MEP server's timed work at virtual time ``now``: expire ET15 requests."""
    expire_requests(meter, now)


def _settle(meter, now: float) -> None:
    """Move the read pointer to the oldest request still waiting (or to the write pointer) and
    keep each MEP client's "On-demand Request in ET15" alert in step with the queue."""
    queue = _own(meter)["queue"]
    size = len(queue["entries"])
    entries = queue["entries"]
    oldest_first = [(queue["write"] + step) % size for step in range(size)]
    waiting = [i for i in oldest_first if entries[i] and entries[i]["result"] == PENDING]
    queue["read"] = waiting[0] if waiting else queue["write"]
    waiting = {slot for index in waiting for slot in entries[index]["targets"]}
    for channel in range(1, product_dimensions(meter).mep_channels + 1):
        pending = int(mep_slot(meter, channel) in waiting)
        if alert_flags(meter, channel, now).get("on_demand_request") != pending:
            set_alert_flags(meter, channel, now, on_demand_request=pending)
