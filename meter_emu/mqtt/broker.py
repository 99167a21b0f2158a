"""A small MQTT 3.1.1 broker on asyncio, so ``meter-emu run`` works with nothing else installed.

It speaks MQTT 3.1.1 (protocol level 4) and 3.1 (``MQIsdp``, level 3); any other level gets
CONNACK 0x01 "unacceptable protocol version". What a test rig and a fleet emulator need, done
by the book (MQTT 3.1.1, OASIS 2014, sections cited as [MQTT-x.y]):

* CONNECT/CONNACK with clean or persistent sessions, an empty client id with a clean session
  (the broker names it), keep-alive enforced at 1.5 x the client's value [MQTT-3.1.2-24],
  a second connection with the same id taking the session over [MQTT-3.1.4-2];
* SUBSCRIBE/UNSUBSCRIBE with ``+`` and ``#``; the granted QoS is min(requested, 1). Filters
  that start with a wildcard do not match ``$`` topics [MQTT-4.7.2-1];
* PUBLISH QoS 0 and 1 both ways (inbound QoS 2 is acknowledged too, delivered at most QoS 1),
  retained messages (an empty retained payload clears the topic), the will message on an
  abnormal close, PINGREQ and DISCONNECT.

A malformed packet closes that client's connection with a log line, never the broker. Each
client has a bounded outgoing queue: when a slow subscriber falls behind, its oldest QoS 0
message is dropped (logged), so one stuck client cannot eat the process's memory.

The broker does no authentication (it listens on loopback by default) and no ``$SYS`` topics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
#: the fixed-header flags each packet type must carry [MQTT-2.2.2-1] (PUBLISH's are variable)
REQUIRED_FLAGS = {CONNECT: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2,
                  UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0}
UNACCEPTABLE_PROTOCOL, IDENTIFIER_REJECTED = 1, 2
MAX_CONNECT_SIZE = 256 * 1024  # a CONNECT (id, will, credentials) is never near this
CONNECT_TIMEOUT_S = 10.0  # a connection that sends no CONNECT within this is closed
PINGRESP_PACKET = bytes([PINGRESP << 4, 0])


class MalformedPacket(ValueError):
    """A packet that breaks the protocol: the connection is closed [MQTT-4.8.0-1]."""


# ---- encoding -----------------------------------------------------------------------------

def encode_length(length: int) -> bytes:
    """The remaining-length field: 7 bits per byte, least significant first [MQTT-2.2.3]."""
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, qos: int, retain: bool,
                   packet_id: int = 0, dup: bool = False) -> bytes:
    """A PUBLISH packet; ``topic`` is the UTF-8 topic name."""
    head = bytes([PUBLISH << 4 | dup << 3 | qos << 1 | retain])
    ident = packet_id.to_bytes(2, "big") if qos else b""
    body_length = 2 + len(topic) + len(ident) + len(payload)
    return b"".join((head, encode_length(body_length), len(topic).to_bytes(2, "big"), topic,
                     ident, payload))


def _ack(kind: int, packet_id: int) -> bytes:
    return bytes([kind << 4, 2]) + packet_id.to_bytes(2, "big")


class _Reader:
    """Reads the fields of one packet's body; running past its end is a malformed packet."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise MalformedPacket("packet ends inside a field")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            text = self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket("a string is not well-formed UTF-8") from None
        if "\0" in text:
            raise MalformedPacket("a string contains U+0000")  # [MQTT-1.5.3-2]
        return text

    def done(self) -> bool:
        return self.pos >= len(self.data)


# ---- topics -------------------------------------------------------------------------------

def valid_topic_name(topic: str) -> bool:
    """A PUBLISH topic: non-empty, no wildcards [MQTT-4.7.3-1, 3.3.2-2]."""
    return bool(topic) and "+" not in topic and "#" not in topic


def valid_topic_filter(topic_filter: str) -> bool:
    """``#`` only as the whole last level, ``+`` only as a whole level [MQTT-4.7.1]."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a subscription filter matches a topic name (``$`` topics need an explicit
    first level)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    if topic.startswith("$") and wanted[0] in ("+", "#"):
        return False
    for index, part in enumerate(wanted):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(wanted) == len(levels)


class _Node:
    """One level of the subscription tree: children by level text, and who subscribed to the
    filter that ends here (session -> granted QoS)."""

    __slots__ = ("children", "subscribers")

    def __init__(self):
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[_Session, int] = {}


class _SubscriptionTree:
    def __init__(self):
        self.root = _Node()

    def add(self, topic_filter: str, session: "_Session", qos: int) -> None:
        node = self.root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        node.subscribers[session] = qos

    def remove(self, topic_filter: str, session: "_Session") -> None:
        path, node = [], self.root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        node.subscribers.pop(session, None)
        for parent, level in reversed(path):  # prune the branches nobody uses any more
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]

    def match(self, topic: str) -> dict["_Session", int]:
        """Every subscribed session with the highest QoS any of its matching filters granted."""
        found: dict[_Session, int] = {}
        levels = topic.split("/")
        last = len(levels)
        stack = [(self.root, 0)]
        dollar = topic.startswith("$")
        while stack:
            node, index = stack.pop()
            children = node.children
            if not (index == 0 and dollar):
                multi = children.get("#")
                if multi is not None:  # "a/#" matches "a/b/c" and "a" itself
                    _merge_qos(found, multi.subscribers)
            if index == last:
                _merge_qos(found, node.subscribers)
                continue
            exact = children.get(levels[index])
            if exact is not None:
                stack.append((exact, index + 1))
            if not (index == 0 and dollar):
                single = children.get("+")
                if single is not None:
                    stack.append((single, index + 1))
        return found


def _merge_qos(found: dict, subscribers: dict) -> None:
    for session, qos in subscribers.items():
        if found.get(session, -1) < qos:
            found[session] = qos


# ---- sessions and connections -------------------------------------------------------------

class _Session:
    """What the broker keeps for one client id: subscriptions, QoS 1 messages in flight (sent or
    waiting), and the connection when the client is online. A clean session ends with its
    connection; a persistent one waits for the client to come back [MQTT-3.1.2-4]."""

    def __init__(self, broker: "Broker", client_id: str, clean: bool):
        self.broker = broker
        self.client_id = client_id
        self.clean = clean
        self.filters: dict[str, int] = {}
        self.connection: _Connection | None = None
        #: QoS 1 messages not yet acknowledged: packet id -> [topic, payload, sent?]
        self.inflight: dict[int, list] = {}
        self.awaiting_release: set[int] = set()  # inbound QoS 2 packet ids before PUBREL
        self._ids = itertools.cycle(range(1, 65536))

    def deliver(self, topic: bytes, payload: bytes, qos: int, retain: bool = False,
                qos0_packet: bytes | None = None) -> None:
        connection = self.connection
        if qos == 0:
            if connection is not None:  # offline sessions keep only QoS 1 [MQTT-3.1.2-5]
                packet = qos0_packet or publish_packet(topic, payload, 0, retain)
                connection.send(packet, 0)
            return
        packet_id = self._free_id()
        if packet_id is None:
            log.warning("client %s has 65535 unacknowledged QoS 1 messages; dropping one on %s",
                        self.client_id, topic.decode(errors="replace"))
            return
        self.inflight[packet_id] = [topic, payload, False]
        if connection is not None:
            connection.send(publish_packet(topic, payload, 1, retain, packet_id), packet_id)
        elif len(self.inflight) > self.broker.queue_limit:  # offline: keep the newest
            self.inflight.pop(next(iter(self.inflight)))

    def _free_id(self) -> int | None:
        if len(self.inflight) >= 65535:
            return None
        while True:
            packet_id = next(self._ids)
            if packet_id not in self.inflight:
                return packet_id

    def resend(self) -> None:
        """After a reconnection: QoS 1 messages not acknowledged, in order, DUP set on those
        already sent [MQTT-4.4.0-1]."""
        for packet_id, (topic, payload, sent) in list(self.inflight.items()):
            self.connection.send(publish_packet(topic, payload, 1, False, packet_id, sent),
                                 packet_id)


class _Connection(asyncio.Protocol):
    """One client's TCP connection: parses packets as bytes arrive, answers them, and writes
    what its session delivers, honouring the transport's flow control."""

    def __init__(self, broker: "Broker"):
        self.broker = broker
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.session: _Session | None = None
        self.buffer = bytearray()
        self.will: tuple[str, bytes, int, bool] | None = None
        self.keepalive_window = CONNECT_TIMEOUT_S
        self.last_packet = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self.paused = False
        self.closed = False
        #: packets waiting while the socket is full: (packet, QoS 1 packet id or 0)
        self.queue: deque[tuple[bytes, int]] = deque()
        self.queued_qos0 = 0
        self.dropped = 0
        self.last_drop_log = -1e9

    @property
    def name(self) -> str:
        client = self.session.client_id if self.session else "(before CONNECT)"
        return f"{client} at {self.peer}"

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.last_packet = self.loop.time()
        self.watchdog = self.loop.call_later(self.keepalive_window, self._watch)
        self.broker.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_packet = self.loop.time()
        buffer = self.buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= 1:
                if self.session is None and buffer[start] != CONNECT << 4:
                    raise MalformedPacket(f"first packet byte {buffer[start]:#04x} is not "
                                          "CONNECT")  # [MQTT-3.1.0-1]
                length, shift, index, complete = 0, 0, start + 1, False
                while index < len(buffer):
                    byte = buffer[index]
                    index += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift >= 28:
                        raise MalformedPacket("remaining length longer than four bytes")
                if not complete:
                    break  # the length field is not complete yet
                limit = self.broker.max_packet_size if self.session else MAX_CONNECT_SIZE
                if length > limit:
                    raise MalformedPacket(f"a {length}-byte packet exceeds the limit of {limit}")
                end = index + length
                if end > len(buffer):
                    break
                header = buffer[start]
                body = bytes(buffer[index:end])
                start = end
                self._handle(header >> 4, header & 0x0F, body)
                if self.closed:
                    return
        except MalformedPacket as exc:
            self._abort(f"malformed packet: {exc}")
            return
        except Exception:  # noqa: BLE001 - a bug here must cost one connection, not the broker
            log.exception("MQTT broker: internal error handling %s; closing it", self.name)
            self._abort("internal error")
            return
        if start:
            del buffer[:start]

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.broker.connections.discard(self)
        session = self.session
        if session is None or session.connection is not self:
            return  # never connected, or taken over by a newer connection
        session.connection = None
        if self.will is not None:
            topic, payload, qos, retain = self.will
            self.will = None
            log.info("MQTT broker: %s went away; publishing its will on %s", self.name, topic)
            self.broker.publish(topic, payload, qos, retain)
        if session.clean:
            self.broker.end_session(session)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._drain()

    # -- writing -------------------------------------------------------------------------
    def send(self, packet: bytes, packet_id: int) -> None:
        """Write a packet now, or queue it while the socket is full (bounded)."""
        if self.closed:
            return
        if not self.paused and not self.queue:
            self._write(packet, packet_id)
            return
        if len(self.queue) >= self.broker.queue_limit:
            self._drop_one()
        self.queue.append((packet, packet_id))
        if not packet_id:
            self.queued_qos0 += 1

    def _drop_one(self) -> None:
        """The queue is full: drop its oldest QoS 0 message, else its oldest message."""
        queue = self.queue
        index = 0
        if self.queued_qos0:
            index = next(i for i, (_, packet_id) in enumerate(queue) if not packet_id)
        _, packet_id = queue[index]
        del queue[index]
        if packet_id:
            self.session.inflight.pop(packet_id, None)
        else:
            self.queued_qos0 -= 1
        self.dropped += 1
        now = self.loop.time()
        if now - self.last_drop_log >= 1.0:  # one line per second for a stuck subscriber
            self.last_drop_log = now
            log.warning("MQTT broker: %s falls behind (%d messages queued); dropped its oldest "
                        "QoS %d message (%d dropped so far)", self.name, len(queue),
                        1 if packet_id else 0, self.dropped)

    def _write(self, packet: bytes, packet_id: int) -> None:
        if packet_id:
            entry = self.session.inflight.get(packet_id)
            if entry is None:
                return  # dropped or acknowledged meanwhile
            entry[2] = True
        self.broker.sent += 1
        self.transport.write(packet)

    def _drain(self) -> None:
        queue = self.queue
        while queue and not self.paused and not self.closed:
            packet, packet_id = queue.popleft()
            if not packet_id:
                self.queued_qos0 -= 1
            self._write(packet, packet_id)

    # -- keep-alive ------------------------------------------------------------------------
    def _watch(self) -> None:
        idle = self.loop.time() - self.last_packet
        if idle >= self.keepalive_window:
            what = "sent no CONNECT" if self.session is None else "keep-alive expired"
            log.warning("MQTT broker: %s %s after %.1f s; closing", self.name, what, idle)
            self._abort(what)
        else:
            self.watchdog = self.loop.call_later(self.keepalive_window - idle, self._watch)

    def _abort(self, reason: str) -> None:
        if reason.startswith(("malformed", "protocol")):
            log.warning("MQTT broker: %s: %s; closing the connection", self.name, reason)
        self.closed = True
        self.transport.abort()

    # -- packets ---------------------------------------------------------------------------
    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if self.session is None and kind != CONNECT:
            raise MalformedPacket(f"packet type {kind} before CONNECT")  # [MQTT-3.1.0-1]
        if kind != PUBLISH and REQUIRED_FLAGS.get(kind, flags) != flags:
            raise MalformedPacket(f"packet type {kind} with reserved flags {flags:#x}")
        if kind == PUBLISH:
            self._on_publish(flags, body)
        elif kind == PUBACK:
            self.session.inflight.pop(_only_id(body), None)
        elif kind == PINGREQ:
            self.transport.write(PINGRESP_PACKET)
        elif kind == SUBSCRIBE:
            self._on_subscribe(body)
        elif kind == UNSUBSCRIBE:
            self._on_unsubscribe(body)
        elif kind == PUBREL:
            packet_id = _only_id(body)
            self.session.awaiting_release.discard(packet_id)
            self.transport.write(_ack(PUBCOMP, packet_id))
        elif kind == DISCONNECT:
            self.will = None  # a clean goodbye: no will [MQTT-3.14.4-3]
            self.closed = True
            self.transport.close()
        elif kind == CONNECT:
            if self.session is not None:
                raise MalformedPacket("a second CONNECT")  # [MQTT-3.1.0-2]
            self._on_connect(body)
        elif kind in (PUBREC, PUBCOMP):
            pass  # answers to QoS 2 sends, which this broker never makes
        else:
            raise MalformedPacket(f"packet type {kind} is not one a client sends")

    def _on_connect(self, body: bytes) -> None:
        reader = _Reader(body)
        protocol, level = reader.string(), reader.byte()
        if protocol not in ("MQTT", "MQIsdp"):
            raise MalformedPacket(f"protocol name {protocol!r}")
        if (protocol, level) not in (("MQTT", 4), ("MQIsdp", 3)):
            log.warning("MQTT broker: client at %s asks for protocol %s level %d; only MQTT "
                        "3.1.1 and 3.1 are spoken", self.peer, protocol, level)
            self.transport.write(bytes([CONNACK << 4, 2, 0, UNACCEPTABLE_PROTOCOL]))
            self.closed = True
            self.transport.close()
            return
        flags, keepalive = reader.byte(), reader.u16()
        if flags & 0x01:
            raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
        clean, has_will = bool(flags & 0x02), bool(flags & 0x04)
        will_qos, will_retain = (flags >> 3) & 0x03, bool(flags & 0x20)
        has_password, has_user = bool(flags & 0x40), bool(flags & 0x80)
        if will_qos == 3 or (not has_will and (will_qos or will_retain)):
            raise MalformedPacket("inconsistent will flags")
        if has_password and not has_user and level == 4:
            raise MalformedPacket("a password without a user name")  # [MQTT-3.1.2-22]
        client_id = reader.string()
        will = None
        if has_will:
            will_topic, will_payload = reader.string(), reader.binary()
            if not valid_topic_name(will_topic):
                raise MalformedPacket(f"will topic {will_topic!r}")
            will = (will_topic, will_payload, will_qos, will_retain)
        if has_user:
            reader.string()
        if has_password:
            reader.binary()
        if not reader.done():
            raise MalformedPacket("bytes after the CONNECT payload")
        if not client_id:
            if not clean:
                self.transport.write(bytes([CONNACK << 4, 2, 0, IDENTIFIER_REJECTED]))
                self.closed = True
                self.transport.close()
                return
            client_id = self.broker.new_client_id()
        self.will = will
        self.keepalive_window = 1.5 * keepalive if keepalive else 0.0
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if keepalive:
            self.watchdog = self.loop.call_later(self.keepalive_window, self._watch)
        session, present = self.broker.attach(self, client_id, clean)
        self.session = session
        self.transport.write(bytes([CONNACK << 4, 2, 1 if present else 0, 0]))
        log.debug("MQTT broker: %s connected (clean session %s, keep-alive %d s)",
                  self.name, clean, keepalive)
        if present:
            session.resend()

    def _on_publish(self, flags: int, body: bytes) -> None:
        qos, retain, dup = (flags >> 1) & 0x03, bool(flags & 0x01), bool(flags & 0x08)
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
        if dup and not qos:
            raise MalformedPacket("PUBLISH QoS 0 with DUP set")  # [MQTT-3.3.1-2]
        reader = _Reader(body)
        topic = reader.string()
        if not valid_topic_name(topic):
            raise MalformedPacket(f"PUBLISH to {topic!r}")
        packet_id = reader.u16() if qos else 0
        if qos and not packet_id:
            raise MalformedPacket("PUBLISH with packet id 0")
        payload = body[reader.pos:]
        if qos == 2:
            self.transport.write(_ack(PUBREC, packet_id))
            if packet_id in self.session.awaiting_release:
                return  # a resent QoS 2 message is delivered once [MQTT-4.3.3-2]
            self.session.awaiting_release.add(packet_id)
        elif qos == 1:
            self.transport.write(_ack(PUBACK, packet_id))
        self.broker.publish(topic, payload, qos, retain)

    def _on_subscribe(self, body: bytes) -> None:
        reader = _Reader(body)
        packet_id = reader.u16()
        requests = []
        while not reader.done():
            topic_filter, options = reader.string(), reader.byte()
            if options & 0xFC or options & 0x03 == 3:
                raise MalformedPacket(f"SUBSCRIBE options {options:#x}")  # [MQTT-3.8.3-4]
            requests.append((topic_filter, options & 0x03))
        if not requests or not packet_id:
            raise MalformedPacket("SUBSCRIBE without filters or packet id")
        codes = bytearray()
        granted = []
        for topic_filter, qos in requests:
            if not valid_topic_filter(topic_filter):
                log.warning("MQTT broker: %s subscribed to the invalid filter %r; refused",
                            self.name, topic_filter)
                codes.append(0x80)
                continue
            qos = min(qos, 1)
            self.broker.subscribe(self.session, topic_filter, qos)
            codes.append(qos)
            granted.append((topic_filter, qos))
        self.transport.write(bytes([SUBACK << 4]) + encode_length(2 + len(codes))
                             + packet_id.to_bytes(2, "big") + bytes(codes))
        for topic_filter, qos in granted:  # retained messages follow the SUBACK
            self.broker.send_retained(self.session, topic_filter, qos)

    def _on_unsubscribe(self, body: bytes) -> None:
        reader = _Reader(body)
        packet_id = reader.u16()
        filters = []
        while not reader.done():
            filters.append(reader.string())
        if not filters:
            raise MalformedPacket("UNSUBSCRIBE without filters")  # [MQTT-3.10.3-2]
        for topic_filter in filters:
            self.broker.unsubscribe(self.session, topic_filter)
        self.transport.write(_ack(UNSUBACK, packet_id))


def _only_id(body: bytes) -> int:
    if len(body) != 2:
        raise MalformedPacket("an acknowledgement is not two bytes long")
    return int.from_bytes(body, "big")


# ---- the broker ---------------------------------------------------------------------------

class Broker:
    """The in-process broker. ``url`` is ``mqtt://HOST:PORT`` once started.

    ``queue_limit``: packets one client may have waiting while its socket is full (and QoS 1
    messages an offline persistent session keeps). ``max_packet_size``: larger packets close
    the connection (a fleet batch of 10,000 meters is about 1 MB)."""

    def __init__(self, queue_limit: int = 10_000, max_packet_size: int = 16 * 1024 * 1024):
        self.queue_limit = queue_limit
        self.max_packet_size = max_packet_size
        self.url = ""
        self.sessions: dict[str, _Session] = {}
        self.connections: set[_Connection] = set()
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.tree = _SubscriptionTree()
        self.received = 0  # PUBLISH packets accepted from clients
        self.sent = 0  # packets written to clients
        self._server: asyncio.AbstractServer | None = None
        self._names = itertools.count(1)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        bound = self._server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"mqtt://{shown}:{bound[1]}"
        log.info("MQTT broker listening on %s", self.url)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.will = None  # the broker is leaving, not the client
            connection.closed = True
            connection.transport.abort()
        await self._server.wait_closed()
        self._server = None
        log.info("MQTT broker on %s closed", self.url)

    # -- sessions ----------------------------------------------------------------------------
    def new_client_id(self) -> str:
        while True:
            name = f"meter-emu-broker-{next(self._names)}"
            if name not in self.sessions:
                return name

    def attach(self, connection: _Connection, client_id: str,
               clean: bool) -> tuple[_Session, bool]:
        """Bind a connection to its session; returns (session, session present)."""
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            log.info("MQTT broker: client id %s connected again from %s; closing the older "
                     "connection", client_id, connection.peer)
            session.connection = None
            old.closed = True
            old.transport.abort()
            if old.will is not None:  # the old connection ended without DISCONNECT
                topic, payload, qos, retain = old.will
                old.will = None
                self.publish(topic, payload, qos, retain)
        if session is not None and (clean or session.clean):
            self.end_session(session)
            session = None
        present = session is not None
        if session is None:
            session = self.sessions[client_id] = _Session(self, client_id, clean)
        session.connection = connection
        return session, present

    def end_session(self, session: _Session) -> None:
        for topic_filter in session.filters:
            self.tree.remove(topic_filter, session)
        session.filters.clear()
        session.inflight.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def subscribe(self, session: _Session, topic_filter: str, qos: int) -> None:
        session.filters[topic_filter] = qos
        self.tree.add(topic_filter, session, qos)

    def unsubscribe(self, session: _Session, topic_filter: str) -> None:
        if session.filters.pop(topic_filter, None) is not None:
            self.tree.remove(topic_filter, session)

    # -- messages ----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Route a message to every matching subscriber; keep it if retained."""
        self.received += 1
        if retain:
            if payload:
                self.retained[topic] = (payload, min(qos, 1))
            else:
                self.retained.pop(topic, None)  # [MQTT-3.3.1-10]
        subscribers = self.tree.match(topic)
        if not subscribers:
            return
        name = topic.encode()
        qos0_packet = None
        for session, granted in subscribers.items():
            out_qos = min(qos, granted)
            if out_qos == 0 and qos0_packet is None:
                qos0_packet = publish_packet(name, payload, 0, False)
            session.deliver(name, payload, out_qos, False, qos0_packet)

    def send_retained(self, session: _Session, topic_filter: str, qos: int) -> None:
        for topic, (payload, stored_qos) in list(self.retained.items()):
            if matches(topic_filter, topic):
                session.deliver(topic.encode(), payload, min(qos, stored_qos), True)
