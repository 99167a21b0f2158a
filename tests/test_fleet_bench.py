"""``meter-emu bench`` against real fleet processes: every figure is there and sane, the budgets
are judged, bad arguments are usage errors, and the fleet never outlives the bench."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meter_emu.fleet import bench

BENCH = [sys.executable, "-m", "meter_emu", "bench"]


@pytest.fixture(scope="module")
def report() -> dict:
    done = subprocess.run(BENCH + ["--count", "100", "--duration", "1", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_figure_is_reported(report):
    assert set(report) >= {"machine", "meters", "startup_s", "memory", "reads", "mqtt",
                           "budgets"}
    assert set(report["machine"]) == {"platform", "cpu", "cpus", "python"}
    assert report["meters"] == 100
    assert 0 < report["startup_s"] < 60
    assert set(report["memory"]) >= {"rss_mb", "rss_1_meter_mb", "kb_per_meter"}
    assert set(report["reads"]) >= {"answers", "per_s", "per_core", "p50_ms", "p99_ms",
                                    "errors", "timeouts", "concurrency"}
    assert set(report["mqtt"]) >= {"updates", "updates_per_s", "messages", "seconds"}


def test_reads_all_verified(report):
    reads = report["reads"]
    assert reads["answers"] > 0 and reads["per_s"] > 0 and reads["per_core"] > 0
    assert reads["errors"] == {} and reads["timeouts"] == 0
    assert 0 < reads["p50_ms"] <= reads["p99_ms"]
    assert reads["concurrency"] == 64


def test_memory_and_mqtt_measured(report):
    memory = report["memory"]
    assert memory["rss_mb"] > memory["rss_1_meter_mb"] > 0
    assert memory["kb_per_meter"] > 0
    mqtt = report["mqtt"]
    assert mqtt["meter_updates"] > 0 and mqtt["updates_per_s"] > 0
    # each meter entry sets voltage, current and power factor: three quantity updates
    assert mqtt["quantities_per_meter"] == 3
    assert mqtt["updates"] == 3 * mqtt["meter_updates"]
    # every update counted was published by the bench
    assert mqtt["updates"] <= mqtt["published"]


def test_budgets_judged(report):
    judged = {b["name"]: b for b in report["budgets"]}
    assert set(judged) == {"memory", "reads", "mqtt"}
    assert judged["memory"]["met"] == (report["memory"]["kb_per_meter"] <= 100)
    assert judged["reads"]["met"] == (report["reads"]["per_core"] >= 5000)
    assert judged["mqtt"]["met"] == (report["mqtt"]["updates_per_s"] >= 50000)


def test_text_report_names_budgets():
    fake = {"machine": bench.machine(), "meters": 10, "profile": "default", "startup_s": 0.5,
            "memory": {"rss_mb": 60.0, "rss_1_meter_mb": 55.0, "kb_per_meter": 512.0,
                       "settled": True},
            "reads": {"answers": 10, "seconds": 1.0, "per_s": 10.0, "concurrency": 2,
                      "fleet_cpu_s": 0.0, "per_core": math.nan, "p50_ms": 1.0,
                      "p99_ms": 2.0, "errors": {"sme": 1}, "timeouts": 0, "resyncs": 0},
            "mqtt": {"updates": 0, "seconds": 1.0, "updates_per_s": 0.0, "messages": 1,
                     "published": 10}}
    fake["budgets"] = bench.budgets(fake)
    assert [b["met"] for b in fake["budgets"]] == [False, False, False]
    assert bench._plain(fake)["reads"]["per_core"] is None  # strict JSON: no NaN


@pytest.mark.parametrize("argv, message", [
    (["--count", "0"], "--count 0"),
    (["--duration", "0"], "--duration 0"),
    (["--concurrency", "5000"], "--concurrency 5000"),
    (["--set", "nosuch.key=1"], "unknown key 'nosuch'"),
    (["--profile", "no-such-profile"], "no-such-profile"),
    (["--count", "many"], "invalid int value"),
])
def test_bad_argument_is_a_usage_error(argv, message):
    done = subprocess.run(BENCH + argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                             text=True).stdout
    return [int(p) for p in listing.split()]


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_fleet(sig):
    proc = subprocess.Popen(BENCH + ["--count", "50", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fleet = None
        deadline = time.monotonic() + 60
        while fleet is None and time.monotonic() < deadline:  # the 50-meter fleet, not the 1
            for child in _children(proc.pid):
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if b"--count" in cmdline and cmdline[cmdline.index(b"--count") + 1] == b"50":
                    fleet = child
            time.sleep(0.1)
        assert fleet is not None, "the bench never started its fleet"
        time.sleep(1.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted; the fleet is stopped" in err and "Traceback" not in err
    assert not _alive(fleet)
