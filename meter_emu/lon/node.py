"""One ISO/IEC 14908.1 node, layers 3-5, sans-I/O: addressing and domain filtering (L3), the
transport layer (ACKD with retries, UNACKD_RPT repeats, ACK, group acknowledgements with
REMINDER / REM_MSG and M_Lists), the session layer (REQUEST / RESPONSE), authentication
(challenge / reply, 48-bit and OMA 96-bit), transaction numbers and duplicate detection with
receive timers. Facts: reference/lower-layers.md sections 3-4.

The node does no I/O and reads no clock: a medium (lon/channel.py in memory, cnip/ over UDP, the
PHY later) hands it frames with ``receive`` and the time, transmits what ``receive`` and ``poll``
return, and calls ``poll`` again at ``next_deadline``. The application above it (a meter's
station, a head-end client) gets ``Application.indicate`` for every message delivered and
``Application.completed`` when a message it sent is done.

Design choices (where 14908.1 leaves room, or the public stack does otherwise):

* Concurrency: the public stack runs one transaction per priority. A head-end talks to thousands
  of meters, so this node runs up to 15 at once per priority (one per transaction number), but
  never two to the same destination (the receiver keeps one record per source, so a second one
  would overwrite the first's duplicate detection); later sends to a busy destination queue.
* Transaction numbers: per priority, 1..15 (wrapping 15 -> 1), never one in use, never the one
  last used to the same destination (remembered at least 24 s).
* Receive records: one per (domain, source, priority, how it was addressed), holding the last
  transaction number; a message with that number while the receive timer runs is a duplicate
  (the timer restarts on each copy). A duplicate ACKD gets the ACK again, a duplicate REQUEST
  the stored response; a REMINDER whose M_List has our bit suppresses the copy that follows.
* Authentication failure drops the message (the public stack delivers it flagged); duplicates of
  a failed message are dropped silently, so the sender times out.
* Messages in the flex domain are never challenged (no key to use); they are delivered with
  ``authenticated`` False and the application decides.
* Frames answering a message (ACK, RESPONSE, CHALLENGE, REPLY) leave on the path the message
  came on (alternate path bit copied).
"""

from __future__ import annotations

import enum
import heapq
import hmac
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from . import frame as fr
from .auth import oma_address, reply as auth_reply
from .config import NodeConfig
from .frame import (Address, Apdu, AuthPdu, Broadcast, FrameError, Group, GroupAck, Lpdu,
                    NeuronId, Npdu, Spdu, SubnetNode, Tpdu, encode)
from .timers import UNIQUE_ID_RECEIVE_TIMER_S, delta_backlog, receive_timer_s, transmit_timer_s

log = logging.getLogger(__name__)


class Service(enum.IntEnum):
    """14908.1 service types (section 4.1)."""
    ACKD = 0
    UNACKD_RPT = 1
    UNACKD = 2
    REQUEST = 3
    RESPONSE = 4


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What the medium measured about a received frame (the PHY fills it; CN/IP leaves None):
    signal strength and margin in dB, and whether it came on the secondary carrier."""
    strength_db: float | None = None
    margin_db: float | None = None
    alt_path: bool = False


NO_LINK_INFO = LinkInfo()


@dataclass(frozen=True, slots=True)
class Indication:
    """A message delivered to the application. ``ref`` identifies it to ``Node.respond``."""
    apdu: bytes
    service: Service
    source: SubnetNode  # the sender's subnet/node in the message's domain
    dst: Address  # how the message was addressed (Broadcast, Group, SubnetNode, NeuronId)
    domain: bytes
    domain_index: int | None  # which of the node's domains; None = the flex domain
    priority: bool
    authenticated: bool  # passed 14908.1 challenge/reply
    link: LinkInfo
    ref: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Response:
    """One answer to a REQUEST this node sent."""
    source: SubnetNode
    apdu: bytes
    link: LinkInfo = NO_LINK_INFO
    member: int | None = None  # group member number, for group requests


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of a message this node sent (handle from ``Node.send``). ACKD: ``ok`` when every
    destination acknowledged. REQUEST: the responses collected; ``ok`` when every expected
    responder answered (unicast: the one response; group: every member; broadcast: at least
    one response by the last retry timer). UNACKD / UNACKD_RPT: ``ok`` once sent."""
    handle: int
    ok: bool
    responses: tuple[Response, ...] = ()
    reason: str = ""


#: ``Application.indicate`` returns DEFER to answer a REQUEST later with ``Node.respond``.
DEFER = object()


class Application(Protocol):
    def indicate(self, node: "Node", indication: Indication, now: float):
        """Return the response APDU (bytes) to a REQUEST, DEFER, or None (no response;
        ignored for other services)."""

    def completed(self, node: "Node", completion: Completion, now: float) -> None:
        ...


#: the last tries of ACKD / REQUEST go on the alternate path: retries left <= this (section 2.1)
ALT_PATH_COUNT = 1
#: how long the last transaction number used to a destination is remembered (section 4.2)
TID_TABLE_S = 24.0
#: receive records a node holds; beyond, new transactions are refused (receive_transaction_full)
MAX_RECEIVE_RECORDS = 1024

STAT_NAMES = ("transmission_errors", "transaction_timeouts", "receive_transaction_full",
              "lost_messages", "missed_messages", "received", "sent", "duplicates", "retries",
              "auth_failures", "dropped", "late")

# receive record states
_AUTHENTICATING, _DELIVERED, _PENDING, _FAILED = range(4)
# address keys of receive records (a group is its own number, 0..255)
_AK_UNICAST, _AK_UNIQUE = -1, -2
_FORMATS = {Broadcast: 0, Group: 1, SubnetNode: 2, GroupAck: 2, NeuronId: 3}


class _Record:
    """What a receiver remembers of one incoming transaction."""
    __slots__ = ("tid", "expires", "timer", "state", "service", "reply", "challenge",
                 "challenge_frame", "oma", "suppress", "lpdu", "ctx", "link")

    def __init__(self, tid, expires, timer, service, lpdu, ctx, link):
        self.tid = tid
        self.expires = expires
        self.timer = timer
        self.service = service
        self.state = _DELIVERED
        self.reply: bytes | None = None
        self.challenge = b""
        self.challenge_frame = b""
        self.oma = False
        self.suppress = False
        self.lpdu = lpdu
        self.ctx = ctx
        self.link = link


class _Ctx:
    """How a received frame reached this node: the domain (index, None = flex), this node's
    address in it, the group membership it came through."""
    __slots__ = ("index", "subnet", "node", "membership")

    def __init__(self, index, subnet, node, membership=None):
        self.index = index
        self.subnet = subnet
        self.node = node
        self.membership = membership


class _Tx:
    """One message this node sends."""
    __slots__ = ("handle", "service", "apdu", "dst", "dkey", "domain_index", "domain", "subnet",
                 "node", "priority", "auth", "tid", "retries_left", "timer_s", "deadline",
                 "expected", "kind", "acked", "responses", "seen", "started", "done",
                 "extend_last")

    def __init__(self, handle, service, apdu, dst, domain_index, domain, subnet, node, priority,
                 auth, retries, timer_s, expected, kind):
        self.handle = handle
        self.service = service
        self.apdu = apdu
        self.dst = dst
        self.dkey = (priority, dst, domain)
        self.domain_index = domain_index
        self.domain = domain
        self.subnet = subnet
        self.node = node
        self.priority = priority
        self.auth = auth
        self.tid = 0
        self.retries_left = retries
        self.timer_s = timer_s
        self.deadline = 0.0
        self.expected = expected
        self.kind = kind  # "unicast", "group", "broadcast"
        self.acked: set = set()  # group members (or broadcast sources) that answered
        self.responses: list[Response] = []
        self.seen: set = set()
        self.started = False
        self.done = False
        self.extend_last = 0.0


class Node:
    """One node. ``config`` is shared with network management, which may change it between
    calls (it bumps ``config.version``)."""

    def __init__(self, config: NodeConfig, app: Application, *, rng: random.Random | None = None,
                 name: str = "node", tid_start: int | None = None):
        """``tid_start``: the transaction number counted from (the first message gets the next
        one); None picks it at random, so a head-end restarted within a receive timer is not
        taken for a duplicate of its previous life."""
        self.config = config
        self.app = app
        self.rng = rng or random.Random()
        self.name = name
        #: counters a status query reports: transmission_errors (CRC errors),
        #: transaction_timeouts, receive_transaction_full, lost_messages and missed_messages
        #: (no buffers to overflow here: they stay 0), plus received, sent, duplicates, retries,
        #: auth_failures, late (answers to nothing outstanding), dropped (by reason:
        #: ``drop_reasons``)
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.drop_reasons: dict[str, int] = {}
        self._records: dict[tuple, _Record] = {}
        self._handles = 0
        self._heap: list = []  # (deadline, seq, tx)
        self._seq = 0
        self._active: dict[tuple[bool, int], _Tx] = {}  # (priority, tid) -> transaction
        self._busy: dict[tuple, deque] = {}  # destination key -> sends waiting behind it
        self._tid_wait: deque = deque()  # sends waiting for a free transaction number
        if tid_start is None:
            self._tid_last = {False: self.rng.randrange(15), True: self.rng.randrange(15)}
        else:
            self._tid_last = {False: tid_start, True: tid_start}
        self._tid_to: dict[tuple, tuple[int, float]] = {}
        self._outbox: list[bytes] = []
        self._outbox_at = 0.0
        self._calls: list = []  # (when, seq, callback): call_at timers
        self._flex_tx = 0  # active transactions sent in the flex domain (answers go to 0/0)

    # -- receiving ---------------------------------------------------------------------

    def receive(self, frame: bytes | Lpdu, now: float,
                link: LinkInfo = NO_LINK_INFO) -> list[bytes]:
        """Take one frame from the medium (bytes with CRC, or decoded by the medium); return the
        frames to transmit at once (ACK, response, challenge). Frames not for this node are
        ignored; bad ones are dropped with a logged reason."""
        if isinstance(frame, Lpdu):
            lpdu = frame
        else:
            try:
                lpdu = fr.decode(frame)
            except FrameError as exc:
                if str(exc).startswith("CRC"):
                    self.stats["transmission_errors"] += 1
                self._drop("bad frame", exc)
                return []
        ctx = self._match(lpdu)
        if ctx is None:
            return []
        self.stats["received"] += 1
        try:
            out = self._dispatch(lpdu, ctx, now, link)
        except Exception:  # noqa: BLE001 - a bug costs one frame, never the node
            log.exception("%s: internal error on a received frame", self.name)
            self._drop("internal error")
            return []
        if out:
            self.stats["sent"] += len(out)
        return out

    def addressed(self, lpdu: Lpdu) -> bool:
        """Whether this node takes ``lpdu`` (its domain, subnet/node, group, Neuron ID, or a
        broadcast it belongs to); a medium uses it to skip nodes cheaply."""
        return self._match(lpdu) is not None

    def _match(self, lpdu: Lpdu) -> _Ctx | None:
        """The section 3.2 receive filter."""
        npdu = lpdu.npdu
        config = self.config
        dst = npdu.dst
        kind = type(dst)
        if config.domains:  # an unconfigured OSGP meter is in the discovery domain
            for index, domain in enumerate(config.domains):
                if domain.id != npdu.domain:
                    continue
                subnet, node = domain.subnet, domain.node
                if npdu.src_subnet == subnet and npdu.src_node == node:
                    return None  # our own frame
                if kind is SubnetNode or kind is GroupAck:
                    ok = dst.subnet == subnet and dst.node == node
                elif kind is Broadcast:
                    ok = dst.subnet == 0 or dst.subnet == subnet
                elif kind is Group:
                    for membership in config.groups:
                        if membership.group == dst.group and membership.domain_index == index:
                            return _Ctx(index, subnet, node, membership)
                    ok = False
                else:
                    ok = dst.nid == config.neuron_id
                return _Ctx(index, subnet, node) if ok else None
        # the flex domain: Neuron ID addressing; broadcasts to an unconfigured node; answers
        # to what we sent in the flex domain (addressed to 0/0)
        if kind is NeuronId:
            ok = dst.nid == config.neuron_id
        elif kind is Broadcast:
            ok = dst.subnet == 0 and not config.configured
        elif kind is SubnetNode or kind is GroupAck:
            ok = self._flex_tx > 0 and dst.subnet == 0 and dst.node == 0
        else:
            ok = False
        return _Ctx(None, 0, 0) if ok else None

    def _dispatch(self, lpdu: Lpdu, ctx: _Ctx, now: float, link: LinkInfo) -> list[bytes]:
        pdu = lpdu.npdu.pdu
        kind = type(pdu)
        if kind is Tpdu or kind is Spdu:
            service = Service.ACKD if kind is Tpdu else Service.REQUEST
            ptype = pdu.type
            if ptype == 0:  # ACKD / REQUEST
                return self._incoming(lpdu, ctx, service, now, link)
            if ptype == fr.ACK and kind is Tpdu:
                return self._answer(lpdu, Service.ACKD, now, link)
            if ptype == fr.RESPONSE and kind is Spdu:
                return self._answer(lpdu, Service.REQUEST, now, link)
            if ptype == fr.UNACKD_RPT:
                return self._incoming(lpdu, ctx, Service.UNACKD_RPT, now, link)
            return self._reminder(lpdu, ctx, service, now, link)
        if kind is AuthPdu:
            if pdu.type in (fr.CHALLENGE, fr.CHALLENGE_OMA):
                return self._challenged(lpdu, now)
            return self._replied(lpdu, ctx, now)
        self._deliver_unackd(lpdu, ctx, now, link)
        return []

    def _record_key(self, npdu: Npdu, priority: bool) -> tuple:
        dst = npdu.dst
        kind = type(dst)
        if kind is Group:
            how = dst.group
        elif kind is NeuronId:
            how = _AK_UNIQUE
        elif kind is Broadcast:
            how = -3 - dst.subnet
        else:
            how = _AK_UNICAST
        return (npdu.domain, npdu.src_subnet, npdu.src_node, priority, how)

    def _receive_timer(self, npdu: Npdu, ctx: _Ctx) -> float:
        if ctx.membership is not None:
            return receive_timer_s(ctx.membership.receive_timer)
        if type(npdu.dst) is NeuronId:
            return UNIQUE_ID_RECEIVE_TIMER_S
        return receive_timer_s(self.config.non_group_receive_timer)

    def _incoming(self, lpdu: Lpdu, ctx: _Ctx, service: Service, now: float,
                  link: LinkInfo) -> list[bytes]:
        """A new ACKD / REQUEST / UNACKD_RPT (or a REM_MSG carrying one), or a duplicate."""
        npdu = lpdu.npdu
        pdu = npdu.pdu
        key = self._record_key(npdu, lpdu.priority)
        records = self._records
        record = records.get(key)
        # a deferred request stays a duplicate until answered, however long the answer takes
        if record is not None and record.tid == pdu.tid and (record.expires > now
                                                             or record.state == _PENDING):
            return self._duplicate(record, now)
        if record is None and len(records) >= MAX_RECEIVE_RECORDS:
            for stale in [k for k, r in records.items()
                          if r.expires <= now and r.state != _PENDING]:
                del records[stale]
            if len(records) >= MAX_RECEIVE_RECORDS:
                self.stats["receive_transaction_full"] += 1
                self._drop("receive transaction records full")
                return []
        timer = self._receive_timer(npdu, ctx)
        record = _Record(pdu.tid, now + timer, timer, service, lpdu, ctx, link)
        records[key] = record
        if (pdu.auth and service != Service.UNACKD_RPT and ctx.index is not None
                and type(npdu.dst) is not Broadcast):
            return self._challenge(record)
        return self._deliver(record, False, now)

    def _duplicate(self, record: _Record, now: float) -> list[bytes]:
        self.stats["duplicates"] += 1
        record.expires = now + record.timer
        if record.suppress:  # a REMINDER told us the sender has our ACK / response
            record.suppress = False
            return []
        if record.state == _AUTHENTICATING:
            return [record.challenge_frame]
        if record.state == _DELIVERED and record.reply is not None:
            return [record.reply]
        return []

    def _reminder(self, lpdu: Lpdu, ctx: _Ctx, service: Service, now: float,
                  link: LinkInfo) -> list[bytes]:
        """REMINDER / REM_MSG of a group transaction (section 4.1): the M_List holds the
        members that have answered."""
        npdu = lpdu.npdu
        pdu = npdu.pdu
        if ctx.membership is None:
            self._drop("reminder not addressed to one of our groups")
            return []
        member = ctx.membership.member
        mlist = pdu.mlist
        answered = member // 8 < len(mlist) and bool(mlist[member // 8] >> (member % 8) & 1)
        if pdu.type == fr.REM_MSG:
            if answered:
                return []
            return self._incoming(lpdu, ctx, service, now, link)
        record = self._records.get(self._record_key(npdu, lpdu.priority))
        if record is None or record.tid != pdu.tid or record.expires <= now:
            return []  # we missed the message: its copy follows the reminder
        out = [] if answered else self._duplicate(record, now)
        record.suppress = True
        return out

    def _challenge(self, record: _Record) -> list[bytes]:
        """Section 4.4: ask the sender to prove it has the domain key."""
        lpdu = record.lpdu
        npdu = lpdu.npdu
        ctx = record.ctx
        key = self.config.domains[ctx.index].key
        record.oma = len(key) == 12
        record.challenge = self.rng.randbytes(8)
        record.state = _AUTHENTICATING
        dst = npdu.dst
        group = dst.group if type(dst) is Group else None
        pdu = AuthPdu(fr.CHALLENGE_OMA if record.oma else fr.CHALLENGE, npdu.pdu.tid,
                      record.challenge, _FORMATS[type(dst)], group)
        record.challenge_frame = self._frame_back(record, pdu)
        return [record.challenge_frame]

    def _replied(self, lpdu: Lpdu, ctx: _Ctx, now: float) -> list[bytes]:
        """A REPLY to a challenge we sent: deliver the message on a match."""
        npdu = lpdu.npdu
        pdu = npdu.pdu
        how = {1: pdu.group, 2: _AK_UNICAST, 3: _AK_UNIQUE}.get(pdu.fmt)
        record = self._records.get((npdu.domain, npdu.src_subnet, npdu.src_node, lpdu.priority,
                                    how))
        if record is None or record.state != _AUTHENTICATING or record.tid != pdu.tid:
            self.stats["late"] += 1
            return []  # stale or duplicate reply
        domain = self.config.domains[record.ctx.index] if record.ctx.index is not None else None
        oma = pdu.type == fr.REPLY_OMA
        if domain is None or oma != record.oma:
            return self._auth_failed(record, "reply of the wrong kind")
        expected = auth_reply(domain.key if oma else domain.key[:6], record.challenge,
                              record.lpdu.npdu.pdu.apdu,
                              oma_address=self._oma_receiver(record) if oma else None)
        if not hmac.compare_digest(expected, pdu.data):
            return self._auth_failed(record, "reply does not match")
        return self._deliver(record, True, now)

    def _oma_receiver(self, record: _Record) -> bytes:
        npdu = record.lpdu.npdu
        dst = npdu.dst
        if type(dst) is NeuronId:
            return oma_address(neuron_id=self.config.neuron_id)
        if type(dst) is Group:
            return oma_address(domain=npdu.domain, group=dst.group)
        return oma_address(domain=npdu.domain, subnet=record.ctx.subnet, node=record.ctx.node)

    def _auth_failed(self, record: _Record, why: str) -> list[bytes]:
        record.state = _FAILED
        self.stats["auth_failures"] += 1
        npdu = record.lpdu.npdu
        log.warning("%s: authentication failed for a message from %d/%d: %s", self.name,
                    npdu.src_subnet, npdu.src_node, why)
        return []

    def _indication(self, record: _Record, service: Service, authenticated: bool) -> Indication:
        lpdu = record.lpdu
        npdu = lpdu.npdu
        return Indication(npdu.pdu.apdu, service, SubnetNode(npdu.src_subnet, npdu.src_node),
                          npdu.dst, npdu.domain, record.ctx.index, lpdu.priority, authenticated,
                          record.link, record)

    def _deliver(self, record: _Record, authenticated: bool, now: float) -> list[bytes]:
        service = record.service
        # a REQUEST is pending while the application runs: it may respond() before it returns
        record.state = _PENDING if service == Service.REQUEST else _DELIVERED
        result = self._indicate(self._indication(record, service, authenticated), now)
        if service == Service.ACKD:
            record.reply = self._frame_back(record, Tpdu(fr.ACK, record.tid))
        elif service == Service.REQUEST and record.state == _PENDING and result is not DEFER:
            record.state = _DELIVERED
            if result is not None:
                record.reply = self._frame_back(record, Spdu(fr.RESPONSE, record.tid,
                                                             bytes(result)))
                return [record.reply]
            return []
        return [record.reply] if record.reply is not None and service == Service.ACKD else []

    def _indicate(self, indication: Indication, now: float):
        try:
            return self.app.indicate(self, indication, now)
        except Exception:  # noqa: BLE001 - an application bug must not break the node
            log.exception("%s: the application failed on APDU %s", self.name,
                          indication.apdu[:1].hex())
            return None

    def _deliver_unackd(self, lpdu: Lpdu, ctx: _Ctx, now: float, link: LinkInfo) -> None:
        npdu = lpdu.npdu
        self._indicate(Indication(npdu.pdu.apdu, Service.UNACKD,
                                  SubnetNode(npdu.src_subnet, npdu.src_node), npdu.dst,
                                  npdu.domain, ctx.index, lpdu.priority, False, link), now)

    def _frame_back(self, record: _Record, pdu) -> bytes:
        """A frame answering the message of ``record``: from our address in its domain (0/0 in
        the flex domain), to its sender (group: the 2b format with our member number)."""
        lpdu = record.lpdu
        npdu = lpdu.npdu
        ctx = record.ctx
        if ctx.membership is not None:
            dst = GroupAck(npdu.src_subnet, npdu.src_node, ctx.membership.group,
                           ctx.membership.member)
        else:
            dst = SubnetNode(npdu.src_subnet, npdu.src_node)
        return encode(Lpdu(Npdu(ctx.subnet, ctx.node, dst, pdu, npdu.domain, npdu.version),
                           lpdu.priority, lpdu.alt_path, 0))

    def respond(self, ref: object, apdu: bytes, now: float) -> None:
        """Answer a REQUEST the application deferred; the response comes out of ``poll``."""
        record = ref
        if not isinstance(record, _Record) or record.state != _PENDING:
            log.debug("%s: respond() for a request that is not pending; ignored", self.name)
            return
        record.reply = self._frame_back(record, Spdu(fr.RESPONSE, record.tid, bytes(apdu)))
        record.state = _DELIVERED
        record.expires = now + record.timer  # retries of the request now get this answer
        if not self._outbox:
            self._outbox_at = now
        self._outbox.append(record.reply)

    # -- answers to what we sent ---------------------------------------------------------

    def _answer(self, lpdu: Lpdu, service: Service, now: float, link: LinkInfo) -> list[bytes]:
        """An ACK or RESPONSE: match it to our transaction by priority and number, then check
        that it comes from a destination of that transaction."""
        npdu = lpdu.npdu
        pdu = npdu.pdu
        tx = self._active.get((lpdu.priority, pdu.tid))
        if tx is None or tx.service != service or tx.domain != npdu.domain or not tx.started:
            self.stats["late"] += 1
            return []
        dst = tx.dst
        answer_to = npdu.dst
        member = None
        if tx.kind == "group":
            if type(answer_to) is not GroupAck or answer_to.group != dst.group:
                self.stats["late"] += 1
                return []
            member = answer_to.member
            who = member
        elif type(dst) is SubnetNode:
            if npdu.src_subnet != dst.subnet or npdu.src_node != dst.node:
                self.stats["late"] += 1
                return []
            who = None
        else:  # Neuron ID or broadcast: anyone
            who = (npdu.src_subnet, npdu.src_node, pdu.apdu)
        if who in tx.seen:
            return []  # a repeated answer to a retry
        tx.seen.add(who)
        if service == Service.REQUEST:
            tx.responses.append(Response(SubnetNode(npdu.src_subnet, npdu.src_node), pdu.apdu,
                                         link, member))
        if who is not None:
            tx.acked.add(who if tx.kind == "group" else (npdu.src_subnet, npdu.src_node))
        if tx.kind == "unicast" or (tx.expected and len(tx.seen) >= tx.expected):
            self._finish(tx, True, "acknowledged" if service == Service.ACKD else "responded",
                         now)
        return []

    def _challenged(self, lpdu: Lpdu, now: float) -> list[bytes]:
        """A CHALLENGE to a message we sent with the auth bit: REPLY with the crypto bytes."""
        npdu = lpdu.npdu
        pdu = npdu.pdu
        tx = self._active.get((lpdu.priority, pdu.tid))
        if (tx is None or not tx.auth or tx.domain != npdu.domain
                or pdu.fmt != _FORMATS[type(tx.dst)]
                or (pdu.fmt == 1 and pdu.group != tx.dst.group)):
            self.stats["late"] += 1
            return []
        key = self.config.domains[tx.domain_index].key
        oma = pdu.type == fr.CHALLENGE_OMA
        if oma and len(key) != 12:
            self._drop("OMA challenge but the domain key is not 12 bytes")
            return []
        dst = tx.dst
        address = None
        if oma:
            if type(dst) is NeuronId:
                address = oma_address(neuron_id=dst.nid)
            elif type(dst) is Group:
                address = oma_address(domain=tx.domain, group=dst.group)
            else:
                address = oma_address(domain=tx.domain, subnet=dst.subnet, node=dst.node)
        crypto = auth_reply(key if oma else key[:6], pdu.data, tx.apdu, oma_address=address)
        answer = AuthPdu(fr.REPLY_OMA if oma else fr.REPLY, pdu.tid, crypto, pdu.fmt, pdu.group)
        back = SubnetNode(npdu.src_subnet, npdu.src_node)
        self._reschedule(tx, now + self._timer_of(tx))
        return [encode(Lpdu(Npdu(tx.subnet, tx.node, back, answer, tx.domain, npdu.version),
                            lpdu.priority, lpdu.alt_path, 0))]

    # -- sending -----------------------------------------------------------------------

    def send(self, apdu: bytes, dst: Address, now: float, *, service: Service = Service.REQUEST,
             domain_index: int | None = 0, priority: bool = False, authenticated: bool = False,
             retries: int | None = None, tx_timer: int | None = None,
             expected: int | None = None, extend_last_s: float = 0.0,
             long_timer: bool = False) -> int:
        """Queue a message; its frames come out of ``poll``. Returns a handle for the
        Completion. ``domain_index`` None sends in the flex domain (source 0/0, zero-length
        domain, as an unconfigured node answers). ``retries`` and ``tx_timer`` (a 4-bit code)
        default to the config's; ``expected`` is the number of responders of a group (or the
        responses a broadcast waits for). ``long_timer`` decodes ``tx_timer`` as code + 16 and
        ``extend_last_s`` lengthens the last try's timer (a proxy waiting for its next hops,
        section 8.3)."""
        service = Service(service)
        if not apdu:
            raise ValueError("an APDU has at least its code byte")
        if service == Service.RESPONSE:
            raise ValueError("responses are sent by returning them from indicate() or respond()")
        config = self.config
        if domain_index is None:
            domain, subnet, node = b"", 0, 0
        else:
            if not 0 <= domain_index < len(config.domains):
                raise ValueError(f"{self.name} has no domain {domain_index}")
            entry = config.domains[domain_index]
            domain, subnet, node = entry.id, entry.subnet, entry.node
        if type(dst) is GroupAck:
            raise ValueError("the group acknowledgement address is for answers only")
        kind = ("group" if type(dst) is Group else
                "broadcast" if type(dst) is Broadcast else "unicast")
        if authenticated and (kind == "broadcast" or domain_index is None):
            log.debug("%s: broadcast and flex-domain messages are never authenticated",
                      self.name)
            authenticated = False
        if kind == "group" and not expected:
            for membership in config.groups:
                if membership.group == dst.group and membership.domain_index == domain_index:
                    expected = max(0, membership.size - 1)  # the size counts this node
        retries = config.retry_count if retries is None else retries
        timer = transmit_timer_s(config.transmit_timer if tx_timer is None else tx_timer,
                                 long_timer)
        self._handles += 1
        tx = _Tx(self._handles, service, bytes(apdu), dst, domain_index, domain, subnet, node,
                 priority, authenticated, max(0, min(15, retries)), timer, expected or 0, kind)
        tx.extend_last = max(0.0, extend_last_s)
        try:  # refuse what cannot be encoded now, not later inside poll()
            encode(Lpdu(Npdu(subnet, node, dst, Apdu(tx.apdu), domain)))
        except FrameError as exc:
            raise ValueError(f"cannot send: {exc}") from exc
        if domain_index is None:
            self._flex_tx += 1
        if service == Service.UNACKD:
            self._schedule(tx, now)
        elif tx.dkey in self._busy:
            self._busy[tx.dkey].append(tx)
        else:
            self._busy[tx.dkey] = deque()
            self._start(tx, now)
        return tx.handle

    def _start(self, tx: _Tx, now: float) -> None:
        tid = self._allocate_tid(tx)
        if tid is None:
            self._tid_wait.append(tx)
            return
        tx.tid = tid
        self._active[(tx.priority, tid)] = tx
        self._schedule(tx, now)

    def _allocate_tid(self, tx: _Tx) -> int | None:
        """Section 4.2: 1..15 per priority, skipping numbers in use and the number last used
        to the same destination."""
        priority = tx.priority
        previous = self._tid_to.get(tx.dkey)
        tid = self._tid_last[priority]
        for _ in range(15):
            tid = tid % 15 + 1
            if (priority, tid) in self._active or (previous and previous[0] == tid):
                continue
            self._tid_last[priority] = tid
            return tid
        return None

    def _schedule(self, tx: _Tx, when: float) -> None:
        tx.deadline = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, tx))

    _reschedule = _schedule

    def poll(self, now: float) -> list[bytes]:
        """Frames due now: queued sends, retries, repeats, deferred responses."""
        out: list[bytes] = []
        calls = self._calls
        while calls and calls[0][0] <= now:
            _, _, callback = heapq.heappop(calls)
            try:
                callback(now)
            except Exception:  # noqa: BLE001
                log.exception("%s: a timer callback failed", self.name)
        if self._outbox:
            out.extend(self._outbox)
            self._outbox.clear()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx = heapq.heappop(heap)
            if tx.done or when != tx.deadline:
                continue
            try:
                self._fire(tx, now, out)
            except Exception:  # noqa: BLE001 - a bug costs one message, never the node
                log.exception("%s: internal error sending message %d", self.name, tx.handle)
                if not tx.done:
                    self._finish(tx, False, "internal error", now)
        if out:
            self.stats["sent"] += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When ``poll`` has something to do next (a retry, a timer expiry), or None."""
        heap = self._heap
        while heap and (heap[0][2].done or heap[0][0] != heap[0][2].deadline):
            heapq.heappop(heap)
        when = heap[0][0] if heap else None
        if self._calls and (when is None or self._calls[0][0] < when):
            when = self._calls[0][0]
        if self._outbox and (when is None or self._outbox_at < when):
            return self._outbox_at
        return when

    def call_at(self, when: float, callback) -> None:
        """A one-shot timer: ``poll`` at or after ``when`` calls ``callback(now)`` (what it
        sends or responds leaves from that poll). For applications without a clock of their
        own, e.g. a discovery answer delayed at random inside its window."""
        self._seq += 1
        heapq.heappush(self._calls, (when, self._seq, callback))

    def _message_frame(self, tx: _Tx, pdu, backlog: int) -> bytes:
        alt = tx.service != Service.UNACKD_RPT and tx.retries_left <= ALT_PATH_COUNT
        return encode(Lpdu(Npdu(tx.subnet, tx.node, tx.dst, pdu, tx.domain), tx.priority,
                           alt and tx.service != Service.UNACKD, backlog))

    def _message_pdu(self, tx: _Tx, kind: int = 0, mlist: bytes = b""):
        cls = Spdu if tx.service == Service.REQUEST else Tpdu
        return cls(kind, tx.tid, b"" if kind == fr.REMINDER else tx.apdu, tx.auth, mlist)

    def _fire(self, tx: _Tx, now: float, out: list[bytes]) -> None:
        service = tx.service
        if service == Service.UNACKD:
            out.append(self._message_frame(tx, Apdu(tx.apdu), 0))
            self._finish(tx, True, "sent", now)
            return
        if service == Service.UNACKD_RPT:
            first = not tx.started
            tx.started = True
            out.append(self._message_frame(
                tx, Tpdu(fr.UNACKD_RPT, tx.tid, tx.apdu),
                delta_backlog("repeat", retries_left=tx.retries_left, first=first)))
            if tx.retries_left == 0:
                self._finish(tx, True, "sent", now)
            else:
                tx.retries_left -= 1
                self._schedule(tx, now + tx.timer_s)
            return
        if tx.started:  # the transmit timer expired
            if tx.retries_left == 0:
                self._expired(tx, now)
                return
            tx.retries_left -= 1
            self.stats["retries"] += 1
        first = not tx.started
        tx.started = True
        if tx.kind == "group":
            outstanding = max(0, tx.expected - len(tx.acked))
            backlog = delta_backlog("group", first=first, group_size=tx.expected,
                                    outstanding=outstanding)
        else:
            backlog = delta_backlog(tx.kind, override=tx.expected)
        if tx.kind == "group" and tx.acked:
            mlist = _mlist(tx.acked)
            if len(mlist) <= 2:
                out.append(self._message_frame(tx, self._message_pdu(tx, fr.REM_MSG, mlist),
                                               backlog))
            else:
                out.append(self._message_frame(tx, self._message_pdu(tx, fr.REMINDER, mlist),
                                               0))
                out.append(self._message_frame(tx, self._message_pdu(tx), backlog))
        else:
            out.append(self._message_frame(tx, self._message_pdu(tx), backlog))
        self._schedule(tx, now + self._timer_of(tx))

    @staticmethod
    def _timer_of(tx: _Tx) -> float:
        return tx.timer_s + (tx.extend_last if tx.retries_left == 0 else 0.0)

    def _expired(self, tx: _Tx, now: float) -> None:
        """The last try's timer ran out."""
        if tx.kind == "unicast" or (tx.kind == "group" and tx.expected):
            self.stats["transaction_timeouts"] += 1
            self._finish(tx, False, "timeout", now)
        else:  # broadcast, or a group of unknown size: whoever answered
            self._finish(tx, bool(tx.seen), "timer ended" if tx.seen else "no answer", now)

    def _finish(self, tx: _Tx, ok: bool, reason: str, now: float) -> None:
        tx.done = True
        if tx.domain_index is None:
            self._flex_tx -= 1
        if tx.service != Service.UNACKD:
            if self._active.get((tx.priority, tx.tid)) is tx:
                del self._active[(tx.priority, tx.tid)]
            self._remember_tid(tx, now)
            waiting = self._busy.get(tx.dkey)
            if self._tid_wait:
                self._start(self._tid_wait.popleft(), now)
            if waiting is not None:
                if waiting:
                    self._start(waiting.popleft(), now)
                else:
                    del self._busy[tx.dkey]
        completion = Completion(tx.handle, ok, tuple(tx.responses), reason)
        try:
            self.app.completed(self, completion, now)
        except Exception:  # noqa: BLE001
            log.exception("%s: the application failed on a completion", self.name)

    def _remember_tid(self, tx: _Tx, now: float) -> None:
        table = self._tid_to
        table[tx.dkey] = (tx.tid, now)
        if len(table) > 8192:
            for key in [k for k, (_, t) in table.items() if now - t > TID_TABLE_S]:
                del table[key]

    def _drop(self, reason: str, detail: object = "") -> None:
        self.stats["dropped"] += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1
        log.debug("%s: dropped a frame: %s %s", self.name, reason, detail)


def _mlist(members) -> bytes:
    """Section 4.1: bit i%8 of byte i/8 for every member i that answered, up to the highest."""
    out = bytearray(max(members) // 8 + 1)
    for member in members:
        out[member // 8] |= 1 << (member % 8)
    return bytes(out)
