"""Writing received bytes to the cache files: inline while that is fast, else behind, in a thread.

Reads (``pread``) and writes of received chunks are done inline while the page cache takes them
fast: a copy is cheaper than a thread hop. When writes turn out slow (below
``thread_writes_below`` bytes/s, as when the kernel must first find memory for the page cache)
each stream queues its chunks to a writer task that writes them in order in one worker thread,
receiving at most ``WRITE_BEHIND`` bytes ahead, and reads are served from the queue meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from bimfs.cache.files import timed_pwrite

if TYPE_CHECKING:
    from bimfs.cache.content.stream import Stream

__all__ = ["THREAD_WRITE_MIN", "WRITE_BEHIND", "Writes"]

THREAD_WRITE_MIN = 64 << 10
"""Only writes at least this long are timed, and only they may go to the writer thread: for
shorter ones the hop to a thread and back costs more than the copy."""

WRITE_BEHIND = 8 << 20
"""How far (bytes) a stream may receive ahead of its writes to the cache file: enough to ride
out slow writes, bounded so a download never holds much of a file in memory."""

Mark = Callable[["Stream", int, int], None]
"""``mark(s, p0, p1)``: stream ``s`` wrote bytes ``[p0, p1)`` to the cache file."""


class Writes:
    """The cost of writing to the cache files, and the one writer thread of all streams."""

    def __init__(self, thread_writes_below: float) -> None:
        self.thread_writes_below = thread_writes_below
        # One writer thread for all streams: concurrent writers to one file only contend for
        # its inode lock (and spin on it), they do not write faster.
        self._limiter = trio.CapacityLimiter(1)
        # Recent cost of writing to the cache files (seconds per byte, smoothed).
        self._cost = 0.0

    def slow(self) -> bool:
        """True while writes to the cache files run below ``thread_writes_below`` bytes/s.

        Where the page cache has memory at hand a write of a chunk is a quick copy, cheaper
        inline than a hop to a thread; where the kernel must first find memory for it (a
        virtual machine handing memory back to its host), a write stalls the trio thread for
        milliseconds, and a worker thread lets receiving and answering reads go on meanwhile.
        """
        return self._cost * self.thread_writes_below > 1.0

    def write_now(self, fd: int, data: memoryview, pos: int) -> None:
        """Write ``data`` at ``pos`` on the trio thread (timing it when it is long)."""
        took = timed_pwrite(fd, data, pos)
        if len(data) >= THREAD_WRITE_MIN:
            self._note(len(data), took)

    def _note(self, n: int, seconds: float) -> None:
        self._cost += (seconds / n - self._cost) / 4

    async def write_behind(self, s: Stream, fd: int, mark: Mark) -> None:
        """Write the chunks ``s`` queues to the cache file, in order, in a worker thread."""
        entry = s.entry
        try:
            # Shielded: what was received is written even when the file is closed or the store
            # shuts down (at most WRITE_BEHIND bytes): a reader may have had those bytes from
            # memory, and a remount must not fetch them again. It ends when its stream closes
            # it (in stop, which every exit of the stream runs).
            with trio.CancelScope(shield=True):
                while s.queue or not s.closing:
                    if not s.queue:
                        s.to_writer = trio.Event()
                        await s.to_writer.wait()
                        continue
                    data = s.queue[0]
                    pos = s.pos
                    took = await trio.to_thread.run_sync(
                        timed_pwrite, fd, data, pos, limiter=self._limiter
                    )
                    self._note(len(data), took)
                    s.queue.popleft()
                    s.queued -= len(data)
                    s.pos = pos + len(data)
                    mark(s, pos, s.pos)
                    entry.progress(s)
                    s.from_writer.set()
                    s.from_writer = trio.Event()
        except OSError as exc:
            s.write_error = exc
        finally:
            assert s.writer is not None
            s.writer.set()
            s.from_writer.set()

    @staticmethod
    async def stop(s: Stream) -> None:
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
