"""The metering engine: the injected quantities integrated on the virtual clock.

``advance(meter, now)`` integrates from the engine's last virtual instant to ``now`` in steps. A
step ends at ``now``, at the next jump of a stepwise quantity (``quantities.next_change``), at the
step cap while a quantity varies continuously, and at the next boundary of each hook module
(TOU, demand, load profile recorder, and control.py: the relays, prepay and maximum power). For
each step [t0, t1] the engine computes the powers, adds the energy to the registers in the tier
in force, hands it to demand (and to prepay), lets power quality look at what was measured, and
then lets the hooks carry out what is due at t1.

Powers (per phase, the current lagging the voltage by ``angle``): P = V I cos(angle),
Q = V I sin(angle), S = V I. A polyphase meter registers the vector sum: the totals are the sums
of the phase powers, and the energy registers follow the total's quadrant (I: P >= 0, Q >= 0;
II: P < 0, Q >= 0; III: P < 0, Q < 0; IV: P >= 0, Q < 0). The apparent power total is the
arithmetic sum of the phases' V I. While the disconnect contactor is open the load current is 0.

Integration: constant quantities are integrated exactly, in one step between boundaries (the
fast path: the powers are computed once per change of the settings); so are stepwise csv replays
(split at their jumps) and noise (split where it draws its next value). Continuously varying
ones use the midpoint rule with steps of at most ``MAX_STEP_S`` and a fiftieth of the shortest
sine period, so a sine's integral is right to better than 0.1 % (the midpoint rule's error on a
sine is (w h)^2 / 24 of its amplitude = 0.07 % at h = period / 50).

Outages: every phase below half the rated voltage (the profile's, ET04.60), or the MQTT trigger
``outage``. The meter meters nothing then (no energy, no current or power in BT28, no power
quality; BT28 shows the low voltage, or none when the trigger cut the supply);
BT23's outage count goes up at the start and its outage seconds grow during the outage; events
1 Primary Power Down (with BT03 Power Failure, which stays set until EP03 clears it) and 2 Primary
Power Up (reset cause 3, power failure); the load profile interval gets its power-fail flag.
Each outage is recorded for ET09/ET10 (UTC, MEP p.68-69: long when it lasts at least ET09's
Long Outage Duration Threshold, short when shorter but at least 250 ms) and ET81 (local time,
MEP p.185-186).

Conditions from the quantities, each logged once per occurrence (its BT03 bit follows the
condition, device/conditions.py): 48 Reverse Rotation while the net active power is negative,
68 Phase Loss while one or two phases of a 3-phase meter are below half the rated voltage and
another is up, 74 Current on Missing Phase while such a phase carries current, 107 Load Side
Voltage while the contactor is open and a load-side voltage is injected (EP07 feature 4).
Phase inversion (69) and phase rotation changed (83) stay trigger-only (metering/triggers.py):
the quantities have no per-phase voltage angle, so the phase order cannot be measured.

Virtual time going backwards (a restart with a fixed ``--start-time``) restarts the engine at
``now`` without integrating; a meter clock change (BP10, EP16) moves no virtual time, so it adds
or loses no energy.
"""

from __future__ import annotations

import math

from ..device import conditions, relay
from ..events import POWER_DOWN, POWER_UP, by_alarm
from . import control, demand, power_quality, quantities, recorder, registers, tou

STATE = "metering"
#: the longest step while a quantity varies continuously, seconds
MAX_STEP_S = 60.0
#: steps per period of the fastest sine (midpoint rule: 0.07 % error on its amplitude)
STEPS_PER_PERIOD = 50
#: a phase below this share of the rated voltage has no supply (outage, phase loss)
SUPPLY_FRACTION = 0.5
#: a load-side voltage above this share of the rated voltage is reported (event 107; designed)
LOAD_SIDE_FRACTION = 0.1
#: outages shorter than this are no outages for ET09/ET10 (MEP p.68: "at least 250ms")
MOMENTARY_OUTAGE_S = 0.25
#: outage records kept (ET04.53 Max Power Outages Recorded is a UINT8)
OUTAGE_RECORDS = 255
#: ET09/ET10 reset cause of a power failure (MEP p.69)
RESET_POWER_FAILURE = 3
#: BT28's present values by firmware (OPG p.53-57): (end, version) = values before index ``end``
#: exist from firmware ``version`` on
_PRESENT_FIRMWARE = ((18, (0, 0)), (22, (2, 12)), (26, (3, 10)), (41, (3, 50)), (55, (3, 70)),
                     (72, (4, 0)), (75, (4, 10)), (84, (4, 30)))
PRESENT_COUNT = 84
_HOOKS = (tou, demand, recorder, control)


# ---- state ----------------------------------------------------------------------------------

def _own(meter) -> dict:
    own = meter.state.subsystems.get(STATE)
    if own is None:
        own = meter.subsystem(
            STATE,
            last=None,  # the virtual instant integrated up to
            outage_start=None,  # virtual instant of the outage in progress
            outage_start_utc=None,  # its meter UTC
            outage_trigger=False,  # the MQTT trigger 'outage' is on
            reverse=False,  # net active power negative (event 48 logged)
            phase_loss=0,  # phase bits below half the rated voltage (event 68 logged)
            missing_current=0,  # phase bits with current and no voltage (event 74 logged)
            load_side=0,  # phase bits with load-side voltage while open (event 107 logged)
            outages=[],  # every outage: [off utc, on utc, seconds], newest last
            long_outages=[],  # the long ones (ET10)
            short_outages=0,  # count of short ones (ET09)
        )
        meter.dirty = True
    return own


class _Powers:
    """What one sample means for the meter: per-phase and total powers, the quadrant and the
    register rates (units per hour by BT16 source ID)."""

    __slots__ = ("voltage", "current", "frequency", "p", "q", "s", "total_p", "total_q",
                 "total_s", "quadrant", "rates", "measured")

    def __init__(self, sample, relay_open: bool, outage: bool, cut: bool):
        """``outage``: the meter is unpowered and meters nothing; ``cut``: by the trigger, so
        there is no voltage either (in a voltage outage it shows the low voltage it sees)."""
        phases = len(sample.voltage)
        zero = (0.0,) * phases
        voltage = zero if cut else sample.voltage
        current = zero if outage or relay_open else sample.current
        self.frequency = 0.0 if cut else sample.frequency
        p, q, s = [], [], []
        for v, i, angle in zip(voltage, current, sample.angle):
            apparent = v * i
            radians = math.radians(angle)
            p.append(_clean(apparent * math.cos(radians), apparent))
            q.append(_clean(apparent * math.sin(radians), apparent))
            s.append(apparent)
        self.voltage, self.current = voltage, current
        self.p, self.q, self.s = tuple(p), tuple(q), tuple(s)
        self.total_p, self.total_q, self.total_s = sum(p), sum(q), sum(s)
        self.quadrant = quadrant(self.total_p, self.total_q)
        rates = {}
        if self.total_p > 0:
            rates[0] = self.total_p
        elif self.total_p < 0:
            rates[1] = -self.total_p
        if self.total_q > 0:
            rates[2] = self.total_q
        elif self.total_q < 0:
            rates[3] = -self.total_q
        if self.total_q:
            rates[107 + self.quadrant] = abs(self.total_q)  # 108..111: Q1..Q4 varh
        if not outage:
            if sample.pulse1:
                rates[26] = sample.pulse1
            if sample.pulse2:
                rates[27] = sample.pulse2
        self.rates = rates
        #: the sample as the meter measures it (power quality sees this)
        self.measured = sample if current is sample.current and voltage is sample.voltage \
            else sample._replace(voltage=voltage, current=current,
                                 neutral_current=0.0 if outage or relay_open
                                 else sample.neutral_current)


def _clean(value: float, scale: float) -> float:
    """cos(90 deg) is 6e-17, not 0: drop what is only rounding."""
    return 0.0 if abs(value) <= 1e-12 * scale else value


def quadrant(p: float, q: float) -> int:
    """The quadrant (1..4) of active power ``p`` and reactive power ``q``."""
    if p >= 0:
        return 1 if q >= 0 else 4
    return 2 if q >= 0 else 3


class _Cache:
    """Per-meter values that are not state: the last sample's powers (a constant sample is the
    same object until the settings change), which powers the conditions were checked for, and
    profile constants."""

    __slots__ = ("key", "powers", "checked", "rated_v", "registration_a", "busy", "present_key",
                 "present", "firmware")

    def __init__(self, meter):
        ratings = meter.profile.ratings
        self.rated_v = float(ratings.voltage_v)
        self.registration_a = ratings.registration_current_ma / 1000.0
        self.key = self.powers = self.checked = self.present_key = self.present = None
        self.busy = False
        self.firmware = None


def _cache(meter) -> _Cache:
    cache = getattr(meter, "_metering_cache", None)
    if cache is None:
        cache = meter._metering_cache = _Cache(meter)
    return cache


def _powers_for(own, cache, sample, relay_open: bool) -> _Powers:
    outage = own["outage_start"] is not None
    cut = outage and own["outage_trigger"]
    key = cache.key
    if key is not None and key[0] is sample and key[1] == relay_open and key[2] == outage \
            and key[3] == cut:
        return cache.powers
    cache.key = (sample, relay_open, outage, cut)
    cache.powers = _Powers(sample, relay_open, outage, cut)
    return cache.powers


# ---- the loop -------------------------------------------------------------------------------

def advance(meter, now: float) -> None:
    """Integrate everything the meter measures up to virtual time ``now``."""
    cache = _cache(meter)
    if cache.busy:  # a hook read a table while the engine was stepping: it is already there
        return
    own = _own(meter)
    last = own["last"]
    if last is None or now < last:  # first run, or a restart with an earlier start time
        # a fleet starts its meters' engines lazily: energy counts from the meter's start
        # however late its first advance comes (fleet/timed.py)
        begin = meter.started if last is None and meter.started is not None else now
        last = own["last"] = begin = min(begin, now)
        if own["outage_start"] is not None:  # an outage goes on; its seconds count from here
            own["outage_start"] = min(own["outage_start"], begin)
        meter.dirty = True
        _check(meter, own, cache, quantities.sample(meter, begin), begin)
        tou.run_due(meter, begin)  # the calendar's state from the first read on
        if begin == now:
            return
    if now == last:
        tou.run_due(meter, now)  # a BT53/BT54 write at this very instant takes effect at once
        return
    cache.busy = True
    try:
        while last < now:
            constant = quantities.is_constant(meter, last)
            end = _step_end(meter, last, now, constant)
            _step(meter, own, cache, last, end, constant)
            last = end
    finally:
        cache.busy = False


def _step_end(meter, start: float, now: float, constant: bool) -> float:
    end = now
    if not constant:
        limit = _varying_end(meter, start)
        if start < limit < end:
            end = limit
        jump = quantities.next_change(meter, start)
        if jump is not None and start < jump < end:
            end = jump
    offset = meter.state.clock_offset
    for hook in _HOOKS:
        due = hook.next_due(meter, start)
        if due is not None:
            at = _virtual(due, offset)
            if start < at < end:
                end = at
    return end


def _virtual(utc: float, offset: float) -> float:
    """The virtual instant of meter-UTC ``utc``, never a hair before it (a hook compares the
    meter UTC of the step end with its boundary)."""
    at = utc - offset
    while at + offset < utc:
        at = math.nextafter(at, math.inf)
    return at


def _varying_end(meter, start: float) -> float:
    """Where a step from ``start`` must end while something varies: after MAX_STEP_S and a
    fiftieth of the shortest sine period while a quantity varies continuously (sine, ramp,
    interpolated csv), at the next value of a noise generator (it holds each value for step_s
    seconds). Stepwise csv replays are split at their jumps by ``quantities.next_change``."""
    end = math.inf
    settings = meter.state.subsystems.get(quantities.STATE, {}).get("settings", {})
    for row in settings.values():
        for spec, since in row:
            kind = spec["type"]
            if kind == "sine":
                end = min(end, start + min(MAX_STEP_S, spec["period_s"] / STEPS_PER_PERIOD))
            elif _gliding(spec, since, start):
                end = min(end, start + MAX_STEP_S)
            elif kind == "noise":
                hold = spec.get("step_s", 1.0)
                end = min(end, since + (math.floor((start - since) / hold) + 1) * hold)
    return end


def _gliding(spec: dict, since: float, start: float) -> bool:
    """A ramp or interpolated csv replay still changing at ``start`` (once finished, it holds
    its last value)."""
    if spec["type"] == "ramp":
        return start < since + spec["duration_s"]
    if spec["type"] == "csv" and spec["interpolate"]:
        return spec["loop"] or start < since + spec["points"][-1][0]
    return False


def _step(meter, own, cache, t0: float, t1: float, constant: bool) -> None:
    span = t1 - t0
    sample = quantities.sample(meter, t0 if constant else (t0 + t1) / 2)
    relay_open = relay.contactor_open(meter)
    powers = _powers_for(own, cache, sample, relay_open)
    if cache.checked is not powers:
        powers = _check(meter, own, cache, sample, t0, relay_open)
    if own["outage_start"] is not None:
        amounts = {4: span}
    else:
        hours = span / 3600.0
        amounts = {source: rate * hours for source, rate in powers.rates.items()}
    tier = tou.current_tier(meter, t0)
    registers.add(meter, tier, amounts)
    engaged = control.engaged(meter)
    if engaged:
        control.metered(meter, t0, t1, powers, tier, amounts)
    demand.accumulate(meter, t0, t1, amounts)
    if own["outage_start"] is None:  # an unpowered meter measures no power quality
        power_quality.check(meter, t1, powers.measured, span)
    own["last"] = t1
    tou.run_due(meter, t1)
    demand.run_due(meter, t1)
    recorder.run_due(meter, t1)
    if engaged:
        control.run_due(meter, t1)


def powers_at(meter, at: float) -> _Powers:
    """The powers of the sample at virtual time ``at`` with the contactor as it is now (the
    control hook prices the coming step with them)."""
    return _powers_for(_own(meter), _cache(meter), quantities.sample(meter, at),
                       relay.contactor_open(meter))


# ---- conditions -----------------------------------------------------------------------------

def _check(meter, own, cache, sample, at: float, relay_open: bool | None = None) -> _Powers:
    """Start or end the outage and the other conditions the sample shows, at ``at``; returns
    the powers as measured afterwards."""
    if relay_open is None:
        relay_open = relay.contactor_open(meter)
    supply = cache.rated_v * SUPPLY_FRACTION
    down = own["outage_trigger"] or all(v < supply for v in sample.voltage)
    if down and own["outage_start"] is None:
        _power_down(meter, own, at)
    elif not down and own["outage_start"] is not None:
        _power_up(meter, own, at)
    powers = cache.checked = _powers_for(own, cache, sample, relay_open)
    if down:  # the meter is off: the other conditions are looked at when the power is back
        return powers
    lost = missing = 0
    if len(sample.voltage) > 1:
        lost = _bits(v < supply for v in sample.voltage)
        if not relay_open:
            missing = _bits(v < supply and i > cache.registration_a
                            for v, i in zip(sample.voltage, sample.current))
    own["phase_loss"] = _edge(meter, "phase_loss", own["phase_loss"], lost, at, lost)
    own["missing_current"] = _edge(meter, "current_on_missing_phase", own["missing_current"],
                                   missing, at, missing)
    own["reverse"] = bool(_edge(meter, "reverse_energy", int(own["reverse"]),
                                int(powers.total_p < 0), at, 0))
    load_side = 0
    if relay_open and _load_side_detection(meter):
        threshold = cache.rated_v * LOAD_SIDE_FRACTION
        load_side = _bits(v > threshold for v in sample.load_voltage)
    # event 107's argument: bits 0-1 the type (0 here), bits 2-4 the phases A-C
    own["load_side"] = _edge(meter, "load_side_voltage", own["load_side"], load_side, at,
                             load_side << 2)
    return powers


def _bits(flags) -> int:
    return sum(1 << n for n, flag in enumerate(flags) if flag)


def _edge(meter, alarm: str, old: int, new: int, at: float, argument: int) -> int:
    """A condition given as phase bits: a phase newly in it logs the alarm's event (once per
    occurrence), its end clears the BT03 bit."""
    if new & ~old:
        if not conditions.begin(meter, alarm, at, argument):  # the bit is still set
            meter.log_event(_EVENTS[alarm], argument, at)
    elif old and not new:
        conditions.end(meter, alarm)
    if new != old:
        meter.dirty = True
    return new


#: the events of the conditions the quantities show: 68, 74, 48, 107
_EVENTS = {alarm: by_alarm(alarm).number for alarm in
           ("phase_loss", "current_on_missing_phase", "reverse_energy", "load_side_voltage")}


def _load_side_detection(meter) -> bool:
    """EP07 feature 4 (load-side voltage detection) is on."""
    from ..procedures.system import feature_active  # procedures build on the device layer

    return feature_active(meter, "load_side_voltage_detection")


def _power_down(meter, own, at: float) -> None:
    own["outage_start"] = at
    own["outage_start_utc"] = meter.utc_seconds(at)
    registers.add(meter, 0, {5: 1})  # the outage count has no tier values
    if not conditions.begin(meter, "power_failure", at):  # BT03 still shows an earlier one
        meter.log_event(POWER_DOWN.number, 0, at)
    recorder.note(meter, at, "power_down")  # every interval until power up is flagged
    meter.dirty = True


def _power_up(meter, own, at: float) -> None:
    start, off_utc = own["outage_start"], own["outage_start_utc"]
    own["outage_start"] = own["outage_start_utc"] = None
    meter.dirty = True
    meter.log_event(POWER_UP.number, RESET_POWER_FAILURE, at)
    if relay.contactor_open(meter):  # an open contactor is driven again at power-up
        relay.resynchronize(meter, relay.Reason.POWER_UP_RESYNC, at)
    recorder.note(meter, at, "power_up")
    seconds = at - start
    record = [off_utc, meter.utc_seconds(at), seconds]
    if seconds >= MOMENTARY_OUTAGE_S:
        _keep(own["outages"], record)
        threshold = _long_outage_threshold(meter, at)
        if threshold == 0 or seconds >= threshold:
            _keep(own["long_outages"], record)
        else:
            own["short_outages"] += 1
    from ..tables.logs import record_power_outage  # the tables build on this module

    record_power_outage(meter, start, at)


def _keep(records: list, record: list) -> None:
    records.append(record)
    del records[:-OUTAGE_RECORDS]


def _long_outage_threshold(meter, now: float) -> int:
    """ET09 Long Outage Duration Threshold, seconds (MEP p.68), as power quality keeps it."""
    return int(power_quality.settings(meter)["long_outage_duration_threshold"])


def set_outage_trigger(meter, on: bool, now: float) -> None:
    """The MQTT trigger 'outage': the supply is gone (``on``) or back, whatever the voltages
    say; the outage starts or ends at ``now``."""
    advance(meter, now)
    own = _own(meter)
    if own["outage_trigger"] == on:
        return
    own["outage_trigger"] = on
    meter.dirty = True
    _check(meter, own, _cache(meter), quantities.sample(meter, now), now)


def in_outage(meter) -> bool:
    own = meter.state.subsystems.get(STATE)
    return own is not None and own["outage_start"] is not None


def outage_records(meter) -> dict:
    """The outages for ET09 and ET10, newest first: ``outages`` every one of at least 250 ms,
    ``long_outages`` those at least ET09's threshold long, each (power off meter UTC, power on
    meter UTC, seconds); ``short_outages`` the count of the others."""
    own = meter.state.subsystems.get(STATE, {})
    return dict(outages=[tuple(r) for r in reversed(own.get("outages", []))],
                long_outages=[tuple(r) for r in reversed(own.get("long_outages", []))],
                short_outages=own.get("short_outages", 0))


# ---- the runner's and the clock's hooks -------------------------------------------------------

def next_due(meter) -> float | None:
    """The meter-UTC instant of the engine's next boundary: a hook's, a quantity's jump, or the
    end of the step cap while a quantity varies; None when nothing lies ahead (the runner looks
    in every 0.5 s anyway)."""
    own = meter.state.subsystems.get(STATE)
    if own is None or own["last"] is None:
        return None
    last = own["last"]
    offset = meter.state.clock_offset
    after = last + offset
    nearest = None
    for hook in _HOOKS:
        due = hook.next_due(meter, last)
        if due is not None and due > after and (nearest is None or due < nearest):
            nearest = due
    if not quantities.is_constant(meter, last):
        due = _varying_end(meter, last)
        jump = quantities.next_change(meter, last)
        if jump is not None and last < jump < due:
            due = jump
        due += offset
        if due < math.inf and (nearest is None or due < nearest):
            nearest = due
    return nearest


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set from ``old_utc`` to ``new_utc`` at virtual time ``now``: the load
    profile flags the interval, the calendar forgets boundaries that no longer lie ahead. The
    engine counts virtual time, so no energy is added or lost."""
    recorder.clock_changed(meter, now, old_utc, new_utc)
    tou.clock_changed(meter, now, old_utc, new_utc)


# ---- present values and source IDs ------------------------------------------------------------

def _measured(meter, now: float) -> tuple:
    """(powers, sample) at ``now`` as the meter measures them (the caller has advanced)."""
    own, cache = _own(meter), _cache(meter)
    sample = quantities.sample(meter, now)
    return _powers_for(own, cache, sample, relay.contactor_open(meter)), sample


def _known_present(meter, cache) -> int:
    """How many BT28 present values the firmware knows (OPG p.53-57)."""
    profile = meter.profile
    if cache.firmware is None or cache.firmware[0] is not profile:
        from ..tables.dimensions import firmware  # tables build on this module

        version = firmware(meter)
        known = max(end for end, since in _PRESENT_FIRMWARE if version >= since)
        cache.firmware = (profile, known)
    return cache.firmware[1]


def _phase_inversion(meter) -> bool:
    return "phase_inversion" in meter.state.subsystems.get("triggers", {}).get("active", ())


def present_all(meter, now: float) -> list[int]:
    """All 84 present values in BT28 order and units (OPG p.53-57), 0 beyond what the firmware
    knows. Power factors are P / S (negative while exporting), 1000 with no load; sin(angle)
    is Q / S. Averages over the load profile interval (44-54, 72-74) are the present values: the
    quantities are what the user injects, so an average adds nothing a test could check."""
    cache = _cache(meter)
    powers, _ = _measured(meter, now)
    known = _known_present(meter, cache)
    inverted = _phase_inversion(meter)
    key = (powers, known, inverted)
    cached = cache.present_key
    if cached is not None and cached[0] is powers and cached[1:] == key[1:]:
        return cache.present
    values = _present(powers, inverted)
    values[known:] = [0] * (PRESENT_COUNT - known)
    cache.present_key, cache.present = key, values
    return values


def _present(powers: _Powers, inverted: bool) -> list[int]:
    v = [0] * PRESENT_COUNT
    p, q, s = powers.p, powers.q, powers.s
    total_p, total_q, total_s = powers.total_p, powers.total_q, powers.total_s

    def put(start: int, items) -> None:
        for k, x in enumerate(items):
            v[start + k] = round(x)

    pf = [1000.0 if sk == 0 else 1000.0 * pk / sk for pk, sk in zip(p, s)]
    sin = [0.0 if sk == 0 else 1000.0 * qk / sk for qk, sk in zip(q, s)]
    put(0, (max(total_p, 0), max(-total_p, 0), max(total_q, 0), max(-total_q, 0)))
    put(4, (i * 1000 for i in powers.current))
    put(7, (u * 1000 for u in powers.voltage))
    v[10] = round(pf[0])
    v[11] = round(powers.frequency * 1000)
    v[12] = round(total_s)
    put(13, pf[1:])
    put(15, sin)
    v[18:22] = v[0:4]  # post CT/VT: the emulated meter has ratio 1
    if total_q:
        v[21 + powers.quadrant] = round(abs(total_q))  # 22..25: Q1..Q4 var
    put(26, (max(x, 0) for x in p))
    put(29, (max(-x, 0) for x in p))
    v[32:38] = v[26:32]
    v[38:41] = v[4:7]
    v[41:44] = v[44:47] = v[7:10]
    v[47:49] = v[0:2]
    v[49:55] = v[26:32]
    if total_s:
        v[54 + powers.quadrant] = round(total_s)  # 55..58: apparent power Q1..Q4
    for k, (pk, qk, sk) in enumerate(zip(p, q, s)):
        if sk:
            v[59 + 4 * k + quadrant(pk, qk) - 1] = round(sk)
    v[71] = round(powers.measured.neutral_current * 1000)
    v[72:75] = v[4:7]
    if len(p) == 3:  # voltage angles A-B, B-C, C-A in 1/100 degree (reversed: 240 degrees)
        angle = 24000 if inverted else 12000
        u = powers.voltage
        v[75:78] = [angle if u[a] and u[b] else 0 for a, b in ((0, 1), (1, 2), (2, 0))]
    put(78, (max(x, 0) for x in q))
    put(81, (max(-x, 0) for x in q))
    return v


def present_values(meter, now: float) -> list[int]:
    """BT28's present values: the first BT21.9 of ``present_all``."""
    values = present_all(meter, now)
    count = meter.dims.present_values
    return values[:count] + [0] * (count - len(values))


_SOURCE_INDEX: dict[int, int] = {}


def _source_index() -> dict[int, int]:
    """BT16 source ID -> present value index, from BT27's list (the source of each value)."""
    if not _SOURCE_INDEX:
        from ..tables.registers import PRESENT_VALUE_SOURCES  # tables build on this module

        _SOURCE_INDEX.update({source: n for n, source in enumerate(PRESENT_VALUE_SOURCES)})
    return _SOURCE_INDEX


def source_value(meter, source_id: int, now: float) -> int:
    """Any BT16/BT22 source ID's value at ``now`` in the meter's units (MEP p.203-206; fact
    sheet section 9.7): the registers (0-7, 26-28, 108-111), the tier registers 29-72 (T0..T3 =
    tiers 1..4), demands 88-103 (the demand module's), and the present values in BT28 units for
    the instantaneous sources (8-25, 81-84, 104-107, 185-199, 202-244). Post CT/VT values equal
    the others (ratio 1); average values are the present values (see ``present_all``). Sources
    this meter cannot produce (MEP devices 73-80, mapped sources 112-163, minima and maxima
    164-184) and those its firmware does not know read 0. The caller has advanced the meter to
    ``now``."""
    if source_id in registers.NAMES or source_id in (6, 7):
        return registers.value(meter, source_id)
    tiered = registers.tier_source(source_id)
    if tiered is not None:
        tier, source = tiered
        return registers.tier_value(meter, tier, source)
    if 88 <= source_id <= 103:
        return int(demand.source_value(meter, source_id) or 0)
    index = _source_index().get(source_id)
    return 0 if index is None else present_all(meter, now)[index]


def summary(meter, now: float) -> dict:
    """Present power values for the MQTT state message: W, var, VA per phase and in total,
    power factor, quadrant, whether the meter is in an outage and its contactor open."""
    powers, _ = _measured(meter, now)
    total_pf = 1.0 if powers.total_s == 0 else powers.total_p / powers.total_s
    phases = [dict(voltage_v=u, current_a=i, active_power_w=round(pk, 3),
                   reactive_power_var=round(qk, 3), apparent_power_va=round(sk, 3),
                   power_factor=round(1.0 if sk == 0 else pk / sk, 4))
              for u, i, pk, qk, sk in zip(powers.voltage, powers.current, powers.p, powers.q,
                                          powers.s)]
    return dict(active_power_w=round(powers.total_p, 3),
                reactive_power_var=round(powers.total_q, 3),
                apparent_power_va=round(powers.total_s, 3), power_factor=round(total_pf, 4),
                quadrant=powers.quadrant, phases=phases, outage=in_outage(meter),
                relay_open=relay.contactor_open(meter))
