"""Procedures: remote method calls written to BT07 and answered in BT08.

``initiate`` is the mechanism (MEP guide p.50-51, ANSI C12.19 PROC_INITIATE_TBL): the BT07 request
is a little-endian UINT16 (procedure number in bits 0..11, bit 11 = manufacturer "EP", response
handling selector in bits 12..15), a procedure sequence number (PSN) and the parameters. A PSN equal
to the previous one is refused with response code 0x04 and runs nothing. The result is posted in
BT08 (ET59/ET85 for MEP clients, MEP p.50) as number, PSN, result code and response data (at
most BT00.10 bytes), as the selector says:
0 post on completion, 1 post only on exception, 2 do not post, 3 post immediately and on completion.
"""

from __future__ import annotations

import logging

from construct import ConstructError

from ..device import transactions
from ..device.errors import ResponseCode, ServiceError
from ..events import PROCEDURE_INVOKED
from .catalog import PROCEDURES, ProcedureFailed, Result, ResultCode, label

log = logging.getLogger(__name__)

SELECTOR_ON_EXCEPTION = 1
SELECTOR_DO_NOT_POST = 2


def initiate(meter, written: bytes, ctx) -> Result:
    """Run the procedure a BT07 write asks for and post its response in BT08, or ET59/ET85 for
    a MEP client (tables/mep_client.py ``procedure_response_table``). Inside a transaction a
    procedure declared not idempotent is refused with IAR and its result is reported to the
    transaction engine (device/transactions.py)."""
    from ..tables.mep_client import post_procedure_response  # the tables import this module

    if len(written) < 3:
        raise ServiceError(ResponseCode.ERR, f"BT07 write of {len(written)} bytes; at least 3")
    word = int.from_bytes(written[0:2], "little")
    number, selector, psn = word & 0x0FFF, word >> 12, written[2]
    state = meter.state
    proc = PROCEDURES.get(number)
    if proc is not None and not proc.idempotent and transactions.running():
        raise ServiceError(ResponseCode.IAR, f"{proc.label} is not idempotent: not allowed in a "
                                             "transaction (MEP p.43)")
    if state.last_psn == psn:
        raise ServiceError(ResponseCode.ONP, f"procedure sequence number {psn} repeated")
    state.last_psn = psn
    meter.count("procedures")
    state.procedure_request = bytes(written)
    result = _run(meter, number, written[3:], ctx)
    if selector != SELECTOR_DO_NOT_POST and not (
        selector == SELECTOR_ON_EXCEPTION and result.code == ResultCode.COMPLETED
    ):
        data = result.data[: meter.dims.procedure_response_max]
        post_procedure_response(
            meter, number.to_bytes(2, "little") + bytes([psn, int(result.code)]) + data, ctx)
    transactions.procedure_ran(result.code)
    meter.dirty = True
    log.info("meter %s: %s (PSN %d) by %s -> result %d", meter.id, label(number), psn, ctx.key,
             result.code)
    return result


def _run(meter, number: int, params: bytes, ctx) -> Result:
    proc = PROCEDURES.get(number)
    if proc is None:
        return Result(ResultCode.UNRECOGNIZED)
    if not proc.allowed(meter, ctx.key):
        return Result(ResultCode.NO_AUTHORIZATION)
    try:
        values = proc.params.parse(params)
    except (ConstructError, ValueError) as exc:
        log.info("meter %s: %s parameters refused: %s", meter.id, proc.label, exc)
        return Result(ResultCode.INVALID_PARAMETER)
    try:
        result = proc.run(meter, values, ctx)
    except ProcedureFailed as failure:
        log.info("meter %s: %s failed: %s", meter.id, proc.label, failure.reason)
        return Result(failure.code)
    if result.code in (ResultCode.COMPLETED, ResultCode.NOT_COMPLETED):  # it was carried out
        meter.log_access(PROCEDURE_INVOKED.number, number, ctx.now, ctx.user_id)
    return result


# Importing a module registers its procedures. Last, because they use the tables, whose BT07
# imports ``initiate`` from here.
from . import basic, firmware, logs, mep, metering, relay, system  # noqa: E402, F401

__all__ = ["PROCEDURES", "initiate", "Result", "ResultCode", "ProcedureFailed"]
