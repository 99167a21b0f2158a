"""Demand: the average power over the demand interval, its maximum (or minimum) with the time it
occurred, and cumulative demand across demand resets, in BT23's totals and in each tier.

What is measured. EP32 configures demand (sub-interval and multiplier, BT13.4/BT13.5 = ET42.19-20,
MEP p.114); ET48 lists the demand sources (up to BT20.4 = 8), each a maximum or a minimum
(BT22 Min/Max Flags, MEP p.203) with up to two coincident sources (BT20.5 = 16). EP32 on a meter
whose ET48 lists none fills in ``DEFAULT_SOURCES`` (designed: active and reactive power, both
directions). A demand source is a power source ID (MEP p.203-206) whose energy the engine
integrates (``ENERGY_OF``): its demand is that energy over the demand interval, in W (var, or
pulses per hour) = energy x 3600 / interval seconds. Sources with no integrated energy (an RMS
current, say) read demand 0.

Intervals. Sub-intervals end at multiples of the sub-interval from the hour of the meter clock.
The demand interval is the last ``multiplier`` sub-intervals: multiplier 1 is block demand, more
is a sliding window that moves one sub-interval at a time. A demand is computed only once the
window is full; the sub-interval EP32/EP33 ran in counts as a whole one. At each sub-interval end
the window's demand becomes the present demand (the one before it the previous demand: source IDs
88-95 and 96-103, ``source_value``), and a new maximum (minimum) is recorded with the local time
of the interval end (BT55, STIME_DATE) in the totals and in the tier in force during the
interval's last second (``tou.current_tier``), with the coincident sources' values at that
moment.

Demand reset (EP34, EP33, BP09, the calendar): each maximum is added to its cumulative demand and
cleared; the continuous cumulative demand reads cumulative + the present maximum (C12.19's
definitions); BT23's demand reset counter (byte A) is the reset count modulo 256 (OPG p.20).

Demand Overload (event 46) needs a demand threshold, which no documented table holds (BT13 has
none; ET80's average power threshold drives the relay): it is not generated.

State lives in the DEMAND billing subsystem of tables/registers.py (JSON): ``acc`` the energy of
the sub-interval in progress per demand, ``window`` the completed sub-intervals of the window,
``due`` the meter-UTC end of the sub-interval in progress, ``present``/``previous``, and
``blocks``: "total" and the tier numbers -> per demand [value or None, local time, cumulative,
coincident values]. The hot path (``accumulate``, ``next_due``, ``run_due``) reads ET48 only when
it changed (a cached, parsed copy).
"""

from __future__ import annotations

import datetime as dt
import math
import weakref

from ..tables.catalog import CATALOG, et

#: tables.registers.DEMAND: the billing subsystem this module shares with the demand procedures
STATE = "demand"
ET48 = et(48)
#: BT20.4 Number of Demands, BT20.5 Number of Coincident Values (OPG p.21)
MAX_DEMANDS = 8
MAX_COINCIDENTS = 16
NO_COINCIDENT = 0xFF
#: EP32's demands when ET48 lists none: Fwd Active W, Rev Active W, Import and Export var
DEFAULT_SOURCES = (8, 9, 10, 11)
#: demand source ID -> the energy source ID (BT16) the engine integrates for it
ENERGY_OF = {
    8: 0, 9: 1, 10: 2, 11: 3,  # W, var L1L2L3
    81: 0, 82: 1, 83: 2, 84: 3,  # the same post CT/VT (ratios 1: a direct meter)
    104: 108, 105: 109, 106: 110, 107: 111,  # Q1..Q4 var
    26: 26, 27: 27,  # pulse inputs: pulses per hour
    0: 0, 1: 1, 2: 2, 3: 3, 108: 108, 109: 109, 110: 110, 111: 111,  # energies themselves
}
PRESENT_DEMANDS = range(88, 96)  # Present Dmd 1..8 (MEP p.205)
PREVIOUS_DEMANDS = range(96, 104)  # Previous Dmd 1..8
INT32 = 2**31
TOTAL = "total"


class Demand:
    """One configured demand: its source, the energy integrated for it, maximum or minimum,
    its coincident sources."""

    __slots__ = ("source", "energy", "maximum", "coincidents")

    def __init__(self, source: int, maximum: bool, coincidents: tuple[int, ...]):
        self.source = source
        self.energy = ENERGY_OF.get(source)
        self.maximum = maximum
        self.coincidents = coincidents


class _Config:
    """The demand configuration as the hot path needs it, cached per meter and rebuilt when
    ET48's stored image or EP32/EP33's settings change."""

    __slots__ = ("key", "demands", "sub_s", "multiplier", "energy_pairs")

    def __init__(self, key, demands, sub_interval: int, multiplier: int):
        self.key = key
        self.demands = demands
        self.sub_s = sub_interval * 60
        self.multiplier = multiplier
        self.energy_pairs = tuple((i, d.energy) for i, d in enumerate(demands)
                                  if d.energy is not None)


_CONFIGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_EMPTY = _Config(None, (), 0, 0)


def _config(meter) -> _Config:
    state = meter.state.subsystems.get(STATE)
    if not state or not state.get("configured") or not state.get("sub_interval"):
        return _EMPTY
    stored = meter.state.tables.get(ET48)
    key = (state["sub_interval"], state["interval_multiplier"])
    cached = _CONFIGS.get(meter)
    if cached is not None and cached.key[0] is stored and cached.key[1] == key:
        return cached
    config = _Config((stored, key), _demands(meter), *key)
    _normalise(state, len(config.demands))
    _CONFIGS[meter] = config
    return config


def _demands(meter) -> tuple[Demand, ...]:
    """ET48's configured entries, in order, at most BT20.4 (coincidents at most BT20.5)."""
    layout = CATALOG[ET48].layout_for(meter)
    entries = layout.parse(meter.table_bytes(ET48, 0.0)).entries
    demands, coincidents = [], 0
    for entry in entries:
        if not entry.flags["configured"] or len(demands) == MAX_DEMANDS:
            continue
        extra = [s for s in entry.coincident_sources if s != NO_COINCIDENT]
        extra = extra[:max(0, MAX_COINCIDENTS - coincidents)]
        coincidents += len(extra)
        demands.append(Demand(entry.source, bool(entry.flags["maximum"]), tuple(extra)))
    return tuple(demands)


def _empty_record(coincidents: int) -> list:
    """[maximum (None: no interval since the last reset), its local time, cumulative demand,
    the coincident values at the maximum]."""
    return [None, None, 0, [0] * coincidents]


def _normalise(state: dict, count: int) -> None:
    """Every per-demand list sized for ``count`` demands (ET48 may change under a running
    configuration; a state saved before demand worked has none of the lists)."""
    def fit(items: list, make) -> list:
        return items[:count] + [make() for _ in range(count - len(items[:count]))]

    state["acc"] = fit(state.get("acc") or [], float)
    state["window"] = [fit(row, float) for row in state.get("window") or []]
    state["present"] = fit(state.get("present") or [], int)
    state["previous"] = fit(state.get("previous") or [], int)
    state.setdefault("due", None)
    blocks = state.setdefault("blocks", {})
    for key, records in blocks.items():
        blocks[key] = fit(records, lambda: _empty_record(0))


# ---- what the tables publish -------------------------------------------------------------------

def dimensions(meter) -> tuple[int, int]:
    """(BT21.4 Number of Demands, BT21.5 Number of Coincident Values): 0, 0 until EP32."""
    demands = _config(meter).demands
    return len(demands), sum(len(d.coincidents) for d in demands)


def demand_sources(meter) -> list[int]:
    """BT22 Demand Select (MEP p.203, OPG p.23): the source ID of each demand, BT21.4 of them."""
    return [d.source for d in _config(meter).demands]


def selection(meter) -> dict:
    """All of BT22's demand fields: Demand Select, Min/Max Flags (bit set = maximum), Coincident
    Select and Coincident Demand Associated (the index of its demand in Demand Select)."""
    demands = _config(meter).demands
    coincidents = [(c, i) for i, d in enumerate(demands) for c in d.coincidents]
    return dict(demand_select=[d.source for d in demands],
                min_max_flags=frozenset(i for i, d in enumerate(demands) if d.maximum),
                coincident_select=[c for c, _ in coincidents],
                coincident_demand_associated=[i for _, i in coincidents])


def et42_fields(meter) -> dict:
    """ET42's BIDN (ET42.8) and demand/coincident source lists (MEP p.112, p.116)."""
    chosen = selection(meter)
    state = meter.state.subsystems.get(STATE) or {}
    return dict(billing_interface_definition_number=state.get("bidn", 0),
                demand_sources=chosen["demand_select"],
                coincident_sources=chosen["coincident_select"])


def time_remaining(meter, now: float) -> float:
    """Seconds to the end of the sub-interval in progress (BT28's optional Time Remaining)."""
    due = next_due(meter, now)
    return 0.0 if due is None else max(0.0, due - meter.utc_seconds(now))


class Record:
    """One demand's values in a BT23 block."""

    __slots__ = ("value", "time", "cumulative", "continuous", "coincidents")

    def __init__(self, raw: list | None, coincidents: int):
        value, stamp, cumulative, values = raw or _empty_record(coincidents)
        self.value = value or 0
        self.time = _stamp_time(stamp)
        self.cumulative = cumulative
        self.continuous = (cumulative + self.value) % INT32 if value is not None else cumulative
        self.coincidents = (list(values) + [0] * coincidents)[:coincidents]


def block(meter, tier: int | None) -> list[Record]:
    """The demand records of BT23's totals (``tier`` None) or of tier ``tier`` (0-based)."""
    demands = _config(meter).demands
    state = meter.state.subsystems.get(STATE) or {}
    raw = state.get("blocks", {}).get(TOTAL if tier is None else str(tier), [])
    return [Record(raw[i] if i < len(raw) else None, len(d.coincidents))
            for i, d in enumerate(demands)]


def reset_count(meter) -> int:
    """BT23's Nbr Demand Resets: every demand reset, modulo 256 (OPG p.20)."""
    state = meter.state.subsystems.get(STATE) or {}
    return state.get("resets", {}).get("sequence", 0) & 0xFF


def source_value(meter, source_id: int) -> int | None:
    """Present (88-95) and previous (96-103) demand n, W; None for any other source ID."""
    if source_id in PRESENT_DEMANDS:
        name, index = "present", source_id - PRESENT_DEMANDS[0]
    elif source_id in PREVIOUS_DEMANDS:
        name, index = "previous", source_id - PREVIOUS_DEMANDS[0]
    else:
        return None
    values = (meter.state.subsystems.get(STATE) or {}).get(name) or []
    return values[index] if index < len(values) and _config(meter).demands else 0


# ---- configuration and resets (procedures/metering.py) -----------------------------------------

def ensure_sources(meter) -> None:
    """EP32: an ET48 with no configured entry gets ``DEFAULT_SOURCES``, maxima without
    coincident values, so ET42's 'Demand Configured' (ET48, MEP p.113) reads true."""
    layout = CATALOG[ET48].layout_for(meter)
    values = layout.parse(meter.table_bytes(ET48, 0.0))
    if any(entry.flags["configured"] for entry in values.entries):
        return
    for entry, source in zip(values.entries, DEFAULT_SOURCES):
        entry.flags = dict(configured=1, maximum=1)
        entry.source = source
        entry.coincident_sources = [NO_COINCIDENT, NO_COINCIDENT]
    meter.state.tables[ET48] = layout.build(values)
    meter.dirty = True


def reconfigure(meter, now: float) -> None:
    """A new sub-interval or multiplier (EP32, EP33): the window starts afresh with the
    sub-interval in progress at ``now``; recorded maxima and cumulative demands stay."""
    state = meter.state.subsystems.get(STATE)
    config = _config(meter)
    if state is None or config is _EMPTY:
        return
    count = len(config.demands)
    state.update(acc=[0.0] * count, window=[], present=[0] * count, previous=[0] * count,
                 due=_boundary_after(meter.utc_seconds(now), config.sub_s))
    meter.dirty = True


def reset(meter) -> None:
    """Demand reset: each maximum (minimum) goes into its cumulative demand and is cleared,
    in the totals and every tier."""
    state = meter.state.subsystems.get(STATE)
    if not state:
        return
    for records in state.get("blocks", {}).values():
        for record in records:
            if record[0] is not None:
                record[2] = (record[2] + record[0]) % INT32
            record[0] = record[1] = None
            record[3] = [0] * len(record[3])
    meter.dirty = True


# ---- the engine's hooks ------------------------------------------------------------------------

def accumulate(meter, start: float, end: float, energy: dict[int, float]) -> None:
    """Energy (by BT16 source ID, in register units) metered between virtual ``start`` and
    ``end``: it goes to the sub-interval in progress (the engine ends its steps at ``next_due``,
    so a step never spans two sub-intervals)."""
    state = meter.state.subsystems.get(STATE)
    if not state or not state.get("configured"):
        return
    pairs = _config(meter).energy_pairs
    if not pairs:
        return
    acc = state["acc"]
    for index, source in pairs:
        amount = energy.get(source)
        if amount:
            acc[index] += amount
    meter.dirty = True


def _boundary_after(utc: float, sub_s: int) -> float:
    """The first sub-interval end after meter-UTC ``utc`` (multiples of ``sub_s`` from the hour:
    ``sub_s`` divides 3600)."""
    return (math.floor(utc / sub_s) + 1) * float(sub_s)


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant the current demand sub-interval ends, or None."""
    config = _config(meter)
    if not config.demands:
        return None
    state = meter.state.subsystems[STATE]
    due = state["due"]
    if due is None or due - meter.utc_seconds(now) > config.sub_s:  # new, or the clock went back
        due = state["due"] = _boundary_after(meter.utc_seconds(now), config.sub_s)
        meter.dirty = True
    return due


def run_due(meter, now: float) -> None:
    """Close every demand sub-interval that ended by virtual time ``now``; closing the same one
    twice is impossible (``due`` moves past it)."""
    due = next_due(meter, now)
    if due is None:
        return
    utc = meter.utc_seconds(now)
    if due > utc:
        return
    config = _config(meter)
    state = meter.state.subsystems[STATE]
    sub_s = config.sub_s
    missed = int((utc - due) // sub_s)  # later boundaries also passed (the clock jumped ahead)
    _close(meter, state, config, due)
    empty = min(missed, config.multiplier)  # beyond a window's worth, all windows are empty
    for k in range(missed - empty + 1, missed + 1):
        _close(meter, state, config, due + k * sub_s)
    state["due"] = due + (missed + 1) * sub_s
    meter.dirty = True


def _close(meter, state: dict, config: _Config, at_utc: float) -> None:
    """The sub-interval ending at meter-UTC ``at_utc`` is complete."""
    window = state["window"]
    window.append(state["acc"])
    state["acc"] = [0.0] * len(config.demands)
    if len(window) > config.multiplier:
        del window[:-config.multiplier]
    elif len(window) < config.multiplier:
        return
    energies = window[0] if config.multiplier == 1 else [sum(c) for c in zip(*window)]
    scale = 3600.0 / (config.multiplier * config.sub_s)
    at = at_utc - meter.state.clock_offset
    present, previous = state["present"], state["previous"]
    from . import tou

    blocks = (_records(state, config, TOTAL),
              _records(state, config, str(tou.current_tier(meter, at - 1.0))))
    stamp = None
    for index, demand in enumerate(config.demands):
        value = 0 if demand.energy is None else _int32(round(energies[index] * scale))
        previous[index], present[index] = present[index], value
        for records in blocks:
            record = records[index]
            best = record[0]
            if best is None or (value > best if demand.maximum else value < best):
                if stamp is None:
                    stamp = _stamp(meter, at)
                record[0], record[1] = value, stamp
                record[3] = [_coincident(meter, source, at) for source in demand.coincidents]


def _records(state: dict, config: _Config, key: str) -> list:
    """The demand records of block ``key`` ("total" or a tier number), created when first
    needed."""
    records = state["blocks"].get(key)
    if records is None:
        records = state["blocks"][key] = [_empty_record(len(d.coincidents))
                                          for d in config.demands]
    return records


def _int32(value: int) -> int:
    return max(-INT32, min(INT32 - 1, value))


def _stamp(meter, at: float) -> str | None:
    """The local time (BT55) of virtual instant ``at`` to the minute, as STIME_DATE holds it."""
    local = meter.local(at)
    if not 2000 <= local.year <= 2099:  # STIME_DATE's two-digit year
        return None
    return local.replace(second=0).isoformat(timespec="minutes")


def _stamp_time(stamp: str | None) -> dt.datetime | None:
    return None if stamp is None else dt.datetime.fromisoformat(stamp)


def _coincident(meter, source: int, at: float) -> int:
    """A coincident source's value when the new maximum was measured."""
    own = source_value(meter, source)
    if own is not None:
        return own
    from . import engine

    value_of = getattr(engine, "source_value", None)
    return _int32(int(value_of(meter, source, at))) if value_of is not None else 0
