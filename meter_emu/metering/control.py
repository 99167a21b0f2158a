"""The engine's hook for the meter's switches: what the measured load does to the contactor and
what the clock does to the control relays (device/relay.py holds their state and events).

* prepay: each step's forward active energy, priced by the tier's ET05 rate, leaves the credit;
* maximum power: the load above the active level (or a phase current above ET30's current
  level) for ET30's exceed time trips the contactor; a tripped contactor set to reclose by
  itself (ET05.25.2) does so after ET30's lockout;
* ET61: the time-based relay calendar switches the control relays (and, with ET05.25.1,
  relay 1's calendar the contactor) at its switch points, local time, after a random delay
  of up to ET05.34 seconds when that is set;
* the relay's own timed actions (EP36's lock-open, randomized EP02 commands).

Like the other hooks, ``next_due`` names the next instant something happens, so the engine
ends a step exactly there: the credit reaches its limit at the instant computed from the
present power (the engine integrates a constant load exactly), the trip happens when the
exceed time is over, and the energy before a switch is metered with the contactor as it was.

ET61's layout is documented (MEP p.166-167): per control relay, ET11.26 records of state,
minute and hour; "the meaning of each block of ten depends on the current mode ... configured
in ET05". The modes (ET05.24, designed): 0 off, 1 block 0 every day, 2 block 0 on weekdays and
block 1 on Saturdays and Sundays, 3 blocks 0..6 for Sunday..Saturday. A block's switch points
are its records up to the first unused (all zero) one; a first record of zeros is "open at
00:00" when records follow it. A calendar switched on starts from that moment (no backfill).
"""

from __future__ import annotations

import datetime as dt
import math

from ..device import relay
from ..events import CONTROL_BY_SCHEDULE, USER_NONE
from . import tou

_ET05, _ET61 = 2048 + 5, 2048 + 61
MAX_POWER = "max_power"  # subsystem: when the load went above the level
CALENDAR = "relay_calendar"  # subsystem: how far the calendar was carried out
BLOCK = 10  # switch points per block (MEP p.166)
_WEEKDAY_BLOCK = {1: (0,) * 7, 2: (0, 0, 0, 0, 0, 1, 1), 3: (1, 2, 3, 4, 5, 6, 0)}  # Mon..Sun


def engaged(meter) -> bool:
    """Anything here to do at all (the engine asks on every step: an idle meter costs two
    dictionary look-ups)."""
    state = meter.state
    return _ET05 in state.tables or relay.PREPAY in state.subsystems \
        or "relay" in state.subsystems


def _powers(meter, at: float):
    from .engine import powers_at  # the engine imports this module

    return powers_at(meter, at)


# ---- the engine's hooks ---------------------------------------------------------------------

def next_due(meter, start: float) -> float | None:
    """The meter-UTC instant of the next switching after virtual time ``start``."""
    if not engaged(meter):
        return None
    utc = meter.utc_seconds(start)
    dues = [relay.next_due(meter), relay.auto_reconnect_due(meter), _calendar_due(meter, start)]
    if relay.prepay_active(meter) or relay.max_power_limits(meter):
        powers = _powers(meter, start)
        dues.append(_credit_due(meter, start, powers))
        dues.append(_trip_due(meter, start, powers))
    dues = [due for due in dues if due is not None and due > utc]
    return min(dues) if dues else None


def metered(meter, t0: float, t1: float, powers, tier: int, amounts: dict) -> None:
    """The step [t0, t1] was metered with ``powers``: spend the credit, follow the load."""
    if relay.prepay_active(meter):
        wh = amounts.get(0, 0.0)
        if wh:
            relay.spend_credit(meter, wh * relay.credit_rate(meter, tier))
    limits = relay.max_power_limits(meter)
    own = meter.state.subsystems.get(MAX_POWER)
    over = _over(powers, limits) if limits else None
    if over is not None and (own is None or own["since"] is None):
        own = meter.subsystem(MAX_POWER, since=None, by_current=False)
        own["since"], own["by_current"] = meter.utc_seconds(t0), over
        meter.dirty = True
    elif over is None and own is not None and own["since"] is not None:
        own["since"] = None
        meter.dirty = True


def run_due(meter, now: float) -> None:
    """Carry out what is due at virtual time ``now`` (the end of a step)."""
    if not engaged(meter):
        return
    relay.run_due(meter, now)
    utc = meter.utc_seconds(now)
    relay.prepay_check(meter, now)
    own = meter.state.subsystems.get(MAX_POWER)
    if own is not None and own["since"] is not None:
        if relay.contactor_open(meter) or not relay.max_power_limits(meter):
            own["since"] = None
        elif utc - own["since"] >= relay.exceed_time(meter) - 1e-6:
            own["since"] = None
            relay.max_power_trip(meter, now, own["by_current"])
        meter.dirty = True
    reclose = relay.auto_reconnect_due(meter)
    if reclose is not None and reclose <= utc:
        relay.auto_reconnect(meter, now)
    _run_calendar(meter, now)


# ---- prepay and maximum power ---------------------------------------------------------------

def _credit_due(meter, start: float, powers) -> float | None:
    """When the credit reaches the warning or the exhaustion level at the present power."""
    if not relay.prepay_active(meter):
        return None
    watts = powers.rates.get(0, 0.0) * relay.credit_rate(meter, tou.current_tier(meter, start))
    if watts <= 0:
        return None
    state = meter.state.subsystems[relay.PREPAY]
    remaining = relay.remaining_credit(meter)
    warning, limit = relay.prepay_limits(meter)
    targets = [] if state.get("exhausted") else [limit]
    if not state.get("warned") and warning > limit:
        targets.append(warning)
    ahead = [remaining - level for level in targets if remaining - level > 0]
    if not ahead:
        return None
    return meter.utc_seconds(start) + min(ahead) * 3600.0 / watts


def _over(powers, limits) -> bool | None:
    """None: within the limits; else whether it is the current (True) or the power (False)."""
    watts, amps = limits
    if amps and max(powers.current, default=0.0) > amps:
        return True
    if watts and powers.total_p > watts:
        return False
    return None


def _trip_due(meter, start: float, powers) -> float | None:
    limits = relay.max_power_limits(meter)
    if not limits or relay.contactor_open(meter) or _over(powers, limits) is None:
        return None
    own = meter.state.subsystems.get(MAX_POWER)
    since = own["since"] if own is not None and own["since"] is not None \
        else meter.utc_seconds(start)
    return since + relay.exceed_time(meter)


# ---- the ET61 calendar ----------------------------------------------------------------------

def _enabled_relays(meter) -> list[int]:
    settings = relay.et05_settings(meter)
    if not any(settings.calendar_modes):
        return []
    from ..procedures.system import feature_active  # procedures build on this layer
    from ..tables.dimensions import firmware_at_least

    if not feature_active(meter, "time_based_relay"):
        return []
    relays = (1, 2) if firmware_at_least(meter, "4.30") else (1,)
    return [n for n in relays if settings.calendar_modes[n - 1] in _WEEKDAY_BLOCK]


def switch_points(meter, relay_number: int, day: dt.date) -> list[tuple[int, str]]:
    """(minute of the day, OPEN/CLOSED) of control relay ``relay_number`` on local ``day``."""
    from ..tables.dimensions import product_dimensions

    mode = relay.et05_settings(meter).calendar_modes[relay_number - 1]
    if mode not in _WEEKDAY_BLOCK:
        return []
    switches = product_dimensions(meter).relay_switches
    raw = meter.state.tables.get(_ET61)
    if raw is None:
        return []  # the default calendar has no switch points
    block = _WEEKDAY_BLOCK[mode][day.weekday()]
    first = ((relay_number - 1) * switches + block * BLOCK) * 2
    records = [int.from_bytes(raw[at:at + 2], "little")
               for at in range(first, min(first + 2 * BLOCK, len(raw)), 2)]
    points = []
    for i, record in enumerate(records):
        if not record and (i or not any(records[1:2])):
            break
        points.append(((record >> 11) * 60 + (record >> 5 & 0x3F),
                       relay.CLOSED if record & 1 else relay.OPEN))
    return points


def _points_between(meter, start: float, after_utc: float, until_utc: float):
    """(meter UTC, relay, target) of every switch point in (after_utc, until_utc], in order;
    local time is UTC plus the offset in force at virtual time ``start``."""
    relays = _enabled_relays(meter)
    if not relays:
        return []
    offset = tou.local_offset(meter, start)
    day = dt.datetime.fromtimestamp(math.floor(after_utc + offset), dt.timezone.utc).date()
    found = []
    while True:
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()
        if midnight - offset > until_utc:
            break
        for number in relays:
            for minute, target in switch_points(meter, number, day):
                at = midnight + minute * 60 - offset
                if after_utc < at <= until_utc:
                    found.append((at, number, target))
        day += dt.timedelta(days=1)
    return sorted(found)


def _calendar_due(meter, start: float) -> float | None:
    own = meter.state.subsystems.get(CALENDAR)
    if own is None or own["at"] is None:
        return None
    points = _points_between(meter, start, own["at"], own["at"] + 8 * 86_400)
    return points[0][0] if points else None


def _run_calendar(meter, now: float) -> None:
    utc = meter.utc_seconds(now)
    own = meter.state.subsystems.get(CALENDAR)
    if not _enabled_relays(meter):
        if own is not None and own["at"] is not None:
            own["at"] = None
            meter.dirty = True
        return
    if own is None or own["at"] is None:  # just switched on: from here
        meter.subsystem(CALENDAR, at=None)["at"] = utc
        meter.dirty = True
        return
    settings = relay.et05_settings(meter)
    for at_utc, number, target in _points_between(meter, now, own["at"], utc):
        at = now - (utc - at_utc)
        window = settings.calendar_random_window_s
        if window:
            relay.randomize_control(meter, number, target, window, at, USER_NONE,
                                    control_event=CONTROL_BY_SCHEDULE)
        else:
            relay.set_control(meter, number, target, at, USER_NONE,
                              control_event=CONTROL_BY_SCHEDULE)
        if number == 1 and settings.calendar_drives_disconnect:
            relay.schedule_disconnect(meter, target, at)
    own["at"] = utc
    meter.dirty = True
