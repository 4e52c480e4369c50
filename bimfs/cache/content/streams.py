"""The downloads that fill entries: read-ahead streams, far reads, parallel range streams.

A missing block starts a background *stream* at that block which keeps writing forward
(read-ahead) until it reaches a filled block, the start of another stream, or EOF, so a
sequential reader is served by one HTTP request. A read far ahead of every stream
(``far_distance``) starts its own ranged stream and takes over the rest of the range from the
stream that would have got there later.

Read-ahead window: a stream started for a reader asks the server only for a window of bytes
beyond the read (``read_ahead``, one block at first), and waits when it has them. The window
doubles whenever the reader has read half of what was asked for; once it would grow past
``read_ahead_max`` the stream asks for the rest of its range in one request. So a sequential
reader soon gets one long request (a handful of short ones first), while a program that reads
only the head of a file (a file manager, ``file``, a thumbnailer) costs the server about one
block; closing the file stops the stream at once. A stream that fills a whole entry for
``ensure_complete``, the segments of a split stream and a server that ignores ranges have no
window.

Parallel streams: in a file of at least ``min_parallel_size`` bytes a stream that runs below
``parallel_below`` bytes/s over its first ``SPLIT_PROBE`` seconds splits the rest of its range
into up to ``max_streams`` streams. Several streams pay where each one is held to a rate (a far
or throttled server); where one stream is fast the mount itself is the limit and more streams
only add work. (``parallel_below=None`` splits a fresh region at once.) The first stream asks
alone, the others after its first bytes arrived, so the request a reader waits on is never
queued behind them. If the server ignores ranges (the download starts before the offset asked
for, or a range from 0 gets the whole body) the entry falls back to one stream from that
offset, writing everything it receives, and never starts parallel streams again. Streams of an
entry never overlap, so no block is fetched twice while they run.

A stream whose body ends short (the download raises an error with ``retryable`` true, or its
body simply stops) is retried from where it stopped, with backoff, ``fetch_retries`` times;
then the reads waiting on it fail with that error, unchanged. A body longer than the key's size
raises ``ContentSizeError``.

Content the cache cannot keep: before a stream writes the first byte of an entry, the store
makes sure the disk has room for the rest of it (``prepare``: evicting least recently used
entries if that makes it fit); a write to the cache file that fails all the same (a full disk,
an exceeded quota, a failing disk) is handed to the store (``no_room``), which evicts and lets
the stream retry, or gives the entry up: it is *passed through* (``Entry.passthrough``), its
file streams are stopped and its file deleted. The streams of an entry passed through are
*memory streams*: they write nothing, but keep a window of the bytes received, at most
``MEMORY_AHEAD`` beyond the furthest read served from it and ``MEMORY_BEHIND`` before it,
waiting for their readers rather than running further ahead, so a document larger than the
cache disk is read with bounded memory. One memory stream serves a sequential reader; they are
never split into parallel streams, and a stream that reached its end keeps its window until its
readers have read it (or their file is closed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from bimfs.backoff import backoff
from bimfs.cache.content.entries import Entry
from bimfs.cache.content.keys import Download, Fetcher
from bimfs.cache.content.stream import Stream
from bimfs.cache.content.writer import THREAD_WRITE_MIN, WRITE_BEHIND, Writes
from bimfs.cache.errors import ContentShortError, ContentSizeError

__all__ = [
    "MEMORY_AHEAD",
    "MEMORY_BEHIND",
    "READ_AHEAD_MAX",
    "SPLIT_PROBE",
    "Stream",
    "StreamSettings",
    "Streams",
]

log = logging.getLogger("bimfs.cache.content")

SPLIT_PROBE = 0.1
"""How long (seconds from its first byte) a stream runs alone before its rate decides whether
the rest of its range is worth splitting into parallel streams."""

MEMORY_AHEAD = WRITE_BEHIND
"""How far (bytes) a memory stream receives beyond the furthest read served from it before it
waits for its readers (unless a read waits for bytes further on)."""

MEMORY_BEHIND = 1 << 20
"""How much (bytes) a memory stream keeps before the furthest read served from it, for reads
that come slightly out of order (the kernel's read-ahead sends several at once)."""

READ_AHEAD_MAX = 16 << 20
"""The largest read-ahead window (bytes) of a stream following a sequential reader; once it
would grow past it, the stream fetches the rest of its range in one request."""

# Backoff before the n-th retry of a stream: _RETRY_BASE * 2**(n-1), capped, with jitter.
_RETRY_BASE = 0.5
_RETRY_CAP = 8.0
_JITTER = (0.75, 1.25)


@dataclass(frozen=True)
class StreamSettings:
    """How a store's streams behave (the ``ContentStore`` arguments of the same names)."""

    block_size: int
    max_streams: int
    min_parallel_size: int
    far_distance: int
    fetch_retries: int
    parallel_below: float | None
    thread_writes_below: float
    read_ahead: int | None = None
    read_ahead_max: int = READ_AHEAD_MAX


class _WriteFailed(Exception):
    """Writing received bytes to the cache file failed with ``error``."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Streams:
    """Starts, splits, runs and retries the streams of a store's entries.

    The store it works for is reached through five callables: ``nursery()`` (the running
    store's nursery, or ``CacheClosedError``), ``await prepare(entry)`` (True once the entry
    has a file to write into and the disk room for it; False if it is passed through),
    ``await no_room(entry, error)`` (writing to the entry's file failed with ``error``: True
    to try again, False once the entry is passed through), ``filled(entry, blocks, nbytes)``
    (blocks of the entry were filled) and ``ended(entry)`` (one of its streams ended).
    """

    def __init__(
        self,
        settings: StreamSettings,
        *,
        nursery: Callable[[], trio.Nursery],
        prepare: Callable[[Entry], Awaitable[bool]],
        no_room: Callable[[Entry, OSError], Awaitable[bool]],
        filled: Callable[[Entry, int, int], None],
        ended: Callable[[Entry], None],
    ) -> None:
        self.settings = settings
        self.writes = Writes(settings.thread_writes_below)
        self._nursery = nursery
        self._prepare = prepare
        self._no_room = no_room
        self._filled = filled
        self._ended = ended
        self._block_size = settings.block_size
        self._far_blocks = max(1, settings.far_distance // settings.block_size)
        # A parallel segment is never smaller than this, so small regions use one stream.
        self._min_segment_blocks = max(
            1, settings.min_parallel_size // settings.max_streams // settings.block_size
        )

    # ------------------------------------------------------------------------------ starting

    def stream_for(
        self, entry: Entry, k: int, offset: int, fetch: Fetcher, *, whole: bool = False
    ) -> Stream:
        """The stream that will fill block ``k`` (of an entry passed through: receive the
        bytes from ``offset``), started here if no running one will soon. ``whole``: the
        caller wants every block (``ensure_complete``), so no read-ahead window applies."""
        for s in entry.streams:
            if s.memory != entry.passthrough:
                continue  # a file stream of an entry passed through: it is being stopped
            if s.covers(k, offset):
                near = k - s.recv_end // self._block_size < self._far_blocks
                if entry.no_range or near or len(entry.streams) >= 2 * self.settings.max_streams:
                    if whole:
                        s.unlimit()
                    elif s.ahead_end is not None:
                        # A read waits for block k: the window reaches to it at least (and
                        # wider, see _widen_for_waiters, if the read asks for more).
                        s.ahead_end = max(s.ahead_end, (k + 1) * self._block_size)
                    s.wake()  # a stream waiting for its readers: one is waiting now
                    return s
                # A far read: fetch from k now and leave the earlier part to that stream.
                s.end_block = k
                s.wake()
                break
        return self._start(entry, k, fetch, whole)

    def _start(self, entry: Entry, k: int, fetch: Fetcher, whole: bool = False) -> Stream:
        nursery = self._nursery()
        settings = self.settings
        if entry.passthrough:
            self._limit_memory_streams(entry)
        bs = self._block_size
        n = entry.nblocks
        if entry.no_range:
            region_end = n
        else:
            present = entry.blocks.first_present(k + 1, n)
            region_end = n if present is None else present
            for s in entry.streams:
                # Up to where another stream has (or will have) the bytes: for a memory
                # stream, the block its window starts in, which it may not have from its start.
                pb = -(-s.pos // bs) if s.memory else s.pos // bs
                if pb > k and s.memory == entry.passthrough:
                    region_end = min(region_end, pb)
        segments = 1
        parallel = (
            not entry.no_range
            and not entry.passthrough
            and entry.key.size >= settings.min_parallel_size
        )
        if parallel and settings.parallel_below is None:
            free = settings.max_streams - len(entry.streams)
            segments = max(1, min(free, (region_end - k) // self._min_segment_blocks))
        bounds = [k + (region_end - k) * i // segments for i in range(segments + 1)]
        leader = Stream(entry, fetch, bounds[0], bounds[1], self._block_size)
        # With parallel_below, the leader alone first: it splits later if it turns out slow.
        leader.may_split = parallel and settings.parallel_below is not None
        if settings.read_ahead is not None and segments == 1 and not (whole or entry.no_range):
            # A reader's stream: a small window first, widened while it reads on. (An entry
            # passed through has memory streams, which wait for their readers anyway.)
            leader.window = max(bs, settings.read_ahead)
            leader.window_max = max(leader.window, settings.read_ahead_max)
            leader.ahead_end = None if entry.passthrough else (k + -(-leader.window // bs)) * bs
        streams = [leader] + [
            Stream(entry, fetch, bounds[i], bounds[i + 1], self._block_size, after=leader)
            for i in range(1, segments)
        ]
        for s in streams:
            self._launch(nursery, s)
        entry.notify()
        return leader

    def _limit_memory_streams(self, entry: Entry) -> None:
        """Before a memory stream of ``entry`` starts: stop the least recently read ones that
        no read waits for, down to ``max_streams - 1``, so random reads of content passed
        through hold a bounded number of windows."""
        idle = [
            s
            for s in entry.streams
            if s.memory
            and not s.done
            and not any(s.pos <= w.start < s.end_bytes for w in entry.waiters)
        ]
        busy = sum(1 for s in entry.streams if s.memory and not s.done) - len(idle)
        idle.sort(key=lambda s: s.last_read)
        while idle and busy + len(idle) >= self.settings.max_streams:
            victim = idle.pop(0)
            victim.end_block = victim.pos // self._block_size  # covers nothing from now on
            victim.scope.cancel()

    def _launch(self, nursery: trio.Nursery, s: Stream) -> None:
        s.entry.streams.append(s)
        nursery.start_soon(self._run, s)

    def _maybe_split(self, s: Stream) -> None:
        """After its probe time, split the rest of a slow stream's range into parallel streams.

        One fast stream is best where the mount itself is the limit (a fast link: more streams
        only add work); several streams pay where each is held to a rate (a far or throttled
        server), which shows as a rate below ``parallel_below``.
        """
        parallel_below = self.settings.parallel_below
        assert parallel_below is not None
        now = trio.current_time()
        if s.probe is None:
            s.probe = (now, s.received)  # the first chunk: the clock starts now
            return
        t0, r0 = s.probe
        if now - t0 < SPLIT_PROBE:
            return
        s.may_split = False
        entry = s.entry
        if entry.no_range or (s.received - r0) / (now - t0) >= parallel_below:
            return
        # From the block after the next one it has not received, so the leader never loses a
        # block it has begun (or queued).
        first = s.recv_end // self._block_size + 2
        free = self.settings.max_streams - len(entry.streams) + 1
        n = min(free, (s.end_block - first) // self._min_segment_blocks)
        if n < 2:
            return
        bounds = [first + (s.end_block - first) * i // n for i in range(n + 1)]
        s.end_block = bounds[1]
        s.unlimit()  # read on for long at a low rate: a reader that wants it all
        nursery = self._nursery()
        for i in range(1, n):
            stream = Stream(entry, s.fetch, bounds[i], bounds[i + 1], self._block_size)
            self._launch(nursery, stream)
        entry.notify()

    # ------------------------------------------------------------------------------- running

    async def _run(self, s: Stream) -> None:
        entry = s.entry
        retries = self.settings.fetch_retries
        attempt = 0
        try:
            with s.scope:
                if s.after is not None:
                    await s.after.opened.wait()
                if not s.memory and not await self._prepare(entry):
                    # Passed through: the reads waiting on this stream start memory streams.
                    return
                while self._more(s):
                    if s.ahead_end is not None and s.pos >= s.ahead_end:
                        # At the end of the read-ahead window: go on for a read that waits
                        # for bytes beyond it, else wait for the reader.
                        if not self._widen_for_waiters(s):
                            await s.from_reader.wait()
                        continue
                    filled_before = entry.blocks.count
                    received_before = s.received
                    try:
                        if s.memory:
                            await self._once_in_memory(s)
                        else:
                            await self._once(s)
                    except _WriteFailed as failed:
                        if await self._no_room(entry, failed.error):
                            s.write_error = None
                            continue  # room was made: go on from where the writes stopped
                        return  # passed through (this stream was stopped)
                    except Exception as exc:
                        moved = (
                            s.received > received_before
                            if s.memory
                            else entry.blocks.count > filled_before
                        )
                        if moved:
                            attempt = 0  # it moved forward: a flaky link, not a dead one
                        if not getattr(exc, "retryable", False) or attempt >= retries:
                            s.error = exc
                            log.warning(
                                "download of %s v%s failed at offset %d: %s",
                                entry.key.doc_id, entry.key.version, s.pos, exc,
                            )  # fmt: skip
                            return
                        attempt += 1
                        level = logging.WARNING if attempt == retries else logging.DEBUG
                        log.log(
                            level,
                            "download of %s v%s interrupted at offset %d (%s); retry %d of %d",
                            entry.key.doc_id, entry.key.version, s.pos, exc, attempt, retries,
                        )  # fmt: skip
                        await trio.sleep(
                            backoff(attempt - 1, base=_RETRY_BASE, cap=_RETRY_CAP, jitter=_JITTER)
                        )
                if s.memory:
                    await self._linger(s)
        finally:
            s.done = True
            s.opened.set()
            entry.streams.remove(s)
            entry.notify()
            self._ended(entry)

    def _widen_for_waiters(self, s: Stream) -> bool:
        """Widen the window of ``s`` over the bytes reads wait for in its range; True if it
        did (the stream has more to fetch for them)."""
        assert s.ahead_end is not None
        need = max(
            (w.end for w in s.entry.waiters if w.start < s.end_bytes and w.end > s.pos),
            default=None,
        )
        if need is None:
            return False
        bs = self._block_size
        s.ahead_end = max(s.ahead_end, -(-need // bs) * bs)
        s.reader_at(need)
        return True

    def _more(self, s: Stream) -> bool:
        """Whether ``s`` has more to fetch."""
        if s.memory:
            return s.recv_end < s.end_bytes
        return s.pos < s.end_bytes and not s.entry.blocks.full

    @staticmethod
    def _whole(s: Stream, d: Download, start: int, end: int) -> bool:
        """Check the answer to a request for ``[start, end)``: True when it is the whole body
        (the server ignored the range); ``ContentSizeError`` when it is neither."""
        entry = s.entry
        size = entry.key.size
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
        return d.start < start or (
            d.start == 0
            and end < size
            and (not d.range_supported or (d.length is not None and d.length > end))
        )

    async def _once(self, s: Stream) -> None:
        """One download from ``s.pos``; returns at the stream's end, raises if cut short
        (``_WriteFailed`` when the cache file could not take the bytes)."""
        entry = s.entry
        writes = self.writes
        size = entry.key.size
        start = s.pos
        end = s.request_end()
        s.probe = None  # the rate is measured within one request
        async with s.fetch(start, end) as d:
            if self._whole(s, d, start, end):
                if not self._take_over_without_ranges(s):
                    return
                end = size  # the whole body is coming: take all of it
            pos = d.start
            s.pos = pos
            s.wstart = min(s.wstart, pos)
            fd = entry.fd
            assert fd is not None  # prepared; only dropped once no file stream is left
            chunks = d.chunks()
            try:
                async for chunk in chunks:
                    if s.write_error is not None:
                        raise _WriteFailed(s.write_error)
                    stop = min(s.end_bytes, end)
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
                    if s.queue or (n >= THREAD_WRITE_MIN and writes.slow()):
                        # Written behind by a worker thread: the trio thread goes on receiving
                        # and answering reads (from the queue meanwhile).
                        if s.writer is None:
                            s.writer = trio.Event()
                            self._nursery().start_soon(writes.write_behind, s, fd, self._mark)
                        s.queue.append(data)
                        s.queued += n
                        s.to_writer.set()
                        entry.progress(s)
                        while s.queued > WRITE_BEHIND and s.write_error is None:
                            await s.from_writer.wait()
                    else:
                        try:
                            writes.write_now(fd, data, pos)
                        except OSError as exc:
                            raise _WriteFailed(exc) from exc
                        s.pos = pos + n
                        self._mark(s, pos, s.pos)
                        entry.progress(s)
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
                    raise _WriteFailed(s.write_error)
            finally:
                # Leaving early (a stop, an error) must close the body now, not at GC time.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await writes.stop(s)
            want = min(end, s.end_bytes)
            if pos < want:
                raise ContentShortError(
                    f"{entry.key.doc_id} v{entry.key.version}: download ended at {pos},"
                    f" expected {want}"
                )

    async def _once_in_memory(self, s: Stream) -> None:
        """One download into the window of memory stream ``s``, from the end of what it has;
        returns at the stream's end, raises if cut short."""
        entry = s.entry
        size = entry.key.size
        start = s.recv_end
        end = s.end_bytes
        async with s.fetch(start, end) as d:
            if self._whole(s, d, start, end):
                if not self._take_over_without_ranges(s):
                    return
                end = size
            pos = d.start  # where the next chunk of the body starts
            chunks = d.chunks()
            try:
                async for chunk in chunks:
                    n = len(chunk)
                    if not n:
                        continue
                    if pos + n > size:
                        raise ContentSizeError(
                            f"{entry.key.doc_id} v{entry.key.version}: the server sent more"
                            f" than the expected {size} bytes"
                        )
                    have = s.recv_end
                    data = memoryview(chunk)[max(0, have - pos) :]
                    pos += n
                    if not data:
                        continue  # before what the stream has: a whole body from 0
                    stop = s.end_bytes
                    if have >= stop and stop == end < size and d.start == 0:
                        # More than the range from 0 asked for, with no length announced: the
                        # whole body after all.
                        if not self._take_over_without_ranges(s):
                            return
                        end = size
                        stop = s.end_bytes
                    if have >= stop:
                        if stop < end:
                            return  # another stream took over the rest
                        raise ContentSizeError(
                            f"{entry.key.doc_id} v{entry.key.version}: the server sent more"
                            f" than the {end - start} bytes asked for"
                        )
                    data = data[: stop - have]
                    s.queue.append(data)
                    s.queued += len(data)
                    s.received += len(data)
                    s.opened.set()
                    entry.progress(s)
                    if s.recv_end >= stop and stop < end:
                        return  # handed over: do not wait for another chunk
                    await self._wait_for_readers(s)
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            want = min(end, s.end_bytes)
            if s.recv_end < want:
                raise ContentShortError(
                    f"{entry.key.doc_id} v{entry.key.version}: download ended at"
                    f" {s.recv_end}, expected {want}"
                )

    async def _wait_for_readers(self, s: Stream) -> None:
        """Hold memory stream ``s`` while it is ``MEMORY_AHEAD`` beyond its readers and no
        read waits for bytes it has yet to receive; drop what they are done with."""
        while True:
            self._trim(s)
            if s.recv_end >= s.end_bytes or s.recv_end - s.read_to < MEMORY_AHEAD:
                return
            if any(s.pos <= w.start < s.end_bytes and w.end > s.recv_end for w in s.entry.waiters):
                return
            await s.from_reader.wait()

    async def _linger(self, s: Stream) -> None:
        """A memory stream that received all it was to: keep its window until its readers
        have read it (a stopped stream cannot serve reads)."""
        while s.queue and s.read_to < s.recv_end:
            await s.from_reader.wait()
            self._trim(s)

    @staticmethod
    def _trim(s: Stream) -> None:
        """Drop the start of a memory stream's window: what is ``MEMORY_BEHIND`` before its
        furthest read, and whatever makes it longer than ``MEMORY_AHEAD + MEMORY_BEHIND``,
        but never bytes a waiting read needs."""
        keep_from = s.read_to - MEMORY_BEHIND
        needed = min(
            (w.start for w in s.entry.waiters if s.pos <= w.start < s.recv_end), default=None
        )
        while s.queue:
            n = len(s.queue[0])
            if needed is not None and s.pos + n > needed:
                return
            if s.pos + n > keep_from and s.queued <= MEMORY_AHEAD + MEMORY_BEHIND:
                return
            s.queue.popleft()
            s.queued -= n
            s.pos += n
            s.wstart = s.pos

    def _take_over_without_ranges(self, s: Stream) -> bool:
        """The server ignored a range: make ``s`` the entry's one stream, to EOF.

        Returns False (and stops ``s``) if another running stream already took over.
        """
        entry = s.entry
        holder = entry.single
        if holder is not None and holder is not s and not holder.done:
            s.end_block = s.pos // self._block_size
            return False
        if not entry.no_range:
            log.info(
                "the server ignores byte ranges for %s; reading it in one stream",
                entry.key.doc_id,
            )
        entry.no_range = True
        entry.single = s
        s.end_block = entry.nblocks
        s.unlimit()
        for other in entry.streams:
            if other is not s:
                # Stop covering anything at once; the cancellation lands at its next await.
                other.end_block = other.pos // self._block_size
                other.scope.cancel()
        return True

    def _mark(self, s: Stream, p0: int, p1: int) -> None:
        """Stream ``s`` wrote ``[p0, p1)``: mark the blocks that completed as filled."""
        added, nbytes = s.entry.fill(p0, p1, s.wstart)
        if added:
            self._filled(s.entry, added, nbytes)
