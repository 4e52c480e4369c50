"""The on-disk content cache: document bytes under ``<cache-dir>/content/``, bounded by a budget.

Layout and durability
    ``<digest>.part`` is an entry being filled: a sparse file truncated to the document's size,
    written at the right offsets as bytes arrive. Which blocks are filled is tracked in memory
    (``BlockSet``). When every block is present the file is fsynced and renamed to ``<digest>``,
    and only then recorded complete in the index (``index.db``, SQLite). A partial file is never
    served as complete: readers of a partial entry read only blocks marked filled, or bytes a
    running stream has received without a gap, and a block is marked only after all of its bytes
    were written. The bitmap of a partial entry is stored in the index after the entry was closed
    and its data fsynced, so a remount continues where the last one stopped; an unsynced bitmap
    is never stored. ``<digest>.<random>.deleted`` is an evicted entry of 16 MiB or more that a
    thread is deleting (removed at the next start if the process ended first).

Keys
    ``ContentKey`` holds the document id, version, hash (Bimplus's change token) and size; the
    file name is the sha256 of all four, so no entry can ever serve another version's bytes.

Reads and streams
    ``open`` starts nothing. A read waits only for the bytes it needs, not for whole blocks: it
    is answered as soon as a stream has them. A missing block starts a background *stream* at
    that block which keeps writing forward (read-ahead) until it reaches a filled block, the
    start of another stream, or EOF, so a sequential reader is served by one HTTP request. A read
    far ahead of every stream (``far_distance``) starts its own ranged stream and takes over the
    rest of the range from the stream that would have got there later.

    Parallel streams: in a file of at least ``min_parallel_size`` bytes a stream that runs below
    ``parallel_below`` bytes/s over its first ``_SPLIT_PROBE`` seconds splits the rest of its
    range into up to ``max_streams`` streams. Several streams pay where each one is held to a
    rate (a far or throttled server); where one stream is fast the mount itself is the limit and
    more streams only add work. (``parallel_below=None`` splits a fresh region at once.) The
    first stream asks alone, the others after its first bytes arrived, so the request a reader
    waits on is never queued behind them. If the server ignores ranges (the download starts
    before the offset asked for, or a range from 0 gets the whole body) the entry falls back to
    one stream from that offset, writing everything it receives, and never starts parallel
    streams again. Streams of an entry never overlap, so no block is fetched twice while they
    run.

    Streams stop when the last handle of their entry is closed: a reader that stopped early (a
    ``head``, a thumbnailer) does not make the mount download the rest of a large file.

Errors
    A stream whose body ends short (the download raises an error with ``retryable`` true, or its
    body simply stops) is retried from where it stopped, with backoff, ``fetch_retries`` times;
    then the reads waiting on it fail with that error, unchanged (the errno table maps it). A body
    longer than the key's size raises ``ContentSizeError``. A read never waits past
    ``read_timeout``: ``ContentTimeoutError``.

Eviction
    Least recently used first (by open/close), down to ``max_bytes``; an entry that is open,
    streaming or being finalised is never evicted, so an open file may push the cache over its
    budget until it is closed.

Concurrency
    Everything runs on the trio thread; code between two awaits is atomic, which is what keeps
    the stream bookkeeping (positions, ends, block map, write queues) consistent without locks.
    Reads (``pread``) and writes of received chunks are done inline while the page cache takes
    them fast: a copy is cheaper than a thread hop. When writes turn out slow (below
    ``thread_writes_below`` bytes/s, as when the kernel must first find memory for the page
    cache) each stream queues its chunks to a writer task that writes them in order in one
    worker thread, receiving at most ``_WRITE_BEHIND`` bytes ahead, and reads are served from
    the queue meanwhile. fsyncs, which may wait for the disk, always run in worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from bimfs.backoff import backoff
from bimfs.cache.blocks import BlockSet
from bimfs.cache.errors import (
    CacheClosedError,
    ContentShortError,
    ContentSizeError,
    ContentTimeoutError,
)
from bimfs.cache.files import DELETE_LATER_SIZE, delete, fsync_dir

log = logging.getLogger(__name__)

_INDEX_NAME = "index.db"
_PART_SUFFIX = ".part"
_TRASH_SUFFIX = ".deleted"
# Re-check the budget after this many newly filled blocks while a stream grows the cache.
_EVICT_EVERY_BLOCKS = 64
# Backoff before the n-th retry of a stream: _RETRY_BASE * 2**(n-1), capped, with jitter.
_RETRY_BASE = 0.5
_RETRY_CAP = 8.0
_JITTER = (0.75, 1.25)
# How long (seconds from its first byte) a stream runs alone before its rate decides whether
# the rest of its range is worth splitting into parallel streams.
_SPLIT_PROBE = 0.1
# Only writes at least this long are timed, and only they may go to the writer thread: for
# shorter ones the hop to a thread and back costs more than the copy.
_THREAD_WRITE_MIN = 64 << 10
# How far (bytes) a stream may receive ahead of its writes to the cache file: enough to ride out
# slow writes, bounded so a download never holds much of a file in memory.
_WRITE_BEHIND = 8 << 20


@dataclass(frozen=True)
class ContentKey:
    """The identity of one version's bytes. Two keys share an entry only if all fields match."""

    doc_id: str
    version: int
    hash: str
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("content size must not be negative")

    def digest(self) -> str:
        """sha256 (hex) of all four fields, length-prefixed so no two keys can collide."""
        h = hashlib.sha256()
        for part in (self.doc_id, str(self.version), self.hash, str(self.size)):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()


class Download(Protocol):
    """What a fetcher yields: the API client's download handle fits as is."""

    @property
    def start(self) -> int:
        """Where the body really starts (0 when the server ignored the range)."""
        ...

    @property
    def length(self) -> int | None:
        """The body's length, when announced."""
        ...

    @property
    def total_size(self) -> int | None:
        """The whole document's size, when announced."""
        ...

    @property
    def range_supported(self) -> bool:
        """Whether the server honoured the range."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body; raises an error with ``retryable`` true if it ends short."""
        ...


Fetcher = Callable[[int, int], AbstractAsyncContextManager[Download]]
"""``fetch(start, end)`` opens a download of bytes ``[start, end)`` (end exclusive)."""


class CachedFile:
    """One open view of a cache entry, from ``ContentStore.open`` until ``ContentStore.close``.

    While any view of an entry is open the entry is pinned: never evicted.
    """

    __slots__ = ("_closed", "_entry", "fetch", "key")

    def __init__(self, key: ContentKey, entry: _Entry, fetch: Fetcher) -> None:
        self.key = key
        self.fetch = fetch
        self._entry = entry
        self._closed = False

    @property
    def size(self) -> int:
        """The content's size in bytes (``key.size``)."""
        return self.key.size

    @property
    def closed(self) -> bool:
        """True once ``ContentStore.close`` was called for this view."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<CachedFile {self.key.doc_id} v{self.key.version} {state}>"


@dataclass
class _Row:
    """The in-memory mirror of one index row."""

    key: ContentKey
    complete: bool
    used: int
    last_access: float
    gen: str
    blocks: bytes | None


class _Entry:
    """In-memory state of an entry that is open, streaming or being finalised."""

    def __init__(self, key: ContentKey, digest: str, block_size: int) -> None:
        self.key = key
        self.digest = digest
        self.nblocks = -(-key.size // block_size)
        self.blocks = BlockSet(self.nblocks)
        self.fd: int | None = None
        self.row: _Row | None = None
        self.complete = False
        self.finalizing = False
        self.finalize_error: BaseException | None = None
        self.pins = 0
        self.streams: list[_Stream] = []
        # Set once a download ignored a range: from then on one stream at a time, never parallel.
        self.no_range = False
        self.single: _Stream | None = None
        self.dirty = False
        # Set (and replaced) on every change; ``ensure_complete`` waits on it.
        self.changed = trio.Event()
        # Reads waiting for bytes: woken when their range can be served, or on any change of
        # the streams (one started or ended).
        self.waiters: list[_Waiter] = []


class _Waiter:
    """A read waiting for bytes ``[start, end)`` of an entry."""

    __slots__ = ("end", "event", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.event = trio.Event()


class _Stream:
    """One background download writing bytes ``[pos, end_block * block_size)`` of an entry."""

    __slots__ = (
        "after",
        "block_size",
        "closing",
        "done",
        "end_block",
        "entry",
        "error",
        "fetch",
        "from_writer",
        "may_split",
        "opened",
        "pos",
        "probe",
        "queue",
        "queued",
        "received",
        "scope",
        "start_block",
        "started",
        "to_writer",
        "write_error",
        "writer",
        "wstart",
    )

    def __init__(
        self,
        entry: _Entry,
        fetch: Fetcher,
        start_block: int,
        end_block: int,
        block_size: int,
        after: _Stream | None = None,
    ) -> None:
        self.entry = entry
        self.fetch = fetch
        self.block_size = block_size
        self.start_block = start_block
        # Lowered when another stream takes over the rest of the range; never below pos.
        self.end_block = end_block
        self.pos = start_block * block_size
        # Start of the bytes this stream wrote without a gap up to pos: only blocks inside
        # [wstart, pos) may be marked filled by it.
        self.wstart = self.pos
        # Received chunks not yet in the file, covering [pos, pos + queued) without a gap: the
        # stream's writer task writes them in order in a worker thread, and reads are served
        # from them meanwhile. Used only while writes are slow (see thread_writes_below).
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.writer: trio.Event | None = None  # set when the writer task has ended
        self.to_writer = trio.Event()
        self.from_writer = trio.Event()
        self.closing = False
        self.write_error: OSError | None = None
        # Set once this stream's response arrived (or it ended). A parallel segment waits for
        # its leader's, so the request for the bytes a reader is waiting on goes out alone.
        self.opened = trio.Event()
        self.after = after
        # Whether the stream may still split into parallel streams, and (time, bytes received)
        # at its first chunk, from which its rate is measured.
        self.may_split = False
        self.probe: tuple[float, int] | None = None
        self.received = 0
        self.started = trio.current_time()
        self.error: BaseException | None = None
        self.done = False
        self.scope = trio.CancelScope()

    @property
    def end_bytes(self) -> int:
        return min(self.end_block * self.block_size, self.entry.key.size)

    @property
    def recv_end(self) -> int:
        """End of the bytes this stream has: written up to ``pos``, then queued."""
        return self.pos + self.queued

    def queued_bytes(self, a: int, b: int) -> bytes:
        """Bytes ``[a, b)`` from the queue (``pos <= a < b <= recv_end``)."""
        parts = []
        off = self.pos
        for chunk in self.queue:
            end = off + len(chunk)
            if end > a:
                parts.append(chunk[max(a, off) - off : min(b, end) - off])
                if end >= b:
                    break
            off = end
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def covers(self, k: int) -> bool:
        """True if this stream will write block ``k`` unless stopped."""
        return not self.done and self.pos // self.block_size <= k < self.end_block


class ContentStore:
    """The content cache. ``run`` must be running (in a nursery) for reads to fetch anything."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        block_size: int = 1 << 20,
        max_streams: int = 4,
        min_parallel_size: int = 32 << 20,
        read_timeout: float = 60.0,
        far_distance: int = 4 << 20,
        fetch_retries: int = 3,
        parallel_below: float | None = 250e6,
        thread_writes_below: float = 1e9,
    ) -> None:
        if block_size <= 0 or max_streams <= 0 or max_bytes < 0:
            raise ValueError("block_size and max_streams must be positive, max_bytes >= 0")
        self.root = Path(root)
        self.dir = self.root / "content"
        self.max_bytes = max_bytes
        self.block_size = block_size
        self.max_streams = max_streams
        self.min_parallel_size = min_parallel_size
        self.parallel_below = parallel_below
        self.thread_writes_below = thread_writes_below
        self.read_timeout = read_timeout
        self.fetch_retries = fetch_retries
        self._far_blocks = max(1, far_distance // block_size)
        # A parallel segment is never smaller than this, so small regions use one stream.
        self._min_segment_blocks = max(1, min_parallel_size // max_streams // block_size)
        _make_private_dir(self.root, chmod=False)
        _make_private_dir(self.dir, chmod=True)
        self._rows: OrderedDict[str, _Row] = OrderedDict()
        self._used = 0
        self._entries: dict[str, _Entry] = {}
        # Bitmaps (with their row's generation) of released partial entries whose data is not
        # yet known to be on disk.
        self._unpersisted: dict[str, tuple[str, bytes]] = {}
        self._nursery: trio.Nursery | None = None
        # One writer thread for all streams: concurrent writers to one file only contend for
        # its inode lock (and spin on it), they do not write faster.
        self._write_limiter = trio.CapacityLimiter(1)
        # Recent cost of writing to the cache files (seconds per byte, smoothed).
        self._write_cost = 0.0
        self._fills_since_evict = 0
        self._bytes_served = 0
        self._closed = False
        self._index_failed = False
        self._db = self._open_index()

    # ----------------------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background streams and fsyncs until cancelled, then close the store."""
        if self._closed:
            raise CacheClosedError("content store was closed")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._shutdown()

    def _shutdown(self) -> None:
        """Store what is known about partial entries, close every file and the index."""
        if self._closed:
            return
        self._closed = True
        for entry in list(self._entries.values()):
            if entry.fd is not None and not entry.complete and entry.dirty and entry.row:
                with contextlib.suppress(OSError):
                    os.fsync(entry.fd)
                    self._store_blocks(entry.digest, entry.row.gen, entry.blocks.to_bytes())
            if entry.fd is not None:
                os.close(entry.fd)
                entry.fd = None
        self._entries.clear()
        for digest, (gen, blocks) in list(self._unpersisted.items()):
            with contextlib.suppress(OSError):
                _fsync_path(self._part_path(digest))
                self._store_blocks(digest, gen, blocks)
        self._unpersisted.clear()
        self._db.close()

    # ------------------------------------------------------------------------------ handles

    def open(self, key: ContentKey, fetch: Fetcher) -> CachedFile:
        """Open a view of ``key``'s content, pinning its entry. Downloads nothing yet."""
        if self._closed:
            raise CacheClosedError("content store was closed")
        digest = key.digest()
        entry = self._entries.get(digest)
        if entry is None:
            entry = self._load_entry(key, digest)
            self._entries[digest] = entry
        entry.pins += 1
        self._touch(digest)
        return CachedFile(key, entry, fetch)

    def close(self, f: CachedFile) -> None:
        """Close a view; the entry is unpinned (and its streams stopped) when none is left."""
        if f._closed:
            return
        f._closed = True
        entry = f._entry
        entry.pins -= 1
        self._touch(entry.digest)
        if entry.pins == 0:
            for s in entry.streams:
                s.scope.cancel()
            self._maybe_release(entry)
        if not self._closed:
            self.evict_to_budget()

    async def read(self, f: CachedFile, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` (clipped at the content's size).

        Waits only for the blocks of that range. Raises ``ContentTimeoutError`` after
        ``read_timeout``, the download's own error if it failed (after retries), and
        ``ContentSizeError`` if the server's content does not match the key.
        """
        entry = self._check(f)
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        end = min(offset + size, entry.key.size)
        if offset >= end:
            return b""
        if not entry.complete:
            data = self._try_read(entry, offset, end)
            if data is None:
                data = await self._wait_read(entry, f.fetch, offset, end)
        else:
            assert entry.fd is not None
            data = _pread_all(entry.fd, end - offset, offset)
        self._bytes_served += len(data)
        return data

    async def ensure_complete(self, f: CachedFile) -> Path:
        """Fetch every missing block and return the complete file's path.

        The path stays valid while ``f`` is open (the entry is pinned). Raises like ``read``;
        the timeout applies to a stall (no new block for ``read_timeout``), not to the whole.
        """
        entry = self._check(f)
        if not entry.complete:
            await self._wait_blocks(entry, f.fetch, 0, entry.nblocks, stall=True)
            if self._nursery is None:
                raise CacheClosedError("the content store is not running")
            if not entry.complete and not entry.finalizing:
                # Normally started by the last block's arrival; here for an entry restored
                # with every block present, or one whose earlier finalisation failed.
                self._start_finalize(entry)
            while not entry.complete:
                if not entry.finalizing and entry.finalize_error is not None:
                    raise entry.finalize_error
                await entry.changed.wait()
        return self._final_path(entry.digest)

    async def copy_to(self, f: CachedFile, dest: Path) -> None:
        """Complete the entry, then copy it to ``dest`` (created 0600, replaced if present).

        The copy runs in a worker thread (kernel-side copy where possible), never through RAM
        as a whole: the filesystem layer seeds the staging file of a local edit with it.
        """
        src = await self.ensure_complete(f)
        await trio.to_thread.run_sync(_copy_file, src, Path(dest))

    def is_complete(self, key: ContentKey) -> bool:
        """True when the whole content of ``key`` is cached."""
        row = self._rows.get(key.digest())
        return row is not None and row.complete

    def path_if_complete(self, key: ContentKey) -> Path | None:
        """The complete cache file of ``key``, or None.

        The entry is not pinned: open the path right away (an open descriptor survives
        eviction), or hold a ``CachedFile`` and use ``ensure_complete`` instead.
        """
        digest = key.digest()
        row = self._rows.get(digest)
        if row is None or not row.complete:
            return None
        self._touch(digest)
        return self._final_path(digest)

    def adopt(self, key: ContentKey, path: Path) -> bool:
        """Take ``path``, a complete and fsynced file holding exactly the content of ``key``
        (a save that was just uploaded), as that key's cache entry, by renaming it: a read of
        what was just saved then downloads nothing. False (and ``path`` untouched) when the key
        is already cached or open, the file has another size, does not fit the budget, cannot
        be moved (another file system), or the store was closed."""
        digest = key.digest()
        if self._closed or digest in self._rows or digest in self._entries:
            return False
        if key.size > self.max_bytes:
            return False
        try:
            if os.stat(path).st_size != key.size:
                return False
            os.rename(path, self._final_path(digest))
        except OSError as exc:
            log.debug("could not keep %s in the content cache: %s", path, exc)
            return False
        # Durable enough for a cache: if the rename is lost in a crash the file is an orphan
        # of the journal (removed at its next load), if the index row is lost the file is
        # unknown here (removed at the next load).
        self._insert_row(key, digest, complete=True)
        self.evict_to_budget()
        return True

    def usage(self) -> dict[str, Any]:
        """Cache use for ``bimfs status``: bytes, entries, pins, budget, active streams, and
        ``bytes_served``: bytes this store has answered reads with since it started (reads the
        kernel's page cache answered never get here)."""
        now = trio.current_time()
        streams = []
        for entry in self._entries.values():
            for s in entry.streams:
                elapsed = now - s.started
                streams.append(
                    {
                        "doc_id": entry.key.doc_id,
                        "version": entry.key.version,
                        "size": entry.key.size,
                        "start": s.start_block * self.block_size,
                        "position": s.pos,
                        "end": s.end_bytes,
                        "bytes": s.received,
                        "rate": s.received / elapsed if elapsed > 0 else 0.0,
                    }
                )
        return {
            "bytes_used": self._used,
            "budget": self.max_bytes,
            "entries": len(self._rows),
            "complete_entries": sum(1 for r in self._rows.values() if r.complete),
            "pinned": sum(1 for e in self._entries.values() if e.pins > 0),
            "open_handles": sum(e.pins for e in self._entries.values()),
            "bytes_served": self._bytes_served,
            "streams": streams,
        }

    def evict_to_budget(self) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``.

        Entries that are open, streaming or being finalised are skipped.
        """
        self._fills_since_evict = 0
        if self._used <= self.max_bytes:
            return
        for digest in list(self._rows):
            if self._used <= self.max_bytes:
                break
            if digest in self._entries:
                continue
            log.debug("evicting %s from the content cache", self._rows[digest].key.doc_id)
            self._remove(digest)

    # ------------------------------------------------------------------------- the index

    def _open_index(self) -> sqlite3.Connection:
        """Open the index and load it; an unreadable index is replaced by an empty one."""
        path = self.dir / _INDEX_NAME
        try:
            self._db = _connect_index(path)
            self._load_index()
            return self._db
        except sqlite3.DatabaseError as exc:
            # The index is only a cache of what the directory holds: start over rather than
            # refuse to mount. The content files it described become orphans, removed below.
            log.warning("content cache index %s is unreadable (%s); starting empty", path, exc)
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self._rows.clear()
            self._used = 0
            self._db = _connect_index(path)
            self._load_index()
            return self._db

    def _load_index(self) -> None:
        """Read the index and reconcile it with the files actually present."""
        names = set(os.listdir(self.dir))
        kept: set[str] = set()
        rows = self._db.execute(
            "SELECT digest, doc_id, version, hash, size, complete, last_access, gen,"
            " block_size, blocks FROM entries ORDER BY last_access"
        ).fetchall()
        for digest, doc_id, version, hsh, size, complete, last_access, gen, bsize, blocks in rows:
            key = ContentKey(str(doc_id), int(version), str(hsh), int(size))
            part = digest + _PART_SUFFIX
            row: _Row | None = None
            if key.digest() != digest:
                row = None
            elif digest in names and _file_size(self.dir / digest) == key.size:
                # A final name only ever appears after the file was complete and fsynced, even
                # if the process died before the index said so.
                row = _Row(key, True, key.size, last_access, gen, None)
                if not complete:
                    self._write_index("UPDATE entries SET complete=1 WHERE digest=?", (digest,))
            elif (
                not complete
                and part in names
                and bsize == self.block_size
                and blocks is not None
                and _file_size(self.dir / part) == key.size
            ):
                try:
                    bset = BlockSet(-(-key.size // self.block_size), bytes(blocks))
                except ValueError:
                    bset = None
                if bset is not None and bset.count:
                    row = _Row(key, False, self._filled_bytes(key, bset), last_access, gen, None)
                    row.blocks = bset.to_bytes()
            if row is None:
                self._write_index("DELETE FROM entries WHERE digest=?", (digest,))
                continue
            self._rows[digest] = row
            self._used += row.used
            kept.add(digest if row.complete else part)
        for name in names - kept:
            if name.endswith(_TRASH_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)
                continue
            stem = name.removesuffix(_PART_SUFFIX)
            if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)

    def _write_index(self, sql: str, params: tuple[Any, ...]) -> None:
        """One index update. A failure is logged, not raised: the index only speeds up a
        remount (a final file name proves completeness, a stored bitmap is only ever a subset
        of what is on disk), so losing an update loses cached data at worst, never correctness.
        """
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            if not self._index_failed:
                log.error("content cache index %s: %s", self.dir / _INDEX_NAME, exc)
            self._index_failed = True

    def _store_blocks(self, digest: str, gen: str, blocks: bytes) -> None:
        """Record a partial entry's bitmap; only call after its data was fsynced."""
        row = self._rows.get(digest)
        if row is None or row.gen != gen or row.complete:
            return
        self._write_index(
            "UPDATE entries SET blocks=?, block_size=?, used=?, last_access=?"
            " WHERE digest=? AND gen=? AND complete=0",
            (blocks, self.block_size, row.used, row.last_access, digest, gen),
        )

    # --------------------------------------------------------------------- entries & files

    def _final_path(self, digest: str) -> Path:
        return self.dir / digest

    def _part_path(self, digest: str) -> Path:
        return self.dir / (digest + _PART_SUFFIX)

    def _filled_bytes(self, key: ContentKey, blocks: BlockSet) -> int:
        used = blocks.count * self.block_size
        if blocks.n and (blocks.n - 1) in blocks:
            used -= blocks.n * self.block_size - key.size
        return used

    def _load_entry(self, key: ContentKey, digest: str) -> _Entry:
        entry = _Entry(key, digest, self.block_size)
        row = self._rows.get(digest)
        if row is not None and row.complete:
            try:
                entry.fd = os.open(self._final_path(digest), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                log.warning("cached content of %s vanished; fetching again", key.doc_id)
                self._remove(digest)
                row = None
            else:
                entry.complete = True
                entry.blocks.add_range(0, entry.nblocks)
                entry.row = row
                return entry
        if row is not None and row.blocks is not None:
            try:
                entry.fd = os.open(self._part_path(digest), os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                self._remove(digest)
            else:
                entry.blocks = BlockSet(entry.nblocks, row.blocks)
                entry.row = row
                # Still to be stored: the release of this entry must record it again.
                entry.dirty = digest in self._unpersisted
                return entry
        elif row is not None:
            self._remove(digest)
        if key.size == 0:
            # Nothing to fetch: an empty entry is complete the moment it exists.
            path = self._final_path(digest)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            entry.fd = fd
            entry.complete = True
            entry.row = self._insert_row(key, digest, complete=True)
        return entry

    def _insert_row(self, key: ContentKey, digest: str, *, complete: bool) -> _Row:
        gen = secrets.token_hex(8)
        now = time.time()
        self._write_index(
            "INSERT OR REPLACE INTO entries (digest, doc_id, version, hash, size, complete,"
            " last_access, used, gen, block_size, blocks) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (digest, key.doc_id, key.version, key.hash, key.size, int(complete), now,
             key.size if complete else 0, gen, self.block_size),
        )  # fmt: skip
        row = _Row(key, complete, key.size if complete else 0, now, gen, None)
        self._rows[digest] = row
        self._rows.move_to_end(digest)
        self._used += row.used
        return row

    def _ensure_file(self, entry: _Entry) -> int:
        """The writable descriptor of a partial entry, creating its sparse ``.part`` file."""
        if entry.fd is None:
            fd = os.open(
                self._part_path(entry.digest),
                os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.ftruncate(fd, entry.key.size)
            except OSError:
                os.close(fd)
                raise
            entry.fd = fd
            entry.row = self._insert_row(entry.key, entry.digest, complete=False)
        return entry.fd

    def _touch(self, digest: str) -> None:
        row = self._rows.get(digest)
        if row is not None:
            row.last_access = time.time()
            self._rows.move_to_end(digest)

    def _remove(self, digest: str) -> None:
        row = self._rows.pop(digest, None)
        used = 0
        if row is not None:
            self._used -= row.used
            used = row.used
        self._unpersisted.pop(digest, None)
        self._write_index("DELETE FROM entries WHERE digest=?", (digest,))
        for path in (self._final_path(digest), self._part_path(digest)):
            if used < DELETE_LATER_SIZE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            # Deleted by a thread, so renamed first: the same key may be fetched again at once,
            # under the same name. A leftover is removed at the next start.
            trash = self.dir / f"{digest}.{secrets.token_hex(4)}{_TRASH_SUFFIX}"
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                continue
            delete(trash, used)

    def _maybe_release(self, entry: _Entry) -> None:
        """Drop an entry from memory once nothing uses it, keeping what it cached."""
        if entry.pins or entry.streams or entry.finalizing:
            return
        if self._entries.get(entry.digest) is entry:
            del self._entries[entry.digest]
        if entry.fd is not None:
            os.close(entry.fd)
            entry.fd = None
        row = entry.row
        if row is None or self._rows.get(entry.digest) is not row or self._closed:
            return
        if not entry.complete and entry.blocks.count == 0:
            self._remove(entry.digest)
            return
        if not entry.complete and entry.dirty:
            snapshot = entry.blocks.to_bytes()
            row.blocks = snapshot
            self._unpersisted[entry.digest] = (row.gen, snapshot)
            if self._nursery is not None:
                self._nursery.start_soon(self._persist_blocks, entry.digest)
        self._write_index(
            "UPDATE entries SET last_access=? WHERE digest=?", (row.last_access, entry.digest)
        )

    async def _persist_blocks(self, digest: str) -> None:
        """fsync a released partial entry's data, then store its bitmap."""
        pending = self._unpersisted.get(digest)
        if pending is None:
            return
        try:
            await trio.to_thread.run_sync(_fsync_path, self._part_path(digest))
        except OSError:
            # Evicted meanwhile: nothing left to record.
            return
        if self._unpersisted.get(digest) is pending:
            del self._unpersisted[digest]
            self._store_blocks(digest, pending[0], pending[1])

    # ---------------------------------------------------------------------------- waiting

    def _check(self, f: CachedFile) -> _Entry:
        if f._closed:
            raise CacheClosedError("the cached file was closed")
        if self._closed:
            raise CacheClosedError("the content store was shut down")
        return f._entry

    def _notify(self, entry: _Entry) -> None:
        """Wake everything waiting on ``entry``: its streams or its blocks changed."""
        entry.changed.set()
        entry.changed = trio.Event()
        for w in entry.waiters:
            w.event.set()

    def _progress(self, entry: _Entry, s: _Stream) -> None:
        """Stream ``s`` got or wrote bytes: wake the reads it can serve now, and only those."""
        end = s.recv_end
        for w in entry.waiters:
            # Only reads that overlap what s has can have been helped by it.
            if w.start < end and s.wstart < w.end and self._available(entry, w.start, w.end):
                w.event.set()

    def _available(self, entry: _Entry, a: int, b: int) -> tuple[int, _Stream | None] | None:
        """Where bytes ``[a, b)`` of a partial entry can be read now, or None if not yet.

        ``(f, s)``: ``[a, f)`` from the cache file (filled blocks, or bytes a running stream
        wrote without a gap: a block need not be whole to be read), ``[f, b)`` from the chunks
        ``s`` has not written yet (``s`` is None when ``f == b``).
        """
        bs = self.block_size
        k = entry.blocks.first_missing(a // bs, (b - 1) // bs + 1)
        if k is None:
            return b, None
        c = max(a, k * bs)
        for s in entry.streams:
            if s.wstart <= c and b <= s.recv_end:
                f = max(a, min(b, s.pos))
                return (f, s) if f < b else (b, None)
        return None

    def _try_read(self, entry: _Entry, a: int, b: int) -> bytes | None:
        """Bytes ``[a, b)`` of a partial entry if they are all here, else None."""
        where = self._available(entry, a, b)
        if where is None:
            return None
        f, s = where
        assert entry.fd is not None
        if s is None:
            return _pread_all(entry.fd, b - a, a)
        part = s.queued_bytes(f, b)
        if f == a:
            return part
        return _pread_all(entry.fd, f - a, a) + part

    async def _wait_read(self, entry: _Entry, fetch: Fetcher, a: int, b: int) -> bytes:
        """Wait until bytes ``[a, b)`` can be served, starting a stream as needed."""
        deadline = trio.current_time() + self.read_timeout
        bs = self.block_size
        first = a // bs
        last = (b - 1) // bs + 1
        waited: _Stream | None = None
        while True:
            data = self._try_read(entry, a, b)
            if data is not None:
                return data
            if waited is not None and waited.done and waited.error is not None:
                # The stream this read depended on gave up: fail now rather than start over
                # (a later read will try again).
                raise waited.error
            k = entry.blocks.first_missing(first, last)
            assert k is not None  # else _try_read had served it
            waited = self._stream_for(entry, k, fetch)
            w = _Waiter(a, b)
            entry.waiters.append(w)
            try:
                with trio.move_on_at(deadline) as scope:
                    await w.event.wait()
            finally:
                entry.waiters.remove(w)
            if scope.cancelled_caught:
                raise ContentTimeoutError(
                    f"{entry.key.doc_id} v{entry.key.version}: no data for"
                    f" {self.read_timeout:g} s at offset {k * bs}"
                )

    async def _wait_blocks(
        self, entry: _Entry, fetch: Fetcher, first: int, last: int, *, stall: bool
    ) -> None:
        """Wait until blocks ``[first, last)`` are filled, starting streams as needed.

        With ``stall`` the deadline moves forward whenever a block of the entry is filled.
        """
        deadline = trio.current_time() + self.read_timeout
        progress = entry.blocks.count
        waited: _Stream | None = None
        while True:
            k = entry.blocks.first_missing(first, last)
            if k is None:
                return
            if waited is not None and waited.done and waited.error is not None:
                # The stream this read depended on gave up: fail now rather than start over
                # (a later read will try again).
                raise waited.error
            waited = self._stream_for(entry, k, fetch)
            event = entry.changed
            with trio.move_on_at(deadline) as scope:
                await event.wait()
            if scope.cancelled_caught:
                raise ContentTimeoutError(
                    f"{entry.key.doc_id} v{entry.key.version}: no data for"
                    f" {self.read_timeout:g} s at offset {k * self.block_size}"
                )
            if stall and entry.blocks.count > progress:
                progress = entry.blocks.count
                deadline = trio.current_time() + self.read_timeout

    def _stream_for(self, entry: _Entry, k: int, fetch: Fetcher) -> _Stream:
        """The stream that will fill block ``k``, started here if no running one will soon."""
        for s in entry.streams:
            if s.covers(k):
                near = k - s.recv_end // self.block_size < self._far_blocks
                if entry.no_range or near or len(entry.streams) >= 2 * self.max_streams:
                    return s
                # A far read: fetch from k now and leave the earlier part to that stream.
                s.end_block = k
                break
        return self._start_streams(entry, k, fetch)

    def _start_streams(self, entry: _Entry, k: int, fetch: Fetcher) -> _Stream:
        if self._nursery is None:
            raise CacheClosedError("the content store is not running")
        self._ensure_file(entry)
        n = entry.nblocks
        if entry.no_range:
            region_end = n
        else:
            present = entry.blocks.first_present(k + 1, n)
            region_end = n if present is None else present
            for s in entry.streams:
                pb = s.pos // self.block_size
                if pb > k:
                    region_end = min(region_end, pb)
        segments = 1
        parallel = not entry.no_range and entry.key.size >= self.min_parallel_size
        if parallel and self.parallel_below is None:
            free = self.max_streams - len(entry.streams)
            segments = max(1, min(free, (region_end - k) // self._min_segment_blocks))
        bounds = [k + (region_end - k) * i // segments for i in range(segments + 1)]
        leader = _Stream(entry, fetch, bounds[0], bounds[1], self.block_size)
        # With parallel_below, the leader alone first: it splits later if it turns out slow.
        leader.may_split = parallel and self.parallel_below is not None
        streams = [leader] + [
            _Stream(entry, fetch, bounds[i], bounds[i + 1], self.block_size, after=leader)
            for i in range(1, segments)
        ]
        for s in streams:
            self._launch(s)
        self._notify(entry)
        return leader

    def _launch(self, s: _Stream) -> None:
        assert self._nursery is not None
        s.entry.streams.append(s)
        self._nursery.start_soon(self._run_stream, s)

    def _maybe_split(self, s: _Stream) -> None:
        """After its probe time, split the rest of a slow stream's range into parallel streams.

        One fast stream is best where the mount itself is the limit (a fast link: more streams
        only add work); several streams pay where each is held to a rate (a far or throttled
        server), which shows as a rate below ``parallel_below``.
        """
        assert self.parallel_below is not None
        now = trio.current_time()
        if s.probe is None:
            s.probe = (now, s.received)  # the first chunk: the clock starts now
            return
        t0, r0 = s.probe
        if now - t0 < _SPLIT_PROBE:
            return
        s.may_split = False
        entry = s.entry
        if entry.no_range or (s.received - r0) / (now - t0) >= self.parallel_below:
            return
        # From the block after the next one it has not received, so the leader never loses a
        # block it has begun (or queued).
        first = s.recv_end // self.block_size + 2
        free = self.max_streams - len(entry.streams) + 1
        n = min(free, (s.end_block - first) // self._min_segment_blocks)
        if n < 2:
            return
        bounds = [first + (s.end_block - first) * i // n for i in range(n + 1)]
        s.end_block = bounds[1]
        for i in range(1, n):
            self._launch(_Stream(entry, s.fetch, bounds[i], bounds[i + 1], self.block_size))
        self._notify(entry)

    # ---------------------------------------------------------------------------- streams

    async def _run_stream(self, s: _Stream) -> None:
        entry = s.entry
        attempt = 0
        try:
            with s.scope:
                if s.after is not None:
                    await s.after.opened.wait()
                while s.pos < s.end_bytes and not entry.blocks.full:
                    filled_before = entry.blocks.count
                    try:
                        await self._stream_once(s)
                    except Exception as exc:
                        if entry.blocks.count > filled_before:
                            attempt = 0  # it moved forward: a flaky link, not a dead one
                        if not getattr(exc, "retryable", False) or attempt >= self.fetch_retries:
                            s.error = exc
                            log.warning(
                                "download of %s v%s failed at offset %d: %s",
                                entry.key.doc_id, entry.key.version, s.pos, exc,
                            )  # fmt: skip
                            return
                        attempt += 1
                        level = logging.WARNING if attempt == self.fetch_retries else logging.DEBUG
                        log.log(
                            level,
                            "download of %s v%s interrupted at offset %d (%s); retry %d of %d",
                            entry.key.doc_id, entry.key.version, s.pos, exc, attempt,
                            self.fetch_retries,
                        )  # fmt: skip
                        await trio.sleep(
                            backoff(attempt - 1, base=_RETRY_BASE, cap=_RETRY_CAP, jitter=_JITTER)
                        )
        finally:
            s.done = True
            s.opened.set()
            entry.streams.remove(s)
            self._notify(entry)
            self._maybe_release(entry)
            if not self._closed:
                self.evict_to_budget()

    async def _stream_once(self, s: _Stream) -> None:
        """One download from ``s.pos``; returns at the stream's end, raises if cut short."""
        entry = s.entry
        size = entry.key.size
        start = s.pos
        end = s.end_bytes
        async with s.fetch(start, end) as d:
            if d.total_size is not None and d.total_size != size:
                raise ContentSizeError(
                    f"{entry.key.doc_id} v{entry.key.version}: the server has {d.total_size}"
                    f" bytes, expected {size}"
                )
            if d.start > start or 0 < d.start < start:
                # Only two answers make sense: the range asked for, or the whole body.
                raise ContentSizeError(
                    f"{entry.key.doc_id} v{entry.key.version}: asked for bytes from {start},"
                    f" the server sent them from {d.start}"
                )
            # A whole body answering a range from 0 starts where the range does: only its
            # length (or the lack of range support) tells them apart.
            whole = d.start < start or (
                d.start == 0
                and end < size
                and (not d.range_supported or (d.length is not None and d.length > end))
            )
            if whole:
                if not self._take_over_without_ranges(s):
                    return
                end = size  # the whole body is coming: take all of it
            pos = d.start
            s.pos = pos
            s.wstart = min(s.wstart, pos)
            fd = self._ensure_file(entry)
            chunks = d.chunks()
            try:
                async for chunk in chunks:
                    if s.write_error is not None:
                        raise s.write_error
                    stop = s.end_bytes
                    if pos >= stop and chunk and stop == end < size and d.start == 0:
                        # More than the range from 0 asked for, with no length announced: the
                        # whole body after all.
                        if not self._take_over_without_ranges(s):
                            return
                        end = size
                        stop = s.end_bytes
                    if pos >= stop:
                        if stop < end:
                            return  # another stream took over the rest: stop reading now
                        if chunk:
                            raise ContentSizeError(
                                f"{entry.key.doc_id} v{entry.key.version}: the server sent more"
                                f" than the {end - start} bytes asked for"
                            )
                        continue
                    n = len(chunk)
                    if not n:
                        continue
                    if pos + n > size:
                        raise ContentSizeError(
                            f"{entry.key.doc_id} v{entry.key.version}: the server sent more"
                            f" than the expected {size} bytes"
                        )
                    data = memoryview(chunk)
                    if pos + n > stop:
                        data = data[: stop - pos]
                    n = len(data)
                    if s.queue or (n >= _THREAD_WRITE_MIN and self._writes_slow()):
                        # Written behind by a worker thread: the trio thread goes on receiving
                        # and answering reads (from the queue meanwhile).
                        if s.writer is None:
                            s.writer = trio.Event()
                            assert self._nursery is not None
                            self._nursery.start_soon(self._write_behind, s, fd)
                        s.queue.append(data)
                        s.queued += n
                        s.to_writer.set()
                        self._progress(entry, s)
                        while s.queued > _WRITE_BEHIND and s.write_error is None:
                            await s.from_writer.wait()
                    else:
                        took = _timed_pwrite(fd, data, pos)
                        if n >= _THREAD_WRITE_MIN:
                            self._note_write(n, took)
                        s.pos = pos + n
                        self._mark(s, pos, s.pos)
                        self._progress(entry, s)
                    pos += n
                    s.received += n
                    if not s.opened.is_set():
                        # The parallel segments ask only now: the reader waiting for these
                        # first bytes has them, and a server that ignores ranges has already
                        # stopped them (see _take_over_without_ranges).
                        s.opened.set()
                    if s.may_split:
                        self._maybe_split(s)
                    if pos >= stop and stop < end:
                        return  # handed over: do not wait for another chunk
                    # At the end of the range, go on iterating: the body ends by itself, which
                    # leaves the connection reusable, and any byte too many is caught above.
                while s.queued and s.write_error is None:
                    await s.from_writer.wait()
                if s.write_error is not None:
                    raise s.write_error
            finally:
                # Leaving early (a stop, an error) must close the body now, not at GC time.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._stop_writer(s)
            want = min(end, s.end_bytes)
            if pos < want:
                raise ContentShortError(
                    f"{entry.key.doc_id} v{entry.key.version}: download ended at {pos},"
                    f" expected {want}"
                )

    def _writes_slow(self) -> bool:
        """True while writes to the cache files run below ``thread_writes_below`` bytes/s.

        Where the page cache has memory at hand a write of a chunk is a quick copy, cheaper
        inline than a hop to a thread; where the kernel must first find memory for it (a
        virtual machine handing memory back to its host), a write stalls the trio thread for
        milliseconds, and a worker thread lets receiving and answering reads go on meanwhile.
        """
        return self._write_cost * self.thread_writes_below > 1.0

    def _note_write(self, n: int, seconds: float) -> None:
        self._write_cost += (seconds / n - self._write_cost) / 4

    async def _write_behind(self, s: _Stream, fd: int) -> None:
        """Write the chunks ``s`` queues to the cache file, in order, in a worker thread."""
        entry = s.entry
        try:
            # Shielded: what was received is written even when the file is closed or the store
            # shuts down (at most _WRITE_BEHIND bytes): a reader may have had those bytes from
            # memory, and a remount must not fetch them again. It ends when its stream closes
            # it (in _stop_writer, which every exit of the stream runs).
            with trio.CancelScope(shield=True):
                while s.queue or not s.closing:
                    if not s.queue:
                        s.to_writer = trio.Event()
                        await s.to_writer.wait()
                        continue
                    data = s.queue[0]
                    pos = s.pos
                    took = await trio.to_thread.run_sync(
                        _timed_pwrite, fd, data, pos, limiter=self._write_limiter
                    )
                    self._note_write(len(data), took)
                    s.queue.popleft()
                    s.queued -= len(data)
                    s.pos = pos + len(data)
                    self._mark(s, pos, s.pos)
                    self._progress(entry, s)
                    s.from_writer.set()
                    s.from_writer = trio.Event()
        except OSError as exc:
            s.write_error = exc
        finally:
            assert s.writer is not None
            s.writer.set()
            s.from_writer.set()

    async def _stop_writer(self, s: _Stream) -> None:
        """Let the writer of ``s`` write what is queued, then end; wait for it."""
        done = s.writer
        if done is None:
            return
        s.closing = True
        s.to_writer.set()
        # Shielded: the writer uses the entry's descriptor, which must stay open until it ends.
        with trio.CancelScope(shield=True):
            await done.wait()
        s.writer = None
        s.closing = False
        s.queue.clear()
        s.queued = 0

    def _take_over_without_ranges(self, s: _Stream) -> bool:
        """The server ignored a range: make ``s`` the entry's one stream, to EOF.

        Returns False (and stops ``s``) if another running stream already took over.
        """
        entry = s.entry
        holder = entry.single
        if holder is not None and holder is not s and not holder.done:
            s.end_block = s.pos // self.block_size
            return False
        if not entry.no_range:
            log.info(
                "the server ignores byte ranges for %s; reading it in one stream",
                entry.key.doc_id,
            )
        entry.no_range = True
        entry.single = s
        s.end_block = entry.nblocks
        for other in entry.streams:
            if other is not s:
                # Stop covering anything at once; the cancellation lands at its next await.
                other.end_block = other.pos // self.block_size
                other.scope.cancel()
        return True

    def _mark(self, s: _Stream, p0: int, p1: int) -> None:
        """Mark the blocks completed by writing ``[p0, p1)`` as filled."""
        entry = s.entry
        bs = self.block_size
        size = entry.key.size
        k = p0 // bs
        added = 0
        while True:
            bstart = k * bs
            bend = min(bstart + bs, size)
            if bend > p1 or bstart >= size:
                break
            if bstart >= s.wstart and entry.blocks.add(k):
                added += 1
                if entry.row is not None:
                    entry.row.used += bend - bstart
                    self._used += bend - bstart
            k += 1
        if not added:
            return
        entry.dirty = True
        # Only what waits for whole blocks; reads are woken by the stream's _progress.
        entry.changed.set()
        entry.changed = trio.Event()
        if entry.blocks.full:
            self._start_finalize(entry)
        self._fills_since_evict += added
        if self._used > self.max_bytes and self._fills_since_evict >= _EVICT_EVERY_BLOCKS:
            self.evict_to_budget()

    # ---------------------------------------------------------------------------- finalise

    def _start_finalize(self, entry: _Entry) -> None:
        if entry.finalizing or entry.complete or self._nursery is None:
            return
        entry.finalizing = True
        entry.finalize_error = None
        self._nursery.start_soon(self._finalize, entry)

    async def _finalize(self, entry: _Entry) -> None:
        """fsync, rename to the final name, then record the entry complete."""
        try:
            with trio.CancelScope(shield=True):
                assert entry.fd is not None
                await trio.to_thread.run_sync(os.fsync, entry.fd)
                os.rename(self._part_path(entry.digest), self._final_path(entry.digest))
                fsync_dir(self.dir)
            row = entry.row
            if row is not None and self._rows.get(entry.digest) is row:
                self._used += entry.key.size - row.used
                row.used = entry.key.size
                row.complete = True
                row.blocks = None
                self._write_index(
                    "UPDATE entries SET complete=1, used=?, blocks=NULL WHERE digest=?",
                    (entry.key.size, entry.digest),
                )
            entry.complete = True
        except OSError as exc:
            entry.finalize_error = exc
            log.error("could not store the downloaded %s in the cache: %s", entry.key.doc_id, exc)
        finally:
            entry.finalizing = False
            self._notify(entry)
            self._maybe_release(entry)


# ---------------------------------------------------------------------------------- helpers

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


def _connect_index(path: Path) -> sqlite3.Connection:
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


def _make_private_dir(path: Path, *, chmod: bool) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if chmod:
        os.chmod(path, 0o700)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _timed_pwrite(fd: int, data: memoryview, offset: int) -> float:
    """``_pwrite_all``; returns the seconds it took."""
    start = time.perf_counter()
    _pwrite_all(fd, data, offset)
    return time.perf_counter() - start


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise ContentShortError(f"cache file ended at {offset + got}, expected {offset + size}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _copy_file(src: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(src, "rb") as fin, open(fd, "wb") as fout:
        # copyfileobj would go through Python buffers; copyfile's sendfile path stays in the
        # kernel, but needs paths. Use sendfile directly on the two descriptors.
        offset = 0
        size = os.fstat(fin.fileno()).st_size
        while offset < size:
            sent = os.sendfile(fout.fileno(), fin.fileno(), offset, min(size - offset, 1 << 30))
            if sent == 0:
                break
            offset += sent
