"""One download of an entry's bytes (a *stream*) and its state: where it writes, what it has
queued, its read-ahead window; ``bimfs.cache.content.streams`` starts, runs and stops them."""

from __future__ import annotations

from collections import deque

import trio

from bimfs.cache.content.entries import Entry
from bimfs.cache.content.keys import Fetcher

__all__ = ["Stream"]


class Stream:
    """One background download writing bytes ``[pos, end_block * block_size)`` of an entry."""

    __slots__ = (
        "after",
        "ahead_end",
        "block_size",
        "closing",
        "done",
        "end_block",
        "entry",
        "error",
        "fetch",
        "from_reader",
        "from_writer",
        "last_read",
        "may_split",
        "memory",
        "opened",
        "pos",
        "probe",
        "queue",
        "queued",
        "read_to",
        "received",
        "scope",
        "start_block",
        "started",
        "to_writer",
        "window",
        "window_max",
        "write_error",
        "writer",
        "wstart",
    )

    def __init__(
        self,
        entry: Entry,
        fetch: Fetcher,
        start_block: int,
        end_block: int,
        block_size: int,
        after: Stream | None = None,
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
        # A memory stream (an entry passed through) keeps the queue as its window of received
        # bytes instead of writing them; pos (= wstart) is where the window starts. read_to is
        # the furthest end of a read served from the queue; from_reader is set when it moves or
        # a read waits for this stream.
        self.memory = entry.passthrough
        self.read_to = self.pos
        self.from_reader = trio.Event()
        self.last_read = trio.current_time()
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
        # The read-ahead window: the stream asks for bytes up to ahead_end only, and waits
        # there for its reader (None: no window, it fetches its whole range).
        self.ahead_end: int | None = None
        self.window = 0
        self.window_max = 0

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

    def covers(self, k: int, offset: int) -> bool:
        """True if this stream will write block ``k`` unless stopped; a memory stream: if it
        has (or will receive) the bytes from ``offset`` (in block ``k``)."""
        if self.done or k >= self.end_block:
            return False
        if self.memory:
            return self.pos <= offset
        return self.pos // self.block_size <= k

    def note_read(self, end: int) -> None:
        """A read was served bytes up to ``end`` from this stream's queue."""
        self.last_read = trio.current_time()
        if end > self.read_to:
            self.read_to = end
            self.wake()

    def wake(self) -> None:
        """Have a stream waiting for its readers look again."""
        self.from_reader.set()
        self.from_reader = trio.Event()

    def request_end(self) -> int:
        """Where the next request of this stream ends: its range, or its read-ahead window."""
        end = self.end_bytes
        return end if self.ahead_end is None else min(end, self.ahead_end)

    def reader_at(self, end: int) -> None:
        """A read of this stream's range was served up to ``end`` (or waits for bytes up to
        it): widen the read-ahead window once the reader is half way through it."""
        if self.ahead_end is None:
            return
        if not self.start_block * self.block_size <= end <= self.end_bytes:
            return
        if end + self.window // 2 < self.ahead_end:
            return
        self.window *= 2
        if self.window > self.window_max:
            # A reader that read this far reads on: one request to the end of the range
            # (each request's end waits for its writes to land, so fewer is faster).
            self.unlimit()
            return
        bs = self.block_size
        self.ahead_end = max(self.ahead_end, -(-(end + self.window) // bs) * bs)
        self.wake()

    def unlimit(self) -> None:
        """Fetch the whole range from now on (no read-ahead window)."""
        if self.ahead_end is not None:
            self.ahead_end = None
            self.wake()
