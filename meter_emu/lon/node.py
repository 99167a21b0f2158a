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

CONTRACT (stub; implemented by the node work package): the names and signatures below are what
the rest of the stack codes against.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Protocol

from .config import NodeConfig
from .frame import Address, Lpdu, SubnetNode


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


class Node:
    """One node. ``config`` is shared with network management, which may change it between
    calls (it bumps ``config.version``)."""

    def __init__(self, config: NodeConfig, app: Application, *, rng: random.Random | None = None,
                 name: str = "node"):
        self.config = config
        self.app = app
        self.rng = rng or random.Random()
        self.name = name
        #: counters a status query reports: transmission_errors, transaction_timeouts,
        #: receive_transaction_full, lost_messages, missed_messages, plus received, sent,
        #: duplicates, retries, auth_failures, dropped (by reason)
        self.stats: dict[str, int] = {}

    def receive(self, frame: bytes | Lpdu, now: float,
                link: LinkInfo = NO_LINK_INFO) -> list[bytes]:
        """Take one frame from the medium (bytes with CRC, or decoded by the medium); return the
        frames to transmit at once (ACK, response, challenge). Frames not for this node are
        ignored; bad ones are dropped with a logged reason."""
        raise NotImplementedError

    def send(self, apdu: bytes, dst: Address, now: float, *, service: Service = Service.REQUEST,
             domain_index: int | None = 0, priority: bool = False, authenticated: bool = False,
             retries: int | None = None, tx_timer: int | None = None,
             expected: int | None = None) -> int:
        """Queue a message; its frames come out of ``poll``. Returns a handle for the
        Completion. ``domain_index`` None sends in the flex domain (source 0/0, zero-length
        domain, as an unconfigured node answers). ``retries`` and ``tx_timer`` (a 4-bit code)
        default to the config's; ``expected`` is the number of responders of a group."""
        raise NotImplementedError

    def respond(self, ref: object, apdu: bytes, now: float) -> None:
        """Answer a REQUEST the application deferred; the response comes out of ``poll``."""
        raise NotImplementedError

    def poll(self, now: float) -> list[bytes]:
        """Frames due now: queued sends, retries, repeats, deferred responses."""
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """When ``poll`` has something to do next (a retry, a timer expiry), or None."""
        raise NotImplementedError

    def addressed(self, lpdu: Lpdu) -> bool:
        """Whether this node takes ``lpdu`` (its domain, subnet/node, group, Neuron ID, or a
        broadcast it belongs to); a medium uses it to skip nodes cheaply."""
        raise NotImplementedError
