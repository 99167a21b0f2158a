"""MEP client tables: one-time-read queues and logs (ET19, ET20, ET31, ET32), the MEP client's
inbound data space and configuration (ET50, ET51), the transaction tables (ET52/ET53 for the MEP
client, ET27/ET28 for the power line) and the MEP procedure responses (ET59, ET85).

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers (the MEP guide's table of contents is two pages short
of its page footers: ET50 is listed at p.122 and printed on p.124).

What the meter itself writes here (transaction responses, procedure responses, one-time-read
results, MEP registration) belongs to the MEP engine and the metering engine; until they run, those
tables read as on a freshly commissioned meter: empty.
"""

from __future__ import annotations

from construct import Array, Bytes, Struct

from ..datatypes import NI_FMAT, UINT8, UINT16, Bits, LTimeDate, STimeDate, list_header
from ..device.access import CONFIGURERS, READERS, Key
from ..provenance import designed, documented
from .basic import _bt08_layout, _bt23_layout
from .catalog import declare, et, refuse
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


def _et31_layout(meter):
    """No BIDN before each entry: it is there only when BT21.4 (demands) is non-zero, and this
    meter configures no demands."""
    entry = Struct("time" / STimeDate(), "season" / UINT8, "register_data" / _bt23_layout(meter))
    return Struct(*list_header(), "entries" / Array(METER_OTR_LOG_ENTRIES, entry))


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
    render=_empty_log(_et31_layout),  # the metering engine adds the reads ET19 asks for
    provenance=documented(
        "MEP p.104-105 (entry: STIME_DATE, season, BT23 record); entries: ET36 Current Entries "
        "default 2, MEP p.109; read access OPG p.61"
    ),
)

declare(
    et(32), "M-Bus One-time-read Log",
    read=_OPTICAL_AND_PLC_READ,
    layout=_et32_layout,
    render=_empty_log(_et32_layout),  # the M-Bus engine adds the reads ET20 asks for
    provenance=designed(
        "no public layout: ET36 (MEP p.107-109) gives ET32 8 entries of ET45's 525-byte entry, so "
        "ET45's log layout (MEP p.119-121) is used"
    ),
)

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
    """Registration, alert and ET59 flags take effect in the MEP engine (later work)."""
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
# engine (later work) runs a request once its closing number matches the leading one and writes
# the response table.
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
        if values.transaction_type not in (REQUESTS, GROUP_REQUEST):
            refuse(table_id, f"transaction type {values.transaction_type} is not a request")
        length = product_dimensions(meter).transaction_request_length
        smallest = TRANSACTION_HEADER_SIZE + TRANSACTION_TRAILER_SIZE
        if values.transaction_size and not smallest <= values.transaction_size <= length:
            refuse(table_id, f"transaction size {values.transaction_size} outside "
                              f"{smallest}..{length}")

    return apply


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
    render=_zeros(_response_layout),  # the transaction engine writes the responses
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
    render=_zeros(_response_layout),  # the transaction engine writes the responses
    provenance=designed(
        "named as the power line's transaction response table (MEP p.131); ET53's layout and "
        "length"
    ),
)

# ---------------------------------------------------------------------------------------
# ET59 MEP Procedure Response (MEP client 1), ET85 MEP Procedure Response (MEP client 2)
#
# BT08's layout, sized by BT00.10. MEP client 1's procedure results land in ET59 when its ET50
# "ET59 Response" flag is set, MEP client 2's always in ET85 (firmware 4.0+); the MEP port's
# procedure handling (later work) fills them, so both read empty until then.

declare(
    et(59), "MEP Procedure Response",
    read=READERS,
    layout=_bt08_layout,
    render=_zeros(_bt08_layout),
    provenance=documented("MEP p.165-166 (BT08's layout, MEP p.50-51); OPG p.61"),
)

declare(
    et(85), "MEP Procedure Response (MEP2)",
    read=READERS,
    layout=_bt08_layout,
    render=_zeros(_bt08_layout),
    provenance=documented("MEP p.186 (ET59's layout; firmware 4.0+ fills it); OPG p.62"),
)
