"""Persistent meter state: what a client was told survives ``kill -9``.

``--state DIR`` keeps one small JSON document per meter, ``DIR/meters/<quoted id>.json``
(``{"id", "format", "state"}``), so saving a meter rewrites a few kilobytes whatever the size
of the fleet, and shard processes sharing DIR never touch each other's files (each owns its
meters' files; temporary files are named after their target). A document is replaced
atomically: a temporary file, fsynced, renamed over the old one (``os.replace``), then the
directory fsynced: a crash leaves the old or the new document, never a torn one, and a
leftover ``.tmp`` is ignored (not deleted: in a shared DIR it may be another process's write in
progress). Ports call ``flush`` after handling input and before answering, so an acknowledged
write is on disk before the ACK leaves.

Load profile data does not go into the JSON: each data set's BT64..BT67 image is a binary file
``DIR/<quoted id>.lp<set number>.bin`` (tables/load_profile.py makes and checks its contents),
replaced the same atomic way when it changed, and always before the JSON, so after a crash the
ring is never older than the status that describes it.

Designed (no public text fixes these): the layout above; no TinyDB any more (DESIGN.md 7 allows
it for small documents only, and it is not process-safe: the format version that a store-wide
file could hold is in every document, and the ``meters/`` directory marks the layout); flushes
of many meters at once (a shutdown, a fleet closing an interval together) write every
temporary file, sync them with one ``syncfs``, rename the ring files, fsync DIR, rename the
documents and fsync ``meters/`` once: each file is still old or new after a crash, and rings
still land before their documents. A DIR written by the one-file layout (TinyDB's
``meters.json``, table ``meters``) is converted once when opened, under an exclusive lock on
DIR (shards may open it together): per-meter files first, then ``meters.json`` is renamed
``meters.json.migrated``.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import quote

from .device.meter import MeterState
from .tables import load_profile

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DOCUMENTS = "meters"  # the subdirectory of the per-meter documents
LEGACY = "meters.json"  # the one-file layout of earlier versions
#: flushes of at least this many meters share one sync instead of one fsync per file
BATCH = 8
_RING_NAME = re.compile(r"(.*)\.lp\d+\.bin")


class StoreError(RuntimeError):
    """State that cannot be read or written; the message names the file."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file, fsynced, renamed over it."""
    os.replace(_write_temporary(path, data, fsync=True), path)
    _sync_directory(path.parent)


def _write_temporary(path: Path, data: bytes, fsync: bool) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    return tmp


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _sync_file_system(directory: Path) -> None:
    """Everything written to the file system of ``directory`` is on disk: ``syncfs`` where libc
    has it, else ``sync``."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is not None:
        handle = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(handle) == 0:
                return
        finally:
            os.close(handle)
    os.sync()


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to load: os.sync does
    _LIBC = None


def _state_from_doc(doc, path: Path, meter_id: str | None = None) -> MeterState:
    """The state a document holds, or a StoreError naming ``path``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise StoreError(f"state file {path} is damaged: not a meter document")
    if meter_id is not None and doc["id"] != meter_id:
        raise StoreError(f"state file {path} holds meter {doc['id']!r}, not {meter_id!r}")
    if doc.get("format") != FORMAT_VERSION:
        raise StoreError(f"state file {path}: meter {doc['id']} has format "
                         f"{doc.get('format')}, this version reads {FORMAT_VERSION}")
    try:
        return MeterState.from_doc(doc["state"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"state file {path}: state of meter {doc['id']} is damaged: "
                         f"{exc!r}") from None


def _read_json(path: Path):
    """The JSON value in ``path`` (None when empty), or a StoreError naming it."""
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise StoreError(f"state file {path} is not text") from None
    except OSError as exc:
        raise StoreError(f"cannot read state file {path}: {exc.strerror}") from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"state file {path} is not valid JSON: {exc}") from None


class StateStore:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.documents = self.directory / DOCUMENTS
        try:
            self.documents.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {directory}: {exc.strerror}") from None
        self._saved: set[str] = set()  # names of the documents in DIR/meters
        self._rings: set[str] = set()  # quoted ids that have ring files
        if (self.directory / LEGACY).exists():
            self._migrate_locked()
        # one listing each instead of failed opens for every fresh meter
        self._saved = {name for name in os.listdir(self.documents) if name.endswith(".json")}
        self._rings = {match[1] for name in os.listdir(self.directory)
                       if (match := _RING_NAME.fullmatch(name))}

    def document_path(self, meter_id: str) -> Path:
        return self.documents / (quote(meter_id, safe='') + ".json")

    def ring_path(self, meter_id: str, index: int) -> Path:
        """The file of data set ``index`` (0-based) of a meter."""
        return self.directory / f"{quote(meter_id, safe='')}.lp{index + 1}.bin"

    def load(self, meter_id: str) -> MeterState | None:
        name = quote(meter_id, safe='') + ".json"
        if name not in self._saved:
            return None
        path = self.documents / name
        try:
            doc = _read_json(path)
        except StoreError:
            if not path.exists():  # deleted since the listing: a fresh meter
                return None
            raise
        state = _state_from_doc(doc, path, meter_id)
        # the meter checks them against its configuration when it first needs them
        state.load_profile_files = self._ring_files(meter_id)
        return state

    def _ring_files(self, meter_id: str) -> dict[int, bytes]:
        files = {}
        if quote(meter_id, safe='') not in self._rings:
            return files
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
        """The changed ring files first, then the JSON document, each on disk before the next."""
        self._write([meter], batch=False)

    def flush(self, meters, progress=None) -> None:
        """Save those of ``meters`` that are dirty; ``progress``: a fleet.progress.Progress
        told how many are done."""
        dirty = [meter for meter in meters if meter.dirty]
        self._write(dirty, batch=len(dirty) >= BATCH, progress=progress)
        if progress is not None:
            progress.finish()

    def _write(self, meters, batch: bool, progress=None) -> None:
        """Save ``meters``: one file at a time, or (``batch``) all temporary files, one sync,
        then the renames, rings before documents."""
        rings, documents = [], []  # (temporary file or None to delete, path)
        path = self.directory
        try:
            for done, meter in enumerate(meters, 1):
                for index, image in load_profile.changed_ring_files(meter):
                    path = self.ring_path(meter.id, index)
                    if image is None:
                        rings.append((None, path))
                    else:
                        rings.append((_write_temporary(path, image, fsync=not batch), path))
                    if not batch:
                        self._replace(rings)
                path = self.document_path(meter.id)
                doc = {"id": meter.id, "format": FORMAT_VERSION, "state": meter.state.to_doc()}
                text = json.dumps(doc, separators=(",", ":")).encode()
                documents.append((_write_temporary(path, text, fsync=not batch), path))
                if not batch:
                    self._replace(documents)
                    self._saved_ok(meter)
                if progress is not None:
                    progress.update(done)
            if batch:
                path = self.directory
                _sync_file_system(self.directory)
                self._replace(rings)
                self._replace(documents)
                for meter in meters:
                    self._saved_ok(meter)
        except OSError as exc:
            raise StoreError(f"cannot write {exc.filename or path}: {exc.strerror}") from None

    def _replace(self, files: list) -> None:
        """Rename (or delete) ``files`` in place and fsync their directory; empties the list."""
        if not files:
            return
        for tmp, path in files:
            if tmp is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
                if path.parent == self.directory:
                    self._rings.add(path.name[:path.name.rindex(".lp")])
                else:
                    self._saved.add(path.name)
        _sync_directory(files[0][1].parent)
        files.clear()

    @staticmethod
    def _saved_ok(meter) -> None:
        load_profile.ring_files_saved(meter)
        meter.dirty = False

    # ---- the one-file layout of earlier versions -----------------------------------------

    def _migrate_locked(self) -> None:
        handle = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by close
            legacy = self.directory / LEGACY
            if legacy.exists():  # not converted by another process meanwhile
                self._migrate(legacy)
        finally:
            os.close(handle)

    def _migrate(self, legacy: Path) -> None:
        """Per-meter documents from ``legacy`` (all checked first: a damaged file is refused
        and left alone), then the file renamed. A document already there is newer: kept."""
        data = _read_json(legacy) or {}
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StoreError(f"state file {legacy} is not a meter-emu state file")
        docs = list(data.get("meters", {}).values())
        for doc in docs:
            _state_from_doc(doc, legacy)
        written = []
        try:
            for doc in docs:
                path = self.document_path(doc["id"])
                if not path.exists():
                    text = json.dumps(doc, separators=(",", ":")).encode()
                    written.append((_write_temporary(path, text, fsync=False), path))
            _sync_file_system(self.directory)
            self._replace(written)
            os.replace(legacy, legacy.with_name(LEGACY + ".migrated"))
            _sync_directory(self.directory)
        except OSError as exc:
            raise StoreError(f"cannot convert {legacy}: {exc.filename}: {exc.strerror}") from None
        log.info("state %s converted to one file per meter in %s (%d meters); the old file is "
                 "kept as %s.migrated", legacy, self.documents, len(docs), LEGACY)

    def close(self) -> None:
        """Nothing to release: every write opens and closes its own files."""
