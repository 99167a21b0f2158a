"""MEP/M-Bus device tables: ET13-ET16, ET34, ET45, ET57, ET58, ET71, ET74.

The MEP server keeps one slot per downstream device: the first four for M-Bus devices, then one
MEP client (two on firmware 4.0+). Every array here is sized by ET11 (``product_dimensions``), so
the tables follow the firmware version exactly as ET11 does. Configuration (ET13, ET34, ET57,
ET71) is stored with the guide's defaults; status, data and logs are rendered as a meter with no
M-Bus device and no MEP client shows them, until the MEP client subsystem fills them.

ET57 (firmware 3.30+), ET71 (3.40+) and ET74 (3.60+) are declared for every firmware version,
since the catalog has no per-version table list (a real older meter lacks them).

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from construct import Array, Bytes, Struct

from ..datatypes import NI_FMAT, UINT8, UINT16, UINT32, Bits, BitSet, Chars, LTimeDate, LIST_FLAGS, list_header
from ..device.access import CONFIGURERS, READERS, Key
from ..provenance import documented
from .catalog import CATALOG, declare, et, refuse
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
    """Every slot empty (the MEP client subsystem will occupy them)."""
    empty = dict(device_handle=0, device_status=0, baud_rate=0, billing_read_length=0,
                 read_attempts=0, read_answers=0, mep_alarms={}, mbus_primary_address=0,
                 reserved=bytes(6), mep_device_alarms=0, status_read_time=None,
                 last_read_attempt=None)
    return dict(mode={}, reserved=bytes(4), device_occupancy=frozenset(),
                devices=[empty] * product_dimensions(meter).devices)


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
    """An empty queue (EP19/EP39/EP41 will post requests here)."""
    d = product_dimensions(meter)
    request = dict(transaction_number=0, device_handle=0, request_type=0, result=0)
    message = dict(length=0, data=bytes(d.on_demand_write_entry_size - 1))
    return dict(pointers={}, request_queue=[request] * d.on_demand_queue_size,
                write_messages=[message] * d.on_demand_queue_size,
                multicast_data=dict(length=0, message=bytes(d.mbus_multicast_length - 1)))


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
    """No read yet from any device: all zeros (the MEP client subsystem posts reads via EP39)."""
    return bytes(_et16_layout(meter).sizeof())


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
    """Empty: scheduled reads land here once the MEP client subsystem records them. A circular
    queue, since ET36 "Max Entries" for ET45 is not 0 (MEP p.109)."""
    return _empty_log(_et45_layout(meter), circular=True)


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
