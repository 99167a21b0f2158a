"""The event logs: the primary history log (BT74) and the alternate event log (ET79).

Both are circular queues of BT71.5 entries (MEP p.181-183, p.241-243). One sequence number
counts the entries of both logs together ("events 1-10 may occur in the primary log, 11-15 in
the alternate log"), so each log also counts its own entries to know which array element comes
next. The meter increments the unread count; the host decrements it with BP05 and zeroes it with
BP04, which also clear the overflow flag (set when unread entries exceed the log's size).

An entry is ``[utc, sequence, user_id, event, argument]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EventLog:
    entries: list[list[int]] = field(default_factory=list)  # oldest first, at most the log size
    written: int = 0  # entries written since the log was last cleared (places the next one)
    unread: int = 0
    overflow: bool = False
    last_sequence: int = 0  # of the newest entry ever written here; never reset (MEP p.241)

    def append(self, entry: list[int], size: int) -> None:
        self.entries.append(entry)
        self.last_sequence = entry[1]
        del self.entries[: max(0, len(self.entries) - size)]
        self.written += 1
        if self.unread >= size:
            self.overflow = True
        else:
            self.unread += 1

    def last_element(self, size: int) -> int:
        """Array index of the newest entry (0 when the log is empty)."""
        return (self.written - 1) % size if self.entries else 0

    def placed(self, size: int):
        """(element, entry) for each entry held: the newest sits at ``last_element``."""
        first = self.written - len(self.entries)
        for i, entry in enumerate(self.entries):
            yield (first + i) % size, entry

    def acknowledge(self, count: int) -> int:
        """BP05: ``count`` entries were read. Returns how many unread ones that took."""
        taken = min(count, self.unread)
        self.unread -= taken
        self.overflow = False
        return taken

    def reset_pointers(self) -> None:
        """BP04: nothing is unread any more."""
        self.unread = 0
        self.overflow = False

    def clear(self) -> None:
        """Empty the log (EP38/EP40); the shared sequence number is never reset (MEP p.241)."""
        self.entries.clear()
        self.written = 0
        self.reset_pointers()

    def to_doc(self) -> dict:
        return {"entries": self.entries, "written": self.written, "unread": self.unread,
                "overflow": self.overflow, "last_sequence": self.last_sequence}

    @classmethod
    def from_doc(cls, doc: dict) -> "EventLog":
        return cls([list(e) for e in doc["entries"]], int(doc["written"]), int(doc["unread"]),
                   bool(doc["overflow"]), int(doc["last_sequence"]))
