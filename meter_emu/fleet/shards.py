"""A fleet split over processes: ``--shard I/K`` (one slice) and ``--shards K`` (a local
supervisor). The slicing is here; the supervisor is ``supervise``.

``--shards K`` runs K ``meter-emu run ... --shard i/K`` children of the same interpreter, each
pinned to a core (``i % cores``), each with its own endpoints and MQTT connection. Why a
supervisor and not K threads: one Python process uses one core; the children are plain
``--shard`` processes, so what a user sees here is what an orchestrator placing shards on
hosts would get.

Endpoints per child (``designed``): a port-0 URL stays 0 (each child picks a free port); an
explicit ``tcp://H:P`` / ``udp://H:P`` (``--cnip``, ``--metrics``) becomes P+i for child i;
optical, MEP, MEP2 and the serial PLC interface (they serve one process's first meter, or a
device only one process can open) are shard 0's only. ``--metrics tcp://H:P`` is the
supervisor's: the sum of the shards' (fleet/aggregate.py); shard i serves its own at P+1+i.
``--mqtt embedded[:PORT]``: the supervisor runs the broker and the children connect to it;
``mqtt://`` passes through.
``--state DIR`` is shared: the store keeps a file per meter (store.py), so shards, whose
meters are disjoint, never write the same file, and ``--shard``, ``--shards`` and a single
process all find the same state.

A child that exits while the supervisor is not stopping is restarted with the URLs it
reported first (head-ends keep talking to the same ports) and its state directory, so
acknowledged writes survive. Three deaths in a row, each within ``QUICK_DEATH_S`` of its
start, stop the fleet (exit 1: a port taken, a disk full): restarting would only repeat it.

The supervisor's ready file (``designed``): ``{"meters", "ports" (shard 0's, mqtt, metrics),
"neuron_ids", "shards": [{"shard": "i/K", "pid", "cpu", "ports", "meters"}]}``, rewritten
after each restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from ..ports.transport import PortUrlError

log = logging.getLogger(__name__)

#: a death this soon after a (re)start counts towards giving up
QUICK_DEATH_S = 10.0
#: quick deaths in a row after which the supervisor stops the fleet
QUICK_DEATHS = 3
#: seconds a child has to save its state after SIGTERM before it is killed
STOP_TIMEOUT_S = 60.0
#: the flags whose URL is pinned on a restart when the child reported a tcp:// or udp:// one
PINNED = ("optical", "mep", "mep2", "cnip", "metrics")
#: longest line relayed whole from a child's output
LINE_LIMIT = 1 << 20


def parse_shard(text: str) -> tuple[int, int]:
    """'I/K' -> (I, K) with 0 <= I < K; PortUrlError says the form otherwise."""
    index, _, total = text.partition("/")
    if index.isdigit() and total.isdigit() and int(index) < int(total):
        return int(index), int(total)
    raise PortUrlError(f"--shard {text!r}: use I/K with 0 <= I < K, e.g. 0/4")


def shard_indices(count: int, index: int, total: int) -> range:
    """The meters (0-based fleet numbers) of shard ``index`` of ``total``: contiguous blocks,
    sizes differing by at most one, so meter numbers and identities do not depend on K."""
    if total > count:
        raise PortUrlError(f"--shard {index}/{total}: more shards than the {count} meters")
    return range(index * count // total, (index + 1) * count // total)


def shifted(flag: str, url: str, index: int) -> str:
    """``tcp://H:P`` / ``udp://H:P`` -> port P+index (P 0 stays 0); other forms unchanged."""
    scheme, sep, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "udp") or not sep or not port.isdigit() or int(port) == 0:
        return url
    if int(port) + index > 65535:
        raise PortUrlError(f"--{flag} {url}: shard {index} would need port {int(port) + index}")
    return f"{scheme}://{host}:{int(port) + index}"


def without_shards(argv: list[str]) -> list[str]:
    """``argv`` minus ``--shards K`` / ``--shards=K`` (no other option abbreviates to it:
    ``--shard`` is an option of its own)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--shards":
            skip = True
        elif not arg.startswith("--shards="):
            out.append(arg)
    return out


class ShardFailed(Exception):
    """The fleet cannot go on; ``code`` is the supervisor's exit status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Shard:
    """One child process slot: restarted in place, same endpoints, same state."""

    def __init__(self, index: int, total: int, argv: list[str], private: Path):
        self.index, self.total = index, total
        self.name = f"{index}/{total}"
        self.argv = argv  # the child's argument list (after ``meter-emu``)
        self.ready_path = private / f"shard-{index}.json"
        self.ready: dict | None = None  # the child's ready document while it is up
        self.proc: asyncio.subprocess.Process | None = None
        self.cpu: int | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)  # its last stderr
        self.relays: list[asyncio.Task] = []
        self.started = 0.0
        self.pinned = False

    async def start(self) -> None:
        self.ready_path.unlink(missing_ok=True)  # a killed child leaves its file behind
        self.ready = None
        self.tail.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meter_emu", *self.argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them in order
            limit=LINE_LIMIT, preexec_fn=_die_with_parent,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.started = time.monotonic()
        self.cpu = place(self.proc.pid, self.index)
        prefix = f"[shard {self.name}] "
        self.relays = [asyncio.create_task(_relay(self.proc.stdout, sys.stdout, prefix)),
                       asyncio.create_task(_relay(self.proc.stderr, sys.stderr, prefix,
                                                  self.tail))]

    async def wait_ready(self) -> bool:
        """True once the child wrote its ready file; False if it exited first."""
        exited = asyncio.ensure_future(self.proc.wait())
        while not exited.done():
            if self.ready_path.exists():
                self.ready = json.loads(self.ready_path.read_text())
                return True
            await asyncio.wait([exited], timeout=0.05)
        return False

    async def wait_exit(self) -> int:
        code = await self.proc.wait()
        await asyncio.wait(self.relays)  # its last words first (wait: never cancels them)
        return code

    def message(self) -> str:
        """What the child said last (its one-line error, by the CLI's convention)."""
        lines = [line for line in self.tail if line.strip()]
        said = [line for line in lines if line.startswith("meter-emu")]
        text = (said or lines or ["(nothing on stderr)"])[-1]
        return text.split(": ", 1)[1] if text.startswith("meter-emu") and ": " in text else text

    def pin(self) -> None:
        """Restart on the URLs first reported, so head-ends find the shard where it was."""
        for flag in PINNED:
            url = self.ready["ports"].get(flag, "")
            if url.startswith(("tcp://", "udp://")):
                self.argv += [f"--{flag}", url]
        self.pinned = True


def place(pid: int, index: int) -> int | None:
    """Pin child ``index`` to a core of those this process may use; None where the platform
    cannot (logged once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        cpu = cpus[index % len(cpus)]
        os.sched_setaffinity(pid, {cpu})
        return cpu
    except (AttributeError, OSError) as error:
        if index == 0:
            log.info("shards are not placed on cores here (%s)", error)
        return None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux), so a supervisor
    killed with -9 leaves no shard holding its ports."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the shards may outlive it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _relay(stream, out, prefix: str, tail=None) -> None:
    """Copy a child's lines to ours, prefixed with its shard."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line beyond the limit: pass it on in pieces
            line = await stream.read(LINE_LIMIT)
        if not line:
            return
        text = line.decode(errors="replace").rstrip("\r\n")
        if tail is not None:
            tail.append(text)
        out.write(prefix + text.rsplit("\r", 1)[-1] + "\n")
        out.flush()


def _status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit status {code}"


class Supervisor:
    def __init__(self, argv: list[str], args, private: Path):
        self.args = args
        self.total = args.shards
        self.private = private
        self.base = without_shards(argv)
        self.broker = None
        self.metrics = None  # the shards' sum (fleet/aggregate.py)
        self.mqtt = args.mqtt
        self.shards: list[Shard] = []
        self.stopping = False
        self.announced = False

    def child_argv(self, index: int) -> list[str]:
        """The user's arguments, then this shard's (argparse: the last value wins)."""
        args, first = self.args, index == 0
        extra = ["--shard", f"{index}/{self.total}", "--ready-file",
                 str(self.private / f"shard-{index}.json"), "--mqtt", self.mqtt,
                 "--cnip", shifted("cnip", args.cnip, index),
                 "--metrics", shifted("metrics", args.metrics, index + 1)]
        if not first:
            extra += ["--optical", "off", "--mep", "off", "--mep2", "off", "--serial-plc", "off"]
        for flag, path in (("--pcap", args.pcap), ("--phy-dump", args.phy_dump)):
            if path and not first:
                p = Path(path)
                extra += [flag, str(p.with_name(f"{p.stem}.shard-{index}{p.suffix}"))]
        return self.base + extra

    async def start_broker(self) -> None:
        from ..runner import mqtt_broker_address

        address = mqtt_broker_address(self.args.mqtt)
        if address is None:
            return
        from ..mqtt.broker import Broker

        self.broker = Broker()
        try:
            await self.broker.start(*address)
        except OSError as exc:
            if self.args.mqtt != "embedded":
                raise PortUrlError(f"--mqtt {self.args.mqtt}: cannot listen on "
                                   f"{address[0]}:{address[1]} ({exc.strerror})") from None
            log.warning("MQTT port %d is taken (%s); the embedded broker takes a free port",
                        address[1], exc.strerror)
            await self.broker.start(address[0], 0)
        self.mqtt = self.broker.url

    async def start_metrics(self) -> None:
        if self.args.metrics == "off":
            return
        from .aggregate import Aggregate
        from .metrics import listen

        total = Aggregate(lambda: [s.ready["ports"].get("metrics") if s.ready else None
                                   for s in self.shards])
        self.metrics = await listen(self.args.metrics, total, total.refresh)

    async def keep(self, shard: Shard) -> None:
        """Run one shard until the supervisor stops; restart it whenever it dies."""
        quick = 0
        while True:
            await shard.start()
            up = await shard.wait_ready()
            if up:
                self.on_ready(shard)
            code = await shard.wait_exit()
            shard.ready = None
            if self.stopping:
                return
            if not self.announced and not up:  # never came up: bad arguments, bad profile
                raise ShardFailed(2 if code == 2 else 1,
                                  f"shard {shard.name}: {shard.message()}")
            quick = quick + 1 if time.monotonic() - shard.started < QUICK_DEATH_S else 0
            if quick >= QUICK_DEATHS:
                raise ShardFailed(1, f"shard {shard.name} died {quick} times within "
                                     f"{QUICK_DEATH_S:g} s of starting ({_status(code)}: "
                                     f"{shard.message()}); stopping the fleet")
            print(f"meter-emu: shard {shard.name} (pid {shard.proc.pid}) died "
                  f"({_status(code)}); restarting", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5 * 2 ** max(quick - 1, 0))

    def on_ready(self, shard: Shard) -> None:
        if not shard.pinned:
            shard.pin()
        if not all(s.ready for s in self.shards):
            return
        if self.args.ready_file:
            from ..runner import write_ready_file

            write_ready_file(self.args.ready_file, self.document())
        if self.announced:
            print(f"meter-emu: shard {shard.name} is up again (pid {shard.proc.pid})",
                  flush=True)
        else:
            self.announced = True
            self.print_banner()

    def document(self) -> dict:
        shards = [{"shard": s.name, "pid": s.proc.pid, "cpu": s.cpu, "ports": s.ready["ports"],
                   "meters": s.ready["meters"]} for s in self.shards]
        ports = dict(self.shards[0].ready["ports"])
        if self.broker is not None:
            ports["mqtt"] = self.broker.url
        if self.metrics is not None:
            ports["metrics"] = self.metrics.url
        neuron_ids: dict = {}
        for s in self.shards:
            neuron_ids.update(s.ready.get("neuron_ids", {}))
        return {"meters": [m for s in shards for m in s["meters"]], "ports": ports,
                "neuron_ids": neuron_ids, "shards": shards}

    def print_banner(self) -> None:
        meters = [m for s in self.shards for m in s.ready["meters"]]
        print(f"meter-emu: {len(meters)} meters {meters[0]} .. {meters[-1]} in {self.total} "
              "shards are up", flush=True)
        for s in self.shards:
            ids = s.ready["meters"]
            cpu = f"cpu {s.cpu}" if s.cpu is not None else "cpu -"
            ports = "  ".join(f"{name} {url}" for name, url in s.ready["ports"].items()
                              if name != "mqtt")
            print(f"  shard {s.name:<5} pid {s.proc.pid:<7} {cpu}  {ids[0]} .. {ids[-1]}  "
                  f"{ports}", flush=True)
        if self.broker is not None:
            print(f"  mqtt     {self.broker.url} (embedded broker, shared by the shards)",
                  flush=True)
        elif self.args.mqtt != "off":
            print(f"  mqtt     {self.args.mqtt} (one connection per shard)", flush=True)
        if self.metrics is not None:
            print(f"  metrics  {self.metrics.url} (the sum of the shards')", flush=True)
        if self.args.state:
            print(f"  state    {self.args.state} (shared: a file per meter)", flush=True)

    async def stop_children(self) -> None:
        live = [s for s in self.shards if s.proc is not None and s.proc.returncode is None]
        for s in live:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                s.proc.send_signal(signal.SIGTERM)
        for s in live:
            try:
                await asyncio.wait_for(s.wait_exit(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                print(f"meter-emu: shard {s.name} (pid {s.proc.pid}) did not stop within "
                      f"{STOP_TIMEOUT_S:g} s; killed", file=sys.stderr, flush=True)
                s.proc.kill()
                await s.wait_exit()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start_broker()
        try:
            await self.start_metrics()
        except BaseException:
            if self.broker is not None:
                await self.broker.close()
            raise
        self.shards = [Shard(i, self.total, self.child_argv(i), self.private)
                       for i in range(self.total)]
        keepers = [asyncio.create_task(self.keep(s)) for s in self.shards]
        stopped = asyncio.create_task(stop.wait())
        code, message = 0, None
        try:
            done, _ = await asyncio.wait([stopped, *keepers],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and isinstance(task.exception(), ShardFailed):
                    code, message = task.exception().code, str(task.exception())
                elif task is not stopped:
                    task.result()  # a bug: let it show
        finally:
            self.stopping = True
            for task in (stopped, *keepers):  # first, so that no restart races the stop
                task.cancel()
            await asyncio.gather(stopped, *keepers, return_exceptions=True)
            await self.stop_children()
            if self.broker is not None:
                await self.broker.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.args.ready_file:
                Path(self.args.ready_file).unlink(missing_ok=True)
        if message:
            print(f"meter-emu: {message}", file=sys.stderr, flush=True)
            return code
        print("meter-emu: stopped", flush=True)
        return 0


def check(args) -> None:
    """What the supervisor can refuse before starting anything (PortUrlError)."""
    if args.shard is not None:
        raise PortUrlError("--shard runs one slice and --shards all of them: give one")
    if args.shards < 1:
        raise PortUrlError(f"--shards {args.shards}: give 1 or more")
    shard_indices(args.count, 0, args.shards)
    shifted("cnip", args.cnip, args.shards - 1)
    shifted("metrics", args.metrics, args.shards)  # the supervisor's sum, then each shard's


def supervise(argv: list[str], args) -> int:
    """Run ``args.shards`` shard processes until SIGINT/SIGTERM; the exit status of
    ``meter-emu run --shards K``."""
    from ..runner import mqtt_broker_address

    try:
        check(args)
        mqtt_broker_address(args.mqtt)
    except PortUrlError as error:
        print(f"meter-emu: {error}", file=sys.stderr)
        return 2
    # the children's ready files: next to the user's (a place known writable, and cleaned
    # with it should the supervisor be killed), else in the temporary directory
    where = Path(args.ready_file).resolve().parent if args.ready_file else None
    try:
        if args.ready_file:
            Path(args.ready_file).unlink(missing_ok=True)  # a stale one from a killed run
        private = Path(tempfile.mkdtemp(prefix=".meter-emu-shards-", dir=where))
    except OSError as error:
        print(f"meter-emu: --ready-file {args.ready_file}: {error.strerror}", file=sys.stderr)
        return 2
    if not args.state:
        print("meter-emu: no --state: a restarted shard starts its meters afresh (give --state "
              "DIR to keep what they were told)", file=sys.stderr, flush=True)
    try:
        return asyncio.run(Supervisor(argv, args, private).run())
    except PortUrlError as error:
        print(f"meter-emu: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(private, ignore_errors=True)
