"""The fleet's numbers (fleet/stats.py) and their Prometheus endpoint (fleet/metrics.py): a real
``meter-emu run`` is sent known traffic on CN/IP, the optical port and MQTT, and the scrape,
parsed with prometheus-client's own parser, must count exactly that traffic -- as must the
statistics line the emulator prints when it stops."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

import e2e
from e2e import DEFAULT_NEURON_ID, OMA_KEY, CnipHeadEnd, partial_read
from meter_emu.fleet import metrics, stats
from meter_emu.ports.transport import PortUrlError

start_emulator = e2e.start_emulator  # the fixture, used by name

BT01 = 1
MISSING_TABLE = 100  # no BT100 in the catalog: IAR (0x05) on every port


scrape = e2e.scrape_metrics


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_name(samples: dict, name: str) -> dict:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def nid(index: int):
    from meter_emu.lon.frame import NeuronId
    return NeuronId((int.from_bytes(DEFAULT_NEURON_ID, "big") + index).to_bytes(6, "big"))


def test_scrape_counts_exactly_the_traffic_sent(start_emulator):
    """Known traffic on every port; the scrape and the stop line count it exactly."""
    from meter_emu.plc.secure import ClientSession

    emu = start_emulator("--count", "20", "--metrics", "tcp://127.0.0.1:0",
                         "--metrics-per-meter", "5", cnip="udp://127.0.0.1:0",
                         mqtt="embedded:0", mep="off")
    url = emu.ready["ports"]["metrics"]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
    before = scrape(url)
    assert value(before, "meter_emu_meters") == 20
    assert by_name(before, "meter_emu_requests_total") == {}

    # PLC over CN/IP: meters 1..8 (index 0..7) get 1 + index good reads, every other one
    # encrypted (its answer too: the code must be counted before sealing); meters 2 and 7 one
    # read of a missing table (IAR); meters 3 and 9 one request under a wrong key (0x0B).
    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    expected_per_meter = dict.fromkeys((f"meter-{i}" for i in range(1, 21)), 0)
    try:
        for index in range(8):
            session = ClientSession(OMA_KEY, encrypt=index % 2 == 1)
            for _ in range(1 + index):
                answer = head_end.secured(session, partial_read(BT01, 0, 8), nid(index))
                assert answer[:3] == b"\x00\x00\x08" and len(answer) == 11, answer.hex()
            if index in (1, 6):
                answer = head_end.secured(session, partial_read(MISSING_TABLE, 0, 4),
                                          nid(index))
                assert answer == b"\x05"
            expected_per_meter[f"meter-{index + 1}"] += 1 + index + (index in (1, 6))
        for index in (2, 8):
            wrong = ClientSession(b"not-the-key!")
            done = head_end.send(wrong.request(partial_read(BT01, 0, 8)), nid(index))
            assert [r.apdu for r in done.responses] == [b"\x0b"]
            expected_per_meter[f"meter-{index + 1}"] += 1
    finally:
        head_end.close()
    plc_ok, plc_iar, plc_sme = sum(range(1, 9)), 2, 2

    # optical: ident, negotiate, logon, security, read BT01, read BT100 (IAR), terminate
    with e2e.c1218_session(emu.client_url) as conn:
        assert conn.get_table_data(BT01)
        with pytest.raises(Exception):
            conn.get_table_data(MISSING_TABLE)
    optical_ok, optical_iar = 6, 1

    # MQTT: two invalid payloads first (never counted), then 1 + 1 + 3 (batch) + 20 (all)
    mqtt = emu.ready["ports"]["mqtt"]
    e2e.mosquitto_pub(mqtt, "meter-emu/meter-6/set", '{"voltage": "high"}')
    e2e.mosquitto_pub(mqtt, "meter-emu/meter-7/set", "not json")
    e2e.mosquitto_pub(mqtt, "meter-emu/meter-1/set", '{"voltage": 229.5}')
    e2e.mosquitto_pub(mqtt, "meter-emu/meter-2/set/current", "12.5")
    e2e.mosquitto_pub(mqtt, "meter-emu/batch", '{"meter-3": {"current": 3}, '
                                               '"meter-4": {"current": 4}, "meter-5": {"pf": 0.9}}')
    e2e.mosquitto_pub(mqtt, "meter-emu/all/set", '{"voltage": 231}')
    injections = 1 + 1 + 3 + 20
    samples = e2e.wait_for(lambda: (lambda s: value(s, "meter_emu_injections_total")
                                    == injections and s)(scrape(url)),
                           10, f"{injections} injections counted")

    requests = by_name(samples, "meter_emu_requests_total")
    assert requests == {
        frozenset({("port", "plc"), ("code", "ok")}): plc_ok,
        frozenset({("port", "plc"), ("code", "iar")}): plc_iar,
        frozenset({("port", "plc"), ("code", "sme")}): plc_sme,
        frozenset({("port", "optical"), ("code", "ok")}): optical_ok,
        frozenset({("port", "optical"), ("code", "iar")}): optical_iar,
    }
    for port, count in (("plc", plc_ok + plc_iar + plc_sme), ("optical", optical_ok + optical_iar)):
        assert value(samples, "meter_emu_request_duration_seconds_count", port=port) == count
        assert value(samples, "meter_emu_request_duration_seconds_bucket", port=port,
                     le="+Inf") == count
        buckets = [v for (n, labels), v in samples.items()
                   if n == "meter_emu_request_duration_seconds_bucket"
                   and ("port", port) in labels]
        assert len(buckets) == len(stats.LATENCY_BUCKETS) + 1
        assert 0 < value(samples, "meter_emu_request_duration_seconds_sum", port=port) < count
    per_meter = by_name(samples, "meter_emu_meter_requests_total")
    assert {dict(labels)["meter"] for labels in per_meter} == {f"meter-{i}" for i in range(1, 6)}
    for i in range(1, 6):
        meter = f"meter-{i}"
        assert value(samples, "meter_emu_meter_requests_total", meter=meter,
                     port="plc") == expected_per_meter[meter]
        # meter-1 serves the optical port; the others have a zero series for it
        assert value(samples, "meter_emu_meter_requests_total", meter=meter,
                     port="optical") == (optical_ok + optical_iar if i == 1 else 0)
    assert value(samples, "process_resident_memory_bytes") > 0
    events = value(samples, "meter_emu_events_total")
    assert events >= 1  # the optical session's end is logged (event 12)

    emu.proc.send_signal(signal.SIGINT)
    assert emu.proc.wait(10) == 0
    total = plc_ok + plc_iar + plc_sme + optical_ok + optical_iar
    line = [line for line in emu.stdout().splitlines() if "meters; requests" in line][-1]
    assert line == (f"meter-emu: 20 meters; requests {total} (+{total}); errors iar "
                    f"{plc_iar + optical_iar}, sme {plc_sme}; events {events:.0f} "
                    f"(+{events:.0f}); injections {injections} (+{injections})")


def mep_request(sock: socket.socket, key: bytes, apdu: bytes, sequence: int) -> bytes:
    """One MEP message (length ‖ APDU ‖ sequence ‖ OMA digest) and its answer's first byte."""
    from meter_emu.security import OmaKey

    body = apdu + sequence.to_bytes(4, "big")
    message = body + OmaKey(key).new(body).digest()
    sock.sendall(len(message).to_bytes(2, "big") + message)
    while True:  # skip alerts (00 00)
        length = int.from_bytes(_read(sock, 2), "big")
        if length:
            return _read(sock, length)[:1]


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "the MEP port closed"
        data += chunk
    return data


def test_without_per_meter_only_aggregates_and_mep_counts(start_emulator):
    """No --metrics-per-meter: no per-meter series. MEP answers count by code: a good read,
    a replayed sequence number (0x0C) and a wrong key (0x0B)."""
    from meter_emu.profile import load_profile

    emu = start_emulator("--count", "3", "--metrics", "tcp://127.0.0.1:0")
    with e2e.c1218_session(emu.client_url) as conn:
        conn.get_table_data(BT01)
    mak = load_profile().key("mak")[:16]
    first = load_profile().mep.sequence_number
    read = partial_read(BT01, 0, 4)
    host, port = metrics.parse_url(emu.ready["ports"]["mep"])
    with socket.create_connection((host, port), timeout=10) as sock:
        assert mep_request(sock, mak, read, first) == b"\x00"
        assert mep_request(sock, mak, read, first) == b"\x0c"
        assert mep_request(sock, bytes(16), read, first + 1) == b"\x0b"
    samples = scrape(emu.ready["ports"]["metrics"])
    assert by_name(samples, "meter_emu_requests_total") == {
        frozenset({("port", "optical"), ("code", "ok")}): 6,
        frozenset({("port", "mep"), ("code", "ok")}): 1,
        frozenset({("port", "mep"), ("code", "sequence")}): 1,
        frozenset({("port", "mep"), ("code", "sme")}): 1,
    }
    assert value(samples, "meter_emu_request_duration_seconds_count", port="mep") == 3
    assert by_name(samples, "meter_emu_meter_requests_total") == {}
    assert "metrics  tcp://127.0.0.1:" in emu.stdout() and "scrape   curl http://" in emu.stdout()


def test_bad_metrics_flags_are_one_line_usage_errors(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, message in (
            (["--metrics", "http://x"], "--metrics 'http://x': use tcp://HOST:PORT"),
            (["--metrics", f"tcp://127.0.0.1:{port}"], "cannot listen on 127.0.0.1"),
            (["--metrics-per-meter", "3"], "--metrics-per-meter needs the endpoint"),
            (["--metrics", "tcp://127.0.0.1:0", "--metrics-per-meter", "-1"], "use 0 (none)"),
        ):
            done = e2e.run_meter_emu("run", "--optical", "off", "--mep", "off", "--mqtt", "off",
                                     "--cnip", "off", *args)
            assert done.returncode == 2, done.stderr
            assert message in done.stderr and "Traceback" not in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _fleet(count: int):
    return [SimpleNamespace(id=f"m{i}") for i in range(count)]


def test_url_errors_name_the_accepted_forms():
    for url in ("http://127.0.0.1:9", "tcp://127.0.0.1", "tcp://:9", "tcp://h:70000", "udp://h:1"):
        with pytest.raises(PortUrlError, match=r"use tcp://HOST:PORT \(0 = any free port\) or off"):
            metrics.parse_url(url)
    assert metrics.parse_url("tcp://[::1]:9100") == ("::1", 9100)
    assert asyncio.run(metrics.start("off", _fleet(2))) is None


def test_per_meter_series_are_capped():
    async def main():
        stats.reset()
        endpoint = await metrics.start("tcp://127.0.0.1:0", _fleet(1200), per_meter=5000)
        try:
            return set(stats.STATS.tracked)
        finally:
            endpoint.close()

    assert asyncio.run(main()) == {f"m{i}" for i in range(metrics.MAX_PER_METER)}
    stats.reset()


def test_histogram_buckets_are_cumulative_and_match_the_statistics_line():
    async def main():
        stats.reset()
        for seconds, code in ((0.00005, 0), (0.0003, 0), (0.0003, 5), (0.02, 0x0B), (9.0, 0)):
            stats.STATS.request("mep", "m0", code, seconds)
        stats.STATS.injected(3)
        endpoint = await metrics.start("tcp://127.0.0.1:0", _fleet(1))
        try:
            return await asyncio.to_thread(scrape, endpoint.url)
        finally:
            endpoint.close()

    samples = asyncio.run(main())
    bucket = dict((dict(labels)["le"], v) for labels, v in
                  by_name(samples, "meter_emu_request_duration_seconds_bucket").items())
    assert bucket["0.0001"] == 1 and bucket["0.0005"] == 3 and bucket["0.025"] == 4
    assert bucket["2.5"] == 4 and bucket["+Inf"] == 5
    assert value(samples, "meter_emu_request_duration_seconds_sum", port="mep") == \
        pytest.approx(9.02065)
    assert value(samples, "meter_emu_requests_total", port="mep", code="ok") == 3
    assert value(samples, "meter_emu_injections_total") == 3
    assert stats.STATS.summary_line() == ("0 meters; requests 5 (+5); errors iar 1, sme 1; "
                                          "events 0 (+0); injections 3 (+3)")
    stats.reset()


def test_anything_but_get_metrics_is_refused_and_the_endpoint_survives():
    def raw(url: str, data: bytes) -> bytes:
        host, port = metrics.parse_url(url)
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: conn.recv(4096), b""))

    def requests(url: str) -> list:
        http = url.replace("tcp://", "http://")
        statuses = []
        for path, method in (("/", "GET"), ("/metricsx", "GET"), ("/metrics", "POST")):
            try:
                urllib.request.urlopen(urllib.request.Request(http + path, method=method,
                                                              data=b"x" if method == "POST"
                                                              else None), timeout=5)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        answers = [raw(url, data) for data in (b"garbage\r\n\r\n", b"\xff" * 20000, b"",
                                               b"HEAD /metrics HTTP/1.0\r\n\r\n")]
        with urllib.request.urlopen(http + "/metrics?x=1", timeout=5) as r:
            return statuses, answers, r.status

    async def main():
        endpoint = await metrics.start("tcp://127.0.0.1:0", _fleet(1))
        try:
            return await asyncio.to_thread(requests, endpoint.url)
        finally:
            endpoint.close()

    statuses, answers, last = asyncio.run(main())
    assert statuses == [404, 404, 405]
    assert answers[0].startswith(b"HTTP/1.1 400 ") and answers[1].startswith(b"HTTP/1.1 400 ")
    assert answers[2] == b"" or answers[2].startswith(b"HTTP/1.1 400 ")
    head, _, body = answers[3].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""
    assert int(re.search(rb"Content-Length: (\d+)", head)[1]) > 100
    assert last == 200
