"""LN and P2P tables (ET89-ET98): port security status, the LN dimensions, the P2P gateway
module's configuration and status, and the LN meter configuration (FTz messages, MEP ID
comparison, relay modes, TLS requirement per port).

This meter is a PLC meter with no P2P gateway module fitted: the P2P configuration tables keep
what a client writes, the P2P status tables show "no module, not connected".

Every table here exists only from the firmware the guides name; on older firmware (the default
profile is 3.10.21) its layout has no fields at all, as the catalog has no per-firmware table list.

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from construct import Array, Bytes, Struct

from ..datatypes import UINT8, UINT16, UINT32, Bits, BitSet, Chars, LTimeDate
from ..device.access import READERS, Key
from ..provenance import designed, documented
from .catalog import declare, et, refuse
from .dimensions import firmware, firmware_at_least

#: Optical keys that read every table of this group (OPG p.62-63), plus the head-end's key.
OPTICAL_READERS = {Key.MK, Key.PK, Key.RK, Key.PLC}
#: Keys that change P2P connection settings over the optical port or the power line.
P2P_CONFIGURERS = {Key.MK, Key.PK, Key.PLC}

NO_FIELDS = Struct()


def has_ftz(meter) -> bool:
    """FTz messages (ET90.16, ET97) exist on firmware 3.82-3.99 and 4.02+ (MEP p.191-192)."""
    major_minor = firmware(meter)
    return (3, 82) <= major_minor < (4, 0) or major_minor >= (4, 2)


def has_p2p(meter) -> bool:
    """The P2P fields of ET90 and the tables they size (ET92-ET96) start with firmware 4.10
    (MEP p.190)."""
    return firmware_at_least(meter, "4.10")


# ---------------------------------------------------------------------------------------
# ET90 Dimension LN


@dataclass(frozen=True)
class LnDimensions:
    """ET90's values (VCI "P", MEP p.190-191): the sizes of ET89 and ET92-ET98."""

    ip_address_length: int = 50  # ET90.0, address fields of ET92-ET96
    urgent_alarm_bitmask_length: int = 20  # ET90.2, ET92
    connection_reason_bitmap_length: int = 2  # ET90.3, ET93
    modem_apn_length: int = 64  # ET90.4, ET95
    modem_apn_user_length: int = 32  # ET90.5, ET95
    modem_apn_password_length: int = 32  # ET90.6, ET95
    modem_sim_pin_length: int = 5  # ET90.7, ET94
    modem_manufacturer_length: int = 32  # ET90.8, ET95
    modem_model_length: int = 32  # ET90.9, ET95
    modem_revision_length: int = 32  # ET90.10, ET95
    modem_imei_length: int = 32  # ET90.11, ET95
    modem_sim_phone_number_length: int = 32  # ET90.12, ET93 and ET95
    modem_operator_name_length: int = 40  # ET90.13, ET95
    modem_socket_maximum_connections: int = 2  # ET90.14, ET96 entries
    modem_maximum_connection_services: int = 10  # ET90.15
    ftz_messages: int = 3  # ET90.16, ET97 FTz array
    modem_at_command_reply_length: int = 200  # ET90.17 (4.20+), ET98
    modem_sim_iccid_length: int = 23  # ET90.19 (4.20+), ET95
    # ET89 (MEP p.189) sizes its pending security events by "MT90.25" and "MT90.26", offsets
    # past ET90's published end (4.50+). The entry size follows from ET89's fields; the count
    # is ours: a few distinct security alarms consolidated in one window.
    pending_security_events: int = 4  # ET90.25
    pending_security_event_size: int = 8  # ET90.26


def ln_dimensions(meter) -> LnDimensions:
    """ET90 as every table of this group reads it."""
    return LnDimensions()


def _et90_layout(meter):
    fields = []
    if has_p2p(meter):
        fields += [
            "ip_address_length" / UINT16,
            *(name / UINT8 for name in (
                "urgent_alarm_bitmask_length", "connection_reason_bitmap_length",
                "modem_apn_length", "modem_apn_user_length", "modem_apn_password_length",
                "modem_sim_pin_length", "modem_manufacturer_length", "modem_model_length",
                "modem_revision_length", "modem_imei_length", "modem_sim_phone_number_length",
                "modem_operator_name_length", "modem_socket_maximum_connections",
                "modem_maximum_connection_services")),
        ]
    elif has_ftz(meter):
        fields.append("p2p_reserved" / Bytes(16))  # ET90.16 keeps its offset before 4.10
    if has_ftz(meter):
        fields.append("ftz_messages" / UINT8)
    if firmware_at_least(meter, "4.20"):
        fields += ["modem_at_command_reply_length" / UINT16, "modem_sim_iccid_length" / UINT8]
    if firmware_at_least(meter, "4.50"):
        fields += ["unpublished" / Bytes(5), "pending_security_events" / UINT8,
                   "pending_security_event_size" / UINT8]
    return Struct(*fields)


def _et90_render(meter, now):
    return dict(asdict(ln_dimensions(meter)), p2p_reserved=bytes(16), unpublished=bytes(5))


declare(
    et(90), "Dimension LN",
    read=READERS,
    layout=_et90_layout,
    render=_et90_render,
    provenance=documented("MEP p.190-192; OPG p.62 (offsets 25-26 named by ET89, MEP p.189)"),
)

# ---------------------------------------------------------------------------------------
# ET89 Meter LN Status

#: Bytes of ET89's "Adj log unread entry mask" (its "A", MEP p.189); the guide does not define
#: A, one byte covers eight LN adjustable logs.
ADJUSTABLE_LOG_MASK_BYTES = 1

#: ET89 "TLS Port Status" entries: 0 optical, 1 MEP1, 2 MEP2 (MEP p.190).
TLS_PORTS = ("optical", "mep1", "mep2")


def _mode_timer() -> Bits:
    """One relay control mode's UINT32: seconds left (max 72 h), no-expiry flag, state
    (0 open, 1 closed, 2 unknown)."""
    return Bits(4, seconds_remaining=(0, 19), no_expire=19, state=(20, 2))


_RELAY_MODE_STATUS = Struct(
    "current_op_mode" / Bits(1, mode=(0, 3)),  # 0 maintenance, 1 locked, 2 remote, 3 local
    "maintenance" / _mode_timer(),
    "locked" / _mode_timer(),
    "remote" / _mode_timer(),
    "local" / _mode_timer(),
)

_SECURITY_EVENT = Struct(
    "alarm_id" / UINT16,
    "argument" / UINT16,
    "count" / UINT16,
    "minutes_to_report" / UINT16,
)

_TLS_PORT_STATUS = Struct(
    # session: 0 none, 1 RC4 unencrypted, 2 RC4 encrypted, 3 C12.18 unencrypted, 4 TLS
    "state" / Bits(1, session_state=(0, 3), tls_state=(3, 5)),
    "tls_error" / UINT16,
    "tls_error_count" / UINT16,
)


def _et89_layout(meter):
    fields = []
    for mep in (1, 2):
        fields += [
            f"prior_mep{mep}_handle" / UINT16,
            f"prior_mep{mep}_id" / Bytes(30),
            f"mep{mep}_reregister_requests" / UINT8,
            f"mep{mep}_reregister_allowed" / UINT8,
        ]
    if firmware_at_least(meter, "4.50"):
        dims = ln_dimensions(meter)
        fields += [
            "last_h1_telegram_time" / LTimeDate(),
            "status_flags_0" / Bits(1, h1_device_present=0, plc_disabled=1),
            "relay_modes" / Array(2, _RELAY_MODE_STATUS),
            "image_validation_key_ids" / Array(2, UINT16),
            "key_status" / Bits(1, key0_invalidated=0, key1_invalidated=1),
            "last_validation_error" / UINT8,
            "last_validation_key_id" / UINT16,
            "last_image_length" / UINT32,
            "signature_length" / UINT8,
            "signature" / Bytes(8),
            "adjustable_log_unread_mask" / BitSet(ADJUSTABLE_LOG_MASK_BYTES),
            "disconnect_flags" / Bits(
                1, block_remote_procedure_disconnect=0,
                block_automatic_and_pushbutton_disconnect=1,
                block_local_procedure_disconnect=2, block_remote_unblock=3),
            "pending_security_events" / Array(dims.pending_security_events, _SECURITY_EVENT),
        ]
    if firmware_at_least(meter, "4.60"):
        fields.append("tls_port_status" / Array(len(TLS_PORTS), _TLS_PORT_STATUS))
    return Struct(*fields)


def _et89_render(meter, now):
    """A freshly commissioned meter's values (MEP p.187-190). The MEP client subsystem will
    fill the registration fields, the relay subsystem the control modes, firmware download the
    image validation, the security log the pending events and the ports their TLS status."""
    dims = ln_dimensions(meter)
    unknown = dict(seconds_remaining=0, no_expire=0, state=2)
    relay = dict(current_op_mode=dict(mode=3), maintenance=unknown, locked=unknown,
                 remote=unknown, local=dict(seconds_remaining=0, no_expire=1, state=0))
    values = dict(
        last_h1_telegram_time=None,
        status_flags_0=dict(),
        relay_modes=[relay, relay],
        image_validation_key_ids=[0, 0],
        key_status=dict(),
        last_validation_error=0,
        last_validation_key_id=0,
        last_image_length=0,
        signature_length=0,
        signature=bytes(8),
        adjustable_log_unread_mask=frozenset({0}),  # guide's value 1
        disconnect_flags=dict(),
        pending_security_events=[dict(alarm_id=0, argument=0, count=0, minutes_to_report=0)]
        * dims.pending_security_events,
        tls_port_status=[dict(state=dict(), tls_error=0, tls_error_count=0)] * len(TLS_PORTS),
    )
    for mep in (1, 2):
        values.update({f"prior_mep{mep}_handle": 0, f"prior_mep{mep}_id": bytes(30),
                       f"mep{mep}_reregister_requests": 0, f"mep{mep}_reregister_allowed": 0})
    return values


declare(
    et(89), "Meter LN Status",
    read=READERS,
    layout=_et89_layout,
    render=_et89_render,
    provenance=documented("MEP p.186-190"),
)

# ---------------------------------------------------------------------------------------
# ET92 P2P Connection Configuration

#: ET92 connection types (designed): 0 none (no P2P connection), 1 TCP, 2 UDP.
P2P_CONNECTION_TYPES = (0, 1, 2)


def _et92_layout(meter):
    if not has_p2p(meter):
        return NO_FIELDS
    dims = ln_dimensions(meter)
    return Struct(
        "connection_type" / UINT8,
        "head_end_address" / Chars(dims.ip_address_length, pad=b"\0"),
        "head_end_port" / UINT16,
        "urgent_alarm_bitmask" / BitSet(dims.urgent_alarm_bitmask_length),
    )


def _et92_defaults(meter):
    return dict(connection_type=0, head_end_address="", head_end_port=0,
                urgent_alarm_bitmask=frozenset())


def _et92_apply(meter, values, ctx):
    if values.connection_type not in P2P_CONNECTION_TYPES:
        refuse("ET92", f"connection type {values.connection_type} is not 0, 1 or 2")
    if values.connection_type and not (values.head_end_address and values.head_end_port):
        refuse("ET92", "a P2P connection needs a head-end address and port")
    return values


declare(
    et(92), "P2P Connection Configuration",
    read=OPTICAL_READERS,
    write=P2P_CONFIGURERS,
    layout=_et92_layout,
    defaults=_et92_defaults,
    apply=_et92_apply,
    provenance=designed("OPG p.62 names the table (connection type, head-end IP address) and "
                        "MEP p.190 its field lengths, but no layout is published"),
)

# ---------------------------------------------------------------------------------------
# ET93 P2P Connection Status


def _et93_layout(meter):
    if not has_p2p(meter):
        return NO_FIELDS
    dims = ln_dimensions(meter)
    return Struct(
        "connection_state" / UINT8,  # 0 not connected, 1 connecting, 2 connected
        "last_connection_time" / LTimeDate(),
        "connection_reason" / BitSet(dims.connection_reason_bitmap_length),
        "local_address" / Chars(dims.ip_address_length, pad=b"\0"),
        "sim_phone_number" / Chars(dims.modem_sim_phone_number_length, pad=b"\0"),
    )


def _et93_render(meter, now):
    """Never connected: there is no P2P gateway module."""
    return dict(connection_state=0, last_connection_time=None, connection_reason=frozenset(),
                local_address="", sim_phone_number="")


declare(
    et(93), "P2P Connection Status",
    read=OPTICAL_READERS,
    layout=_et93_layout,
    render=_et93_render,
    provenance=designed("OPG p.63 names the table (last head-end connection time) and "
                        "MEP p.190-191 its field lengths, but no layout is published"),
)

# ---------------------------------------------------------------------------------------
# ET94 P2P Gateway Module Configuration


def _et94_layout(meter):
    if not has_p2p(meter):
        return NO_FIELDS
    return Struct(
        "modem_enabled" / UINT8,
        "sim_pin" / Chars(ln_dimensions(meter).modem_sim_pin_length, pad=b"\0"),
    )


def _et94_defaults(meter):
    return dict(modem_enabled=0, sim_pin="")


def _et94_apply(meter, values, ctx):
    if values.modem_enabled not in (0, 1):
        refuse("ET94", f"modem enabled must be 0 or 1, not {values.modem_enabled}")
    pin = values.sim_pin
    if pin and not (pin.isdigit() and len(pin) >= 4):
        refuse("ET94", "a SIM PIN is 4 or more digits")
    return values


declare(
    et(94), "P2P Gateway Module Configuration",
    read=OPTICAL_READERS,
    write={Key.MK, Key.PLC},  # holds the SIM PIN
    layout=_et94_layout,
    defaults=_et94_defaults,
    apply=_et94_apply,
    provenance=designed("OPG p.63 names the table and MEP p.190 its SIM PIN length, but no "
                        "layout is published"),
)

# ---------------------------------------------------------------------------------------
# ET95 P2P Gateway Module Status


def _et95_layout(meter):
    if not has_p2p(meter):
        return NO_FIELDS
    dims = ln_dimensions(meter)
    text = {
        "apn": dims.modem_apn_length,
        "apn_user": dims.modem_apn_user_length,
        "apn_password": dims.modem_apn_password_length,
        "manufacturer": dims.modem_manufacturer_length,
        "model": dims.modem_model_length,
        "revision": dims.modem_revision_length,
        "imei": dims.modem_imei_length,
        "sim_phone_number": dims.modem_sim_phone_number_length,
        "current_mobile_operator_name": dims.modem_operator_name_length,
    }
    if firmware_at_least(meter, "4.20"):
        text["sim_iccid"] = dims.modem_sim_iccid_length
    return Struct(
        "module_state" / UINT8,  # 0 no module fitted, 1 module present, 2 registered
        *(name / Chars(size, pad=b"\0") for name, size in text.items()),
    )


def _et95_render(meter, now):
    """No module fitted: nothing the modem would report."""
    return dict(module_state=0, apn="", apn_user="", apn_password="", manufacturer="", model="",
                revision="", imei="", sim_phone_number="", current_mobile_operator_name="",
                sim_iccid="")


declare(
    et(95), "P2P Gateway Module Status",
    read=OPTICAL_READERS,
    layout=_et95_layout,
    render=_et95_render,
    provenance=designed("OPG p.63 names the table and MEP p.190-192 lists its text fields and "
                        "lengths, but no layout is published"),
)

# ---------------------------------------------------------------------------------------
# ET96 P2P Gateway Module Socket Status


def _et96_layout(meter):
    if not has_p2p(meter):
        return NO_FIELDS
    dims = ln_dimensions(meter)
    socket = Struct(
        "state" / UINT8,  # 0 closed, 1 opening, 2 open
        "remote_address" / Chars(dims.ip_address_length, pad=b"\0"),
        "remote_port" / UINT16,
    )
    return Struct("sockets" / Array(dims.modem_socket_maximum_connections, socket))


def _et96_render(meter, now):
    """Every socket closed: there is no modem."""
    sockets = ln_dimensions(meter).modem_socket_maximum_connections
    return dict(sockets=[dict(state=0, remote_address="", remote_port=0)] * sockets)


declare(
    et(96), "P2P Gateway Module Socket Status",
    read=OPTICAL_READERS,
    layout=_et96_layout,
    render=_et96_render,
    provenance=designed("OPG p.63 names the table and MEP p.190-191 its socket count and "
                        "address length, but no layout is published"),
)

# ---------------------------------------------------------------------------------------
# ET97 Meter Configuration LN


def _relay_settings() -> Struct:
    """ET97's per-relay block (MEP p.194-195), 17 bytes."""
    return Struct(
        "group_ids" / Array(5, UINT16),
        "relay_mode" / Bits(1, mode=(0, 3), require_explicit_heartbeat=3),  # 0 std, 1 LM
        "heartbeat_interval" / UINT16,  # minutes, load management mode only
        "maintenance" / Bits(1, entry=(0, 2), display=(2, 2), open_relay=4, exit=(5, 2)),
        "maintenance_exit_delay" / UINT8,  # seconds after the cover is replaced
        "maintenance_exit_time" / Array(2, UINT8),  # local hour, minute
    )


def _et97_layout(meter):
    """Two offset columns (MEP p.193-196): CPM 1.31 / meter 3.82 stops at A+63, with the bytes
    of the second MEP unused; meter 4.02+ runs to A+101. A = 8 x ET90.16."""
    if not has_ftz(meter):
        return NO_FIELDS
    gen4 = firmware_at_least(meter, "4.0")
    fields = [
        "ftz_message_contents" / Array(ln_dimensions(meter).ftz_messages, Bytes(8)),
        "mep1_id_comparison_mode" / UINT8,
        "mep1_id_mask" / Bytes(30),
    ]
    if not gen4:
        return Struct(*fields, "unused_mep2" / Bytes(31),
                      "flags" / Bits(1, mbus_ad_use_300_baud=1))
    return Struct(
        *fields,
        "mep2_id_comparison_mode" / UINT8,
        "mep2_id_mask" / Bytes(30),
        "flags" / Bits(1, power_boost_relay=0, mbus_ad_use_300_baud=1),
        "relays" / Array(2, _relay_settings()),
        "security_log_interval" / UINT8,  # minutes; typed UINT16, but A+98 follows A+97
        "require_tls_optical" / Bits(1, required=0),
        "require_tls_mep1" / Bits(1, required=0),
        "require_tls_mep2" / Bits(1, required=0),
    )


def _et97_defaults(meter):
    """The guide's values (MEP p.193-196): no FTz message, standard ID comparison, standard
    relays, RC4 allowed on every port."""
    relay = dict(group_ids=[0] * 5, relay_mode=dict(), heartbeat_interval=0,
                 maintenance=dict(), maintenance_exit_delay=0, maintenance_exit_time=[0, 0])
    return dict(
        ftz_message_contents=[bytes(8)] * ln_dimensions(meter).ftz_messages,
        mep1_id_comparison_mode=0, mep1_id_mask=bytes(30),
        mep2_id_comparison_mode=0, mep2_id_mask=bytes(30), unused_mep2=bytes(31),
        flags=dict(), relays=[relay, relay], security_log_interval=0,
        require_tls_optical=dict(), require_tls_mep1=dict(), require_tls_mep2=dict(),
    )


_TLS_FIELDS = tuple(f"require_tls_{port}" for port in TLS_PORTS)


def _et97_apply(meter, values, ctx):
    """Checks the enumerations; a MEP client cannot change any port's TLS requirement
    (MEP p.18), so a MAK write keeps them."""
    for mep in (1, 2):
        mode = values.get(f"mep{mep}_id_comparison_mode", 0)
        if mode > 3:
            refuse("ET97", f"MEP {mep} ID comparison mode {mode} is not 0-3")
    for index, relay in enumerate(values.get("relays", [])):
        maintenance = relay.maintenance
        hour, minute = relay.maintenance_exit_time
        if relay.relay_mode["mode"] > 1:
            refuse("ET97", f"relay {index + 1} mode {relay.relay_mode['mode']} is reserved")
        if maintenance["entry"] > 1 or maintenance["display"] > 2 or maintenance["exit"] > 2:
            refuse("ET97", f"relay {index + 1} maintenance mode uses a reserved value")
        if hour > 23 or minute > 59:
            refuse("ET97", f"relay {index + 1} maintenance exit time {hour}:{minute}")
    if ctx.key is Key.MAK and "require_tls_optical" in values:
        current = _et97_layout(meter).parse(meter.table_bytes(et(97), ctx.now))
        for name in _TLS_FIELDS:
            values[name] = current[name]
    return values  # rebuilt: reserved bits (VCI "M") stay zero


declare(
    et(97), "Meter Configuration LN",
    read=READERS,
    write={Key.MK, Key.PK, Key.MAK, Key.PLC},
    layout=_et97_layout,
    defaults=_et97_defaults,
    apply=_et97_apply,
    provenance=documented("MEP p.192-196; OPG p.63"),
)


def tls_required(meter, port: str) -> bool:
    """Whether ET97 makes clients of ``port`` ("optical", "mep1", "mep2") use TLS (MEP p.6,
    p.195). Firmware whose ET97 has no such field never requires it."""
    values = _et97_layout(meter).parse(meter.table_bytes(et(97), 0.0))
    flag = values.get(f"require_tls_{port}")
    return bool(flag and flag["required"])


# ---------------------------------------------------------------------------------------
# ET98 P2P AT Command Response


def _et98_layout(meter):
    if not firmware_at_least(meter, "4.20"):
        return NO_FIELDS
    return Struct(
        "reply_length" / UINT16,
        "reply" / Bytes(ln_dimensions(meter).modem_at_command_reply_length),
    )


def _et98_render(meter, now):
    """No AT command was ever answered: there is no modem."""
    return dict(reply_length=0, reply=bytes(ln_dimensions(meter).modem_at_command_reply_length))


declare(
    et(98), "P2P AT Command Response",
    read=OPTICAL_READERS,
    layout=_et98_layout,
    render=_et98_render,
    provenance=designed("OPG p.63 names the table (firmware 4.20+) and MEP p.192 its reply "
                        "length, but no layout is published"),
)
