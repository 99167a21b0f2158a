"""Power quality: sags, swells, over-current, phase loss, frequency extremes, THD and voltage
unbalance, measured against ET09's thresholds (MEP p.67-77) and recorded for ET09 and the
alternate event log (ET79).

The engine calls ``check(meter, now, sample, duration)`` after each step with the sample the
meter measured over the ``duration`` seconds ending at ``now`` (never during an outage). A
condition starts at the beginning of the step whose sample shows it, becomes an event once it has
lasted its time threshold (the event is stamped at that exact instant, not at the step end), and
ends only when the quantity is back inside its threshold by a hysteresis margin, so a quantity
hovering at a threshold makes one event, not many.

The conditions (rated voltage and maximum current: ET04.60 / ET04.58; phases ET04 marks inactive
are not watched):

* sag1: voltage below (100 - Sag1 Threshold) % of rated, for Sag1/Surge Time Threshold minutes +
  Sag1/Surge Threshold Seconds. ET09 counts it per phase with its start (UTC) and its lowest
  voltage (mV). Events: 91 Power Quality Event Detected (argument 100) and BT03 Low Loss
  Potential (45, argument the phase bit) when it qualifies, 100 Voltage Sag (the phase bit) when
  it ends; with ET09's Early Sag/Surge Event option (firmware 4.21) also when it qualifies
  (MEP p.76-77). A Sag1 Threshold of 0 % switches sag1 off.
* surge: voltage above (100 + Surge Threshold) % of rated, same times; 91 (101) when it
  qualifies, 101 Voltage Swell when it ends (and when it qualifies with the early option).
* sag2 (firmware 4.10): below (100 - Sag2 Threshold) % for Sag2 Time Threshold seconds; ET09's
  sag2 records only (the default 255 % never occurs).
* over-current: current above (100 + Over-Current Threshold) % of the maximum current for
  Over Current Time Threshold seconds (10 s before firmware 3.10: MEP p.71's definition); ET09
  counts it; events 102 Over Current (phase bit) and 91 (102) when it qualifies.
* phase loss: voltage below ET04's Phase Loss Threshold % of rated for ET55's Phase Loss
  Threshold Seconds: ET09's phase loss bit (while it lasts), count and time. Event 68 is the
  engine's (metering/engine.py).
* THD (firmware 3.10): V-THD, I-THD and VA-THD per phase above the THD record's threshold (0.1 %;
  0 = off) for its time threshold: ET09 counts the event with its start, its maximum and when,
  and its average; event 93 THD Event Detected (argument 1 V, 2 I, 3 VA) when it qualifies, and
  98 Maximum Value for Voltage THD (argument 0.01 %) once per V-THD event whose THD beats every
  earlier event's. VA-THD (designed): the distortion share of the apparent power,
  sqrt((1 + V-THD^2)(1 + I-THD^2)) - 1, which is what S = V I makes of the two.
* unbalance (3 phases): the spread of the phase voltages (max - min) above 10 % of their mean,
  all phases present: BT03 Unbalanced Voltage, event 104, at once (no time threshold).
* frequency: the lowest and highest frequency (mHz) with their time, from every sample.

Power Up Quality Hold Time (ET09, firmware 3.10): nothing is recorded that long after an outage.
An outage ends every condition in progress at its start (qualified ones as if they ended).
EP45 (procedures/metering.py) clears the records, not the settings or the conditions in progress.

Designed values, in one place: ``HYSTERESIS_PERCENT`` (of rated voltage and maximum current),
``THD_HYSTERESIS`` (percentage points), ``UNBALANCE_PERCENT`` / ``UNBALANCE_END_PERCENT``.

ET09's settings are kept here (``store_settings``) and the table is rendered from this state
(tables/logs.py), so a step never parses a table: the thresholds are computed once and cached
until ET09, ET04 or ET55 change. A step whose sample is the very object of the last one (the
engine reuses a constant sample) with nothing waiting for a time threshold costs a few
comparisons.
"""

from __future__ import annotations

import datetime as dt
import math
import weakref

from ..device import conditions
from ..events import (MAX_VOLTAGE_THD, OVER_CURRENT, VOLTAGE_SAG, VOLTAGE_SWELL)
from ..tables.catalog import CATALOG, et

STATE = "power_quality"
ET04, ET09, ET55 = et(4), et(9), et(55)

#: a condition ends only when the quantity is this far back inside its threshold (percent of
#: the rated voltage or of the maximum current)
HYSTERESIS_PERCENT = 1.0
#: the same for THD, in percentage points of THD
THD_HYSTERESIS = 0.5
#: voltage unbalance: (max - min) / mean of the phase voltages, percent (event catalog: 10 %)
UNBALANCE_PERCENT = 10.0
UNBALANCE_END_PERCENT = 9.0
#: over-current must last this long on firmware without ET09's time threshold (MEP p.71)
OVER_CURRENT_SECONDS = 10
#: ET55 Phase Loss Threshold Seconds where the field is missing (its default, MEP p.150)
PHASE_LOSS_SECONDS = 10

PQ_EVENT = 91  # Power Quality Event Detected
THD_EVENT = 93  # THD Event Detected
SAG, SURGE, SAG2, OVER, LOSS = "sag1", "surge", "sag2", "over_current", "phase_loss"
THD_KINDS = ("v", "i", "va")  # ET09's THD records: V-THD, I-THD, VA-THD


# ---- thresholds (cached) -----------------------------------------------------------------------

class _Limits:
    """ET09's thresholds in volts, amperes, percent THD and seconds, for one meter."""

    def __init__(self, meter):
        values = settings(meter)
        info = meter.system_info()
        rated, amps = float(info.rated_voltage), float(info.max_current)
        slack_v, slack_a = rated * HYSTERESIS_PERCENT / 100, amps * HYSTERESIS_PERCENT / 100
        inactive = info.inactive_phases
        phases = range(meter.profile.meter.phases)
        self.voltage_phases = tuple(p for p in phases if not inactive[f"voltage_l{p + 1}"])
        self.current_phases = tuple(p for p in phases if not inactive[f"current_l{p + 1}"])
        self.hold = values.get("power_up_quality_hold_time", 0)
        self.early = bool(values.get("options", {}).get("early_sag_surge_event", 0))
        sag_time = values["sag1_surge_time_threshold"] * 60 \
            + values.get("sag1_surge_threshold_seconds", 0)
        sag, surge = values["sag1_threshold"], values["surge_threshold"]
        #: name -> (begins when beyond, ends when back within, seconds, low side?) or None
        self.voltage = {
            SAG: (rated * (1 - sag / 100), rated * (1 - sag / 100) + slack_v, sag_time, True)
            if sag else None,
            SURGE: (rated * (1 + surge / 100), rated * (1 + surge / 100) - slack_v, sag_time,
                    False) if surge else None,
            LOSS: (rated * info.phase_loss_threshold / 100,
                   rated * info.phase_loss_threshold / 100 + slack_v, _phase_loss_seconds(meter),
                   True),
        }
        if "sag2_threshold" in values and values["sag2_threshold"] < 100:
            level = rated * (1 - values["sag2_threshold"] / 100)
            self.voltage[SAG2] = (level, level + slack_v, values["sag2_time_threshold"], True)
        over = amps * (1 + values["over_current_threshold"] / 100)
        self.over = (over, over - slack_a,
                     values.get("over_current_time_threshold", OVER_CURRENT_SECONDS), False)
        self.thd = [None] * 3
        for kind, (seconds, threshold) in enumerate(values.get("thd_records", [])):
            if threshold:
                self.thd[kind] = (threshold / 10, threshold / 10 - THD_HYSTERESIS, seconds, False)
        self.unbalance = meter.profile.meter.phases == 3 and len(self.voltage_phases) == 3


def _phase_loss_seconds(meter) -> int:
    def read() -> int:
        values = CATALOG[ET55].layout_for(meter).parse(meter.table_bytes(ET55, 0.0))
        return values.get("phase_loss_threshold_seconds", PHASE_LOSS_SECONDS)

    if ET55 in meter.state.tables:  # a client wrote it: this meter's own
        return read()
    return meter.profile.shared("phase_loss_seconds", read)


class _Watch:
    """Per meter, not state: the thresholds, the tables they came from, the last sample looked
    at, whether a condition waits for its time threshold, the outage count last seen."""

    __slots__ = ("limits", "et04", "et55", "sample", "pending", "outages", "latest")

    def __init__(self, meter):
        self.limits = _limits(meter)
        self.et04 = _et04_settings(meter.state.tables.get(ET04))
        self.et55 = meter.state.tables.get(ET55)
        self.sample = None
        self.pending = True
        self.outages = None
        self.latest = None  # the engine's newest outage record (off UTC, on UTC, seconds)


_WATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _limits(meter) -> _Limits:
    """The meter's limits; shared by the meters of a fleet whose ET09 and ET55 are the
    profile's and whose ET04 is alike past the identity fields (sequence number, Neuron ID,
    subnet/node: bytes 0-11), which the limits do not read."""
    tables = meter.state.tables
    if ET55 in tables or (meter.state.subsystems.get(STATE) or {}).get("settings"):
        return _Limits(meter)
    raw = tables.get(ET04)
    key = ("limits", None if raw is None else raw[_ET04_IDENTITY_END:])
    return meter.profile.shared(key, lambda: _Limits(meter))


_ET04_IDENTITY_END = 12


def _et04_settings(raw: bytes | None) -> bytes | None:
    """ET04 without ET04.0, the PLC sequence number, which moves with every PLC request and
    changes no threshold: rebuilding the limits on each request would cost more than the read."""
    return None if raw is None else raw[4:]


def _watch(meter) -> _Watch:
    watch = _WATCHES.get(meter)
    tables = meter.state.tables
    if (watch is None or watch.et55 is not tables.get(ET55)
            or watch.et04 != _et04_settings(tables.get(ET04))):
        watch = _WATCHES[meter] = _Watch(meter)
    return watch


def forget(meter) -> None:
    """ET09's settings or records changed: look at the next sample afresh."""
    _WATCHES.pop(meter, None)


# ---- settings (ET09's "H" fields) ---------------------------------------------------------------

def settings(meter) -> dict:
    """ET09's settings as the meter uses them: the table's defaults for this firmware, then what
    a client wrote; ``thd_records`` as [time threshold, threshold] per THD record."""
    from ..tables.logs import ET09_SETTINGS, THD_SETTINGS  # the tables build on this module

    names = meter.profile.shared(
        "et09_names", lambda: {sub.name for sub in CATALOG[ET09].layout_for(meter).subcons})
    values = {name: value for name, value in ET09_SETTINGS.items() if name in names}
    if "thd_records" in names:
        values["thd_records"] = [[THD_SETTINGS["thd_time_threshold"],
                                  THD_SETTINGS["thd_threshold"]]] * 3
    saved = (meter.state.subsystems.get(STATE) or {}).get("settings", {})
    values.update({name: value for name, value in saved.items() if name in values})
    return values


def store_settings(meter, values: dict) -> None:
    """A client's ET09 write (checked by the table): the settings it gives."""
    _state(meter)["settings"] = _plain(values)
    forget(meter)
    meter.dirty = True


def _plain(value):
    """construct Containers and lists as JSON-able dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- state --------------------------------------------------------------------------------------

def _state(meter) -> dict:
    """Records (created on first use), the conditions in progress (``active``: key -> since,
    qualified, extreme ...), and the settings."""
    state = meter.state.subsystems.get(STATE)
    if state is None:
        state = meter.subsystem(STATE, active={})
    return state


def _phase_records(state: dict, name: str, width: int) -> list:
    """Per phase records of ``name``: [count, most recent (UTC), mV] or the like."""
    records = state.get(name)
    if records is None:
        records = state[name] = [[0] + [None] * (width - 1) for _ in range(3)]
    return records


def _thd_records(state: dict) -> list:
    """[kind][phase] -> [count, event start UTC, max 0.1 %, its UTC, average 0.1 %]."""
    records = state.get("thd")
    if records is None:
        records = state["thd"] = [[[0, None, 0, None, 0] for _ in range(3)] for _ in range(3)]
    return records


def clear(meter) -> None:
    """EP45: the records and statistics go; the settings, the conditions in progress (a phase
    loss stays a phase loss) and the maximum V-THD for event 98 stay. ET09's outage records are
    the engine's: only those after now are shown."""
    from . import engine

    state = _state(meter)
    for name in (SAG, SURGE, SAG2, OVER, LOSS, "freq", "thd"):
        state.pop(name, None)
    state["cleared"] = max((r[1] for r in engine.outage_records(meter)["outages"]), default=0)
    state["short_base"] = engine.outage_records(meter)["short_outages"]
    for entry in state["active"].values():
        entry["q"] = entry["q"] and 2  # 2: qualified before the clear (not counted again)
    forget(meter)
    meter.dirty = True


# ---- the engine's hook --------------------------------------------------------------------------

def check(meter, now: float, sample, duration: float) -> None:
    """``sample`` held for ``duration`` seconds ending at virtual time ``now``."""
    watch = _watch(meter)
    outages = meter.state.registers.get("power_outage_count")
    if sample is watch.sample and not watch.pending and outages == watch.outages:
        return
    if outages != watch.outages:  # an outage (or EP44): the newest record may be new
        from . import engine

        watch.outages = outages
        watch.latest = next(iter(engine.outage_records(meter)["outages"]), None)
    _evaluate(meter, watch, now, sample, now - duration)


def _evaluate(meter, watch: _Watch, now: float, sample, start: float) -> None:
    limits = watch.limits
    state = _state(meter)
    offset = meter.state.clock_offset
    if watch.latest is not None:
        off, on, _ = watch.latest
        if on > state.get("seen", 0):  # an outage since the last look ended what began before
            state["seen"] = on
            _end_all(meter, state, off - offset)
        hold_end = on - offset + limits.hold
        if on - offset <= start < hold_end:
            if now <= hold_end:  # still holding: look again next step
                watch.sample, watch.pending = None, True
                return
            start = hold_end
    watch.sample = sample
    meter.dirty = True
    _frequency(meter, state, sample.frequency, start)
    for phase in limits.voltage_phases:
        volts = sample.voltage[phase]
        for name, limit in limits.voltage.items():
            if limit is not None:
                _watch_phase(meter, state, name, phase, volts, limit, start, now)
    for phase in limits.current_phases:
        _watch_phase(meter, state, OVER, phase, sample.current[phase], limits.over, start, now)
    for kind, limit in enumerate(limits.thd):
        if limit is None:
            continue
        for phase in _thd_phases(limits, kind):
            value = _thd_value(sample, kind, phase)
            _watch_phase(meter, state, THD_KINDS[kind], phase, value, limit, start, now)
    if limits.unbalance:
        _watch_unbalance(meter, state, limits, sample.voltage, start, now)
    _end_alarms(meter, state)
    watch.pending = any(not entry["q"] for entry in state["active"].values())


def _thd_phases(limits: _Limits, kind: int) -> tuple[int, ...]:
    if kind == 0:
        return limits.voltage_phases
    if kind == 1:
        return limits.current_phases
    return tuple(p for p in limits.voltage_phases if p in limits.current_phases)


def _thd_value(sample, kind: int, phase: int) -> float:
    if kind == 0:
        return sample.voltage_thd[phase]
    if kind == 1:
        return sample.current_thd[phase]
    v, i = sample.voltage_thd[phase] / 100, sample.current_thd[phase] / 100
    return (math.sqrt((1 + v * v) * (1 + i * i)) - 1) * 100


def _beyond(value: float, level: float, low: bool) -> bool:
    return value < level if low else value > level


def _advance(active: dict, key: str, value: float, limit, start: float, now: float):
    """One condition over the step [start, now]: (entry, qualified at, ended at), instants or
    None. ``limit`` = (begin level, end level, seconds, low side)."""
    begin, end, seconds, low = limit
    entry = active.get(key)
    if entry is None:
        if not _beyond(value, begin, low):
            return None, None, None
        entry = active[key] = dict(since=start, q=0, x=value, xt=start, v=value, t=start,
                                   sum=0.0)
    elif not _beyond(value, end, low):  # back inside: it ended when this sample began
        del active[key]
        qualified = None
        if not entry["q"] and start - entry["since"] >= seconds:
            entry["q"], qualified = 1, entry["since"] + seconds
        _integrate(entry, start)
        return entry, qualified, start if entry["q"] else None
    _integrate(entry, start)
    entry["v"] = value
    if value < entry["x"] if low else value > entry["x"]:
        entry["x"], entry["xt"] = value, start
    if not entry["q"] and now - entry["since"] >= seconds:
        entry["q"] = 1
        return entry, entry["since"] + seconds, None
    return entry, None, None


def _integrate(entry: dict, until: float) -> None:
    """The value held since ``entry['t']`` counts up to ``until`` (THD averages)."""
    if until > entry["t"]:
        entry["sum"] += entry["v"] * (until - entry["t"])
        entry["t"] = until


def _watch_phase(meter, state, name: str, phase: int, value: float, limit, start, now) -> None:
    entry, qualified, ended = _advance(state["active"], f"{name}:{phase}", value, limit,
                                       start, now)
    if entry is None:
        return
    if qualified is not None:
        _qualified(meter, state, name, phase, entry, qualified)
    elif entry["q"] == 1:
        _update(meter, state, name, phase, entry)
    if ended is not None:
        _ended(meter, state, name, phase, entry, ended)


def _qualified(meter, state, name: str, phase: int, entry: dict, at: float) -> None:
    """A condition lasted its time threshold at virtual instant ``at``: count it, log it."""
    bit = 1 << phase
    since = meter.utc_seconds(entry["since"])
    if name in (SAG, SURGE, SAG2):
        record = _phase_records(state, name, 3)[phase]
        record[0] = (record[0] + 1) & 0xFFFF
        record[1], record[2] = since, round(entry["x"] * 1000)
        if name == SAG2:
            return
        event = VOLTAGE_SAG if name == SAG else VOLTAGE_SWELL
        _power_quality_event(meter, event.number, at)
        if name == SAG:
            conditions.begin(meter, "low_loss_potential", at, bit)
        if _watch(meter).limits.early:
            meter.log_event(event.number, bit, at)
    elif name == OVER:
        record = _phase_records(state, OVER, 1)[phase]
        record[0] = (record[0] + 1) & 0xFFFFFFFF
        meter.log_event(OVER_CURRENT.number, bit, at)
        _power_quality_event(meter, OVER_CURRENT.number, at)
    elif name == LOSS:
        record = _phase_records(state, LOSS, 2)[phase]
        record[0] = (record[0] + 1) & 0xFFFF
        record[1] = since
    else:
        kind = THD_KINDS.index(name)
        record = _thd_records(state)[kind][phase]
        record[:] = [(record[0] + 1) & 0xFFFF, since, _tenths(entry["x"]),
                     meter.utc_seconds(entry["xt"]), _tenths(_average(entry, at))]
        meter.raise_alarm("thd_state_changed")
        meter.log_event(THD_EVENT, kind + 1, at)
        hundredths = min(0xFFFF, round(entry["x"] * 100))
        if kind == 0 and hundredths > state.get("vthd_max", 0):
            state["vthd_max"] = hundredths
            meter.log_event(MAX_VOLTAGE_THD.number, hundredths, at)


def _update(meter, state, name: str, phase: int, entry: dict) -> None:
    """A qualified condition goes on: its extreme may have moved."""
    if name in (SAG, SURGE, SAG2):
        record = _phase_records(state, name, 3)[phase]
        record[2] = round(entry["x"] * 1000)
    elif name in THD_KINDS:
        record = _thd_records(state)[THD_KINDS.index(name)][phase]
        record[2], record[3] = _tenths(entry["x"]), meter.utc_seconds(entry["xt"])


def _ended(meter, state, name: str, phase: int, entry: dict, at: float) -> None:
    """A qualified condition ended at virtual instant ``at`` (its records stay cleared if EP45
    cleared them meanwhile: ``q`` 2)."""
    if name in (SAG, SURGE):
        event = VOLTAGE_SAG if name == SAG else VOLTAGE_SWELL
        meter.log_event(event.number, 1 << phase, at)
    if entry["q"] != 1:
        return
    _update(meter, state, name, phase, entry)
    if name in THD_KINDS:
        record = _thd_records(state)[THD_KINDS.index(name)][phase]
        record[4] = _tenths(_average(entry, at))


def _average(entry: dict, at: float) -> float:
    span = at - entry["since"]
    if span <= 0:
        return entry["v"]
    held = entry["sum"] + entry["v"] * max(0.0, at - entry["t"])
    return held / span


def _tenths(percent: float) -> int:
    return max(0, min(0xFFFF, round(percent * 10)))


def _power_quality_event(meter, number: int, at: float) -> None:
    """Event 91 with the power quality event's number; BT03's bit while any such condition
    lasts."""
    meter.raise_alarm("power_quality_event")
    meter.log_event(PQ_EVENT, number, at)


def _watch_unbalance(meter, state, limits: _Limits, voltages, start: float, now: float) -> None:
    loss_level = limits.voltage[LOSS][0]
    if min(voltages) < loss_level:  # a missing phase is a phase loss, not an unbalance
        spread = 0.0
    else:
        mean = sum(voltages) / len(voltages)
        spread = (max(voltages) - min(voltages)) / mean * 100 if mean else 0.0
    limit = (UNBALANCE_PERCENT, UNBALANCE_END_PERCENT, 0, False)
    entry, qualified, ended = _advance(state["active"], "unbalance", spread, limit, start, now)
    if qualified is not None:
        conditions.begin(meter, "unbalanced_voltage", qualified)
    if ended is not None:
        conditions.end(meter, "unbalanced_voltage")


def _end_alarms(meter, state: dict) -> None:
    """BT03 bits whose conditions are all over."""
    qualified = {key.split(":")[0] for key, entry in state["active"].items() if entry["q"]}
    if SAG not in qualified:
        conditions.end(meter, "low_loss_potential")
    if not qualified & {SAG, SURGE, OVER}:
        conditions.end(meter, "power_quality_event")
    if not qualified & set(THD_KINDS):
        conditions.end(meter, "thd_state_changed")


def _end_all(meter, state: dict, at: float) -> None:
    """The supply went at virtual instant ``at``: every condition that began before ends
    there."""
    for key, entry in list(state["active"].items()):
        if entry["since"] > at:
            continue
        del state["active"][key]
        if key == "unbalance":
            conditions.end(meter, "unbalanced_voltage")
            continue
        name, phase = key.split(":")
        if entry["q"]:
            _integrate(entry, at)
            _ended(meter, state, name, int(phase), entry, at)
    _end_alarms(meter, state)


def _frequency(meter, state: dict, hertz: float, at: float) -> None:
    millihertz = round(hertz * 1000)
    record = state.get("freq")
    utc = meter.utc_seconds(at)
    if record is None:
        state["freq"] = [millihertz, utc, millihertz, utc]
        return
    if millihertz < record[0]:
        record[0], record[1] = millihertz, utc
    if millihertz > record[2]:
        record[2], record[3] = millihertz, utc


# ---- ET09's view --------------------------------------------------------------------------------

def _stamp(seconds) -> dt.datetime | None:
    """UTC seconds as an LTIME_DATE value (None for none, or outside its 2000-2099 years)."""
    if seconds is None:
        return None
    moment = dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc).replace(tzinfo=None)
    return moment if 2000 <= moment.year <= 2099 else None


def render_into(meter, values, now: float) -> None:
    """Fill ET09's parsed defaults ``values`` with the settings and the records."""
    from . import engine

    state = meter.state.subsystems.get(STATE) or {}
    current = settings(meter)
    for name, value in current.items():
        if name != "thd_records":
            values[name] = value
    for record, (seconds, threshold) in zip(values.get("thd_records", []),
                                             current.get("thd_records", [])):
        record.thd_time_threshold, record.thd_threshold = seconds, threshold
    outages = engine.outage_records(meter)
    shown = [r for r in outages["outages"] if r[1] > state.get("cleared", 0)]
    for slot, (off, on, seconds) in zip(values.power_outage_records, shown):
        slot.update(dict(power_on_time=_stamp(on), reset_cause=engine.RESET_POWER_FAILURE,
                         power_off_time=_stamp(off), power_off_duration=int(seconds)))
    values.short_outage_count = max(0, outages["short_outages"] - state.get("short_base", 0))
    for name, event_field, count_field, volt_field in (
            (SAG, "most_recent_sag1_event", "sag1_events", "most_recent_sag1_voltage"),
            (SURGE, "most_recent_surge_event", "surge_events", "most_recent_surge_voltage"),
            (SAG2, "most_recent_sag2_event", "sag2_events", "most_recent_sag2_voltage")):
        for phase, (count, since, millivolts) in enumerate(state.get(name, [])):
            if f"l{phase + 1}_{count_field}" in values:
                values[f"l{phase + 1}_{count_field}"] = count
                values[f"l{phase + 1}_{event_field}"] = _stamp(since)
                values[f"l{phase + 1}_{volt_field}"] = millivolts or 0
    for phase, (count,) in enumerate(state.get(OVER, [])):
        values[f"l{phase + 1}_over_current_events"] = count
    for phase, (count, since) in enumerate(state.get(LOSS, [])):
        values[f"l{phase + 1}_phase_loss_events"] = count
        values[f"l{phase + 1}_most_recent_phase_loss_event"] = _stamp(since)
    active = state.get("active", {})
    values.phase_loss = {f"phase_l{p + 1}_loss": int(bool(active.get(f"{LOSS}:{p}", {})
                                                          .get("q"))) for p in range(3)}
    if state.get("freq"):
        low, low_at, high, high_at = state["freq"]
        values.update(dict(min_frequency=low, min_freq_date_time=_stamp(low_at),
                           max_frequency=high, max_freq_date_time=_stamp(high_at)))
    for kind, rows in enumerate(state.get("thd", []) if "thd_records" in values else []):
        for phase, (count, since, top, top_at, average) in enumerate(rows):
            entry = active.get(f"{THD_KINDS[kind]}:{phase}")
            if entry is not None and entry["q"]:
                average = _tenths(_average(entry, now))
            values.thd_records[kind].thd_event_records[phase].update(dict(
                event_count=count, event_timestamp=_stamp(since), max_thd=top,
                max_thd_timestamp=_stamp(top_at), average_thd=average))
