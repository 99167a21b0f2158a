"""``meter-emu firmware ...``: build and inspect code bank images (contract: filled in by the code
bank work of issue 6)."""

from __future__ import annotations


def add_parser(sub) -> None:
    """Register the ``firmware`` sub-command on the top-level sub-parsers."""


def main(args) -> int:
    raise NotImplementedError
