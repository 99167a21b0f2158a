"""End to end: a running ``meter-emu run`` with its embedded MQTT broker; procedures and table
writes through termineter's ``c1218`` library on the optical port, load and triggers with
``mosquitto_pub``; the results read back from BT74 (event 66 arguments), BT23, BT03 and ET30.
A fast virtual clock (``--clock-rate``) makes minutes pass in seconds."""

from __future__ import annotations

import datetime as dt
import json
import struct
import time

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

EP02, EP21, EP23, EP30, EP36 = 2, 21, 23, 30, 36  # manufacturer procedures (2048 + n)
ET05, ET30, ET61 = 2048 + 5, 2048 + 30, 2048 + 61
TOPIC = "meter-emu/meter-1"
LOAD_2300W = json.dumps({"voltage": 230, "current": 10, "pf": 1})
E_SWITCH, E_CONDITION, E_PREPAYMENT, E_SCHEDULE, E_EXHAUSTED = 66, 51, 52, 50, 84
TIMING_CONSTRAINT = 4


def argument(previous_closed: bool, new: int, reason: int, failed: bool = False) -> int:
    return new | failed << 4 | (0xC0 if previous_closed else 0) | reason << 8


def history(url: str) -> e2e.HistoryLog:
    with e2e.c1218_session(url) as conn:
        return e2e.parse_bt74(conn.get_table_data(74))


def fwd_wh(url: str) -> int:
    return struct.unpack("<i", e2e.read_table_lib(url, 23)[:4])[0]


def procedure(url: str, number: int, params: bytes, retry_s: float = 10.0) -> bytes:
    """Run EP``number``; a contactor lockout (result 4) is waited out on the fast clock."""
    deadline = time.monotonic() + retry_s
    while True:
        with e2e.c1218_session(url) as conn:
            code, data = conn.run_procedure(number, True, params)
        if code != TIMING_CONSTRAINT or time.monotonic() > deadline:
            assert code == 0, f"EP{number:02d} answered {code}"
            return data
        time.sleep(0.2)


def write(url: str, table: int, data: bytes, offset: int = 0) -> None:
    with e2e.c1218_session(url) as conn:
        conn.set_table_data(table, data, offset)


def switch_arguments(url: str) -> list[int]:
    return [entry.argument for entry in history(url).events(E_SWITCH)]


def test_every_reason_reaches_bt74_with_its_exact_argument(start_emulator):
    emu = start_emulator("--clock-rate", "60", mqtt="embedded:0")
    url, broker = emu.client_url, emu.ready["ports"]["mqtt"]
    seen = lambda count: e2e.wait_for(  # noqa: E731
        lambda: len(args := switch_arguments(url)) >= count and args, 10, f"{count} x event 66")
    procedure(url, EP02, bytes([0, 0, 0, 0]))  # open
    procedure(url, EP23, bytes([2]))  # arm for the customer
    time.sleep(0.3)  # 18 virtual seconds: past the 10 s lockout
    e2e.mosquitto_pub(broker, f"{TOPIC}/trigger/button", "")
    seen(3)
    procedure(url, EP23, bytes([0]))  # disconnect
    procedure(url, EP30, b"")  # re-synchronize
    e2e.mosquitto_pub(broker, f"{TOPIC}/trigger/disconnect_switch_error", "on")
    seen(6)
    e2e.mosquitto_pub(broker, f"{TOPIC}/trigger/disconnect_switch_error", "off")
    e2e.mosquitto_pub(broker, f"{TOPIC}/trigger/outage", "on")
    e2e.mosquitto_pub(broker, f"{TOPIC}/trigger/outage", "off")
    seen(8)
    procedure(url, EP36, bytes([1, 1, 1, 0, 0, 0]))  # 2001-01-01, long past: at once
    assert switch_arguments(url) == [
        argument(True, 2, 1),  # EP02 open
        argument(False, 2, 5),  # EP23 arm
        argument(False, 1, 6),  # the push button (manual)
        argument(True, 2, 5),  # EP23 disconnect
        argument(False, 2, 8),  # EP30
        argument(False, 2, 5, failed=True),  # the switch did not follow EP23
        argument(False, 2, 9),  # resync
        argument(False, 2, 10),  # power-up resync
        argument(False, 3, 7),  # EP36 schedule: locked open
    ]


def test_load_above_the_level_over_mqtt_disconnects_after_the_configured_time(start_emulator):
    emu = start_emulator("--clock-rate", "600", mqtt="embedded:0")
    url, broker = emu.client_url, emu.ready["ports"]["mqtt"]
    write(url, ET05, struct.pack("<II", 2000, 0), 0)  # primary level 2000 W
    write(url, ET05, bytes([1]), 25)  # thresholds enabled
    write(url, ET30, struct.pack("<H", 300), 4)  # exceed for 300 s
    e2e.mosquitto_pub(broker, f"{TOPIC}/set", LOAD_2300W)
    log = e2e.wait_for(lambda: (h := history(url)).events(E_CONDITION) and h, 15, "the trip")
    assert [e.argument for e in log.events(E_SWITCH)] == [argument(True, 2, 2)]
    assert fwd_wh(url) == 2300 * 300 // 3600  # 191.7 Wh: exactly 300 s at 2300 W
    assert e2e.read_table_lib(url, ET30)[8] & 1  # ET30 status: power level exceeded
    time.sleep(0.5)
    assert fwd_wh(url) == 191  # nothing metered since


def test_prepay_credit_runs_out_at_the_right_energy(start_emulator):
    emu = start_emulator("--clock-rate", "600", mqtt="embedded:0")
    url, broker = emu.client_url, emu.ready["ports"]["mqtt"]
    assert procedure(url, EP21, bytes([0]) + struct.pack("<i", 500))[:4] == struct.pack("<i", 500)
    e2e.mosquitto_pub(broker, f"{TOPIC}/set", LOAD_2300W)
    log = e2e.wait_for(lambda: (h := history(url)).events(E_EXHAUSTED) and h, 15, "exhaustion")
    assert fwd_wh(url) == 500
    assert [(e.event, e.argument) for e in log.entries if e.event in (66, 52, 84)] == [
        (E_EXHAUSTED, 0), (E_SWITCH, argument(True, 2, 3)), (E_PREPAYMENT, 0x0002)]
    assert e2e.read_table_lib(url, 3)[6] >> 4 & 1  # BT03 Prepay Credit Exhausted


def test_the_et61_calendar_switches_at_the_scheduled_virtual_time(start_emulator):
    emu = start_emulator("--clock-rate", "600", "--start-time", "2026-01-01T00:00:00Z",
                         mqtt="off")
    url = emu.client_url
    open_at_0130_local = (0 | 30 << 5 | 1 << 11).to_bytes(2, "little")  # 00:30 UTC (UTC+1)
    write(url, ET61, open_at_0130_local + (1 | 45 << 5 | 1 << 11).to_bytes(2, "little"))
    write(url, ET05, bytes([1]), 24)  # relay 1: block 0 every day
    log = e2e.wait_for(lambda: (h := history(url)).events(E_SCHEDULE) and h, 15, "event 50")
    first = log.events(E_SCHEDULE)[0]
    assert (first.time, first.argument) == (dt.datetime(2026, 1, 1, 0, 30), 0x0102)
    assert log.events(67)[0].time == first.time  # Control Relay Open
    assert e2e.read_table_lib(url, 3)[4] >> 3 & 1  # BT03 Control Relay Open
