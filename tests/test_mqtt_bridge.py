"""MQTT injection: the topic router (sans-I/O) and the bridge against a real mosquitto broker
(started on a free loopback port) and against the embedded broker, with real meters."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiomqtt
import pytest
from conftest import free_port, until

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.events import TIME_CHANGED
from meter_emu.metering import quantities
from meter_emu.metering.quantities import InjectionError
from meter_emu.mqtt import topics
from meter_emu.mqtt.bridge import MqttBridge, MqttBridgeError
from meter_emu.mqtt.broker import Broker
from meter_emu.mqtt.topics import REJECT, SET, SET_ONE, TRIGGER
from meter_emu.profile import load_profile

PREFIX = "meter-emu"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, ManualClock's default
ANGLE_PF_095 = 18.194872338766785  # acos(0.95) in degrees, by hand: current lags 18.19 deg


def meter(meter_id: str = "meter-1", *overrides: str) -> Meter:
    return Meter(load_profile(overrides=[f"meter.id={meter_id}", *overrides]))


# ---- routing (sans-I/O) -------------------------------------------------------------------

@pytest.fixture
def fleet():
    meters = {"m1": meter("m1", "mqtt.groups=['north']"),
              "m2": meter("m2", "mqtt.groups=['north', 'south']"),
              "m3": meter("m3", "meter.phases=3")}
    return meters, topics.groups_of(meters.values())


def route(fleet, topic: str, payload: bytes):
    meters, groups = fleet
    return topics.route(topic, payload, PREFIX, meters, groups)


def test_meter_set_topic_routes_the_json_object(fleet):
    [action] = route(fleet, "meter-emu/m1/set", b'{"voltage": 231.5, "pf": 0.95}')
    assert action.kind == SET
    assert action.meters == (fleet[0]["m1"],)
    assert action.values == {"voltage": 231.5, "pf": 0.95}
    assert action.key == "meter-emu/m1/set"


def test_a_shard_leaves_other_shards_meters_alone(fleet):
    """--shards K: every shard hears the whole fleet's topics; a meter that is not here is
    another shard's, so its messages are neither applied nor refused."""
    meters, groups = fleet
    for topic, payload in (("meter-emu/ghost/set", b'{"voltage": 230}'),
                           ("meter-emu/ghost/set/voltage", b"230"),
                           ("meter-emu/group/west/set", b'{"voltage": 230}')):
        assert topics.route(topic, payload, PREFIX, meters, groups, shard=True) == []
    actions = topics.route("meter-emu/batch", b'{"ghost": {"voltage": 1}, "m1": {"pf": 0.9}}',
                           PREFIX, meters, groups, shard=True)
    assert [(a.kind, a.meters) for a in actions] == [(SET, (meters["m1"],))]
    # still refused in a shard: what is wrong whoever serves the meter
    [bad] = topics.route("meter-emu/m1/set", b"[1]", PREFIX, meters, groups, shard=True)
    assert bad.kind == REJECT


def test_unknown_meter_is_answered_on_the_prefix_error_topic(fleet):
    [action] = route(fleet, "meter-emu/ghost/set", b'{"voltage": 230}')
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/error")
    assert "unknown meter 'ghost'" in action.error
    assert json.loads(topics.error_document(action)) == {
        "topic": "meter-emu/ghost/set", "error": action.error}


@pytest.mark.parametrize("payload, words", [
    (b"", "empty payload"),
    (b"{voltage: 1}", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[230, 231]", "not list"),
    (b'"230"', "not str"),
    (b"230", "not int"),
])
def test_a_set_payload_that_is_not_a_json_object_is_rejected(fleet, payload, words):
    [action] = route(fleet, "meter-emu/m1/set", payload)
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/m1/error")
    assert words in action.error


def test_one_quantity_topics_and_their_phase(fleet):
    [action] = route(fleet, "meter-emu/m3/set/voltage/2", b" 241.5 ")
    assert (action.kind, action.name, action.phase, action.text) == (SET_ONE, "voltage", 2,
                                                                     "241.5")
    [action] = route(fleet, "meter-emu/m1/set/current", b"7")
    assert (action.kind, action.name, action.phase) == (SET_ONE, "current", None)
    for topic in ("meter-emu/m3/set/voltage/0", "meter-emu/m3/set/voltage/4",
                  "meter-emu/m3/set/voltage/x", "meter-emu/m1/set/voltage/2",
                  "meter-emu/m3/set/voltage/-1", "meter-emu/m3/set/voltage/2/extra",
                  "meter-emu/m3/set/"):
        [action] = route(fleet, topic, b"230")
        assert (action.kind, action.error_topic) == (REJECT, topic.split("/set")[0] + "/error"), \
            topic
    [action] = route(fleet, "meter-emu/m3/set/voltage/3", b"")
    assert action.kind == REJECT and "empty payload" in action.error


def test_fleet_topics_all_and_groups(fleet):
    meters, _ = fleet
    [action] = route(fleet, "meter-emu/all/set", b'{"frequency": 50.5}')
    assert (action.kind, action.meters) == (SET, tuple(meters.values()))
    [action] = route(fleet, "meter-emu/group/north/set", b'{"current": 3}')
    assert action.meters == (meters["m1"], meters["m2"])
    [action] = route(fleet, "meter-emu/group/south/set", b'{"current": 3}')
    assert action.meters == (meters["m2"],)
    [action] = route(fleet, "meter-emu/group/west/set", b'{"current": 3}')
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/error")
    [action] = route(fleet, "meter-emu/all/set", b"oops")  # one error, not one per meter
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/error")


def test_a_bad_batch_entry_never_stops_the_others(fleet):
    meters, _ = fleet
    payload = json.dumps({"m1": {"voltage": 221}, "ghost": {"voltage": 1}, "m2": 5,
                          "m3": {"current": [1, 2, 3]}}).encode()
    actions = route(fleet, "meter-emu/batch", payload)
    assert [(a.kind, a.meters, a.key, a.error_topic) for a in actions] == [
        (SET, (meters["m1"],), ("meter-emu/batch", "m1"), ""),
        (REJECT, (), None, "meter-emu/error"),
        (REJECT, (), None, "meter-emu/m2/error"),
        (SET, (meters["m3"],), ("meter-emu/batch", "m3"), ""),
    ]
    assert "unknown meter 'ghost'" in actions[1].error
    assert "not int" in actions[2].error
    [action] = route(fleet, "meter-emu/batch", b'["m1"]')
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/error")


def test_triggers_are_never_merged(fleet):
    [action] = route(fleet, "meter-emu/m1/trigger/cover_open", b"on")
    assert (action.kind, action.name, action.text, action.key) == (TRIGGER, "cover_open", "on",
                                                                   None)
    [action] = route(fleet, "meter-emu/m1/trigger/cover_open", b"\xff")
    assert action.kind == REJECT and "UTF-8" in action.error
    [action] = route(fleet, "meter-emu/m1/dance", b"")
    assert (action.kind, action.error_topic) == (REJECT, "meter-emu/m1/error")


def test_perform_applies_or_changes_nothing(fleet):
    m1 = fleet[0]["m1"]
    [good] = route(fleet, "meter-emu/m1/set", b'{"voltage": 231.5, "current": 12.0, "pf": 0.95}')
    assert topics.perform(good, m1, START) == 3
    sample = quantities.sample(m1, START)
    assert (sample.voltage, sample.current) == ((231.5,), (12.0,))
    assert sample.angle[0] == pytest.approx(ANGLE_PF_095, abs=1e-9)
    before = quantities.settings_document(m1, START)
    [bad] = route(fleet, "meter-emu/m1/set", b'{"voltage": 100.0, "bogus": 1}')
    with pytest.raises(InjectionError, match="unknown quantity 'bogus'"):
        topics.perform(bad, m1, START + 1)
    assert quantities.settings_document(m1, START + 1) == before
    [trigger] = route(fleet, "meter-emu/m1/trigger/cover_open", b"1")
    assert topics.perform(trigger, m1, START + 2) == 0
    assert "cover_removed" in m1.state.alarms
    [unknown] = route(fleet, "meter-emu/m1/trigger/no_such_trigger", b"1")
    with pytest.raises(InjectionError, match="unknown trigger"):
        topics.perform(unknown, m1, START + 3)
    [pin] = route(fleet, "meter-emu/m1/trigger/service_pin", b"1")  # the e2e test presses it
    with pytest.raises(InjectionError, match="service_pin: this meter is on no power line"):
        topics.perform(pin, m1, START + 4)


def test_state_and_info_documents():
    m = meter("m1", "mqtt.groups=['north']", "registers.fwd_active_wh=1234")
    quantities.apply(m, {"voltage": 231.5}, START)
    state = topics.state_document(m, START)
    assert state["id"] == "m1"
    assert state["time"] == "2026-01-01T00:00:00Z"
    assert state["quantities"]["voltage"] == [231.5]
    assert list(state["registers"]) == [
        "fwd_active_wh", "rev_active_wh", "import_reactive_varh", "export_reactive_varh",
        "power_outage_seconds", "power_outage_count", "fwd_plus_rev_active_wh",
        "fwd_minus_rev_active_wh", "pulse_input_1", "pulse_input_2", "error_counter",
        "q1_reactive_varh", "q2_reactive_varh", "q3_reactive_varh", "q4_reactive_varh"]
    assert state["registers"]["fwd_active_wh"] == 1234
    assert state["registers"]["fwd_plus_rev_active_wh"] == 1234
    assert state["tier"] == 0 and state["alarms"] == []
    extra = topics.state_document(m, START, lambda meter, now: {"power": 1, "tier": 99})
    assert extra["power"] == 1 and extra["tier"] == 0  # the summary never hides a field
    info = topics.info_document(m, {"optical": "tcp://127.0.0.1:1218"})
    assert info["id"] == "m1" and info["phases"] == 1
    assert info["serial_number"] == "0000000012345678"
    assert info["firmware_version"] == "3.10.21"
    assert info["ports"] == {"optical": "tcp://127.0.0.1:1218"}
    assert info["topics"]["groups"] == ["meter-emu/group/north/set"]


def test_subscriptions_do_not_overlap():
    """A message must match one subscription only (brokers may deliver overlaps twice)."""
    from meter_emu.mqtt.broker import matches

    samples = ["p/m1/set", "p/m1/set/voltage", "p/m1/set/voltage/2", "p/all/set",
               "p/group/g/set", "p/batch", "p/m1/trigger/button"]
    for topic in samples:
        hits = [f for f in topics.subscriptions("p") if matches(f, topic)]
        assert len(hits) == 1, (topic, hits)


# ---- a real mosquitto ---------------------------------------------------------------------

async def run(*args: str, stdin: bytes | None = None, timeout: float = 10.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode == 0, (args, err)
    return out.decode()


def pub_args(url: str) -> list[str]:
    return ["-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]


async def pub(url: str, topic: str, message: str) -> None:
    await run("mosquitto_pub", *pub_args(url), "-q", "1", "-t", topic, "-m", message)


class Watcher:
    """An aiomqtt subscriber that is known to be subscribed before anything is published."""

    def __init__(self, url: str, *filters: str):
        self.port = int(url.rsplit(":", 1)[1])
        self.filters = filters

    async def __aenter__(self):
        self.client = aiomqtt.Client("127.0.0.1", self.port)
        await self.client.__aenter__()
        for topic_filter in self.filters:
            await self.client.subscribe(topic_filter, qos=1)  # SUBACK: subscribed
        return self

    async def __aexit__(self, *exc):
        await self.client.__aexit__(*exc)

    async def next(self, topic: str, timeout: float = 5.0) -> dict:
        """The next message on ``topic`` (others skipped), as JSON."""
        while True:
            message = await asyncio.wait_for(self.client.messages.__anext__(), timeout)
            if str(message.topic) == topic:
                return json.loads(message.payload)


class MosquittoSub:
    """``mosquitto_sub -C 1`` that is known to be subscribed (its debug output says when;
    stdbuf makes it write each line as it happens rather than at exit)."""

    def __init__(self, url: str, topic: str):
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        self.args = [*line_buffered, "mosquitto_sub", *pub_args(url), "-d", "-C", "1",
                     "-t", topic]

    async def __aenter__(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            while not (await self._line()).startswith("Subscribed"):
                pass
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _line(self) -> str:
        line = await asyncio.wait_for(self.proc.stdout.readline(), 5)
        assert line, "mosquitto_sub ended early"
        return line.decode().rstrip("\n")

    async def payload(self) -> str:
        """The payload of the one message (the line after 'received PUBLISH')."""
        while "received PUBLISH" not in await self._line():
            pass
        return await self._line()

    async def __aexit__(self, *exc):
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class Persist:
    """The runner's flush: counts calls and clears the dirty flags as a store would."""

    def __init__(self, meters):
        self.meters, self.calls = meters, 0

    def __call__(self):
        self.calls += 1
        for m in self.meters:
            m.dirty = False


async def started(url: str, meters: list, clock=None, **options) -> MqttBridge:
    bridge = MqttBridge(url, meters, clock or ManualClock(), Persist(meters), **options)
    await bridge.start()
    return bridge


def settled(bridge: MqttBridge):
    return lambda: bridge.pending == 0 and bridge.stats["received"] > 0


async def test_injection_published_with_mosquitto_pub_reaches_the_meter(mosquitto):
    m = meter()
    clock = ManualClock()
    bridge = await started(mosquitto.url, [m], clock)
    try:
        async with Watcher(mosquitto.url, "meter-emu/meter-1/state") as watcher:
            clock.advance(60)
            await pub(mosquitto.url, "meter-emu/meter-1/set",
                      '{"voltage": 231.5, "current": 12.0, "pf": 0.95}')
            await until(lambda: bridge.stats["applied"] == 1)
            sample = quantities.sample(m, clock.now())
            assert (sample.voltage, sample.current) == ((231.5,), (12.0,))
            assert sample.angle[0] == pytest.approx(ANGLE_PF_095, abs=1e-9)
            state = await watcher.next("meter-emu/meter-1/state")
            while state["quantities"]["voltage"] != [231.5]:  # skip the start-up state
                state = await watcher.next("meter-emu/meter-1/state")
            assert state["time"] == "2026-01-01T00:01:00Z"  # applied at clock.now()
            assert state["quantities"]["current"] == [12.0]
        assert bridge.stats["updates"] == 3
        assert bridge.persist.calls >= 1
    finally:
        await bridge.close()


async def test_malformed_payloads_are_answered_and_change_nothing(mosquitto):
    m = meter()
    bridge = await started(mosquitto.url, [m])
    try:
        before = quantities.settings_document(m, START)
        async with MosquittoSub(mosquitto.url, "meter-emu/meter-1/error") as sub:
            await pub(mosquitto.url, "meter-emu/meter-1/set", '{"voltage": 231.5, "bogus": 1}')
            error = json.loads(await sub.payload())
        assert error["topic"] == "meter-emu/meter-1/set"
        assert error["error"].startswith("unknown quantity 'bogus'")
        async with Watcher(mosquitto.url, "meter-emu/meter-1/error") as watcher:
            for topic, payload in (("meter-emu/meter-1/set", "not json"),
                                   ("meter-emu/meter-1/set/voltage", "abc"),
                                   ("meter-emu/meter-1/set/voltage", "5000"),
                                   ("meter-emu/meter-1/set/voltage/2", "230"),
                                   ("meter-emu/meter-1/trigger/no_such_trigger", "1"),
                                   ("meter-emu/meter-1/trigger/cover_open", "maybe")):
                await pub(mosquitto.url, topic, payload)
                error = await watcher.next("meter-emu/meter-1/error")
                assert error["topic"] == topic and error["error"], (topic, error)
        assert quantities.settings_document(m, START) == before
        assert m.state.alarms == set()
        assert bridge.stats["rejected"] == 7 and bridge.stats["applied"] == 0
    finally:
        await bridge.close()


async def test_one_phase_of_a_three_phase_meter(mosquitto):
    m = meter("tri", "meter.phases=3")
    bridge = await started(mosquitto.url, [m])
    try:
        await pub(mosquitto.url, "meter-emu/tri/set/voltage/2", "241.5")
        await pub(mosquitto.url, "meter-emu/tri/set/current", "7")
        await until(lambda: bridge.stats["applied"] == 2)
        sample = quantities.sample(m, START)
        assert sample.voltage == (230.0, 241.5, 230.0)  # the profile's 230 V on phases 1, 3
        assert sample.current == (7.0, 7.0, 7.0)
    finally:
        await bridge.close()


async def test_all_group_and_batch_topics(mosquitto):
    m1, m2, m3 = (meter("m1", "mqtt.groups=['north']"), meter("m2", "mqtt.groups=['north']"),
                  meter("m3"))
    bridge = await started(mosquitto.url, [m1, m2, m3])
    try:
        async with Watcher(mosquitto.url, "meter-emu/error", "meter-emu/m2/error") as watcher:
            await pub(mosquitto.url, "meter-emu/all/set", '{"frequency": 50.5}')
            await pub(mosquitto.url, "meter-emu/group/north/set", '{"current": 3}')
            await pub(mosquitto.url, "meter-emu/batch", json.dumps(
                {"m1": {"voltage": 221}, "ghost": {"voltage": 1}, "m2": "bad",
                 "m3": {"voltage": 223}}))
            assert "unknown meter 'ghost'" in (await watcher.next("meter-emu/error"))["error"]
            assert "m2" in (await watcher.next("meter-emu/m2/error"))["error"]
        await until(lambda: bridge.stats["applied"] == 4)
        samples = [quantities.sample(m, START) for m in (m1, m2, m3)]
        assert [s.frequency for s in samples] == [50.5, 50.5, 50.5]
        assert [s.current for s in samples] == [(3.0,), (3.0,), (0.0,)]
        assert [s.voltage for s in samples] == [(221.0,), (230.0,), (223.0,)]
        assert bridge.stats["updates"] == 3 + 2 + 2  # all: 3 meters, group: 2, batch: 2
    finally:
        await bridge.close()


async def test_events_triggers_and_retained_info(mosquitto):
    m = meter()
    bridge = await started(mosquitto.url, [m], ports={"optical": "tcp://127.0.0.1:1218"})
    try:
        # info is retained: a subscriber arriving now still gets it
        info = json.loads(await run("mosquitto_sub", *pub_args(mosquitto.url), "-C", "1",
                                    "-t", "meter-emu/meter-1/info"))
        assert info["id"] == "meter-1"
        assert info["serial_number"] == "0000000012345678"
        assert info["firmware_version"] == "3.10.21"
        assert info["ports"] == {"optical": "tcp://127.0.0.1:1218"}
        async with Watcher(mosquitto.url, "meter-emu/meter-1/event") as watcher:
            m.log_event(TIME_CHANGED.number, 7, START)
            event = await watcher.next("meter-emu/meter-1/event")
            assert (event["number"], event["argument"], event["log"]) == (3, 7, "BT74")
            assert event["time"] == "2026-01-01T00:00:00Z"
            await pub(mosquitto.url, "meter-emu/meter-1/trigger/cover_open", "on")
            numbers = [(await watcher.next("meter-emu/meter-1/event"))["number"]
                       for _ in range(2)]
            assert numbers == [105, 47]  # Cover Removed, Tamper Attempt Detected
        assert "cover_removed" in m.state.alarms
    finally:
        await bridge.close()
    assert m.event_listeners == []


async def test_latest_value_per_topic_while_the_meters_are_busy(mosquitto):
    m = meter()
    bridge = await started(mosquitto.url, [m])
    try:
        bridge.pause()
        lines = "".join(f"{200 + n}\n" for n in range(1, 101)).encode()  # 201 .. 300 V
        await run("mosquitto_pub", *pub_args(mosquitto.url), "-q", "1", "-l",
                  "-t", "meter-emu/meter-1/set/voltage", stdin=lines)
        for _ in range(2):  # triggers are never merged: both wait
            await pub(mosquitto.url, "meter-emu/meter-1/trigger/tamper", "1")
        await until(lambda: bridge.stats["received"] == 102)
        assert bridge.pending == 3
        assert quantities.sample(m, START).voltage == (230.0,)  # nothing applied yet
        calls = bridge.persist.calls
        bridge.resume()
        await until(settled(bridge))
        assert quantities.sample(m, START).voltage == (300.0,)
        assert bridge.stats["coalesced"] == 99
        assert bridge.stats["applied"] == 3  # the last voltage and two tamper triggers
        assert [e[3] for e in m.state.history.entries][-2:] == [47, 47]
        assert bridge.persist.calls == calls + 1  # one flush for the whole drain
    finally:
        await bridge.close()


async def test_state_messages_periodic_and_after_injections(mosquitto):
    m = meter("meter-1", "mqtt.state_interval_s=0.25")
    bridge = await started(mosquitto.url, [m], state_after_apply_s=0.3)
    try:
        async with Watcher(mosquitto.url, "meter-emu/meter-1/state") as watcher:
            first = await watcher.next("meter-emu/meter-1/state")
            await watcher.next("meter-emu/meter-1/state")  # the next period
            assert first["quantities"]["voltage"] == [230.0]
            await pub(mosquitto.url, "meter-emu/meter-1/set/voltage", "201")
            state = await watcher.next("meter-emu/meter-1/state")
            while state["quantities"]["voltage"] != [201.0]:
                state = await watcher.next("meter-emu/meter-1/state")
            shown = time.monotonic()
            await run("mosquitto_pub", *pub_args(mosquitto.url), "-q", "1", "-l",
                      "-t", "meter-emu/meter-1/set/voltage", stdin=b"202\n203\n")
            await until(lambda: bridge.stats["received"] == 3)
            state = await watcher.next("meter-emu/meter-1/state")
            assert state["quantities"]["voltage"] == [203.0]  # the latest, not one per message
            # no earlier than the period after the previous state (0.25 s); measured at the
            # receiver, so both deliveries' jitter is allowed for
            assert time.monotonic() - shown >= 0.2
    finally:
        await bridge.close()


async def test_queue_limit_drops_the_oldest_pending(mosquitto):
    meters = [meter(f"m{n}") for n in range(4)]
    bridge = await started(mosquitto.url, meters, queue_limit=2)
    try:
        bridge.pause()
        for n in range(4):
            await pub(mosquitto.url, f"meter-emu/m{n}/set/current", str(n + 1))
        await until(lambda: bridge.stats["received"] == 4)
        assert (bridge.pending, bridge.stats["dropped"]) == (2, 2)
        bridge.resume()
        await until(settled(bridge))
        assert [quantities.sample(m, START).current for m in meters] == [
            (0.0,), (0.0,), (3.0,), (4.0,)]
    finally:
        await bridge.close()


async def test_close_applies_what_was_received(mosquitto):
    m = meter()
    bridge = await started(mosquitto.url, [m])
    bridge.pause()
    await pub(mosquitto.url, "meter-emu/meter-1/set/current", "4.5")
    await until(lambda: bridge.stats["received"] == 1)
    await bridge.close()
    assert quantities.sample(m, START).current == (4.5,)
    assert bridge.pending == 0


async def test_reconnects_when_the_broker_comes_back(mosquitto):
    m = meter()
    bridge = await started(mosquitto.url, [m])
    try:
        mosquitto.stop()
        await until(lambda: not bridge.connected)
        mosquitto.start()  # same port
        await until(lambda: bridge.connected, timeout=10)
        assert bridge.stats["reconnects"] >= 1
        await pub(mosquitto.url, "meter-emu/meter-1/set/voltage", "210")
        await until(lambda: bridge.stats["applied"] == 1)
        assert quantities.sample(m, START).voltage == (210.0,)
        info = json.loads(await run("mosquitto_sub", *pub_args(mosquitto.url), "-C", "1",
                                    "-t", "meter-emu/meter-1/info"))
        assert info["id"] == "meter-1"  # republished to the new broker
    finally:
        await bridge.close()


async def test_unreachable_broker_and_bad_url_raise_clear_errors():
    port = free_port()  # nothing listens there
    m = meter()
    with pytest.raises(MqttBridgeError, match=f"cannot connect to the MQTT broker at "
                                              f"mqtt://127.0.0.1:{port}"):
        await started(f"mqtt://127.0.0.1:{port}", [m])
    assert m.event_listeners == []
    with pytest.raises(MqttBridgeError, match="expected mqtt://HOST"):
        MqttBridge("http://127.0.0.1:1883", [m], ManualClock(), lambda: None)
    with pytest.raises(MqttBridgeError, match="two meters are called"):
        MqttBridge("mqtt://127.0.0.1", [m, meter()], ManualClock(), lambda: None)


async def test_the_embedded_broker_serves_the_bridge():
    broker = Broker()
    await broker.start()
    m = meter()
    bridge = await started(broker.url, [m])
    try:
        await pub(broker.url, "meter-emu/meter-1/set", '{"voltage": 231.5, "current": 12.0}')
        await until(lambda: bridge.stats["applied"] == 1)
        assert quantities.sample(m, START).voltage == (231.5,)
        info = json.loads(await run("mosquitto_sub", *pub_args(broker.url), "-C", "1",
                                    "-t", "meter-emu/+/info"))
        assert info["id"] == "meter-1"
    finally:
        await bridge.close()
        await broker.close()
