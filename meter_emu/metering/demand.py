"""Scaffolding (issue 5's demand work replaces it): demand intervals and maxima."""


def accumulate(meter, start: float, end: float, energy: dict[int, float]) -> None:
    """Energy (by BT16 source ID, in register units) metered between virtual ``start`` and
    ``end``."""


def next_due(meter, now: float) -> float | None:
    """The meter-UTC instant the current demand sub-interval ends, or None."""
    return None


def run_due(meter, now: float) -> None:
    """Close every demand sub-interval that ended by virtual time ``now``."""
