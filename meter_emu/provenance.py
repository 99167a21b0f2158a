"""Where a catalog entry's layout comes from.

Every table, procedure and event says whether its layout is ``documented`` (an OSGP Alliance guide
gives it: cite the page), ``c12.19`` (the ANSI C12.19 standard layout, used where the guides are
silent) or ``designed`` (nothing public exists; ours, with the reason). Listings and docs print it.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("documented", "c12.19", "designed")


@dataclass(frozen=True)
class Provenance:
    kind: str
    source: str  # e.g. "OPG p.19; MEP p.196" or the design rationale

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"provenance kind must be one of {KINDS}, not {self.kind!r}")
        if not self.source:
            raise ValueError("provenance needs a source: a page, a standard clause or a rationale")

    def __str__(self) -> str:
        return f"{self.kind}: {self.source}"


def documented(pages: str) -> Provenance:
    """Layout from the OSGP Alliance guides. OPG = Optical Port Programmer's Guide (2021),
    MEP = MEP Client Developer's Guide (2022); printed page numbers."""
    return Provenance("documented", pages)


def c1219(note: str) -> Provenance:
    return Provenance("c12.19", note)


def designed(why: str) -> Provenance:
    return Provenance("designed", why)
