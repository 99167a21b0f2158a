"""Scaffolding (issue 5's load profile work replaces it): the load profile recorder."""


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant of the next interval end of any active data set, or None."""
    return None


def run_due(meter, now: float) -> None:
    """Close every interval that ended by virtual time ``now``."""


def note(meter, now: float, flag: str) -> None:
    """Mark the interval in progress: 'power_fail', 'clock_forward', 'clock_backward'."""


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set from ``old_utc`` to ``new_utc``."""
