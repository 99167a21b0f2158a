"""Persistent meter state: what a client was told survives ``kill -9``.

``--state DIR`` keeps one TinyDB document per meter in ``DIR/meters.json``. TinyDB rewrites the
whole file on every write, so its storage here writes a temporary file, fsyncs it and renames it
over the old one (``os.replace`` is atomic): a crash leaves either the old or the new file, never
a torn one. There is one writer (the event loop thread), and ports call ``flush`` after handling
input and before answering, so an acknowledged write is on disk before the ACK leaves.

Load profile data does not go into the JSON: each data set's BT64..BT67 image is a binary file
next to it, ``<meter id>.lp<set number>.bin`` (tables/load_profile.py makes and checks its
contents), replaced the same atomic way when it changed, and always before the JSON, so after a
crash the ring is never older than the status that describes it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import quote

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from .device.meter import MeterState
from .tables import load_profile

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
        atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode())

    def close(self) -> None:
        """Nothing to release: every write opens and closes its own file."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file, fsynced, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


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
            state = MeterState.from_doc(doc["state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"state file {self.path}: state of meter {meter_id} is damaged: "
                             f"{exc!r}") from None
        # the meter checks them against its configuration when it first needs them
        state.load_profile_files = self._ring_files(meter_id)
        return state

    def ring_path(self, meter_id: str, index: int) -> Path:
        """The file of data set ``index`` (0-based) of a meter."""
        return self.directory / f"{quote(meter_id, safe='')}.lp{index + 1}.bin"

    def _ring_files(self, meter_id: str) -> dict[int, bytes]:
        files = {}
        for index in range(load_profile.MAX_DATA_SETS):
            path = self.ring_path(meter_id, index)
            try:
                files[index] = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:  # unreadable: the set starts empty, as for a bad file
                log.warning("cannot read %s: %s", path, exc.strerror)
                files[index] = b""
        return files

    def save(self, meter) -> None:
        """The changed ring files first, then the JSON document."""
        for index, image in load_profile.changed_ring_files(meter):
            path = self.ring_path(meter.id, index)
            try:
                if image is None:
                    path.unlink(missing_ok=True)
                    _sync_directory(self.directory)
                else:
                    atomic_write(path, image)
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {exc.strerror}") from None
        load_profile.ring_files_saved(meter)
        doc = {"id": meter.id, "format": FORMAT_VERSION, "state": meter.state.to_doc()}
        self.meters.upsert(doc, Query().id == meter.id)
        meter.dirty = False

    def flush(self, meters, progress=None) -> None:
        """Save those of ``meters`` that are dirty; ``progress``: a fleet.progress.Progress
        told how many are done."""
        for done, meter in enumerate(list(meters), 1):
            if meter.dirty:
                self.save(meter)
            if progress is not None:
                progress.update(done)
        if progress is not None:
            progress.finish()

    def close(self) -> None:
        self.db.close()
