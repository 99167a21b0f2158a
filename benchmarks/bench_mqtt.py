"""Benchmark: quantity updates per second applied from MQTT (DESIGN.md section 6: >= 50,000 per
process, batched). Not a test: prints figures and the machine it ran on.

    python benchmarks/bench_mqtt.py [--meters 1000] [--batch 250] [--messages 200]
                                    [--broker embedded|mosquitto|both] [--no-state]

This process holds what ``meter-emu run`` holds: N meters, the MQTT bridge and (for
``embedded``) the in-process broker. A separate publisher process (paho-mqtt) sends
``<prefix>/batch`` messages of ``--batch`` meters x 3 quantities (voltage, current, pf) as fast
as it can. The figure is quantity settings applied in the meters per second, from the first
message received to the last one applied (a batch entry the bridge merged into a newer one
because it fell behind counts as not applied). State messages after injections are on, as in
``meter-emu run``, unless ``--no-state``. The process CPU is split into the meters' own work
(``quantities.apply``, which first integrates the meter up to now) and the MQTT path (broker,
aiomqtt, JSON, routing, state documents), so a slow figure says which side to look at.
"""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from meter_emu.clock import VirtualClock
from meter_emu.device.meter import Meter
from meter_emu.metering import quantities
from meter_emu.mqtt import topics
from meter_emu.mqtt.bridge import MqttBridge
from meter_emu.mqtt.broker import Broker
from meter_emu.profile import load_profile

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the virtual clock's start
PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path) as f:
    messages = [(m["topic"], m["payload"].encode()) for m in json.load(f)]
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
client.max_inflight_messages_set(len(messages))
client.connect(host, port)
client.loop_start()
# QoS 1, all in flight at once: the last PUBACK says the broker has every message, so leaving
# cannot reset the connection with messages still unread at the broker
infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
for info in infos:
    info.wait_for_publish()
client.disconnect()
client.loop_stop()
"""


def make_meters(count: int, state: bool) -> list[Meter]:
    base = load_profile("default", [] if state else ["mqtt.state_interval_s=0.0"])
    meters = [Meter(base.with_overrides([f"meter.id=m{i}"])) for i in range(count)]
    for meter in meters:  # a running meter has set up its metering state long ago
        quantities.apply(meter, {"voltage": 230.0, "current": 1.0}, START - 60)
        meter.advance(START)
    return meters


def make_batches(meters: list[Meter], batch: int, messages: int) -> tuple[list[dict], int]:
    """``messages`` batch messages walking round the fleet; returns them and the updates."""
    out, updates, cursor = [], 0, 0
    for n in range(messages):
        entries = {}
        for _ in range(batch):
            meter = meters[cursor % len(meters)]
            cursor += 1
            entries[meter.id] = {"voltage": 220.0 + (n % 20), "current": 5.0 + (n % 7),
                                 "pf": 0.9 + (n % 10) / 100}
            updates += 3
        out.append({"topic": "meter-emu/batch", "payload": json.dumps(entries)})
    return out, updates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mosquitto():
    """A mosquitto on a free loopback port, or None when it is not installed."""
    binary = shutil.which("mosquitto")
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "mosquitto.conf")
        with open(config, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 100000\n")
        proc = subprocess.Popen([binary, "-c", config], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.02)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(5)


async def run(url: str | None, meters, batches, total_updates: int, embedded: bool) -> dict:
    broker = None
    if embedded:
        broker = Broker()
        await broker.start()
        url = broker.url
    clock = VirtualClock(start=START)
    persists = 0

    def persist():
        nonlocal persists
        persists += 1
        for meter in meters:
            meter.dirty = False

    meter_time = 0.0
    perform = topics.perform

    def timed_perform(action, meter, now):
        """The meter's own share (quantities.apply, which integrates up to now first)."""
        nonlocal meter_time
        started = time.perf_counter()
        try:
            return perform(action, meter, now)
        finally:
            meter_time += time.perf_counter() - started

    topics.perform = timed_perform
    bridge = MqttBridge(url, meters, clock, persist)
    await bridge.start()
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(batches, f)
    stats = bridge.stats
    try:
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, host, port, f.name)
        while stats["received"] == 0:
            await asyncio.sleep(0.0005)
        started = time.perf_counter()
        cpu_started = time.process_time()
        while stats["received"] < len(batches) or bridge.pending:
            await asyncio.sleep(0.0005)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        await publisher.wait()
    finally:
        os.unlink(f.name)
        topics.perform = perform
        await bridge.close()
        if broker is not None:
            await broker.close()
    return dict(elapsed=elapsed, cpu=cpu, meter_time=meter_time, updates=stats["updates"],
                coalesced=stats["coalesced"], persists=persists, expected=total_updates,
                published=stats["published"])


def report(name: str, result: dict) -> None:
    rate = result["updates"] / result["elapsed"]
    mqtt_time = result["cpu"] - result["meter_time"]
    print(f"  {name:<10} {rate:>10,.0f} quantity updates/s  ({result['updates']:,} of "
          f"{result['expected']:,} applied in {result['elapsed']:.2f} s)")
    print(f"  {'':<10} process CPU {result['cpu']:.2f} s = meters {result['meter_time']:.2f} s "
          f"(quantities.apply + integration) + MQTT path {mqtt_time:.2f} s "
          f"({result['updates'] / max(mqtt_time, 1e-9):,.0f} updates per MQTT-path CPU s)")
    print(f"  {'':<10} {result['coalesced']:,} batch entries merged, {result['persists']} "
          f"persists, {result['published']:,} messages published (info, state)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250, help="meters per batch message")
    parser.add_argument("--messages", type=int, default=200, help="batch messages to send")
    parser.add_argument("--broker", choices=("embedded", "mosquitto", "both"), default="both")
    parser.add_argument("--no-state", action="store_true",
                        help="no state messages (profile mqtt.state_interval_s = 0)")
    args = parser.parse_args()

    print(machine.describe())
    meters = make_meters(args.meters, not args.no_state)
    batches, updates = make_batches(meters, args.batch, args.messages)
    size = sum(len(b["payload"]) for b in batches) / len(batches)
    print(f"fleet:   {args.meters} meters; {args.messages} batch messages of {args.batch} meters "
          f"x 3 quantities ({size / 1024:.0f} KiB each); state messages "
          f"{'off' if args.no_state else 'on'}")
    if args.broker in ("embedded", "both"):
        report("embedded", asyncio.run(run(None, meters, batches, updates, True)))
    if args.broker in ("mosquitto", "both"):
        with mosquitto() as url:
            if url is None:
                print("  mosquitto  not installed (apt-get install mosquitto); skipped")
            else:
                report("mosquitto", asyncio.run(run(url, meters, batches, updates, False)))


if __name__ == "__main__":
    main()
