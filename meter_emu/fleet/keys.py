"""Per-meter keys: derived from a fleet secret, or read from a key file (STUB: helper 'keys')."""

from __future__ import annotations


def check(origin: str, d: dict) -> None:
    """Profile checks of [fleet] (ProfileError names the key)."""


def assign(profiles: list) -> list:
    """The fleet's profiles with each meter's own keys when [fleet] asks for them."""
    return profiles


def add_parser(sub) -> None:
    """Register ``meter-emu keys``."""


def main(args) -> int:
    return 2
