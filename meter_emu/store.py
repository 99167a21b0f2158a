"""Persistent meter state: what a client was told survives ``kill -9``.

``--state DIR`` keeps one TinyDB document per meter in ``DIR/meters.json``. TinyDB rewrites the
whole file on every write, so its storage here writes a temporary file, fsyncs it and renames it
over the old one (``os.replace`` is atomic): a crash leaves either the old or the new file, never
a torn one. There is one writer (the event loop thread), and ports call ``flush`` after handling
input and before answering, so an acknowledged write is on disk before the ACK leaves.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from .device.meter import MeterState

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class StoreError(RuntimeError):
    """State that cannot be read or written; the message names the file."""


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces its file atomically on each write."""

    def __init__(self, path: str):
        self.path = Path(path)

    def read(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise StoreError(f"state file {self.path} is not text") from None
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"state file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StoreError(f"state file {self.path} is not a meter-emu state file")
        return data

    def write(self, data) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        """Nothing to release: every write opens and closes its own file."""


class StateStore:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {directory}: {exc.strerror}") from None
        self.path = self.directory / "meters.json"
        self.db = TinyDB(self.path, storage=AtomicJSONStorage)
        self.meters = self.db.table("meters")

    def load(self, meter_id: str) -> MeterState | None:
        try:
            doc = self.meters.get(Query().id == meter_id)
        except (AttributeError, TypeError) as exc:
            raise StoreError(f"state file {self.path} is damaged: {exc}") from None
        if doc is None:
            return None
        if doc.get("format") != FORMAT_VERSION:
            raise StoreError(f"state file {self.path}: meter {meter_id} has format "
                             f"{doc.get('format')}, this version reads {FORMAT_VERSION}")
        try:
            return MeterState.from_doc(doc["state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"state file {self.path}: state of meter {meter_id} is damaged: "
                             f"{exc!r}") from None

    def save(self, meter) -> None:
        doc = {"id": meter.id, "format": FORMAT_VERSION, "state": meter.state.to_doc()}
        self.meters.upsert(doc, Query().id == meter.id)
        meter.dirty = False

    def flush(self, meters) -> None:
        for meter in meters:
            if meter.dirty:
                self.save(meter)

    def close(self) -> None:
        self.db.close()
