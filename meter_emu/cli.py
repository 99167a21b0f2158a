"""The ``meter-emu`` command.

    meter-emu run [--profile NAME|PATH] [--set section.key=value ...] [--optical URL]
                  [--state DIR] [--ready-file PATH] [--clock-rate R] [--start-time ISO]
    meter-emu tables [--json]
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tables":
        listing = catalog_listing()
        if args.json:
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
