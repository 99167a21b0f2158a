"""The meter: compact state plus the table services, with no I/O and no clock of its own.

Every call takes ``now`` (virtual UTC seconds) from outside. Tables are produced from the state
when read (``render``) or, for configuration tables, kept as the bytes a client wrote. The four
table services implement the semantics the guides document:

* a table the meter lacks answers IAR (0x05), as a real meter does for BT21 on firmware 2.0x
  (Optical Port guide p.24);
* no permission answers ISC (0x03); a table nobody may write answers IAR;
* a partial read past the end returns zeros for the missing bytes, with no error (OPG p.9);
* a write longer than the table is cut to the table, a shorter one writes only its bytes
  (MEP guide table 2.7); the resulting image must parse with the table's layout and pass the
  table's own checks, or nothing changes.

``dirty`` tells the port adapter that state a client was told about must be saved before the
answer leaves (see store.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import weakref
from dataclasses import dataclass, field

from construct import ConstructError

from .. import __version__
from ..events import (ALTERNATE_LOG_EVENTS, CONFIGURATION_ERROR, EVENTS, PROCEDURE_INVOKED,
                      TABLE_WRITTEN, TIME_CHANGED, TIME_CHANGED_NEW, USER_NONE)
from ..profile import Profile, parse_time
from ..tables import CATALOG, mep_devices
from ..tables.basic import PROCEDURE_REQUEST_TABLE
from ..tables.catalog import PENDING_BASE, WriteContext, et, label
from ..tables.extended import increment_idt_version
from ..tables.logs import monitoring
from ..metering import engine
from ..metering import registers as energy_registers
from . import conditions, firmware, mbus, pending, relay, setup, transactions
from .history import EventLog
from .access import Key, allows
from .errors import ResponseCode, ServiceError

log = logging.getLogger(__name__)

#: ET42 does not depend on the time; this instant only gives the tables it reads a valid date.
INTERFACE_REFERENCE_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z



@dataclass
class MeterState:
    """Everything about one meter that must survive a restart. Small on purpose."""

    clock_offset: float = 0.0  # meter clock minus the virtual clock, seconds (BP10 moves it)
    alarms: set[str] = field(default_factory=set)
    history: EventLog = field(default_factory=EventLog)  # BT74, the primary event log
    alternate_log: EventLog = field(default_factory=EventLog)  # ET79
    history_sequence: int = 0  # sequence number of the last entry of either log (never reset)
    tables: dict[int, bytes] = field(default_factory=dict)  # stored tables a client wrote
    registers: dict[str, int] = field(default_factory=dict)
    procedure_request: bytes = b""
    procedure_response: bytes = b""
    last_psn: int | None = None
    mep_sequence: int | None = None  # next MEP sequence number expected (None: the profile's)
    pending: list[dict] = field(default_factory=list)  # pending-table slots (device/pending.py)
    last_activation: float | None = None  # meter UTC second of the last pending activation
    interface_digest: str | None = None  # digest of ET42 when last checked (see check_interface)
    interface_profile: str | None = None  # the profile's fingerprint then (profile_fingerprint)
    #: small JSON-able state owned by one subsystem each (relay, prepay, firmware, tariff, ...),
    #: keyed by the subsystem's name; see Meter.subsystem
    subsystems: dict[str, dict] = field(default_factory=dict, repr=False)  # EP20's keys
    #: not in the JSON document: the load profile images (tables.load_profile.LoadProfileMemory,
    #: created on first use; kept here so a Meter rebuilt from this state keeps them) and the
    #: ring files a store loaded, until the meter adopts them ({set index: file bytes})
    load_profile_memory: object = field(default=None, repr=False, compare=False)
    load_profile_files: dict | None = field(default=None, repr=False, compare=False)

    def to_doc(self) -> dict:
        return {
            "clock_offset": self.clock_offset,
            "alarms": sorted(self.alarms),
            "history": self.history.to_doc(),
            "alternate_log": self.alternate_log.to_doc(),
            "history_sequence": self.history_sequence,
            "tables": {str(k): v.hex() for k, v in self.tables.items()},
            "registers": self.registers,
            "procedure_request": self.procedure_request.hex(),
            "procedure_response": self.procedure_response.hex(),
            "last_psn": self.last_psn,
            "mep_sequence": self.mep_sequence,
            "pending": pending.to_doc(self.pending),
            "last_activation": self.last_activation,
            "interface_digest": self.interface_digest,
            "interface_profile": self.interface_profile,
            "subsystems": self.subsystems,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "MeterState":
        return cls(
            clock_offset=float(doc["clock_offset"]),
            alarms=set(doc["alarms"]),
            history=_history_from_doc(doc),
            alternate_log=EventLog.from_doc(doc["alternate_log"]) if "alternate_log" in doc
            else EventLog(),
            history_sequence=int(doc["history_sequence"]),
            tables={int(k): bytes.fromhex(v) for k, v in doc["tables"].items()},
            registers={k: int(v) for k, v in doc["registers"].items()},
            procedure_request=bytes.fromhex(doc["procedure_request"]),
            procedure_response=bytes.fromhex(doc["procedure_response"]),
            last_psn=doc["last_psn"],
            mep_sequence=doc.get("mep_sequence"),
            pending=pending.from_doc(doc.get("pending", [])),
            last_activation=doc.get("last_activation"),
            interface_digest=doc.get("interface_digest"),
            interface_profile=doc.get("interface_profile"),
            subsystems={k: dict(v) for k, v in doc.get("subsystems", {}).items()},
        )


def _history_from_doc(doc: dict) -> EventLog:
    """BT74's state; state files written before the alternate log existed kept a bare list."""
    saved = doc["history"]
    if isinstance(saved, dict):
        return EventLog.from_doc(saved)
    entries = [list(entry) for entry in saved]
    return EventLog(entries, len(entries), int(doc.get("history_unread", 0)),
                    bool(doc.get("history_overflow", False)), int(doc["history_sequence"]))


_OWN_IDENTITY = ("serial_number", "device_id", "utility_serial_number", "neuron_id", "subnet",
                 "node")


def profile_fingerprint(profile: Profile) -> str:
    """A digest of everything in a profile but what tells a fleet's meters apart (meter id,
    serial numbers, Neuron ID, address, keys): what ET42 can depend on, the same for a fleet's
    meters (kept in its template)."""
    shared = profile.template if profile.template is not None else {}
    if "fingerprint" not in shared:
        rest = {k: v for k, v in profile.data.items() if k not in ("meter", "keys", "fleet")}
        rest["identity"] = {k: v for k, v in rest["identity"].items() if k not in _OWN_IDENTITY}
        text = json.dumps([__version__, rest], sort_keys=True, default=str)
        shared["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return shared["fingerprint"]


def _fresh_interface_digest(meter: "Meter") -> str:
    """Fresh meters of one fleet describe the same interface: ET42 is rendered once per fleet,
    not once per meter (13 ms each)."""
    shared = meter.profile.template
    if "interface_digest" not in shared:
        shared["interface_digest"] = meter.interface_digest()
    return shared["interface_digest"]


class Meter:
    #: called with the meter when its state becomes dirty (the runner keeps the set of meters
    #: to save, so saving never scans the fleet); None: nobody is told
    on_dirty = None
    #: presses the meter's service pin on the power line it is on (set by the line's owner:
    #: runner.py); None: on no line, the button has nothing to talk to
    press_service_pin = None

    def __init__(self, profile: Profile, state: MeterState | None = None,
                 now: float | None = None):
        """``now``: the virtual time the meter starts at, so start-up findings (a saved table
        that no longer fits its layout) are logged; None logs nothing (listings, tests)."""
        self.profile = profile
        self.id: str = profile.meter.id
        self.started = now  # virtual time the meter came up (its engine counts from it)
        self.dims = profile.dimensions
        fresh = state is None
        if fresh:
            state = MeterState()
        for name in energy_registers.NAMES.values():  # registers new since the state was saved
            state.registers.setdefault(name, getattr(profile.registers, name, 0))
        self.state = state
        self.dirty = False
        #: called with (meter, event document) for every logged event (the MQTT bridge
        #: publishes them); a listener must not raise and must not log events itself
        self.event_listeners: list = []
        firmware.restore(self)  # the firmware a code bank switch installed, if any
        _upgrade_tables(state)
        self.drop_mismatched_tables(now)
        if fresh:  # the profile's demand set-up is the factory's: no interface change
            setup.configure(self)
        fingerprint = profile_fingerprint(profile)
        if fresh and profile.template is not None:
            self.state.interface_digest = _fresh_interface_digest(self)
        elif fresh or state.interface_profile != fingerprint or not state.interface_digest:
            self.check_interface()
        # else: the same profile as when ET42 was last checked, and every change a client
        # makes checks it at once (EP06, EP11, a code bank switch): a restart skips 13 ms
        self.state.interface_profile = fingerprint
        if fresh:  # what the profile says this meter lived through (device/setup.py)
            setup.live(self, INTERFACE_REFERENCE_TIME if now is None else now)

    def drop_mismatched_tables(self, now: float | None = None) -> None:
        """Stored table images that no longer fit their layout (the profile's dimensions or the
        firmware changed since they were written) are dropped, so a table never reads back
        torn; with ``now``, each is logged as 'Configuration Error Detected'."""
        for table_id, raw in list(self.state.tables.items()):
            table = CATALOG.get(table_id)
            if table is None or not table.stored or len(raw) != table.layout_for(self).sizeof():
                log.warning("meter %s: stored %s no longer matches its layout; using defaults",
                            self.id, label(table_id))
                del self.state.tables[table_id]
                self.dirty = True
                if now is not None:
                    self.raise_alarm("configuration_error")
                    self.log_event(CONFIGURATION_ERROR.number, table_id, now)

    @property
    def dirty(self) -> bool:
        """The state changed since it was last saved."""
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        if value and self.on_dirty is not None:
            self.on_dirty(self)

    def interface_digest(self) -> str:
        """A digest of ET42 as the meter renders it now."""
        image = self.table_bytes(et(42), INTERFACE_REFERENCE_TIME)
        return hashlib.sha256(image).hexdigest()[:16]

    def check_interface(self) -> None:
        """ET42 describes every dimension a reader relies on. When what it says changes (the
        profile's load profile or firmware version changed across a restart, a reconfiguration),
        the meter increments ET04's IDT Version and raises BT03 "Dimension Change" (MEP p.110)."""
        digest = self.interface_digest()
        previous, self.state.interface_digest = self.state.interface_digest, digest
        if previous is None or previous == digest:
            return
        idt_version = increment_idt_version(self)
        self.raise_alarm("dimension_change")
        log.warning("meter %s: the interface definition (ET42) changed; IDT version now %d",
                    self.id, idt_version)

    # ---- clock -------------------------------------------------------------------------
    def utc(self, now: float) -> dt.datetime:
        """The meter's own UTC time (naive, whole seconds) at virtual time ``now``."""
        moment = dt.datetime.fromtimestamp(int(now + self.state.clock_offset), dt.timezone.utc)
        return moment.replace(tzinfo=None)

    def utc_seconds(self, now: float) -> float:
        """The meter's UTC clock as epoch seconds (virtual time plus the meter's offset)."""
        return now + self.state.clock_offset

    def local(self, now: float) -> dt.datetime:
        """The TOU clock (BT55, MEP p.229-230): UTC plus BT53's time zone offset, so a client's
        BT53 write moves it (the profile's offset is only BT53's default), plus BT53's DST
        adjustment while DST is in effect (the TOU engine switches it at BT54's DST dates)."""
        from ..metering.tou import local_offset

        return self.utc(now) + dt.timedelta(seconds=local_offset(self, now))

    def set_utc(self, now: float, new_utc: dt.datetime, user_id: int = USER_NONE,
                argument: int = 0) -> None:
        """Set the meter clock (BP10): see ``move_clock``."""
        self.move_clock(now, new_utc.replace(tzinfo=dt.timezone.utc).timestamp(), user_id,
                        argument)

    def move_clock(self, now: float, new_utc: float, user_id: int = USER_NONE,
                   argument: int = 0) -> None:
        """Set the meter clock to ``new_utc`` seconds and log 'time changed' twice, as C12.19
        pairs them: event 3 stamped with the old time, event 4 with the new one. ``argument``
        is 0 for an absolute time (BP10), the change in seconds for a gradual one (EP16). The
        metering engine is told, so load profile intervals carry the clock-set flags."""
        self.advance(now)
        old_utc = self.utc_seconds(now)
        self.log_event(TIME_CHANGED.number, argument, now, user_id)
        self.state.clock_offset = new_utc - now
        self.dirty = True
        self.log_event(TIME_CHANGED_NEW.number, argument, now, user_id)
        engine.clock_changed(self, now, old_utc, new_utc)

    @property
    def mep_sequence(self) -> int:
        """The MEP sequence number the meter expects next."""
        if self.state.mep_sequence is None:
            return self.profile.mep.sequence_number
        return self.state.mep_sequence

    def set_mep_sequence(self, value: int) -> None:
        self.state.mep_sequence = value
        self.dirty = True

    def system_info(self):
        """ET04 System Information as parsed values: settings clients may change live there."""
        table = CATALOG[et(4)]
        return table.layout_for(self).parse(self.table_bytes(et(4), 0.0))

    # ---- keys, alarms, events -----------------------------------------------------------
    def check_password(self, password: bytes) -> Key | None:
        """The optical key a 20-byte C12.18 password matches, or None (OPG p.13)."""
        candidates = [(Key.MK, "mk"), (Key.PK, "pk"), (Key.RK, "rk")]
        matched = None
        for key, name in candidates:  # all compared (no timing hint); the strongest key wins
            same = hmac.compare_digest(self.profile.key(name), password.ljust(20, b"\0")[:20])
            if same and matched is None:
                matched = key
        if matched is Key.PK and self.system_info().pk_access != 0:  # ET04.52: 1 = disabled
            return None
        return matched

    def subsystem(self, name: str, **defaults) -> dict:
        """The state dict a subsystem owns (created with ``defaults`` on first use). Values must
        be JSON-able; whoever changes it sets ``meter.dirty``."""
        own = self.state.subsystems.setdefault(name, {})
        for key, value in defaults.items():
            own.setdefault(key, value)
        return own

    def count(self, counter: str) -> None:
        """One more of ``counter`` in the diagnostic counters EP29 reports (procedures run,
        tables written, invalid passwords, ...)."""
        counters = self.subsystem("diagnostics")
        counters[counter] = counters.get(counter, 0) + 1
        self.dirty = True

    def raise_alarm(self, name: str) -> None:
        if name not in self.state.alarms:
            self.state.alarms.add(name)
            self.dirty = True

    def log_event(self, event: int, argument: int, now: float, user_id: int = USER_NONE) -> bool:
        """Record an event in its log if BT73 monitors it: the alternate event log (ET79) for
        the events routed there, else the history log (BT74). Returns whether it was logged."""
        if event not in EVENTS:
            raise ValueError(f"event {event} is not in the catalog")
        if event not in monitoring(self).events:
            return False
        st = self.state
        st.history_sequence = (st.history_sequence + 1) & 0xFFFFFFFF
        entry = [int(now + st.clock_offset), st.history_sequence, user_id & 0xFFFF, event,
                 argument & 0xFFFF]
        target = st.alternate_log if event in ALTERNATE_LOG_EVENTS else st.history
        target.append(entry, self.dims.history_entries)
        self.dirty = True
        log.info("meter %s: event %d %s (argument %d)", self.id, event, EVENTS[event].name,
                 argument)
        if target is st.history:
            self._history_alarms(now)
        if self.event_listeners:
            document = dict(number=event, name=EVENTS[event].name, argument=argument & 0xFFFF,
                            user_id=user_id & 0xFFFF, sequence=st.history_sequence,
                            time=self.utc(now).isoformat() + "Z",
                            log="ET79" if target is st.alternate_log else "BT74")
            for listener in self.event_listeners:
                listener(self, document)
        return True

    def log_access(self, event: int, number: int, now: float, user_id: int) -> None:
        """'Procedure Invoked' (9) or 'Table Written To' (10), if BT73 monitors that procedure
        or table as well as the event."""
        watched = monitoring(self)
        if event == PROCEDURE_INVOKED.number:
            subjects, subject = watched.procedures, number
        else:  # a pending table (4096 + ID) is watched as its table; the argument says pending
            subjects, subject = watched.tables, number % PENDING_BASE
        if subject in subjects:
            self.log_event(event, number, now, user_id)

    def _history_alarms(self, now: float) -> None:
        """BT03 'Event Log Unread Entries' while BT74 has unread entries, 'Event Log Overflow
        Pending' once they fill the log (OPG p.46-47)."""
        unread, size = self.state.history.unread, self.dims.history_entries
        if unread and "event_log_unread_entries" not in self.state.alarms:
            conditions.begin(self, "event_log_unread_entries", now)
        if unread >= size and "event_log_overflow_pending" not in self.state.alarms:
            conditions.begin(self, "event_log_overflow_pending", now)

    def history_read(self) -> None:
        """After BP04/BP05 moved BT74's pointers: drop the alarms that no longer hold."""
        if self.state.history.unread < self.dims.history_entries:
            conditions.end(self, "event_log_overflow_pending")
        if self.state.history.unread == 0:
            conditions.end(self, "event_log_unread_entries")

    # ---- timed actions ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The virtual instant of the meter's next timed action (the runner sleeps until it)."""
        dues = [due for due in (pending.next_due(self), relay.next_due(self),
                                engine.next_due(self), mep_devices.next_due(self),
                                mbus.next_due(self))
                if due is not None]
        return min(dues) - self.state.clock_offset if dues else None

    def advance(self, now: float) -> None:
        """Carry out every timed action due by ``now``, each at its own instant. Called before
        each service, so no client ever sees a state that should already have changed. The
        relay's timed actions are engine hooks (metering/control.py), so the energy before a
        switch is metered with the contactor as it was; ``relay.run_due`` afterwards only
        catches what the engine had no step for (its first call)."""
        transactions.resume(self, now)  # a transaction a power cut interrupted (MEP p.43)
        pending.activate_due(self, now)
        engine.advance(self, now)
        if "relay" in self.state.subsystems:
            relay.run_due(self, now)
        mep_devices.run_due(self, now)
        mbus.run_due(self, now)

    # ---- table services -----------------------------------------------------------------
    def _table(self, table_id: int):
        table = CATALOG.get(table_id)
        if table is None:
            raise ServiceError(ResponseCode.IAR, f"{label(table_id)} does not exist in this meter")
        return table

    def table_bytes(self, table_id: int, now: float) -> bytes:
        """The whole table image, with no access check (for the meter itself and for tests)."""
        table = self._table(table_id)
        if table.stored and table_id in self.state.tables:
            return self.state.tables[table_id]
        values = table.defaults(self) if table.stored else table.render(self, now)
        layout = table.layout_for(self)
        if isinstance(values, (bytes, bytearray)):  # a large table rendered straight to bytes
            if len(values) != _size(layout):
                raise AssertionError(f"{table.label} rendered {len(values)} bytes, "
                                     f"its layout says {layout.sizeof()}")
            return bytes(values)
        return layout.build(values)

    def read_table(self, table_id: int, key: Key | None, now: float,
                   offset: int = 0, count: int | None = None) -> bytes:
        """A full or partial read; for a pending table the PED comes first and counts in
        ``count`` while ``offset`` stays an offset into the table (OPG p.9)."""
        self.advance(now)
        if table_id >= PENDING_BASE:
            table = pending.pendable(table_id)
            if not allows(table.read, key):
                raise ServiceError(ResponseCode.ISC, f"{label(table_id)} is not readable with {key}")
            image = pending.read(self, table_id, now)
            ped, body = image[:pending.PED_SIZE], image[pending.PED_SIZE:]
            image = ped + body[offset:]
            return image if count is None else image[:count].ljust(count, b"\0")
        table = self._table(table_id)
        if not allows(table.read, key):
            raise ServiceError(ResponseCode.ISC, f"{table.label} is not readable with {key}")
        image = self.table_bytes(table_id, now)
        if count is None:
            return image[offset:]
        return image[offset:offset + count].ljust(count, b"\0")

    def write_table(self, table_id: int, data: bytes, ctx: WriteContext, offset: int = 0) -> None:
        self.advance(ctx.now)
        table = pending.pendable(table_id) if table_id >= PENDING_BASE else self._table(table_id)
        if not table.writable:
            raise ServiceError(ResponseCode.IAR, f"{table.label} is read-only")
        if ctx.key not in table.write:
            raise ServiceError(ResponseCode.ISC, f"{label(table_id)} is not writable with {ctx.key}")
        if table_id >= PENDING_BASE:
            pending.write(self, table_id, data, ctx, offset)
        else:
            old = self.table_bytes(table_id, ctx.now)
            if offset >= len(old):
                raise ServiceError(ResponseCode.IAR,
                                   f"offset {offset} is past the end of {table.label} ({len(old)})")
            data = data[: len(old) - offset]
            new = old[:offset] + data + old[offset + len(data):]
            self.store_table(table, new, dataclasses.replace(ctx, written=data, offset=offset))
        if table_id != PROCEDURE_REQUEST_TABLE:  # a BT07 write counts as a procedure
            self.count("tables_written")
        self.log_access(TABLE_WRITTEN.number, table_id, ctx.now, ctx.user_id)

    def store_table(self, table, new: bytes, ctx: WriteContext) -> None:
        """Make ``new`` the table's image: it must parse with the layout and pass the table's own
        checks (``apply``), or nothing changes. Client writes and pending activations end here."""
        layout = table.layout_for(self)
        try:
            values = layout.parse(new)
            layout.build(values)  # validators run on build, too
        except (ConstructError, ValueError) as exc:
            raise ServiceError(ResponseCode.ERR, f"{table.label}: invalid data: {exc}") from None
        if table.apply is not None:
            kept = table.apply(self, values, ctx)
            if kept is not None:  # the table kept some fields the client may not change
                new = layout.build(kept)
        if table.stored:
            self.state.tables[table.number] = new
        self.dirty = True


_SIZES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _size(layout) -> int:
    """A layout's size, once per layout object (a large Struct's sizeof walks every field)."""
    size = _SIZES.get(layout)
    if size is None:
        size = _SIZES[layout] = layout.sizeof()
    return size


def _upgrade_tables(state: MeterState) -> None:
    """Saved images of tables that grew since: ET05 gained designed bytes 26-35 (zero by
    default), so an older 26-byte image keeps its settings instead of being dropped."""
    from ..tables.time_tou import ET05_FIRST_SIZE

    et05 = state.tables.get(et(5))
    if et05 is not None and len(et05) == ET05_FIRST_SIZE:
        state.tables[et(5)] = et05 + bytes(CATALOG[et(5)].layout.sizeof() - ET05_FIRST_SIZE)


def start_time(profile: Profile) -> float | None:
    """The profile's clock start as epoch seconds, or None for 'now'."""
    start = profile.clock.start
    return None if start == "now" else parse_time(start).timestamp()

