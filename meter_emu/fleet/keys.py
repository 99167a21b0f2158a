"""Per-meter keys for a fleet: derived from a fleet secret, or read from a key file a head-end
imports (``meter-emu keys export`` writes it).

Designed (no public text fixes these):

* **Derivation.** With ``[fleet] secret`` (text, or ``hex:...``), meter keys are
  ``HMAC-SHA256(secret, "meter-emu/" + name + "/" + Neuron ID's 6 bytes)`` truncated to the
  key's length: mk, pk, rk 20 bytes (C12.18 passwords), mak, mbk 16 (MEP), oma 12 for
  ``security.mode = "rc4"`` and 16 for ``"aes"``. The Neuron ID fixes a meter's keys, so they
  do not depend on the fleet's size or sharding; a head-end holding the secret derives them.
* **Key file.** CSV, ``#`` lines are comments; a header naming the columns ``meter, neuron_id,
  subnet, node, serial_number, mk, pk, rk, mak, mbk, oma`` (any order), keys in hex of exactly
  those lengths (an empty key cell keeps that meter's key from the profile or the secret). A
  row applies to the fleet meter of its ``meter`` id, else of its ``neuron_id``; meters it
  does not list keep theirs; the file wins over the secret. subnet, node and serial_number are
  for the head-end (checked for form, not matched). Rows of meters not in the fleet are
  ignored: one file for a whole fleet serves each of its shards.
* **The broadcast key.** Secure broadcasts go to many meters under one key, so a meter's
  default broadcast key stays the profile's own ``[keys] oma`` (device/keys.py reads it from
  ``Profile.template[BROADCAST_OMA]``), not its per-meter unicast key.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import sys
from functools import lru_cache

from ..device.keys import FLEET_BROADCAST_OMA as BROADCAST_OMA
from ..profile import OMA_KEY_LENGTHS, Profile, ProfileError, key_text_bytes

KEY_LENGTHS = {"mk": 20, "pk": 20, "rk": 20, "mak": 16, "mbk": 16}  # oma: by security mode
KEY_NAMES = (*KEY_LENGTHS, "oma")
COLUMNS = ("meter", "neuron_id", "subnet", "node", "serial_number", *KEY_NAMES)


def derive(secret: bytes, neuron_id: bytes, name: str, length: int) -> bytes:
    """One key of one meter (see the module docstring)."""
    message = b"meter-emu/" + name.encode() + b"/" + neuron_id
    return hmac.digest(secret, message, hashlib.sha256)[:length]


def _secret(origin: str, text: str) -> bytes:
    try:
        return key_text_bytes(text)
    except ValueError as exc:
        raise ProfileError(f"profile {origin}: fleet.secret {exc}") from None


# ---- the key file ---------------------------------------------------------------------------


class KeyFile:
    """A parsed key file: ``rows`` (one dict per meter: the text columns, key bytes or None)
    indexed by meter id and by Neuron ID (12 upper-case hex digits)."""

    def __init__(self, path: str, rows: list[dict]):
        self.path, self.rows = path, rows
        self.by_meter = {r["meter"]: r for r in rows if r["meter"]}
        self.by_neuron_id = {r["neuron_id"]: r for r in rows if r["neuron_id"]}

    def row(self, meter_id: str, neuron_id: str) -> dict | None:
        return self.by_meter.get(meter_id) or self.by_neuron_id.get(neuron_id.upper())


def read_key_file(path: str) -> KeyFile:
    """Parse ``path``; ValueError names the file, line and column of the first fault."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return _read_cached(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_cached(path: str, _mtime: int, _size: int) -> KeyFile:
    """One parse per file version: profile checks and the fleet's assignment share it."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"cannot read {path}: {reason}") from None
    header: list[str] | None = None
    rows: list[dict] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        where = f"{path} line {number}"
        if header is None:
            header = cells
            missing = [c for c in COLUMNS if c not in header]
            unknown = [c for c in header if c not in COLUMNS]
            if missing or unknown or len(set(header)) != len(header):
                what = (f"missing column {', '.join(missing)}" if missing else
                        f"unknown column {', '.join(unknown)}" if unknown else
                        "a column named twice")
                raise ValueError(f"{where}: {what} (the header names {', '.join(COLUMNS)})")
            continue
        if len(cells) != len(header):
            raise ValueError(f"{where}: {len(cells)} columns, the header has {len(header)}")
        rows.append(_row(dict(zip(header, cells)), where, number))
    if header is None:
        raise ValueError(f"{path}: no header line ({','.join(COLUMNS)})")
    for index in ("meter", "neuron_id"):
        seen: set[str] = set()
        for row in rows:
            if row[index] and row[index] in seen:
                raise ValueError(f"{path} line {row['line']}, column {index}: "
                                 f"{row[index]} is listed twice")
            seen.add(row[index])
    return KeyFile(path, rows)


def _row(cells: dict, where: str, number: int) -> dict:
    row: dict = {"line": number, "meter": cells["meter"],
                 "serial_number": cells["serial_number"]}

    def fault(column: str, message: str) -> ValueError:
        return ValueError(f"{where}, column {column}: {message}")

    nid = cells["neuron_id"].upper()
    if nid and (len(nid) != 12 or any(c not in "0123456789ABCDEF" for c in nid)):
        raise fault("neuron_id", f"{cells['neuron_id']!r} is not 12 hex digits")
    if not nid and not cells["meter"]:
        raise fault("meter", "a row needs a meter id or a Neuron ID")
    row["neuron_id"] = nid
    for column in ("subnet", "node"):
        value = cells[column]
        if value and not (value.isdigit() and int(value) <= 255):
            raise fault(column, f"{value!r} is not 0..255")
        row[column] = int(value) if value else None
    for name in KEY_NAMES:
        text = cells[name]
        if not text:
            row[name] = None
            continue
        try:
            key = bytes.fromhex(text.removeprefix("hex:"))
        except ValueError:
            raise fault(name, "is not valid hex") from None
        lengths = (KEY_LENGTHS[name],) if name != "oma" else tuple(OMA_KEY_LENGTHS.values())
        if len(key) not in lengths:
            raise fault(name, f"is {len(key)} bytes; a {name} key is "
                              f"{' or '.join(map(str, lengths))}")
        if not any(key):
            raise fault(name, "must not be all zero")
        row[name] = key
    return row


# ---- the profile's [fleet] and the fleet's keys ----------------------------------------------


def check(origin: str, d: dict) -> None:
    """Profile checks of [fleet] (ProfileError names the key): the secret's form; the key file
    parses and its OMA keys fit the security mode."""
    fleet = d["fleet"]
    if fleet["secret"]:
        _secret(origin, fleet["secret"])
    if fleet["key_file"]:
        key_file = _key_file(origin, fleet["key_file"])
        mode = d["security"]["mode"]
        for row in key_file.rows:
            oma = row["oma"]
            if oma is not None and len(oma) != OMA_KEY_LENGTHS[mode]:
                raise ProfileError(
                    f"profile {origin}: fleet.key_file {key_file.path} line {row['line']}, "
                    f"column oma: is {len(oma)} bytes, but security.mode = {mode!r} needs "
                    f"{OMA_KEY_LENGTHS[mode]}")


def _key_file(origin: str, path: str) -> KeyFile:
    try:
        return read_key_file(path)
    except ValueError as exc:
        raise ProfileError(f"profile {origin}: fleet.key_file {exc}") from None


def assign(profiles: list) -> list:
    """The fleet's profiles with each meter's own keys when [fleet] asks for them: new
    Profiles sharing every section but ``keys`` (and the template, which then holds the
    fleet's broadcast key)."""
    if not profiles:
        return profiles
    first = profiles[0]
    fleet = first.data["fleet"]
    if not fleet["secret"] and not fleet["key_file"]:
        return profiles
    secret = _secret(first.origin, fleet["secret"]) if fleet["secret"] else None
    key_file = _key_file(first.origin, fleet["key_file"]) if fleet["key_file"] else None
    lengths = {**KEY_LENGTHS, "oma": OMA_KEY_LENGTHS[first.data["security"]["mode"]]}
    template = first.template if first.template is not None else {}
    template[BROADCAST_OMA] = first.oma_key()
    assigned = []
    for profile in profiles:
        ident = profile.data["identity"]
        keys = dict(profile.data["keys"])
        if secret is not None:
            nid = bytes.fromhex(ident["neuron_id"])
            for name, length in lengths.items():
                keys[name] = "hex:" + derive(secret, nid, name, length).hex()
        row = key_file.row(profile.data["meter"]["id"], ident["neuron_id"]) if key_file else None
        if row is not None:
            for name in KEY_NAMES:
                if row[name] is not None:
                    keys[name] = "hex:" + row[name].hex()
        assigned.append(Profile(profile.origin, {**profile.data, "keys": keys}, template))
    return assigned


# ---- meter-emu keys ---------------------------------------------------------------------------


def key_rows(profiles: list) -> list[list[str]]:
    """One CSV row per meter, the keys as the meter uses them (MEP keys: their 16 bytes)."""
    rows = []
    for profile in profiles:
        ident = profile.data["identity"]
        keys = [profile.key(name)[:length].hex().upper() for name, length in KEY_LENGTHS.items()]
        rows.append([profile.data["meter"]["id"], ident["neuron_id"].upper(),
                     str(ident["subnet"]), str(ident["node"]), ident["serial_number"], *keys,
                     profile.oma_key().hex().upper()])
    return rows


def write_key_file(profiles: list, out) -> None:
    out.write("# meter-emu key file: each meter's keys, hex (optical mk/pk/rk, MEP mak/mbk, "
              "PLC oma)\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(key_rows(profiles))


def add_parser(sub) -> None:
    """Register ``meter-emu keys``."""
    keys = sub.add_parser("keys", help="per-meter keys of a fleet (a key file for a head-end)",
                          description="The keys of a fleet's meters, as a key file (CSV) a "
                                      "head-end imports and `meter-emu run --key-file` reads.")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    export = actions.add_parser("export", help="write the key file of a fleet")
    export.add_argument("--profile", default="default", help="profile name or path")
    export.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one profile value")
    export.add_argument("--count", type=int, default=1, help="meters in the fleet")
    export.add_argument("--fleet-secret", metavar="TEXT",
                        help="derive each meter's keys from TEXT (as meter-emu run)")
    export.add_argument("--key-file", metavar="PATH",
                        help="a key file the fleet runs with (its meters' keys win)")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")


def main(args) -> int:
    from ..profile import fleet_profiles, load_profile

    overrides = list(args.overrides)
    for key, value in (("secret", args.fleet_secret), ("key_file", args.key_file)):
        if value is not None:
            overrides.append(f"fleet.{key}={_toml_string(value)}")
    try:
        profile = load_profile(args.profile, overrides)
        profiles = assign(fleet_profiles(profile, args.count))
    except ProfileError as error:
        print(f"meter-emu keys: {error}", file=sys.stderr)
        return 2
    if not args.output:
        write_key_file(profiles, sys.stdout)
        return 0
    text = io.StringIO()
    write_key_file(profiles, text)
    try:
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text.getvalue())
        os.replace(tmp, args.output)
    except OSError as error:
        print(f"meter-emu keys: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"meter-emu keys: {len(profiles)} meters' keys in {args.output}", file=sys.stderr)
    return 0


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    import json

    return json.dumps(text)
