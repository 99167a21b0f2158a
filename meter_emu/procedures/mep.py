"""MEP procedures: what a MEP client, the head-end or an optical tool asks of the MEP server.

EP17 removes a device, EP18 clears latched device alarms, EP19 posts an on-demand request, EP24
takes a one-time read, EP39 posts a MEP client's data, EP61 locks the MEP transaction tables and
EP50 (a CPM module's measurement input) is refused with its reason.

The state they change lives with the tables that show it, so the MEP engine (ET50 registration,
the alert sequence, on-demand time-outs) drives the very same state: tables/mep_devices.py keeps
the device registry (ET14), the on-demand queue (ET15), the latest reads (ET16), the recurring
read log (ET45) and the alert flags (ET13); tables/mep_client.py keeps ET50 registration, the
one-time reads (ET19, ET20, ET31) and the transaction lock (ET52, ET54).

Pages are the MEP guide's printed footers; its table of contents is two short (it lists EP17 at
p.241, printed on p.243). ECH = the Echelon user's guide list of procedure names
(reference/osgp-app-layer.md section 10.4).
"""

from __future__ import annotations

from construct import GreedyBytes, Struct

from ..datatypes import UINT8, UINT16, Bits
from ..device.access import Key
from ..events import MBUS_ALARM_MATCH
from ..provenance import designed, documented
from .catalog import ProcedureFailed, Result, ResultCode, declare, ep

QUEUE_FULL = 7  # EP19's own result code (MEP p.246); EP24 reuses it for its queues
_ACTIONS = {Key.MK, Key.PK, Key.MAK, Key.PLC}  # configuration and actions
_MEP_CLIENTS = {Key.MAK, Key.MBK}


def _tables():
    """The MEP table modules, imported late: the table catalog imports the procedures."""
    from ..tables import mep_client, mep_devices

    return mep_devices, mep_client


def _dimensions(meter):
    from ..tables.dimensions import product_dimensions

    return product_dimensions(meter)


def _fail(code: int, reason: str):
    raise ProcedureFailed(code, reason)


# ---------------------------------------------------------------------------------------
# EP17 Remove MEP Device (MEP p.243-244; worked example p.53; what removal does, p.36)

_REMOVE = Struct("action" / UINT8, "device_handle" / UINT16)
#: Action -> the primary address a removed M-Bus device is given (MEP p.244)
_REASSIGNED_ADDRESS = {0: 0, 1: 250}


def _remove_device(meter, p, ctx) -> Result:
    """Logically removes the device with the handle (0xFFFF: every device): its ET14 record and
    occupancy bit are cleared, its pending ET15 requests end as "request failed", a MEP
    client's ET50 "MEP Device Registered" bit and MEP icons and its ET13 alert flags are
    cleared; event 96 (device index << 13 | 4) is logged per device and BT03 "MEP Installed or
    Removed" raised; ET16 keeps its data. Removal is immediate (no M-Bus device is emulated to
    re-address), so results 1 "not complete" and 4 "remove in progress" never occur. The MBK
    may remove a MEP client only (MEP p.244)."""
    devices, clients = _tables()
    if p.action not in _REASSIGNED_ADDRESS:
        _fail(ResultCode.INVALID_PARAMETER, f"action {p.action}: 0 (address 0) or 1 (address 250)")
    everything = p.device_handle == devices.ALL_DEVICES
    if everything and ctx.key is Key.MBK:
        _fail(ResultCode.NO_AUTHORIZATION, "the MBK may remove a MEP client only, not all devices")
    if everything:
        slots = [slot for slot, device in enumerate(devices.devices(meter)) if device]
    else:
        slot = devices.slot_of(meter, p.device_handle)
        if slot is None:
            _fail(ResultCode.CONFLICT_WITH_SETUP,
                  f"handle {p.device_handle} matches no installed device (ET14)")
        if ctx.key is Key.MBK and devices.slot_channel(meter, slot) is None:
            _fail(ResultCode.NO_AUTHORIZATION, "the MBK may remove a MEP client only")
        slots = [slot]
    for slot in slots:
        devices.remove(meter, slot, ctx.now, ctx.user_id)
        channel = devices.slot_channel(meter, slot)
        if channel is not None:
            clients.clear_registration(meter, channel, ctx.now)
    return Result(ResultCode.COMPLETED)


declare(
    ep(17), "Remove MEP Device",
    execute=_ACTIONS | _MEP_CLIENTS,
    params=_REMOVE,
    run=_remove_device,
    results={2: "invalid Action (0 or 1)",
             3: "the handle matches no installed device",
             5: "the MBK may remove a MEP client only"},
    provenance=documented(
        "MEP p.243-244 (Action UINT8 @3, Device Handle UINT16 @4, 0xFFFF = all; errors; keys "
        "MAK, MBK, and the head-end removes devices too, p.36); example frame p.53"
    ),
)

# ---------------------------------------------------------------------------------------
# EP18 Clear MEP Alarms

_CLEAR_ALARMS = Struct("device_handle" / UINT16)


def _clear_mep_alarms(meter, p, ctx) -> Result:
    """Clears the latched ET14 "MEP Alarms" and "MEP Device Alarms" bits (MEP p.87-89: latched
    "until cleared via EP18") of the device with the handle, or of every device (0xFFFF);
    BT03 "M-Bus Alarm" clears once no device has a latched bit left."""
    devices, _ = _tables()
    if p.device_handle == devices.ALL_DEVICES:
        slots = range(len(devices.devices(meter)))
    else:
        slot = devices.slot_of(meter, p.device_handle)
        if slot is None:
            _fail(ResultCode.CONFLICT_WITH_SETUP,
                  f"handle {p.device_handle} matches no installed device (ET14)")
        slots = [slot]
    devices.clear_alarms(meter, slots)
    return Result(ResultCode.COMPLETED)


declare(
    ep(18), "Clear MEP Alarms",
    execute=_ACTIONS,
    params=_CLEAR_ALARMS,
    run=_clear_mep_alarms,
    results={3: "the handle matches no installed device"},
    provenance=designed(
        "name ECH p.46, effect MEP p.87-89 (ET14 bits latched until EP18); no public layout: "
        "one Device Handle UINT16 with 0xFFFF = all devices, as EP17's"
    ),
)

# ---------------------------------------------------------------------------------------
# EP19 Post On-demand M-Bus Request (MEP p.244-246; ET15 p.89-92)

_ON_DEMAND = Struct(
    "transaction_number" / UINT16,
    "device" / UINT16,  # handle, group mask (type 6) or device index bitmask (type 10)
    "request_type" / UINT8,
    "request_data" / GreedyBytes,  # types 4, 6, 10: length + data; type 9 with AES: image
)
_ENTRY_INDEX = Struct("entry_index" / UINT8)

REQUEST_TYPES = {1: "M-Bus application reset", 2: "billing read", 3: "status read",
                 4: "write user data", 5: "time sync", 6: "multicast",
                 9: "MEP download switchover", 10: "write user data by index"}
_WRITE, _MULTICAST, _SWITCHOVER, _WRITE_BY_INDEX = 4, 6, 9, 10
_NOT_FOR_MEP = {1, 3, 5, _MULTICAST}  # ET15: "not applicable to MEP (clients)", MEP p.90-91
_MEP_ONLY = {_SWITCHOVER}
_AES_PSK = 2  # ET04.127 Security Mode: OSGP-AES-128-PSK
_SWITCHOVER_IMAGE = 20  # Image Length UINT32 + Image MAC[16]


def _targets(meter, devices, device: int, kind: int) -> tuple[list[int], int]:
    """The slots a request addresses, and the handle or group mask ET15 records for it."""
    installed = {slot: d for slot, d in enumerate(devices.devices(meter)) if d}
    if kind == _MULTICAST:  # 0xFFFF: every M-Bus device, else an ET34 group mask
        from ..tables import CATALOG, et

        config = CATALOG[et(34)].layout_for(meter).parse(meter.table_bytes(et(34), 0.0))
        mbus = [slot for slot in installed if devices.slot_channel(meter, slot) is None]
        if device == devices.ALL_DEVICES:
            return mbus, device
        return [slot for slot in mbus if config.devices[slot].group_mask & device], device
    if kind == _WRITE_BY_INDEX:  # the least significant index set receives it (MEP p.245)
        slot = (device & -device).bit_length() - 1
        if slot in installed:
            return [slot], installed[slot]["handle"]
        return [], device
    slot = devices.slot_of(meter, device)
    return ([] if slot is None else [slot]), device


def _request_data(meter, kind: int, data: bytes) -> tuple[bytes, bytes | None]:
    """The write message and multicast message a request carries (MEP p.245)."""
    d = _dimensions(meter)
    if kind in (_WRITE, _MULTICAST, _WRITE_BY_INDEX):
        if not data:
            _fail(ResultCode.INVALID_PARAMETER, f"request type {kind} needs Write Data Length")
        length, body = data[0], data[1:]
        limit = (d.mbus_multicast_length if kind == _MULTICAST
                 else d.on_demand_write_entry_size) - 1
        if length > limit:
            _fail(ResultCode.INVALID_PARAMETER, f"write data length {length} above {limit}")
        if len(body) < length:
            _fail(ResultCode.INVALID_PARAMETER,
                  f"write data length {length}, but {len(body)} bytes follow")
        return (b"", body[:length]) if kind == _MULTICAST else (body[:length], None)
    if kind == _SWITCHOVER and meter.system_info().security_mode == _AES_PSK:
        if len(data) < _SWITCHOVER_IMAGE:
            _fail(ResultCode.INVALID_PARAMETER,
                  "with OSGP-AES-128-PSK a switchover carries Image Length and Image MAC")
        return data[:_SWITCHOVER_IMAGE], None  # kept as the entry's write message
    return b"", None


def _post_on_demand(meter, p, ctx) -> Result:
    """Posts the request at ET15's write pointer (transaction number, handle or group mask,
    request type, result 0 "not yet completed"; write data in the entry's write message,
    multicast data in ET15's multicast area) and answers the entry index. Each addressed
    device's ET14 "Read Attempts" counts it ("Last Read Attempt" for billing reads); a request
    to a MEP client raises its ET13 "On-demand Request in ET15" alert until it answers with
    EP39 or ET51's on-demand time-out ends the entry as "no response". Type 10 is recorded as a
    write (type 4) to the device it resolves to: ET15 has no type 10 (MEP p.90-91)."""
    devices, _ = _tables()
    kind = p.request_type
    if kind not in REQUEST_TYPES:
        _fail(ResultCode.INVALID_PARAMETER, f"request type {kind} is not one of "
                                            f"{sorted(REQUEST_TYPES)}")
    slots, recorded = _targets(meter, devices, p.device, kind)
    if not slots:
        _fail(ResultCode.CONFLICT_WITH_SETUP,
              f"0x{p.device:04X} matches no installed device for a {REQUEST_TYPES[kind]}")
    mep = [slot for slot in slots if devices.slot_channel(meter, slot) is not None]
    if kind in _NOT_FOR_MEP and mep:
        _fail(ResultCode.INVALID_PARAMETER, f"a {REQUEST_TYPES[kind]} does not apply to a MEP "
                                            "client")
    if kind in _MEP_ONLY and len(mep) != len(slots):
        _fail(ResultCode.INVALID_PARAMETER, f"a {REQUEST_TYPES[kind]} applies to MEP clients "
                                            "only")
    message, multicast = _request_data(meter, kind, p.request_data)
    index = devices.post_request(
        meter, ctx.now, transaction_number=p.transaction_number, device_handle=recorded,
        request_type=_WRITE if kind == _WRITE_BY_INDEX else kind, targets=slots,
        message=message, multicast=multicast)
    if index is None:
        _fail(QUEUE_FULL, "the ET15 on-demand request queue is full")
    for slot in slots:
        devices.count_attempt(meter, slot, ctx.now, billing=kind == devices.BILLING_READ)
    return Result(ResultCode.COMPLETED, bytes([index]))


declare(
    ep(19), "Post On-demand M-Bus Request",
    execute=_ACTIONS,
    params=_ON_DEMAND,
    run=_post_on_demand,
    results={2: "invalid request type, or one that does not apply to the device; bad write "
                "data length",
             3: "the handle, group mask or index bitmask matches no installed device",
             QUEUE_FULL: "the on-demand request queue (ET15) is full"},
    response=_ENTRY_INDEX,
    idempotent=False,  # each run queues another request
    provenance=documented(
        "MEP p.244-246 (parameters, type 9 AES fields, Entry index response, errors 2, 3, 7; "
        "MEP clients: MAK; transaction number ranges for optical, MEP and Control Node "
        "callers); ET15 p.89-92"
    ),
)

# ---------------------------------------------------------------------------------------
# EP24 Post One-time-read Request

_ONE_TIME_READ = Struct("request_type" / UINT8, "request_number" / UINT16,
                        "device_handle" / UINT16)
METER_OTR, MBUS_OTR = 0, 1


def _post_one_time_read(meter, p, ctx) -> Result:
    """Type 0, meter one-time read: taken at once, BT55's local time and season and the BT23
    registers appended to ET31 (BT03 "Mfg Log Entry Available" raised), the request recorded
    completed in a free ET19 entry with that ET31 sequence number; answers the ET19 index.
    Type 1, M-Bus one-time read of an installed M-Bus device: queued pending in a free ET20
    entry for the M-Bus engine (result 1, "accepted, not completed"); answers the ET20 index.
    Result 7 when every queue entry still waits."""
    devices, clients = _tables()
    if p.request_type == METER_OTR:
        index = clients.meter_one_time_read(meter, p.request_number, ctx.now, ctx.user_id)
        if index is None:
            _fail(QUEUE_FULL, "every ET19 entry still waits for its read")
        return Result(ResultCode.COMPLETED, bytes([index]))
    if p.request_type != MBUS_OTR:
        _fail(ResultCode.INVALID_PARAMETER, f"request type {p.request_type}: 0 meter, 1 M-Bus")
    slot = devices.slot_of(meter, p.device_handle)
    if slot is None or devices.slot_channel(meter, slot) is not None:
        _fail(ResultCode.CONFLICT_WITH_SETUP,
              f"handle {p.device_handle} is no installed M-Bus device (ET14)")
    index = clients.post_mbus_one_time_read(meter, p.request_number, p.device_handle, ctx.now)
    if index is None:
        _fail(QUEUE_FULL, "every ET20 entry still waits for its read")
    devices.count_attempt(meter, slot, ctx.now, billing=True)
    return Result(ResultCode.NOT_COMPLETED, bytes([index]))


declare(
    ep(24), "Post One-time-read Request",
    execute=_ACTIONS,
    params=_ONE_TIME_READ,
    run=_post_one_time_read,
    results={1: "M-Bus read queued in ET20, not yet taken",
             2: "request type other than 0 (meter) and 1 (M-Bus)",
             3: "the handle is no installed M-Bus device",
             QUEUE_FULL: "every ET19 (or ET20) entry still waits"},
    response=_ENTRY_INDEX,
    idempotent=False,  # each run takes another read
    provenance=designed(
        "name ECH p.46 (meter or M-Bus OTR); no public layout: request type (0 meter, 1 M-Bus), "
        "the head-end's request number and the M-Bus device handle, as ET19/ET20 entries hold "
        "them; response: the queue entry index, as EP19's"
    ),
)

# ---------------------------------------------------------------------------------------
# EP39 Post MEP Data

_POST_DATA = Struct(  # every post carries all four fields (alert-only posts: 0, 0, no data)
    "post" / Bits(1, type=(0, 7), clear_mbus_alert=7),
    "result" / UINT8,  # as ET15's: 1 success, 2 no response, 3 failed
    "length" / UINT16,
    "data" / GreedyBytes,
)
ALERTS_ONLY, ON_DEMAND, ON_DEMAND_ALARMS, SCHEDULED, SCHEDULED_ALARMS = range(5)
CLEAR_DELTA_DATA_ALERT = 12
_DATA_POSTS = {ON_DEMAND, ON_DEMAND_ALARMS, SCHEDULED, SCHEDULED_ALARMS}
_WITH_ALARMS = {ON_DEMAND_ALARMS, SCHEDULED_ALARMS}


def _posted_read(meter, p) -> tuple[int | None, bytes]:
    """The device alarm byte (alarm posts start with it) and the read data of a data post."""
    if p.result not in (1, 2, 3):
        _fail(ResultCode.INVALID_PARAMETER, f"result {p.result}: 1 success, 2 no response, "
                                            "3 failed")
    if len(p.data) < p.length:
        _fail(ResultCode.INVALID_PARAMETER, f"data length {p.length}, {len(p.data)} bytes follow")
    data = p.data[:p.length]
    alarms = None
    if p.post["type"] in _WITH_ALARMS:
        if not data:
            _fail(ResultCode.INVALID_PARAMETER, "an alarms post starts with the device alarms")
        alarms, data = data[0], data[1:]
    room = _dimensions(meter).data_entry_size - _tables()[0].MEP_READ_HEADER  # ET16's data
    if len(data) > room:
        _fail(ResultCode.INVALID_PARAMETER, f"{len(data)} bytes of data; a read holds {room}")
    return alarms, data


def _post_mep_data(meter, p, ctx) -> Result:
    """A registered MEP client posts data. Types 1/2 answer the oldest ET15 request, which
    must be this client's: its result is set and, for a billing read or any data, the read
    goes to ET16. Types 3/4 answer a scheduled read: to ET16 for the first read after
    registration or while ET45 has no entries (ET36, default 0), else to ET45; ET13's
    "Scheduled Read Request" alert clears. Types 2/4 start with the device alarm byte: latched
    in ET14 "MEP Device Alarms" ("New Device Alarm" for new bits, raising BT03 "M-Bus Alarm"),
    with event 99 for bits ET13's Device Alarm Bitmask calls urgent. Type 12 clears ET13's
    "Delta Data Alert"; bit 7 of the type clears "M-Bus Change" (type 0: only that)."""
    devices, clients = _tables()
    kind, now = p.post["type"], ctx.now
    if kind not in _DATA_POSTS | {ALERTS_ONLY, CLEAR_DELTA_DATA_ALERT}:
        _fail(ResultCode.INVALID_PARAMETER, f"post type {kind} is not 0-4 or 12")
    if kind == ALERTS_ONLY and not p.post["clear_mbus_alert"]:
        _fail(ResultCode.INVALID_PARAMETER, "post type 0 needs the Clear M-Bus Alert flag")
    channel = clients.mep_channel(ctx)
    if channel is None:
        _fail(ResultCode.CONFLICT_WITH_SETUP, "not called by a MEP client: no channel to post for")
    if channel > _dimensions(meter).mep_channels:
        _fail(ResultCode.CONFLICT_WITH_SETUP, f"this meter has no MEP client {channel}")
    slot = devices.mep_slot(meter, channel)
    if not clients.is_registered(meter, channel, now) or devices.devices(meter)[slot] is None:
        _fail(ResultCode.CONFLICT_WITH_SETUP, f"MEP client {channel} is not registered (ET50, "
                                              "ET14)")
    alarms, data = _posted_read(meter, p) if kind in _DATA_POSTS else (None, b"")
    success = p.result == devices.SUCCESS
    if kind in (ON_DEMAND, ON_DEMAND_ALARMS):
        oldest = devices.oldest_request(meter, now)
        if oldest is None or slot not in oldest[1]["targets"]:
            _fail(ResultCode.CONFLICT_WITH_SETUP, "the oldest waiting ET15 request is not this "
                                                  "client's")
        index, request = oldest
        if success and (data or request["request_type"] == devices.BILLING_READ):
            devices.record_read(meter, slot, data, now, to_et16=True)
        devices.complete_request(meter, index, p.result, now)
    elif kind in (SCHEDULED, SCHEDULED_ALARMS):
        if success:
            to_et45 = (not devices.first_read_pending(meter, slot)
                       and devices.RECURRING_READ_LOGS.entries > 0)
            devices.record_read(meter, slot, data, now, to_et16=not to_et45)
            if to_et45:
                devices.log_recurring_read(meter, slot, data, now, ctx.user_id)
            else:  # "Billing Data Collected" pertains to ET16 only (MEP p.87)
                devices.latch_alarms(meter, slot, now, "billing_data_collected",
                                     user_id=ctx.user_id)
        devices.set_alert_flags(meter, channel, now, scheduled_read_request=0)
    if alarms is not None:
        _device_alarms(meter, devices, slot, channel, alarms, ctx)
    cleared = {}
    if p.post["clear_mbus_alert"]:
        cleared["mbus_change"] = 0
    if kind == CLEAR_DELTA_DATA_ALERT:
        cleared["delta_data_alert"] = 0
    if cleared:
        devices.set_alert_flags(meter, channel, now, **cleared)
    return Result(ResultCode.COMPLETED)


def _device_alarms(meter, devices, slot: int, channel: int, alarms: int, ctx) -> None:
    from ..tables import CATALOG, et

    devices.record_status(meter, slot, alarms, ctx.now, ctx.user_id)
    config = CATALOG[et(13)].layout_for(meter).parse(meter.table_bytes(et(13), ctx.now))
    if alarms & config.mep_clients[channel - 1].device_alarm_bitmask:
        handle = devices.devices(meter)[slot]["handle"]
        meter.log_event(MBUS_ALARM_MATCH.number, handle, ctx.now, ctx.user_id)


declare(
    ep(39), "Post MEP Data",
    execute=_MEP_CLIENTS | {Key.MK},  # MK: all procedures (OPG p.13); it has no MEP channel
    params=_POST_DATA,
    run=_post_mep_data,
    results={2: "unknown post type, result or data length",
             3: "the MEP client is not registered, or the oldest ET15 request is not its"},
    provenance=designed(
        "name and keys MEP p.13 (MBK and MAK); Type, Result (1 success), Data Length UINT16 "
        "LSB, Data from DAB's real call (type 4 scheduled read data + alarms); type 12 clear "
        "delta data alert MEP p.35, the Clear M-Bus Alert flag p.18, on-demand to ET16 and "
        "scheduled to ET45 p.89-92, p.119; types 1-3, the flag as bit 7 and the alarm byte "
        "leading alarm posts are ours"
    ),
)

# ---------------------------------------------------------------------------------------
# EP50: measurements a host pushes into a CPM module

_MEASUREMENTS = Struct("measurements" / GreedyBytes)


def _external_measurements(meter, p, ctx) -> Result:
    """Refused, result 3, nothing changes. EP50 is how a host passes power, energy, current and
    voltage values to a CPM 0600/6010 module, which has no metering circuit (MEP p.207, p.215),
    or disconnect feedback to a device built with ET29 "External Disconnect Feedback" (MEP
    p.101). This device is a meter: ET29 "No Metering", "External Voltage" and "External
    Disconnect Feedback" are clear, and its quantities come from its own metering engine (the
    MQTT injection), so a pushed measurement conflicts with its setup."""
    from ..tables import CATALOG, et

    hardware = CATALOG[et(29)].layout_for(meter).parse(meter.table_bytes(et(29), ctx.now))
    options = hardware.hardware_options
    bits = ", ".join(f"{name} = {options[name]}" for name in
                     ("no_metering", "external_voltage", "external_disconnect_feedback"))
    _fail(ResultCode.CONFLICT_WITH_SETUP, f"this device meters for itself (ET29 {bits}); "
                                          "EP50 feeds measurements to a CPM module only")


declare(
    ep(50), "Post External Measurements",
    execute=_ACTIONS,
    params=_MEASUREMENTS,
    run=_external_measurements,
    results={3: "this device meters for itself; only a CPM module takes pushed measurements"},
    provenance=designed(
        "the guides name EP50 only as the way measurements reach a CPM module (MEP p.207, "
        "p.215) and ET29's external disconnect feedback (p.101); name and layout are ours, and "
        "a metering OSGP meter refuses it"
    ),
)

# ---------------------------------------------------------------------------------------
# EP61 MEP Transaction Lock Control (MEP p.247; locking p.25)

_LOCK = Struct("lock" / UINT8)


def _lock_transactions(meter, p, ctx) -> Result:
    """Lock (1) or unlock (0) the MEP transaction tables ET52/ET53 for the calling MEP client:
    while locked, the other client's ET52 writes are refused, and ET54 "MEP TX Locked"/"Lock
    Channel" name the holder. A lock not released ends after 10 s (MEP p.25). Result 3 while the
    other client holds the lock, and on a meter with one MEP port (firmware before 4.0, where
    the tables are not shared); result 5 for anyone but a MEP client (MEP p.247)."""
    _, clients = _tables()
    if p.lock not in (0, 1):
        _fail(ResultCode.INVALID_PARAMETER, f"lock {p.lock}: 0 unlock, 1 lock")
    if _dimensions(meter).mep_channels < 2:
        _fail(ResultCode.CONFLICT_WITH_SETUP, "one MEP port: the transaction tables are not "
                                              "shared (EP61 needs firmware 4.0+)")
    channel = clients.mep_channel(ctx)
    if not clients.lock_transactions(meter, channel, bool(p.lock), ctx.now):
        holder = clients.transaction_lock(meter, ctx.now)
        _fail(ResultCode.CONFLICT_WITH_SETUP, f"MEP client {holder} holds the lock")
    return Result(ResultCode.COMPLETED)


declare(
    ep(61), "MEP Transaction Lock Control",
    execute=_MEP_CLIENTS,
    params=_LOCK,
    run=_lock_transactions,
    results={3: "the other MEP client holds the lock, or the meter has one MEP port",
             5: "not called by a MEP client"},
    provenance=documented("MEP p.247 (Lock UINT8 @3; T08_CONFLICT 3, T08_NO_AUTH 5; MBK, MAK); "
                          "10 s automatic unlock p.25; ET54 p.138"),
)
