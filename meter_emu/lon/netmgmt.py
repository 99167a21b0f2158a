"""What a meter answers on the network: ISO/IEC 14908.1 network management (NM, APDU codes
0x60-0x7F) and network diagnostics (ND, 0x50-0x5F), the service pin message, and the
head-end's builders and parsers of the same messages. Sans-I/O: ``handle`` takes the indication
the station's node delivered and returns the response APDU (or None: no response).

Facts (reference/lower-layers.md section 5, 8.4, 12; the public lon-stack-dx layouts):

* Response codes: NM success ``0x20 | code & 0x1F``, failure ``code & 0x1F``; ND success
  ``0x30 | code & 0x0F``, failure ``0x10 | code & 0x0F``; an expanded command (0x60) echoes
  its sub-command after the code. Only a REQUEST is answered; other services just act.
* Layouts: Query ID ``61 selector [mode offset(2) count data]`` (selector 0 unconfigured,
  1 selected, 2 selected and unconfigured; a node that does not match stays silent); a domain
  entry is 15 bytes ``id(6) subnet nonclone|node invalid|auth(2)|idlen key(6)``; an address
  table entry 5 bytes (group: ``80|size domain|member repeat|retry rcv|tx group``; subnet/node
  ``01 domain|node repeat|retry tx subnet``; broadcast ``03 domain|backlog repeat|retry tx
  subnet``; unassigned ``00 ...``); Query Status answers 5 big-endian 16-bit error counters,
  reset cause, node state, version, error log, model; Read/Write Memory ``mode offset(2) count
  [form data]`` with modes 0 absolute, 1 read-only, 2 config, 3 statistics; Set Node Mode
  ``6C mode [state]`` (0 offline, 1 online, 2 reset, 3 change state, 6 physical reset); node
  states on the wire 2 unconfigured, 3 applicationless, 4 configured, 6 hard offline, 12 soft
  offline (also what ET04.72 "Neuron State" shows, MEP guide); the service pin message
  ``7F neuron-id(6) program-id(8)`` broadcast unacknowledged in the flex domain.

``designed`` (no public layout, or a meter-specific choice), explained here once:

* **Transceiver registers** (ND 0x54, 0x57, proxy sub-command 2): 7 bytes ``04 00 status
  strength-primary strength-secondary margin-primary margin-secondary``. ``status`` is 0x04,
  plus 0x08 when the frame came on the secondary carrier (as the public "perfect" set). A
  strength or margin is whole dB clamped to 0..254 for the carrier the frame came on; the other
  carrier reads 00 (nothing heard there). A medium that measures nothing (CN/IP: LinkInfo with
  no strength and no margin) gives the public "perfect" set ``04 00 04 FF FF 00 00``.
* **Memory images** for Read Memory and Query ID matching: read-only (mode 1) follows the public
  read-only structure (Neuron ID at offset 0, model 6, program ID at 13, node state in the low
  3 bits of byte 21, 15 address entries); config (mode 2) is the 25-byte configuration structure
  (channel ID, location, the PL-20N communication parameters ``05 5E 00 3F A6 77 67 00 08 0E 01``
  at offset 8, byte 24 = non-group receive timer << 4 | NM-authentication 0x08) followed by the
  domain table (2 x 15) and the address table (15 x 5); statistics (mode 3) are ten 16-bit
  counters: the five of Query Status, then received, sent, retries, duplicates, auth failures.
  Absolute mode reads only byte 0 (the firmware version, as public stacks do).
* **Keys never leave the meter**: Query Domain and the memory images show the key bytes as
  zeros, and Report Key (60 09) is refused. Update Key (65) adds its 6 bytes to the first 6 of
  the domain's key; the OMA key is set with expanded Update Key (60 0A flag key(12)), applied to
  every domain (flag 1 adds, 0 replaces).
* **Writes that are safe**: Write Memory only into the config structure's first 25 bytes
  (communication parameters are kept and shown, not applied; byte 24 sets the non-group
  receive timer and NM authentication). Everything else is refused: tables change through
  Update Domain / Address.
* **Answers where public stacks stay silent**: Wink and Set Node Mode 0/1/2/6 sent as a REQUEST
  are answered with success (the emulated reset takes no time), so a head-end sees them done.
* **Node state**: Set Node Mode 3 refuses the applicationless state (3) and any configured
  state without a domain. Update Domain does not configure a node: a head-end commissions with
  Update Domain (+ Update Address), then Set Node Mode change-state 4 (``commission``).
* **NM authentication**: when config byte 24 has 0x08, a configured meter refuses an
  unauthenticated NM/ND request except Query ID, Respond to Query, Query Status, the ND proxy,
  transceiver status (bidirectional), full version and Query Version.
* **ND Proxy (52)**: a 2-byte proxy (this meter is the target) is served; forwarding requests
  are refused with 0x12 (repeating is the LTEP proxy, lon/ltep.py).
* The address table is kept in the meter's state (subsystem ``lon_nm``) next to the node
  configuration; group entries mirror ``NodeConfig.groups``, which the FCM may also change.
* **The OSGP discovery domain** (plc/services.py) is a domain like any other here, except
  that Update Domain 0 while it sits alone at index 0 puts the new domain in front of it (as the
  FCM does), Leave Domain unconfigures a node left with no other domain, and ET04 shows the
  subnet/node of the first other domain.
"""

from __future__ import annotations

import logging
import struct
import weakref
from dataclasses import dataclass

from .config import CONFIGURED, HARD_OFFLINE, SOFT_OFFLINE, UNCONFIGURED, Domain, Membership
from .frame import Broadcast, Group
from .node import NO_LINK_INFO, LinkInfo, Service

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Codes (reference/lower-layers.md section 5.2)

QUERY_STATUS, PROXY, CLEAR_STATUS, QUERY_XCVR = 0x51, 0x52, 0x53, 0x54
QUERY_STATUS_FLEX, QUERY_XCVR_BIDIR, COMPUTE_PHASE, FULL_VERSION = 0x56, 0x57, 0x58, 0x59
EXPANDED, QUERY_ID, RESPOND_TO_QUERY, UPDATE_DOMAIN = 0x60, 0x61, 0x62, 0x63
LEAVE_DOMAIN, UPDATE_KEY, UPDATE_ADDRESS, QUERY_ADDRESS = 0x64, 0x65, 0x66, 0x67
QUERY_NV_CONFIG, UPDATE_GROUP_ADDRESS, QUERY_DOMAIN, UPDATE_NV_CONFIG = 0x68, 0x69, 0x6A, 0x6B
SET_NODE_MODE, READ_MEMORY, WRITE_MEMORY, CHECKSUM_RECALC = 0x6C, 0x6D, 0x6E, 0x6F
WINK, MEMORY_REFRESH, SERVICE_PIN = 0x70, 0x71, 0x7F
# expanded (0x60) sub-commands
QUERY_VERSION, UPDATE_DOMAIN_NO_KEY, REPORT_DOMAIN_NO_KEY, REPORT_KEY, UPDATE_OMA_KEY = (
    0x01, 0x07, 0x08, 0x09, 0x0A)

# Query ID selectors; memory modes; Set Node Mode modes
SEL_UNCONFIGURED, SEL_SELECTED, SEL_SELECTED_UNCONFIGURED = 0, 1, 2
ABSOLUTE, READ_ONLY, CONFIG, STATISTICS = 0, 1, 2, 3
MODE_OFFLINE, MODE_ONLINE, MODE_RESET, MODE_CHANGE_STATE, MODE_PHYSICAL_RESET = 0, 1, 2, 3, 6

# Node states on the wire (and in ET04.72); reset causes
STATE_UNCONFIGURED, STATE_APPLICATIONLESS, STATE_CONFIGURED = 2, 3, 4
STATE_HARD_OFFLINE, STATE_SOFT_OFFLINE = 6, 12
RESET_CLEARED, RESET_POWER_UP, RESET_SOFTWARE = 0x00, 0x01, 0x14

#: the "perfect" transceiver register set (section 8.4, 12.1)
PERFECT_XCVR = bytes.fromhex("040004ffff0000")

# designed: what this meter's Neuron reports (PL 3170 model code; system firmware version)
MODEL, FIRMWARE_VERSION = 17, 16
ADDRESS_SLOTS = 15
DOMAIN_ENTRY, ADDRESS_ENTRY = 15, 5
CONFIG_DATA = 25  # bytes of the configuration structure before the domain table
NM_AUTH = 0x08  # config byte 24
#: the PL-20N communication parameters at config offset 8 (section 12.1)
_PL20N = bytes.fromhex("055e003fa6776700080e01")
_STAT_KEYS = ("transmission_errors", "transaction_timeouts", "receive_transaction_full",
              "lost_messages", "missed_messages", "received", "sent", "retries", "duplicates",
              "auth_failures")
#: requests a meter with NM authentication on still takes unauthenticated
_NEVER_AUTH = frozenset({QUERY_ID, RESPOND_TO_QUERY, QUERY_STATUS, PROXY, QUERY_STATUS_FLEX,
                         QUERY_XCVR_BIDIR, FULL_VERSION, SERVICE_PIN})
SUBSYSTEM = "lon_nm"

_TO_WIRE = {UNCONFIGURED: STATE_UNCONFIGURED, CONFIGURED: STATE_CONFIGURED,
            HARD_OFFLINE: STATE_HARD_OFFLINE, SOFT_OFFLINE: STATE_SOFT_OFFLINE}
_FROM_WIRE = {wire: state for state, wire in _TO_WIRE.items()}


def success(code: int) -> int:
    return 0x30 | code & 0x0F if code < 0x60 else 0x20 | code & 0x1F


def failure(code: int) -> int:
    return 0x10 | code & 0x0F if code < 0x60 else code & 0x1F


def wire_state(config) -> int:
    """The node state as Query Status, Read Memory and ET04.72 show it."""
    return _TO_WIRE.get(config.state, STATE_UNCONFIGURED)


class _Refused(Exception):
    """A request the meter answers with the failure code; the message says why (logged)."""


@dataclass
class _Volatile:
    """What a real node keeps in RAM: lost on restart (a restart is a power-up reset)."""
    selected: bool = False
    reset_cause: int = RESET_POWER_UP
    error_log: int = 0
    winks: int = 0


_VOLATILE: "weakref.WeakKeyDictionary[object, _Volatile]" = weakref.WeakKeyDictionary()


def volatile(station) -> _Volatile:
    """The station's RAM state (selected flag, reset cause, error log, wink count)."""
    state = _VOLATILE.get(station)
    if state is None:
        state = _VOLATILE[station] = _Volatile()
    return state


# ---------------------------------------------------------------------------------------
# The meter side

def handle(station, ind, now: float) -> bytes | None:
    """Serve one NM/ND message: the response APDU to a REQUEST (success, failure, or None when
    the protocol says to stay silent); None for any other service, after acting on it."""
    apdu = ind.apdu
    code = apdu[0]
    request = ind.service == Service.REQUEST
    handler = _HANDLERS.get(code)
    try:
        if _nm_auth_required(station, ind, code):
            raise _Refused("NM authentication is on and the message was not authenticated")
        if handler is None:
            raise _Refused("not supported by this meter")
        reply = handler(station, ind, apdu[1:], now)
    except _Refused as why:
        log.info("%s: NM/ND 0x%02X refused: %s", station.meter.id, code, why)
        reply = bytes([failure(code)]) + (apdu[1:2] if code == EXPANDED else b"")
    return reply if request else None


def _nm_auth_required(station, ind, code: int) -> bool:
    if ind.authenticated or code in _NEVER_AUTH or not station.config.configured:
        return False
    if code == EXPANDED and ind.apdu[1:2] == bytes([QUERY_VERSION]):
        return False
    return bool(_config_data(station)[24] & NM_AUTH)


def _need(data: bytes, *lengths: int) -> None:
    if len(data) not in lengths:
        raise _Refused(f"{len(data)} data bytes, expected {' or '.join(map(str, lengths))}")


def _discovery_id() -> bytes | None:
    """The OSGP global discovery domain's ID (plc/services.py), None without that module."""
    try:
        from ..plc.services import DISCOVERY_DOMAIN
    except ImportError:  # pragma: no cover - the services module is part of the package
        return None
    return DISCOVERY_DOMAIN


def application_domains(config) -> list[Domain]:
    """The node's domains other than the OSGP discovery domain."""
    discovery = _discovery_id()
    return [domain for domain in config.domains if domain.id != discovery]


def _commit(station) -> None:
    """Persist the node configuration and show it in ET04 (subnet/node of the application
    domain, node state)."""
    from ..tables.extended import set_system_fields
    station.save_config()
    config = station.config
    first = next(iter(application_domains(config)), None)
    set_system_fields(station.meter, subnet_id=first.subnet if first else 0,
                      node_id=first.node if first else 0, neuron_state=wire_state(config))


def _reset(station) -> None:
    """An emulated node reset: RAM state goes, a soft-offline node comes back online."""
    state = volatile(station)
    state.selected = False
    state.reset_cause = RESET_SOFTWARE
    if station.config.state == SOFT_OFFLINE:
        station.config.state = CONFIGURED
        _commit(station)


# -- ND ---------------------------------------------------------------------------------

def _status_body(station) -> bytes:
    stats = station.node.stats
    state = volatile(station)
    counters = [min(int(stats.get(key, 0)), 0xFFFF) for key in _STAT_KEYS[:5]]
    return struct.pack(">5H5B", *counters, state.reset_cause, wire_state(station.config),
                       FIRMWARE_VERSION, state.error_log, MODEL)


def _query_status(station, ind, data, now):
    _need(data, 0)
    return bytes([success(ind.apdu[0])]) + _status_body(station)


def _clear_status(station, ind, data, now):
    _need(data, 0)
    stats = station.node.stats
    for key in _STAT_KEYS:
        if key in stats:
            stats[key] = 0
    state = volatile(station)
    state.reset_cause, state.error_log = RESET_CLEARED, 0
    return bytes([success(CLEAR_STATUS)])


def xcvr_registers(link: LinkInfo) -> bytes:
    """The 7 transceiver register bytes for a frame received with ``link`` (designed mapping,
    module docstring)."""
    if link.strength_db is None and link.margin_db is None:
        return PERFECT_XCVR[:2] + bytes([PERFECT_XCVR[2] | (0x08 if link.alt_path else 0)]) \
            + PERFECT_XCVR[3:]

    def db(value, unknown):
        return unknown if value is None else max(0, min(254, round(value)))

    strength, margin = db(link.strength_db, 0xFF), db(link.margin_db, 0)
    status = 0x04 | (0x08 if link.alt_path else 0)
    if link.alt_path:
        return bytes([0x04, 0x00, status, 0x00, strength, 0x00, margin])
    return bytes([0x04, 0x00, status, strength, 0x00, margin, 0x00])


def _query_xcvr(station, ind, data, now):
    _need(data, *((0, 1) if ind.apdu[0] == QUERY_XCVR_BIDIR else (0,)))
    return bytes([success(ind.apdu[0])]) + xcvr_registers(ind.link or NO_LINK_INFO)


def _proxy(station, ind, data, now):
    if len(data) != 1:
        raise _Refused("ND proxy forwarding is not offered (repeating uses LTEP, code 0x4D)")
    sub = data[0]
    if sub == 0:  # query unconfigured: only an unconfigured node answers
        if station.config.state != UNCONFIGURED:
            return None
        return bytes([success(PROXY)]) + station.config.neuron_id + station.config.program_id
    if sub == 1:
        return bytes([success(PROXY)]) + _status_body(station)
    if sub == 2:
        return bytes([success(PROXY)]) + xcvr_registers(ind.link or NO_LINK_INFO)
    raise _Refused(f"ND proxy sub-command {sub} is unknown")


def _full_version(station, ind, data, now):
    _need(data, 0)
    return bytes([success(FULL_VERSION), FIRMWARE_VERSION, 0, 0, 0, 0, 0])


# -- NM: identification -----------------------------------------------------------------

def _query_id(station, ind, data, now):
    if ind.service != Service.REQUEST:
        return None  # answered only as a request
    if len(data) != 1 and (len(data) < 5 or len(data) != 5 + data[4]):
        raise _Refused(f"{len(data)} data bytes, expected 1 or 5 + count")
    selector = data[0]
    unconfigured = station.config.state == UNCONFIGURED
    selected = volatile(station).selected
    if selector not in (SEL_UNCONFIGURED, SEL_SELECTED, SEL_SELECTED_UNCONFIGURED):
        raise _Refused(f"selector {selector} is unknown")
    if selector in (SEL_UNCONFIGURED, SEL_SELECTED_UNCONFIGURED) and not unconfigured:
        return None
    if selector in (SEL_SELECTED, SEL_SELECTED_UNCONFIGURED) and not selected:
        return None
    if len(data) > 1:
        mode, offset, count = data[1], int.from_bytes(data[2:4], "big"), data[4]
        if _memory(station, mode, offset, count) != data[5:]:
            return None  # memory does not match: stay silent
    return bytes([success(QUERY_ID)]) + station.config.neuron_id + station.config.program_id


def _respond_to_query(station, ind, data, now):
    _need(data, 1)
    if data[0] not in (0, 1):
        raise _Refused(f"respond-to-query flag {data[0]} is not 0 or 1")
    volatile(station).selected = bool(data[0])
    return bytes([success(RESPOND_TO_QUERY)])


def _wink(station, ind, data, now):
    if len(data) > 4:
        raise _Refused(f"{len(data)} data bytes")
    sub = data[0] if data else 0
    if sub == 0:
        state = volatile(station)
        state.winks += 1
        log.info("%s: wink (%d)", station.meter.id, state.winks)
        return bytes([success(WINK)])
    if sub == 1 and len(data) == 2 and data[1] == 0:  # send ID info of interface 0
        config = station.config
        return bytes([success(WINK), 0]) + config.neuron_id + config.program_id
    raise _Refused(f"wink/install sub-command {sub} is not offered")


# -- NM: domains ------------------------------------------------------------------------

def _domain_entry(domain: Domain, *, key: bool = True) -> bytes:
    """A 15-byte domain table entry (9 without the key field); the key reads as zeros."""
    auth = 0x08 if len(domain.key) == 12 else 0x00
    entry = domain.id.ljust(6, b"\0") + bytes([domain.subnet, 0x80 | domain.node,
                                               auth | len(domain.id)])
    return entry + bytes(6) if key else entry


_INVALID_DOMAIN = bytes(6) + bytes([0, 0, 0x80]) + bytes(6)


def _parse_domain(entry: bytes, old: Domain | None, key: bytes | None) -> Domain:
    length = entry[8] & 0x07
    if entry[8] & 0x80:
        raise _Refused("the domain entry is marked invalid (use Leave Domain)")
    if length not in (0, 1, 3, 6):
        raise _Refused(f"domain length {length} is not 0, 1, 3 or 6")
    subnet, node = entry[6], entry[7] & 0x7F
    if not subnet or not node:
        raise _Refused(f"subnet/node {subnet}/{node}: both must be non-zero")
    if key is None:  # keep the old key
        key = old.key if old else bytes(6)
    elif (entry[8] >> 3) & 0x03 == 1 and old is not None and len(old.key) == 12:
        key = key + old.key[6:]  # OMA: the 6 bytes are the first half
    return Domain(entry[:length], subnet, node, key)


def _set_domain(station, index: int, domain: Domain) -> None:
    config = station.config
    domains = config.domains
    if index > len(domains) or index > 1:
        raise _Refused(f"domain index {index} (the meter has {len(domains)}; fill 0 first)")
    discovery = _discovery_id()
    if (index == 0 and len(domains) == 1 and domains[0].id == discovery
            and domain.id != discovery):
        domains.insert(0, domain)  # as the FCM does: the discovery entry moves to index 1
        for member in config.groups:
            member.domain_index += 1
    elif index == len(domains):
        domains.append(domain)
    else:
        domains[index] = domain
    _commit(station)


def _update_domain(station, ind, data, now):
    _need(data, 1 + DOMAIN_ENTRY)
    index = data[0]
    old = _domain_at(station, index, strict=False)
    _set_domain(station, index, _parse_domain(data[1:10], old, data[10:16]))
    log.info("%s: domain %d is now %s %d/%d", station.meter.id, index,
             station.config.domains[index].id.hex() or "(empty)",
             station.config.domains[index].subnet, station.config.domains[index].node)
    return bytes([success(UPDATE_DOMAIN)])


def _domain_at(station, index: int, *, strict: bool = True) -> Domain | None:
    domains = station.config.domains
    if index < len(domains):
        return domains[index]
    if strict:
        raise _Refused(f"domain index {index}: the meter has {len(domains)} domain(s)")
    return None


def _leave_domain(station, ind, data, now):
    _need(data, 1)
    index = data[0]
    if index not in (0, 1):
        raise _Refused(f"domain index {index} is not 0 or 1")
    config = station.config
    if index < len(config.domains):
        del config.domains[index]
        kept = []
        for member in config.groups:
            if member.domain_index != index:
                if member.domain_index > index:
                    member.domain_index -= 1
                kept.append(member)
        config.groups[:] = kept
        if not application_domains(config):
            config.state = UNCONFIGURED
            volatile(station).reset_cause = RESET_SOFTWARE
        _commit(station)
    if ind.domain_index == index:
        return None  # received in the domain just left: no one to answer to
    return bytes([success(LEAVE_DOMAIN)])


def _update_key(station, ind, data, now):
    _need(data, 7)
    domain = _domain_at(station, data[0])
    head = bytes((a + b) & 0xFF for a, b in zip(domain.key[:6], data[1:7]))
    domain.key = head + domain.key[6:]
    _commit(station)
    return bytes([success(UPDATE_KEY)])


def _query_domain(station, ind, data, now):
    _need(data, 1)
    return bytes([success(QUERY_DOMAIN)]) + _domain_entry(_domain_at(station, data[0]))


def _expanded(station, ind, data, now):
    if not data:
        raise _Refused("expanded command without a sub-command")
    sub, rest = data[0], data[1:]
    ok = bytes([success(EXPANDED), sub])
    if sub == QUERY_VERSION:
        return ok + bytes([2, 0x00, 0x0B])  # version 2; OMA, proxy, SSI
    if sub == UPDATE_DOMAIN_NO_KEY:
        _need(rest, 1 + 9)
        old = _domain_at(station, rest[0], strict=False)
        _set_domain(station, rest[0], _parse_domain(rest[1:10], old, None))
        return ok
    if sub == REPORT_DOMAIN_NO_KEY:
        _need(rest, 1)
        return ok + _domain_entry(_domain_at(station, rest[0]), key=False)
    if sub == UPDATE_OMA_KEY:
        _need(rest, 13)
        if rest[0] not in (0, 1) or not station.config.domains:
            raise _Refused("OMA key update needs flag 0/1 and a domain")
        for domain in station.config.domains:
            base = domain.key.ljust(12, b"\0") if rest[0] else bytes(12)
            domain.key = bytes((a + b) & 0xFF for a, b in zip(base, rest[1:13]))
        _commit(station)
        return ok
    raise _Refused(f"expanded sub-command 0x{sub:02X} is not offered (keys are not reported)")


# -- NM: the address table --------------------------------------------------------------

def _group_entry(member: Membership, old: bytes | None, station) -> bytes:
    config = station.config
    repeat_retry = old[2] if old else config.retry_count & 0x0F
    transmit = old[3] & 0x0F if old else config.transmit_timer & 0x0F
    return bytes([0x80 | member.size & 0x7F, member.domain_index << 7 | member.member & 0x7F,
                  repeat_retry, (member.receive_timer & 0x0F) << 4 | transmit,
                  member.group & 0xFF])


def address_table(station) -> list[bytes]:
    """The 15 address table entries: the stored ones, with the group entries brought in line
    with the node's memberships (which the FCM may have changed)."""
    own = station.meter.subsystem(SUBSYSTEM)
    table = [bytes.fromhex(entry) for entry in own.get("address_table", [])]
    table += [bytes(ADDRESS_ENTRY)] * (ADDRESS_SLOTS - len(table))
    members = {(m.domain_index, m.group): m for m in station.config.groups}
    for index, entry in enumerate(table):
        if entry[0] & 0x80:
            member = members.pop((entry[1] >> 7, entry[4]), None)
            table[index] = _group_entry(member, entry, station) if member else bytes(5)
    for member in members.values():
        free = next((i for i, entry in enumerate(table) if entry[0] == 0), None)
        if free is None:
            log.warning("%s: no address table slot for group %d", station.meter.id,
                        member.group)
            break
        table[free] = _group_entry(member, None, station)
    return table


def _store_table(station, table: list[bytes]) -> None:
    station.meter.subsystem(SUBSYSTEM)["address_table"] = [entry.hex() for entry in table]
    station.meter.dirty = True


def _update_address(station, ind, data, now):
    if len(data) == 5 and data[1] == 0:
        data += b"\0"  # public stacks take an unassigned entry one byte short
    _need(data, 1 + ADDRESS_ENTRY)
    index, entry = data[0], data[1:6]
    if index >= ADDRESS_SLOTS:
        raise _Refused(f"address index {index} >= {ADDRESS_SLOTS}")
    config = station.config
    table = address_table(station)
    kind = entry[0]
    if kind & 0x80:
        size, domain_index, member = kind & 0x7F, entry[1] >> 7, entry[1] & 0x7F
        if size > 64 or member > 63:
            raise _Refused(f"group size {size} / member {member} out of range")
        _domain_at(station, domain_index)
    elif kind in (1, 3):
        _domain_at(station, entry[1] >> 7)
    elif kind != 0:
        raise _Refused(f"address type {kind} is not assignable")
    old = table[index]
    if old[0] & 0x80:
        _drop_member(config, old[1] >> 7, old[4])
    if kind & 0x80:
        key = (entry[1] >> 7, entry[4])
        for other, current in enumerate(table):  # one slot per group
            if other != index and current[0] & 0x80 and (current[1] >> 7, current[4]) == key:
                table[other] = bytes(ADDRESS_ENTRY)
        _drop_member(config, *key)
        config.groups.append(Membership(group=entry[4], member=entry[1] & 0x7F,
                                        size=kind & 0x7F, domain_index=entry[1] >> 7,
                                        receive_timer=entry[3] >> 4))
    table[index] = bytes(entry) if kind else bytes(ADDRESS_ENTRY)
    _store_table(station, table)
    _commit(station)
    return bytes([success(UPDATE_ADDRESS)])


def _drop_member(config, domain_index: int, group: int) -> None:
    config.groups[:] = [m for m in config.groups
                        if (m.domain_index, m.group) != (domain_index, group)]


def _query_address(station, ind, data, now):
    _need(data, 1)
    if data[0] >= ADDRESS_SLOTS:
        raise _Refused(f"address index {data[0]} >= {ADDRESS_SLOTS}")
    return bytes([success(QUERY_ADDRESS)]) + address_table(station)[data[0]]


def _update_group_address(station, ind, data, now):
    if not isinstance(ind.dst, Group) or ind.domain_index is None:
        raise _Refused("Update Group Address must come group-addressed in one of our domains")
    _need(data, ADDRESS_ENTRY)
    if not data[0] & 0x80:
        raise _Refused("the entry is not a group entry")
    member = next((m for m in station.config.groups
                   if (m.domain_index, m.group) == (ind.domain_index, ind.dst.group)), None)
    if member is None:
        raise _Refused(f"not a member of group {ind.dst.group}")
    table = address_table(station)
    member.size, member.receive_timer = data[0] & 0x7F, data[3] >> 4
    for index, entry in enumerate(table):
        if entry[0] & 0x80 and (entry[1] >> 7, entry[4]) == (member.domain_index, member.group):
            table[index] = bytes([data[0], entry[1], data[2], data[3], entry[4]])
    _store_table(station, table)
    _commit(station)
    return bytes([success(UPDATE_GROUP_ADDRESS)])


# -- NM: node mode ----------------------------------------------------------------------

def _set_node_mode(station, ind, data, now):
    if not data:
        raise _Refused("no mode")
    mode, config = data[0], station.config
    if mode == MODE_CHANGE_STATE:
        _need(data, 2)
        state = _FROM_WIRE.get(data[1])
        if state is None:
            raise _Refused(f"node state {data[1]} is not one a meter takes")
        if state != UNCONFIGURED and not config.domains:
            raise _Refused("a configured state needs a domain (Update Domain first)")
        config.state = state
        log.info("%s: node state %d", station.meter.id, data[1])
    elif mode in (MODE_OFFLINE, MODE_ONLINE):
        _need(data, 1)
        if mode == MODE_OFFLINE and config.state == CONFIGURED:
            config.state = SOFT_OFFLINE
        elif mode == MODE_ONLINE and config.state == SOFT_OFFLINE:
            config.state = CONFIGURED
    elif mode in (MODE_RESET, MODE_PHYSICAL_RESET):
        _need(data, 1)
        _reset(station)
    else:
        raise _Refused(f"node mode {mode} is unknown")
    _commit(station)
    return bytes([success(SET_NODE_MODE)])


# -- NM: memory -------------------------------------------------------------------------

def _read_only_image(station) -> bytes:
    config = station.config
    image = bytearray(47)
    image[0:6] = config.neuron_id
    image[6] = MODEL
    image[8:10] = b"\xff\xff"  # no NV fixed table
    image[10] = 0x40  # the application runs unconfigured; no NVs
    image[11:13] = b"\xff\xff"  # no SNVT structure
    image[13:21] = config.program_id
    image[21] = 0x80 | 0x40 | 0x08 | wire_state(config) & 0x07  # two domains, messages
    image[22] = ADDRESS_SLOTS << 4
    image[23] = 0x07  # 8 receive transaction records
    return bytes(image)


def _config_data(station) -> bytes:
    own = station.meter.subsystem(SUBSYSTEM)
    stored = bytes.fromhex(own.get("config_data", "")) or bytes(8) + _PL20N + bytes(6)
    byte24 = (station.config.non_group_receive_timer & 0x0F) << 4 | stored[24] & 0x0F
    return stored[:24] + bytes([byte24])


def _config_image(station) -> bytes:
    domains = station.config.domains
    table = b"".join(_domain_entry(domains[i]) if i < len(domains) else _INVALID_DOMAIN
                     for i in range(2))
    return _config_data(station) + table + b"".join(address_table(station))


def _stats_image(station) -> bytes:
    stats = station.node.stats
    return b"".join(min(int(stats.get(key, 0)), 0xFFFF).to_bytes(2, "big")
                    for key in _STAT_KEYS)


def _memory(station, mode: int, offset: int, count: int) -> bytes:
    if mode == ABSOLUTE:
        if (offset, count) != (0, 1):
            raise _Refused("absolute memory: only byte 0 (firmware version) is readable")
        return bytes([FIRMWARE_VERSION])
    images = {READ_ONLY: _read_only_image, CONFIG: _config_image, STATISTICS: _stats_image}
    if mode not in images:
        raise _Refused(f"memory mode {mode} is unknown")
    image = images[mode](station)
    if offset + count > len(image):
        raise _Refused(f"mode {mode} offset {offset} + {count} is past {len(image)} bytes")
    return image[offset:offset + count]


def _read_memory(station, ind, data, now):
    _need(data, 4)
    mode, offset, count = data[0], int.from_bytes(data[1:3], "big"), data[3]
    if count > 94:
        raise _Refused(f"{count} bytes do not fit one response APDU")
    return bytes([success(READ_MEMORY)]) + _memory(station, mode, offset, count)


def _write_memory(station, ind, data, now):
    if len(data) < 5 or len(data) != 5 + data[3]:
        raise _Refused(f"{len(data)} data bytes, expected 5 + count")
    mode, offset, count, form = data[0], int.from_bytes(data[1:3], "big"), data[3], data[4]
    if mode != CONFIG or offset + count > CONFIG_DATA:
        raise _Refused(f"mode {mode} offset {offset} count {count}: only the config "
                       f"structure's first {CONFIG_DATA} bytes are writable")
    image = bytearray(_config_data(station))
    image[offset:offset + count] = data[5:]
    station.meter.subsystem(SUBSYSTEM)["config_data"] = bytes(image).hex()
    station.config.non_group_receive_timer = image[24] >> 4
    _commit(station)
    if form & 0x08:
        _reset(station)
    return bytes([success(WRITE_MEMORY)])


def _nothing_to_do(code: int):
    def handler(station, ind, data, now):
        return bytes([success(code)])
    return handler


def _ignore(station, ind, data, now):
    return None  # another node's service pin message


_HANDLERS = {
    QUERY_STATUS: _query_status, PROXY: _proxy, CLEAR_STATUS: _clear_status,
    QUERY_XCVR: _query_xcvr, QUERY_STATUS_FLEX: _query_status,
    QUERY_XCVR_BIDIR: _query_xcvr, FULL_VERSION: _full_version,
    EXPANDED: _expanded, QUERY_ID: _query_id, RESPOND_TO_QUERY: _respond_to_query,
    UPDATE_DOMAIN: _update_domain, LEAVE_DOMAIN: _leave_domain, UPDATE_KEY: _update_key,
    UPDATE_ADDRESS: _update_address, QUERY_ADDRESS: _query_address,
    UPDATE_GROUP_ADDRESS: _update_group_address, QUERY_DOMAIN: _query_domain,
    SET_NODE_MODE: _set_node_mode, READ_MEMORY: _read_memory, WRITE_MEMORY: _write_memory,
    CHECKSUM_RECALC: _nothing_to_do(CHECKSUM_RECALC), WINK: _wink,
    MEMORY_REFRESH: _nothing_to_do(MEMORY_REFRESH), SERVICE_PIN: _ignore,
}


def service_pin(station, now: float) -> int:
    """Broadcast the service pin message (unacknowledged, flex domain, section 12.2); returns
    the send handle."""
    config = station.config
    log.info("%s: service pin message", station.meter.id)
    return station.send(bytes([SERVICE_PIN]) + config.neuron_id + config.program_id,
                        Broadcast(0), now, service=Service.UNACKD, domain_index=None)


# ---------------------------------------------------------------------------------------
# The head-end side: request builders and response parsers

class NmError(ValueError):
    """A failure response, or an answer that is not the one the request asked for."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def query_id(selector: int = SEL_UNCONFIGURED, *, mode: int | None = None, offset: int = 0,
             match: bytes = b"") -> bytes:
    """Query ID; with ``mode`` only nodes whose memory at ``offset`` equals ``match`` answer."""
    request = bytes([QUERY_ID, selector])
    if mode is not None:
        request += bytes([mode]) + offset.to_bytes(2, "big") + bytes([len(match)]) + match
    return request


def respond_to_query(selected: bool) -> bytes:
    return bytes([RESPOND_TO_QUERY, int(selected)])


def domain_entry(domain_id: bytes, subnet: int, node: int, key: bytes = bytes(6), *,
                 oma: bool = False) -> bytes:
    """A 15-byte domain table entry (``oma``: ``key`` is the first half of a 12-byte key)."""
    return (domain_id.ljust(6, b"\0") + bytes([subnet, 0x80 | node,
                                               (0x08 if oma else 0) | len(domain_id)])
            + key[:6].ljust(6, b"\0"))


def update_domain(index: int, domain_id: bytes, subnet: int, node: int,
                  key: bytes = bytes(6), *, oma: bool = False) -> bytes:
    return bytes([UPDATE_DOMAIN, index]) + domain_entry(domain_id, subnet, node, key, oma=oma)


def leave_domain(index: int) -> bytes:
    return bytes([LEAVE_DOMAIN, index])


def update_key(index: int, increment: bytes) -> bytes:
    return bytes([UPDATE_KEY, index]) + increment[:6].ljust(6, b"\0")


def update_oma_key(key: bytes, *, increment: bool = False) -> bytes:
    return bytes([EXPANDED, UPDATE_OMA_KEY, int(increment)]) + key[:12].ljust(12, b"\0")


def query_version() -> bytes:
    return bytes([EXPANDED, QUERY_VERSION])


def group_entry(group: int, *, member: int = 0, size: int = 0, domain_index: int = 0,
                receive_timer: int = 8, transmit_timer: int = 10, retries: int = 3,
                repeat_timer: int = 0) -> bytes:
    """A group address table entry (size 0: an unacknowledged, open group)."""
    return bytes([0x80 | size, domain_index << 7 | member, repeat_timer << 4 | retries,
                  receive_timer << 4 | transmit_timer, group])


UNASSIGNED = bytes(ADDRESS_ENTRY)


def update_address(index: int, entry: bytes) -> bytes:
    return bytes([UPDATE_ADDRESS, index]) + entry


def query_address(index: int) -> bytes:
    return bytes([QUERY_ADDRESS, index])


def update_group_address(entry: bytes) -> bytes:
    """Sent group-addressed: the members of that group update size and timers."""
    return bytes([UPDATE_GROUP_ADDRESS]) + entry


def query_domain(index: int = 0) -> bytes:
    return bytes([QUERY_DOMAIN, index])


def set_node_mode(mode: int, state: int | None = None) -> bytes:
    return bytes([SET_NODE_MODE, mode]) + (bytes([state]) if state is not None else b"")


def commission(domain_id: bytes, subnet: int, node: int, key: bytes = bytes(6),
               groups: tuple[bytes, ...] = ()) -> list[bytes]:
    """The requests that commission a node, in order: its domain, its address table entries
    (``group_entry`` bytes), then configured and online."""
    return ([update_domain(0, domain_id, subnet, node, key)]
            + [update_address(i, entry) for i, entry in enumerate(groups)]
            + [set_node_mode(MODE_CHANGE_STATE, STATE_CONFIGURED), set_node_mode(MODE_ONLINE)])


def query_status(*, flex: bool = False) -> bytes:
    return bytes([QUERY_STATUS_FLEX if flex else QUERY_STATUS])


def clear_status() -> bytes:
    return bytes([CLEAR_STATUS])


def query_xcvr_status(*, bidirectional: bool = False) -> bytes:
    return bytes([QUERY_XCVR_BIDIR if bidirectional else QUERY_XCVR])


def read_memory(mode: int, offset: int, count: int) -> bytes:
    return bytes([READ_MEMORY, mode]) + offset.to_bytes(2, "big") + bytes([count])


def write_memory(mode: int, offset: int, data: bytes, *, form: int = 0) -> bytes:
    return bytes([WRITE_MEMORY, mode]) + offset.to_bytes(2, "big") + bytes([len(data), form]) \
        + data


def wink() -> bytes:
    return bytes([WINK, 0])


def response_data(request: bytes, response: bytes) -> bytes:
    """The data of a success response to ``request``; NmError on a failure code or a code that
    answers something else."""
    code = request[0]
    if not response:
        raise NmError(f"empty response to 0x{code:02X}")
    if response[0] == failure(code):
        raise NmError(f"0x{code:02X} failed (0x{response[0]:02X})", response[0])
    if response[0] != success(code):
        raise NmError(f"0x{response[0]:02X} does not answer 0x{code:02X}", response[0])
    if code == EXPANDED:
        if response[1:2] != request[1:2]:
            raise NmError("expanded response for another sub-command")
        return response[2:]
    return response[1:]


def _exact(data: bytes, length: int, what: str) -> bytes:
    if len(data) != length:
        raise NmError(f"{what}: {len(data)} bytes, expected {length}")
    return data


def parse_query_id(response: bytes) -> tuple[bytes, bytes]:
    """(Neuron ID, program ID) from a Query ID response."""
    data = _exact(response_data(bytes([QUERY_ID]), response), 14, "query ID")
    return data[:6], data[6:]


def parse_service_pin(apdu: bytes) -> tuple[bytes, bytes]:
    """(Neuron ID, program ID) from a service pin message."""
    if apdu[:1] != bytes([SERVICE_PIN]) or len(apdu) != 15:
        raise NmError("not a service pin message")
    return apdu[1:7], apdu[7:]


@dataclass(frozen=True)
class NodeStatus:
    transmission_errors: int
    transaction_timeouts: int
    receive_transaction_full: int
    lost_messages: int
    missed_messages: int
    reset_cause: int
    node_state: int
    version: int
    error_log: int
    model: int


def parse_status(response: bytes, request: bytes = bytes([QUERY_STATUS])) -> NodeStatus:
    data = _exact(response_data(request, response), 15, "query status")
    return NodeStatus(*struct.unpack(">5H5B", data))


def parse_domain(response: bytes) -> Domain:
    """The Domain a Query Domain answered (its key reads as zeros)."""
    data = _exact(response_data(bytes([QUERY_DOMAIN]), response), DOMAIN_ENTRY, "domain")
    length = data[8] & 0x07
    if data[8] & 0x80 or length not in (0, 1, 3, 6):
        raise NmError("invalid domain entry")
    return Domain(data[:length], data[6], data[7] & 0x7F, data[9:15])


@dataclass(frozen=True)
class AddressEntry:
    """One address table entry: kind "group" (group, member, size), "subnet_node" (subnet,
    node), "broadcast" (subnet) or "unassigned"."""
    kind: str
    domain_index: int = 0
    group: int | None = None
    member: int | None = None
    size: int | None = None
    subnet: int | None = None
    node: int | None = None
    receive_timer: int | None = None
    transmit_timer: int = 0
    retries: int = 0
    repeat_timer: int = 0

    @classmethod
    def parse(cls, entry: bytes) -> "AddressEntry":
        entry = _exact(entry, ADDRESS_ENTRY, "address entry")
        timers = dict(repeat_timer=entry[2] >> 4, retries=entry[2] & 0x0F)
        if entry[0] & 0x80:
            return cls("group", entry[1] >> 7, group=entry[4], member=entry[1] & 0x7F,
                       size=entry[0] & 0x7F, receive_timer=entry[3] >> 4,
                       transmit_timer=entry[3] & 0x0F, **timers)
        if entry[0] == 1:
            return cls("subnet_node", entry[1] >> 7, subnet=entry[4], node=entry[1] & 0x7F,
                       transmit_timer=entry[3] & 0x0F, **timers)
        if entry[0] == 3:
            return cls("broadcast", entry[1] >> 7, subnet=entry[4],
                       transmit_timer=entry[3] & 0x0F, **timers)
        return cls("unassigned")


def parse_address(response: bytes) -> AddressEntry:
    return AddressEntry.parse(response_data(bytes([QUERY_ADDRESS]), response))


@dataclass(frozen=True)
class XcvrStatus:
    """Transceiver status (designed register mapping, module docstring): the carrier the
    request came on, its strength and margin in dB (None: not measured)."""
    registers: bytes
    secondary: bool
    strength_db: int | None
    margin_db: int | None

    @classmethod
    def parse(cls, registers: bytes) -> "XcvrStatus":
        registers = _exact(registers, 7, "transceiver registers")
        secondary = bool(registers[2] & 0x08)
        if registers[3:] == PERFECT_XCVR[3:]:
            return cls(registers, secondary, None, None)
        strength = registers[4] if secondary else registers[3]
        margin = registers[6] if secondary else registers[5]
        return cls(registers, secondary, None if strength == 0xFF else strength, margin)


def parse_xcvr_status(response: bytes, *, bidirectional: bool = False) -> XcvrStatus:
    request = query_xcvr_status(bidirectional=bidirectional)
    return XcvrStatus.parse(response_data(request, response))


def parse_read_memory(response: bytes, count: int | None = None) -> bytes:
    data = response_data(bytes([READ_MEMORY]), response)
    if count is not None:
        _exact(data, count, "read memory")
    return data
