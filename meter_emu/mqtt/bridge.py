"""The MQTT bridge: injected quantities in, state, events and info out (aiomqtt).

Three tasks share one asyncio loop with the meters' ports:

* **connection**: connects, subscribes to the topics of every meter prefix
  (``topics.subscriptions``), publishes each meter's retained info, then receives messages and
  publishes what the meters produce. When the broker goes away it reconnects with exponential
  back-off (0.5 s doubling to 30 s), subscribes again and republishes the info.
* **apply**: incoming messages are routed at once (``topics.route``) into a bounded pending
  queue that keeps the latest value per topic: a newer message on a topic replaces the one not
  yet applied, in the place the older one had (a fleet batch counts as one topic per meter;
  triggers are never merged). The apply task drains it, applying each action at
  ``clock.now()``, calls ``persist`` once per drain (not per message) and publishes the state
  of the meters it changed. When the meters fall behind, the queue keeps at most
  ``queue_limit`` pending actions and drops the oldest, counted in ``stats["dropped"]``.
* **state**: publishes each meter's state every ``[mqtt] state_interval_s`` real seconds.

Publishing never blocks a meter: event documents (``meter.event_listeners``) and states go to a
bounded outgoing queue that the connection drains; while disconnected it keeps the newest
messages. Rejected messages are answered on ``<prefix>/<meter>/error`` (or ``<prefix>/error``)
and logged at warning.

Each meter whose quantities a message changed counts one injection in the fleet's statistics
(fleet/stats.py): a batch to 1,000 meters counts 1,000; triggers and rejected payloads none.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import time
from collections import deque
from urllib.parse import unquote, urlsplit

import aiomqtt

from ..fleet import stats
from ..metering import engine
from ..metering.quantities import InjectionError
from . import topics
from .topics import REJECT, meter_topic

log = logging.getLogger(__name__)

FIRST_RETRY_S, LAST_RETRY_S = 0.5, 30.0
KEEPALIVE_S = 30
APPLY_SLICE_S = 0.02  # the apply task yields to the loop (ports, receipt) this often
PUBLISH_CHUNK = 64  # messages published at once (aiomqtt scans its pending calls per call)
STATE_AFTER_APPLY_S = 1.0  # while messages keep coming, a changed meter's state this often


class MqttBridgeError(RuntimeError):
    """The bridge cannot start (bad URL, broker unreachable); the message says why."""


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user[:password]@]host[:port]`` -> (host, port, user, password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise MqttBridgeError(f"MQTT broker URL {url!r}: expected mqtt://HOST[:PORT]")
    try:
        port = parts.port or 1883
    except ValueError:
        raise MqttBridgeError(f"MQTT broker URL {url!r}: bad port") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, user, password


class _MeterTopics:
    """A meter's published topics and settings, looked up once."""

    __slots__ = ("prefix", "state", "event", "info", "error", "interval")

    def __init__(self, meter):
        mqtt = meter.profile.mqtt
        self.prefix = mqtt.prefix
        self.state, self.event, self.info, self.error = (
            meter_topic(self.prefix, meter.id, kind) for kind in ("state", "event", "info",
                                                                  "error"))
        self.interval = float(mqtt.state_interval_s)


class MqttBridge:
    """Connects meters to an MQTT broker.

    ``clock.now()`` stamps each applied message; ``persist()`` is the runner's flush, called
    once after a drain of applied messages changed a meter; ``ports`` goes into each retained
    info; ``queue_limit`` bounds the pending (received, not yet applied) actions and
    ``outgoing_limit`` the messages waiting to be published; ``state_after_apply_s`` is the
    shortest time between two state messages of a meter that injections keep changing.
    ``stats`` counts messages received, actions applied, quantity settings changed
    (updates), rejections, pending actions merged into a newer one (coalesced), messages
    published, reconnections and drops."""

    def __init__(self, url: str, meters: list, clock, persist, *, ports: dict | None = None,
                 queue_limit: int = 10_000, outgoing_limit: int = 100_000,
                 state_after_apply_s: float = STATE_AFTER_APPLY_S, shard: bool = False):
        self.url = url
        self.shard = shard  # one shard of a fleet: other meters' messages are not ours
        self.host, self.port, self._user, self._password = parse_url(url)
        self.meters = list(meters)
        self.clock = clock
        self.persist = persist
        self.ports = dict(ports or {})
        self.queue_limit = queue_limit
        self.outgoing_limit = outgoing_limit
        self.state_after_apply_s = state_after_apply_s
        self.stats = dict(received=0, applied=0, updates=0, rejected=0, coalesced=0,
                          published=0, reconnects=0, dropped=0, outgoing_dropped=0)
        self.client_id = f"meter-emu-{os.getpid()}-{os.urandom(3).hex()}"
        self._topics = {meter: _MeterTopics(meter) for meter in self.meters}
        routes: dict[str, tuple[dict, dict]] = {}
        for meter in self.meters:
            prefix = self._topics[meter].prefix
            by_id, _ = routes.setdefault(prefix, ({}, {}))
            if meter.id in by_id:
                raise MqttBridgeError(f"two meters are called {meter.id!r} under {prefix}/")
            if meter.id == "all":
                log.warning("meter 'all': %s/all/set addresses every meter, not this one",
                            prefix)
            by_id[meter.id] = meter
        for prefix, (by_id, groups) in routes.items():
            groups.update(topics.groups_of(by_id.values()))
        #: (prefix, meters by id, groups), longest prefix first
        self._routes = sorted(((p, by_id, groups) for p, (by_id, groups) in routes.items()),
                              key=lambda item: -len(item[0]))
        self._summary = getattr(engine, "summary", None)
        self._pending: dict = {}
        self._draining: deque = deque()  # taken from _pending, being applied
        self._sequence = itertools.count()
        self._outgoing: deque = deque()
        self._wake_apply = asyncio.Event()
        self._wake_publisher = asyncio.Event()
        self._running = asyncio.Event()  # cleared while paused
        self._running.set()
        self._connected = False
        self._tasks: list[asyncio.Task] = []
        self._last_drop_log = -1e9
        self._state_due: dict = {}  # meters changed since their state was last published
        self._wake_state = asyncio.Event()

    # ---- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and subscribe; returns once subscribed, or raises MqttBridgeError."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        for meter in self.meters:
            meter.event_listeners.append(self._on_event)
        self._tasks = [asyncio.create_task(self._connection(ready), name="mqtt connection"),
                       asyncio.create_task(self._apply_loop(), name="mqtt apply")]
        try:
            await ready
        except BaseException:
            await self.close()
            raise
        # states only once every info is out: a large fleet's first states (each a meter's
        # first advance) would otherwise hold the start back (40,000 meters: by seconds)
        self._tasks.append(asyncio.create_task(self._state_loop(), name="mqtt state"))

    async def close(self) -> None:
        """Apply what was received, stop the tasks and disconnect."""
        for meter in self.meters:
            if self._on_event in meter.event_listeners:
                meter.event_listeners.remove(self._on_event)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self.pending:
            self._drain_all()

    def pause(self) -> None:
        """Hold the apply task within one apply slice (messages keep arriving and coalescing);
        for tests and snapshots."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Actions received and not yet applied."""
        return len(self._pending) + len(self._draining)

    # ---- connection -----------------------------------------------------------------------
    async def _connection(self, ready: asyncio.Future) -> None:
        delay = FIRST_RETRY_S
        while True:
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier=self.client_id, username=self._user,
                        password=self._password, keepalive=KEEPALIVE_S, clean_session=True,
                        timeout=10) as client:
                    client.pending_calls_threshold = 4 * PUBLISH_CHUNK  # no log noise
                    await client.subscribe([(f, 1) for prefix, _, _ in self._routes
                                            for f in topics.subscriptions(prefix)])
                    await self._publish_info(client)
                    self._connected = True
                    log.info("MQTT: connected to %s as %s; %d meters, topics under %s/",
                             self.url, self.client_id, len(self.meters),
                             ", ".join(p for p, _, _ in self._routes))
                    if not ready.done():
                        ready.set_result(None)
                    delay = FIRST_RETRY_S
                    await self._serve(client)
            except Exception as exc:  # noqa: BLE001 - MqttError, or a bug: retry either way
                self._connected = False
                if not isinstance(exc, aiomqtt.MqttError):
                    log.exception("MQTT: the connection task failed")
                if not ready.done():
                    ready.set_exception(MqttBridgeError(
                        f"cannot connect to the MQTT broker at {self.url}: {exc}"))
                    return
                self.stats["reconnects"] += 1
                log.warning("MQTT: connection to %s lost or refused (%s); reconnecting in "
                            "%.1f s", self.url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY_S)
            finally:
                self._connected = False

    async def _serve(self, client) -> None:
        """Receive and publish until either fails (the connection is gone)."""
        receiver = asyncio.create_task(self._receive(client))
        publisher = asyncio.create_task(self._publisher(client))
        try:
            done, _ = await asyncio.wait({receiver, publisher},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            publisher.cancel()
            await asyncio.gather(receiver, publisher, return_exceptions=True)
        for task in done:
            task.result()  # re-raises the MqttError that ended the connection

    async def _publish_info(self, client) -> None:
        """The retained info of every meter, QoS 1, a chunk at a time."""
        messages = [(self._topics[m].info, json.dumps(topics.info_document(m, self.ports)))
                    for m in self.meters]
        for start in range(0, len(messages), PUBLISH_CHUNK):
            await asyncio.gather(*(client.publish(topic, payload, qos=1, retain=True)
                                   for topic, payload in messages[start:start + PUBLISH_CHUNK]))
        self.stats["published"] += len(messages)

    async def _receive(self, client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = b"" if payload is None else str(payload).encode()
            self.receive(message.topic.value, payload)

    async def _publisher(self, client) -> None:
        outgoing = self._outgoing
        while True:
            if not outgoing:
                self._wake_publisher.clear()
                await self._wake_publisher.wait()
                continue
            chunk = [outgoing.popleft() for _ in range(min(len(outgoing), PUBLISH_CHUNK))]
            try:
                await asyncio.gather(*(client.publish(topic, payload, qos=qos, retain=retain)
                                       for topic, payload, qos, retain in chunk))
            except BaseException:  # the connection failed or closes: keep them for the next
                outgoing.extendleft(reversed(chunk))  # (at least once: some may be sent twice)
                raise
            self.stats["published"] += len(chunk)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message; never blocks. Beyond ``outgoing_limit`` the oldest is dropped."""
        outgoing = self._outgoing
        if len(outgoing) >= self.outgoing_limit:
            outgoing.popleft()
            self.stats["outgoing_dropped"] += 1
        outgoing.append((topic, payload, qos, retain))
        self._wake_publisher.set()

    # ---- incoming -------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes) -> None:
        """Route one message into the pending queue (or answer it with an error)."""
        self.stats["received"] += 1
        route = self._route_for(topic)
        if route is None:
            return
        pending = self._pending
        for action in topics.route(topic, payload, *route, shard=self.shard):
            if action.kind == REJECT:
                self._reject(action)
                continue
            key = action.key if action.key is not None else ("once", next(self._sequence))
            if key in pending:
                self.stats["coalesced"] += 1  # the newer value takes the older one's place
            elif len(pending) >= self.queue_limit:
                del pending[next(iter(pending))]
                self._count_drop()
            pending[key] = action
        if pending:
            self._wake_apply.set()

    def _route_for(self, topic: str):
        for route in self._routes:
            if topic.startswith(route[0] + "/"):
                return route
        return None  # not a subscribed topic (a broker that sends more than asked)

    def _count_drop(self) -> None:
        self.stats["dropped"] += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            self._last_drop_log = now
            log.warning("MQTT: %d messages pending; the meters fall behind, dropped the oldest "
                        "(%d dropped so far)", len(self._pending), self.stats["dropped"])

    def _reject(self, action) -> None:
        self.stats["rejected"] += 1
        log.warning("MQTT: rejected a message on %s: %s", action.topic, action.error)
        self.publish(action.error_topic, topics.error_document(action))

    # ---- applying -------------------------------------------------------------------------
    async def _apply_loop(self) -> None:
        draining = self._draining
        while True:
            await self._wake_apply.wait()
            await self._running.wait()
            self._wake_apply.clear()
            draining.extend(self._pending.values())
            self._pending = {}
            changed: dict = {}
            deadline = time.perf_counter() + APPLY_SLICE_S
            done = 0
            while draining:
                self._apply(draining.popleft(), changed)
                done += 1
                if done % 64 == 0 and time.perf_counter() > deadline:
                    self._after_apply(changed)
                    changed = {}
                    await asyncio.sleep(0)  # let ports and receipt run
                    await self._running.wait()
                    deadline = time.perf_counter() + APPLY_SLICE_S
            self._after_apply(changed)

    def _drain_all(self) -> None:
        """Apply everything received, at once (closing)."""
        self._draining.extend(self._pending.values())
        self._pending = {}
        changed: dict = {}
        while self._draining:
            self._apply(self._draining.popleft(), changed)
        self._after_apply(changed)

    def _apply(self, action, changed: dict) -> None:
        now = self.clock.now()
        applied = False
        injected = 0
        for meter in action.meters:
            try:
                updates = topics.perform(action, meter, now)
            except InjectionError as exc:
                self._reject(topics.Action(REJECT, action.topic, error=str(exc),
                                           error_topic=self._topics[meter].error))
                continue
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
                log.exception("MQTT: internal error applying %s to %s", action.topic, meter.id)
                self._reject(topics.Action(REJECT, action.topic, error=f"internal error: {exc}",
                                           error_topic=self._topics[meter].error))
                continue
            self.stats["updates"] += updates
            injected += updates > 0
            applied = True
            changed[meter] = None
        if applied:
            self.stats["applied"] += 1
        if injected:
            stats.STATS.injected(injected)

    def _after_apply(self, changed: dict) -> None:
        """Persist once for the whole drain; the state task then shows the changed meters."""
        if not changed:
            return
        if any(meter.dirty for meter in changed):
            try:
                self.persist()
            except Exception:  # noqa: BLE001 - a full disk must not stop the bridge
                log.exception("MQTT: saving the meters' state failed")
        self._state_due.update(changed)
        self._wake_state.set()

    # ---- outgoing -------------------------------------------------------------------------
    def _publish_state(self, meter, now: float) -> None:
        try:
            document = topics.state_document(meter, now, self._summary)
        except Exception:  # noqa: BLE001 - a rendering bug must not stop the bridge
            log.exception("MQTT: cannot build the state of %s", meter.id)
            return
        self.publish(self._topics[meter].state, json.dumps(document).encode())

    async def _state_loop(self) -> None:
        """Each meter's state every ``state_interval_s`` real seconds (0: never), the meters
        spread over the interval so a large fleet makes no bursts; and soon after an
        injection changed a meter: at once, or STATE_AFTER_APPLY_S after its previous state
        while injections keep coming (a flood of batches must not become a flood of state
        documents). An injection's state restarts that meter's interval."""
        loop = asyncio.get_running_loop()
        intervals = {m: self._topics[m].interval for m in self.meters
                     if self._topics[m].interval > 0}
        order = itertools.count()
        start, count = loop.time(), len(intervals)
        next_due = {meter: start + every * index / count
                    for index, (meter, every) in enumerate(intervals.items())}
        heap = [(when, next(order), meter) for meter, when in next_due.items()]
        heapq.heapify(heap)
        last: dict = {}
        while True:
            self._wake_state.clear()
            wall, now = loop.time(), self.clock.now()
            shown: dict = {}
            while heap and heap[0][0] <= wall:
                when, _, meter = heapq.heappop(heap)
                if next_due[meter] == when:  # else superseded by an injection's state
                    try:
                        meter.advance(now)
                    except Exception:  # noqa: BLE001 - the runner's loop reports it too
                        log.exception("MQTT: advancing %s before its state failed", meter.id)
                    shown[meter] = None
            later = {}
            for meter in self._state_due:
                if meter not in intervals or meter in shown:
                    continue
                if wall - last.get(meter, -1e9) >= self.state_after_apply_s:
                    shown[meter] = None
                else:
                    later[meter] = None
            self._state_due = later
            for index, meter in enumerate(shown, 1):
                self._publish_state(meter, now)
                last[meter] = wall
                next_due[meter] = when = wall + intervals[meter]
                heapq.heappush(heap, (when, next(order), meter))
                if index % 64 == 0:
                    await asyncio.sleep(0)  # let ports and the apply task run
            if any(meter.dirty for meter in shown):
                try:
                    self.persist()
                except Exception:  # noqa: BLE001
                    log.exception("MQTT: saving the meters' state failed")
            wake = heap[0][0] if heap else wall + 60.0
            if self._state_due:  # including meters changed while states were published
                wake = min(wake, min(last.get(meter, -1e9) for meter in self._state_due)
                           + self.state_after_apply_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake_state.wait(), max(0.02, wake - loop.time()))

    def _on_event(self, meter, document: dict) -> None:
        """A meter logged an event (``Meter.event_listeners``): queue it, never block."""
        try:
            self.publish(self._topics[meter].event, json.dumps(document).encode(), qos=1)
        except Exception:  # noqa: BLE001 - a listener must not raise into the meter
            log.exception("MQTT: cannot queue an event of %s", meter.id)
