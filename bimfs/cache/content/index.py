"""The entries on disk: the SQLite index (``index.db``) and the files it describes.

``<digest>`` is a complete entry, ``<digest>.part`` one being filled (a sparse file of the
document's size), ``<digest>.<random>.deleted`` an evicted entry of 16 MiB or more that a thread
is deleting. The index holds one row per entry: its key, whether it is complete, the bytes it
uses, its last access, a generation and, for a partial entry, the bitmap of its filled blocks.

The index only speeds up a remount: a final file name alone proves completeness (it only ever
appears after the file was fsynced), and a partial entry's bitmap is stored only after its data
was fsynced, so the bitmap is never more than what is on disk. At start the index is reconciled
with the files present; an unreadable index is replaced by an empty one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bimfs.cache.blocks import BlockSet
from bimfs.cache.content.keys import ContentKey
from bimfs.cache.files import DELETE_LATER_SIZE, delete, file_size, fsync_path, unlink_all

__all__ = ["Index", "Row"]

log = logging.getLogger("bimfs.cache.content")

INDEX_NAME = "index.db"
PART_SUFFIX = ".part"
TRASH_SUFFIX = ".deleted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    digest TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    last_access REAL NOT NULL,
    used INTEGER NOT NULL,
    gen TEXT NOT NULL,
    block_size INTEGER NOT NULL,
    blocks BLOB
)
"""


@dataclass
class Row:
    """The in-memory mirror of one index row."""

    key: ContentKey
    complete: bool
    used: int
    last_access: float
    gen: str
    blocks: bytes | None


class Index:
    """The rows of every entry on disk, least recently used first, and their files.

    ``used`` is the bytes all entries use. ``unpersisted`` holds the bitmaps (with their row's
    generation) of released partial entries whose data is not yet known to be on disk.
    ``deleting`` is the bytes of removed entries whose files threads are still deleting.
    """

    def __init__(self, directory: Path, block_size: int) -> None:
        self.dir = directory
        self.block_size = block_size
        self.rows: OrderedDict[str, Row] = OrderedDict()
        self.used = 0
        self.unpersisted: dict[str, tuple[str, bytes]] = {}
        # Bytes of removed entries that threads are still deleting: space about to be free.
        self._deleting = 0
        self._deleting_lock = threading.Lock()
        self._failed = False
        # True when the index on disk could not be opened and this run's lives in memory.
        self.in_memory = False
        self._db = self._open()

    def final_path(self, digest: str) -> Path:
        """Where the complete entry ``digest`` is."""
        return self.dir / digest

    def part_path(self, digest: str) -> Path:
        """Where the partial entry ``digest`` is filled."""
        return self.dir / (digest + PART_SUFFIX)

    def filled_bytes(self, key: ContentKey, blocks: BlockSet) -> int:
        """The bytes of ``key``'s content that ``blocks`` cover."""
        used = blocks.count * self.block_size
        if blocks.n and (blocks.n - 1) in blocks:
            used -= blocks.n * self.block_size - key.size
        return used

    # ------------------------------------------------------------------- opening, reconciling

    def _open(self) -> sqlite3.Connection:
        """Open the index and load it; an unreadable index is replaced by an empty one, one
        that cannot be opened now (a full disk) is read into memory for this run."""
        path = self.dir / INDEX_NAME
        try:
            self._db = _connect(path)
            self._load()
            return self._db
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            self.rows.clear()
            self.used = 0
            if not _damaged(exc):
                return self._open_in_memory(path, exc)
            # The index is only a cache of what the directory holds: start over rather than
            # refuse to mount. The content files it described become orphans, removed below.
            log.warning("content cache index %s is unreadable (%s); starting empty", path, exc)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self._db = _connect(path)
            self._load()
            return self._db

    def _open_in_memory(self, path: Path, error: sqlite3.Error) -> sqlite3.Connection:
        """The index cannot be opened for writing (a WAL database needs room for its shared
        memory and log files): load what it holds into an index in memory, for this run only.
        The files it does not describe are kept (their rows may be in the log), and the index
        on disk is left as it is for the next start."""
        log.warning(
            "content cache index %s cannot be opened (%s); this mount keeps its index in"
            " memory only",
            path, error,
        )  # fmt: skip
        self.in_memory = True
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.execute(_SCHEMA)
        try:
            # Read-only, without the log and its shared memory: what the last clean shutdown
            # wrote into the database itself.
            src = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)
            try:
                src.backup(db)
            finally:
                src.close()
            db.execute("SELECT count(*) FROM entries").fetchone()
        except sqlite3.Error as exc:
            log.debug("content cache index %s: nothing could be read (%s)", path, exc)
            db.close()
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.execute(_SCHEMA)
        self._db = db
        self._load()
        return db

    def _load(self) -> None:
        """Read the index and reconcile it with the files actually present."""
        names = set(os.listdir(self.dir))
        kept: set[str] = set()
        rows = self._db.execute(
            "SELECT digest, doc_id, version, hash, size, complete, last_access, gen,"
            " block_size, blocks FROM entries ORDER BY last_access"
        ).fetchall()
        for digest, doc_id, version, hsh, size, complete, last_access, gen, bsize, blocks in rows:
            key = ContentKey(str(doc_id), int(version), str(hsh), int(size))
            part = digest + PART_SUFFIX
            row: Row | None = None
            if key.digest() != digest:
                row = None
            elif digest in names and file_size(self.dir / digest) == key.size:
                # A final name only ever appears after the file was complete and fsynced, even
                # if the process died before the index said so.
                row = Row(key, True, key.size, last_access, gen, None)
                if not complete:
                    self._write("UPDATE entries SET complete=1 WHERE digest=?", (digest,))
            elif (
                not complete
                and part in names
                and bsize == self.block_size
                and blocks is not None
                and file_size(self.dir / part) == key.size
            ):
                try:
                    bset = BlockSet(-(-key.size // self.block_size), bytes(blocks))
                except ValueError:
                    bset = None
                if bset is not None and bset.count:
                    row = Row(key, False, self.filled_bytes(key, bset), last_access, gen, None)
                    row.blocks = bset.to_bytes()
            if row is None:
                self._write("DELETE FROM entries WHERE digest=?", (digest,))
                continue
            self.rows[digest] = row
            self.used += row.used
            kept.add(digest if row.complete else part)
        for name in names - kept:
            if name.endswith(TRASH_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)
                continue
            if self.in_memory:
                continue  # their rows may be in the log this run could not read
            stem = name.removesuffix(PART_SUFFIX)
            if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)

    def close(self) -> None:
        """Store the bitmaps still waiting for their data to be on disk, then close."""
        for digest, (gen, blocks) in list(self.unpersisted.items()):
            with contextlib.suppress(OSError):
                fsync_path(self.part_path(digest))
                self.store_blocks(digest, gen, blocks)
        self.unpersisted.clear()
        self._db.close()

    # ---------------------------------------------------------------------------- updates

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        """One index update. A failure is logged, not raised: the index only speeds up a
        remount (a final file name proves completeness, a stored bitmap is only ever a subset
        of what is on disk), so losing an update loses cached data at worst, never correctness.
        """
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            if not self._failed:
                # A full cache disk is a condition to report, not a fault of the mount: the
                # index catches up with the next updates once there is room again.
                full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                log.log(
                    logging.WARNING if full else logging.ERROR,
                    "content cache index %s: %s", self.dir / INDEX_NAME, exc,
                )  # fmt: skip
            self._failed = True
        else:
            self._failed = False

    def insert(self, key: ContentKey, digest: str, *, complete: bool) -> Row:
        """A new row for ``key`` (replacing any), the most recently used."""
        gen = secrets.token_hex(8)
        now = time.time()
        self._write(
            "INSERT OR REPLACE INTO entries (digest, doc_id, version, hash, size, complete,"
            " last_access, used, gen, block_size, blocks) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (digest, key.doc_id, key.version, key.hash, key.size, int(complete), now,
             key.size if complete else 0, gen, self.block_size),
        )  # fmt: skip
        row = Row(key, complete, key.size if complete else 0, now, gen, None)
        self.rows[digest] = row
        self.rows.move_to_end(digest)
        self.used += row.used
        return row

    def touch(self, digest: str) -> None:
        """Make ``digest`` the most recently used entry (in memory; stored at release)."""
        row = self.rows.get(digest)
        if row is not None:
            row.last_access = time.time()
            self.rows.move_to_end(digest)

    def store_access(self, digest: str, row: Row) -> None:
        """Record the row's last access."""
        self._write("UPDATE entries SET last_access=? WHERE digest=?", (row.last_access, digest))

    def add_filled(self, row: Row, nbytes: int) -> None:
        """``nbytes`` more of a partial entry were filled."""
        row.used += nbytes
        self.used += nbytes

    def record_complete(self, digest: str, row: Row | None) -> None:
        """The entry of ``row`` is complete under its final name (if ``row`` is still the
        entry's row: it may have been evicted and replaced meanwhile)."""
        if row is None or self.rows.get(digest) is not row:
            return
        size = row.key.size
        self.used += size - row.used
        row.used = size
        row.complete = True
        row.blocks = None
        self._write(
            "UPDATE entries SET complete=1, used=?, blocks=NULL WHERE digest=?", (size, digest)
        )

    def store_blocks(self, digest: str, gen: str, blocks: bytes) -> None:
        """Record a partial entry's bitmap; only call after its data was fsynced."""
        row = self.rows.get(digest)
        if row is None or row.gen != gen or row.complete:
            return
        self._write(
            "UPDATE entries SET blocks=?, block_size=?, used=?, last_access=?"
            " WHERE digest=? AND gen=? AND complete=0",
            (blocks, self.block_size, row.used, row.last_access, digest, gen),
        )

    def keep_blocks(self, digest: str, row: Row, blocks: bytes) -> None:
        """Remember the bitmap of a released partial entry, to be stored by
        :meth:`persist_blocks` once its data is on disk."""
        row.blocks = blocks
        self.unpersisted[digest] = (row.gen, blocks)

    async def persist_blocks(self, digest: str) -> None:
        """fsync a released partial entry's data, then store its bitmap."""
        pending = self.unpersisted.get(digest)
        if pending is None:
            return
        try:
            await trio.to_thread.run_sync(fsync_path, self.part_path(digest))
        except OSError:
            # Evicted meanwhile: nothing left to record.
            return
        if self.unpersisted.get(digest) is pending:
            del self.unpersisted[digest]
            self.store_blocks(digest, pending[0], pending[1])

    # ---------------------------------------------------------------------------- removal

    @property
    def deleting(self) -> int:
        """Bytes of removed entries whose files are still being deleted by a thread."""
        return self._deleting

    def evictable(self, busy: Container[str]) -> int:
        """Bytes of the entries that are not ``busy``: what eviction could free at most."""
        return sum(row.used for digest, row in self.rows.items() if digest not in busy)

    def remove(self, digest: str, trash: list[tuple[Path, int]] | None = None) -> None:
        """Forget an entry and delete its files. A file of ``DELETE_LATER_SIZE`` bytes or more
        is renamed aside first, then deleted by a thread, or, with ``trash``, appended to it
        (with its size) for the caller to delete with ``delete_now``."""
        row = self.rows.pop(digest, None)
        used = 0
        if row is not None:
            self.used -= row.used
            used = row.used
        self.unpersisted.pop(digest, None)
        self._write("DELETE FROM entries WHERE digest=?", (digest,))
        for path in (self.final_path(digest), self.part_path(digest)):
            if used < DELETE_LATER_SIZE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            # Deleted by a thread, so renamed first: the same key may be fetched again at once,
            # under the same name. A leftover is removed at the next start.
            moved = self.dir / f"{digest}.{secrets.token_hex(4)}{TRASH_SUFFIX}"
            try:
                os.rename(path, moved)
            except FileNotFoundError:
                continue
            with self._deleting_lock:
                self._deleting += used
            if trash is not None:
                trash.append((moved, used))
                continue
            delete(moved, used, functools.partial(self._deleted, used))

    def delete_now(self, trash: list[tuple[Path, int]]) -> None:
        """Delete the files ``remove`` put in ``trash`` (blocking: in a worker thread)."""
        for path, used in trash:
            unlink_all((path,))
            self._deleted(used)

    def _deleted(self, nbytes: int) -> None:
        # In the deleting thread.
        with self._deleting_lock:
            self._deleting -= nbytes

    def evict(
        self, budget: int, busy: Container[str], trash: list[tuple[Path, int]] | None = None
    ) -> int:
        """Remove least recently used entries until they fit ``budget`` bytes, skipping the
        ``busy`` ones (open, streaming or being finalised); returns the bytes removed. Large
        files go to ``trash`` when given (see ``remove``)."""
        if self.used <= budget:
            return 0
        before = self.used
        for digest in list(self.rows):
            if self.used <= budget:
                break
            if digest in busy:
                continue
            log.debug("evicting %s from the content cache", self.rows[digest].key.doc_id)
            self.remove(digest, trash)
        return before - self.used


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the index file is not a (sound) database, rather than that it
    could not be opened or written now."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return True  # raised without a result code: treat as unreadable, as before
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _connect(path: Path) -> sqlite3.Connection:
    # Create the file ourselves so it is 0600; SQLite gives -wal/-shm the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # WAL with synchronous=NORMAL: commits do not fsync. The index may lose its latest
        # updates in a power cut, which is safe: a final file name alone proves completeness
        # and bitmaps are only ever stored after their data was fsynced.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        db.execute("SELECT count(*) FROM entries").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db
