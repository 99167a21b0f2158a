"""Procedures that maintain the logs and the alarms: BP04 Reset List Pointers, BP05 Update Last
Read Entry, EP03 Clear Alarms, EP25 Reset Manufacturer Table Logs and Queues, EP26 Update Mfg
List Unread Entries, EP38 Clear History Log, EP40 Clear Alternate Event Log.

Logs register here once, by the number a client names them with: ``LISTS`` by C12.19's LIST
parameter of BP04/BP05 (1 event log, 2 self-read list, 3-6 load profile data sets 1-4, 7 all
load profile data sets, 8 history log, 255 every list but the event log); NES meters have no
BT76 event log, so LIST 1 names the alternate event log ET79 (designed). ``MANUFACTURER_LOGS``
holds the ET36-managed logs by table number, for EP25 and EP26 (MEP p.107).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from construct import GreedyBytes, Int16ul, Struct

from ..datatypes import UINT8
from ..device import conditions
from ..device.access import CONFIGURERS, Key
from ..device.alarms import ALARMS
from ..events import (EVENT_LOG_CLEARED, EVENT_LOG_POINTERS_UPDATED, HISTORY_CLEARED,
                      HISTORY_POINTERS_UPDATED, LIST_RESET, LIST_UPDATED)
from ..provenance import c1219, designed
from ..tables.catalog import bt, et
from .catalog import ProcedureFailed, Result, ResultCode, bp, declare, ep


@dataclass(frozen=True)
class LogList:
    """How a procedure acts on one log. ``unread(meter)`` counts its unread entries;
    ``acknowledge(meter, count)`` marks ``count`` entries read and returns how many unread ones
    that took; ``reset(meter)`` leaves none unread; ``clear(meter)`` empties the log."""

    name: str
    unread: Callable[[Any], int]
    acknowledge: Callable[[Any, int], int]
    reset: Callable[[Any], None]
    clear: Callable[[Any], None] | None = None
    updated_event: int = LIST_UPDATED.number  # logged by BP05


LISTS: dict[int, LogList] = {}
MANUFACTURER_LOGS: dict[int, LogList] = {}
EVENT_LOG_LIST, HISTORY_LIST, ALL_LOAD_PROFILE_LISTS, ALL_BUT_EVENT_LOG = 1, 8, 7, 255


def register_list(number: int, log: LogList) -> None:
    if number in LISTS:
        raise ValueError(f"LIST {number} registered twice")
    LISTS[number] = log


def register_manufacturer_log(table_id: int, log: LogList) -> None:
    if table_id in MANUFACTURER_LOGS:
        raise ValueError(f"table {table_id} registered twice")
    MANUFACTURER_LOGS[table_id] = log


# ---- the two event logs ------------------------------------------------------------------

def _history_acknowledge(meter, count: int) -> int:
    taken = meter.state.history.acknowledge(count)
    meter.history_read()
    return taken


def _history_reset(meter) -> None:
    meter.state.history.reset_pointers()
    meter.history_read()


def _history_clear(meter) -> None:
    meter.state.history.clear()
    meter.history_read()


register_list(HISTORY_LIST, LogList(
    "history log (BT74)", lambda meter: meter.state.history.unread, _history_acknowledge,
    _history_reset, _history_clear,
    HISTORY_POINTERS_UPDATED.number))
register_list(EVENT_LOG_LIST, LogList(
    "alternate event log (ET79)",
    lambda meter: meter.state.alternate_log.unread,
    lambda meter, count: meter.state.alternate_log.acknowledge(count),
    lambda meter: meter.state.alternate_log.reset_pointers(),
    lambda meter: meter.state.alternate_log.clear(),
    EVENT_LOG_POINTERS_UPDATED.number))


def _lists(number: int) -> list[LogList]:
    """The logs a LIST parameter names (7 and 255 name several)."""
    if number == ALL_LOAD_PROFILE_LISTS:
        return [LISTS[n] for n in (3, 4, 5, 6) if n in LISTS]
    if number == ALL_BUT_EVENT_LOG:
        return [log for n, log in sorted(LISTS.items()) if n != EVENT_LOG_LIST]
    if number not in LISTS:
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER, f"LIST {number} names no log here")
    return [LISTS[number]]


# ---- the ET36-managed logs of the MEP tables (EP25/EP26; procedures/metering.py registers
# ET41 and ET75). Each keeps a dict with "unread", "overflow" and its entries in its
# subsystem's state.

def dict_log(name: str, state_of: Callable[[Any], dict], entries_key: str = "entries",
             clearable: bool = True) -> LogList:
    """A log whose state is a dict with "unread", "overflow" and its entries: BP05/EP26 take
    read entries and clear the overflow flag, BP04 leaves none unread, EP25 empties it (its
    sequence number goes on)."""
    def acknowledge(meter, count: int) -> int:
        own = state_of(meter)
        taken = min(count, own["unread"])
        own["unread"] -= taken
        own["overflow"] = False
        return taken

    def reset(meter) -> None:
        acknowledge(meter, state_of(meter)["unread"])

    def clear(meter) -> None:
        state_of(meter)[entries_key].clear()
        reset(meter)

    return LogList(name, lambda meter: state_of(meter)["unread"], acknowledge, reset,
                   clear if clearable else None)


def _et31(meter) -> dict:
    from ..tables.mep_client import _otr_log  # the tables import this package
    return _otr_log(meter)


def _et45(meter) -> dict:
    from ..tables.mep_devices import _own
    return _own(meter)["recurring"]


register_manufacturer_log(et(31), dict_log("meter one-time-read log (ET31)", _et31, "log"))
register_manufacturer_log(et(45), dict_log("MEP recurring read log (ET45)", _et45))


# ---- BP04 / BP05 -------------------------------------------------------------------------

_LIST_RESULTS = {2: "the LIST names no log of this meter"}


def _reset_list_pointers(meter, p, ctx) -> Result:
    """Mark every entry of the named log(s) read: unread count 0, overflow flag cleared
    (OPG p.51: BP04 clears BT74's overflow); logs 'Reset List Pointers' with the LIST."""
    for log in _lists(p.list):
        log.reset(meter)
    meter.dirty = True
    meter.log_event(LIST_RESET.number, p.list, ctx.now, ctx.user_id)
    return Result()


def _update_last_read_entry(meter, p, ctx) -> Result:
    """The host read ``entries_read`` entries of the named log(s): their unread count drops
    by that much (never below 0) and the overflow flag clears; logs the list's 'pointers
    updated' event with the number of unread entries taken."""
    for log in _lists(p.list):
        taken = log.acknowledge(meter, p.entries_read)
        meter.log_event(log.updated_event, taken, ctx.now, ctx.user_id)
    meter.dirty = True
    return Result()


_LIST_MAINTAINERS = CONFIGURERS | {Key.MBK}  # reading a log and moving its pointers go together

declare(
    bp(4), "Reset List Pointers",
    execute=_LIST_MAINTAINERS,
    params=Struct("list" / UINT8),
    run=_reset_list_pointers,
    results=_LIST_RESULTS,
    provenance=c1219("LIST (UINT8); the Echelon user's guide p.46 lists BP04 as supported: "
                     "'changes the number of unread records ... to zero and clears the list'"),
)
declare(
    bp(5), "Update Last Read Entry",
    execute=_LIST_MAINTAINERS,
    params=Struct("list" / UINT8, "entries_read" / Int16ul),
    run=_update_last_read_entry,
    results=_LIST_RESULTS,
    idempotent=False,  # MEP p.43 names BP05 as the example of a non-idempotent procedure
    provenance=c1219("LIST (UINT8), ENTRIES_READ (UINT16); the Echelon user's guide p.46 lists "
                     "BP05 as supported"),
)


# ---- EP03 Clear Alarms -------------------------------------------------------------------

def _alarm_names(meter, mask: bytes) -> set[str]:
    """The BT03 alarms a mask in BT03's own layout (from offset 1) selects; empty = all."""
    size = len(meter.table_bytes(bt(3), 0.0)) - 1
    if len(mask) > size:
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER,
                              f"alarm mask of {len(mask)} bytes; BT03 has {size} alarm bytes")
    if not mask:
        return set(ALARMS)
    return {name for name, (offset, bit) in ALARMS.items()
            if offset - 1 < len(mask) and mask[offset - 1] >> bit & 1}


def _clear_alarms(meter, p, ctx) -> Result:
    """Acknowledge latched alarms: the BT03 bits a mask selects (BT03's layout from offset 1,
    so the head-end uses the bits it reads) are cleared, all of them with no mask. A condition
    still present raises its bit again the next time it is detected."""
    for name in _alarm_names(meter, p.mask):
        conditions.end(meter, name)
    return Result()


declare(
    ep(3), "Clear Alarms",
    execute=CONFIGURERS,
    params=Struct("mask" / GreedyBytes),
    run=_clear_alarms,
    provenance=designed("ECH p.46 names EP03 and the MEP guide (p.152) clears Cover Removed with "
                        "it; no layout is public, so the parameter is an optional BT03-shaped "
                        "mask"),
)


# ---- EP25 / EP26: the ET36-managed logs --------------------------------------------------

def _manufacturer_log(table_id: int) -> LogList:
    if table_id not in MANUFACTURER_LOGS:
        raise ProcedureFailed(ResultCode.INVALID_PARAMETER,
                              f"table {table_id} is not a log ET36 manages")
    return MANUFACTURER_LOGS[table_id]


def _reset_manufacturer_logs(meter, p, ctx) -> Result:
    """Empty the ET36-managed logs (one, or all with table 0xFFFF) and their unread counts,
    so the 'Manufacturer Log Entry Occurred' alarm clears."""
    logs = (MANUFACTURER_LOGS.values() if p.table == 0xFFFF
            else [_manufacturer_log(p.table)])
    for log in logs:
        (log.clear or log.reset)(meter)
    _mfg_alarm_follows(meter)
    return Result()


def _update_mfg_unread(meter, p, ctx) -> Result:
    """Decrement one ET36-managed log's unread entries by the number read (MEP p.107); the
    'Manufacturer Log Entry Occurred' alarm clears once every such log has none unread.
    Response data: the unread entries taken (UINT16)."""
    taken = _manufacturer_log(p.table).acknowledge(meter, p.entries_read)
    _mfg_alarm_follows(meter)
    return Result(data=taken.to_bytes(2, "little"))


def _mfg_alarm_follows(meter) -> None:
    meter.dirty = True
    if all(log.unread(meter) == 0 for log in MANUFACTURER_LOGS.values()):
        conditions.end(meter, "mfg_log_entry_available")


declare(
    ep(25), "Reset Manufacturer Table Logs and Queues",
    execute=CONFIGURERS,
    params=Struct("table" / Int16ul),
    run=_reset_manufacturer_logs,
    results={2: "the table is not a log ET36 manages"},
    provenance=designed("ECH p.46 names EP25; the parameter (a table number, 0xFFFF for all) "
                        "is ours"),
)
declare(
    ep(26), "Update Mfg List Unread Entries",
    execute=CONFIGURERS | {Key.MBK},
    params=Struct("table" / Int16ul, "entries_read" / Int16ul),
    run=_update_mfg_unread,
    response=Struct("taken" / Int16ul),
    results={2: "the table is not a log ET36 manages"},
    idempotent=False,
    provenance=designed("ECH p.46 and MEP p.107 name EP26 (decrements the ET36 logs' unread "
                        "entries); the parameters (table, entries read) follow BP05"),
)


# ---- EP38 / EP40: clear the event logs ---------------------------------------------------

def _clear_history(meter, p, ctx) -> Result:
    """Empty BT74 (the sequence number goes on, MEP p.241) and log 'History Log Cleared' as
    its first entry."""
    LISTS[HISTORY_LIST].clear(meter)
    meter.log_event(HISTORY_CLEARED.number, 0, ctx.now, ctx.user_id)
    return Result()


def _clear_alternate(meter, p, ctx) -> Result:
    """Empty ET79 and log 'Event Log Cleared' (the alternate log's own event) in it."""
    LISTS[EVENT_LOG_LIST].clear(meter)
    meter.log_event(EVENT_LOG_CLEARED.number, 0, ctx.now, ctx.user_id)
    return Result()


_LOG_CLEARERS = {Key.MK, Key.PLC}  # losing the audit trail is for the owner of the meter
declare(ep(38), "Clear History Log", execute=_LOG_CLEARERS, params=Struct(), run=_clear_history,
        provenance=designed("C12.19 event 16 'History Log Cleared' needs an action; NES gives "
                            "none publicly, so a free EP number"))
declare(ep(40), "Clear Alternate Event Log", execute=_LOG_CLEARERS, params=Struct(),
        run=_clear_alternate,
        provenance=designed("the MEP guide (p.181) says ET79 'can be read and cleared "
                            "independently' and has an 'Alternate Event Log Cleared' event; no "
                            "number is public"))

