"""Meter profiles: TOML files that say who a meter is and how it starts.

``profiles/default.toml`` is both the default meter and the schema: a profile (``--profile NAME``
for ``profiles/NAME.toml``, or a path) overrides some of its values, ``--set section.key=value``
overrides one more. Unknown keys, wrong types and bad values are refused with a message that
names the key, before any port opens.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.resources
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ProfileError(ValueError):
    """A profile, or an override, that cannot be used; the message names the key."""


def _default_text() -> str:
    return importlib.resources.files("meter_emu.profiles").joinpath("default.toml").read_text()


def profile_names() -> list[str]:
    folder = importlib.resources.files("meter_emu.profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _resolve(name_or_path: str) -> tuple[str, str]:
    """Return (display name, TOML text) for a profile name or a file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return str(path), path.read_text()
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    resource = importlib.resources.files("meter_emu.profiles").joinpath(f"{name_or_path}.toml")
    if not resource.is_file():
        raise ProfileError(
            f"no profile named {name_or_path!r} (known: {', '.join(profile_names())}); "
            "give a name from profiles/ or a path to a .toml file"
        )
    return f"{name_or_path}.toml", resource.read_text()


def _parse_toml(origin: str, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {origin}: not valid TOML: {exc}") from None


def _merge(origin: str, base: dict, override: dict, prefix: str = "") -> None:
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ProfileError(f"profile {origin}: unknown key {dotted!r} (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ProfileError(f"profile {origin}: {dotted} must be a table [{dotted}]")
            if not base[key]:  # an empty table in default.toml is free-form, checked later
                base[key] = {**base[key], **value}
            else:
                _merge(origin, base[key], value, dotted + ".")
            continue
        expected = type(base[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ProfileError(
                f"profile {origin}: {dotted} must be {expected.__name__}, not {value!r}"
            )
        base[key] = value


def _parse_override(item: str) -> dict:
    """'identity.model=ABC' -> {'identity': {'model': 'ABC'}}; the value is read as a TOML
    value when it is one (numbers, booleans, quoted strings), else taken as a plain string."""
    if "=" not in item:
        raise ProfileError(f"--set {item!r}: expected section.key=value")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ProfileError(f"--set {item!r}: the key must look like section.key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    tree: dict = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        tree = {part: tree}
    return tree


def key_text_bytes(text: str) -> bytes:
    """A key as profiles and the CLI write it: ASCII text, or ``hex:`` and hex digits.
    ValueError says which form was broken."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise ValueError("is not valid hex") from None
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("must be ASCII (or hex:...)") from None


def _key_bytes(origin: str, name: str, text: str) -> bytes:
    try:
        raw = key_text_bytes(text)
    except ValueError as exc:
        raise ProfileError(f"profile {origin}: keys.{name} {exc}") from None
    if len(raw) > 20:
        raise ProfileError(f"profile {origin}: keys.{name} is {len(raw)} bytes; at most 20")
    return raw.ljust(20, b"\0")  # C12.18 passwords are 20 bytes, NUL-padded


_WIDE_DIMENSIONS = ("history_entries", "transaction_request_length")  # UINT16 fields
#: ET11.7 "Transaction Request Length" (ET52's size) of real products: 768 before firmware 3.50,
#: 896 from it (MEP p.43, p.77), 769 on the guide's own meter (its worked example MEP p.47 and
#: ET52, "a total of 769 bytes", MEP p.129); 0 leaves it to the firmware version.
TRANSACTION_REQUEST_LENGTHS = (0, 768, 769, 896)
#: PLC OMA key lengths per ET04.127 mode: the 96-bit key of RC4 and the OMA digest, or AES-128
OMA_KEY_LENGTHS = {"rc4": 12, "aes": 16}
SECURITY_MODES = {"rc4": 0, "aes": 2}  # ET04.127 (MEP p.65-66)


def _oma_key_bytes(origin: str, text: str) -> bytes:
    """[keys] oma: exactly 12 or 16 bytes, no padding (it keys the digest or AES, not a
    C12.18 password)."""
    if text.startswith("hex:"):
        digits = text[4:]
        ok = len(digits) in (24, 32) and re.fullmatch(r"[0-9A-Fa-f]*", digits) is not None
        _check(origin, ok, "keys.oma", f"must be hex: and 24 or 32 hex digits, not {text!r}")
        raw = bytes.fromhex(digits)
    else:
        _check(origin, text.isascii() and len(text) in (12, 16), "keys.oma",
               "must be 12 (RC4) or 16 (AES) ASCII characters, or hex: and 24 or 32 hex digits")
        raw = text.encode("ascii")
    _check(origin, any(raw), "keys.oma", "must not be all zero")
    return raw


def _check_security(origin: str, d: dict) -> None:
    security = d["security"]
    mode = security["mode"]
    _check(origin, mode in SECURITY_MODES, "security.mode", 'must be "rc4" or "aes"')
    oma = _oma_key_bytes(origin, d["keys"]["oma"])
    _check(origin, len(oma) == OMA_KEY_LENGTHS[mode], "keys.oma",
           f"is {len(oma)} bytes, but security.mode = {mode!r} needs "
           f"{OMA_KEY_LENGTHS[mode]} (12 for rc4, 16 for aes)")
    if mode == "aes":
        major, minor = (int(x) for x in d["identity"]["firmware_version"].split(".")[:2])
        _check(origin, (major, minor) == (3, 13) or (major, minor) >= (3, 80), "security.mode",
               f'= "aes" needs firmware 3.13 or 3.80 and later (MEP p.65); '
               f"identity.firmware_version is {d['identity']['firmware_version']}")
    _check(origin, 1 <= security["max_key_usage_count"] < 2**32,
           "security.max_key_usage_count", "must be 1..2^32-1")
    _check(origin, 0 <= d["plc"]["sequence_number"] < 2**32, "plc.sequence_number",
           "must be 0..2^32-1")
    domain = d["plc"]["domain"]
    _check(origin, re.fullmatch(r"(?:[0-9A-Fa-f]{2}){0,6}", domain) is not None
           and len(domain) // 2 in (0, 1, 3, 6), "plc.domain",
           "must be 0, 1, 3 or 6 bytes as hex digits (\"\" = the zero-length domain)")


def _check(origin: str, ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ProfileError(f"profile {origin}: {key} {message}")


#: BT60 Memory Length of a 256 KB meter (OPG p.29-30): what the load profile data may occupy.
LOAD_PROFILE_MEMORY = 233_856

_VERSION = re.compile(r"^\d\.\d{1,2}\.\d{1,2}$")


def _validate(origin: str, d: dict) -> None:
    ident = d["identity"]
    _check(origin, _topic_word(d["meter"]["id"]), "meter.id",
           "must be a non-empty name without '/', '+' or '#' (it names MQTT topics)")
    _check(origin, d["meter"]["phases"] in (1, 3), "meter.phases", "must be 1 or 3")
    _check(origin, len(ident["manufacturer"]) <= 4 and ident["manufacturer"].isascii(),
           "identity.manufacturer", "must be at most 4 ASCII characters")
    _check(origin, len(ident["model"]) <= 8 and ident["model"].isascii(),
           "identity.model", "must be at most 8 ASCII characters")
    _check(origin, ident["id_format"] in ("bcd", "char"), "identity.id_format",
           "must be \"bcd\" or \"char\"")
    for key, size in (("serial_number", 16), ("device_id", 20)):
        value = ident[key]
        if ident["id_format"] == "bcd":
            _check(origin, value.isdigit() and len(value) <= size, f"identity.{key}",
                   f"must be at most {size} decimal digits (id_format = \"bcd\")")
        else:
            _check(origin, value.isascii() and len(value) <= size, f"identity.{key}",
                   f"must be at most {size} ASCII characters")
    for key in ("hardware_version", "firmware_version"):
        value = ident[key]
        ok = bool(_VERSION.match(value))
        if ok:
            major, minor, build = (int(x) for x in value.split("."))
            ok = minor <= 99 and build <= 31
        _check(origin, ok, f"identity.{key}", "must be x.yy.zz with x 0-9, yy 0-99, zz 0-31")
    _check(origin, len(ident["utility_serial_number"]) <= 29 and
           ident["utility_serial_number"].isascii(), "identity.utility_serial_number",
           "must be at most 29 ASCII characters")
    for key, size in (("neuron_id", 6), ("program_id", 8)):
        ok = bool(re.fullmatch(r"[0-9A-Fa-f]+", ident[key])) and len(ident[key]) == size * 2
        _check(origin, ok, f"identity.{key}", f"must be {size * 2} hex digits")
    for key in ("subnet", "node"):
        _check(origin, 0 <= ident[key] <= 255, f"identity.{key}", "must be 0..255")
    _check(origin, len(ident["self_identification"]) <= 30, "identity.self_identification",
           "must be at most 30 characters")
    for key in d["keys"]:
        if key != "oma":
            _key_bytes(origin, key, d["keys"][key])
    clock = d["clock"]
    _check(origin, clock["rate"] > 0, "clock.rate", "must be > 0")
    if clock["start"] != "now":
        try:
            if not 2000 <= parse_time(clock["start"]).year <= 2098:
                raise ValueError("OSGP dates have two-digit years")
        except ValueError:
            raise ProfileError(
                f"profile {origin}: clock.start must be \"now\" or an ISO 8601 time in "
                f"2000-2098 such as 2026-01-01T00:00:00Z, not {clock['start']!r}"
            ) from None
    _check(origin, -720 <= clock["utc_offset_minutes"] <= 840, "clock.utc_offset_minutes",
           "must be within -12 h..+14 h")
    for key, value in d["dimensions"].items():
        _check(origin, 0 <= value <= 255 or key in _WIDE_DIMENSIONS, f"dimensions.{key}",
               "must be 0..255")
    dims = d["dimensions"]
    _check(origin, 1 <= dims["history_entries"] <= 4000, "dimensions.history_entries",
           "must be 1..4000")
    _check(origin, 6 <= dims["manufacturer_status_bytes"], "dimensions.manufacturer_status_bytes",
           "must be at least 6 (BT03 alarms up to offset 9)")
    _check(origin, 6 <= dims["summations"] <= 15, "dimensions.summations",
           "must be 6..15 (the BT22 summation sources this meter knows)")
    _check(origin, 1 <= dims["tiers"] <= 8, "dimensions.tiers", "must be 1..8")
    _check(origin, 12 <= dims["present_values"] <= 84, "dimensions.present_values",
           "must be 12..84")
    _check(origin, 3 <= dims["procedure_response_max"], "dimensions.procedure_response_max",
           "must be at least 3")
    _check(origin, dims["transaction_request_length"] in TRANSACTION_REQUEST_LENGTHS,
           "dimensions.transaction_request_length",
           "must be 0 (the firmware's), 768, 769 or 896: the ET52 sizes the MEP guide gives")
    lp = d["load_profile"]
    _check(origin, 1 <= lp["data_sets"] <= 4, "load_profile.data_sets", "must be 1..4")
    _check(origin, 1 <= lp["channels"] <= 16, "load_profile.channels", "must be 1..16")
    _check(origin, lp["interval_minutes"] == 1440 or (1 <= lp["interval_minutes"] <= 60
           and 60 % lp["interval_minutes"] == 0), "load_profile.interval_minutes",
           "must divide 60 (1..60) or be 1440")
    _check(origin, 1 <= lp["blocks"] <= 400, "load_profile.blocks", "must be 1..400")
    _check(origin, len(lp["sources"]) == lp["channels"]
           and all(isinstance(s, int) and 0 <= s <= 255 for s in lp["sources"]),
           "load_profile.sources", "must list one source ID (0..255) per channel")
    _check(origin, lp["mode"] in ("snapshot", "delta"), "load_profile.mode",
           'must be "snapshot" or "delta"')
    intervals = 1 if lp["interval_minutes"] == 1440 else 1440 // lp["interval_minutes"]
    interval_size = lp["channels"] // 2 + 1 + 4 * lp["channels"]
    block = 5 + (intervals + 7) // 8 + intervals * interval_size  # OPG p.35: time, status, data
    needed = lp["data_sets"] * lp["blocks"] * block
    _check(origin, needed <= LOAD_PROFILE_MEMORY, "load_profile.blocks",
           f"x channels x intervals needs {needed} bytes; the meter has {LOAD_PROFILE_MEMORY} "
           "(BT60 memory length): keep fewer blocks, channels or shorter intervals")
    for key, value in d["registers"].items():
        _check(origin, 0 <= value < 2**31, f"registers.{key}", "must be 0..2^31-1")
    _check(origin, 0 <= d["mep"]["sequence_number"] < 2**32, "mep.sequence_number",
           "must be 0..2^32-1")
    _check_security(origin, d)
    from .device.setup import check as check_setup  # the sections device/setup.py carries out

    check_setup(origin, d)
    from .fleet import keys as fleet_keys

    fleet_keys.check(origin, d)
    mqtt = d["mqtt"]
    _check(origin, _topic_word(mqtt["prefix"], allow_slash=True), "mqtt.prefix",
           "must be a non-empty MQTT topic without wildcards (+, #) or leading/trailing '/'")
    _check(origin, all(isinstance(g, str) and _topic_word(g) for g in mqtt["groups"]),
           "mqtt.groups", "must list group names without '/', '+' or '#'")
    _check(origin, mqtt["state_interval_s"] >= 0, "mqtt.state_interval_s", "must be >= 0")
    from .metering.quantities import check_settings  # the MQTT payload's own checks

    try:
        check_settings(d["quantities"]["initial"], d["meter"]["phases"])
    except ValueError as exc:
        raise ProfileError(f"profile {origin}: quantities.initial: {exc}") from None
    optical = d["optical"]
    _check(origin, optical["session_timeout_s"] > 0, "optical.session_timeout_s", "must be > 0")
    _check(origin, 64 <= optical["max_packet_size"] <= 8183, "optical.max_packet_size",
           "must be 64..8183")
    _check(origin, 1 <= optical["max_packets"] <= 255, "optical.max_packets", "must be 1..255")


def _topic_word(text: str, allow_slash: bool = False) -> bool:
    """An MQTT topic part a subscription can name exactly (no wildcards, no empty levels)."""
    levels = text.split("/") if allow_slash else [text]
    return all(level and "+" not in level and "#" not in level for level in levels) and (
        allow_slash or "/" not in text)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 -> aware UTC datetime (a trailing Z is accepted; naive means UTC)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


class _Section:
    """Read-only attribute view of one profile section. It shares the section's dict (no copy:
    the meters ask their profile for a section on every request)."""

    def __init__(self, values: dict):
        object.__setattr__(self, "__dict__", values)

    def __setattr__(self, name, value):
        raise AttributeError("profiles are read-only; use --set")


@dataclass(frozen=True)
class Profile:
    origin: str
    data: dict = field(repr=False)  # holds the keys: never in a repr
    #: one dict shared by the meters fleet_profiles made from one profile: a cache of what a
    #: fresh meter derives from its profile alone, identity aside (the same for all of them)
    template: dict | None = field(default=None, repr=False, compare=False)

    def __getattr__(self, section: str) -> Any:
        try:
            return _Section(self.data[section])
        except KeyError:
            raise AttributeError(section) from None

    def shared(self, name, compute: Callable[[], Any]) -> Any:
        """What every meter of a fleet derives alike from its profile (identity aside),
        computed once per fleet in ``template``; outside a fleet, computed on each call."""
        template = self.template
        if template is None:
            return compute()
        if name not in template:
            template[name] = compute()
        return template[name]

    def key(self, name: str) -> bytes:
        """A key from [keys] as 20 bytes, NUL-padded (optical passwords are 20 bytes; the MEP
        keys MAK/MBK use the first 16)."""
        return _key_bytes(self.origin, name, self.data["keys"][name])

    def oma_key(self) -> bytes:
        """[keys] oma, the PLC OMA key: 12 bytes (RC4, OMA digest) or 16 (AES), unpadded."""
        return _oma_key_bytes(self.origin, self.data["keys"]["oma"])

    def with_overrides(self, overrides: list[str]) -> "Profile":
        data = copy.deepcopy(self.data)
        for item in overrides:
            _merge(f"{self.origin} --set", data, _parse_override(item))
        _validate(f"{self.origin} (with --set)", data)
        return Profile(self.origin, data)


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _nth(value: str, index: int, *, keep_width: bool = True) -> str:
    """``value`` with its trailing number advanced by ``index`` (zero-padded to the same width
    when ``keep_width``); a value without one gets ``-<index + 1>`` appended."""
    match = _NUMBERED.match(value)
    if match is None:
        return f"{value}-{index + 1}"
    prefix, digits = match.groups()
    number = str(int(digits) + index)
    return prefix + (number.zfill(len(digits)) if keep_width else number)


def fleet_profiles(profile: Profile, count: int,
                   indices: range | None = None) -> list[Profile]:
    """``count`` meters made from one profile, each with its own identity; keys (unless
    ``[fleet]`` gives each meter its own, fleet/keys.py), dimensions and everything else are
    the profile's. ``indices``: only these meters of the fleet (a shard's slice); they are
    numbered as in the whole fleet, so a meter's identity does not depend on the sharding.

    The rule (meter ``i`` = 0 .. count-1; meter 0 is the profile itself):

    * meter.id: a trailing number advances by i (``meter-1`` -> ``meter-1`` ... ``meter-N``);
      an id without one gets ``-1`` ... ``-N`` appended;
    * identity.serial_number, device_id, utility_serial_number: the trailing number advances
      by i, keeping its width (``...12345678`` -> ``...12345679``);
    * identity.neuron_id: the 48-bit number + i;
    * a commissioned profile (subnet and node set) numbers the nodes on from its own address:
      node + i, continuing on the next subnet after node 127.

    A value that overflows its field is refused (ProfileError) like any bad profile value.
    Fleet meters share every other section of the profile (read-only), so a meter's profile
    costs a few hundred bytes, not a copy of the whole profile.
    """
    if count < 1:
        raise ProfileError(f"--count {count}: at least one meter")
    indices = range(count) if indices is None else indices
    if count == 1 and indices == range(1):
        return [profile]
    base = profile.data
    ident = base["identity"]
    if int(ident["neuron_id"], 16) + count - 1 >= 1 << 48:
        raise ProfileError(f"--count {count}: Neuron IDs from {ident['neuron_id']} pass "
                           "FFFFFFFFFFFF")

    def member(index: int) -> Profile:
        data = dict(base)
        data["meter"] = {**base["meter"], "id": _nth(base["meter"]["id"], index,
                                                     keep_width=False)}
        data["identity"] = new = dict(ident)
        for key in ("serial_number", "device_id", "utility_serial_number"):
            new[key] = _nth(ident[key], index) if index else ident[key]
        new["neuron_id"] = f"{int(ident['neuron_id'], 16) + index:012X}"
        if ident["subnet"] and ident["node"]:
            slot = (ident["subnet"] - 1) * 127 + (ident["node"] - 1) + index
            new["subnet"], new["node"] = slot // 127 + 1, slot % 127 + 1
        return Profile(f"{profile.origin} (fleet meter {index + 1} of {count})", data, template)

    template: dict = {}
    last = member(count - 1)  # numbers only grow: if the last meter's fit, every meter's do
    _validate(last.origin, last.data)
    return [member(index) for index in indices]


def load_profile(name_or_path: str = "default", overrides: list[str] = ()) -> Profile:
    base = _parse_toml("default.toml", _default_text())
    origin = "default.toml"
    if name_or_path != "default":
        origin, text = _resolve(name_or_path)
        _merge(origin, base, _parse_toml(origin, text))
    _validate(origin, base)
    profile = Profile(origin, base)
    return profile.with_overrides(list(overrides)) if overrides else profile
