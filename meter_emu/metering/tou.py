"""Scaffolding (issue 5's TOU work replaces it): the BT54 calendar engine."""


def current_tier(meter, now: float) -> int:
    """The tier (0-based) energy accumulates into at virtual time ``now``."""
    return 0


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant of the next calendar boundary after the last one handled."""
    return None


def run_due(meter, now: float) -> None:
    """Carry out every calendar action due by virtual time ``now``."""


def clock_changed(meter, now: float, old_utc: float, new_utc: float) -> None:
    """The meter clock was set; forget boundaries that no longer lie ahead."""
