"""The procedure catalog: each procedure declared once (number, name, execute access, parameter
layout, provenance, what it does). BT07 writes look procedures up here; BT00's procedure bitmaps
and ``meter-emu tables`` list them.

A procedure's ``run(meter, params, ctx)`` returns a ``Result`` (result code + response data) or
raises ``ProcedureFailed``; the device model posts either into BT08.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from construct import Construct

from ..device.access import parse_access
from ..provenance import Provenance

MANUFACTURER_FLAG = 2048  # bit 11 of the BT07 procedure word: EP n = 2048 + n


def bp(n: int) -> int:
    return n


def ep(n: int) -> int:
    return MANUFACTURER_FLAG + n


def label(number: int) -> str:
    return f"EP{number - MANUFACTURER_FLAG:02d}" if number >= MANUFACTURER_FLAG else f"BP{number:02d}"


class ResultCode(enum.IntEnum):
    """BT08 result codes (ANSI C12.19; MEP guide p.51)."""

    COMPLETED = 0
    NOT_COMPLETED = 1
    INVALID_PARAMETER = 2
    CONFLICT_WITH_SETUP = 3
    TIMING_CONSTRAINT = 4
    NO_AUTHORIZATION = 5
    UNRECOGNIZED = 6


@dataclass(frozen=True)
class Result:
    code: int = ResultCode.COMPLETED
    data: bytes = b""


class ProcedureFailed(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Procedure:
    number: int
    name: str
    execute: frozenset
    params: Construct
    provenance: Provenance
    run: Callable[[Any, Any, Any], Result]
    #: extra rule on top of ``execute`` (e.g. RK may set the clock only if ET04.71.0 = 0)
    also_allowed: Callable[[Any, Any], bool] | None = None
    #: procedure-specific meanings of result codes (beyond the C12.19 ones, or refining them)
    results: dict[int, str] = field(default_factory=dict)
    #: layout of the response data posted in BT08 after the result code (None: no data)
    response: Construct | None = None
    #: False for procedures that must not run inside a transaction (MEP p.43: BP05, EP16)
    idempotent: bool = True

    @property
    def effect(self) -> str:
        """What the procedure does, from its implementation's docstring (declared once)."""
        return " ".join((self.run.__doc__ or "").split())

    @property
    def label(self) -> str:
        return label(self.number)

    def allowed(self, meter, key) -> bool:
        if key in self.execute:
            return True
        return self.also_allowed is not None and key is not None and self.also_allowed(meter, key)


PROCEDURES: dict[int, Procedure] = {}


def declare(number, name, *, execute, params, provenance, run, also_allowed=None,
            results=None, response=None, idempotent=True) -> Procedure:
    if number in PROCEDURES:
        raise ValueError(f"{label(number)} declared twice")
    if not (run.__doc__ or "").strip():
        raise ValueError(f"{label(number)}: its run function needs a docstring (the effect)")
    proc = Procedure(
        number=number,
        name=name,
        execute=parse_access(execute),
        params=params,
        provenance=provenance,
        run=run,
        also_allowed=also_allowed,
        results=dict(results or {}),
        response=response,
        idempotent=idempotent,
    )
    PROCEDURES[number] = proc
    return proc
