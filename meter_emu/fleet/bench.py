"""``meter-emu bench``: the figures the README publishes, measured against a real fleet process,
with the machine they ran on and each DESIGN.md section 6 budget marked met or missed.

Method (designed: no public benchmark fixes it):

* **Fleet**: ``meter-emu run --count N`` in a child process of this interpreter, CN/IP on a free
  UDP port, the embedded MQTT broker, the Prometheus endpoint, optical and MEP off, no state
  directory. ``mqtt.state_interval_s=0`` comes first among the overrides, so the phases measure
  what they name (a 10,000-meter fleet publishing each state every 10 s keeps a third of a core
  busy); a ``--set mqtt.state_interval_s=10`` puts the state documents back.
* **Start-up**: spawn to ready file (every meter built, every port up).
* **Memory**: VmRSS of the N-meter process minus VmRSS of a 1-meter process started the same
  way, divided by N, both read once the process is idle (two 0.5 s windows under 5 % of a
  core: each meter's first engine advance runs in the background after ready).
* **Reads**: this process is the head-end: an asyncio UDP client, ``--concurrency`` secured
  partial reads (ET03, offset 0, 84 bytes: the largest answer, D1) in flight to random meters
  (seeded; never two to one meter, whose sequence numbers go in order), addressed by Neuron
  ID. Each in-flight slot is a head-end node of its own (subnet 255 down, node 1-127; 14908.1
  transaction numbers are 4 bits, so one node could keep only 15 in flight): a response is
  matched by the node it is addressed to and its transaction number, then verified (digest,
  code, length). The per-core figure divides the answers by the fleet process's CPU seconds
  during the phase (the bench's own CPU is the head-end's, on the other core); p50/p99 are
  request-to-verified-answer times here.
* **MQTT**: ``<prefix>/batch`` messages of 1,000 meters, each entry a measurement feed
  (voltage, current and power factor near nominal: three quantity updates), published QoS 1 to
  the fleet's broker for ``--duration`` seconds, keeping at most 8,000 meter entries published
  and not yet counted (under the bridge's 10,000-action queue). The fleet's
  ``meter_emu_injections_total`` counts the meters an entry changed; quantity updates are
  three per meter, per second from the first message to the scrape where the count stopped
  growing. In a fleet smaller than that lead, newer entries for a meter replace older ones
  not yet applied; only applied updates count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..cnip import packet
from ..lon import frame as fr
from ..lon.frame import Lpdu, NeuronId, Npdu, Spdu, SubnetNode
from ..plc import PARTIAL_READ
from ..plc.secure import INTERFACE_CHANGE, INVALID_SEQUENCE, ClientSession, SecurityError
from .stats import code_name

ET03 = 2048 + 3  # utility serial number table: 84 readable bytes from offset 0
READ_COUNT = 84  # bytes per partial read: the largest a PLC answer carries (D1)
BATCH_METERS = 1000  # meters per MQTT batch message
#: what each meter entry of a batch sets: a measurement feed (benchmarks/bench_mqtt.py alike)
ENTRY_QUANTITIES = ("voltage", "current", "pf")
MQTT_LEAD = 8000  # meter entries published and not yet counted, at most
PUBLISHING = 8  # MQTT messages waiting for their PUBACK, at most
REQUEST_TIMEOUT = 2.0  # seconds before an unanswered read counts as a timeout
FIRST_OVERRIDES = ["mqtt.state_interval_s=0"]
MAX_CONCURRENCY = 127 * 8  # head-end slots: nodes 1-127 of subnets 255 down to 248

BUDGETS = {  # DESIGN.md section 6
    "memory": ("idle memory per meter", "<=", 100.0, "KB"),
    "reads": ("secured partial reads over CN/IP per core", ">=", 5000.0, "req/s"),
    "mqtt": ("MQTT quantity updates per process", ">=", 50000.0, "updates/s"),
}


class BenchError(Exception):
    """The bench cannot go on (the fleet did not start, a port is missing); says why."""


# ---- the machine -------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "python": f"{platform.python_implementation()} {sys.version.split()[0]}"}


def describe(extra: str = "") -> str:
    """Two lines: machine (platform, CPU, CPU count) and Python (plus ``extra``)."""
    m = machine()
    return (f"machine: {m['platform']} | {m['cpu']} | {m['cpus']} CPUs\n"
            f"python:  {m['python']}{extra}")


# ---- the fleet process -------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


class Fleet:
    """One ``meter-emu run`` child: started, waited for, stopped (always: ``with``)."""

    def __init__(self, count: int, profile: str, overrides: list[str], workdir: Path):
        self.count = count
        self.ready_path = workdir / f"ready-{count}.json"
        self.stderr_path = workdir / f"stderr-{count}.txt"
        sets = [item for value in FIRST_OVERRIDES + overrides for item in ("--set", value)]
        self.argv = [sys.executable, "-m", "meter_emu", "run", "--count", str(count),
                     "--profile", profile, *sets, "--cnip", "udp://127.0.0.1:0",
                     "--mqtt", "embedded:0", "--metrics", "tcp://127.0.0.1:0",
                     "--optical", "off", "--mep", "off", "--ready-file", str(self.ready_path),
                     "--stats-interval", "0", "--log-level", "warning"]
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self.startup_s = math.nan

    def __enter__(self) -> "Fleet":
        started = time.perf_counter()
        with open(self.stderr_path, "wb") as err:
            # its own session: a Ctrl-C reaches the bench, which stops the fleet itself
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        try:
            deadline = started + 60 + self.count * 0.002
            while not self.ready_path.exists():
                if self.proc.poll() is not None:
                    raise BenchError(f"the {self.count}-meter fleet stopped before it was "
                                     f"ready: {self._stderr_tail()}")
                if time.perf_counter() > deadline:
                    raise BenchError(f"the {self.count}-meter fleet was not ready after "
                                     f"{deadline - started:.0f} s")
                time.sleep(0.01)
            self.startup_s = time.perf_counter() - started
            self.ready = json.loads(self.ready_path.read_text())
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else "(no message)"
        return "(no message)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def wait_idle(self) -> tuple[float, bool]:
        """Wait until the fleet's CPU use settles; (seconds waited, settled)."""
        started = time.perf_counter()
        limit = 30 + self.count * 0.005
        quiet, before = 0, _cpu_seconds(self.pid)
        while time.perf_counter() - started < limit:
            time.sleep(0.5)
            now = _cpu_seconds(self.pid)
            quiet = quiet + 1 if now - before < 0.025 else 0
            before = now
            if quiet >= 2:
                return time.perf_counter() - started, True
        return time.perf_counter() - started, False


# ---- reads through CN/IP -----------------------------------------------------------------

@dataclass
class Target:
    meter: str
    nid: bytes
    session: ClientSession
    busy: bool = False


@dataclass
class Slot:
    """One head-end node with one read in flight."""
    subnet: int
    node: int
    tid: int = 0
    target: Target | None = None
    sent: float = 0.0
    last_tid: dict = field(default_factory=dict)  # meter -> last transaction number sent


@dataclass
class ReadResult:
    answers: int = 0
    errors: dict = field(default_factory=dict)
    timeouts: int = 0
    resyncs: int = 0
    late: int = 0
    latencies: list = field(default_factory=list)
    seconds: float = 0.0
    fleet_cpu: float = 0.0
    own_cpu: float = 0.0

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


READ_APDU = (bytes([PARTIAL_READ]) + ET03.to_bytes(2, "big") + (0).to_bytes(3, "big")
             + READ_COUNT.to_bytes(2, "big"))


class ReadClient(asyncio.DatagramProtocol):
    """The head-end: keeps every slot busy with a read to a random idle meter."""

    def __init__(self, targets: list[Target], concurrency: int, rng: random.Random):
        self.targets, self.rng = targets, rng
        self.slots = [Slot(255 - i // 127, i % 127 + 1) for i in range(concurrency)]
        self.by_address = {(s.subnet, s.node): s for s in self.slots}
        self.result = ReadResult()
        self.transport = None
        self.counting = False
        self.session_id = rng.getrandbits(32)
        self.sequence = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.counting = True
        for slot in self.slots:
            self.issue(slot)

    def issue(self, slot: Slot, target: Target | None = None) -> None:
        if target is None:
            target = self.rng.choice(self.targets)
            while target.busy:
                target = self.rng.choice(self.targets)
        target.busy = True
        slot.target = target
        slot.tid = slot.tid % 15 + 1
        if slot.last_tid.get(target.meter) == slot.tid:  # would be taken for a duplicate
            slot.tid = slot.tid % 15 + 1
        slot.last_tid[target.meter] = slot.tid
        lpdu = fr.encode(Lpdu(Npdu(slot.subnet, slot.node, NeuronId(target.nid),
                                   Spdu(fr.REQUEST, slot.tid, target.session.request(READ_APDU)))))
        self.sequence += 1
        slot.sent = time.perf_counter()
        self.transport.sendto(packet.encode(lpdu, self.sequence, self.session_id,
                                            int(time.time() * 1000)))

    def datagram_received(self, data: bytes, addr) -> None:
        now = time.perf_counter()
        try:
            lpdu = fr.decode(packet.decode(data)[1])
        except ValueError:  # CnipError and FrameError
            self.result.error("frame")
            return
        npdu = lpdu.npdu
        dst = npdu.dst
        slot = self.by_address.get((dst.subnet, dst.node)) if type(dst) is SubnetNode else None
        pdu = npdu.pdu
        if (slot is None or slot.target is None or type(pdu) is not Spdu
                or pdu.type != fr.RESPONSE or pdu.tid != slot.tid):
            self.result.late += 1
            return
        target = slot.target
        result = self.result
        again = None
        try:
            plain = target.session.response(pdu.apdu)
        except SecurityError as error:
            result.error(code_name(error.code) if error.code else "digest")
        else:
            code = plain[0]
            if len(plain) == 1 and code in (INVALID_SEQUENCE, INTERFACE_CHANGE):
                result.resyncs += 1
                again = target  # the session took the meter's number: the same read again
            elif code:
                result.error(code_name(code))
            elif plain[1:3] != READ_COUNT.to_bytes(2, "big") or len(plain) != 3 + READ_COUNT:
                result.error("length")
            elif self.counting:
                result.answers += 1
                result.latencies.append(now - slot.sent)
        target.busy = again is not None
        slot.target = None
        if self.counting:
            self.issue(slot, again)

    def expire(self) -> None:
        """Reads unanswered for REQUEST_TIMEOUT count as timeouts; their slots go on."""
        now = time.perf_counter()
        for slot in self.slots:
            if slot.target is not None and now - slot.sent > REQUEST_TIMEOUT:
                if self.counting:
                    self.result.timeouts += 1
                slot.target.busy = False
                slot.target = None
                if self.counting:
                    self.issue(slot)

    def error_received(self, exc) -> None:
        self.result.error("socket")


def read_targets(ready: dict, profile, count: int) -> list[Target]:
    """A ClientSession per meter, with its own OMA key (fleet/keys.py) and the profile's
    starting sequence number, prepared before the phase (key set-up is not a read)."""
    from ..profile import fleet_profiles
    from . import keys as fleet_keys

    profiles = fleet_keys.assign(fleet_profiles(profile, count))
    key_of = {p.identity.neuron_id.upper(): p.oma_key() for p in profiles}
    mode = profile.security.mode
    start = profile.plc.sequence_number
    targets = []
    for meter in ready["meters"]:
        nid = ready["neuron_ids"][meter].upper()
        if nid not in key_of:
            raise BenchError(f"meter {meter} (Neuron ID {nid}) is not in the bench's fleet")
        targets.append(Target(meter, bytes.fromhex(nid),
                              ClientSession(key_of[nid], mode=mode, sequence=start)))
    return targets


async def measure_reads(url: str, targets: list[Target], concurrency: int, seconds: float,
                        fleet_pid: int, seed: int) -> ReadResult:
    from ..cnip.client import parse_udp_url

    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: ReadClient(targets, concurrency, random.Random(seed)),
        remote_addr=parse_udp_url(url))
    try:
        fleet_cpu, own_cpu, started = _cpu_seconds(fleet_pid), time.process_time(), \
            time.perf_counter()
        client.start()
        end = started + seconds
        while time.perf_counter() < end:
            await asyncio.sleep(min(0.1, max(0.0, end - time.perf_counter())))
            client.expire()
        client.counting = False
        result = client.result
        result.seconds = time.perf_counter() - started
        result.fleet_cpu = _cpu_seconds(fleet_pid) - fleet_cpu
        result.own_cpu = time.process_time() - own_cpu
        await asyncio.sleep(0.2)  # the answers still on their way land here, not in the log
        return result
    finally:
        transport.close()


# ---- MQTT --------------------------------------------------------------------------------

def scrape_injections(metrics_url: str) -> float:
    """``meter_emu_injections_total`` from the fleet's Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    url = metrics_url.replace("tcp://", "http://", 1) + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meter_emu_injections_total":
                return sample.value
    raise BenchError(f"{url} has no meter_emu_injections_total")


@dataclass
class MqttResult:
    updates: int = 0
    published: int = 0
    messages: int = 0
    seconds: float = 0.0


def entry(round_: int) -> dict:
    """One meter's measurements in a batch: near nominal (no sag, surge or over-current
    events: the budget is about a live feed), each round a new value of each quantity."""
    step = round_ % 40
    return {"voltage": 228.0 + step * 0.1, "current": 5.0 + step * 0.25, "pf": 0.90 + step / 1000}


async def measure_mqtt(mqtt_url: str, metrics_url: str, prefix: str, meters: list[str],
                       seconds: float) -> MqttResult:
    import aiomqtt

    host, _, port = mqtt_url.removeprefix("mqtt://").rpartition(":")
    chunks = [meters[i:i + BATCH_METERS] for i in range(0, len(meters), BATCH_METERS)]
    topic = f"{prefix}/batch"
    base = await asyncio.to_thread(scrape_injections, metrics_url)
    counted = base
    done = asyncio.Event()
    seen: list[tuple[float, float]] = []  # (time, counter) of each scrape

    async def watch() -> None:
        nonlocal counted
        while True:
            counted = await asyncio.to_thread(scrape_injections, metrics_url)
            seen.append((time.perf_counter(), counted))
            if done.is_set() and len(seen) > 20 and seen[-20][1] == counted:
                return  # 20 scrapes (about a second) without growth
            await asyncio.sleep(0.05)

    result = MqttResult()
    async with aiomqtt.Client(host, int(port), identifier=f"meter-emu-bench-{os.getpid()}",
                              timeout=30) as client:
        watcher = asyncio.create_task(watch())
        publishing: set[asyncio.Task] = set()
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < seconds:
                if (len(publishing) >= PUBLISHING
                        or result.published - (counted - base) + len(chunks[0]) > MQTT_LEAD):
                    await asyncio.sleep(0.002)
                    continue
                chunk = chunks[result.messages % len(chunks)]
                payload = json.dumps({meter: entry(result.messages) for meter in chunk})
                task = asyncio.create_task(client.publish(topic, payload, qos=1))
                publishing.add(task)
                task.add_done_callback(publishing.discard)
                result.messages += 1
                result.published += len(chunk)
            if publishing:
                await asyncio.gather(*publishing)
            done.set()
            await asyncio.wait_for(watcher, 120)
        finally:
            watcher.cancel()
    final = seen[-1][1]
    grown = next(t for t, value in seen if value == final)
    result.updates = int(final - base)
    result.seconds = max(grown - started, 1e-9)
    return result


# ---- the report --------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def budgets(report: dict) -> list[dict]:
    values = {"memory": report["memory"]["kb_per_meter"],
              "reads": report["reads"]["per_core"],
              "mqtt": report["mqtt"]["updates_per_s"]}
    out = []
    for name, (what, sense, limit, unit) in BUDGETS.items():
        value = values[name]
        met = value is not None and not math.isnan(value) and (
            value <= limit if sense == "<=" else value >= limit)
        out.append({"name": name, "what": what, "budget": f"{sense} {limit:,.0f} {unit}",
                    "value": None if value is None or math.isnan(value) else round(value, 1),
                    "unit": unit, "met": met})
    return out


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _plain(value):
    """The report with NaN (a figure that could not be measured) as null: strict JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def print_report(report: dict) -> None:
    m, mem, reads, mqtt = report["machine"], report["memory"], report["reads"], report["mqtt"]
    print(f"meter-emu bench: {report['meters']} meters, profile {report['profile']}")
    print(f"machine: {m['platform']} | {m['cpu']} | {m['cpus']} CPUs")
    print(f"python:  {m['python']}")
    print(f"start-up: {report['startup_s']:.2f} s (spawn to ready file)")
    print(f"memory:   {mem['rss_mb']:.1f} MB RSS idle ({mem['rss_1_meter_mb']:.1f} MB with 1 "
          f"meter) = {mem['kb_per_meter']:.1f} KB per meter"
          + ("" if mem["settled"] else " (CPU use had not settled)"))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(reads["errors"].items())) or "none"
    print(f"reads:    {reads['answers']:,} secured {READ_COUNT}-byte partial reads over CN/IP "
          f"in {reads['seconds']:.1f} s = {_num(reads['per_s'])} req/s, "
          f"{reads['concurrency']} in flight; fleet CPU {reads['fleet_cpu_s']:.2f} s = "
          f"{_num(reads['per_core'])} req/s per core")
    print(f"          latency p50 {_num(reads['p50_ms'], 2)} ms, p99 {_num(reads['p99_ms'], 2)} "
          f"ms; errors {errors}; timeouts {reads['timeouts']}; resyncs {reads['resyncs']}")
    print(f"mqtt:     {mqtt['updates']:,} quantity updates ({mqtt['meter_updates']:,} meters x "
          f"{mqtt['quantities_per_meter']}) applied in {mqtt['seconds']:.2f} s = "
          f"{_num(mqtt['updates_per_s'])} updates/s ({mqtt['messages']:,} batch messages, "
          f"{mqtt['published']:,} updates published)")
    print("budgets (DESIGN.md section 6):")
    for b in report["budgets"]:
        print(f"  {b['what']} {b['budget']}: {_num(b['value'], 1)} {b['unit']} "
              f"{'met' if b['met'] else 'MISSED'}")


def run_bench(args, profile) -> dict:
    report = {"machine": machine(), "meters": args.count, "profile": args.profile,
              "overrides": FIRST_OVERRIDES + list(args.overrides)}
    with tempfile.TemporaryDirectory(prefix="meter-emu-bench-") as tmp:
        workdir = Path(tmp)
        with Fleet(1, args.profile, args.overrides, workdir) as single:
            single.wait_idle()
            rss_one = _rss_mb(single.pid)
        with Fleet(args.count, args.profile, args.overrides, workdir) as fleet:
            report["startup_s"] = round(fleet.startup_s, 3)
            waited, settled = fleet.wait_idle()
            rss = _rss_mb(fleet.pid)
            report["memory"] = {"rss_mb": round(rss, 1), "rss_1_meter_mb": round(rss_one, 1),
                                "kb_per_meter": round((rss - rss_one) * 1024 / args.count, 2),
                                "idle_wait_s": round(waited, 1), "settled": settled}
            ports = fleet.ready["ports"]
            for port in ("cnip", "mqtt", "metrics"):
                if port not in ports:
                    raise BenchError(f"the fleet's ready file has no {port} port")
            targets = read_targets(fleet.ready, profile, args.count)
            concurrency = min(args.concurrency, len(targets))
            reads = asyncio.run(measure_reads(ports["cnip"], targets, concurrency,
                                              args.duration, fleet.pid, args.seed))
            mqtt = asyncio.run(measure_mqtt(ports["mqtt"], ports["metrics"],
                                            profile.mqtt.prefix, fleet.ready["meters"],
                                            args.duration))
    report["reads"] = {
        "answers": reads.answers, "seconds": round(reads.seconds, 3),
        "per_s": round(reads.answers / reads.seconds, 1),
        "fleet_cpu_s": round(reads.fleet_cpu, 3), "bench_cpu_s": round(reads.own_cpu, 3),
        "per_core": round(reads.answers / reads.fleet_cpu, 1) if reads.fleet_cpu else math.nan,
        "p50_ms": round(percentile(reads.latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(reads.latencies, 0.99) * 1000, 3),
        "errors": reads.errors, "timeouts": reads.timeouts, "resyncs": reads.resyncs,
        "late": reads.late, "concurrency": concurrency, "bytes": READ_COUNT}
    quantities = mqtt.updates * len(ENTRY_QUANTITIES)
    report["mqtt"] = {"meter_updates": mqtt.updates, "quantities_per_meter":
                      len(ENTRY_QUANTITIES), "updates": quantities,
                      "seconds": round(mqtt.seconds, 3),
                      "updates_per_s": round(quantities / mqtt.seconds, 1),
                      "messages": mqtt.messages,
                      "published": mqtt.published * len(ENTRY_QUANTITIES),
                      "meters_per_message": min(BATCH_METERS, args.count)}
    report["budgets"] = budgets(report)
    return report


# ---- the command -------------------------------------------------------------------------

def add_parser(sub) -> None:
    """Register ``meter-emu bench``."""
    p = sub.add_parser(
        "bench", help="measure a fleet: start-up, memory, reads over CN/IP, MQTT updates",
        description="Start a fleet (meter-emu run) and measure its start-up time, idle memory "
                    "per meter, secured partial reads per second through CN/IP (p50/p99 "
                    "latency) and MQTT quantity updates per second, against the budgets of "
                    "DESIGN.md section 6. Budgets missed are reported, not failures.")
    p.add_argument("--count", type=int, default=10000, metavar="N", help="meters (10000)")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="seconds per measured phase (10)")
    p.add_argument("--concurrency", type=int, default=64, metavar="C",
                   help=f"reads in flight, each to its own meter (64; at most "
                        f"{MAX_CONCURRENCY})")
    p.add_argument("--profile", default="default", help="profile name or .toml path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value (repeatable), as for meter-emu run")
    p.add_argument("--seed", type=int, default=1, help="the random meters' seed (1)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")


def _usage_error(args) -> str | None:
    if not 1 <= args.count <= 1_000_000:
        return f"--count {args.count}: 1 to 1,000,000 meters"
    if not (math.isfinite(args.duration) and 0 < args.duration <= 3600):
        return f"--duration {args.duration}: more than 0 and at most 3600 seconds"
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        return f"--concurrency {args.concurrency}: 1 to {MAX_CONCURRENCY} reads in flight"
    return None


def main(args) -> int:
    from ..profile import ProfileError, load_profile

    problem = _usage_error(args)
    if problem is None:
        try:
            profile = load_profile(args.profile, FIRST_OVERRIDES + list(args.overrides))
        except ProfileError as error:
            problem = str(error)
    if problem is not None:
        print(f"meter-emu bench: {problem}", file=sys.stderr)
        return 2

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)  # stop the fleet on SIGTERM too
    try:
        report = run_bench(args, profile)
    except BenchError as error:
        print(f"meter-emu bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meter-emu bench: interrupted; the fleet is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(_plain(report), indent=2))
    else:
        print_report(report)
    return 0
