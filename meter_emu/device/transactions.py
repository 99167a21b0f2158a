"""Transactions (MEP p.43-48, p.130-132): a client writes a list of request APDUs into a request
table (ET52 from a MEP client, ET27 from the optical port or the power line) and the meter runs
them all, or none, and puts the responses into the paired response table (ET53, ET28).

Layout (both tables): size (UINT16 LSB, counting every byte), type, number (UINT16 LSB); for type
3 a group count and group list; records of ``length (UINT16 LSB) | APDU`` (MEP section 4.2: 0x30
with a length, 0x3F, 0x40, 0x4F, no sequence number, digest or checksum); the number again. The
meter runs the request once the write that reaches its last byte has put the same number there
(writes come in consecutive pieces of at most 456 data bytes, MEP p.44); a different closing
number refuses that write (ERR), since the data must be written first to last byte.

Each record runs as the table service it is (ports/table_services.py, secured dialect) with the
writer's key, user ID and port, so access rules, ET59/ET85 routing and events are the ones of a
direct request; reads are not held to the 476-byte MEP message, only to the response table.

Designed (the guide gives the wording, not the algorithm):

* **All or nothing** ("Either all the requests occur, or none of them do", MEP p.43). The meter's
  whole state (tables, logs, subsystems, load profile images) is kept before the first record.
  The run stops at the first record that answers other than 0x00, or whose BT07 write starts a
  procedure with a result other than 0 "completed" (1 "not completed" is how several procedures
  report that they did nothing), at an invalid record length (0, or past the closing number),
  or at a response that does not fit the response table; the state is then restored and the
  response is type 2 "Responses - partial (... premature termination ...)" holding the responses
  up to and including the one that stopped it. The failing procedure's response stays posted
  (BT08/ET59/ET85, and its PSN), so the client can read why. Events of a rolled-back run are
  not published. Otherwise the response is type 1 with every response.
* A procedure declared ``idempotent=False`` (BP05, EP16, ...) must not run in a transaction,
  since an interrupted one is re-run at power-up (MEP p.43): its BT07 write answers IAR (0x05)
  and nothing runs.
* "A given transaction number with the same CRC over the data cannot be executed twice in a row"
  (MEP p.44-48): the number and CRC-16 of the last committed request of each table are kept; the
  same again is accepted as a write and not run (ET53 still holds its responses, which is what a
  client retrying a lost answer needs). A rolled-back request may be sent again.
* Type 3 (group broadcast): run when one listed group matches the meter's broadcast groups
  (tables/system.py ``broadcast_groups``: 0xYYFF all sub-groups of YY, 0xFFYY and 0xFFFF
  everyone); 0x0000 matches nothing. Otherwise the response is type 4 with no records.
* ET27/ET28 take ET52/ET53's layout and lengths; ET27 is written with the optical MK/PK or the
  PLC key and its records run with that key; ET28 is read with MK, PK, RK or PLC
  (tables/mep_client.py). One engine per meter: a request table written while a transaction
  runs (a record writing ET52 or ET27) answers BSY (0x06).
* Power-up: "executing" is kept in the state before the first record and cleared after the
  last; ``resume`` runs an interrupted request again from the start (the snapshot is gone with
  the power, which is why transactions must be idempotent).
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import logging

from ..crc import crc16
from .errors import ResponseCode, ServiceError

log = logging.getLogger(__name__)

ET27, ET28, ET52, ET53 = 2048 + 27, 2048 + 28, 2048 + 52, 2048 + 53
#: request table -> response table
PAIRS = {ET52: ET53, ET27: ET28}
BT07 = 7

REQUESTS, RESPONSES, PARTIAL_RESPONSES, GROUP_REQUEST, GROUP_REQUEST_DENIED = range(5)
HEADER, TRAILER = 5, 2
SUBSYSTEM = "transactions"

#: the transaction running in this context (None: none); procedures look at it
_running: contextvars.ContextVar = contextvars.ContextVar("transaction", default=None)


def running() -> bool:
    """True while a transaction's records run (procedures refuse non-idempotent runs)."""
    return _running.get() is not None


def procedure_ran(code: int) -> None:
    """Called by BT07 (procedures.initiate) with each procedure's result code."""
    current = _running.get()
    if current is not None:
        current.append(int(code))


def _state(meter) -> dict:
    return meter.subsystem(SUBSYSTEM, executing=None, last={}, responses={})


def response_image(meter, response_table: int, length: int) -> bytes:
    """The response table as the last transaction left it (zeros before the first)."""
    found = meter.state.subsystems.get(SUBSYSTEM, {}).get("responses", {}).get(str(response_table))
    raw = bytes.fromhex(found) if found else b""
    return raw[:length].ljust(length, b"\0")


def request_written(meter, table_id: int, image: bytes, ctx) -> None:
    """A request table's new image (called by its write check, before the image is kept): run the
    transaction if this write put its closing number in place. Raises ServiceError to refuse."""
    if running():
        raise ServiceError(ResponseCode.BSY, "a transaction is running")
    size = int.from_bytes(image[0:2], "little")
    end = ctx.offset + len(ctx.written)
    if size == 0 or not ctx.offset < size <= end:
        return  # not the write that completes it (or nothing to run)
    if image[size - TRAILER:size] != image[3:5]:
        raise ServiceError(ResponseCode.ERR, f"closing transaction number "
                           f"{image[size - 2:size].hex()} differs from {image[3:5].hex()}")
    number = int.from_bytes(image[3:5], "little")
    last = _state(meter)["last"].get(str(table_id))
    if last == [number, crc16(image[:size])]:
        log.info("meter %s: transaction %d in %s already executed; not run again", meter.id,
                 number, _label(table_id))
        return
    meter.state.tables[table_id] = image  # the request is part of the state kept from now on
    _run(meter, table_id, dict(key=str(ctx.key), user_id=ctx.user_id, port=ctx.port), ctx.now)


def resume(meter, now: float) -> bool:
    """Re-run a transaction a power cut interrupted (MEP p.43). True if one ran."""
    if running():
        return False
    executing = meter.state.subsystems.get(SUBSYSTEM, {}).get("executing")
    if not executing:
        return False
    log.warning("meter %s: re-running the transaction interrupted in %s", meter.id,
                _label(executing["table"]))
    _run(meter, executing["table"], executing, now)
    return True


def begin(meter, table_id: int, writer: dict) -> None:
    """Mark the request in ``table_id`` as executing (saved before any record runs)."""
    _state(meter)["executing"] = dict(writer, table=table_id)
    meter.dirty = True


def _run(meter, table_id: int, writer: dict, now: float) -> None:
    from ..tables.dimensions import product_dimensions

    image = meter.table_bytes(table_id, now)
    size = int.from_bytes(image[0:2], "little")
    kind, number = image[2], image[3:5]
    limit = product_dimensions(meter).transaction_response_length
    if kind == GROUP_REQUEST and not _for_this_meter(meter, image, size):
        log.info("meter %s: group transaction %d is not for this meter", meter.id,
                 int.from_bytes(number, "little"))
        _finish(meter, table_id, GROUP_REQUEST_DENIED, number, [], limit)
        return
    snapshot = _snapshot(meter)
    begin(meter, table_id, writer)
    token = _running.set([])
    try:
        responses, ok, posted = _records(meter, image, size, kind, writer, now, limit)
    finally:
        _running.reset(token)
    listeners = snapshot[3]
    if ok:
        state = _state(meter)
        state["executing"] = None
        state["last"][str(table_id)] = [int.from_bytes(number, "little"), crc16(image[:size])]
        meter.event_listeners = listeners
        for document in meter._transaction_events:
            for listener in listeners:
                listener(meter, document)
    else:
        _restore(meter, snapshot, posted)
        log.info("meter %s: transaction %d in %s rolled back after record %d", meter.id,
                 int.from_bytes(number, "little"), _label(table_id), len(responses))
    meter.__dict__.pop("_transaction_events", None)
    _finish(meter, table_id, RESPONSES if ok else PARTIAL_RESPONSES, number, responses, limit)


def _records(meter, image, size, kind, writer, now, limit):
    """Run the records in order; (responses, all succeeded, posted procedure state or None)."""
    from ..device.access import Key
    from ..ports.table_services import SECURED, TABLE_SERVICES, handle_table_service

    key = Key(writer["key"])
    position = HEADER + (1 + 2 * image[HEADER] if kind == GROUP_REQUEST else 0)
    end = size - TRAILER
    responses, used = [], HEADER + TRAILER
    while position < end:
        length = int.from_bytes(image[position:position + 2], "little")
        if position + 2 > end or length == 0 or position + 2 + length > end:
            log.info("meter %s: transaction record at %d: invalid length %d", meter.id,
                     position, length)
            return responses, False, None
        record = image[position + 2:position + 2 + length]
        position += 2 + length
        results = _running.get()
        results.clear()
        try:
            if record[0] not in TABLE_SERVICES:
                raise ServiceError(ResponseCode.SNS, f"request 0x{record[0]:02X} not supported")
            response = handle_table_service(SECURED, meter, record, key, now,
                                            user_id=writer["user_id"], port=writer["port"])
        except ServiceError as error:
            log.info("meter %s: transaction record %d: %s", meter.id, len(responses) + 1, error)
            response = bytes([error.code])
        except Exception:  # noqa: BLE001 - a bug costs the transaction, not the meter
            log.exception("meter %s: transaction record %d failed", meter.id, len(responses) + 1)
            response = bytes([ResponseCode.ERR])
        if used + 2 + len(response) > limit:
            log.info("meter %s: transaction responses exceed %d bytes", meter.id, limit)
            return responses, False, None
        responses.append(response)
        used += 2 + len(response)
        failed = [code for code in results if code != 0]
        if response[0] != ResponseCode.OK or failed:
            return responses, False, _posted(meter) if failed else None
    return responses, True, None


def _for_this_meter(meter, image: bytes, size: int) -> bool:
    from ..tables.system import broadcast_groups

    count = image[HEADER]
    listed = [int.from_bytes(image[HEADER + 1 + 2 * i:HEADER + 3 + 2 * i], "little")
              for i in range(count) if HEADER + 3 + 2 * i <= size - TRAILER]
    mine = broadcast_groups(meter)
    for group in listed:
        if group == 0:
            continue
        if group == 0xFFFF or group >> 8 == 0xFF:
            return True
        if any(group == own or (group & 0xFF == 0xFF and group >> 8 == own >> 8)
               for own in mine):
            return True
    return False


def _finish(meter, table_id, kind, number: bytes, responses, limit) -> None:
    body = b"".join(len(r).to_bytes(2, "little") + r for r in responses)
    size = HEADER + len(body) + TRAILER
    image = size.to_bytes(2, "little") + bytes([kind]) + number + body + number
    _state(meter)["responses"][str(PAIRS[table_id])] = image[:limit].hex()
    meter.dirty = True


# ---- snapshot and restore -------------------------------------------------------------------

def _snapshot(meter):
    """Everything a rollback restores. Events are held back from listeners until commit."""
    state = meter.state
    listeners = meter.event_listeners
    meter._transaction_events = held = []
    meter.event_listeners = [lambda _meter, document: held.append(document)]
    return (copy.deepcopy(state.to_doc()), _copy_memory(state.load_profile_memory),
            state.load_profile_files, listeners)


def _copy_memory(memory):
    if memory is None:
        return None
    copied = type(memory)()
    copied.rings = {number: bytearray(ring) for number, ring in memory.rings.items()}
    copied.changed = set(memory.changed)
    copied.recorder = None  # rebuilt by the recorder on its next use
    return copied


def _posted(meter) -> dict:
    """The procedure response a failing BT07 write posted, kept across the rollback."""
    state = meter.state
    return dict(procedure_response=state.procedure_response, last_psn=state.last_psn,
                responses=copy.deepcopy(state.subsystems.get("mep_procedure_responses")))


def _restore(meter, snapshot, posted) -> None:
    doc, memory, files, listeners = snapshot
    restored = type(meter.state).from_doc(doc)
    restored.load_profile_memory, restored.load_profile_files = memory, files
    for item in dataclasses.fields(restored):
        setattr(meter.state, item.name, getattr(restored, item.name))
    for name in [name for name in vars(meter) if name.startswith("_")]:
        del meter.__dict__[name]  # caches derived from the state; their owners rebuild them
    meter.event_listeners = listeners
    if posted is not None:
        meter.state.procedure_response = posted["procedure_response"]
        meter.state.last_psn = posted["last_psn"]
        if posted["responses"] is not None:
            meter.state.subsystems["mep_procedure_responses"] = posted["responses"]
    meter.dirty = True


def _label(table_id: int) -> str:
    return f"ET{table_id - 2048:02d}"
