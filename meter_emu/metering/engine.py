"""Scaffolding: the metering engine (issue 5) replaces these."""


def advance(meter, now: float) -> None:
    """Integrate everything the meter measures up to virtual time ``now``."""


def next_due(meter) -> float | None:
    """The meter-UTC instant of the engine's next boundary, or None."""
    return None


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set from ``old_utc`` to ``new_utc`` at virtual time ``now``."""
