"""The physical quantities a meter measures, as injected through MQTT or the profile.

Each quantity is either per phase (voltage, current, angle, THD, load-side voltage) or single
(frequency, neutral current, pulse rates, temperature). A setting is a number, a list with one
item per phase, or a generator: ``constant``, ``ramp``, ``sine``, ``noise`` (deterministic from
its seed, so a replay gives the same registers) and ``csv`` (time, value) replay. A generator's
time zero is the instant it is set, or its ``start`` (ISO 8601 UTC), so a replayed day lines up
with the meter's clock. The same JSON
shape serves ``<prefix>/<meter>/set`` and the profile's ``[quantities] initial``.

``pf`` is a convenience for ``angle``: the angle by which the current lags the voltage, so
``pf = 0.95`` is 18.19 degrees (inductive, quadrant I) and ``pf = -0.95`` is -18.19 degrees
(capacitive, quadrant IV). Reverse power flow is an angle beyond 90 degrees (180: pure export).

Settings are kept in the meter's ``quantities`` subsystem (JSON, with the virtual instant each
was set), so they survive a restart and a generator continues where it was.
"""

from __future__ import annotations

import csv
import math
import random
import weakref
from dataclasses import dataclass
from typing import NamedTuple


class InjectionError(ValueError):
    """A payload that cannot be applied; the message says why (published on .../error)."""


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str
    phased: bool
    low: float
    high: float


QUANTITIES = {q.name: q for q in (
    Quantity("voltage", "V", True, 0.0, 1000.0),
    Quantity("current", "A", True, 0.0, 2000.0),
    Quantity("angle", "degree", True, -180.0, 180.0),
    Quantity("voltage_thd", "%", True, 0.0, 100.0),
    Quantity("current_thd", "%", True, 0.0, 100.0),
    Quantity("load_voltage", "V", True, 0.0, 1000.0),
    Quantity("frequency", "Hz", False, 40.0, 70.0),
    Quantity("neutral_current", "A", False, 0.0, 2000.0),
    Quantity("pulse1", "pulses/h", False, 0.0, 3.6e6),
    Quantity("pulse2", "pulses/h", False, 0.0, 3.6e6),
    Quantity("temperature", "degC", False, -60.0, 150.0),
)}
#: accepted in payloads and turned into another quantity
ALIASES = {"pf": "angle"}
GENERATORS = ("constant", "ramp", "sine", "noise", "csv")
STATE = "quantities"


class Sample(NamedTuple):
    """Every quantity at one instant (per-phase tuples have one item per phase). A named
    tuple: a constant meter's sample is rebuilt on every MQTT update (``_replace``)."""

    voltage: tuple[float, ...]
    current: tuple[float, ...]
    angle: tuple[float, ...]
    voltage_thd: tuple[float, ...]
    current_thd: tuple[float, ...]
    load_voltage: tuple[float, ...]
    frequency: float
    neutral_current: float
    pulse1: float
    pulse2: float
    temperature: float


# ---- one setting ------------------------------------------------------------------------

def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InjectionError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _in_range(quantity: Quantity, value: float, where: str) -> float:
    if not quantity.low <= value <= quantity.high:
        raise InjectionError(f"{where}: {value:g} {quantity.unit} is outside "
                             f"{quantity.low:g}..{quantity.high:g}")
    return value


def _pf_to_angle(pf: float, where: str) -> float:
    if not -1.0 <= pf <= 1.0:
        raise InjectionError(f"{where}: a power factor must be within -1..1, not {pf:g}")
    angle = math.degrees(math.acos(abs(pf)))
    return -angle if pf < 0 else angle


def _csv_points(spec: dict, where: str) -> list[list[float]]:
    if "file" in spec:
        try:
            with open(spec["file"], newline="") as handle:
                rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
        except OSError as exc:
            raise InjectionError(f"{where}: cannot read {spec['file']}: {exc.strerror}") from None
        points = []
        for n, row in enumerate(rows, 1):
            try:
                points.append([float(row[0]), float(row[1])])
            except (ValueError, IndexError):
                if n == 1:  # a header line
                    continue
                raise InjectionError(f"{where}: {spec['file']} line {n} is not 'time,value'") \
                    from None
    else:
        points = spec.get("points")
        if not isinstance(points, list) or not points:
            raise InjectionError(f"{where}: a csv generator needs 'points' [[t, value], ...] "
                                 "or 'file'")
        points = [[_number(p[0], where), _number(p[1], where)] if isinstance(p, list)
                  and len(p) == 2 else _bad_point(p, where) for p in points]
    if not points:
        raise InjectionError(f"{where}: the csv replay has no points")
    times = [t for t, _ in points]
    if times[0] < 0 or any(b <= a for a, b in zip(times, times[1:])):
        raise InjectionError(f"{where}: csv times must start at >= 0 s and increase")
    return points


def _bad_point(point, where):
    raise InjectionError(f"{where}: a csv point is [time_s, value], not {point!r}")


_GENERATOR_KEYS = {
    "constant": ({"value"}, set()),
    "ramp": ({"from", "to", "duration_s"}, {"start"}),
    "sine": ({"mean", "amplitude", "period_s"}, {"phase_deg", "start"}),
    "noise": ({"mean", "sd"}, {"seed", "step_s", "start"}),
    "csv": (set(), {"points", "file", "loop", "interpolate", "start"}),
}


def _start(value, where: str) -> float:
    """A generator's time zero: ISO 8601 UTC text or epoch seconds (default: when set)."""
    if isinstance(value, str):
        from ..profile import parse_time

        try:
            return parse_time(value).timestamp()
        except ValueError:
            raise InjectionError(f"{where}.start: {value!r} is not an ISO 8601 time") from None
    return _number(value, f"{where}.start")


def _generator(quantity: Quantity, spec: dict, where: str, alias: str | None) -> dict:
    """A checked generator spec, normalised to the quantity's own unit (pf becomes angle)."""
    kind = spec.get("type")
    if kind not in GENERATORS:
        raise InjectionError(f"{where}: generator type must be one of {', '.join(GENERATORS)}, "
                             f"not {kind!r}")
    required, optional = _GENERATOR_KEYS[kind]
    keys = set(spec) - {"type"}
    if missing := required - keys:
        raise InjectionError(f"{where}: a {kind} generator needs {', '.join(sorted(missing))}")
    if unknown := keys - required - optional:
        raise InjectionError(f"{where}: unknown generator keys {', '.join(sorted(unknown))}")
    if alias == "pf" and kind != "constant":
        raise InjectionError(f"{where}: pf takes a number or a constant; drive 'angle' instead")
    out = {"type": kind}
    if "start" in keys:
        out["start"] = _start(spec["start"], where)
    for key in keys - {"points", "file", "loop", "interpolate", "start"}:
        out[key] = _number(spec[key], f"{where}.{key}")
    if kind == "constant":
        value = out["value"]
        out["value"] = _pf_to_angle(value, where) if alias == "pf" else value
        _in_range(quantity, out["value"], where)
    elif kind == "ramp":
        if out["duration_s"] <= 0:
            raise InjectionError(f"{where}: duration_s must be > 0")
        _in_range(quantity, out["from"], where)
        _in_range(quantity, out["to"], where)
    elif kind == "sine":
        if out["period_s"] <= 0:
            raise InjectionError(f"{where}: period_s must be > 0")
        _in_range(quantity, out["mean"] - abs(out["amplitude"]), where)
        _in_range(quantity, out["mean"] + abs(out["amplitude"]), where)
    elif kind == "noise":
        if out["sd"] < 0 or out.get("step_s", 1.0) <= 0:
            raise InjectionError(f"{where}: sd must be >= 0 and step_s > 0")
        _in_range(quantity, out["mean"], where)
    else:
        points = _csv_points(spec, where)
        for _, value in points:
            _in_range(quantity, value, where)
        out["points"] = points
        out["loop"] = bool(spec.get("loop", False))
        out["interpolate"] = bool(spec.get("interpolate", False))
    return out


def _setting(quantity: Quantity, value, where: str, alias: str | None) -> dict:
    if isinstance(value, dict):
        return _generator(quantity, value, where, alias)
    number = _number(value, where)
    if alias == "pf":
        number = _pf_to_angle(number, where)
    return {"type": "constant", "value": _in_range(quantity, number, where)}


def parse(values: dict, phases: int) -> dict[str, list[dict]]:
    """Check a payload ``{quantity: setting}`` and return it as {quantity: [spec per phase]}
    (one spec for single quantities). Raises InjectionError naming the first bad item."""
    if not isinstance(values, dict):
        raise InjectionError(f"expected a JSON object of quantities, got {type(values).__name__}")
    parsed: dict[str, list[dict]] = {}
    for name, value in values.items():
        alias = name if name in ALIASES else None
        target = ALIASES.get(name, name)
        quantity = QUANTITIES.get(target)
        if quantity is None:
            known = ", ".join(sorted([*QUANTITIES, *ALIASES]))
            raise InjectionError(f"unknown quantity {name!r} (known: {known})")
        if target in parsed:
            raise InjectionError(f"{name}: given twice (pf and angle set the same quantity)")
        if isinstance(value, list):
            if not quantity.phased:
                raise InjectionError(f"{name}: a single value, not a list")
            if len(value) != phases:
                raise InjectionError(f"{name}: {len(value)} values for a {phases}-phase meter")
            parsed[target] = [_setting(quantity, v, f"{name}[{i + 1}]", alias)
                              for i, v in enumerate(value)]
        else:
            spec = _setting(quantity, value, name, alias)
            parsed[target] = [spec] * (phases if quantity.phased else 1)
    return parsed


def check_settings(values: dict, phases: int) -> None:
    """The profile's ``[quantities] initial`` check (same rules as an MQTT payload)."""
    parse(values, phases)


def parse_one(name: str, phase: int | None, text: str, phases: int) -> dict[str, list[dict]]:
    """``<prefix>/<meter>/set/<quantity>[/<phase>]``: a plain number (or a JSON generator)
    for every phase, or for phase 1..3."""
    import json

    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InjectionError(f"{name}: expected a number or a JSON generator, got "
                             f"{text[:40]!r}") from None
    if phase is None:
        return parse({name: value}, phases)
    target = QUANTITIES.get(ALIASES.get(name, name))
    if target is None or not target.phased:
        if target is None:
            return parse({name: value}, phases)  # the unknown-quantity message
        raise InjectionError(f"{name} has no phases")
    if not 1 <= phase <= phases:
        raise InjectionError(f"{name}: phase {phase} does not exist on a {phases}-phase meter")
    spec = parse({name: value}, phases)[target.name][0]
    return {target.name: {phase - 1: spec}}


# ---- state ------------------------------------------------------------------------------

def _defaults(meter) -> dict[str, dict]:
    ratings = meter.profile.ratings
    base = {name: 0.0 for name in QUANTITIES}
    base.update(voltage=float(ratings.voltage_v), frequency=float(ratings.frequency_hz),
                temperature=25.0)
    return {name: {"type": "constant", "value": value} for name, value in base.items()}


def _state(meter, now: float) -> dict:
    """The settings: {quantity: [[spec, t0] per phase]}; the profile's initial settings are
    applied when the meter first measures (t0 = that instant)."""
    own = meter.state.subsystems.get(STATE)
    if own is None:
        phases = meter.profile.meter.phases
        settings = {name: [[spec, now]] * (phases if QUANTITIES[name].phased else 1)
                    for name, spec in _defaults(meter).items()}
        for name, specs in parse(meter.profile.quantities.initial, phases).items():
            settings[name] = [[spec, now] for spec in specs]
        own = meter.subsystem(STATE, settings=settings)
        meter.dirty = True
    return own


def apply(meter, values: dict, now: float) -> list[str]:
    """Apply an MQTT/profile payload at virtual time ``now``: all of it or, on an error,
    nothing. The meter first integrates up to ``now`` with the old values. Returns the names
    of the quantities set."""
    parsed = parse(values, meter.profile.meter.phases)
    _store(meter, {name: dict(enumerate(specs)) for name, specs in parsed.items()}, now)
    return sorted(parsed)


def apply_one(meter, name: str, phase: int | None, text: str, now: float) -> list[str]:
    """Apply one quantity from its own topic (see ``parse_one``)."""
    parsed = parse_one(name, phase, text, meter.profile.meter.phases)
    if phase is None:
        parsed = {n: dict(enumerate(specs)) for n, specs in parsed.items()}
    _store(meter, parsed, now)
    return sorted(parsed)


def _store(meter, parsed: dict[str, dict[int, dict]], now: float) -> None:
    meter.advance(now)
    settings = _state(meter, now)["settings"]
    for name, by_phase in parsed.items():
        row = list(settings[name])
        for index, spec in by_phase.items():
            row[index] = [spec, now]
        settings[name] = row
    _recompile(meter, settings, parsed)
    meter.dirty = True


def _recompile(meter, settings: dict, changed) -> None:
    """Keep a constant meter's Sample after constants were set: only the changed quantities
    are built again (an MQTT flood sets constants, and the engine asks at once)."""
    cached = _COMPILED.pop(meter, None)
    if cached is None or cached[0] is None or cached[1] is not settings:
        return
    changes = {}
    for name in changed:
        quantity = QUANTITIES[name]
        low, high, items = quantity.low, quantity.high, []
        for spec, _ in settings[name]:
            if spec["type"] != "constant":
                return
            items.append(min(high, max(low, spec["value"])))  # as _build clamps
        changes[name] = tuple(items) if quantity.phased else items[0]
    _COMPILED[meter] = (cached[0]._replace(**changes), settings)


# ---- evaluation -------------------------------------------------------------------------

def _evaluate(spec: dict, t0: float, now: float) -> float:
    kind, elapsed = spec["type"], max(0.0, now - spec.get("start", t0))
    if kind == "constant":
        return spec["value"]
    if kind == "ramp":
        share = min(1.0, elapsed / spec["duration_s"])
        return spec["from"] + (spec["to"] - spec["from"]) * share
    if kind == "sine":
        angle = 2 * math.pi * elapsed / spec["period_s"] + math.radians(spec.get("phase_deg", 0))
        return spec["mean"] + spec["amplitude"] * math.sin(angle)
    if kind == "noise":
        step = int(elapsed // spec.get("step_s", 1.0))
        rng = random.Random(int(spec.get("seed", 0)) * 1_000_003 + step)
        return spec["mean"] + spec["sd"] * rng.gauss(0.0, 1.0)
    points = spec["points"]
    if spec["loop"] and points[-1][0] > 0:
        elapsed %= points[-1][0]
    previous = points[0]
    if elapsed < previous[0]:
        return previous[1]
    for point in points[1:]:
        if elapsed < point[0]:
            if spec["interpolate"]:
                share = (elapsed - previous[0]) / (point[0] - previous[0])
                return previous[1] + (point[1] - previous[1]) * share
            return previous[1]
        previous = point
    return previous[1]


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(meter, now: float):
    """(constant Sample or None, settings): a meter whose settings are all constants gets
    one Sample, built once per change, so the engine's hot path is a dictionary lookup."""
    cached = _COMPILED.get(meter)
    if cached is None:
        settings = _state(meter, now)["settings"]
        constant = all(spec["type"] == "constant" for row in settings.values()
                       for spec, _ in row)
        sample = _build(meter, settings, now) if constant else None
        cached = _COMPILED[meter] = (sample, settings)
    return cached


def _build(meter, settings: dict, now: float) -> Sample:
    values = {}
    for name, row in settings.items():
        quantity = QUANTITIES[name]
        items = tuple(min(quantity.high, max(quantity.low, spec["value"] if spec["type"]
                                             == "constant" else _evaluate(spec, t0, now)))
                      for spec, t0 in row)
        values[name] = items if quantity.phased else items[0]
    return Sample(**values)


def sample(meter, now: float) -> Sample:
    """Every quantity at virtual time ``now`` (generators clamped to the quantity's range)."""
    constant, settings = _compiled(meter, now)
    return constant if constant is not None else _build(meter, settings, now)


def is_constant(meter, now: float) -> bool:
    """True when no quantity changes by itself (every setting is a constant)."""
    return _compiled(meter, now)[0] is not None


def next_change(meter, now: float) -> float | None:
    """The next virtual instant after ``now`` where a stepwise quantity jumps (a csv point
    without interpolation) or a ramp ends: the engine splits its steps there. None when no
    such instant is ahead (continuous generators need the engine's own step limit)."""
    _, settings = _compiled(meter, now)
    nearest = None
    for row in settings.values():
        for spec, t0 in row:
            due = _next_jump(spec, t0, now)
            if due is not None and (nearest is None or due < nearest):
                nearest = due
    return nearest


def _next_jump(spec: dict, t0: float, now: float) -> float | None:
    t0 = spec.get("start", t0)
    if spec["type"] == "ramp":
        end = t0 + spec["duration_s"]
        return end if end > now else None
    if spec["type"] != "csv":
        return None
    points, elapsed = spec["points"], now - t0
    if elapsed < 0:
        return t0 + points[0][0]
    period = points[-1][0] if spec["loop"] and points[-1][0] > 0 else None
    base = 0.0
    if period is not None:
        base = (elapsed // period) * period
        elapsed -= base
    for t, _ in points:
        if t > elapsed:
            return t0 + base + t
    return t0 + base + period if period is not None else None


def settings_document(meter, now: float) -> dict:
    """The current settings as JSON (the MQTT state message shows them)."""
    out = {}
    for name, row in _state(meter, now)["settings"].items():
        specs = [spec["value"] if spec["type"] == "constant" else spec for spec, _ in row]
        out[name] = specs if QUANTITIES[name].phased else specs[0]
    return out
