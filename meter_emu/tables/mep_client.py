"""MEP client tables: one-time-read queues and logs (ET19, ET20, ET31, ET32), the MEP client's
inbound data space and configuration (ET50, ET51), the transaction tables (ET52/ET53 for the MEP
client, ET27/ET28 for the power line) and the MEP procedure responses (ET59, ET85).

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers (the MEP guide's table of contents is two pages short
of its page footers: ET50 is listed at p.122 and printed on p.124).

What the meter itself writes here is kept by functions below: meter one-time reads (EP24) land in
ET19 and ET31, M-Bus ones are queued in ET20; EP17 clears a MEP client's ET50 registration; EP61's
transaction lock guards ET52. Transactions (ET52/ET53, ET27/ET28) run in
device/transactions.py; procedure responses are routed to BT08, ET59 or ET85 here. Setting ET50
"MEP Device Registered" has the MEP server discover the client (tables/mep_devices.py).
"""

from __future__ import annotations

import datetime as dt

from construct import Array, Bytes, Struct

from ..datatypes import NI_FMAT, UINT8, UINT16, Bits, LTimeDate, STimeDate, list_header
from ..device import conditions, transactions
from ..device.access import CONFIGURERS, READERS, Key
from ..events import USER_NONE
from ..provenance import designed, documented
from .basic import _bt08_layout, _bt23_layout
from .catalog import CATALOG, bt, declare, et, refuse
from .dimensions import product_dimensions

#: Keys of the tables the MEP guide does not cover: the optical keys and the head-end's.
_OPTICAL_AND_PLC_READ = frozenset({Key.MK, Key.PK, Key.RK, Key.PLC})
_OPTICAL_AND_PLC_WRITE = frozenset({Key.MK, Key.PK, Key.PLC})
#: What a MEP client may write (MEP access boxes: MBK and MAK), plus the optical configurers.
_MEP_CLIENT_WRITE = CONFIGURERS | {Key.MBK}


def _zeros(layout_for):
    """An all-zero image: an empty queue, a transaction table before its first transaction, a
    procedure response table before its first response."""
    return lambda meter, now=None: bytes(layout_for(meter).sizeof())


# ---------------------------------------------------------------------------------------
# ET19 Meter One-time-read Request Queue, ET20 M-Bus One-time-read Request Queue
#
# Only the dimensions are public (ET11.14-17, OPG p.41): 3 and 4 entries of 17 bytes. The entry
# is ours, modelled on ET15's request entries (MEP p.89-90): the head-end's request number, a
# status, when to read; the meter stamps completion (and for ET19 the ET31 entry it made). ET51.3
# expires an active ET20 entry as "No Response" (MEP p.128), hence the status values.

OTR_EMPTY, OTR_PENDING, OTR_ACTIVE, OTR_COMPLETED, OTR_NO_RESPONSE = range(5)
#: Statuses a head-end may write: queue a read, or cancel one. The others are the meter's.
_OTR_CLIENT_STATUSES = (OTR_EMPTY, OTR_PENDING)

_METER_OTR_ENTRY = Struct(
    "request_number" / UINT16,
    "status" / UINT8,
    "read_time" / LTimeDate(),  # None: as soon as possible
    "completion_time" / LTimeDate(),
    "log_sequence_number" / UINT16,  # ET31 "last entry sequence number" of the captured read
)
_MBUS_OTR_ENTRY = Struct(
    "request_number" / UINT16,
    "device_handle" / UINT16,
    "status" / UINT8,
    "read_time" / LTimeDate(),
    "completion_time" / LTimeDate(),
)
_METER_OTR_RESULTS = {"completion_time": None, "log_sequence_number": 0}
_MBUS_OTR_RESULTS = {"completion_time": None}


def _et19_layout(meter):
    d = product_dimensions(meter)
    return Struct("entries" / Array(d.meter_otr_queue_size, _METER_OTR_ENTRY))


def _et20_layout(meter):
    d = product_dimensions(meter)
    return Struct("entries" / Array(d.mbus_otr_queue_size, _MBUS_OTR_ENTRY))


def _otr_queue_apply(table_id: int, layout_for, results: dict):
    """A head-end queues or cancels reads; statuses past 'pending' and the result fields are the
    meter's, so they are kept (and cleared when the head-end reuses the entry)."""

    def apply(meter, values, ctx):
        current = layout_for(meter).parse(meter.table_bytes(table_id, ctx.now))
        for index, (entry, old) in enumerate(zip(values.entries, current.entries)):
            reused = entry.status != old.status
            if reused and entry.status not in _OTR_CLIENT_STATUSES:
                refuse(table_id, f"entry {index}: status {entry.status} is set by the meter")
            for name, blank in results.items():
                entry[name] = blank if reused else old[name]
        return values

    return apply


declare(
    et(19), "Meter One-time-read Request Queue",
    read=_OPTICAL_AND_PLC_READ,
    write=_OPTICAL_AND_PLC_WRITE,
    layout=_et19_layout,
    defaults=_zeros(_et19_layout),
    apply=_otr_queue_apply(et(19), _et19_layout, _METER_OTR_RESULTS),
    provenance=designed(
        "no public layout: ET11.14/ET11.16 (OPG p.41) fix 3 entries of 17 bytes; the entry "
        "(request number, status, read time, completion time, ET31 sequence) follows ET15's"
    ),
)

declare(
    et(20), "M-Bus One-time-read Request Queue",
    read=_OPTICAL_AND_PLC_READ,
    write=_OPTICAL_AND_PLC_WRITE,
    layout=_et20_layout,
    defaults=_zeros(_et20_layout),
    apply=_otr_queue_apply(et(20), _et20_layout, _MBUS_OTR_RESULTS),
    provenance=designed(
        "no public layout: ET11.15/ET11.17 (OPG p.41) fix 4 entries of 17 bytes; the entry "
        "(request number, device handle, status, read time, completion time) follows ET15's"
    ),
)

# ---------------------------------------------------------------------------------------
# ET31 Meter One-time-read Log, ET32 M-Bus One-time-read Log
#
# Both are ET36-managed logs (MEP p.107-109): the standard 6-byte log header, then "Current
# Entries" entries. The ET31 page sizes its array by BT21.2 (a copy of BT26's text: BT21.2 counts
# self-reads); ET36 gives ET31 its own count, 2 by default, which is what is used here.

#: ET36 "Current Entries" defaults (MEP p.109); EP37 resizes them on a real meter.
METER_OTR_LOG_ENTRIES = 2
MBUS_OTR_LOG_ENTRIES = 8


def _et31_entry(meter):
    """No BIDN before each entry: it is there only when BT21.4 (demands) is non-zero, and this
    meter configures no demands."""
    return Struct("time" / STimeDate(), "season" / UINT8, "register_data" / _bt23_layout(meter))


def _et31_layout(meter):
    return Struct(*list_header(), "entries" / Array(METER_OTR_LOG_ENTRIES, _et31_entry(meter)))


def _et31_render(meter, now):
    """The one-time reads taken so far (``meter_one_time_read`` below), the oldest overwritten
    first; an empty circular queue until the first. An entry taken while BT21 had other
    dimensions no longer fits the layout and reads as empty."""
    state = meter.state.subsystems.get(OTR_SUBSYSTEM)
    if not state or not state["log"]:
        return _empty_log(_et31_layout)(meter, now)
    entry = _et31_entry(meter)
    size = METER_OTR_LOG_ENTRIES
    images = [bytes(entry.sizeof())] * size
    kept = [record for record in state["log"][-size:]
            if len(record["entry"]) == 2 * entry.sizeof()]
    for record in kept:
        images[(record["sequence"] - 1) % size] = bytes.fromhex(record["entry"])
    last = state["log"][-1]["sequence"]
    return dict(flags=dict(list_type=1, overflow=int(state["overflow"])),
                valid_entries=len(kept), last_entry_element=(last - 1) % size,
                last_entry_sequence_number=last & 0xFFFF,
                unread_entries=min(state["unread"], size),
                entries=[entry.parse(image) for image in images])


def _et32_layout(meter):
    """ET36 gives ET32 the entry size of ET45 (525 bytes = 8 + ET11.5), so ET32 uses ET45's
    entry: a length, then an ET16 billing read (MBR) of the device."""
    entry = Struct(
        "length" / UINT16,
        "identification" / Bits(2, identifier=(0, 11), namespace=(11, 5)),
        "handle" / UINT16,
        "execution_status" / UINT8,
        "result" / UINT8,
        "data" / Bytes(product_dimensions(meter).data_entry_size),
    )
    return Struct(*list_header(), "entries" / Array(MBUS_OTR_LOG_ENTRIES, entry))


def _empty_log(layout_for):
    """A log with no entry yet: everything zero but the 'circular queue' flag (list type)."""

    def render(meter, now):
        layout = layout_for(meter)
        values = layout.parse(bytes(layout.sizeof()))
        values.flags["list_type"] = 1
        return values

    return render


declare(
    et(31), "Meter One-time-read Log",
    read=READERS,
    layout=_et31_layout,
    render=_et31_render,
    provenance=documented(
        "MEP p.104-105 (entry: STIME_DATE, season, BT23 record); entries: ET36 Current Entries "
        "default 2, MEP p.109; read access OPG p.61"
    ),
)

declare(
    et(32), "M-Bus One-time-read Log",
    read=_OPTICAL_AND_PLC_READ,
    layout=_et32_layout,
    render=_empty_log(_et32_layout),  # the M-Bus engine will add the reads ET20 asks for
    provenance=designed(
        "no public layout: ET36 (MEP p.107-109) gives ET32 8 entries of ET45's 525-byte entry, so "
        "ET45's log layout (MEP p.119-121) is used"
    ),
)

# ---- one-time reads: EP24 (and the metering engine, for reads ET19 queues) take them here --

OTR_SUBSYSTEM = "one_time_reads"


def _otr_log(meter) -> dict:
    own = meter.subsystem(OTR_SUBSYSTEM, log=[], sequence=0, unread=0, overflow=False)
    meter.dirty = True
    return own


def _free_entry(entries) -> int | None:
    """An empty queue entry, else the one finished longest ago; None while all still wait."""
    for index, entry in enumerate(entries):
        if entry.status == OTR_EMPTY:
            return index
    finished = [(entry.completion_time or dt.datetime.min, index)
                for index, entry in enumerate(entries)
                if entry.status in (OTR_COMPLETED, OTR_NO_RESPONSE)]
    return min(finished)[1] if finished else None


def capture_one_time_read(meter, now: float, user_id: int = USER_NONE) -> int:
    """Append the registers as they are now to ET31: BT55's local time (STIME_DATE), BT55's
    season and the BT23 image (MEP p.104-105). ET31 is an ET36 log, so BT03 "Mfg Log Entry
    Available" is raised (MEP p.107). Returns the entry's sequence number."""
    bt55 = CATALOG[bt(55)].layout_for(meter).parse(meter.table_bytes(bt(55), now))
    image = (STimeDate().build(bt55.time) + bytes([bt55.status["season"]])
             + meter.table_bytes(bt(23), now))
    log = _otr_log(meter)
    log["sequence"] += 1
    if log["unread"] >= METER_OTR_LOG_ENTRIES:
        log["overflow"] = True  # an unread read is overwritten
    log["unread"] = min(log["unread"] + 1, METER_OTR_LOG_ENTRIES)
    log["log"].append(dict(sequence=log["sequence"], entry=image.hex()))
    del log["log"][:-METER_OTR_LOG_ENTRIES]
    conditions.begin(meter, "mfg_log_entry_available", now, et(31), user_id)
    return log["sequence"]


def meter_one_time_read(meter, request_number: int, now: float,
                        user_id: int = USER_NONE) -> int | None:
    """A meter one-time read taken at once: a free ET19 entry records the request as completed
    with the ET31 sequence number of the read. Returns the ET19 index, None if ET19 is full
    (every entry still waiting)."""
    layout = _et19_layout(meter)
    values = layout.parse(meter.table_bytes(et(19), now))
    index = _free_entry(values.entries)
    if index is None:
        return None
    sequence = capture_one_time_read(meter, now, user_id)
    values.entries[index] = dict(request_number=request_number, status=OTR_COMPLETED,
                                 read_time=None, completion_time=meter.local(now),
                                 log_sequence_number=sequence & 0xFFFF)
    meter.state.tables[et(19)] = layout.build(values)
    return index


def post_mbus_one_time_read(meter, request_number: int, handle: int,
                            now: float) -> int | None:
    """Queue an M-Bus one-time read in ET20 as pending, for the M-Bus engine to read the
    device (into ET32). Returns the ET20 index, None if ET20 is full."""
    layout = _et20_layout(meter)
    values = layout.parse(meter.table_bytes(et(20), now))
    index = _free_entry(values.entries)
    if index is None:
        return None
    values.entries[index] = dict(request_number=request_number, device_handle=handle,
                                 status=OTR_PENDING, read_time=None, completion_time=None)
    meter.state.tables[et(20)] = layout.build(values)
    meter.dirty = True
    return index


# ---------------------------------------------------------------------------------------
# ET50 MEP Inbound Data Space: one record per MEP channel (ET11.34)

MEP_ID_LENGTH = 30
_ICON_BITS = 9  # icon display control: Euro 1 ... negative 256, ORed together
_ICON_STATES = (0, 1, 2)  # MEP icon display: off, on, flashing


def _et50_layout(meter):
    d = product_dimensions(meter)
    client = Struct(
        "identification" / Bytes(MEP_ID_LENGTH),
        "flags" / Bits(1, mep_device_registered=0, et59_response=1, mbus_alerts=2,
                       delta_data_alerts=3, reserved=(4, 4)),
        "icon_display_control" / Array(d.mep_data_sources, UINT16),
        "source_data" / Array(d.mep_data_sources, NI_FMAT),
        "mep_icons" / Bits(2, house_icon=(0, 4), short_bar=(4, 4), medium_bar=(8, 4),
                           long_bar=(12, 4)),
        "reserved" / UINT16,
    )
    return Struct("clients" / Array(d.mep_channels, client))


def check_mep_identification(ident: bytes) -> str | None:
    """Why a MEP identification string breaks the OSGP Alliance format (MEP p.126-127), or None.

    Bit 7 of byte 0 announces the format: manufacturer ID (3), class (1), program ID length N and
    N bytes, unique ID length M and M bytes, then zero spares up to byte 29. Without that bit the
    string is free-form, as before the format existed."""
    if not ident[0] & 0x80:
        return None
    unique_id_at = 5 + ident[4]
    if unique_id_at >= MEP_ID_LENGTH:
        return f"program ID length {ident[4]} leaves no room for the unique ID"
    end = unique_id_at + 1 + ident[unique_id_at]
    if end > MEP_ID_LENGTH:
        return f"program ID ({ident[4]}) and unique ID ({ident[unique_id_at]}) exceed 30 bytes"
    if any(ident[end:]):
        return "spare bytes after the unique ID must be 0"
    return None


def _et50_apply(meter, values, ctx):
    """The ET59 flag routes procedure responses (``procedure_response_table``); "MEP Device
    Registered" makes the MEP server discover the client (mep_devices.request_discovery, MEP
    p.16-17); the alert flags take effect in the MEP engine."""
    for channel, client in enumerate(values.clients):
        problem = check_mep_identification(client.identification)
        if problem:
            refuse(et(50), f"MEP client {channel + 1} identification: {problem}")
        if client.flags["reserved"]:
            refuse(et(50), f"MEP client {channel + 1}: MEP flags bits 4..7 are reserved")
        if any(icons >> _ICON_BITS for icons in client.icon_display_control):
            refuse(et(50), f"MEP client {channel + 1}: icon display control above 511")
        if any(state not in _ICON_STATES for state in client.mep_icons.values()):
            refuse(et(50), f"MEP client {channel + 1}: MEP icons are 0 off, 1 on, 2 flashing")
    from . import mep_devices  # it builds on this module's tables

    for channel, client in enumerate(values.clients, start=1):
        if client.flags["mep_device_registered"]:
            mep_devices.request_discovery(meter, channel, ctx.now, ctx.user_id)


def mep_channel(ctx) -> int | None:
    """The MEP client (1 or 2) a request came from, or None for the optical port and the power
    line. Designed: the MEP port names the session of MEP client 2 "<meter> mep2" and any other
    "<meter> mep" (client 1); a real meter knows it from the port (ET70.142, MEP p.23)."""
    if ctx.key not in (Key.MAK, Key.MBK):
        return None
    return 2 if str(ctx.port).endswith("mep2") else 1


def _et50(meter, now: float):
    layout = _et50_layout(meter)
    return layout, layout.parse(meter.table_bytes(et(50), now))


def is_registered(meter, channel: int, now: float) -> bool:
    """ET50 "MEP Device Registered" of MEP client ``channel`` (MEP p.124)."""
    return bool(_et50(meter, now)[1].clients[channel - 1].flags["mep_device_registered"])


def clear_registration(meter, channel: int, now: float) -> None:
    """What EP17 does to ET50 (MEP p.243): "MEP Device Registered" and the MEP Icon Display
    Control are cleared, every other field is left as it was."""
    layout, values = _et50(meter, now)
    client = values.clients[channel - 1]
    client.flags["mep_device_registered"] = 0
    client.mep_icons = {}
    meter.state.tables[et(50)] = layout.build(values)
    meter.dirty = True


declare(
    et(50), "MEP Inbound Data Space",
    read=READERS,
    write=_MEP_CLIENT_WRITE,
    layout=_et50_layout,
    defaults=_zeros(_et50_layout),  # no MEP client has registered yet
    apply=_et50_apply,
    provenance=documented("MEP p.124-127 (per MEP channel: 35 + 6 x ET11.22 bytes); OPG p.61"),
)

# ---------------------------------------------------------------------------------------
# ET51 MEP Device Configuration: one record per MEP channel (ET11.34)

#: ET51 defaults (OPG p.14-16, MEP p.127-129).
MEP_HEALTH_TIMEOUT_S = 60
ON_DEMAND_TIMEOUT_S = 30
OPTICAL_SESSION_TIMEOUT_S = 600
OPTICAL_SESSION_HOLD_OFF_S = 300
MEP_DOWN_RESET_DURATION_S = 1

_ET51_CLIENT = Struct(
    "flags" / Bits(1, enable_optical_dos_timer=0, monitor_mep_health=1, reset_device_down_mep=2,
                   reset_mep_now=3, unused=(4, 3), disable_mep=7),
    "mep_health_timeout" / UINT16,
    "on_demand_timeout" / UINT8,  # also expires active ET20 entries
    "optical_session_timeout" / UINT16,
    "optical_session_hold_off" / UINT16,
    "mep_down_reset_duration" / UINT8,  # firmware 3.40+ acts on it
    "han" / Bits(1, deactivate_han=0, unused=(1, 7)),  # firmware 3.70+ (4.0+: ET55)
)


def _et51_layout(meter):
    return Struct("clients" / Array(product_dimensions(meter).mep_channels, _ET51_CLIENT))


def _et51_defaults(meter):
    client = dict(
        flags=dict(enable_optical_dos_timer=1),
        mep_health_timeout=MEP_HEALTH_TIMEOUT_S,
        on_demand_timeout=ON_DEMAND_TIMEOUT_S,
        optical_session_timeout=OPTICAL_SESSION_TIMEOUT_S,
        optical_session_hold_off=OPTICAL_SESSION_HOLD_OFF_S,
        mep_down_reset_duration=MEP_DOWN_RESET_DURATION_S,
        han=dict(deactivate_han=0),
    )
    return dict(clients=[client] * product_dimensions(meter).mep_channels)


def _et51_apply(meter, values, ctx):
    """'Reset MEP Now' toggles the MEP reset line and clears itself; an emulated MEP client has no
    reset line, so the flag is cleared at once."""
    for channel, client in enumerate(values.clients):
        if client.flags["unused"] or client.han["unused"]:
            refuse(et(51), f"MEP client {channel + 1}: unused flag bits must be 0")
        client.flags["reset_mep_now"] = 0
    return values


declare(
    et(51), "MEP Device Configuration",
    read={Key.MK, Key.PK, Key.MAK, Key.MBK, Key.PLC},
    write={Key.MK, Key.PK, Key.MAK, Key.MBK, Key.PLC},
    layout=_et51_layout,
    defaults=_et51_defaults,
    apply=_et51_apply,
    provenance=documented("OPG p.14-16, MEP p.127-129 (10 bytes per MEP channel)"),
)

# ---------------------------------------------------------------------------------------
# Transaction tables: ET52 request / ET53 response (MEP client), ET27 / ET28 (power line)
#
# Size, type and number lead; the records (and, for type 3, the group IDs before them) and the
# closing copy of the transaction number fill the rest (MEP p.43-45, p.130-132). The transaction
# engine (device/transactions.py) runs a request once its closing number matches the leading one
# and writes the response table.
#
# ET27/ET28 are designed. The MEP guide says the meter keeps a distinct request/response pair for
# the Control Node (the power line) besides ET52/ET53 (MEP p.50) and names ET28 as where a partial
# response lands (MEP p.131); ET27 is the request half by numbering. They take ET52/ET53's layout
# and lengths (ET11.7/ET11.9), not the RAM-only lengths ET11.28/ET11.30: those exist only from
# firmware 3.50, and interrupted transactions re-run after a power cycle (MEP p.43, p.50), which a
# RAM-only table could not do.

TRANSACTION_HEADER_SIZE = 5  # size, type, number
TRANSACTION_TRAILER_SIZE = 2  # the closing transaction number
REQUESTS, RESPONSES, PARTIAL_RESPONSES, GROUP_REQUEST, GROUP_REQUEST_DENIED = range(5)


def _transaction_layout(length: int):
    return Struct(
        "transaction_size" / UINT16,
        "transaction_type" / UINT8,
        "transaction_number" / UINT16,
        "body" / Bytes(length - TRANSACTION_HEADER_SIZE),
    )


def _request_layout(meter):
    return _transaction_layout(product_dimensions(meter).transaction_request_length)


def _response_layout(meter):
    return _transaction_layout(product_dimensions(meter).transaction_response_length)


def _request_apply(table_id: int):
    """A request table holds requests (type 0 or 3) of at most the table's length; size 0 means
    nothing was written yet. Writes come in consecutive pieces, so the body is not checked."""

    def apply(meter, values, ctx):
        channel, holder = mep_channel(ctx), transaction_lock(meter, ctx.now)
        if table_id == et(52) and channel is not None and holder not in (0, channel):
            refuse(table_id, f"MEP client {holder} holds the transaction tables (EP61)")
        if values.transaction_type not in (REQUESTS, GROUP_REQUEST):
            refuse(table_id, f"transaction type {values.transaction_type} is not a request")
        length = product_dimensions(meter).transaction_request_length
        smallest = TRANSACTION_HEADER_SIZE + TRANSACTION_TRAILER_SIZE
        if values.transaction_size and not smallest <= values.transaction_size <= length:
            refuse(table_id, f"transaction size {values.transaction_size} outside "
                              f"{smallest}..{length}")
        transactions.request_written(meter, table_id, _request_layout(meter).build(values), ctx)

    return apply


def _response_render(table_id: int):
    """What the last transaction of the paired request table answered (device/transactions.py);
    zeros before the first."""
    return lambda meter, now=None: transactions.response_image(
        meter, table_id, _response_layout(meter).sizeof())


#: EP61 locks ET52/ET53 for one MEP client; a lock not released ends after 10 s (MEP p.25)
TX_LOCK_SUBSYSTEM = "mep_transactions"
TX_LOCK_SECONDS = 10


def transaction_lock(meter, now: float) -> int:
    """The MEP client (1, 2) holding the MEP transaction tables, or 0 (ET54 "MEP TX Lock
    Channel", MEP p.138)."""
    lock = meter.state.subsystems.get(TX_LOCK_SUBSYSTEM)
    if not lock or now >= lock["until"]:
        return 0
    return lock["channel"]


def lock_transactions(meter, channel: int, lock: bool, now: float) -> bool:
    """EP61: lock (for ``TX_LOCK_SECONDS``) or unlock ET52/ET53 for MEP client ``channel``.
    False, and nothing changes, while the other client holds them."""
    if transaction_lock(meter, now) not in (0, channel):
        return False
    own = meter.subsystem(TX_LOCK_SUBSYSTEM, channel=0, until=0.0)
    own["channel"], own["until"] = (channel, now + TX_LOCK_SECONDS) if lock else (0, 0.0)
    meter.dirty = True
    return True


declare(
    et(52), "MEP Transaction Request",
    read=READERS,
    write=_MEP_CLIENT_WRITE,
    layout=_request_layout,
    defaults=_zeros(_request_layout),
    apply=_request_apply(et(52)),
    provenance=documented("MEP p.43-45, p.130-132 (length ET11.7: 768, 896 from firmware 3.50)"),
)

declare(
    et(53), "MEP Transaction Response",
    read=READERS,
    layout=_response_layout,
    render=_response_render(et(53)),
    provenance=documented("MEP p.132 (ET52's layout, length ET11.9 = 1785); OPG p.61"),
)

declare(
    et(27), "PLC Transaction Request",
    read=_OPTICAL_AND_PLC_READ,
    write=_OPTICAL_AND_PLC_WRITE,
    layout=_request_layout,
    defaults=_zeros(_request_layout),
    apply=_request_apply(et(27)),
    provenance=designed(
        "the power line's counterpart of ET52 (MEP p.50: a distinct pair for the Control Node); "
        "ET52's layout and length"
    ),
)

declare(
    et(28), "PLC Transaction Response",
    read=_OPTICAL_AND_PLC_READ,
    layout=_response_layout,
    render=_response_render(et(28)),
    provenance=designed(
        "named as the power line's transaction response table (MEP p.131); ET53's layout and "
        "length"
    ),
)

# ---------------------------------------------------------------------------------------
# ET59 MEP Procedure Response (MEP client 1), ET85 MEP Procedure Response (MEP client 2)
#
# BT08's layout, sized by BT00.10. A BT07 write from MEP client 1 posts its result in ET59 when
# its ET50 "ET59 Response" flag is set, else in BT08; MEP client 2 always in ET85 (MEP p.50,
# p.165-166, p.186); the optical port and the power line use BT08. Both read empty until then.

PROCEDURE_RESPONSES = "mep_procedure_responses"


def procedure_response_table(meter, ctx) -> int:
    """The table a procedure started by this BT07 write answers in: BT08, ET59 or ET85."""
    channel = mep_channel(ctx)
    if channel == 2:
        return et(85)
    if channel == 1 and _et50(meter, ctx.now)[1].clients[0].flags["et59_response"]:
        return et(59)
    return bt(8)


def post_procedure_response(meter, image: bytes, ctx) -> int:
    """Post a procedure's response (number, PSN, result, data) where its client reads it."""
    table = procedure_response_table(meter, ctx)
    if table == bt(8):
        meter.state.procedure_response = image
    else:
        meter.subsystem(PROCEDURE_RESPONSES)[str(table)] = image.hex()
    meter.dirty = True
    return table


def _procedure_response_render(table_id: int):
    def render(meter, now):
        posted = meter.state.subsystems.get(PROCEDURE_RESPONSES, {}).get(str(table_id), "")
        raw = bytes.fromhex(posted).ljust(4 + meter.dims.procedure_response_max, b"\0")
        return _bt08_layout(meter).parse(raw)

    return render


declare(
    et(59), "MEP Procedure Response",
    read=READERS,
    layout=_bt08_layout,
    render=_procedure_response_render(et(59)),
    provenance=documented("MEP p.165-166 (BT08's layout, MEP p.50-51); OPG p.61"),
)

declare(
    et(85), "MEP Procedure Response (MEP2)",
    read=READERS,
    layout=_bt08_layout,
    render=_procedure_response_render(et(85)),
    provenance=documented("MEP p.186 (ET59's layout; firmware 4.0+ fills it); OPG p.62"),
)
