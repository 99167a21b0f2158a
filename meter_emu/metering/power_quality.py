"""Scaffolding (issue 5's power-quality work replaces it): sags, swells, THD, frequency."""


def check(meter, now: float, sample, duration: float) -> None:
    """``sample`` held for ``duration`` seconds ending at virtual time ``now``."""
