"""The upload journal: content that was saved locally and not yet confirmed by the server.

Layout (``<cache-dir>/journal/``, 0700; files 0600)::

    <id>.data       the content to upload, fsynced before the entry exists
    <id>.json       the entry's record: key, meta, size, state, attempts, times
    <id>.json.tmp   a record being written (ignored and removed at load)
    <x>.staging     content still being written by an open file (see ``staging_path``)

Durability: ``commit`` fsyncs the content, renames it to ``<id>.data``, writes the record to a
temporary file, fsyncs it, renames it over ``<id>.json`` and fsyncs the directory. Only then does
it return, so a save acknowledged to the user survives ``kill -9`` and a power cut. Every later
change of the record uses the same write-temp-then-rename, so a record on disk is always whole.

A full or failing disk: a commit that cannot write its record raises the disk's error and leaves
the journal as it was, with the content back in its staging file (the caller's, to commit again
or keep); a change of a record that cannot be written raises it too and leaves the entry as it
was, in memory and on disk. Neither leaves a file behind.

At load, a ``.data`` file without a record was never acknowledged (a crash inside ``commit``) or
already sent (a crash inside ``complete``): it is removed. A record whose content is missing is
kept and shown as failed: the journal never drops an entry on its own, only ``complete`` (after
the server confirmed) and ``discard`` (an explicit user action) remove one. An unreadable record
is renamed to ``<id>.json.corrupt`` and its content kept, for a human to look at.

Thread safety: ``commit`` fsyncs a file that may be large, so callers may run it in a worker
thread (``trio.to_thread.run_sync``); every method takes an internal lock, and the slow fsync of
the content happens before the lock is taken.

Scale: a journal may hold 100 000 entries (a large copy made while offline). Entries are indexed
by key, by state and by commit order, so that a lookup by key, the counts per state, a page of
entries in commit order (``after``) and the uploader's ``take_changes`` cost the same whatever
the journal holds; only ``entries`` (every entry, copied) grows with it.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bimfs.cache.errors import JournalEntryNotFoundError, JournalError
from bimfs.cache.files import delete, fsync_dir

log = logging.getLogger(__name__)

PENDING = "pending"
UPLOADING = "uploading"
FAILED = "failed"
STATES = (PENDING, UPLOADING, FAILED)

_FORMAT = 1


@dataclass
class JournalEntry:
    """One saved content waiting for its upload.

    ``key`` names the upload target (the caller's convention, e.g. ``doc:<id>``); entries of one
    key are uploaded in commit order. ``meta`` is the caller's, JSON-serialisable and opaque to
    the journal. ``attempts`` counts the uploads started: above 1 a previous attempt may have
    reached the server, which the upload callable must settle before sending again;
    ``first_attempt`` (wall clock) is when the first of them started, recorded before it was
    sent.
    """

    id: str
    key: str
    meta: dict[str, Any]
    data_path: Path
    size: int
    state: str = PENDING
    reason: str = ""
    attempts: int = 0
    created: float = 0.0
    updated: float = 0.0
    not_before: float = 0.0
    seq: int = field(default=0)
    first_attempt: float = 0.0

    @property
    def name(self) -> str:
        """A file name for display: ``meta["file_name"]`` (else ``name``), else the key."""
        for field_name in ("file_name", "name"):
            value = self.meta.get(field_name)
            if isinstance(value, str) and value:
                return value
        return self.key

    @property
    def display_state(self) -> str:
        """``pending``, ``uploading`` or ``failed: <reason>`` (the ``user.bimfs.state`` value)."""
        return f"{FAILED}: {self.reason}" if self.state == FAILED else self.state


class Journal:
    """Pending uploads on disk under ``<root>/journal``."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "journal"
        Path(root).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._lock = threading.RLock()
        self._entries: dict[str, JournalEntry] = {}
        # Indexes, kept up to date by ``_put`` and ``_drop`` only.
        self._order: list[int] = []  # the seq of every entry, ascending
        self._seq_ids: dict[int, str] = {}  # seq -> entry id
        self._keys: dict[str, set[str]] = {}  # key -> entry ids
        # state -> entry ids, in the order they entered the state
        self._states: dict[str, dict[str, None]] = {state: {} for state in STATES}
        self._bytes = 0
        self._state_bytes = dict.fromkeys(STATES, 0)  # state -> bytes of its entries
        # Keys whose entries changed and ids of removed entries, once someone asked for them.
        self._changes: tuple[set[str], set[str]] | None = None
        self._seq = 0
        self._load()

    # ------------------------------------------------------------------------------ writing

    def staging_path(self) -> Path:
        """A new, empty file (0600) in the journal directory for the caller to write into.

        Content in a staging file is not yet durable: pass it to ``commit``, or delete it. Staging
        files left over by a crash are removed at the next load (their content was never saved).
        """
        path = self.dir / f"{secrets.token_hex(12)}.staging"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        return path

    def commit(self, key: str, meta: dict[str, Any], staging: Path) -> JournalEntry:
        """Make ``staging``'s content a durable entry for ``key``; returns the new entry.

        A still-pending entry of the same key is superseded (removed with its content), so
        several saves within the quiet period give one upload. An entry being uploaded is left
        alone: the new one is uploaded after it. Failed entries are kept (never dropped
        silently). Raises ``JournalError`` for a staging file outside the journal or a ``meta``
        that is not JSON-serialisable.
        """
        staging = Path(staging)
        if staging.parent.resolve() != self.dir.resolve():
            raise JournalError(f"{staging} is not a staging file of this journal")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"journal meta is not JSON-serialisable: {exc}") from exc
        fd = os.open(staging, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        with self._lock:
            self._seq += 1
            now = time.time()
            entry_id = f"{self._seq:010d}-{secrets.token_hex(6)}"
            data_path = self.dir / f"{entry_id}.data"
            os.rename(staging, data_path)
            entry = JournalEntry(
                id=entry_id,
                key=key,
                meta=copy.deepcopy(meta),
                data_path=data_path,
                size=size,
                created=now,
                updated=now,
                seq=self._seq,
            )
            try:
                self._write_record(entry)  # fsyncs the directory: covers the rename above too
            except BaseException:
                # Not saved: give the content back to its staging file, whole, for the caller
                # to commit again (a .data without a record would be deleted at the next load).
                record = self._record_path(entry_id)
                for leftover in (record, record.with_name(record.name + ".tmp")):
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
                with contextlib.suppress(OSError):
                    os.rename(data_path, staging)
                raise
            self._put(entry)
            for old in [self._entries[i] for i in self._keys[key]]:
                if old.state == PENDING and old.seq < entry.seq:
                    log.debug("save of %s supersedes the pending one", entry.name)
                    self._remove(old)
            return self._copy(entry)

    # ------------------------------------------------------------------------------ reading

    def entries(self) -> list[JournalEntry]:
        """Copies of every entry, oldest first (grows with the journal: see ``after``)."""
        with self._lock:
            return [self._copy(self._entries[self._seq_ids[seq]]) for seq in self._order]

    def after(self, seq: int, limit: int) -> list[JournalEntry]:
        """Copies of at most ``limit`` entries committed after the entry numbered ``seq``
        (``JournalEntry.seq``; 0 for the first), oldest first: one page of the journal.

        Paging on with the last entry's ``seq`` lists every entry that exists throughout once,
        even while others are added or removed in between.
        """
        with self._lock:
            start = bisect.bisect_right(self._order, seq)
            return [
                self._copy(self._entries[self._seq_ids[s]])
                for s in self._order[start : start + max(0, limit)]
            ]

    def with_state(self, state: str, limit: int | None = None) -> list[JournalEntry]:
        """Copies of (the first ``limit``) entries in ``state``, in the order they entered it."""
        with self._lock:
            ids = itertools.islice(self._states[state], limit)
            return [self._copy(self._entries[i]) for i in ids]

    def get(self, entry_id: str) -> JournalEntry | None:
        """A copy of one entry, or None."""
        with self._lock:
            entry = self._entries.get(entry_id)
            return None if entry is None else self._copy(entry)

    def by_key(self, key: str) -> list[JournalEntry]:
        """Copies of the entries of ``key``, oldest first."""
        with self._lock:
            return [self._copy(e) for e in self._of_key(key)]

    def keys(self) -> list[str]:
        """Every key that has entries."""
        with self._lock:
            return list(self._keys)

    def queue_of(self, key: str) -> list[tuple[str, int, str]]:
        """``(id, seq, state)`` of each entry of ``key``, oldest first: what the uploader needs
        to know of a key, without copying its entries."""
        with self._lock:
            return [(e.id, e.seq, e.state) for e in self._of_key(key)]

    def key_state(self, key: str) -> str | None:
        """What ``user.bimfs.state`` shows for ``key``: ``uploading``, ``pending``,
        ``failed: <reason>`` (most urgent first), or None when nothing is journaled."""
        with self._lock:
            found = self._of_key(key)
            for state in (UPLOADING, PENDING, FAILED):
                for e in reversed(found):
                    if e.state == state:
                        return e.display_state
        return None

    def count(self, *states: str) -> int:
        """How many entries are in any of ``states``."""
        with self._lock:
            return sum(len(self._states[state]) for state in states)

    def last_seq(self) -> int:
        """The highest ``seq`` given to an entry so far (0 for none)."""
        with self._lock:
            return self._seq

    def usage(self) -> dict[str, int]:
        """Counts per state, the bytes held, and the bytes not on the server yet (pending and
        uploading: ``pending_bytes``)."""
        with self._lock:
            counts = {state: len(ids) for state, ids in self._states.items()}
            pending = self._state_bytes[PENDING] + self._state_bytes[UPLOADING]
            return {
                **counts,
                "entries": len(self._entries),
                "bytes": self._bytes,
                "pending_bytes": pending,
            }

    def take_changes(self) -> tuple[set[str], set[str]]:
        """The keys whose entries changed (added, removed, re-keyed, changed state) and the ids
        of the entries removed since the last call, for one consumer (the uploader) that keeps
        its own view up to date without reading every entry. The first call starts recording
        and returns nothing."""
        with self._lock:
            changes = self._changes or (set(), set())
            self._changes = (set(), set())
            return changes

    # ---------------------------------------------------------------------------- changing

    def update_meta(self, entry_id: str, meta: dict[str, Any]) -> None:
        """Merge ``meta`` into the entry's meta (e.g. a rename before the upload)."""
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"journal meta is not JSON-serialisable: {exc}") from exc
        with self._lock:
            entry = self._need(entry_id)
            self._save(replace(entry, meta={**entry.meta, **copy.deepcopy(meta)}))

    def rekey(self, entry_id: str, key: str) -> None:
        """Give the entry another target key; it keeps its place in the commit order."""
        with self._lock:
            self._save(replace(self._need(entry_id), key=key))

    def mark_uploading(self, entry_id: str) -> JournalEntry:
        """An upload of the entry starts: counts the attempt; returns the updated entry."""
        with self._lock:
            entry = self._need(entry_id)
            updated = replace(
                entry,
                state=UPLOADING,
                attempts=entry.attempts + 1,
                reason="",
                first_attempt=entry.first_attempt or time.time(),
            )
            self._save(updated)
            return self._copy(updated)

    def mark_pending(self, entry_id: str, not_before: float = 0.0) -> None:
        """Back to pending; ``not_before`` (wall-clock seconds) is when to try again."""
        with self._lock:
            self._save(replace(self._need(entry_id), state=PENDING, not_before=not_before))

    def mark_failed(self, entry_id: str, reason: str) -> None:
        """The server refused the upload for good: keep the content and show ``reason``."""
        reason = " ".join(str(reason).split()) or "upload refused"
        with self._lock:
            self._save(replace(self._need(entry_id), state=FAILED, reason=reason))

    def retry_failed(self, entry_id: str) -> None:
        """A user asked to try a failed entry again: back to pending, now."""
        with self._lock:
            entry = self._need(entry_id)
            if entry.state == FAILED:
                self._save(replace(entry, state=PENDING, reason="", not_before=0.0))

    def complete(self, entry_id: str, take: Callable[[Path], bool] | None = None) -> None:
        """The server confirmed the upload: remove the record and the content.

        ``take(data_path)``, called once the record is gone, may move the content elsewhere
        (into the content cache) and return True; otherwise the content is deleted. An id that
        is already gone is ignored (the entry was discarded during its upload).
        """
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is not None:
                self._remove(entry, take)

    def discard(self, entry_id: str) -> None:
        """Drop an entry without uploading it; only on an explicit user action."""
        with self._lock:
            entry = self._need(entry_id)
            log.info("discarding the unsent save of %s", entry.name)
            self._remove(entry)

    # ---------------------------------------------------------------------------- internals

    def _need(self, entry_id: str) -> JournalEntry:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise JournalEntryNotFoundError(f"no journal entry {entry_id}")
        return entry

    def _copy(self, entry: JournalEntry) -> JournalEntry:
        # What copy.copy does, without its generic machinery (this runs for every entry listed).
        clone = object.__new__(JournalEntry)
        clone.__dict__.update(entry.__dict__)
        clone.meta = _clone_json(entry.meta)
        return clone

    def _of_key(self, key: str) -> list[JournalEntry]:
        return sorted((self._entries[i] for i in self._keys.get(key, ())), key=_by_seq)

    def _save(self, entry: JournalEntry) -> None:
        entry.updated = time.time()
        self._write_record(entry)
        self._put(entry)

    def _note(self, key: str, removed: str | None = None) -> None:
        if self._changes is not None:
            self._changes[0].add(key)
            if removed is not None:
                self._changes[1].add(removed)

    def _put(self, entry: JournalEntry) -> None:
        """Hold ``entry`` (new, or a changed copy of one held: same id and seq) in every index."""
        old = self._entries.get(entry.id)
        self._entries[entry.id] = entry
        if old is None:
            if not self._order or entry.seq > self._order[-1]:
                self._order.append(entry.seq)
            else:
                bisect.insort(self._order, entry.seq)
            self._seq_ids[entry.seq] = entry.id
            self._bytes += entry.size
        else:
            self._bytes += entry.size - old.size
            self._state_bytes[old.state] -= old.size
        self._state_bytes[entry.state] += entry.size
        if old is None or old.key != entry.key:
            if old is not None:
                self._unkey(old)
            self._keys.setdefault(entry.key, set()).add(entry.id)
            self._note(entry.key)
        if old is None or old.state != entry.state:
            if old is not None:
                del self._states[old.state][entry.id]
            self._states[entry.state][entry.id] = None
            self._note(entry.key)

    def _drop(self, entry: JournalEntry) -> None:
        """Forget ``entry`` in every index."""
        held = self._entries.pop(entry.id)
        self._bytes -= held.size
        self._state_bytes[held.state] -= held.size
        # Usually the oldest entries go first: deleting near the front of a list of 100 000
        # ints moves under a megabyte, far less than the upload that led here.
        del self._order[bisect.bisect_left(self._order, held.seq)]
        del self._seq_ids[held.seq]
        self._unkey(held)
        del self._states[held.state][held.id]
        self._note(held.key, removed=held.id)

    def _unkey(self, entry: JournalEntry) -> None:
        ids = self._keys[entry.key]
        ids.discard(entry.id)
        if not ids:
            del self._keys[entry.key]
        self._note(entry.key)

    def _record_path(self, entry_id: str) -> Path:
        return self.dir / f"{entry_id}.json"

    def _write_record(self, entry: JournalEntry) -> None:
        record = {
            "format": _FORMAT,
            "id": entry.id,
            "seq": entry.seq,
            "key": entry.key,
            "meta": entry.meta,
            "data": entry.data_path.name,
            "size": entry.size,
            "state": entry.state,
            "reason": entry.reason,
            "attempts": entry.attempts,
            "created": entry.created,
            "updated": entry.updated,
            "not_before": entry.not_before,
            "first_attempt": entry.first_attempt,
        }
        payload = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8")
        final = self._record_path(entry.id)
        tmp = final.with_name(final.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            # A full or failing disk: the record on disk is the one before (or none), and the
            # space the half-written one took is given back now, not at the next load.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.dir)

    def _remove(self, entry: JournalEntry, take: Callable[[Path], bool] | None = None) -> None:
        # Record first: a crash in between leaves an orphaned .data, removed at the next load,
        # never a record without its content.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(entry.id))
        fsync_dir(self.dir)
        if entry.id in self._entries:
            self._drop(entry)
        if take is not None:
            try:
                if take(entry.data_path):
                    return
            except Exception:  # the content is deleted as if nobody had wanted it
                log.exception("could not hand over the sent content of %s", entry.name)
        # Its record is gone: should the process end before a large file is deleted, the next
        # load removes it as an orphan.
        delete(entry.data_path, entry.size)

    def _load(self) -> None:
        names = os.listdir(self.dir)
        present = set(names)
        referenced: set[str] = set()
        loaded: list[JournalEntry] = []
        for name in sorted(names):
            if name.endswith((".json.tmp", ".staging")):
                # A record or a content that was being written when the process died: it was
                # never acknowledged.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)
                continue
            if not name.endswith(".json"):
                continue
            path = self.dir / name
            try:
                entry = self._parse(path)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning(
                    "journal record %s is unreadable (%s); moved aside as %s.corrupt",
                    path, exc, name,
                )  # fmt: skip
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_name(name + ".corrupt"))
                # Its content (if any) is kept for a human: treat the id's data as referenced.
                referenced.add(name.removesuffix(".json") + ".data")
                continue
            referenced.add(entry.data_path.name)
            if entry.data_path.name not in present and entry.state != FAILED:
                entry.state = FAILED
                entry.reason = "saved content is missing from the journal"
                log.warning("journal entry for %s lost its content", entry.name)
                self._write_record(entry)
            loaded.append(entry)
        loaded.sort(key=lambda e: (e.seq, e.id))
        self._seq = max((e.seq for e in loaded), default=0)
        for entry in loaded:
            if entry.seq in self._seq_ids:
                # Two records claim one place in the commit order (a journal put together from
                # copies): the later one goes last.
                self._seq += 1
                entry.seq = self._seq
                self._write_record(entry)
            self._put(entry)
        for name in names:
            if name.endswith(".data") and name not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)

    def _parse(self, path: Path) -> JournalEntry:
        raw = json.loads(_read(path).decode("utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ValueError("not a journal record of a known format")
        state = raw["state"]
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        data_name = str(raw["data"])
        if "/" in data_name or data_name.startswith("."):
            raise ValueError("bad content file name")
        meta = raw.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("meta is not an object")
        entry_id = str(raw["id"])
        if path.name != f"{entry_id}.json":
            raise ValueError("record name and id differ")
        return JournalEntry(
            id=entry_id,
            key=str(raw["key"]),
            meta=meta,
            data_path=self.dir / data_name,
            size=int(raw["size"]),
            state=state,
            reason=str(raw.get("reason") or ""),
            attempts=int(raw.get("attempts") or 0),
            created=float(raw.get("created") or 0.0),
            updated=float(raw.get("updated") or 0.0),
            not_before=float(raw.get("not_before") or 0.0),
            first_attempt=float(raw.get("first_attempt") or 0.0),
            seq=int(raw["seq"]),
        )


def _by_seq(entry: JournalEntry) -> int:
    return entry.seq


_CONTAINERS = (dict, list, tuple)


def _clone_json(value: Any) -> Any:
    """A deep copy of JSON data (what ``meta`` holds): several times faster than deepcopy, and
    a flat object (the usual meta) costs one dict copy."""
    if isinstance(value, dict):
        clone = dict(value)
        for k, v in clone.items():
            if isinstance(v, _CONTAINERS):
                clone[k] = _clone_json(v)
        return clone
    if isinstance(value, list):
        return [_clone_json(v) if isinstance(v, _CONTAINERS) else v for v in value]
    if isinstance(value, tuple):
        return tuple(_clone_json(v) if isinstance(v, _CONTAINERS) else v for v in value)
    return value


def _read(path: Path) -> bytes:
    """A small file's bytes (a record), with fewer calls than ``Path.read_bytes``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
