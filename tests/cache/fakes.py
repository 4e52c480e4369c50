"""Fakes for the cache tests: a download source shaped like the API client's, and helpers.

``FakeSource.fetch`` is a ``Fetcher``: it serves bytes of an in-memory document the way
``client.open_download`` does (``start``, ``length``, ``total_size``, ``range_supported``,
``chunks()``), with switches for the things a real server does to us: ignoring ranges,
bodies that end short (with or without an error), failures, and a per-call byte allowance that
lets a test hold a stream at an exact offset and move it on deterministically. A per-chunk
``delay`` makes a slow server (use it with trio's ``MockClock``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bimfs.cache.content import ContentStore


class FakeFetchError(Exception):
    """Stands in for the API client's errors: carries ``retryable`` like they do."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Short:
    """Fault: end this call's body after ``after`` bytes; raise (retryable) unless ``silent``."""

    after: int
    silent: bool = False


@dataclass
class Call:
    """One fetch as the source saw it."""

    start: int
    end: int
    body_start: int
    served: int = 0
    allowance: int | None = None
    closed: bool = False
    last_chunk: int = 0


class FakeDownload:
    """What ``FakeSource.fetch`` yields; the same shape as the API client's download."""

    def __init__(self, source: FakeSource, call: Call, body_end: int, fault: Short | None):
        self._source = source
        self._call = call
        self._body_end = body_end
        self._fault = fault
        self.start = call.body_start
        self.length: int | None = body_end - call.body_start if source.lengths else None
        self.total_size: int | None = source.announced_size
        self.range_supported = source.ranges

    async def chunks(self) -> AsyncIterator[bytes]:
        src = self._source
        call = self._call
        pos = call.body_start
        stop = self._body_end
        if self._fault is not None:
            stop = min(stop, pos + self._fault.after)
        while pos < stop:
            while call.allowance is not None and call.served >= call.allowance:
                await src.moved.wait()
            n = min(src.chunk_size, stop - pos)
            if call.allowance is not None:
                n = min(n, call.allowance - call.served)
            if src.delay:
                await trio.sleep(src.delay)
            data = src.data[pos : pos + n]
            pos += n
            call.served += n
            call.last_chunk = n
            src.bytes_served += n
            yield data
            await trio.lowlevel.checkpoint()
        if self._fault is not None and not self._fault.silent and pos < self._body_end:
            raise FakeFetchError(f"body ended at {pos}", retryable=True)


class FakeSource:
    """An in-memory document served over a pretend HTTP connection."""

    def __init__(
        self,
        data: bytes,
        *,
        ranges: bool = True,
        chunk_size: int = 700,
        allowance: int | None = None,
        delay: float = 0.0,
        lengths: bool = True,
    ) -> None:
        self.data = data
        self.ranges = ranges
        # Seconds before each chunk (a slow server), and whether bodies announce their length.
        self.delay = delay
        self.lengths = lengths
        # Deliberately not a divisor of the block sizes the tests use.
        self.chunk_size = chunk_size
        # Bytes each new call may send before it waits for release(); None: unlimited.
        self.allowance = allowance
        self.announced_size: int | None = len(data)
        # Consumed one per call, in order: None (normal), Short, or an exception to raise.
        self.faults: list[Short | BaseException | None] = []
        self.calls: list[Call] = []
        self.bytes_served = 0
        self.open_now = 0
        self.max_open = 0
        self.moved = trio.Event()

    def release(self, index: int | None = None, allowance: int | None = None) -> None:
        """Let call ``index`` (all calls when None, and future ones) send ``allowance`` bytes
        in total (None: without limit)."""
        if index is None:
            self.allowance = allowance
            targets = self.calls
        else:
            targets = [self.calls[index]]
        for call in targets:
            call.allowance = allowance
        self.moved.set()
        self.moved = trio.Event()

    def refetched(self) -> int:
        """Bytes sent by more than one call, not counting each call's last chunk (a client
        that stops inside a chunk has received all of it, it cannot do better)."""
        spans = sorted((c.body_start, c.body_start + c.served - c.last_chunk) for c in self.calls)
        dup = 0
        reach = 0
        for a, b in spans:
            if a < reach:
                dup += min(b, reach) - a
            reach = max(reach, b)
        return dup

    @property
    def ranges_asked(self) -> list[tuple[int, int]]:
        """``(start, end)`` of every call, in order."""
        return [(c.start, c.end) for c in self.calls]

    def fetch(self, start: int, end: int) -> AbstractAsyncContextManager[FakeDownload]:
        """The ``Fetcher``: bytes ``[start, end)``."""
        return self._open(start, end)

    @asynccontextmanager
    async def _open(self, start: int, end: int) -> AsyncIterator[FakeDownload]:
        await trio.lowlevel.checkpoint()
        fault = self.faults.pop(0) if self.faults else None
        body_start = start if self.ranges else 0
        body_end = end if self.ranges else len(self.data)
        call = Call(start, end, body_start, allowance=self.allowance)
        self.calls.append(call)
        if isinstance(fault, BaseException):
            raise fault
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            yield FakeDownload(self, call, body_end, fault)
        finally:
            self.open_now -= 1
            call.closed = True


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes in which every 4-byte-aligned offset is recognisable."""
    words = (((i * 2654435761) ^ seed) & 0xFFFFFFFF for i in range(0, size // 4 + 1))
    return b"".join(w.to_bytes(4, "little") for w in words)[:size]


@asynccontextmanager
async def running_store(
    root: Path, max_bytes: int = 1 << 30, **kw: Any
) -> AsyncIterator[ContentStore]:
    """A ContentStore whose ``run`` is running for the duration of the block, then stopped."""
    store = ContentStore(root, max_bytes, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()
