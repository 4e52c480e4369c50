"""The content store: what the filesystem layer calls (open, read, close, adopt, ...).

It owns the index (``index``), the in-memory entries of open keys (``entries``) and their
streams (``streams``), and ties them together: pins, eviction, finalising a complete entry
(fsync, rename to the final name, record it complete), the room on the cache disk (entries
that do not fit are passed through) and shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import trio

from bimfs.cache.blocks import BlockSet
from bimfs.cache.content.entries import Entry, InUse, StreamFor
from bimfs.cache.content.index import Index
from bimfs.cache.content.keys import CachedFile, ContentKey, Fetcher
from bimfs.cache.content.streams import Stream, Streams, StreamSettings
from bimfs.cache.errors import CacheClosedError, CacheFullError
from bimfs.cache.files import (
    disk_space,
    fsync_dir,
    make_private_dir,
    no_space,
    pread_all,
)

__all__ = ["MIN_FREE_FRACTION", "MIN_FREE_MAX", "ContentStore"]

log = logging.getLogger("bimfs.cache.content")

# Re-check the budget after this many newly filled blocks while a stream grows the cache.
_EVICT_EVERY_BLOCKS = 64

MIN_FREE_MAX = 64 << 20
"""By default the cache leaves this much of its disk free (for saves and the upload journal,
which share the disk and cannot be evicted) ..."""

MIN_FREE_FRACTION = 16
"""... or this fraction of a disk smaller than 16 times that."""


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
        min_free: int | None = None,
        read_ahead: int | None = 1 << 20,
    ) -> None:
        if block_size <= 0 or max_streams <= 0 or max_bytes < 0:
            raise ValueError("block_size and max_streams must be positive, max_bytes >= 0")
        self.root = Path(root)
        self.dir = self.root / "content"
        self.max_bytes = max_bytes
        # Bytes of the disk the cache leaves free; None: MIN_FREE_MAX, or a MIN_FREE_FRACTION
        # of a small disk.
        self.min_free = min_free
        self.block_size = block_size
        self.read_timeout = read_timeout
        make_private_dir(self.root, chmod=False)
        make_private_dir(self.dir, chmod=True)
        self._entries: dict[str, Entry] = {}
        # Entries passed through and detached from their key (``_drop_file``) that are still
        # open or streaming: a new open of the key gets a new entry that tries to keep it.
        self._detached: set[Entry] = set()
        # Whether a failed write to the cache was reported since the cache last kept an entry.
        self._write_failure_logged = False
        self._nursery: trio.Nursery | None = None
        self._streams = Streams(
            StreamSettings(
                block_size=block_size,
                max_streams=max_streams,
                min_parallel_size=min_parallel_size,
                far_distance=far_distance,
                fetch_retries=fetch_retries,
                parallel_below=parallel_below,
                thread_writes_below=thread_writes_below,
                read_ahead=read_ahead,
            ),
            nursery=self._running,
            prepare=self._prepare,
            no_room=self._no_room,
            filled=self._filled,
            ended=self._stream_ended,
        )
        self._fills_since_evict = 0
        # Entries kept for offline work (``keep``): never evicted, counted in the budget.
        self._kept: frozenset[str] = frozenset()
        self._in_use = InUse(self._entries, self._kept)
        self._bytes_served = 0
        self._closed = False
        self._index = Index(self.dir, block_size)

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

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise CacheClosedError("the content store is not running")
        return self._nursery

    def _shutdown(self) -> None:
        """Store what is known about partial entries, close every file and the index."""
        if self._closed:
            return
        self._closed = True
        for entry in list(self._entries.values()):
            if entry.fd is not None and not entry.complete and entry.dirty and entry.row:
                with contextlib.suppress(OSError):
                    os.fsync(entry.fd)
                    self._index.store_blocks(entry.digest, entry.row.gen, entry.blocks.to_bytes())
            if entry.fd is not None:
                os.close(entry.fd)
                entry.fd = None
        self._entries.clear()
        self._index.close()

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
        self._index.touch(digest)
        return CachedFile(key, entry, fetch)

    def close(self, f: CachedFile) -> None:
        """Close a view; the entry is unpinned (and its streams stopped) when none is left."""
        if f._closed:
            return
        f._closed = True
        entry = f._entry
        entry.pins -= 1
        self._index.touch(entry.digest)
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
        ``ContentSizeError`` if the server's content does not match the key; never an error of
        the cache disk: content it cannot keep is passed through.
        """
        entry = self._check(f)
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        end = min(offset + size, entry.key.size)
        if offset >= end:
            return b""
        if not entry.complete:
            data = entry.try_read(offset, end)
            if data is None:
                stream_for = self._stream_for(entry, f.fetch)
                data = await entry.wait_read(offset, end, self.read_timeout, stream_for)
        else:
            assert entry.fd is not None
            data = pread_all(entry.fd, end - offset, offset)
        self._bytes_served += len(data)
        return data

    def read_cached(self, f: CachedFile, offset: int, size: int) -> bytes | None:
        """Bytes ``[offset, offset + size)`` when the cache has all of them, else None (never
        starts a download: what a read can have while the server cannot be reached)."""
        entry = self._check(f)
        end = min(offset + size, entry.key.size)
        if offset >= end:
            return b""
        if entry.complete:
            assert entry.fd is not None
            data: bytes | None = pread_all(entry.fd, end - offset, offset)
        else:
            data = entry.try_read(offset, end)
        if data is not None:
            self._bytes_served += len(data)
        return data

    async def ensure_complete(self, f: CachedFile) -> Path:
        """Fetch every missing block and return the complete file's path.

        The path stays valid while ``f`` is open (the entry is pinned). Raises like ``read``;
        the timeout applies to a stall (no new block for ``read_timeout``), not to the whole.
        ``CacheFullError`` (``ENOSPC``) when the cache disk has no room for the content, even
        after evicting what it could.
        """
        entry = self._check(f)
        if entry.passthrough:
            raise CacheFullError(
                f"no room in the cache for {entry.key.doc_id} v{entry.key.version}"
                f" ({entry.key.size} bytes)"
            )
        if not entry.complete:
            stream_for = self._stream_for(entry, f.fetch, whole=True)
            await entry.wait_blocks(0, entry.nblocks, self.read_timeout, stream_for, stall=True)
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
        return self._index.final_path(entry.digest)

    def is_complete(self, key: ContentKey) -> bool:
        """True when the whole content of ``key`` is cached."""
        row = self._index.rows.get(key.digest())
        return row is not None and row.complete

    def adopt(self, key: ContentKey, path: Path) -> bool:
        """Take ``path``, a complete and fsynced file holding exactly the content of ``key``
        (a save that was just uploaded), as that key's cache entry, by renaming it: a read of
        what was just saved then downloads nothing. False (and ``path`` untouched) when the key
        is already cached or open, the file has another size, does not fit the budget, cannot
        be moved (another file system), or the store was closed."""
        digest = key.digest()
        if self._closed or digest in self._index.rows or digest in self._entries:
            return False
        if key.size > self.max_bytes:
            return False
        try:
            if os.stat(path).st_size != key.size:
                return False
            os.rename(path, self._index.final_path(digest))
        except OSError as exc:
            log.debug("could not keep %s in the content cache: %s", path, exc)
            return False
        # Durable enough for a cache: if the rename is lost in a crash the file is an orphan
        # of the journal (removed at its next load), if the index row is lost the file is
        # unknown here (removed at the next load).
        self._index.insert(key, digest, complete=True)
        self.evict_to_budget()
        return True

    def keep(self, digests: frozenset[str]) -> None:
        """Keep the entries of ``digests`` (``ContentKey.digest``) from eviction, replacing
        the set kept so far; entries that leave it may be evicted again at once."""
        released = bool(self._kept - digests)
        self._kept = self._in_use.kept = digests
        if released and not self._closed:
            self.evict_to_budget()

    def is_kept(self, digest: str) -> bool:
        return digest in self._kept

    def cached_bytes(self, key: ContentKey, digest: str | None = None) -> int:
        """How many bytes of ``key``'s content the cache holds (its size once complete)."""
        row = self._index.rows.get(digest or key.digest())
        if row is None:
            return 0
        return key.size if row.complete else min(row.used, key.size)

    def usage(self) -> dict[str, Any]:
        """Cache use for ``bimfs status``: bytes, entries, pins, budget, active streams, and
        ``bytes_served``: bytes this store has answered reads with since it started (reads the
        kernel's page cache answered never get here)."""
        now = trio.current_time()
        streams = []
        entries = [*self._entries.values(), *self._detached]
        for entry in entries:
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
        rows = self._index.rows
        return {
            "bytes_used": self._index.used,
            "kept_bytes": sum(rows[d].used for d in self._kept if d in rows),
            "budget": self.max_bytes,
            "entries": len(rows),
            "complete_entries": sum(1 for r in rows.values() if r.complete),
            "pinned": sum(1 for e in entries if e.pins > 0),
            "open_handles": sum(e.pins for e in entries),
            "passed_through": sum(1 for e in entries if e.passthrough),
            "bytes_served": self._bytes_served,
            "streams": streams,
        }

    def evict_to_budget(self) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes`` and leaves
        ``min_free`` bytes of its disk free (when it can: whatever else fills the disk).

        Entries that are open, streaming or being finalised are skipped.
        """
        self._fills_since_evict = 0
        budget = self.max_bytes
        room = self._room()
        if room is not None and room < 0:
            budget = min(budget, self._index.used + room)
        self._index.evict(max(0, budget), self._in_use)

    # ------------------------------------------------------------------------------ entries

    def _check(self, f: CachedFile) -> Entry:
        if f._closed:
            raise CacheClosedError("the cached file was closed")
        if self._closed:
            raise CacheClosedError("the content store was shut down")
        return f._entry

    def _stream_for(self, entry: Entry, fetch: Fetcher, *, whole: bool = False) -> StreamFor:
        """What a wait on ``entry`` calls for the stream that will fill a block (``whole``:
        for a wait on every block, which no read-ahead window may hold up)."""

        def stream_for(k: int, offset: int) -> Stream:
            return self._streams.stream_for(entry, k, offset, fetch, whole=whole)

        return stream_for

    def _load_entry(self, key: ContentKey, digest: str) -> Entry:
        index = self._index
        entry = Entry(key, digest, self.block_size)
        row = index.rows.get(digest)
        if row is not None and row.complete:
            try:
                entry.fd = os.open(index.final_path(digest), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                log.warning("cached content of %s vanished; fetching again", key.doc_id)
                index.remove(digest)
                row = None
            else:
                entry.complete = True
                entry.blocks.add_range(0, entry.nblocks)
                entry.row = row
                return entry
        if row is not None and row.blocks is not None:
            try:
                entry.fd = os.open(index.part_path(digest), os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                index.remove(digest)
            else:
                entry.blocks = BlockSet(entry.nblocks, row.blocks)
                entry.row = row
                # Still to be stored: the release of this entry must record it again.
                entry.dirty = digest in index.unpersisted
                return entry
        elif row is not None:
            index.remove(digest)
        if key.size == 0:
            # Nothing to fetch: an empty entry is complete the moment it exists.
            path = index.final_path(digest)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                # Not even an empty file fits: reads need no bytes anyway.
                log.debug("cannot keep the empty %s in the cache: %s", key.doc_id, exc)
                entry.passthrough = True
                return entry
            entry.fd = fd
            entry.complete = True
            entry.row = index.insert(key, digest, complete=True)
        return entry

    # -------------------------------------------------------------------------- disk room

    def _room(self) -> int | None:
        """Bytes the cache may still write to its disk: the free space (counting files being
        deleted) less what it leaves free; None when the disk cannot be asked."""
        space = disk_space(self.dir)
        if space is None:
            return None
        free, total = space
        keep = self.min_free
        if keep is None:
            keep = min(MIN_FREE_MAX, total // MIN_FREE_FRACTION)
        return free + self._index.deleting - keep

    async def _make_room(self, need: int) -> tuple[bool, int]:
        """Make room on the disk for ``need`` more bytes, evicting least recently used entries
        that are not in use if that makes them fit. Returns whether they fit now and the bytes
        evicted; nothing is evicted for bytes that would not fit even then."""
        room = self._room()
        if room is None or need <= room:
            return True, 0
        index = self._index
        if need > room + index.evictable(self._in_use):
            return False, 0
        trash: list[tuple[Path, int]] = []
        evicted = index.evict(index.used - (need - room), self._in_use, trash)
        if trash:
            # Deleted before the write that needs the space, not by a thread of their own.
            await trio.to_thread.run_sync(index.delete_now, trash)
        return True, evicted

    async def _prepare(self, entry: Entry) -> bool:
        """Before a stream writes to ``entry``: True once the disk has room for the rest of
        its content (evicting if needed) and the entry a file; False if it is passed through."""
        async with entry.lock:
            if entry.passthrough:
                return False
            if not entry.room_checked:
                need = entry.key.size - self._index.filled_bytes(entry.key, entry.blocks)
                fits, _ = await self._make_room(need)
                if entry.passthrough:
                    return False
                if not fits:
                    log.info(
                        "%s v%s (%d bytes) does not fit in the cache disk; reading it without"
                        " keeping it",
                        entry.key.doc_id, entry.key.version, entry.key.size,
                    )  # fmt: skip
                    self._pass_through(entry)
                    return False
                entry.room_checked = True
            if entry.fd is None:
                try:
                    self._create_part(entry)
                except OSError as exc:
                    self._write_failed(entry, exc)
                    return False
            return True

    def _create_part(self, entry: Entry) -> None:
        """Create the sparse ``.part`` file of a partial entry, and its row."""
        path = self._index.part_path(entry.digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, entry.key.size)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        entry.fd = fd
        entry.row = self._index.insert(entry.key, entry.digest, complete=False)

    async def _no_room(self, entry: Entry, error: OSError) -> bool:
        """Writing to ``entry``'s file failed with ``error``. True when the stream should try
        again: the disk was full and evicting made room; otherwise the entry is passed
        through (False)."""
        if entry.passthrough or entry.complete:
            return False
        if no_space(error):
            need = entry.key.size - self._index.filled_bytes(entry.key, entry.blocks)
            fits, evicted = await self._make_room(need)
            if fits and evicted and not entry.passthrough:
                return True
        self._write_failed(entry, error)
        return False

    def _write_failed(self, entry: Entry, error: OSError) -> None:
        """The cache disk did not take ``entry``'s content: say so (once, until the cache
        keeps an entry again) and pass the entry through."""
        level = logging.DEBUG if self._write_failure_logged else logging.WARNING
        self._write_failure_logged = True
        log.log(
            level,
            "cannot keep %s v%s in the cache (%s); reading it without keeping it",
            entry.key.doc_id, entry.key.version, error,
        )  # fmt: skip
        self._pass_through(entry)

    def _pass_through(self, entry: Entry) -> None:
        """Give up keeping ``entry``: its reads are served by memory streams from now on, its
        file streams are stopped and, once they ended, its file is deleted."""
        if entry.passthrough or entry.complete:
            return
        entry.passthrough = True
        for s in entry.streams:
            if not s.memory:
                s.scope.cancel()
        entry.notify()
        self._drop_file(entry)

    def _drop_file(self, entry: Entry) -> None:
        """Delete the file and row of an entry passed through once no stream writes to it,
        and detach the entry from its key: the next open of the key tries to keep it again."""
        if not entry.passthrough or entry.complete or entry.finalizing:
            return
        if any(not s.memory for s in entry.streams):
            return
        if entry.fd is not None:
            os.close(entry.fd)
            entry.fd = None
        if entry.row is not None:
            if self._index.rows.get(entry.digest) is entry.row:
                self._index.remove(entry.digest)
            entry.row = None
        if entry.blocks.count:
            entry.blocks = BlockSet(entry.nblocks)
            entry.notify()
        entry.dirty = False
        if self._entries.get(entry.digest) is entry:
            del self._entries[entry.digest]
            if entry.pins or entry.streams:
                self._detached.add(entry)

    # ------------------------------------------------------------------- filling, releasing

    def _filled(self, entry: Entry, blocks: int, nbytes: int) -> None:
        """A stream filled ``blocks`` more blocks (``nbytes`` bytes) of ``entry``."""
        if entry.row is not None:
            self._index.add_filled(entry.row, nbytes)
        if entry.blocks.full:
            self._start_finalize(entry)
        self._fills_since_evict += blocks
        if self._fills_since_evict >= _EVICT_EVERY_BLOCKS:
            self.evict_to_budget()

    def _stream_ended(self, entry: Entry) -> None:
        self._drop_file(entry)
        self._maybe_release(entry)
        if not self._closed:
            self.evict_to_budget()

    def _maybe_release(self, entry: Entry) -> None:
        """Drop an entry from memory once nothing uses it, keeping what it cached."""
        if entry.pins or entry.streams or entry.finalizing:
            return
        self._detached.discard(entry)
        if self._entries.get(entry.digest) is entry:
            del self._entries[entry.digest]
        if entry.fd is not None:
            os.close(entry.fd)
            entry.fd = None
        index = self._index
        row = entry.row
        if row is None or index.rows.get(entry.digest) is not row or self._closed:
            return
        if not entry.complete and entry.blocks.count == 0:
            index.remove(entry.digest)
            return
        if not entry.complete and entry.dirty:
            index.keep_blocks(entry.digest, row, entry.blocks.to_bytes())
            if self._nursery is not None:
                self._nursery.start_soon(index.persist_blocks, entry.digest)
        index.store_access(entry.digest, row)

    # ---------------------------------------------------------------------------- finalise

    def _start_finalize(self, entry: Entry) -> None:
        if entry.finalizing or entry.complete or self._nursery is None:
            return
        entry.finalizing = True
        entry.finalize_error = None
        self._nursery.start_soon(self._finalize, entry)

    async def _finalize(self, entry: Entry) -> None:
        """fsync, rename to the final name, then record the entry complete. If the disk
        refuses, the entry is passed through (its file deleted, its reads fetched again)."""
        index = self._index
        failed: OSError | None = None
        try:
            with trio.CancelScope(shield=True):
                assert entry.fd is not None
                await trio.to_thread.run_sync(os.fsync, entry.fd)
                os.rename(index.part_path(entry.digest), index.final_path(entry.digest))
                fsync_dir(self.dir)
            index.record_complete(entry.digest, entry.row)
            entry.complete = True
            self._write_failure_logged = False
        except OSError as exc:
            entry.finalize_error = failed = exc
        finally:
            entry.finalizing = False
            entry.notify()
            if failed is not None:
                self._write_failed(entry, failed)
            self._maybe_release(entry)
            if not entry.pins and not self._closed:
                # Completed after its last close: the close's eviction skipped it.
                self.evict_to_budget()
