"""``meter-emu bench`` (STUB: helper 'bench')."""

from __future__ import annotations


def add_parser(sub) -> None:
    """Register ``meter-emu bench``."""


def main(args) -> int:
    return 2
