"""Pending tables (Optical Port guide p.8-12): a table written at ID + 4096 waits, with the 6-byte
Pending Event Description (PED) in front of its data, until its activation instant, when its image
is copied into the real table.

PED byte 0: Event Code UINT(0..3) (0 absolute UTC STIME_DATE, 1 relative weeks/days/hours/
minutes/seconds after reception, 2 opaque: only BP12/BP13 activate it), Self Read BOOL(4), Demand
Reset BOOL(5); bytes 1..5: Event Storage. An absolute PED whose STIME_DATE is all zero is empty and
never activates by itself either.

The guide's rules for the services: every count and length includes the PED; the offset of a
partial read or write is an offset into the table, unaffected by the PED.

Our choices where the guide is silent (designed):

* a meter has BT00.18 activation slots (BT04 records). A write to a table that is already
  pending replaces that table's PED and edits its pending image in place, so a client may build a
  pending table with several partial writes; a write for a new table takes a free slot (a record
  that is no longer pending, the oldest first) and is refused with ONP when all are pending;
* the pending image starts as a copy of the live table, and is checked against the table's layout
  at write time; the table's own checks (``apply``) run at activation, as the live write would;
* reading a pending table with no slot answers an all-zero (empty) PED and the live image;
* events 28 (activation) and 29 (clear) carry the pending table's ID (4096 + wire ID: the Echelon
  guide's TOU changeover example logs 4150 for BT54); an activation is logged at its exact instant
  even when the meter notices it late (fast clock, or a restart that crossed the instant).

The self-read and demand-reset flags are kept and reported in BT04; performing the self read or
the demand reset before activation is the metering engine's part.
"""

from __future__ import annotations

import datetime as dt
import logging

from construct import ConstructError

from ..events import USER_NONE
from ..tables.catalog import CATALOG, PENDING_BASE, WriteContext, label
from .errors import ResponseCode, ServiceError

log = logging.getLogger(__name__)

PED_SIZE = 6
ABSOLUTE, RELATIVE, OPAQUE = 0, 1, 2
EVENT_ACTIVATED, EVENT_CLEARED = 28, 29
_RELATIVE_UNITS = (7 * 86400, 86400, 3600, 60, 1)  # weeks, days, hours, minutes, seconds


def due_time(ped: bytes, received_utc: float) -> float | None:
    """The meter UTC second at which a PED activates, or None if it never does by itself."""
    code = ped[0] & 0x0F
    storage = ped[1:PED_SIZE]
    if code == ABSOLUTE:
        if not any(storage):
            return None
        year, month, day, hour, minute = storage
        if year > 99:
            raise ValueError(f"STIME_DATE year byte {year} is above 99")
        moment = dt.datetime(2000 + year, month, day, hour, minute, tzinfo=dt.timezone.utc)
        return moment.timestamp()
    if code == RELATIVE:
        return received_utc + sum(n * unit for n, unit in zip(storage, _RELATIVE_UNITS))
    if code == OPAQUE:
        return None
    raise ValueError(f"PED event code {code} is not 0, 1 or 2")


def pendable(table_id: int):
    """The catalog table behind a pending table ID, or IAR."""
    table = CATALOG.get(table_id - PENDING_BASE)
    if table is None or not table.pending:
        raise ServiceError(ResponseCode.IAR, f"{label(table_id)} does not exist in this meter")
    return table


def _slot(meter, number: int) -> dict | None:
    for slot in meter.state.pending:
        if slot["table"] == number:
            return slot
    return None


def read(meter, table_id: int, now: float) -> bytes:
    """PED + pending image (an empty PED and the live image when nothing is pending)."""
    table = pendable(table_id)
    slot = _slot(meter, table.number)
    if slot is None:
        return bytes(PED_SIZE) + meter.table_bytes(table.number, now)
    return slot["ped"] + slot["image"]


def write(meter, table_id: int, data: bytes, ctx: WriteContext, offset: int) -> None:
    table = pendable(table_id)
    if len(data) < PED_SIZE:
        raise ServiceError(ResponseCode.ERR, f"a pending write needs the {PED_SIZE}-byte PED first")
    ped, body = bytes(data[:PED_SIZE]), data[PED_SIZE:]
    received = meter.utc_seconds(ctx.now)
    try:
        due = due_time(ped, received)
    except ValueError as exc:
        raise ServiceError(ResponseCode.ERR, f"{label(table_id)}: invalid PED: {exc}") from None
    slot = _slot(meter, table.number)
    old = slot["image"] if slot is not None else meter.table_bytes(table.number, ctx.now)
    if offset >= len(old):
        raise ServiceError(ResponseCode.IAR,
                           f"offset {offset} is past the end of {table.label} ({len(old)})")
    body = body[: len(old) - offset]
    image = old[:offset] + body + old[offset + len(body):]
    layout = table.layout_for(meter)
    try:
        layout.build(layout.parse(image))
    except (ConstructError, ValueError) as exc:
        raise ServiceError(ResponseCode.ERR, f"{label(table_id)}: invalid data: {exc}") from None
    if slot is None:
        slot = _free_slot(meter, table_id)
    slot.update(table=table.number, ped=ped, image=image, due=due, still=True)
    meter.dirty = True
    when = "on request" if due is None else dt.datetime.fromtimestamp(due, dt.timezone.utc)
    log.info("meter %s: %s pending, activation %s", meter.id, table.label, when)


def _free_slot(meter, table_id: int) -> dict:
    slots = meter.state.pending
    if len(slots) < meter.dims.pending_tables:
        slots.append({})
        return slots[-1]
    for slot in slots:
        if not slot["still"]:
            slots.remove(slot)  # reused slots move to the end: the oldest is found first
            slots.append(slot)
            return slot
    raise ServiceError(
        ResponseCode.ONP,
        f"{label(table_id)}: all {meter.dims.pending_tables} pending table slots are in use",
    )


def next_due(meter) -> float | None:
    """The earliest meter-UTC activation instant still pending."""
    dues = [s["due"] for s in meter.state.pending if s["still"] and s["due"] is not None]
    return min(dues) if dues else None


def activate_due(meter, now: float) -> None:
    """Activate, in time order, every pending table whose instant has come."""
    if not meter.state.pending:  # the usual case, asked on every advance
        return
    utc_now = meter.utc_seconds(now)
    due = sorted((s for s in meter.state.pending
                  if s["still"] and s["due"] is not None and s["due"] <= utc_now),
                 key=lambda s: s["due"])
    for slot in due:
        activate(meter, slot, slot["due"])


def activate(meter, slot: dict, at_utc: float, user_id: int = USER_NONE) -> None:
    """Copy a pending image into its table, as a write by the meter itself at ``at_utc``
    (``user_id`` is whoever asked for it with BP12/BP13)."""
    slot["still"] = False
    meter.dirty = True
    table = CATALOG[slot["table"]]
    virtual = at_utc - meter.state.clock_offset
    ctx = WriteContext(key=None, now=virtual, port="pending activation", written=slot["image"])
    try:
        meter.store_table(table, slot["image"], ctx)
    except ServiceError as exc:
        log.warning("meter %s: pending %s not activated: %s", meter.id, table.label, exc)
        return
    meter.state.last_activation = at_utc
    meter.log_event(EVENT_ACTIVATED, PENDING_BASE + table.number, virtual, user_id)


def matching(meter, ped: bytes | None) -> list[dict]:
    """Slots still pending, all of them or those whose PED equals ``ped`` (BP13/BP15)."""
    return [s for s in meter.state.pending if s["still"] and (ped is None or s["ped"] == ped)]


def clear(meter, slot: dict, now: float, user_id: int) -> None:
    """Drop a table's pending state; its pending image stays readable (OPG p.12)."""
    slot["still"] = False
    meter.dirty = True
    meter.log_event(EVENT_CLEARED, PENDING_BASE + slot["table"], now, user_id)


def to_doc(slots: list[dict]) -> list[dict]:
    return [dict(s, ped=s["ped"].hex(), image=s["image"].hex()) for s in slots]


def from_doc(docs: list[dict]) -> list[dict]:
    return [dict(d, ped=bytes.fromhex(d["ped"]), image=bytes.fromhex(d["image"])) for d in docs]
