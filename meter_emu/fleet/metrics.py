"""The Prometheus endpoint (STUB: helper 'metrics')."""

from __future__ import annotations


async def start(url: str, meters: list, *, per_meter: int = 0):
    """None for ``off``; else an object with ``url`` and ``close()``."""
    return None
