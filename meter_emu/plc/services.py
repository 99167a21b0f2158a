"""The OSGP network services (DESIGN.md D5): Fast Commission Message (FCM, 0x41), Automated
Device Discovery (ADD, 0x42) and Automatic Topology Management (ATM, 0x43), meter side and the
head-end's builders and parsers. Sans-I/O: ``handle(station, ind, now)`` answers what a
MeterStation's node delivers. Repeating (LTEP) is lon/ltep.py.

The slides give the services' purpose only; the codes, the global discovery domain and every
layout below are **designed** (no public text has them: reference/lower-layers.md section 8).

**Global discovery domain.** Every OSGP meter belongs to the 3-byte domain ``4F 53 47``
("OSG") from the factory, next to its application domain (``join_discovery_domain``: a
NodeConfig entry, index 0 until an FCM puts the application domain there and the discovery
entry after it; a node with two other domains is out of it). Its subnet/node there comes from
its Neuron ID (``discovery_address``: subnet 1-254, node 1-127), so an uncommissioned meter can
be addressed, answer and repeat by subnet/node; subnet 255 is left to head-ends and data
concentrators. The domain key is all zeros: discovery is open, FCM carries its own security.

**ADD** (request: unauthenticated, usually a broadcast REQUEST in the discovery domain)::

    42 flags window hops modulus remainder [first-NID(6) last-NID(6)]
    flags     bit 0 only meters without an application domain answer, bit 1 an ID range follows
    window    response window in 100 ms: a meter answers after a random delay inside it
    hops      repeaters the request went through (the head-end sets it; echoed in the answer)
    modulus   hash slice (the patent's "IDs are hashed"): meters whose CRC-16 (lon/frame.py)
    remainder of their Neuron ID mod ``modulus`` is ``remainder`` answer; 0 or 1: all

    answer: 00 NID(6) program-ID(8) node-state subnet node hops link(5) serial-length serial

``subnet node`` is the meter's address in its application domain (0 0: not commissioned),
``link`` the ATM block below for the carrier the request came on. A meter outside the
selection stays silent. Through repeaters: an LTEP request whose agent broadcasts the ADD and
gathers the answers (lon/ltep.py, several answers in one 0x4D response).

**ATM** (request: unauthenticated, any addressing, any time)::

    43 [hops]                    answer: 00 hops primary(5) secondary(5)
    link block: flags strength(2) margin(2)     (int16 MSB, tenths of a dB)
    flags     bit 0 measured, bit 1 the request came on this carrier

The carrier the request came on reports its measurement (Indication.link); the other the last
one this meter took on it (from any ADD, ATM or FCM), if any. Strength and margin at a hop are
what the meter received; the head-end measures the other direction on the answer and takes the
minimum (section 8.4). A medium that measures nothing (CN/IP) leaves bit 0 clear and reports
0x7FFF, "no loss", so that a path metric taking minima treats an IP hop as perfect.

**FCM** (a unicast REQUEST, by Neuron ID in the discovery domain or at the meter's address;
sealed like a table service: ``41 ‖ parameters ‖ sequence ‖ digest`` under the meter's unicast
OMA key and sequence number, plc/server.py ``secured``)::

    41 00                                       challenge: answer 00 state subnet node
    41 01 flags domain-length domain subnet node auth-key(6|12)
          group-count [group member size receive-timer] ... broadcast-count [group-ID(2)] ...
          [unicast-key broadcast-key]           (12 bytes each, 16 with flags bit 2)
    flags     bit 0 OMA keys follow, bit 1 the 14908.1 key is 12 bytes (OMA 96-bit), bit 2
              16-byte OMA keys (AES mode)

The meter applies the whole personality at once or nothing: application domain at index 0
(the discovery entry after it), 14908.1 group memberships, the OSGP broadcast groups (EP27's
list), the OMA keys if present; node state configured; it persists (``save_config``) and
updates ET04 (subnet, node, neuron state). Answers: ``00`` done; ``01`` malformed; ``03`` keys
in a request that came unencrypted (keys never travel in clear: RC4-encrypt the request, AES
always is); ``04`` values it cannot take (subnet 0, node 0 or above 127, the discovery domain
as application domain, group member above 63, more groups than the tables hold); and, from the
OSGP security path, ``0B`` (wrong key, nothing changes) and ``0C``/``1F`` (sequence). The
response is sealed with the key the request came under, also when it carried new keys.
ET04.128 FCM Message Count (documented: FCMs received in the current day, at most 100, cleared
at 00:00) counts every FCM received, authenticated or not; at 100 the meter answers a bare
``06`` Device Busy without trying the key, which caps online key guessing at 100 a day. The day
is the meter clock's UTC day; the count restarts at the first FCM of a new day.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

from ..device import keys
from ..device.errors import ResponseCode
from ..lon.config import CONFIGURED, Domain, Membership
from ..lon.frame import Broadcast, Group, SubnetNode, crc16_lon
from ..lon.node import DEFER, Indication, LinkInfo, Service
from . import ADD, ATM, FCM

log = logging.getLogger(__name__)

DISCOVERY_DOMAIN = b"OSG"
#: subnet left to head-ends and data concentrators in the discovery domain
HEADEND_SUBNET = 255
ONLY_UNCOMMISSIONED, ID_RANGE = 0x01, 0x02
FCM_CHALLENGE, FCM_COMMISSION = 0x00, 0x01
KEYS_PRESENT, OMA_AUTH_KEY, AES_KEYS = 0x01, 0x02, 0x04
MAX_FCM_PER_DAY = 100
NOT_MEASURED = 0x7FFF
MEASURED, THIS_CARRIER = 0x01, 0x02
#: designed: how many 14908.1 groups an FCM may set (the address table's 15 entries)
MAX_GROUPS = 15


class ServiceFormatError(ValueError):
    """A network-service APDU that does not parse (the meter answers 0x01)."""


# ---------------------------------------------------------------------------------------
# The global discovery domain

#: subnet/node pairs of the discovery domain meters may take (subnets 1-254, nodes 1-127)
DISCOVERY_SLOTS = (HEADEND_SUBNET - 1) * 127


def discovery_address(neuron_id: bytes) -> SubnetNode:
    """A meter's subnet/node in the discovery domain, derived from its Neuron ID: the 48-bit
    number modulo the 32,258 slots (``designed``), so consecutive Neuron IDs (a production
    batch, a fleet) take distinct addresses up to 32,258 meters. (A hash would give a
    1,000-meter fleet some 15 pairs of meters sharing an address.)"""
    slot = int.from_bytes(bytes(neuron_id), "big") % DISCOVERY_SLOTS
    return SubnetNode(1 + slot // 127, 1 + slot % 127)


def discovery_index(config) -> int | None:
    return config.domain_index(DISCOVERY_DOMAIN)


def join_discovery_domain(config) -> bool:
    """Add the discovery domain entry to ``config`` if absent and there is room (two domains
    at most); returns whether it changed anything."""
    if discovery_index(config) is not None or len(config.domains) >= 2:
        return False
    address = discovery_address(config.neuron_id)
    config.domains.append(Domain(DISCOVERY_DOMAIN, address.subnet, address.node))
    config.changed()
    return True


def headend_domain(node: int = 1) -> Domain:
    """The discovery-domain entry of a head-end or data concentrator (subnet 255)."""
    return Domain(DISCOVERY_DOMAIN, HEADEND_SUBNET, node)


def application_domain(config) -> Domain | None:
    for domain in config.domains:
        if domain.id != DISCOVERY_DOMAIN:
            return domain
    return None


# ---------------------------------------------------------------------------------------
# Link quality (ATM block)

@dataclass(frozen=True, slots=True)
class LinkQuality:
    """Strength and margin in dB (None: not measured) on one carrier."""
    strength_db: float | None = None
    margin_db: float | None = None
    this_carrier: bool = False

    @property
    def measured(self) -> bool:
        return self.strength_db is not None


def _tenths(value: float | None) -> int:
    if value is None:
        return NOT_MEASURED
    return max(-0x8000, min(NOT_MEASURED - 1, round(value * 10)))


def encode_link(quality: LinkQuality) -> bytes:
    flags = (MEASURED if quality.measured else 0) | (THIS_CARRIER if quality.this_carrier else 0)
    strength = _tenths(quality.strength_db)
    margin = _tenths(quality.margin_db if quality.measured else None)
    return bytes((flags,)) + strength.to_bytes(2, "big", signed=True) + margin.to_bytes(
        2, "big", signed=True)


def decode_link(data: bytes) -> LinkQuality:
    if len(data) != 5:
        raise ServiceFormatError(f"a link block is 5 bytes, not {len(data)}")
    flags = data[0]
    if not flags & MEASURED:
        return LinkQuality(this_carrier=bool(flags & THIS_CARRIER))
    strength = int.from_bytes(data[1:3], "big", signed=True) / 10
    margin = int.from_bytes(data[3:5], "big", signed=True)
    return LinkQuality(strength, None if margin == NOT_MEASURED else margin / 10,
                       bool(flags & THIS_CARRIER))


#: the last measurement per station and carrier (False primary, True secondary)
_heard: "weakref.WeakKeyDictionary[object, dict[bool, LinkInfo]]" = weakref.WeakKeyDictionary()


def _remember(station, link: LinkInfo) -> None:
    if link.strength_db is not None:
        _heard.setdefault(station, {})[link.alt_path] = link


def _quality(station, link: LinkInfo, secondary: bool) -> LinkQuality:
    here = link.alt_path == secondary
    if here:
        info = link
    else:
        info = _heard.get(station, {}).get(secondary)
    if info is None or info.strength_db is None:
        return LinkQuality(this_carrier=here)
    return LinkQuality(info.strength_db, info.margin_db, here)


# ---------------------------------------------------------------------------------------
# ADD

@dataclass(frozen=True, slots=True)
class DiscoveryRequest:
    only_uncommissioned: bool = False
    window_s: float = 0.0
    hops: int = 0
    modulus: int = 0
    remainder: int = 0
    first: bytes | None = None
    last: bytes | None = None

    def selects(self, neuron_id: bytes, commissioned: bool) -> bool:
        if self.only_uncommissioned and commissioned:
            return False
        if self.first is not None and not self.first <= neuron_id <= self.last:
            return False
        return self.modulus <= 1 or crc16_lon(neuron_id) % self.modulus == self.remainder


def discovery_request(*, only_uncommissioned: bool = False, window_s: float = 1.0,
                      hops: int = 0, modulus: int = 0, remainder: int = 0,
                      first: bytes | None = None, last: bytes | None = None) -> bytes:
    """The ADD request APDU (see the module docstring)."""
    window = round(window_s * 10)
    if not 0 <= window <= 255 or not 0 <= hops <= 255:
        raise ValueError("window 0..25.5 s, hops 0..255")
    if not 0 <= modulus <= 255 or (modulus > 1 and not 0 <= remainder < modulus):
        raise ValueError(f"slice {remainder} mod {modulus} is not valid")
    flags = ONLY_UNCOMMISSIONED if only_uncommissioned else 0
    tail = b""
    if first is not None or last is not None:
        first, last = bytes(first or bytes(6)), bytes(last or b"\xff" * 6)
        if len(first) != 6 or len(last) != 6:
            raise ValueError("a Neuron ID range is two 6-byte IDs")
        flags |= ID_RANGE
        tail = first + last
    return bytes((ADD, flags, window, hops, modulus, remainder)) + tail


def parse_discovery_request(apdu: bytes) -> DiscoveryRequest:
    if len(apdu) < 6 or apdu[0] != ADD:
        raise ServiceFormatError(f"an ADD request is at least 6 bytes, not {len(apdu)}")
    flags = apdu[1]
    if flags & ~(ONLY_UNCOMMISSIONED | ID_RANGE):
        raise ServiceFormatError(f"unknown ADD flags {flags:02x}")
    first = last = None
    if flags & ID_RANGE:
        if len(apdu) != 18:
            raise ServiceFormatError("an ADD request with an ID range is 18 bytes")
        first, last = bytes(apdu[6:12]), bytes(apdu[12:18])
    elif len(apdu) != 6:
        raise ServiceFormatError(f"an ADD request without an ID range is 6 bytes, "
                                 f"not {len(apdu)}")
    modulus, remainder = apdu[4], apdu[5]
    if modulus > 1 and remainder >= modulus:
        raise ServiceFormatError(f"slice {remainder} mod {modulus} is empty")
    return DiscoveryRequest(bool(flags & ONLY_UNCOMMISSIONED), apdu[2] / 10, apdu[3],
                            modulus, remainder, first, last)


@dataclass(frozen=True, slots=True)
class DiscoveryAnswer:
    """One meter found: identity, state, application address and the ATM data."""
    neuron_id: bytes
    program_id: bytes
    state: int
    subnet: int
    node: int
    hops: int
    link: LinkQuality
    serial_number: str
    source: SubnetNode | None = field(default=None, compare=False)

    @property
    def commissioned(self) -> bool:
        return self.subnet != 0


def discovery_answer(station, request: DiscoveryRequest, link: LinkInfo) -> bytes:
    config = station.config
    app = application_domain(config)
    serial = station.meter.profile.identity.serial_number.encode()[:32]
    quality = _quality(station, link, link.alt_path)
    return (bytes((ResponseCode.OK,)) + config.neuron_id + config.program_id
            + bytes((config.state, app.subnet if app else 0, app.node if app else 0,
                     request.hops)) + encode_link(quality) + bytes((len(serial),)) + serial)


def parse_discovery_response(apdu: bytes, source: SubnetNode | None = None) -> DiscoveryAnswer:
    """An ADD answer (``ServiceFormatError`` if it is not one)."""
    if len(apdu) < 25 or apdu[0] != ResponseCode.OK or len(apdu) != 25 + apdu[24]:
        raise ServiceFormatError(f"not an ADD answer: {bytes(apdu[:4]).hex()}..")
    return DiscoveryAnswer(bytes(apdu[1:7]), bytes(apdu[7:15]), apdu[15], apdu[16], apdu[17],
                           apdu[18], decode_link(apdu[19:24]),
                           bytes(apdu[25:]).decode("ascii", "replace"), source)


# ---------------------------------------------------------------------------------------
# ATM

@dataclass(frozen=True, slots=True)
class TopologyReport:
    hops: int
    primary: LinkQuality
    secondary: LinkQuality


def atm_request(hops: int = 0) -> bytes:
    return bytes((ATM, hops))


def parse_atm_response(apdu: bytes) -> TopologyReport:
    if len(apdu) != 12 or apdu[0] != ResponseCode.OK:
        raise ServiceFormatError(f"not an ATM answer: {bytes(apdu[:4]).hex()}")
    return TopologyReport(apdu[1], decode_link(apdu[2:7]), decode_link(apdu[7:12]))


def _atm(station, ind: Indication) -> bytes:
    if len(ind.apdu) > 2:
        raise ServiceFormatError(f"an ATM request is 1 or 2 bytes, not {len(ind.apdu)}")
    hops = ind.apdu[1] if len(ind.apdu) == 2 else 0
    return (bytes((ResponseCode.OK, hops)) + encode_link(_quality(station, ind.link, False))
            + encode_link(_quality(station, ind.link, True)))


# ---------------------------------------------------------------------------------------
# FCM

@dataclass
class Personality:
    """What one FCM sets (see the module docstring)."""
    domain_id: bytes
    subnet: int
    node: int
    auth_key: bytes = bytes(6)
    groups: list[Membership] = field(default_factory=list)
    broadcast_groups: list[int] = field(default_factory=list)
    unicast_key: bytes | None = None
    broadcast_key: bytes | None = None

    def check(self) -> None:
        """Raise ValueError for what a meter answers 0x04 to."""
        if len(self.domain_id) not in (0, 1, 3, 6) or self.domain_id == DISCOVERY_DOMAIN:
            raise ValueError(f"domain ID {self.domain_id.hex()!r} cannot be the application "
                             "domain")
        if not 1 <= self.subnet <= 255 or not 1 <= self.node <= 127:
            raise ValueError(f"address {self.subnet}/{self.node} is not valid")
        if len(self.auth_key) not in (6, 12):
            raise ValueError("a 14908.1 key is 6 or 12 bytes")
        if len(self.groups) > MAX_GROUPS:
            raise ValueError(f"{len(self.groups)} groups; at most {MAX_GROUPS}")
        for m in self.groups:
            if not (0 <= m.group <= 255 and 0 <= m.member <= 63 and 0 <= m.size <= 255
                    and 0 <= m.receive_timer <= 15):
                raise ValueError(f"group membership {m} is not valid")
        if any(not 0 < g <= 0xFFFF for g in self.broadcast_groups):
            raise ValueError("broadcast group IDs are 1..0xFFFF")
        if (self.unicast_key is None) != (self.broadcast_key is None):
            raise ValueError("both OMA keys or none")
        if self.unicast_key is not None and (
                len(self.unicast_key) not in (12, 16)
                or len(self.broadcast_key) != len(self.unicast_key)):
            raise ValueError("OMA keys are 12 or 16 bytes, both the same length")


def fcm_challenge() -> bytes:
    """The FCM challenge: checks key and sequence number, changes nothing. Seal it with
    plc/secure.py ``ClientSession.request``."""
    return bytes((FCM, FCM_CHALLENGE))


def fcm_request(personality: Personality) -> bytes:
    """The FCM commission APDU, before sealing (``ClientSession.request``; with OMA keys, a
    session with ``encrypt=True`` in RC4 mode)."""
    p = personality
    p.check()
    flags = ((KEYS_PRESENT if p.unicast_key is not None else 0)
             | (OMA_AUTH_KEY if len(p.auth_key) == 12 else 0)
             | (AES_KEYS if p.unicast_key is not None and len(p.unicast_key) == 16 else 0))
    out = bytearray((FCM, FCM_COMMISSION, flags, len(p.domain_id)))
    out += p.domain_id + bytes((p.subnet, p.node)) + p.auth_key + bytes((len(p.groups),))
    for m in p.groups:
        out += bytes((m.group, m.member, m.size, m.receive_timer))
    out.append(len(p.broadcast_groups))
    for group in p.broadcast_groups:
        out += group.to_bytes(2, "big")
    if p.unicast_key is not None:
        out += p.unicast_key + p.broadcast_key
    return bytes(out)


def parse_fcm(apdu: bytes) -> Personality:
    """The personality in an FCM commission APDU (``ServiceFormatError`` if malformed; values
    are checked by ``Personality.check``)."""
    try:
        if apdu[0] != FCM or apdu[1] != FCM_COMMISSION:
            raise ServiceFormatError("not an FCM commission")
        flags, length = apdu[2], apdu[3]
        if flags & ~(KEYS_PRESENT | OMA_AUTH_KEY | AES_KEYS) or length not in (0, 1, 3, 6):
            raise ServiceFormatError(f"flags {flags:02x} or domain length {length} not valid")
        pos = 4 + length
        domain = bytes(apdu[4:pos])
        subnet, node = apdu[pos], apdu[pos + 1]
        key_length = 12 if flags & OMA_AUTH_KEY else 6
        pos += 2
        auth_key = bytes(apdu[pos:pos + key_length])
        pos += key_length
        count = apdu[pos]
        pos += 1
        groups = []
        for _ in range(count):
            g = apdu[pos:pos + 4]
            if len(g) != 4:
                raise IndexError
            groups.append(Membership(g[0], g[1], g[2], 0, g[3]))
            pos += 4
        count = apdu[pos]
        pos += 1
        broadcast = []
        for _ in range(count):
            if pos + 2 > len(apdu):
                raise IndexError
            broadcast.append(int.from_bytes(apdu[pos:pos + 2], "big"))
            pos += 2
        unicast_key = broadcast_key = None
        if flags & KEYS_PRESENT:
            size = 16 if flags & AES_KEYS else 12
            unicast_key = bytes(apdu[pos:pos + size])
            broadcast_key = bytes(apdu[pos + size:pos + 2 * size])
            pos += 2 * size
        if pos != len(apdu) or len(auth_key) != key_length:
            raise ServiceFormatError(f"FCM length {len(apdu)} does not match its fields ({pos})")
    except IndexError:
        raise ServiceFormatError(f"FCM ends inside its fields ({len(apdu)} bytes)") from None
    return Personality(domain, subnet, node, auth_key, groups, broadcast, unicast_key,
                       broadcast_key)


def _count_fcm(station) -> bool:
    """Count one FCM received today; False when the day's 100 are used up."""
    meter = station.meter
    day = int(station.clock.now() // 86400)
    state = meter.subsystem("fcm", day=day, count=0)
    if state["day"] != day:
        state["day"], state["count"] = day, 0
    if state["count"] >= MAX_FCM_PER_DAY:
        return False
    state["count"] += 1
    meter.dirty = True
    from ..tables.extended import set_system_fields
    set_system_fields(meter, fcm_message_count=state["count"])
    return True


def _fcm_executor(station):
    def execute(apdu: bytes, encrypted: bool, at: float) -> bytes:
        config = station.config
        if apdu[1:2] == bytes((FCM_CHALLENGE,)) and len(apdu) == 2:
            app = application_domain(config)
            return bytes((ResponseCode.OK, config.state, app.subnet if app else 0,
                          app.node if app else 0))
        try:
            personality = parse_fcm(apdu)
        except ServiceFormatError as exc:
            log.info("%s: FCM refused (0x01): %s", station.meter.id, exc)
            return bytes((ResponseCode.ERR,))
        try:
            personality.check()
        except ValueError as exc:
            log.info("%s: FCM refused (0x04): %s", station.meter.id, exc)
            return bytes((ResponseCode.ONP,))
        if personality.unicast_key is not None and not encrypted:
            log.warning("%s: FCM refused (0x03): OMA keys in an unencrypted request",
                        station.meter.id)
            return bytes((ResponseCode.ISC,))
        return _commission(station, personality)
    return execute


def _commission(station, p: Personality) -> bytes:
    """Apply ``p`` at once: every check that can fail comes before the first change."""
    from ..tables.extended import set_system_fields
    from ..tables.system import set_broadcast_groups
    meter, config = station.meter, station.config
    try:
        set_broadcast_groups(meter, list(p.broadcast_groups))  # checks its slots, then sets
    except ValueError as exc:
        log.info("%s: FCM refused (0x04): %s", meter.id, exc)
        return bytes((ResponseCode.ONP,))
    discovery = discovery_address(config.neuron_id)
    config.domains = [Domain(p.domain_id, p.subnet, p.node, p.auth_key),
                      Domain(DISCOVERY_DOMAIN, discovery.subnet, discovery.node)]
    config.groups = list(p.groups)
    config.state = CONFIGURED
    station.save_config()
    if p.unicast_key is not None:
        keys.set_oma_key(meter, keys.UNICAST, p.unicast_key)
        keys.set_oma_key(meter, keys.BROADCAST, p.broadcast_key)
    set_system_fields(meter, subnet_id=p.subnet, node_id=p.node, neuron_state=CONFIGURED)
    log.info("%s: commissioned by FCM: domain %s, %d/%d, %d groups, %d broadcast groups%s",
             meter.id, p.domain_id.hex() or "(none)", p.subnet, p.node, len(p.groups),
             len(p.broadcast_groups), ", new OMA keys" if p.unicast_key else "")
    return bytes((ResponseCode.OK,))


# ---------------------------------------------------------------------------------------
# Meter side

def handle(station, ind: Indication, now: float):
    """An FCM, ADD or ATM message delivered to ``station``: the answer, DEFER or None."""
    _remember(station, ind.link)
    request = ind.service == Service.REQUEST
    code = ind.apdu[0]
    multicast = isinstance(ind.dst, (Broadcast, Group))
    try:
        if code == ATM:
            return _atm(station, ind) if request else None
        if code == ADD:
            return _discover(station, ind, now) if request else None
        if not request or multicast:
            log.info("%s: FCM ignored: it must be a unicast request", station.meter.id)
            return None
        if not _count_fcm(station):
            log.warning("%s: FCM refused (0x06): %d FCMs today already", station.meter.id,
                        MAX_FCM_PER_DAY)
            return bytes((ResponseCode.BSY,))
        return station.server.secured(bytes(ind.apdu), _fcm_executor(station))
    except ServiceFormatError as exc:
        log.info("%s: %s request refused: %s", station.meter.id,
                 {ADD: "ADD", ATM: "ATM"}.get(code, "FCM"), exc)
        if not request or multicast:
            return None  # a malformed broadcast: every meter answering would flood the line
        return bytes((ResponseCode.ERR,))


def _discover(station, ind: Indication, now: float):
    request = parse_discovery_request(ind.apdu)
    config = station.config
    if not request.selects(config.neuron_id, application_domain(config) is not None):
        return None
    answer = discovery_answer(station, request, ind.link)
    node = station.node
    if request.window_s <= 0 or not isinstance(ind.dst, (Broadcast, Group)):
        return answer
    call_at = getattr(node, "call_at", None)
    if call_at is None:  # the node has no timer for us yet: answer at once
        return answer
    ref = ind.ref
    call_at(now + station.rng.uniform(0.0, request.window_s),
            lambda when: node.respond(ref, answer, when))
    return DEFER


__all__ = [
    "DISCOVERY_DOMAIN", "DiscoveryAnswer", "DiscoveryRequest", "LinkQuality", "Personality",
    "ServiceFormatError", "TopologyReport", "atm_request", "discovery_address",
    "discovery_request", "fcm_challenge", "fcm_request", "handle", "headend_domain",
    "join_discovery_domain", "parse_atm_response", "parse_discovery_request",
    "parse_discovery_response", "parse_fcm",
]
