"""Repeating: the LTEP proxy (APDU code 0x4D, failure 0x4C), by which any meter forwards a
message along a chain of up to 15 repeaters to an agent that delivers it to the target, and
relays the answer back. Sans-I/O: a repeater or agent is a MeterStation, which sends with
``station.send(..., on_done=)`` and answers a deferred REQUEST with ``node.respond``.

Request (reference/lower-layers.md section 8.3, byte by byte)::

    4D  hdr  [repeater address] x count  [txctrl if count > 0]  sicb  txctrl  [altkey]
        target-address  target-APDU (code + data)

    hdr     bit 7 uniform by destination, 6 long timer, 5 all agents, 4 uniform by source,
            bits 3..0 count: repeaters still to go after the node that receives it
    address 1 byte [path|node] when a uniform flag is set (subnet: the receiver's own subnet,
            or the sender's), else subnet + [path|node]
    txctrl  retry count (bits 7..4), transmit timer code (bits 3..0)
    sicb    target address type (7..5), path (4), service (3..2: 0 ACKD, 1 UNACKD_RPT,
            2 UNACKD, 3 REQUEST), mode (1..0: 0 normal, 1 zero-sync, 2 alternate key,
            3 attenuate)
    altkey  (mode 2) [0|type(2)] + 6 key deltas (12 when type is 1, OMA)
    target  0 group (group, size) · 1 subnet/node (subnet, [path|node]) · 2 Neuron ID (subnet,
            6 bytes) · 3 broadcast (subnet, backlog) · 4 group (group) · 5 node, subnet of the
            sender · 6 Neuron ID (6 bytes, subnet 0) · 7 node, the receiver's own subnet

A node receiving count > 0 removes the first address, sends the rest to that repeater with
count - 1 and the same service (dropping the repeaters' txctrl when the count reaches 0), and
relays the answer it gets back unchanged. With count 0 it is the agent: it sends the target
APDU to the target with the sicb's service and txctrl. Answers: ``4D ‖ target response`` (an
ACKD or unacknowledged target: ``4D`` alone), or ``4C ‖ count``, the count in the request the
failing node received (no answer from its next hop, a malformed request).

Designed where the public stack is silent or would report the wrong hop:

* **Timer extension per hop.** A repeater that received count ``c`` adds ``c`` x 256 ms to the
  last retry timer of its forward (512 ms per hop with the long-timer flag or a timer code of 10
  or more), so every node waits longer than the hop after it, and a lost target is reported by
  the node whose next hop failed, not by one upstream. The public stack adds a flat 256 ms for
  short timer codes. The head-end waits ``proxy_extension_s`` more than its own timer.
* **Several answers in one response.** A REQUEST to a broadcast or group target (discovery
  through repeaters) collects every response until the agent's last retry timer ends and
  answers ``4D ‖ total ‖ [length ‖ subnet ‖ node ‖ response APDU] ...`` (``total``: answers
  received; as many as fit in ``MAX_RESPONSE`` bytes follow, so a head-end that sees fewer than
  ``total`` narrows its request and asks again).
* Zero-sync, attenuate and the path bits select PHY behaviour this medium does not have: they
  are accepted and have no effect (the node applies its own alternate-path rule). The broadcast
  backlog byte is carried and ignored. An alternate-key request is refused (``4C``): the node
  authenticates with its domain keys only.
* All-agents (a repeater that also delivers the target APDU unacknowledged, for broadcast
  targets) is done as the public stack does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..plc import LTEP_FAILURE, LTEP_SUCCESS
from .frame import Address, Broadcast, Group, NeuronId, SubnetNode
from .node import DEFER, Completion, Indication, Service

log = logging.getLogger(__name__)

UNIFORM_BY_DEST, LONG_TIMER, ALL_AGENTS, UNIFORM_BY_SRC = 0x80, 0x40, 0x20, 0x10
MAX_COUNT = 15
#: target address types (sicb bits 7..5) and the bytes each takes
GROUP, SUBNET_NODE, NEURON_ID, BROADCAST = 0, 1, 2, 3
GROUP_COMPACT, NODE_OF_SOURCE, NEURON_ID_COMPACT, NODE_OF_DEST = 4, 5, 6, 7
_TARGET_SIZES = (2, 2, 7, 2, 1, 1, 6, 1)
MODE_NORMAL, MODE_ZERO_SYNC, MODE_ALT_KEY, MODE_ATTENUATE = 0, 1, 2, 3
#: designed: the largest multi-answer response (what a 14908.1 application buffer carries)
MAX_RESPONSE = 228


class LtepError(ValueError):
    """A malformed LTEP request or response."""


@dataclass(frozen=True, slots=True)
class Forward:
    """What a repeater does: send ``apdu`` to ``next_hop`` (subnet/node)."""
    count: int  # as received
    next_hop: SubnetNode
    retries: int
    tx_timer: int
    long_timer: bool
    apdu: bytes  # 4D with count - 1
    agent: "Agent | None"  # all-agents: also deliver as agent


@dataclass(frozen=True, slots=True)
class Agent:
    """What the agent does: send ``apdu`` to ``target`` with ``service``."""
    target: Address
    service: Service
    retries: int
    tx_timer: int
    long_timer: bool
    expected: int | None  # group size, for a group REQUEST
    mode: int
    apdu: bytes

    @property
    def multi(self) -> bool:
        return isinstance(self.target, (Broadcast, Group))


def _hop(data: bytes, pos: int, uniform: bool, subnet: int) -> tuple[SubnetNode, int]:
    if uniform:
        return SubnetNode(subnet, data[pos] & 0x7F), pos + 1
    return SubnetNode(data[pos], data[pos + 1] & 0x7F), pos + 2


def parse_request(apdu: bytes, *, own_subnet: int = 0, source_subnet: int = 0
                  ) -> Forward | Agent:
    """What a node receiving this LTEP request must do; ``LtepError`` says what is wrong."""
    if len(apdu) < 2 or apdu[0] != LTEP_SUCCESS:
        raise LtepError("not an LTEP request")
    hdr, count = apdu[1], apdu[1] & 0x0F
    long_timer = bool(hdr & LONG_TIMER)
    if count == 0:
        return _parse_agent(apdu, 2, long_timer, own_subnet, source_subnet)
    uniform = bool(hdr & (UNIFORM_BY_DEST | UNIFORM_BY_SRC))
    size = 1 if uniform else 2
    txc_pos = 2 + size * count
    if len(apdu) < txc_pos + 1 + 3:  # txctrl, then at least sicb, txctrl, one target byte
        raise LtepError(f"{len(apdu)} bytes are too short for {count} repeater addresses")
    subnet = source_subnet if hdr & UNIFORM_BY_SRC else own_subnet
    next_hop, after = _hop(apdu, 2, uniform, subnet)
    if not 1 <= next_hop.subnet <= 255 or not 1 <= next_hop.node <= 127:
        raise LtepError(f"repeater address {next_hop.subnet}/{next_hop.node} is not valid")
    txctrl = apdu[txc_pos]
    rest = apdu[after:txc_pos] + (apdu[txc_pos:] if count > 1 else apdu[txc_pos + 1:])
    forward = bytes((LTEP_SUCCESS, (hdr & 0xF0) | (count - 1))) + rest
    agent = None
    if hdr & ALL_AGENTS:
        agent = _parse_agent(apdu, txc_pos + 1, long_timer, own_subnet, source_subnet)
        agent = Agent(agent.target, Service.UNACKD, agent.retries, agent.tx_timer,
                      long_timer, None, agent.mode, agent.apdu)
    return Forward(count, next_hop, txctrl >> 4, txctrl & 0x0F, long_timer, forward, agent)


def _parse_agent(apdu: bytes, pos: int, long_timer: bool, own_subnet: int,
                 source_subnet: int) -> Agent:
    if len(apdu) < pos + 2:
        raise LtepError("no sicb and txctrl for the agent")
    sicb, txctrl = apdu[pos], apdu[pos + 1]
    kind, service, mode = sicb >> 5, Service((sicb >> 2) & 3), sicb & 3
    pos += 2
    if mode == MODE_ALT_KEY:
        if len(apdu) <= pos:
            raise LtepError("alternate key missing")
        pos += 1 + (12 if apdu[pos] & 3 == 1 else 6)
    size = _TARGET_SIZES[kind]
    if len(apdu) < pos + size + 1:
        raise LtepError(f"target address type {kind} or target APDU missing")
    a = apdu[pos:pos + size]
    expected = None
    if kind == GROUP:
        target, expected = Group(a[0]), a[1] or None
    elif kind == GROUP_COMPACT:
        target = Group(a[0])
    elif kind == SUBNET_NODE:
        target = SubnetNode(a[0], a[1] & 0x7F)
    elif kind == NEURON_ID:
        target = NeuronId(bytes(a[1:7]), a[0])
    elif kind == NEURON_ID_COMPACT:
        target = NeuronId(bytes(a), 0)
    elif kind == BROADCAST:
        target = Broadcast(a[0])
    else:
        target = SubnetNode(source_subnet if kind == NODE_OF_SOURCE else own_subnet,
                            a[0] & 0x7F)
    if isinstance(target, SubnetNode) and not (1 <= target.subnet and 1 <= target.node):
        raise LtepError(f"target address {target.subnet}/{target.node} is not valid")
    return Agent(target, service, txctrl >> 4, txctrl & 0x0F, long_timer, expected, mode,
                 bytes(apdu[pos + size:]))


def extension_s(count: int, tx_timer: int, long_timer: bool) -> float:
    """Designed: what a node that received ``count`` adds to its last retry timer."""
    unit = 0.512 if long_timer or tx_timer >= 10 else 0.256
    return unit * count


def proxy_extension_s(path: list, tx_timer: int, long_timer: bool = False) -> float:
    """What the proxy source adds to its own last retry timer for ``path`` (it must outwait
    the first repeater, which received len(path) - 1)."""
    return extension_s(len(path), tx_timer, long_timer)


# ---------------------------------------------------------------------------------------
# Client side

_SERVICE_CODES = {Service.ACKD: 0, Service.UNACKD_RPT: 1, Service.UNACKD: 2,
                  Service.REQUEST: 3}


def _target_bytes(target: Address, group_size: int) -> tuple[int, bytes]:
    if isinstance(target, SubnetNode):
        return SUBNET_NODE, bytes((target.subnet, target.node & 0x7F))
    if isinstance(target, NeuronId):
        if len(target.nid) != 6:
            raise ValueError("a Neuron ID is 6 bytes")
        return NEURON_ID, bytes((target.subnet,)) + bytes(target.nid)
    if isinstance(target, Broadcast):
        return BROADCAST, bytes((target.subnet, 0))
    if isinstance(target, Group):
        return GROUP, bytes((target.group, group_size))
    raise ValueError(f"an LTEP target cannot be {target!r}")


def proxy_request(path: list[SubnetNode], target: Address, apdu: bytes, *,
                  service: Service = Service.REQUEST, retries: int = 3, tx_timer: int = 10,
                  repeater_retries: int | None = None, repeater_tx_timer: int | None = None,
                  long_timer: bool = False, all_agents: bool = False,
                  group_size: int = 0) -> bytes:
    """The LTEP request a head-end sends to ``path[0]`` so that ``path[-1]`` (the agent)
    delivers ``apdu`` to ``target`` (the other repeaters in between, in order). ``retries``
    and ``tx_timer`` are the agent's; the repeaters use theirs (default: the same). The
    addresses are compact (uniform by destination) when the whole path is one subnet."""
    if not 1 <= len(path) <= MAX_COUNT + 1:
        raise ValueError(f"a path has 1 to {MAX_COUNT + 1} repeaters, not {len(path)}")
    if not apdu:
        raise ValueError("no target APDU")
    hops = path[1:]
    uniform = all(hop.subnet == path[0].subnet for hop in path)
    hdr = len(hops) | (LONG_TIMER if long_timer else 0) | (ALL_AGENTS if all_agents else 0)
    out = bytearray((LTEP_SUCCESS, hdr | (UNIFORM_BY_DEST if uniform and hops else 0)))
    for hop in hops:
        out += bytes((hop.node & 0x7F,)) if uniform else bytes((hop.subnet, hop.node & 0x7F))
    if hops:
        r = retries if repeater_retries is None else repeater_retries
        t = tx_timer if repeater_tx_timer is None else repeater_tx_timer
        out.append(((r & 0xF) << 4) | (t & 0xF))
    kind, address = _target_bytes(target, group_size)
    out += bytes(((kind << 5) | (_SERVICE_CODES[Service(service)] << 2),
                  ((retries & 0xF) << 4) | (tx_timer & 0xF)))
    return bytes(out + address + apdu)


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """An LTEP answer: ``ok`` with the target's response APDU (``apdu``; empty for an ACKD
    target) or, for a broadcast/group target, ``answers`` [(source, APDU)] and ``total``;
    failed at the node that received ``failed_count``."""
    ok: bool
    apdu: bytes = b""
    answers: tuple[tuple[SubnetNode, bytes], ...] = ()
    total: int = 0
    failed_count: int | None = None


def parse_proxy_response(apdu: bytes, *, multi: bool = False) -> ProxyResult:
    """Read an LTEP answer (``multi``: the request had a broadcast/group target)."""
    if apdu[:1] == bytes((LTEP_FAILURE,)):
        if len(apdu) != 2:
            raise LtepError(f"an LTEP failure is 2 bytes, not {len(apdu)}")
        return ProxyResult(False, failed_count=apdu[1])
    if apdu[:1] != bytes((LTEP_SUCCESS,)):
        raise LtepError(f"not an LTEP answer: {apdu[:1].hex()}")
    if not multi:
        return ProxyResult(True, bytes(apdu[1:]))
    if len(apdu) < 2:
        raise LtepError("a multi-answer LTEP response without its count")
    total, pos, answers = apdu[1], 2, []
    while pos < len(apdu):
        length = apdu[pos]
        if pos + 3 + length > len(apdu) or length == 0:
            raise LtepError("a multi-answer LTEP response ends inside an answer")
        answers.append((SubnetNode(apdu[pos + 1], apdu[pos + 2]),
                        bytes(apdu[pos + 3:pos + 3 + length])))
        pos += 3 + length
    return ProxyResult(True, answers=tuple(answers), total=total)


# ---------------------------------------------------------------------------------------
# Meter side

def _failure(count: int) -> bytes:
    return bytes((LTEP_FAILURE, count))


def handle(station, ind: Indication, now: float):
    """A 0x4D request reached ``station``: forward it, or deliver it as the agent."""
    if ind.apdu[0] == LTEP_FAILURE:
        log.debug("%s: LTEP failure code received as a request; ignored", station.meter.id)
        return None
    config = station.config
    own_subnet = 0
    if ind.domain_index is not None and ind.domain_index < len(config.domains):
        own_subnet = config.domains[ind.domain_index].subnet
    count = ind.apdu[1] & 0x0F if len(ind.apdu) > 1 else 0
    try:
        action = parse_request(ind.apdu, own_subnet=own_subnet, source_subnet=ind.source.subnet)
        if isinstance(action, Agent) and action.mode == MODE_ALT_KEY:
            raise LtepError("alternate-key authentication is not supported")
    except LtepError as exc:
        log.info("%s: LTEP request refused (count %d): %s", station.meter.id, count, exc)
        return _failure(count) if ind.service == Service.REQUEST else None
    if isinstance(action, Forward):
        if action.agent is not None:
            _deliver(station, ind, action.agent, now, report=False)
        return _forward(station, ind, action, now)
    return _deliver(station, ind, action, now, report=ind.service == Service.REQUEST)


def _timing(retries: int, tx_timer: int, long_timer: bool, extend: float) -> dict:
    return {"retries": retries, "tx_timer": tx_timer, "long_timer": long_timer,
            "extend_last_s": extend}


def _forward(station, ind: Indication, fwd: Forward, now: float):
    ref, node = ind.ref, station.node
    requested = ind.service == Service.REQUEST

    def done(completion: Completion, when: float) -> None:
        if not requested:
            return
        if completion.ok and completion.responses:
            node.respond(ref, completion.responses[0].apdu, when)  # relayed unchanged
        else:
            log.info("%s: LTEP hop to %d/%d failed (count %d): %s", station.meter.id,
                     fwd.next_hop.subnet, fwd.next_hop.node, fwd.count, completion.reason)
            node.respond(ref, _failure(fwd.count), when)

    station.send(fwd.apdu, fwd.next_hop, now, on_done=done, service=ind.service,
                 domain_index=ind.domain_index, priority=ind.priority,
                 authenticated=ind.authenticated,
                 **_timing(fwd.retries, fwd.tx_timer, fwd.long_timer,
                           extension_s(fwd.count, fwd.tx_timer, fwd.long_timer)))
    return DEFER if requested else None


def _deliver(station, ind: Indication, agent: Agent, now: float, *, report: bool):
    ref, node = ind.ref, station.node

    def done(completion: Completion, when: float) -> None:
        if not report:
            return
        if agent.service != Service.REQUEST:
            answer = bytes((LTEP_SUCCESS,)) if completion.ok else _failure(0)
        elif agent.multi:
            answer = _multi(completion) if completion.responses else _failure(0)
        elif completion.ok and completion.responses:
            answer = bytes((LTEP_SUCCESS,)) + completion.responses[0].apdu
        else:
            answer = _failure(0)
        if answer[0] == LTEP_FAILURE:
            log.info("%s: LTEP target %s did not answer: %s", station.meter.id, agent.target,
                     completion.reason)
        node.respond(ref, answer, when)

    options = _timing(agent.retries, agent.tx_timer, agent.long_timer, 0.0)
    if agent.expected is not None and agent.service == Service.REQUEST:
        options["expected"] = agent.expected
    authenticated = ind.authenticated and not isinstance(agent.target, Broadcast)
    station.send(agent.apdu, agent.target, now, on_done=done, service=agent.service,
                 domain_index=ind.domain_index, priority=ind.priority,
                 authenticated=authenticated, **options)
    return DEFER if report else None


def _multi(completion: Completion) -> bytes:
    out = bytearray((LTEP_SUCCESS, min(len(completion.responses), 255)))
    for response in completion.responses:
        item = bytes((len(response.apdu), response.source.subnet, response.source.node))
        if len(out) + len(item) + len(response.apdu) > MAX_RESPONSE or not response.apdu:
            continue
        out += item + response.apdu
    return bytes(out)


__all__ = ["Agent", "Forward", "LtepError", "ProxyResult", "handle", "parse_proxy_response",
           "parse_request", "proxy_extension_s", "proxy_request"]
