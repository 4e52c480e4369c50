"""Entries in memory, and reads waiting for their bytes.

An :class:`Entry` is the state of one key's content while it is open, streaming or being
finalised: which blocks are filled (``BlockSet``), its streams, and the reads waiting for bytes
(:class:`Waiter`). A read of a partial entry is served from blocks marked filled, or from bytes
a running stream has received without a gap (written to the file, or still queued for it); a
block is marked filled only after all of its bytes were written, so a partial file is never
served as complete.

An entry the cache cannot keep (its disk has no room, or failed) is *passed through*
(``passthrough``): it has no file and no filled blocks, and its streams hold a bounded window
of received bytes in memory, from which reads are served the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from bimfs.cache.blocks import BlockSet
from bimfs.cache.content.index import Row
from bimfs.cache.content.keys import ContentKey
from bimfs.cache.errors import CacheFullError, ContentTimeoutError
from bimfs.cache.files import pread_all

if TYPE_CHECKING:
    from bimfs.cache.content.stream import Stream

__all__ = ["Entry", "StreamFor", "Waiter"]

StreamFor = Callable[[int, int], "Stream"]
"""``stream_for(k, offset)``: the stream that will fill block ``k`` (or, for an entry passed
through, receive the bytes from ``offset`` in it), started if none will soon."""


class Waiter:
    """A read waiting for bytes ``[start, end)`` of an entry."""

    __slots__ = ("end", "event", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.event = trio.Event()


class Entry:
    """In-memory state of an entry that is open, streaming or being finalised."""

    def __init__(self, key: ContentKey, digest: str, block_size: int) -> None:
        self.key = key
        self.digest = digest
        self.block_size = block_size
        self.nblocks = -(-key.size // block_size)
        self.blocks = BlockSet(self.nblocks)
        self.fd: int | None = None
        self.row: Row | None = None
        self.complete = False
        self.finalizing = False
        self.finalize_error: BaseException | None = None
        self.pins = 0
        self.streams: list[Stream] = []
        # Set once a download ignored a range: from then on one stream at a time, never parallel.
        self.no_range = False
        self.single: Stream | None = None
        self.dirty = False
        # Set once the cache cannot keep this entry: no file, streams hold bytes in memory.
        self.passthrough = False
        # Whether the disk was found to have room for the rest of the content; the lock makes
        # the first streams of the entry ask (and create its file) one at a time.
        self.room_checked = False
        self.lock = trio.Lock()
        # Set (and replaced) on every change; ``ensure_complete`` waits on it.
        self.changed = trio.Event()
        # Reads waiting for bytes: woken when their range can be served, or on any change of
        # the streams (one started or ended).
        self.waiters: list[Waiter] = []

    # ------------------------------------------------------------------------ filled ranges

    def fill(self, p0: int, p1: int, wstart: int) -> tuple[int, int]:
        """Mark the blocks completed by writing ``[p0, p1)`` as filled, counting only bytes a
        stream wrote without a gap from ``wstart``. Returns (blocks, bytes) newly filled."""
        bs = self.block_size
        size = self.key.size
        k = p0 // bs
        added = 0
        nbytes = 0
        while True:
            bstart = k * bs
            bend = min(bstart + bs, size)
            if bend > p1 or bstart >= size:
                break
            if bstart >= wstart and self.blocks.add(k):
                added += 1
                nbytes += bend - bstart
            k += 1
        if added:
            self.dirty = True
            # Only what waits for whole blocks; reads are woken by the stream's progress.
            self.changed.set()
            self.changed = trio.Event()
        return added, nbytes

    def available(self, a: int, b: int) -> tuple[int, Stream | None] | None:
        """Where bytes ``[a, b)`` of a partial entry can be read now, or None if not yet.

        ``(f, s)``: ``[a, f)`` from the cache file (filled blocks, or bytes a running stream
        wrote without a gap: a block need not be whole to be read), ``[f, b)`` from the chunks
        ``s`` has not written yet (``s`` is None when ``f == b``).
        """
        bs = self.block_size
        k = self.blocks.first_missing(a // bs, (b - 1) // bs + 1)
        if k is None:
            return b, None
        c = max(a, k * bs)
        for s in self.streams:
            if s.wstart <= c and b <= s.recv_end:
                f = max(a, min(b, s.pos))
                return (f, s) if f < b else (b, None)
        return None

    def try_read(self, a: int, b: int) -> bytes | None:
        """Bytes ``[a, b)`` of a partial entry if they are all here, else None."""
        where = self.available(a, b)
        if where is None:
            return None
        f, s = where
        for stream in self.streams:
            stream.reader_at(b)  # a reader that reads on widens its stream's read-ahead
        if s is None:
            assert self.fd is not None
            return pread_all(self.fd, b - a, a)
        part = s.queued_bytes(f, b)
        s.note_read(b)
        if f == a:
            return part
        assert self.fd is not None
        return pread_all(self.fd, f - a, a) + part

    # ---------------------------------------------------------------------------- waking

    def notify(self) -> None:
        """Wake everything waiting on this entry: its streams or its blocks changed."""
        self.changed.set()
        self.changed = trio.Event()
        for w in self.waiters:
            w.event.set()

    def progress(self, s: Stream) -> None:
        """Stream ``s`` got or wrote bytes: wake the reads it can serve now, and only those."""
        end = s.recv_end
        for w in self.waiters:
            # Only reads that overlap what s has can have been helped by it.
            if w.start < end and s.wstart < w.end and self.available(w.start, w.end):
                w.event.set()

    # ---------------------------------------------------------------------------- waiting

    async def wait_read(self, a: int, b: int, limit: float, stream_for: StreamFor) -> bytes:
        """Wait until bytes ``[a, b)`` can be served, starting a stream as needed; at most
        ``limit`` seconds (``ContentTimeoutError``)."""
        deadline = trio.current_time() + limit
        bs = self.block_size
        first = a // bs
        last = (b - 1) // bs + 1
        waited: Stream | None = None
        while True:
            data = self.try_read(a, b)
            if data is not None:
                return data
            if waited is not None and waited.done and waited.error is not None:
                # The stream this read depended on gave up: fail now rather than start over
                # (a later read will try again).
                raise waited.error
            k = self.blocks.first_missing(first, last)
            assert k is not None  # else try_read had served it
            waited = stream_for(k, max(a, k * bs))
            w = Waiter(a, b)
            self.waiters.append(w)
            try:
                with trio.move_on_at(deadline) as scope:
                    await w.event.wait()
            finally:
                self.waiters.remove(w)
            if scope.cancelled_caught:
                raise self._timeout(limit, k)

    async def wait_blocks(
        self, first: int, last: int, limit: float, stream_for: StreamFor, *, stall: bool
    ) -> None:
        """Wait until blocks ``[first, last)`` are filled, starting streams as needed; at
        most ``limit`` seconds (``ContentTimeoutError``). With ``stall`` the deadline moves
        forward whenever a block of the entry is filled. ``CacheFullError`` when the entry is
        (or becomes) passed through: its blocks are never filled."""
        deadline = trio.current_time() + limit
        progress = self.blocks.count
        waited: Stream | None = None
        while True:
            k = self.blocks.first_missing(first, last)
            if k is None:
                return
            if self.passthrough:
                raise CacheFullError(
                    f"no room in the cache for {self.key.doc_id} v{self.key.version}"
                    f" ({self.key.size} bytes)"
                )
            if waited is not None and waited.done and waited.error is not None:
                # The stream this read depended on gave up: fail now rather than start over
                # (a later read will try again).
                raise waited.error
            waited = stream_for(k, k * self.block_size)
            event = self.changed
            with trio.move_on_at(deadline) as scope:
                await event.wait()
            if scope.cancelled_caught:
                raise self._timeout(limit, k)
            if stall and self.blocks.count > progress:
                progress = self.blocks.count
                deadline = trio.current_time() + limit

    def _timeout(self, limit: float, k: int) -> ContentTimeoutError:
        return ContentTimeoutError(
            f"{self.key.doc_id} v{self.key.version}: no data for"
            f" {limit:g} s at offset {k * self.block_size}"
        )


class InUse:
    """The entries eviction must skip: those in memory (open, streaming or being finalised),
    and those ``kept`` for offline work (pinned)."""

    def __init__(self, entries: dict[str, Entry], kept: frozenset[str]) -> None:
        self.entries = entries
        self.kept = kept

    def __contains__(self, digest: object) -> bool:
        return digest in self.entries or digest in self.kept
