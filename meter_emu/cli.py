"""The ``meter-emu`` command.

    meter-emu run [--profile NAME|PATH] [--set section.key=value ...] [--optical URL]
                  [--mep URL] [--mep2 URL] [--mqtt embedded|embedded:PORT|mqtt://HOST:PORT|off]
                  [--state DIR] [--ready-file PATH] [--clock-rate R] [--start-time ISO]
                  [--cnip udp://HOST:PORT|off] [--pcap FILE] [--count N]
    meter-emu tables [--json] [--markdown]
    meter-emu tables show TABLE [--json] [--profile NAME|PATH] [--set ...] [--state DIR]
    meter-emu procedures [--json] [--markdown]
    meter-emu events [--json] [--markdown]
    meter-emu client discover|commission|read|write|procedure|load-profile|firmware-broadcast|
                     status|wink [--cnip URL | --ready-file PATH] [--meter M] [--key K] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from . import __version__, firmware_cli
from .fleet import bench as fleet_bench, keys as fleet_keys
from .clock import ManualClock
from .device.access import OPEN
from .events import EVENTS
from .ports.transport import PortUrlError
from .procedures import PROCEDURES
from .profile import ProfileError, load_profile
from .store import StoreError
from .tables import CATALOG


def _access(keys: frozenset) -> str:
    return " ".join(sorted(str(k) for k in keys)) if keys else "-"


def catalog_listing() -> dict:
    """Tables, procedures and events as plain data (sizes for the default profile)."""
    from .device.meter import Meter

    meter = Meter(load_profile())
    now = ManualClock().now()
    tables = []
    for number in sorted(CATALOG):
        table = CATALOG[number]
        tables.append({
            "label": table.label,
            "id": number,
            "name": table.name,
            "read": "OPEN" if OPEN in table.read else _access(table.read),
            "write": _access(table.write),
            "size": len(meter.table_bytes(number, now)),
            "stored": table.stored,
            "pending": table.pending,
            "provenance": table.provenance.kind,
            "source": table.provenance.source,
        })
    return {"tables": tables, "procedures": procedure_listing(), "events": event_listing()}


def _fields(layout) -> list[str]:
    """A procedure's parameter or response layout as 'name: TYPE' items (sizes may vary)."""
    from .tables.describe import field_type

    if layout is None:
        return []
    subcons = getattr(layout, "subcons", None)
    if subcons is None:
        return [field_type(layout)]
    return [f"{sub.name}: {field_type(sub)}" for sub in subcons]


def procedure_listing() -> list[dict]:
    """The procedure catalog as plain data (``meter-emu procedures``)."""
    return [
        {"label": p.label, "number": n, "kind": "basic" if n < 2048 else "extended",
         "name": p.name, "execute": _access(p.execute), "parameters": _fields(p.params),
         "response": _fields(p.response), "results": {str(k): v for k, v in p.results.items()},
         "idempotent": p.idempotent, "effect": p.effect, "provenance": p.provenance.kind,
         "source": p.provenance.source}
        for n, p in sorted(PROCEDURES.items())
    ]


def event_listing() -> list[dict]:
    """The event catalog as plain data (``meter-emu events``)."""
    from .events import ALTERNATE_LOG_EVENTS, QUIET_BY_DEFAULT

    return [
        {"number": n, "kind": e.kind, "name": e.name, "argument": e.argument,
         "trigger": e.trigger, "alarm": e.alarm,
         "log": "ET79" if n in ALTERNATE_LOG_EVENTS else "BT74",
         "logged_by_default": n not in QUIET_BY_DEFAULT,
         "provenance": e.provenance.kind, "source": e.provenance.source}
        for n, e in sorted(EVENTS.items())
    ]


def _print_listing(listing: dict) -> None:
    print(f"{'table':<6} {'id':>5}  {'name':<38} {'read':<24} {'write':<18} {'size':>5}  provenance")
    for t in listing["tables"]:
        print(f"{t['label']:<6} {t['id']:>5}  {t['name']:<38} {t['read']:<24} {t['write']:<18} "
              f"{t['size']:>5}  {t['provenance']}: {t['source']}")


def _print_procedures(procedures: list[dict]) -> None:
    print(f"{'proc':<6} {'number':>6}  {'name':<44} {'execute':<24} provenance")
    for p in procedures:
        print(f"{p['label']:<6} {p['number']:>6}  {p['name']:<44} {p['execute']:<24} "
              f"{p['provenance']}: {p['source']}")
    basic = sum(1 for p in procedures if p["kind"] == "basic")
    print(f"\n{basic} basic and {len(procedures) - basic} extended procedures")


def _print_events(events: list[dict]) -> None:
    print(f"{'event':>5}  {'kind':<8} {'name':<40} {'log':<5} trigger")
    for e in events:
        log_name = e["log"] if e["logged_by_default"] else "-"
        print(f"{e['number']:>5}  {e['kind']:<8} {e['name']:<40} {log_name:<5} {e['trigger']}")
    basic = sum(1 for e in events if e["kind"] == "basic")
    print(f"\n{basic} basic and {len(events) - basic} extended events "
          "(log '-': supported, logged once BT73 asks for it)")


def _markdown_procedures(procedures: list[dict]) -> str:
    lines = ["# Procedures", "",
             "Generated by `meter-emu procedures --markdown > docs/procedures.md` from the "
             "catalog. A procedure is written to BT07 (number: EP n = 2048 + n, PSN, parameters) "
             "and answered in BT08 (number, PSN, result code, response data). Result codes: 0 "
             "completed, 1 not completed, 2 invalid parameter, 3 conflict with setup, 4 timing "
             "constraint, 5 no authorization, 6 unrecognized; procedure-specific meanings are "
             "listed per procedure.", ""]
    for p in procedures:
        lines += [f"## {p['label']} ({p['number']}) {p['name']}", "",
                  f"- execute: {p['execute']}",
                  f"- parameters: {', '.join(p['parameters']) or 'none'}"]
        if p["response"]:
            lines.append(f"- response data: {', '.join(p['response'])}")
        for code, meaning in p["results"].items():
            lines.append(f"- result {code}: {meaning}")
        if not p["idempotent"]:
            lines.append("- not idempotent: refused inside a transaction")
        lines += [f"- effect: {p['effect']}", f"- {p['provenance']}: {p['source']}", ""]
    return "\n".join(lines)


def _markdown_events(events: list[dict]) -> str:
    lines = ["# Events", "",
             "Generated by `meter-emu events --markdown > docs/events.md` from the catalog. "
             "Basic events (IDs 0-63) are BT72/BT73's standard bits, extended events (64 and up) "
             "the manufacturer bits (ID - 64). Log: where the event is recorded (BT74 history "
             "log or ET79 alternate event log); '-' = supported but logged only once BT73 "
             "monitors it.", "",
             "| ID | kind | name | argument | trigger | BT03 alarm | log | provenance |",
             "|---|---|---|---|---|---|---|---|"]
    for e in events:
        log_name = e["log"] if e["logged_by_default"] else "-"
        cells = [str(e["number"]), e["kind"], e["name"], e["argument"], e["trigger"],
                 e["alarm"] or "", log_name, f"{e['provenance']}: {e['source']}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _catalog_command(args, listing, markdown, printer) -> int:
    if args.markdown:
        print(markdown(listing), end="")
    elif args.json:
        json.dump(listing, sys.stdout, indent=2)
        print()
    else:
        printer(listing)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meter-emu", description="Device emulator of an OSGP smart meter."
    )
    parser.add_argument("--version", action="version", version=f"meter-emu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a meter with its ports")
    run.add_argument("--profile", default="default",
                     help="profile name in profiles/ or a path to a .toml file (default: default)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="SECTION.KEY=VALUE", help="override one profile value (repeatable)")
    run.add_argument("--optical", default="tcp://127.0.0.1:1218", metavar="URL",
                     help="optical port: tcp://HOST:PORT (0 = any free port), pty, pty:LINK, "
                          "a serial device path, or off (default: tcp://127.0.0.1:1218)")
    run.add_argument("--mep", default="tcp://127.0.0.1:1219", metavar="URL",
                     help="MEP port (RC4/OMA-digest security), same URL forms as --optical "
                          "(default: tcp://127.0.0.1:1219)")
    run.add_argument("--mep2", default="off", metavar="URL",
                     help="MEP client 2's port (firmware 4.0 and later), same URL forms "
                          "(default: off)")
    run.add_argument("--mqtt", default="embedded", metavar="URL",
                     help="MQTT for injecting quantities: embedded (an in-process broker on "
                          "127.0.0.1:1883), embedded:PORT (0 = any free port), "
                          "mqtt://HOST:PORT (mosquitto, EMQX, ...) or off (default: embedded)")
    run.add_argument("--cnip", default="udp://127.0.0.1:1628", metavar="URL",
                     help="PLC over CN/IP (ISO/IEC 14908-4): udp://HOST:PORT (0 = any free "
                          "port; the default 1628 falls back to a free port if taken) or off "
                          "(default: udp://127.0.0.1:1628)")
    run.add_argument("--pcap", metavar="FILE",
                     help="write every frame on the CN/IP channel to FILE (pcap; tshark -r "
                          "FILE decodes it)")
    run.add_argument("--phy", default="ideal", choices=["ideal", "bpsk"],
                     help="the power line the meters share: ideal (no airtime or loss) or "
                          "bpsk (the simulated TS 103 908 BPSK channel with CSMA, noise and "
                          "attenuation; a data concentrator bridges CN/IP onto it) "
                          "(default: ideal)")
    run.add_argument("--topology", metavar="FILE",
                     help="with --phy bpsk: the line's attenuations and noise (TOML, see "
                          "README) instead of the random defaults")
    run.add_argument("--phy-dump", metavar="FILE.wav",
                     help="with --phy bpsk: write every frame on the line as passband samples")
    run.add_argument("--serial-plc", default="off", metavar="URL",
                     help="a serial PLC network interface (U50/MIP link, 115200 8N1): pty or a "
                          "device path makes the fleet appear as an NI there; host:DEVICE "
                          "drives a real NI on DEVICE (default: off)")
    run.add_argument("--count", type=int, default=1, metavar="N",
                     help="emulate N meters numbered from the profile (meter-1 .. meter-N, "
                          "Neuron ID + index, ...), all behind the CN/IP endpoint; optical "
                          "and MEP serve the first (default: 1)")
    run.add_argument("--state", metavar="DIR",
                     help="keep meter state in DIR so it survives restarts and kill -9")
    run.add_argument("--ready-file", metavar="PATH",
                     help="write a JSON document with the meters and port URLs once all are up")
    run.add_argument("--clock-rate", type=float, metavar="R",
                     help="virtual seconds per real second (same as --set clock.rate=R)")
    run.add_argument("--start-time", metavar="ISO",
                     help="virtual clock start, e.g. 2026-01-01T00:00:00Z (clock.start)")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="debug logs every frame and every refusal with its reason")
    fleet = run.add_argument_group("fleets")
    fleet.add_argument("--fleet-secret", metavar="TEXT",
                       help="give each meter its own keys, derived from TEXT and its Neuron "
                            "ID (same as --set fleet.secret=TEXT)")
    fleet.add_argument("--key-file", metavar="PATH",
                       help="each meter's keys from a key file (`meter-emu keys export` "
                            "writes one; same as --set fleet.key_file=PATH)")
    fleet.add_argument("--shard", metavar="I/K",
                       help="run only slice I (0-based) of K of the --count meters")
    fleet.add_argument("--shards", type=int, metavar="K",
                       help="run the fleet as K shard processes, shard i on core i %% cores, "
                            "each restarted (same ports, same --state) if it dies; an explicit "
                            "--cnip/--metrics port P becomes P+i for shard i (0: each picks "
                            "one); optical, MEP and --serial-plc belong to shard 0; --mqtt "
                            "embedded runs one broker for all shards")
    fleet.add_argument("--metrics", default="off", metavar="URL",
                       help="serve Prometheus metrics at tcp://HOST:PORT/metrics (0 = any "
                            "free port) (default: off)")
    fleet.add_argument("--metrics-per-meter", type=int, default=0, metavar="N",
                       help="also export per-meter series for the first N meters of the "
                            "process (at most 1000; needs --metrics; default 0)")
    fleet.add_argument("--stats-interval", type=float, default=60.0, metavar="S",
                       help="print a statistics line every S seconds (0: only at stop; "
                            "default 60)")
    fleet.add_argument("--ramp", type=float, default=0.0, metavar="S",
                       help="bring the meters up over S seconds instead of at once; those "
                            "already up answer meanwhile (default 0)")

    tables = sub.add_parser("tables", help="list the table, procedure and event catalog")
    tables.add_argument("--json", action="store_true", help="machine-readable output")
    tables.add_argument("--markdown", action="store_true",
                        help="the table list as Markdown (this is how docs/tables.md is made)")
    for name, what in (("procedures", "the procedure catalog (BT07/BT08)"),
                       ("events", "the event catalog (BT74/ET79)")):
        listing = sub.add_parser(name, help=f"list {what}")
        listing.add_argument("--json", action="store_true", help="machine-readable output")
        listing.add_argument("--markdown", action="store_true",
                             help=f"as Markdown (this is how docs/{name}.md is made)")
    tables_sub = tables.add_subparsers(dest="tables_command")
    show = tables_sub.add_parser(
        "show", help="one table's layout and its decoded values",
        description="Print a table's layout (offsets, sizes, types) and its values as a meter "
                    "built from the profile (and the state directory, if given) holds them now. "
                    "Point --state at a running emulator's state directory to see its tables.")
    show.add_argument("table", help="BT54, ET04, a wire ID such as 2052, or a pending ID (4150)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--profile", default="default", help="profile name or .toml path")
    show.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="SECTION.KEY=VALUE", help="override one profile value (repeatable)")
    show.add_argument("--state", metavar="DIR", help="a state directory (meter-emu run --state)")
    firmware_cli.add_parser(sub)
    fleet_keys.add_parser(sub)
    fleet_bench.add_parser(sub)
    from .client import plc_cli
    plc_cli.add_parser(sub)
    from .phy import cli as phy_cli
    phy_cli.add_parser(sub)
    from .ports import pty_cli
    pty_cli.add_parser(sub)
    return parser


def parse_table_name(text: str) -> int:
    """'BT54' -> 54, 'ET04' -> 2052, '4150' -> 4150; ValueError with a message otherwise."""
    name = text.strip().upper()
    if name[:2] in ("BT", "ET") and name[2:].isdigit():
        return int(name[2:]) + (2048 if name[:2] == "ET" else 0)
    if name.isdigit():
        return int(name)
    raise ValueError(f"{text!r} is not a table: use BT54, ET04 or a wire ID such as 2052")


def show_table(args) -> int:
    import time

    from .device import pending
    from .device.meter import Meter, start_time
    from .store import StateStore
    from .tables.catalog import PENDING_BASE, label
    from .tables.describe import layout_text, plain, describe

    try:
        table_id = parse_table_name(args.table)
        number = table_id % PENDING_BASE
        if number not in CATALOG:
            raise ValueError(f"{label(table_id)} is not one of this meter's tables "
                             "(meter-emu tables lists them)")
        if table_id >= PENDING_BASE and not CATALOG[number].pending:
            raise ValueError(f"{label(number)} has no pending table")
        profile = load_profile(args.profile, args.overrides)
        state = StateStore(args.state).load(profile.meter.id) if args.state else None
    except (ValueError, ProfileError, StoreError) as error:
        print(f"meter-emu: {error}", file=sys.stderr)
        return 2
    meter = Meter(profile, state)
    now = start_time(profile) or time.time()
    table = CATALOG[number]
    layout = table.layout_for(meter)
    if table_id >= PENDING_BASE:
        image = pending.read(meter, table_id, now)
        ped, values = image[:pending.PED_SIZE].hex(), plain(layout.parse(image[pending.PED_SIZE:]))
    else:
        ped, values = None, plain(layout.parse(meter.table_bytes(number, now)))
    info = {"label": label(table_id), "id": table_id, "name": table.name,
            "read": "OPEN" if OPEN in table.read else _access(table.read),
            "write": _access(table.write), "size": layout.sizeof(), "stored": table.stored,
            "pending": table.pending, "provenance": str(table.provenance)}
    if args.json:
        rows = [vars(row) for row in describe(layout)]
        json.dump({"table": info, "layout": rows, "ped": ped, "values": values}, sys.stdout,
                  indent=2)
        print()
        return 0
    print(f"{info['label']} (wire ID {table_id}) {table.name}: {info['size']} bytes, "
          f"{'stored' if table.stored else 'live'}{', pendable' if table.pending else ''}")
    print(f"read {info['read']}; write {info['write']}")
    print(info["provenance"])
    print()
    print(layout_text(layout))
    print()
    if ped is not None:
        print(f"PED {ped}")
    print(json.dumps(values, indent=2))
    return 0


def markdown_listing(listing: dict) -> str:
    """docs/tables.md: generated from the catalog, so it cannot drift from the code."""
    lines = [
        "# Tables",
        "",
        "Generated by `meter-emu tables --markdown > docs/tables.md` from the catalog; sizes are "
        "those of the default profile. Access lists the keys: optical MK/PK/RK, MEP MAK/MBK, "
        "PLC = the head-end's OMA key. Provenance: `documented` (OSGP Alliance guides: OPG = "
        "Optical Port Programmer's Guide 2021, MEP = MEP Client Developer's Guide 2022, printed "
        "pages), `c12.19` (ANSI standard layout), `designed` (no public layout; ours).",
        "",
        "| table | wire ID | name | read | write | size | pending | provenance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in listing["tables"]:
        source = t["source"].replace("|", "/")
        lines.append(f"| {t['label']} | {t['id']} | {t['name']} | {t['read']} | {t['write']} | "
                     f"{t['size']} | {'yes' if t['pending'] else ''} | "
                     f"{t['provenance']}: {source} |")
    basic = sum(1 for t in listing["tables"] if t["id"] < 2048)
    lines += ["", f"{basic} basic and {len(listing['tables']) - basic} extended tables.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `meter-emu tables | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "firmware":
        return firmware_cli.main(args)
    if args.command == "client":
        from .client import plc_cli
        return plc_cli.main(args)
    if args.command == "phy":
        from .phy import cli as phy_cli
        return phy_cli.main(args)
    if args.command == "keys":
        return fleet_keys.main(args)
    if args.command == "bench":
        return fleet_bench.main(args)
    if args.command == "pty":
        from .ports import pty_cli
        return pty_cli.main(args)
    if args.command == "procedures":
        return _catalog_command(args, procedure_listing(), _markdown_procedures,
                                _print_procedures)
    if args.command == "events":
        return _catalog_command(args, event_listing(), _markdown_events, _print_events)
    if args.command == "tables":
        if args.tables_command == "show":
            return show_table(args)
        listing = catalog_listing()
        if args.markdown:
            print(markdown_listing(listing), end="")
        elif args.json:
            json.dump(listing, sys.stdout, indent=2)
            print()
        else:
            _print_listing(listing)
        return 0

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.clock_rate is not None:
        overrides.append(f"clock.rate={args.clock_rate}")
    if args.start_time is not None:
        overrides.append(f'clock.start="{args.start_time}"')
    for key, value in (("secret", args.fleet_secret), ("key_file", args.key_file)):
        if value is not None:
            overrides.append(f"fleet.{key}={json.dumps(value)}")
    if args.shards is not None:
        from .fleet import shards
        return shards.supervise(list(sys.argv[1:] if argv is None else argv), args)
    from .runner import RunOptions, run

    try:
        profile = load_profile(args.profile, overrides)
        options = RunOptions(optical=args.optical, mep=args.mep, mep2=args.mep2,
                             mqtt=args.mqtt, state_dir=args.state, ready_file=args.ready_file,
                             cnip=args.cnip, pcap=args.pcap, count=args.count,
                             phy=args.phy, topology=args.topology, phy_dump=args.phy_dump,
                             serial_plc=args.serial_plc, shard=args.shard,
                             metrics=args.metrics, metrics_per_meter=args.metrics_per_meter,
                             ramp=args.ramp, stats_interval=args.stats_interval)
        asyncio.run(run(profile, options))
    except (ProfileError, PortUrlError, StoreError) as error:
        print(f"meter-emu: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the event loop took over the signal
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
