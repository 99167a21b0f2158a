"""Run meters behind their ports: the asyncio side of ``meter-emu run``.

Builds the meter from its profile and stored state, opens each port, prints where it listens,
writes the ready file (DESIGN.md section 5) once every port is up, and on SIGINT/SIGTERM closes
the ports and flushes the state.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from .clock import VirtualClock
from .device.meter import Meter, start_time
from .fleet import keys as fleet_keys, stats
from .fleet.progress import Progress
from .fleet.shards import parse_shard, shard_indices
from .fleet.timed import TimedActions
from .ports.mep import inter_char_timeout, mep_protocol
from .ports.optical import optical_protocol
from .ports.transport import PortUrlError, open_endpoint
from .profile import Profile, fleet_profiles
from .store import StateStore
from .tables.dimensions import product_dimensions

log = logging.getLogger(__name__)


#: the CN/IP port: 1628, where Wireshark/tshark expect CN/IP
DEFAULT_CNIP = "udp://127.0.0.1:1628"


@dataclass
class RunOptions:
    optical: str = "tcp://127.0.0.1:1218"
    mep: str = "tcp://127.0.0.1:1219"
    mep2: str = "off"  # MEP client 2's port (firmware 4.0+)
    mqtt: str = "embedded"
    state_dir: str | None = None
    ready_file: str | None = None
    cnip: str = DEFAULT_CNIP  # the fleet's CN/IP endpoint (PLC over UDP)
    pcap: str | None = None  # write the CN/IP channel's frames here
    count: int = 1  # meters in this process (profile.fleet_profiles)
    phy: str = "ideal"  # the line: ideal (phy/ideal.py) or bpsk (phy/realtime.py)
    topology: str | None = None  # --phy bpsk: attenuations and noise (phy/topology.py)
    phy_dump: str | None = None  # --phy bpsk: passband samples of every frame (.wav)
    serial_plc: str = "off"  # U50 serial NI: pty, a device path, host:DEVICE (phy/serial_plc.py)
    shard: str | None = None  # "I/K": only slice I of K of the count meters (fleet/shards.py)
    metrics: str = "off"  # Prometheus endpoint, tcp://HOST:PORT (fleet/metrics.py)
    metrics_per_meter: int = 0  # per-meter series for the first N meters
    ramp: float = 0.0  # seconds over which the meters come up
    stats_interval: float = 60.0  # seconds between statistics lines (0: none)


#: where ``--mqtt embedded`` listens: the standard MQTT port, so mosquitto_pub needs no -p
EMBEDDED_MQTT_PORT = 1883


def mqtt_broker_address(url: str) -> tuple[str, int] | None:
    """``embedded`` / ``embedded:PORT`` -> (host, port) of the broker to start in-process;
    ``mqtt://...`` or ``off`` -> None. Anything else is a PortUrlError naming the forms."""
    if url == "embedded":
        return "127.0.0.1", EMBEDDED_MQTT_PORT
    if url.startswith("embedded:"):
        port = url.removeprefix("embedded:")
        if port.isdigit() and int(port) < 65536:
            return "127.0.0.1", int(port)
    elif url == "off" or _mqtt_url(url):
        return None
    raise PortUrlError(f"--mqtt {url!r}: use embedded, embedded:PORT, mqtt://HOST:PORT or off")


def _mqtt_url(url: str) -> bool:
    host, _, port = url.removeprefix("mqtt://").rpartition(":")
    return url.startswith("mqtt://") and bool(host) and port.isdigit() and int(port) < 65536


async def start_mqtt(url: str, meters, clock, persist, ports: dict, *, shard: bool = False):
    """Start the embedded broker if asked, then the bridge (``shard``: of one shard of a
    fleet). Returns (broker, bridge, url), each None when not used."""
    address = mqtt_broker_address(url)
    if url == "off":
        return None, None, None
    from .mqtt.bridge import MqttBridge
    from .mqtt.broker import Broker

    broker = None
    if address is not None:
        broker = Broker()
        try:
            await broker.start(*address)
        except OSError as exc:
            if url != "embedded":  # a port the user chose: say why it failed
                raise PortUrlError(f"--mqtt {url}: cannot listen on {address[0]}:{address[1]} "
                                   f"({exc.strerror})") from None
            log.warning("MQTT port %d is taken (%s; another broker? --mqtt mqtt://127.0.0.1:%d "
                        "uses it); the embedded broker takes a free port",
                        address[1], exc.strerror, address[1])
            await broker.start(address[0], 0)
        url = broker.url
    bridge = MqttBridge(url, meters, clock, persist, ports=ports, shard=shard)
    try:
        await bridge.start()
    except Exception as exc:
        if broker is not None:
            await broker.close()
        raise PortUrlError(f"--mqtt {url}: cannot connect to the broker: {exc}") from None
    return broker, bridge, url


def write_ready_file(path: str, document: dict) -> None:
    """Write atomically, so a script polling for the file never reads half of it."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, target)


def _mep_factory(channel: int, url: str):
    """MEP client ``channel``'s port, paced as a meter paces it, with the inter-character
    time-out its transport calls for (ports/mep/link.py)."""
    timeout = inter_char_timeout(url)

    def factory(meter, clock):
        return mep_protocol(meter, clock, channel=channel, paced=True,
                            inter_char_timeout=timeout)

    return factory


def start_line(options: RunOptions, meters, clock, persist):
    """The fleet's power line, a station (plc/station.py) per meter on it (more join with
    ``add_stations``); None when no port reaches it (CN/IP and the serial NI off)."""
    if options.cnip == "off" and options.serial_plc == "off":
        if options.phy != "ideal" or options.topology or options.phy_dump:
            raise PortUrlError("--phy/--topology/--phy-dump: the power line needs a port "
                               "(--cnip or --serial-plc)")
        return None
    from .plc.station import MeterStation

    stations = [MeterStation(meter, clock) for meter in meters]
    if options.phy == "bpsk":
        from .phy.realtime import RealtimeLine
        line = RealtimeLine(stations, persist, topology=options.topology, dump=options.phy_dump)
    elif options.topology or options.phy_dump:
        raise PortUrlError("--topology and --phy-dump describe the simulated line: add --phy "
                           "bpsk")
    else:
        from .phy.ideal import IdealLine
        line = IdealLine(stations, persist)
    _wire_service_pins(line, stations)
    return line


def add_stations(line, meters, clock) -> None:
    """Meters that came up after the line started join it (an ideal line; --ramp)."""
    if line is not None:
        from .plc.station import MeterStation
        stations = [MeterStation(meter, clock) for meter in meters]
        line.add(stations)
        _wire_service_pins(line, stations)


def _wire_service_pins(line, stations) -> None:
    """The MQTT trigger ``service_pin`` reaches each meter's node on its line."""
    for station in stations:
        station.meter.press_service_pin = functools.partial(line.press_service_pin, station)


#: meters built between two looks at the event loop while a fleet starts
BATCH = 250


class Fleet:
    """The meters of one process: built from their profiles and saved state, a set of those
    whose state changed (saved by ``persist`` without scanning the fleet), and their timed
    actions."""

    def __init__(self, profile: Profile, options: RunOptions, store, clock):
        count = options.count
        indices = (shard_indices(count, *parse_shard(options.shard)) if options.shard
                   else range(count))
        self.profiles = fleet_keys.assign(fleet_profiles(profile, count, indices))
        self.store, self.clock = store, clock
        self.meters: list[Meter] = []
        self.dirty: set[Meter] = set()
        self.timed = TimedActions(clock, self.persist)

    def build(self, profiles) -> list[Meter]:
        built = []
        for p in profiles:
            meter = Meter(p, self.store.load(p.meter.id) if self.store else None,
                          self.clock.now())
            meter.on_dirty = self.dirty.add
            if meter.dirty:
                self.dirty.add(meter)
            meter.event_listeners.append(stats.STATS.event)
            self.timed.schedule(meter, at=self.clock.now())  # its first advance starts it
            built.append(meter)
        self.meters += built
        stats.STATS.meters = len(self.meters)
        freeze_heap()
        return built

    def persist(self) -> None:
        """Save the meters whose state changed (before any answer leaves, DESIGN.md 7), then
        look again at when each of them next acts."""
        if not self.dirty:
            return
        changed = list(self.dirty)
        self.dirty.clear()  # the set itself: every meter's on_dirty adds to it
        try:
            if self.store is not None:
                self.store.flush(changed)
            else:
                for meter in changed:
                    meter.dirty = False
        except BaseException:
            self.dirty.update(meter for meter in changed if meter.dirty)
            raise
        for meter in changed:
            self.timed.schedule(meter)

    def stop(self) -> None:
        """Save what changed since the last save (timed actions). Meters are not advanced to
        the stop instant: their next advance, after a restart, integrates from their last."""
        if self.store is not None:
            self.store.flush(list(self.dirty), progress=Progress(len(self.dirty), "saving"))
        self.dirty.clear()


async def build_rest(fleet: Fleet, rest, line, ramp: float) -> None:
    """The meters after the first batch, batch by batch (the ports answer meanwhile), spread
    over ``ramp`` seconds."""
    progress = Progress(len(fleet.profiles), "starting")
    progress.update(len(fleet.meters))
    started = asyncio.get_running_loop().time()
    for first in range(0, len(rest), BATCH):
        built = fleet.build(rest[first:first + BATCH])
        add_stations(line, built, fleet.clock)
        progress.update(len(fleet.meters))
        lag = started + ramp * (first + BATCH) / len(rest) - asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, lag))
    progress.finish()


#: gc thresholds for a fleet: young collections 30x rarer than Python's default (700), since
#: answering a request allocates a few hundred objects that reference counting frees anyway
GC_THRESHOLDS = (20_000, 20, 10)


def freeze_heap() -> None:
    """Collect, then freeze what lives (gc.freeze): the meters live as long as the process,
    and full collections walking 10,000 meters' state took 0.1-0.4 s each, a dozen of them
    during a start (pauses every port felt). Frozen objects are walked no more; their garbage
    is still freed by reference counting. Each call collects only what came since the last."""
    gc.collect()
    gc.freeze()


async def freeze_when_started(timed: TimedActions) -> None:
    """Freeze again once every meter has made its first advance (its engine's state)."""
    await timed.caught_up.wait()
    freeze_heap()


async def print_statistics(interval: float) -> None:
    """A line of the fleet's statistics every ``interval`` seconds."""
    before = None
    while True:
        await asyncio.sleep(interval)
        print(f"meter-emu: {stats.STATS.summary_line(before)}", flush=True)
        before = stats.STATS.totals()


async def start_serial_plc(options: RunOptions, line):
    """The serial PLC interface, a gateway of ``line`` (phy/serial_plc.py)."""
    if options.serial_plc == "off":
        return None
    from .phy.serial_plc import open_serial_plc
    return await open_serial_plc(options.serial_plc, line)


async def start_cnip(options: RunOptions, line):
    """The CN/IP endpoint, a gateway of ``line``. The default port, when taken (another
    emulator), gives way to a free port with a warning; a port the user chose fails with the
    reason."""
    if options.cnip == "off":
        if options.pcap:
            raise PortUrlError("--pcap records the CN/IP channel; it needs --cnip")
        return None
    from .cnip.endpoint import open_cnip

    try:
        return await open_cnip(options.cnip, line, pcap=options.pcap)
    except PortUrlError as exc:
        if options.cnip != DEFAULT_CNIP:
            raise
        log.warning("%s; CN/IP takes a free port (--cnip udp://127.0.0.1:0 does so quietly)",
                    exc)
        return await open_cnip("udp://127.0.0.1:0", line, pcap=options.pcap)


async def run(profile: Profile, options: RunOptions) -> None:
    if options.ready_file:
        Path(options.ready_file).unlink(missing_ok=True)  # a stale file from a killed run
    stats.reset()
    gc.set_threshold(*GC_THRESHOLDS)
    store = StateStore(options.state_dir) if options.state_dir else None
    clock = VirtualClock(start_time(profile), profile.clock.rate)
    fleet = Fleet(profile, options, store, clock)
    bpsk = options.phy == "bpsk"
    if bpsk and options.ramp:
        raise PortUrlError("--ramp: the BPSK line takes its meters at once; use --phy ideal")
    # the first batch (the whole fleet on a BPSK line, which sets up every link at start)
    first = fleet.profiles if bpsk else fleet.profiles[:BATCH]
    fleet.build(first)
    meter = fleet.meters[0]  # the optical and MEP ports serve the first meter
    persist = fleet.persist

    if options.mep2 != "off" and product_dimensions(meter).mep_channels < 2:
        raise PortUrlError(f"--mep2: firmware {profile.identity.firmware_version} has one MEP "
                           "port; MEP client 2 needs firmware 4.0 or later (MEP guide p.21), "
                           "e.g. --set identity.firmware_version=4.30.01")
    endpoints: dict = {}
    closers: list = []  # what to close, last opened first
    try:
        for name, url, factory in (
            ("optical", options.optical, optical_protocol),
            ("mep", options.mep, _mep_factory(1, options.mep)),
            ("mep2", options.mep2, _mep_factory(2, options.mep2)),
        ):
            endpoint = await open_endpoint(url, lambda f=factory: f(meter, clock), persist,
                                           f"{meter.id} {name}")
            if endpoint is not None:
                endpoints[name] = endpoint
                closers.append(endpoint.close)
        line = start_line(options, fleet.meters, clock, persist)
        if line is not None:
            closers.append(line.close)
        for name, starter in (("cnip", start_cnip), ("serial_plc", start_serial_plc)):
            endpoint = await starter(options, line)
            if endpoint is not None:
                endpoints[name] = endpoint
                closers.append(endpoint.close)
        await build_rest(fleet, fleet.profiles[len(first):], line, options.ramp)
        meters = fleet.meters
        ports = {name: endpoint.url for name, endpoint in endpoints.items()}
        broker, bridge, mqtt_url = await start_mqtt(options.mqtt, meters, clock, persist,
                                                    dict(ports), shard=bool(options.shard))
        if bridge is not None:
            ports["mqtt"] = mqtt_url
            closers.append(bridge.close)
        if broker is not None:
            closers.insert(closers.index(bridge.close), broker.close)
        from .fleet import metrics as fleet_metrics

        metrics = await fleet_metrics.start(options.metrics, meters,
                                            per_meter=options.metrics_per_meter)
        if metrics is not None:
            ports["metrics"] = metrics.url
            closers.append(metrics.close)
    except BaseException:
        await _close(closers)
        raise
    _print_banner(profile, options, fleet, ports, line, endpoints.get("cnip"), store)
    if options.ready_file:
        document = {"meters": [m.id for m in meters], "ports": ports,
                    "neuron_ids": {m.id: m.profile.identity.neuron_id.upper() for m in meters}}
        if options.shard:
            document["shard"] = options.shard
        write_ready_file(options.ready_file, document)

    tasks = [asyncio.create_task(fleet.timed.run()),
             asyncio.create_task(freeze_when_started(fleet.timed))]
    if options.stats_interval > 0:
        tasks.append(asyncio.create_task(print_statistics(options.stats_interval)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await _close(closers)
        if options.ready_file:
            Path(options.ready_file).unlink(missing_ok=True)  # no stale "ready" for scripts
        fleet.stop()
        if store is not None:
            store.close()
        print(f"meter-emu: {stats.STATS.summary_line()}", flush=True)
        print("meter-emu: stopped", flush=True)


async def _close(closers: list) -> None:
    """Close what was opened, last first; coroutine closers are awaited."""
    for close in reversed(closers):
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - closing the rest matters more
            log.exception("closing %s failed", close)


def _print_banner(profile, options, fleet, ports, line, cnip, store) -> None:
    meters = fleet.meters
    meter = meters[0]
    shard = f", shard {options.shard}" if options.shard else ""
    if len(meters) == 1:
        print(f"meter-emu: meter {meter.id} ({profile.origin}{shard}) is up", flush=True)
    else:
        print(f"meter-emu: {len(meters)} meters {meters[0].id} .. {meters[-1].id} "
              f"({profile.origin}{shard}) are up; optical and MEP serve {meter.id}, the power "
              "line all of them", flush=True)
    for name, url in ports.items():
        print(f"  {name:<8} {url}", flush=True)
    if line is not None:
        line_name = ("the simulated BPSK power line (TS 103 908, A-band)"
                     if options.phy == "bpsk" else "an ideal power line")
        print(f"  the meters share {line_name}", flush=True)
        if options.phy == "bpsk":
            print(f"  line     {line.summary()}", flush=True)
            if options.phy_dump:
                print(f"  dump     {options.phy_dump} (every frame on the line, passband "
                      "480 kHz)", flush=True)
    own_keys = profile.fleet.secret or profile.fleet.key_file
    key_note = ("per-meter keys: meter-emu keys export lists them for --key-file" if own_keys
                else "OMA key from the profile")
    if cnip is not None:
        print(f"  PLC over CN/IP: meter-emu client discover --cnip {cnip.url} "
              f"({key_note}){'; capture ' + options.pcap if options.pcap else ''}",
              flush=True)
    if "serial_plc" in ports and not options.serial_plc.startswith("host:"):
        print(f"  PLC over a serial NI (U50 link, 115200 8N1): meter-emu client discover "
              f"--serial {ports['serial_plc']}", flush=True)
    if "optical" in ports:
        client = ports["optical"].replace("tcp://", "socket://")
        print(f"  C12.18 clients (termineter: set SERIAL_CONNECTION {client})", flush=True)
    if "mep" in ports or "mep2" in ports:
        clients = " and ".join(f"client {n} on {ports[name]}"
                               for n, name in ((1, "mep"), (2, "mep2")) if name in ports)
        keys = f"of {meter.id} (per-meter)" if own_keys else "from the profile"
        print(f"  MEP clients: {clients}; keys MAK/MBK {keys}, next sequence "
              f"number 0x{meter.mep_sequence:08X}", flush=True)
    if "mqtt" in ports:
        prefix = profile.mqtt.prefix
        host, _, port = ports["mqtt"].removeprefix("mqtt://").rpartition(":")
        print(f"  inject   mosquitto_pub -h {host} -p {port} -t "
              f"{prefix}/{meter.id}/set -m '{{\"voltage\": 231.5, \"current\": 12.0, "
              f"\"pf\": 0.95}}'", flush=True)
    if "metrics" in ports:
        print(f"  scrape   curl {ports['metrics'].replace('tcp://', 'http://')}/metrics",
              flush=True)
    if store is not None:
        print(f"  state    {store.directory}", flush=True)
