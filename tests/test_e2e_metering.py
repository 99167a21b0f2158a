"""End to end: quantities published with ``mosquitto_pub`` to a running ``meter-emu run`` reach
BT28 and BT23 read over the optical port; the embedded broker works with nothing else; bad
payloads are answered on the error topic; an outage trigger leaves its trace in BT74 and BT23.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time

from conftest import free_port

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

SET = "meter-emu/meter-1/set"
EVENT_POWER_DOWN, EVENT_POWER_UP = 1, 2


def present_values(url: str) -> list[int]:
    raw = e2e.read_table_lib(url, 28)  # BT21.8 = 0: the present values start at offset 0
    return list(struct.unpack(f"<{len(raw) // 4}i", raw))


def summations(url: str) -> list[int]:
    raw = e2e.read_table_lib(url, 23)[:15 * 4]  # no demand reset counter: totals at offset 0
    return list(struct.unpack("<15i", raw))


def test_published_quantities_reach_bt28_and_one_hour_of_load_reaches_bt23(start_emulator,
                                                                           mosquitto):
    emu = start_emulator("--clock-rate", "3600", mqtt=mosquitto.url)
    assert emu.ready["ports"]["mqtt"] == mosquitto.url
    e2e.mosquitto_pub(mosquitto.url, SET, '{"voltage": 231.5, "current": 12.0, "pf": 0.95}')
    values = e2e.wait_for(lambda: (v := present_values(emu.client_url))[7] == 231_500 and v,
                      10, "BT28 showing 231.5 V")
    assert values[4] == 12_000  # mA
    assert values[10] == 950  # PF in 1/1000
    assert values[11] == 50_000  # mHz
    assert values[0] == 2639  # W: 231.5 V x 12 A x 0.95

    e2e.mosquitto_pub(mosquitto.url, SET, '{"current": 0}')
    e2e.wait_for(lambda: present_values(emu.client_url)[4] == 0, 10, "the load switched off")
    before = summations(emu.client_url)[0]
    # exactly one virtual hour of 230 V, 10 A, PF 1 from the moment it is applied
    e2e.mosquitto_pub(mosquitto.url, SET, json.dumps({
        "voltage": 230, "pf": 1, "current": {"type": "csv", "points": [[0, 10], [3600, 0]]}}))
    e2e.wait_for(lambda: present_values(emu.client_url)[4] == 10_000, 10, "the load switched on")
    e2e.wait_for(lambda: present_values(emu.client_url)[4] == 0, 10, "the hour ending")
    after = summations(emu.client_url)[0]
    assert after - before in (2300, 2301)  # 2300 Wh, plus a carried fraction at most


def test_the_embedded_broker_needs_nothing_else(start_emulator):
    emu = start_emulator(mqtt="embedded:0")
    url = emu.ready["ports"]["mqtt"]
    assert url.startswith("mqtt://127.0.0.1:")
    e2e.mosquitto_pub(url, SET, '{"voltage": 120.25}')
    e2e.wait_for(lambda: present_values(emu.client_url)[7] == 120_250, 10, "BT28 showing 120.25 V")


def test_a_malformed_payload_is_answered_on_the_error_topic_and_changes_nothing(
        start_emulator, mosquitto):
    emu = start_emulator(mqtt=mosquitto.url)
    e2e.mosquitto_pub(mosquitto.url, SET, '{"voltage": 100}')
    e2e.wait_for(lambda: present_values(emu.client_url)[7] == 100_000, 10, "BT28 showing 100 V")
    host, _, port = mosquitto.url.removeprefix("mqtt://").rpartition(":")
    listener = subprocess.Popen([e2e.mosquitto_program("mosquitto_sub"), "-h", host, "-p", port, "-t",
                                 "meter-emu/meter-1/error", "-C", "2", "-W", "10"],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # subscribed before the bad messages go out
    e2e.mosquitto_pub(mosquitto.url, SET, '{"voltage": 200, "volts": 1}')
    e2e.mosquitto_pub(mosquitto.url, SET, "not json")
    out, _ = listener.communicate(timeout=15)
    errors = [json.loads(line) for line in out.splitlines()]
    assert len(errors) == 2
    assert "unknown quantity 'volts'" in errors[0]["error"]
    assert errors[1]["topic"] == SET
    assert present_values(emu.client_url)[7] == 100_000  # the valid half was not applied
    assert emu.proc.poll() is None


def test_an_outage_trigger_logs_power_down_and_up_and_counts_in_bt23(start_emulator, mosquitto):
    emu = start_emulator("--clock-rate", "600", mqtt=mosquitto.url)
    before = summations(emu.client_url)
    e2e.mosquitto_pub(mosquitto.url, "meter-emu/meter-1/trigger/outage", "on")
    e2e.wait_for(lambda: summations(emu.client_url)[5] == before[5] + 1, 10, "the outage count")
    time.sleep(1.0)  # ten virtual minutes without power
    e2e.mosquitto_pub(mosquitto.url, "meter-emu/meter-1/trigger/outage", "off")
    log = e2e.wait_for(lambda: (h := e2e.parse_bt74(e2e.read_table_lib(emu.client_url, 74)))
                   .events(EVENT_POWER_UP) and h, 10, "the power-up event")
    [down], [up] = log.events(EVENT_POWER_DOWN), log.events(EVENT_POWER_UP)
    outage = (up.time - down.time).total_seconds()
    after = summations(emu.client_url)
    assert after[4] - before[4] == outage or abs(after[4] - before[4] - outage) <= 1
    assert outage >= 500  # about 600 virtual seconds


def test_an_accelerated_day_of_load_profile_reads_back_block_by_block(start_emulator):
    """230 V at PF 1 with 4, 8, 2 and 6 A for six hours each (a replay aligned to midnight):
    every 15-minute interval of the day's block holds the forward Wh register at its end, so
    consecutive values differ by 230 V x I x 0.25 h. 14400x: the day takes six seconds."""
    initial = ('quantities.initial={voltage = 230, pf = 1, current = {type = "csv", '
               'start = "2026-01-01T00:00:00Z", '
               'points = [[0, 4], [21600, 8], [43200, 2], [64800, 6]]}}')
    emu = start_emulator("--clock-rate", "14400", "--start-time", "2026-01-01T00:00:00Z",
                         "--set", "clock.utc_offset_minutes=0", "--set", initial)
    bt63 = e2e.wait_for(lambda: (raw := e2e.read_table_lib(emu.client_url, 63))[1] >= 2 and raw,
                    20, "the second day's block")  # so the first block is complete
    valid_blocks, last_block = struct.unpack_from("<HH", bt63, 1)
    assert last_block == valid_blocks - 1  # blocks in ascending order from element 0
    et21 = e2e.read_table_lib(emu.client_url, 2048 + 21)
    block_size, header_size = struct.unpack_from("<IH", et21, 8)
    interval_size, channel_0 = et21[25], et21[26]
    assert (block_size, header_size, interval_size, channel_0) == (17 + 96 * 19, 17, 19, 3)
    block = e2e.read_table_lib(emu.client_url, 64, offset=0, octetcount=block_size)
    assert block[:5] == bytes([26, 1, 2, 0, 0])  # End Time: midnight after the day (UTC)
    assert block[5:17] == b"\xff" * 12  # every interval processed (Simple Status)
    fwd = [struct.unpack_from("<i", block, header_size + k * interval_size + channel_0)[0]
           for k in range(96)]
    steps = [b - a for a, b in zip(fwd, fwd[1:])]
    amps = [4] * 23 + [8] * 24 + [2] * 24 + [6] * 24  # intervals 1..95
    assert steps == [230 * a // 4 for a in amps]
    assert 0 < fwd[0] <= 230  # the meter started within the first interval


def test_the_embedded_broker_takes_a_free_port_when_1883_is_taken(start_emulator):
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 1883))
        holder.listen()
    except OSError:
        pass  # something listens there already: the same situation
    try:
        emu = start_emulator(mqtt="embedded")
        url = emu.ready["ports"]["mqtt"]
        assert url.startswith("mqtt://127.0.0.1:") and not url.endswith(":1883")
        e2e.mosquitto_pub(url, SET, '{"voltage": 222}')
        e2e.wait_for(lambda: present_values(emu.client_url)[7] == 222_000, 10, "BT28 at 222 V")
    finally:
        holder.close()


def test_a_bad_mqtt_url_is_refused_before_anything_starts():
    result = e2e.run_meter_emu("run", "--optical", "off", "--mep", "off", "--mqtt", "mqtt:/x")
    assert result.returncode == 2
    assert "--mqtt 'mqtt:/x': use embedded, embedded:PORT, mqtt://HOST:PORT or off" in \
        result.stderr
    result = e2e.run_meter_emu("run", "--optical", "off", "--mep", "off", "--mqtt",
                               f"mqtt://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot connect to the MQTT broker" in result.stderr
