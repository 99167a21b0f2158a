"""Run meters behind their ports: the asyncio side of ``meter-emu run``.

Builds the meter from its profile and stored state, opens each port, prints where it listens,
writes the ready file (DESIGN.md section 5) once every port is up, and on SIGINT/SIGTERM closes
the ports and flushes the state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from .clock import VirtualClock
from .device.meter import Meter, start_time
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


async def start_mqtt(url: str, meters, clock, persist, ports: dict):
    """Start the embedded broker if asked, then the bridge. Returns (broker, bridge, url),
    each None when not used."""
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
    bridge = MqttBridge(url, meters, clock, persist, ports=ports)
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


async def run_timed_actions(meters, clock, persist, max_sleep: float = 0.5) -> None:
    """Wake at each meter's next timed action (pending activations, ...) and carry it out.

    Actions are stamped with their own instant, so waking a little late (a fast virtual clock,
    a busy loop) changes nothing a client can see; the short maximum sleep picks up actions a
    client scheduled meanwhile."""
    while True:
        try:
            now = clock.now()
            for meter in meters:
                meter.advance(now)
            if any(meter.dirty for meter in meters):
                persist()
            deadlines = [d for meter in meters if (d := meter.next_deadline()) is not None]
        except Exception:  # noqa: BLE001 - a bug in one action must not stop the meters
            log.exception("timed actions failed; retrying")
            deadlines = []
        wait = max_sleep
        if deadlines:
            wait = min(wait, max(0.0, (min(deadlines) - clock.now()) / clock.rate))
        await asyncio.sleep(wait)


def _mep_factory(channel: int, url: str):
    """MEP client ``channel``'s port, paced as a meter paces it, with the inter-character
    time-out its transport calls for (ports/mep/link.py)."""
    timeout = inter_char_timeout(url)

    def factory(meter, clock):
        return mep_protocol(meter, clock, channel=channel, paced=True,
                            inter_char_timeout=timeout)

    return factory


def start_line(options: RunOptions, meters, clock, persist):
    """The fleet's power line, a station (plc/station.py) per meter on it; None when no port
    reaches it (CN/IP and the serial NI off)."""
    if options.cnip == "off" and options.serial_plc == "off":
        if options.phy != "ideal" or options.topology or options.phy_dump:
            raise PortUrlError("--phy/--topology/--phy-dump: the power line needs a port "
                               "(--cnip or --serial-plc)")
        return None
    from .plc.station import MeterStation

    stations = [MeterStation(meter, clock) for meter in meters]
    if options.phy == "bpsk":
        from .phy.realtime import RealtimeLine
        return RealtimeLine(stations, persist, topology=options.topology,
                            dump=options.phy_dump)
    if options.topology or options.phy_dump:
        raise PortUrlError("--topology and --phy-dump describe the simulated line: add --phy "
                           "bpsk")
    from .phy.ideal import IdealLine
    return IdealLine(stations, persist)


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
    store = StateStore(options.state_dir) if options.state_dir else None
    clock = VirtualClock(start_time(profile), profile.clock.rate)
    meters = [Meter(p, store.load(p.meter.id) if store else None, clock.now())
              for p in fleet_profiles(profile, options.count)]
    meter = meters[0]  # the optical and MEP ports serve the first meter

    def persist() -> None:
        if store is not None:
            store.flush(meters)
        else:
            for m in meters:
                m.dirty = False

    if options.mep2 != "off" and product_dimensions(meter).mep_channels < 2:
        raise PortUrlError(f"--mep2: firmware {profile.identity.firmware_version} has one MEP "
                           "port; MEP client 2 needs firmware 4.0 or later (MEP guide p.21), "
                           "e.g. --set identity.firmware_version=4.30.01")
    endpoints = {}
    for name, url, factory in (
        ("optical", options.optical, optical_protocol),
        ("mep", options.mep, _mep_factory(1, options.mep)),
        ("mep2", options.mep2, _mep_factory(2, options.mep2)),
    ):
        try:
            endpoint = await open_endpoint(url, lambda f=factory: f(meter, clock), persist,
                                           f"{meter.id} {name}")
        except Exception:
            for opened in endpoints.values():
                opened.close()
            raise
        if endpoint is not None:
            endpoints[name] = endpoint

    try:
        line = start_line(options, meters, clock, persist)
    except BaseException:
        for opened in endpoints.values():
            opened.close()
        raise
    try:
        cnip = await start_cnip(options, line)
        if cnip is not None:
            endpoints["cnip"] = cnip
        serial_plc = await start_serial_plc(options, line)
        if serial_plc is not None:
            endpoints["serial_plc"] = serial_plc
    except BaseException:
        for opened in endpoints.values():
            opened.close()
        if line is not None:
            line.close()
        raise
    ports = {name: endpoint.url for name, endpoint in endpoints.items()}
    try:
        broker, bridge, mqtt_url = await start_mqtt(options.mqtt, meters, clock, persist,
                                                    dict(ports))
    except BaseException:
        for opened in endpoints.values():
            opened.close()
        raise
    if bridge is not None:
        ports["mqtt"] = mqtt_url
    if len(meters) == 1:
        print(f"meter-emu: meter {meter.id} ({profile.origin}) is up", flush=True)
    else:
        print(f"meter-emu: {len(meters)} meters {meters[0].id} .. {meters[-1].id} "
              f"({profile.origin}) are up; optical and MEP serve {meter.id}, the power line "
              "all of them", flush=True)
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
    if cnip is not None:
        print(f"  PLC over CN/IP: meter-emu client discover --cnip {cnip.url} "
              f"(OMA key from the profile){'; capture ' + options.pcap if options.pcap else ''}",
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
        print(f"  MEP clients: {clients}; keys MAK/MBK from the profile, next sequence "
              f"number 0x{meter.mep_sequence:08X}", flush=True)
    if bridge is not None:
        prefix = profile.mqtt.prefix
        host, _, port = mqtt_url.removeprefix("mqtt://").rpartition(":")
        print(f"  inject   mosquitto_pub -h {host} -p {port} -t "
              f"{prefix}/{meter.id}/set -m '{{\"voltage\": 231.5, \"current\": 12.0, "
              f"\"pf\": 0.95}}'", flush=True)
    if store is not None:
        print(f"  state    {store.directory}", flush=True)
    if options.ready_file:
        write_ready_file(options.ready_file, {
            "meters": [m.id for m in meters], "ports": ports,
            "neuron_ids": {m.id: m.profile.identity.neuron_id.upper() for m in meters}})

    timed = asyncio.create_task(run_timed_actions(meters, clock, persist))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        timed.cancel()
        if bridge is not None:
            await bridge.close()
        if broker is not None:
            await broker.close()
        for endpoint in endpoints.values():
            endpoint.close()
        if line is not None:
            line.close()
        if options.ready_file:
            Path(options.ready_file).unlink(missing_ok=True)  # no stale "ready" for scripts
        if store is not None:
            for m in meters:
                store.save(m)
            store.close()
        print("meter-emu: stopped", flush=True)
