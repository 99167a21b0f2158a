"""CONTRACT (the U50 helper implements): ``meter-emu pty`` creates a pseudo-terminal pair and
prints both paths."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("pty", help="create a pseudo-terminal pair and print both paths")


def main(args) -> int:
    raise NotImplementedError
