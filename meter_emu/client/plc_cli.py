"""``meter-emu client ...``: a head-end on the command line, over CN/IP or a serial PLC network
interface (the U50 link, host role: ``--serial PATH``) (client/plc.py).

    meter-emu client discover     [--cnip URL | --serial PATH | --ready-file PATH] [--key KEY] ...
    meter-emu client read TABLE            --meter M [--offset N --count N] [--raw]
    meter-emu client write TABLE HEX       --meter M [--offset N]
    meter-emu client procedure PROC [HEX]  --meter M
    meter-emu client load-profile          --meter M
    meter-emu client commission            --meter M --subnet S --node N
    meter-emu client firmware-broadcast IMAGE --group G --meter M [--meter M ...] [--switch]
    meter-emu client status | wink         --meter M

``--meter``: a Neuron ID (12 hex digits), SUBNET/NODE, or a meter's id from the ready file
(or the key file); ``--via R1,R2``: repeaters (SUBNET/NODE or Neuron IDs), first hop first.
Tables are printed decoded with the catalog's layout (``field = value``, bytes as hex);
``--raw`` prints hex.

Keys: ``--key`` (one OMA key for every meter), else ``--key-file`` (each ``--meter``'s own OMA
key from a fleet's key file, fleet/keys.py; its length gives the mode unless ``--mode``), else
the default profile's. Secure broadcasts use ``--broadcast-key``, else ``--key``, else the
default profile's key: a fleet's broadcast key is its profile's ``[keys] oma``. Discovery is
not secured: ``discover`` only checks that a key file given reads.

A sharded fleet's ready file (``--shards K``: a ``shards`` list, each with its ports and
meters) sends the request to the CN/IP (else serial) port of the shard holding the
``--meter``s.

Exit codes: 0 done; 1 the meter refused (the one-line error names the meter, the response
code and the request); 2 a usage error; 3 no answer (no meter, lost link).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


class _Usage(Exception):
    """A command line the user must fix: exit code 2 with the message."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("connection")
    where.add_argument("--cnip", metavar="URL", help="the CN/IP endpoint, udp://HOST:PORT")
    where.add_argument("--serial", metavar="PATH",
                       help="a PLC network interface on this serial port or pty (U50 link, "
                            "115200 8N1), e.g. what `meter-emu run --serial-plc pty` prints")
    where.add_argument("--ready-file", metavar="PATH",
                       help="a `meter-emu run --ready-file` document: its cnip (else "
                            "serial_plc) port (and the "
                            "meters' ids for --meter)")
    where.add_argument("--key", metavar="KEY",
                       help="the OMA key as profiles write it (12 or 16 ASCII characters, or "
                            "hex:...); default: the default profile's keys.oma")
    where.add_argument("--key-file", metavar="FILE",
                       help="each --meter's own OMA key from this key file (`meter-emu keys "
                            "export`); --key wins when given")
    where.add_argument("--mode", choices=["rc4", "aes"],
                       help="PLC security mode (default: the default profile's)")
    where.add_argument("--encrypt", action="store_true", help="encrypt the requests' data")
    where.add_argument("--meter", action="append", default=[], metavar="M",
                       help="Neuron ID (12 hex digits), SUBNET/NODE or a ready-file meter id")
    where.add_argument("--via", metavar="R1,R2", default="",
                       help="repeaters on the way to the meter, first hop first")
    where.add_argument("--domain", metavar="HEX", default="",
                       help="the domain ID of the meters and the head-end (0, 1, 3 or 6 bytes "
                            "hex; default: the zero-length domain)")
    where.add_argument("--address", metavar="SUBNET/NODE",
                       help="the head-end's own address (default: subnet 255, a random node, "
                            "so that a command run right after another is not taken for its "
                            "repetition)")
    where.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="seconds one message may take, retries included (default 10)")
    where.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def add_parser(sub) -> None:
    """Register ``client`` on the top-level sub-parsers."""
    common = _common()
    client = sub.add_parser(
        "client", help="a head-end: talk OSGP to meters over CN/IP or a serial NI",
        description="A head-end / data concentrator over CN/IP or a serial PLC network "
                    "interface (U50): discover and commission "
                    "meters, read and write tables, run procedures, read the load profile, "
                    "broadcast firmware, query the 14908.1 node.",
        epilog="Exit codes: 0 done, 1 refused by the meter, 2 usage error, 3 no answer.")
    actions = client.add_subparsers(dest="client_command", required=True)

    discover = actions.add_parser("discover", parents=[common],
                                  help="find the meters (Automated Device Discovery)")
    discover.add_argument("--duration", type=float, default=5.0, metavar="S",
                          help="how long to collect answers (default 5 s)")

    read = actions.add_parser("read", parents=[common], help="read a table, decoded")
    read.add_argument("table", help="BT01, ET04, or a wire ID such as 1 or 2052")
    read.add_argument("--offset", type=int, help="partial read: first byte")
    read.add_argument("--count", type=int, help="partial read: bytes")
    read.add_argument("--raw", action="store_true", help="print the bytes as hex")

    write = actions.add_parser("write", parents=[common], help="write a table")
    write.add_argument("table")
    write.add_argument("data", help="the bytes, hex")
    write.add_argument("--offset", type=int, help="partial write at this offset")

    proc = actions.add_parser("procedure", parents=[common], help="run a procedure")
    proc.add_argument("procedure", help="BP10, EP27, or a number (2048 + n for EP n)")
    proc.add_argument("params", nargs="?", default="", help="parameters, hex")

    actions.add_parser("load-profile", parents=[common],
                       help="read the load profile (BT61/BT62/BT63, then BT64 blocks)"
                       ).add_argument("--data-set", type=int, default=1, choices=[1, 2, 3, 4])

    commission = actions.add_parser("commission", parents=[common],
                                    help="commission a meter (Fast Commission Message)")
    commission.add_argument("--subnet", type=int, required=True)
    commission.add_argument("--node", type=int, required=True)

    fw = actions.add_parser("firmware-broadcast", parents=[common],
                            help="an image to a broadcast group, then unicast fill-in")
    fw.add_argument("image", help="an image file (meter-emu firmware build)")
    fw.add_argument("--group", type=lambda t: int(t, 0), required=True,
                    help="the EP27 broadcast group ID (set up beforehand)")
    fw.add_argument("--switch", action="store_true", help="EP10 on each meter afterwards")
    fw.add_argument("--broadcast-key", metavar="KEY",
                    help="the broadcast OMA key (the fleet profile's keys.oma; default: --key, "
                         "else the default profile's)")

    actions.add_parser("status", parents=[common], help="14908.1 query status of a meter")
    actions.add_parser("wink", parents=[common], help="make a meter wink")


# ---- helpers --------------------------------------------------------------------------------


def _ready(args) -> dict:
    if not args.ready_file:
        return {}
    try:
        return json.loads(Path(args.ready_file).read_text())
    except (OSError, ValueError) as error:
        raise _Usage(f"--ready-file {args.ready_file}: {error}") from None


def _where(args, ready: dict) -> tuple[str, str]:
    """("cnip", URL) or ("serial", PATH): the flags first, then the ready file's ports (of
    the shard holding the meters, in a sharded fleet's ready file)."""
    if args.cnip and args.serial:
        raise _Usage("give --cnip or --serial, not both")
    if args.cnip or args.serial:
        return ("cnip", args.cnip) if args.cnip else ("serial", args.serial)
    ports = _shard(args, ready).get("ports") or ready.get("ports", {})
    if ports.get("cnip") not in (None, "off"):
        return "cnip", ports["cnip"]
    serial = ports.get("serial_plc")
    if serial and not serial.startswith("host:"):
        return "serial", serial
    raise _Usage("where is the meter? give --cnip udp://HOST:PORT, --serial PATH or "
                 "--ready-file PATH")


def _shard(args, ready: dict) -> dict:
    """The entry of ``ready["shards"]`` holding every ``--meter`` (shard 0 when they are given
    by address, or for discovery); {} for a ready file of one process."""
    shards = ready.get("shards")
    if not shards:
        return {}
    ids = {nid.upper(): meter for meter, nid in (ready.get("neuron_ids") or {}).items()}
    found = []
    for text in args.meter:
        meter = text if any(text in s.get("meters", ()) for s in shards) else \
            ids.get(text.upper())
        entry = next((s for s in shards if meter in s.get("meters", ())), None)
        if entry is not None and entry not in found:
            found.append(entry)
    if len(found) > 1:
        raise _Usage("the --meter meters are in different shards ("
                     + ", ".join(str(s.get("shard")) for s in found)
                     + "): one shard's meters per command")
    return found[0] if found else shards[0]


def _key_text(text: str, flag: str, mode: str | None = None) -> bytes:
    from ..profile import key_text_bytes

    try:
        key = key_text_bytes(text)
    except ValueError as error:
        raise _Usage(f"{flag} {error}") from None
    wanted = {"rc4": (12,), "aes": (16,), None: (12, 16)}[mode]
    if len(key) not in wanted:
        raise _Usage(f"{flag} has {len(key)} bytes; {mode or 'an OMA key'} needs "
                     f"{' or '.join(map(str, wanted))}")
    return key


def _key(args, own: dict) -> tuple[bytes, str]:
    """The client's key and mode; ``own``: the --meters' keys from the key file (their
    length gives the mode when --mode does not)."""
    from ..profile import OMA_KEY_LENGTHS, load_profile

    profile = load_profile()
    lengths = {len(key) for key in own.values()}
    if args.key is None and not args.mode and lengths:
        if len(lengths) > 1:
            raise _Usage(f"--key-file {args.key_file}: the meters' OMA keys have different "
                         "lengths (12: rc4, 16: aes); give --mode and one mode's meters")
        mode = next(m for m, n in OMA_KEY_LENGTHS.items() if n in lengths)
    else:
        mode = args.mode or profile.security.mode
    if args.key is None:
        return profile.oma_key(), mode
    return _key_text(args.key, "--key", mode), mode


def _key_file(args):
    """The parsed --key-file (fleet/keys.py KeyFile), or None."""
    if not args.key_file:
        return None
    from ..fleet.keys import read_key_file

    try:
        return read_key_file(args.key_file)
    except ValueError as error:
        raise _Usage(f"--key-file {error}") from None


def _own_keys(args, key_file, texts: list[str], refs: list) -> dict:
    """{MeterRef.key: OMA key} of the --meters from the key file (matched by meter id, Neuron
    ID or subnet/node); a meter it does not list is a usage error."""
    if key_file is None or args.key is not None:
        return {}
    by_address = {(r["subnet"], r["node"]): r for r in key_file.rows if r["subnet"]}
    own = {}
    for text, ref in zip(texts, refs):
        row = key_file.by_meter.get(text)
        if row is None and ref.neuron_id is not None:
            row = key_file.by_neuron_id.get(ref.neuron_id.hex().upper())
        if row is None and ref.address is not None:
            row = by_address.get((ref.address.subnet, ref.address.node))
        if row is None or row["oma"] is None:
            raise _Usage(f"--meter {text}: {key_file.path} has no OMA key for it (give --key, "
                         "or the key file of this fleet)")
        own[ref.key] = row["oma"]
    return own


def _resolve_meter(text: str, ready: dict, key_file=None):
    """A ready-file id (via its Neuron ID map, when the fleet writes one) or a key-file id,
    else an address."""
    from .plc import meter_ref

    nids = ready.get("neuron_ids") or ready.get("plc", {}).get("neuron_ids") or {}
    if text in nids:
        return meter_ref(nids[text])
    row = key_file.by_meter.get(text) if key_file is not None else None
    if row is not None and row["neuron_id"]:
        return meter_ref(row["neuron_id"])
    try:
        return meter_ref(text)
    except ValueError as error:
        known = f" (the ready file's meters: {', '.join(list(nids)[:5])} ...)" if nids else ""
        raise _Usage(f"--meter {error}{known}") from None


def _meters(args, ready: dict, key_file=None, *, required: bool = True) -> list:
    refs = [_resolve_meter(text, ready, key_file) for text in args.meter]
    if required and not refs:
        raise _Usage("which meter? give --meter NEURON_ID or SUBNET/NODE")
    return refs


def _table(text: str) -> int:
    from ..cli import parse_table_name

    try:
        return parse_table_name(text)
    except ValueError as error:
        raise _Usage(str(error)) from None


def _procedure(text: str) -> int:
    name = text.strip().upper()
    if name[:2] in ("BP", "EP") and name[2:].isdigit():
        return int(name[2:]) + (2048 if name[:2] == "EP" else 0)
    if name.isdigit():
        return int(name)
    raise _Usage(f"{text!r} is not a procedure: use BP10, EP27 or a number")


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Usage(f"{what} {text!r} is not hex") from None


def decoded_lines(table: int, data: bytes, model) -> list[str]:
    """``field = value`` lines for a whole table parsed with the catalog's layout (bytes as
    hex, records and arrays flattened to dotted names); hex when the layout does not fit."""
    from ..tables import CATALOG
    from ..tables.describe import plain

    spec = CATALOG.get(table)
    if spec is None:
        return [data.hex()]
    try:
        layout = spec.layout_for(model)
        if layout.sizeof() != len(data):
            raise ValueError(f"{len(data)} bytes, the layout has {layout.sizeof()}")
        values = plain(layout.parse(data))
    except Exception as error:  # noqa: BLE001 - a table this model sizes differently
        return [f"# not decoded ({error})", data.hex()]
    lines: list[str] = []
    _flatten(values, "", lines)
    return lines


def _flatten(value, name: str, lines: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{name}.{key}" if name else key, lines)
    elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        for index, item in enumerate(value):
            _flatten(item, f"{name}[{index}]", lines)
    else:
        lines.append(f"{name or 'value'} = {value}")


# ---- commands ---------------------------------------------------------------------------------


def main(args) -> int:
    from .firmware import DownloadError
    from .optical import ClientError
    from .plc import NoAnswer

    try:
        return _run(args)
    except _Usage as error:
        print(f"meter-emu client: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NoAnswer as error:
        print(f"meter-emu client: {error}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except (ClientError, DownloadError) as error:
        print(f"meter-emu client: {error}", file=sys.stderr)
        return EXIT_REFUSED


def _run(args) -> int:
    from ..lon.frame import SubnetNode
    from .plc import HeadEnd, PlcClient, head_end_config, parse_address

    ready = _ready(args)
    how, url = _where(args, ready)
    key_file = _key_file(args)
    command = args.client_command
    meters = _meters(args, ready, key_file, required=command != "discover")
    meter_keys = (_own_keys(args, key_file, args.meter, meters) if command != "discover"
                  else {})
    if args.via:
        meters = [ref.via(*args.via.split(",")) for ref in meters]
    key, mode = _key(args, meter_keys)
    broadcast = getattr(args, "broadcast_key", None)
    broadcast_key = _key_text(broadcast, "--broadcast-key", mode) if broadcast else None
    domain = _hex(args.domain, "--domain")
    if len(domain) not in (0, 1, 3, 6):
        raise _Usage("--domain is 0, 1, 3 or 6 bytes")
    import random

    try:
        own = parse_address(args.address or f"255/{random.randint(1, 127)}")
    except ValueError as error:
        raise _Usage(f"--address {error}") from None
    if not isinstance(own, SubnetNode):
        raise _Usage("--address is SUBNET/NODE")
    config = head_end_config(domain, own.subnet, own.node)
    try:
        if how == "serial":
            head_end = HeadEnd.over_serial(url, config, timeout=args.timeout)
        else:
            head_end = HeadEnd.over_cnip(url, config, timeout=args.timeout)
    except ConnectionError as error:
        print(f"meter-emu client: --serial {url}: {error}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except (ValueError, OSError) as error:
        raise _Usage(f"--{how} {url}: {error}") from None
    client = PlcClient(head_end, key, mode=mode, encrypt=args.encrypt, timeout=args.timeout,
                       keys=meter_keys, broadcast_key=broadcast_key)
    try:
        return _COMMANDS[command](client, args, meters)
    finally:
        head_end.close()


def _discover(client, args, meters) -> int:
    found = client.discover(duration=args.duration)
    if args.json:
        json.dump([{"neuron_id": m.neuron_id.hex().upper(), **_jsonable(m.info),
                    "strength_db": m.strength_db, "margin_db": m.margin_db, "hops": m.hops}
                   for m in found], sys.stdout, indent=2)
        print()
        return EXIT_OK
    for m in found:
        extra = " ".join(f"{k}={_text(v)}" for k, v in m.info.items()
                         if k not in ("strength_db", "margin_db", "hops"))
        link = "  ".join(f"{name}={'-' if value is None else f'{value:g} dB'}"
                         for name, value in (("strength", m.strength_db),
                                             ("margin", m.margin_db)))
        print(f"{m.neuron_id.hex().upper()}  {link}  hops={m.hops}  {extra}".rstrip())
    print(f"{len(found)} meter(s) found", file=sys.stderr)
    return EXIT_OK


def _text(value) -> str:
    return value.hex().upper() if isinstance(value, (bytes, bytearray)) else str(value)


def _jsonable(info: dict) -> dict:
    return {k: _text(v) if isinstance(v, (bytes, bytearray)) else v for k, v in info.items()}


def _read(client, args, meters) -> int:
    from ..tables.catalog import label

    table = _table(args.table)
    if (args.offset is None) != (args.count is None) and args.count is None:
        raise _Usage("a partial read needs --count (and --offset, default 0)")
    for ref in meters:
        data = client.read_table(ref, table, args.offset, args.count)
        if len(meters) > 1:
            print(f"# meter {ref}")
        if args.raw or args.offset is not None or args.count is not None:
            print(data.hex())
            continue
        if args.json:
            from ..tables import CATALOG
            from ..tables.describe import plain

            values = plain(CATALOG[table].layout_for(client.model_meter()).parse(data))
            json.dump({"table": label(table), "values": values}, sys.stdout, indent=2)
            print()
            continue
        print(f"# {label(table)} ({len(data)} bytes) from meter {ref}")
        print("\n".join(decoded_lines(table, data, client.model_meter())))
    return EXIT_OK


def _write(client, args, meters) -> int:
    table, data = _table(args.table), _hex(args.data, "data")
    for ref in meters:
        client.write_table(ref, table, data, args.offset)
        print(f"meter {ref}: wrote {len(data)} bytes")
    return EXIT_OK


def _procedure_cmd(client, args, meters) -> int:
    number, params = _procedure(args.procedure), _hex(args.params, "parameters")
    worst = EXIT_OK
    for ref in meters:
        result, data = client.run_procedure(ref, number, params)
        print(f"meter {ref}: result {result}" + (f" data {data.hex()}" if data else ""))
        worst = worst if result == 0 else EXIT_REFUSED
    return worst


def _load_profile(client, args, meters) -> int:
    import datetime as dt

    for ref in meters:
        lp = client.read_load_profile(ref, args.data_set)
        g = lp.geometry
        print(f"# meter {ref}: data set {args.data_set}: {len(lp.blocks)} of {g.blocks} "
              f"blocks, {g.intervals} intervals of {g.interval_minutes} min, {g.channels} "
              f"channels (sources {list(g.sources)})")
        for block in lp.blocks:
            end = block.end_time
            day = end.isoformat() if isinstance(end, (dt.datetime, dt.date)) else str(end)
            for n, interval in enumerate(block.intervals):
                values = list(interval.channel_values)
                if any(values):
                    print(f"{day} #{n:03d} " + " ".join(str(v) for v in values))
    return EXIT_OK


def _commission(client, args, meters) -> int:
    for ref in meters:
        new = client.commission(ref, args.subnet, args.node)
        print(f"meter {ref}: commissioned as {new.address.subnet}/{new.address.node}")
    return EXIT_OK


def _firmware(client, args, meters) -> int:
    try:
        image = Path(args.image).read_bytes()
    except OSError as error:
        raise _Usage(f"cannot read {args.image}: {error.strerror}") from None
    report = client.broadcast_firmware(args.group, image, meters, switch=args.switch,
                                       progress=lambda text: print(text, file=sys.stderr))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        for meter, entry in report.items():
            print(f"meter {meter}: " + " ".join(f"{k}={v}" for k, v in entry.items()))
    return EXIT_OK


def _status(client, args, meters) -> int:
    for ref in meters:
        status = _jsonable(dataclasses.asdict(client.status(ref)))
        if args.json:
            json.dump({"meter": str(ref), **status}, sys.stdout, indent=2)
            print()
        else:
            print(f"# meter {ref}")
            for key, value in status.items():
                print(f"{key} = {value}")
    return EXIT_OK


def _wink(client, args, meters) -> int:
    for ref in meters:
        client.wink(ref)
        print(f"meter {ref}: winked")
    return EXIT_OK


_COMMANDS = {"discover": _discover, "read": _read, "write": _write,
             "procedure": _procedure_cmd, "load-profile": _load_profile,
             "commission": _commission, "firmware-broadcast": _firmware, "status": _status,
             "wink": _wink}
