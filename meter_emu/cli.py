"""The ``meter-emu`` command.

    meter-emu run [--profile NAME|PATH] [--set section.key=value ...] [--optical URL]
                  [--state DIR] [--ready-file PATH] [--clock-rate R] [--start-time ISO]
    meter-emu tables [--json] [--markdown]
    meter-emu tables show TABLE [--json] [--profile NAME|PATH] [--set ...] [--state DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from . import __version__
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
    procedures = [
        {"label": p.label, "number": n, "name": p.name, "execute": _access(p.execute),
         "provenance": p.provenance.kind, "source": p.provenance.source}
        for n, p in sorted(PROCEDURES.items())
    ]
    events = [
        {"number": n, "name": e.name, "argument": e.argument, "provenance": e.provenance.kind,
         "source": e.provenance.source}
        for n, e in sorted(EVENTS.items())
    ]
    return {"tables": tables, "procedures": procedures, "events": events}


def _print_listing(listing: dict) -> None:
    print(f"{'table':<6} {'id':>5}  {'name':<38} {'read':<24} {'write':<18} {'size':>5}  provenance")
    for t in listing["tables"]:
        print(f"{t['label']:<6} {t['id']:>5}  {t['name']:<38} {t['read']:<24} {t['write']:<18} "
              f"{t['size']:>5}  {t['provenance']}: {t['source']}")
    print()
    print(f"{'proc':<6} {'number':>6}  {'name':<38} {'execute':<24} provenance")
    for p in listing["procedures"]:
        print(f"{p['label']:<6} {p['number']:>6}  {p['name']:<38} {p['execute']:<24} "
              f"{p['provenance']}: {p['source']}")
    print()
    print(f"{'event':>5}  {'name':<38} provenance")
    for e in listing["events"]:
        print(f"{e['number']:>5}  {e['name']:<38} {e['provenance']}: {e['source']}")


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

    tables = sub.add_parser("tables", help="list the table, procedure and event catalog")
    tables.add_argument("--json", action="store_true", help="machine-readable output")
    tables.add_argument("--markdown", action="store_true",
                        help="the table list as Markdown (this is how docs/tables.md is made)")
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
    args = _parser().parse_args(argv)
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
    from .runner import RunOptions, run

    try:
        profile = load_profile(args.profile, overrides)
        options = RunOptions(optical=args.optical, mep=args.mep, state_dir=args.state,
                             ready_file=args.ready_file)
        asyncio.run(run(profile, options))
    except (ProfileError, PortUrlError, StoreError) as error:
        print(f"meter-emu: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the event loop took over the signal
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
