"""The embedded MQTT broker, exercised by independent clients: mosquitto_pub/mosquitto_sub
(the Debian package), aiomqtt/paho, and raw sockets speaking bytes written out by hand from
the MQTT 3.1.1 text."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time

import aiomqtt
import pytest
from conftest import until

from meter_emu.mqtt.broker import Broker, matches, valid_topic_filter

@pytest.fixture
async def broker():
    server = Broker()
    await server.start()
    yield server
    await server.close()


def port_of(server: Broker) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def run(*args: str, stdin: bytes | None = None, timeout: float = 10.0):
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out.decode(), err.decode()


def subscribed(server: Broker, topic_filter: str) -> bool:
    return any(topic_filter in s.filters for s in server.sessions.values())


async def next_message(client: aiomqtt.Client, timeout: float = 5.0):
    return await asyncio.wait_for(client.messages.__anext__(), timeout)


# ---- raw MQTT 3.1.1 bytes, written out by hand ------------------------------------------

def connect_packet(client_id: bytes = b"raw", keepalive: int = 60, clean: bool = True,
                   will: tuple[bytes, bytes] | None = None, level: int = 4,
                   protocol: bytes = b"MQTT") -> bytes:
    flags = (0x02 if clean else 0) | (0x04 if will else 0)
    body = (len(protocol).to_bytes(2, "big") + protocol + bytes([level, flags])
            + keepalive.to_bytes(2, "big") + len(client_id).to_bytes(2, "big") + client_id)
    if will:
        for field in will:  # will topic, will message: each with its two-byte length
            body += len(field).to_bytes(2, "big") + field
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def subscribe_packet(packet_id: int, topic_filter: bytes, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + len(topic_filter).to_bytes(2, "big") + topic_filter
    return bytes([0x82, len(body) + 1]) + body + bytes([qos])


def publish_packet(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += payload
    assert len(body) < 128
    return bytes([0x30 | qos << 1, len(body)]) + body


DISCONNECT = b"\xe0\x00"


async def raw_client(server: Broker, packet: bytes):
    """Open a connection, send ``packet``, return (reader, writer, the 4-byte answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(packet)
    answer = await asyncio.wait_for(reader.readexactly(4), 5)
    return reader, writer, answer


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the broker closed the connection (reads until EOF)."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionResetError:
        pass
    return True


# ---- topic rules (pure functions) ---------------------------------------------------------

@pytest.mark.parametrize("topic_filter, topic, expected", [
    ("a/b", "a/b", True),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/#", "a", True),  # "#" also matches the parent level (MQTT 3.1.1 4.7.1.2)
    ("a/#", "a/b/c", True),
    ("#", "a/b", True),
    ("+/+", "/x", True),  # an empty first level is a level
    ("#", "$SYS/uptime", False),  # wildcards at the start do not match $ topics (4.7.2)
    ("+/uptime", "$SYS/uptime", False),
    ("$SYS/#", "$SYS/uptime", True),
    ("a/b", "a/c", False),
])
def test_filter_matching(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic_filter, valid", [
    ("a/#", True), ("#", True), ("+", True), ("a/+/c", True),
    ("a/#/c", False), ("a#", False), ("a/b+", False), ("", False),
])
def test_filter_syntax(topic_filter, valid):
    assert valid_topic_filter(topic_filter) is valid


# ---- independent clients ------------------------------------------------------------------

async def test_mosquitto_clients_exchange_messages_with_wildcards(broker):
    port = str(port_of(broker))
    sub = asyncio.create_task(run("mosquitto_sub", "-p", port, "-t", "meters/+/voltage",
                                  "-t", "fleet/#", "-v", "-C", "3"))
    await until(lambda: subscribed(broker, "fleet/#"))
    for topic, message in (("meters/m1/voltage", "230.5"), ("meters/m1/current", "9"),
                           ("fleet/a/b", "x"), ("meters/m2/voltage", "231")):
        assert (await run("mosquitto_pub", "-p", port, "-t", topic, "-m", message))[0] == 0
    rc, out, _ = await sub
    assert rc == 0
    assert out.splitlines() == ["meters/m1/voltage 230.5", "fleet/a/b x",
                                "meters/m2/voltage 231"]


async def test_dollar_topics_need_an_explicit_first_level(broker):
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        await client.subscribe("#")
        await client.subscribe("a/+/c")  # overlaps "#": the message still comes once
        await client.publish("$SYS/load", b"1")
        await client.publish("a/b/c", b"2")
        await client.publish("a", b"3")
        first, second = await next_message(client), await next_message(client)
        assert [(str(first.topic), first.payload), (str(second.topic), second.payload)] == [
            ("a/b/c", b"2"), ("a", b"3")]
        await client.subscribe("$SYS/#")
        await client.publish("$SYS/load", b"4")
        message = await next_message(client)
        assert (str(message.topic), message.payload) == ("$SYS/load", b"4")


async def test_retained_message_reaches_a_late_subscriber_and_empty_payload_clears_it(broker):
    port = str(port_of(broker))
    assert (await run("mosquitto_pub", "-p", port, "-t", "m/info", "-m", "hello", "-r"))[0] == 0
    rc, out, _ = await run("mosquitto_sub", "-p", port, "-t", "m/+", "-v", "-C", "1")
    assert (rc, out) == (0, "m/info hello\n")
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        await client.subscribe("m/info")
        message = await next_message(client)
        assert (message.payload, message.retain) == (b"hello", True)
        await client.publish("m/info", b"live")  # to an existing subscriber: retain flag 0
        message = await next_message(client)
        assert (message.payload, message.retain) == (b"live", False)
    assert (await run("mosquitto_pub", "-p", port, "-t", "m/info", "-r", "-n"))[0] == 0
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        await client.subscribe("m/info")
        await client.subscribe("m/marker")
        await client.publish("m/marker", b"after")
        message = await next_message(client)  # a retained message would come before this
        assert (str(message.topic), message.payload) == ("m/marker", b"after")
    assert broker.retained == {}


async def test_qos1_both_ways_and_qos2_granted_as_1(broker):
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        granted = await client.subscribe("q/#", qos=2)
        assert list(granted) == [1]
        await client.publish("q/one", b"payload", qos=1)  # returns once the PUBACK came
        message = await next_message(client)
        assert (message.payload, message.qos) == (b"payload", 1)
        await client.publish("q/two", b"x", qos=2)  # inbound QoS 2 is acknowledged too
        message = await next_message(client)
        assert (message.payload, message.qos) == (b"x", 1)


async def test_persistent_session_keeps_and_resends_qos1_messages(broker):
    reader, writer, answer = await raw_client(broker, connect_packet(b"keeper", clean=False))
    assert answer == b"\x20\x02\x00\x00"  # CONNACK, no session present, accepted
    writer.write(subscribe_packet(7, b"t/q", 1))
    assert await reader.readexactly(5) == b"\x90\x03\x00\x07\x01"  # SUBACK id 7, QoS 1
    writer.write(DISCONNECT)
    await closed_by_peer(reader)
    writer.close()
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        await client.publish("t/q", b"kept", qos=1)
    # back again: session present, the message waiting, QoS 1 with a packet id
    reader, writer, answer = await raw_client(broker, connect_packet(b"keeper", clean=False))
    assert answer == b"\x20\x02\x01\x00"
    first = await reader.readexactly(2 + 2 + 3 + 2 + 4)
    assert first[0] == 0x32 and first[4:7] == b"t/q" and first[9:] == b"kept"
    packet_id = first[7:9]
    writer.transport.abort()  # gone without a PUBACK
    reader, writer, answer = await raw_client(broker, connect_packet(b"keeper", clean=False))
    assert answer == b"\x20\x02\x01\x00"
    again = await reader.readexactly(len(first))
    assert again[0] == 0x3A  # resent with DUP set
    assert again[1:] == first[1:]
    writer.write(b"\x40\x02" + packet_id)  # PUBACK
    writer.write(DISCONNECT)
    await closed_by_peer(reader)
    assert broker.sessions["keeper"].inflight == {}


async def test_will_on_abnormal_close_but_not_after_disconnect(broker):
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as watcher:
        await watcher.subscribe("wills/#")
        _, writer, answer = await raw_client(
            broker, connect_packet(b"a", will=(b"wills/a", b"a is gone")))  # writer kept
        assert answer == b"\x20\x02\x00\x00"
        writer.transport.abort()
        message = await next_message(watcher)
        assert (str(message.topic), message.payload) == ("wills/a", b"a is gone")
        reader, writer, _ = await raw_client(
            broker, connect_packet(b"b", will=(b"wills/b", b"b is gone")))
        writer.write(DISCONNECT)
        await closed_by_peer(reader)
        await watcher.publish("wills/marker", b"m")
        message = await next_message(watcher)
        assert str(message.topic) == "wills/marker"


async def test_unsubscribe_stops_delivery(broker):
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:
        await client.subscribe("u/a")
        await client.subscribe("u/b")
        await client.unsubscribe("u/a")
        await client.publish("u/a", b"no")
        await client.publish("u/b", b"yes")
        message = await next_message(client)
        assert (str(message.topic), message.payload) == ("u/b", b"yes")
    await until(lambda: not broker.sessions)
    assert broker.tree.root.children == {}  # clean session gone: nothing left subscribed


async def test_only_mqtt_311_and_31_are_spoken(broker):
    reader, writer, answer = await raw_client(broker, connect_packet(level=5))
    assert answer == b"\x20\x02\x00\x01"  # unacceptable protocol version
    assert await closed_by_peer(reader)
    writer.close()
    _, writer, answer = await raw_client(broker, connect_packet(level=3, protocol=b"MQIsdp"))
    assert answer == b"\x20\x02\x00\x00"
    writer.write(DISCONNECT)
    if shutil.which("mosquitto_pub"):
        rc, _, _ = await run("mosquitto_pub", "-p", str(port_of(broker)), "-V", "mqttv5",
                             "-t", "x", "-m", "y")
        assert rc != 0


async def test_empty_client_id_needs_a_clean_session(broker):
    reader, writer, answer = await raw_client(broker, connect_packet(b"", clean=False))
    assert answer == b"\x20\x02\x00\x02"  # identifier rejected
    assert await closed_by_peer(reader)
    writer.close()
    _, writer, answer = await raw_client(broker, connect_packet(b"", clean=True))
    assert answer == b"\x20\x02\x00\x00"
    writer.write(DISCONNECT)


async def test_same_client_id_takes_the_session_over(broker):
    first_reader, first_writer, _ = await raw_client(broker, connect_packet(b"twin"))
    _, writer, answer = await raw_client(broker, connect_packet(b"twin"))
    assert answer == b"\x20\x02\x00\x00"
    assert await closed_by_peer(first_reader)
    first_writer.close()
    writer.write(DISCONNECT)


async def test_keepalive_is_enforced_at_one_and_a_half_times(broker):
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as watcher:
        await watcher.subscribe("ka/will")
        started = time.monotonic()
        reader, writer, _ = await raw_client(  # keep the writer: dropping it closes the socket
            broker, connect_packet(b"sleepy", keepalive=1, will=(b"ka/will", b"timed out")))
        await closed_by_peer(reader)
        writer.close()
        waited = time.monotonic() - started
        assert 1.4 <= waited < 3.0  # 1.5 x 1 s
        message = await next_message(watcher)  # the will: a keep-alive expiry is abnormal
        assert message.payload == b"timed out"


async def test_garbage_closes_that_connection_never_the_broker(broker, caplog):
    caplog.set_level(logging.WARNING, logger="meter_emu.mqtt.broker")
    handmade = [
        b"\x00\x00",  # packet type 0
        b"\x30\x03\x00\x01a",  # PUBLISH before CONNECT
        b"\x10\xff\xff\xff\xff\x7f",  # remaining length in five bytes
        b"\x10\xff\xff\xff\x7f",  # 256 MB CONNECT
        connect_packet() + b"\x36\x05\x00\x01a\x00\x01",  # PUBLISH with QoS 3
        connect_packet() + b"\x38\x04\x00\x01ab",  # QoS 0 with DUP
        connect_packet() + b"\x80\x06\x00\x01\x00\x01a\x00",  # SUBSCRIBE with flags 0
        connect_packet() + b"\x82\x06\x00\x01\x00\x01a\x03",  # SUBSCRIBE QoS 3
        connect_packet() + b"\x30\x02\x00\x05",  # PUBLISH that ends inside its topic
        connect_packet() + b"\x30\x03\x00\x01+",  # PUBLISH to a wildcard
        connect_packet() + b"\x30\x05\x00\x03a\xff\xfe",  # topic not UTF-8
        connect_packet() + connect_packet(),  # a second CONNECT
        connect_packet() + b"\x90\x03\x00\x01\x00",  # SUBACK from a client
    ]
    rng = random.Random(1234)
    noise = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(150)]
    noise += [connect_packet() + n for n in noise[:50]]
    for data in handmade + noise:
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(broker))
        writer.write(data)
        await writer.drain()
        writer.close()
    for data in handmade:  # each of these is refused outright
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(broker))
        writer.write(data)
        assert await closed_by_peer(reader)
    await until(lambda: len(broker.connections) == 0)
    assert "malformed packet" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with aiomqtt.Client("127.0.0.1", port_of(broker)) as client:  # still serving
        await client.subscribe("alive")
        await client.publish("alive", b"yes", qos=1)
        assert (await next_message(client)).payload == b"yes"


async def test_slow_subscriber_loses_its_oldest_qos0_messages_not_the_broker(caplog):
    caplog.set_level(logging.WARNING, logger="meter_emu.mqtt.broker")
    server = Broker(queue_limit=50)
    await server.start()
    try:
        reader, writer, _ = await raw_client(server, connect_packet(b"slow"))
        writer.write(subscribe_packet(1, b"flood", 0))
        assert await reader.readexactly(5) == b"\x90\x03\x00\x01\x00"
        await until(lambda: subscribed(server, "flood"))
        connection = next(iter(server.connections))
        filler = b"." * 20_000
        for n in range(2000):  # 40 MB; the subscriber reads nothing meanwhile
            server.publish("flood", b"#%d;" % n + filler, 0, False)
            assert len(connection.queue) <= 50
        assert connection.dropped > 0
        assert "falls behind" in caplog.text
        received = b""
        while b"#1999;" not in received:  # the newest message is still delivered
            received += await asyncio.wait_for(reader.read(1 << 20), 5)
        assert received.count(b"#") < 2000
        writer.write(DISCONNECT)
    finally:
        await server.close()
