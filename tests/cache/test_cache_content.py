"""The content store against a fake download source: what is fetched, when, and how often."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bimfs.cache.content.writer as writer_module
from bimfs.cache.content import ContentKey, ContentStore, Download
from bimfs.cache.errors import (
    CacheClosedError,
    CacheFullError,
    ContentShortError,
    ContentSizeError,
    ContentTimeoutError,
)
from tests.cache.fakes import FakeFetchError, FakeSource, Short, pattern, running_store
from tests.support.processes import wait_until

BS = 1024


def key_for(data: bytes, doc: str = "doc-1", version: int = 1, hash_: str = "h1") -> ContentKey:
    return ContentKey(doc, version, hash_, len(data))


def no_fetch(start: int, end: int) -> AbstractAsyncContextManager[Download]:
    raise AssertionError(f"unexpected fetch of [{start}, {end})")


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


# ---------------------------------------------------------------------------------- basics


async def test_open_downloads_nothing(tmp_path: Path) -> None:
    data = pattern(10 * BS)
    src = FakeSource(data)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        await settle()
        assert src.calls == []
        assert not store.is_complete(key_for(data))
        store.close(f)
        await settle()
    assert src.calls == []


async def test_read_waits_only_for_its_range(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, allowance=2 * BS)  # the server sends two blocks, then stalls
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 10, 100) == data[10:110]
        assert await store.read(f, BS + 5, BS - 5) == data[BS + 5 : 2 * BS]
        got: list[bytes] = []

        async def read_later_block() -> None:
            got.append(await store.read(f, 5 * BS, 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_later_block)
            await settle()
            assert got == []  # block 5 has not arrived: the read waits for it
            assert len(src.calls) == 1  # ... on the stream already running, not a new request
            src.release()
        assert got == [data[5 * BS : 5 * BS + 10]]
        store.close(f)


async def test_sequential_reads_use_one_stream(tmp_path: Path) -> None:
    data = pattern(50 * BS + 123)
    src = FakeSource(data, chunk_size=300)
    async with running_store(tmp_path, block_size=BS, far_distance=4 * BS) as store:
        f = store.open(key_for(data), src.fetch)
        out = bytearray()
        while len(out) < len(data):
            out += await store.read(f, len(out), 4000)
        assert bytes(out) == data
        assert await store.read(f, len(data), 10) == b""
        store.close(f)
    assert src.ranges_asked == [(0, len(data))]
    assert src.bytes_served == len(data)


async def test_concurrent_readers_share_one_stream(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    src = FakeSource(data, allowance=0)
    async with running_store(tmp_path, block_size=BS) as store:
        handles = [store.open(key_for(data), src.fetch) for _ in range(3)]
        results: dict[int, bytes] = {}

        def offset(i: int) -> int:
            return 3 * BS + (i * 37) % 900

        async def reader(i: int) -> None:
            results[i] = await store.read(handles[i % 3], offset(i), 50)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(reader, i)
            await settle()
            src.release()
        assert results == {i: data[offset(i) : offset(i) + 50] for i in range(20)}
        assert len(src.calls) == 1
        for h in handles:
            store.close(h)


async def test_scattered_concurrent_readers_fetch_each_byte_once(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    src = FakeSource(data, allowance=0)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        results: dict[int, bytes] = {}

        async def reader(off: int) -> None:
            results[off] = await store.read(f, off, 3000)

        offsets = [(i * 7919) % (30 * BS) for i in range(25)]
        async with trio.open_nursery() as nursery:
            for off in offsets:
                nursery.start_soon(reader, off)
            await settle()
            src.release()
        assert results == {off: data[off : off + 3000] for off in offsets}
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.refetched() == 0


async def test_far_read_starts_its_own_range_stream(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, allowance=2 * BS)
    async with running_store(tmp_path, block_size=BS, far_distance=4 * BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        # The first stream is stuck at block 2; the end of the file is served by its own range.
        assert await store.read(f, 62 * BS, 2 * BS) == data[62 * BS :]
        assert src.ranges_asked == [(0, 64 * BS), (62 * BS, 64 * BS)]
        src.release()
        path = await store.ensure_complete(f)
        assert path.read_bytes() == data
        store.close(f)
    # The first stream stopped where the second began: no byte was fetched twice.
    assert src.refetched() == 0
    assert 62 * BS <= src.calls[0].served < 62 * BS + src.chunk_size


async def test_near_read_waits_for_the_running_stream(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, allowance=2 * BS)
    async with running_store(tmp_path, block_size=BS, far_distance=8 * BS) as store:
        f = store.open(key_for(data), src.fetch)
        await store.read(f, 0, 10)
        with trio.move_on_after(1000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.read, f, 5 * BS, 10)
                await settle()
                assert len(src.calls) == 1
                src.release()
        store.close(f)


async def test_big_files_use_parallel_streams(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data)
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=None
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 100, 10) == data[100:110]
        await settle()
        # The segment the read needs is asked for first, alone; the others once it answered.
        assert src.ranges_asked[0] == (0, 16 * BS)
        assert sorted(src.ranges_asked) == [
            (0, 16 * BS),
            (16 * BS, 32 * BS),
            (32 * BS, 48 * BS),
            (48 * BS, 64 * BS),
        ]
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.max_open == 4
    assert src.refetched() == 0


async def test_small_files_use_one_stream(tmp_path: Path) -> None:
    data = pattern(15 * BS)
    src = FakeSource(data)
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=None
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.ranges_asked == [(0, 15 * BS)]


async def test_parallel_segments_only_cover_missing_blocks(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data)
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=None
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 40 * BS, 10) == data[40 * BS : 40 * BS + 10]
        await settle()
        first = sorted(src.ranges_asked)
        assert first[0][0] == 40 * BS and first[-1][1] == 64 * BS
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    # Blocks 40..63 were not asked for again.
    assert all(end <= 40 * BS for _, end in src.ranges_asked[len(first) :])
    assert src.refetched() == 0


async def test_a_slow_stream_splits_into_parallel_streams(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, chunk_size=256, delay=0.01)  # 25.6 kB/s
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=1e6
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        assert src.ranges_asked == [(0, 64 * BS)]  # alone first
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    # Split after its first 0.1 s (a few blocks), the rest of the file in four even parts.
    starts = sorted(start for start, _ in src.ranges_asked)
    assert len(starts) == 4 and starts[0] == 0 and starts[1] < 24 * BS
    assert src.max_open == 4
    assert src.refetched() == 0


async def test_a_fast_stream_stays_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, chunk_size=4 * BS, delay=0.001)  # 4 MB/s
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=1e6
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.ranges_asked == [(0, 64 * BS)]


async def test_a_read_does_not_wait_for_the_rest_of_its_block(tmp_path: Path) -> None:
    data = pattern(8 * BS)
    src = FakeSource(data, chunk_size=100, allowance=BS + 500)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        await settle()
        # Block 1 is not complete (the server is held after 500 of its bytes), but the bytes
        # asked for are in the file already.
        assert await store.read(f, BS + 100, 300) == data[BS + 100 : BS + 400]
        assert not store.is_complete(key_for(data))
        assert src.calls[0].served == BS + 500
        src.release()
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert len(src.calls) == 1


# ---------------------------------------------------------------------- servers and failures


async def test_server_ignoring_ranges_falls_back_to_one_stream(tmp_path: Path) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data, ranges=False)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 15 * BS, 10) == data[15 * BS : 15 * BS + 10]
        await settle()
        # The bytes before the offset asked for were kept, not skipped: no second request.
        assert await store.read(f, 0, len(data)) == data
        await store.ensure_complete(f)
        assert store.is_complete(key_for(data))
        store.close(f)
    assert src.ranges_asked == [(15 * BS, 20 * BS)]


async def test_whole_body_without_length_from_zero_is_taken_as_such(tmp_path: Path) -> None:
    """A server that ignores ranges and announces no length: the answer to a range from 0
    looks like the range until it goes on past its end."""
    data = pattern(64 * BS)
    src = FakeSource(data, ranges=False, lengths=False)
    async with running_store(
        tmp_path, block_size=BS, max_streams=4, min_parallel_size=16 * BS, parallel_below=None
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        assert (await store.ensure_complete(f)).read_bytes() == data
        assert await store.read(f, 20 * BS, 100) == data[20 * BS : 20 * BS + 100]
        store.close(f)


async def test_no_parallel_or_far_streams_once_ranges_are_ignored(tmp_path: Path) -> None:
    data = pattern(64 * BS)
    src = FakeSource(data, ranges=False, allowance=3 * BS)
    async with running_store(
        tmp_path,
        block_size=BS,
        max_streams=4,
        min_parallel_size=16 * BS,
        far_distance=2 * BS,
        parallel_below=None,
    ) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        await settle()
        calls = len(src.calls)
        # The whole body answered the first segment's request: the others never asked.
        assert calls == 1
        assert src.open_now == 1
        got: list[bytes] = []

        async def far_read() -> None:
            got.append(await store.read(f, 50 * BS, 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(far_read)
            await settle()
            assert len(src.calls) == calls  # a range would be ignored: wait for the stream
            src.release()
        assert got == [data[50 * BS : 50 * BS + 10]]
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert len(src.calls) == calls


async def test_short_whole_body_after_ignored_range_counts_as_a_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A whole body (range ignored) that silently ends before EOF must count as a failed attempt,
    even past the range that was asked for; otherwise the store would re-request at once,
    without backoff or limit."""
    data = pattern(20 * BS)
    src = FakeSource(data, allowance=2 * BS)
    async with running_store(tmp_path, block_size=BS, fetch_retries=1) as store:
        f = store.open(key_for(data), src.fetch)
        await store.read(f, 15 * BS, 10)  # blocks 15 and 16 arrive, then the stream is held
        await settle()
        store.close(f)
        await settle()
        src.ranges = False
        src.release()
        src.faults = [Short(16 * BS + 100, silent=True) for _ in range(6)]
        f = store.open(key_for(data), src.fetch)
        # Asks for [3, 15) and gets the body from 0, cut after block 16: block 3 is there.
        assert await store.read(f, 3 * BS, 10) == data[3 * BS : 3 * BS + 10]
        with pytest.raises(ContentShortError):
            await store.ensure_complete(f)
        store.close(f)
    assert len(src.calls) <= 5


async def test_short_body_is_resumed_where_it_stopped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    src.faults = [Short(3 * BS + 100)]
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.ranges_asked == [(0, 20 * BS), (3 * BS + 100, 20 * BS)]


async def test_silently_short_body_is_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    src.faults = [Short(2 * BS + 5, silent=True)]
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, len(data)) == data
        store.close(f)
    assert src.ranges_asked == [(0, 20 * BS), (2 * BS + 5, 20 * BS)]


async def test_short_body_fails_the_read_after_retries(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    src.faults = [Short(0) for _ in range(4)]
    async with running_store(tmp_path, block_size=BS, fetch_retries=3) as store:
        f = store.open(key_for(data), src.fetch)
        with pytest.raises(FakeFetchError) as info:
            await store.read(f, 0, 10)
        assert info.value.retryable
        assert len(src.calls) == 4
        # The failure is not remembered: the next read tries again.
        assert await store.read(f, 0, 10) == data[:10]
        store.close(f)


async def test_silent_short_body_fails_with_content_short_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    src.faults = [Short(0, silent=True) for _ in range(3)]
    async with running_store(tmp_path, block_size=BS, fetch_retries=2) as store:
        f = store.open(key_for(data), src.fetch)
        with pytest.raises(ContentShortError):
            await store.read(f, 0, 10)
        store.close(f)


async def test_progress_between_failures_keeps_a_stream_alive(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    src.faults = [Short(2 * BS) for _ in range(9)]
    async with running_store(tmp_path, block_size=BS, fetch_retries=2) as store:
        f = store.open(key_for(data), src.fetch)
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert len(src.calls) == 10


async def test_permanent_error_fails_at_once(tmp_path: Path) -> None:
    data = pattern(20 * BS)
    src = FakeSource(data)
    refusal = FakeFetchError("403 Forbidden", retryable=False)
    src.faults = [refusal]
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        with pytest.raises(FakeFetchError) as info:
            await store.read(f, 0, 10)
        assert info.value is refusal
        assert len(src.calls) == 1
        store.close(f)


async def test_body_longer_than_key_is_refused(tmp_path: Path) -> None:
    data = pattern(10 * BS + 50)
    src = FakeSource(data, ranges=False)
    src.announced_size = None
    key = ContentKey("doc-1", 1, "h1", 10 * BS)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, src.fetch)
        with pytest.raises(ContentSizeError):
            await store.ensure_complete(f)
        assert len(src.calls) == 1
        assert not store.is_complete(key)
        store.close(f)


async def test_other_total_size_is_refused(tmp_path: Path) -> None:
    data = pattern(10 * BS)
    src = FakeSource(data)
    src.announced_size = len(data) + 1
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        with pytest.raises(ContentSizeError):
            await store.read(f, 0, 1)
        store.close(f)


async def test_read_times_out(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    data = pattern(10 * BS)
    src = FakeSource(data, allowance=0)
    async with running_store(tmp_path, block_size=BS, read_timeout=30) as store:
        f = store.open(key_for(data), src.fetch)
        start = trio.current_time()
        with pytest.raises(ContentTimeoutError) as info:
            await store.read(f, 0, 10)
        assert trio.current_time() - start == pytest.approx(30)
        assert info.value.retryable
        assert isinstance(info.value, TimeoutError)
        store.close(f)


async def test_ensure_complete_times_out_only_on_a_stall(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = pattern(10 * BS)
    src = FakeSource(data, allowance=0)
    async with running_store(tmp_path, block_size=BS, read_timeout=30) as store:
        f = store.open(key_for(data), src.fetch)

        async def trickle() -> None:
            # One block every 20 s: the whole takes 200 s, longer than the timeout, but it moves.
            for i in range(1, 11):
                await trio.sleep(20)
                src.release(allowance=i * BS)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)


# --------------------------------------------------------------- handles, closing, lifecycle


async def test_closing_the_last_handle_stops_its_streams(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    src = FakeSource(data, allowance=3 * BS)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        g = store.open(key_for(data), src.fetch)
        await store.read(f, 0, 10)
        store.close(f)
        await settle()
        assert src.open_now == 1  # g still holds the entry open
        store.close(g)
        await settle()
        assert src.open_now == 0
        assert src.calls[0].closed
        with pytest.raises(CacheClosedError):
            await store.read(f, 0, 1)


async def test_empty_document_needs_no_download(tmp_path: Path) -> None:
    async with running_store(tmp_path, block_size=BS) as store:
        key = ContentKey("empty", 1, "h", 0)
        f = store.open(key, no_fetch)
        assert await store.read(f, 0, 100) == b""
        path = await store.ensure_complete(f)
        assert path.read_bytes() == b""
        assert store.is_complete(key)
        store.close(f)


async def test_partial_entry_is_never_exposed_as_complete(tmp_path: Path) -> None:
    data = pattern(10 * BS)
    key = key_for(data)
    src = FakeSource(data, allowance=9 * BS + 10)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, src.fetch)
        await store.read(f, 0, 10)
        await settle()
        assert not store.is_complete(key)
        assert not (store.dir / key.digest()).exists()
        assert (store.dir / (key.digest() + ".part")).stat().st_size == len(data)
        src.release()
        path = await store.ensure_complete(f)
        assert path == store.dir / key.digest()
        assert not (store.dir / (key.digest() + ".part")).exists()
        assert store.is_complete(key)
        store.close(f)


async def test_store_must_be_running_to_fetch(tmp_path: Path) -> None:
    data = pattern(4 * BS)
    store = ContentStore(tmp_path, 1 << 20, block_size=BS)
    f = store.open(key_for(data), FakeSource(data).fetch)
    with pytest.raises(CacheClosedError):
        await store.read(f, 0, 10)
    store.close(f)


# --------------------------------------------------------------------- writes in a thread

KIB = 1024
SLOW = {"block_size": 256 * KIB, "thread_writes_below": float("inf")}  # every write is slow


class HeldWrites:
    """Stands in for the cache file write of the worker thread: holds every write that starts
    at or after ``hold_from`` until ``release()``, or fails them with ``error``."""

    def __init__(self, hold_from: int, error: OSError | None = None) -> None:
        self.hold_from = hold_from
        self.error = error
        self.gate = threading.Event()
        self._real = writer_module.timed_pwrite

    def __call__(self, fd: int, data: memoryview, offset: int) -> float:
        if offset >= self.hold_from:
            if self.error is not None:
                raise self.error
            self.gate.wait()
        return self._real(fd, data, offset)

    def release(self) -> None:
        self.gate.set()


async def test_slow_writes_go_to_a_thread_and_reads_are_served_from_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(4 << 20)
    src = FakeSource(data, chunk_size=128 * KIB)
    held = HeldWrites(hold_from=512 * KIB)
    monkeypatch.setattr(writer_module, "timed_pwrite", held)
    try:
        # No read-ahead window: one stream of the whole range, to see how far it gets.
        async with running_store(tmp_path, **SLOW, read_ahead=None) as store:
            f = store.open(key_for(data), src.fetch)
            # The first chunk is written inline (no write was timed yet); from then on the
            # worker thread writes, and it is held at 512 KiB: these bytes are only in memory.
            with trio.fail_after(60):  # were they not served from memory, they would hang
                assert await store.read(f, 0, 100) == data[:100]
                assert await store.read(f, 600 * KIB, 100 * KIB) == data[600 * KIB : 700 * KIB]
                assert await store.read(f, 0, 1000 * KIB) == data[: 1000 * KIB]
            # Not in the cache file yet: those reads were answered from memory.
            part = store.dir / (key_for(data).digest() + ".part")
            assert part.read_bytes()[512 * KIB : 1 << 20] == bytes(512 * KIB)
            # The stream receives at most WRITE_BEHIND ahead of the held write.
            assert src.calls[0].served <= 512 * KIB + (8 << 20)
            held.release()
            assert (await store.ensure_complete(f)).read_bytes() == data
            store.close(f)
    finally:
        held.release()
    assert len(src.calls) == 1


async def test_bytes_read_from_memory_are_written_even_when_the_file_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(4 << 20)
    src = FakeSource(data, chunk_size=128 * KIB)
    held = HeldWrites(hold_from=1 << 20)
    monkeypatch.setattr(writer_module, "timed_pwrite", held)
    try:
        async with running_store(tmp_path, **SLOW) as store:
            f = store.open(key_for(data), src.fetch)
            with trio.fail_after(60):
                assert await store.read(f, 0, 100) == data[:100]
                assert await store.read(f, 0, len(data)) == data  # mostly from memory
            store.close(f)  # stops the stream; its writer still holds 3 MiB
            held.release()
    finally:
        held.release()
    # The store was shut down right after: what the reader got was kept all the same.
    async with running_store(tmp_path, **SLOW) as store:
        assert store.is_complete(key_for(data))
        f = store.open(key_for(data), no_fetch)
        assert await store.read(f, 0, len(data)) == data
        store.close(f)


async def test_a_failed_write_in_the_thread_fails_no_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(2 << 20)
    src = FakeSource(data, chunk_size=128 * KIB)
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(writer_module, "timed_pwrite", HeldWrites(1 << 20, error=full))
    async with running_store(tmp_path, **SLOW) as store:
        f = store.open(key_for(data), src.fetch)
        assert await store.read(f, 0, 100) == data[:100]
        # The content is passed through: read, not kept.
        with pytest.raises(CacheFullError) as caught:
            await store.ensure_complete(f)
        assert caught.value.errno == errno.ENOSPC
        assert await store.read(f, 0, len(data)) == data
        assert not store.is_complete(key_for(data))
        store.close(f)
        assert [n for n in os.listdir(store.dir) if not n.startswith("index.db")] == []


@pytest.mark.parametrize("seed", range(6))
async def test_reads_with_writes_in_a_thread_return_the_right_bytes(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    data = pattern(rng.randrange(1 << 20, 6 << 20), seed=seed)
    # Parallel streams at once, or (a slow server) a stream that splits once it has run a while.
    slow = seed >= 4
    src = FakeSource(
        data, chunk_size=rng.choice([64, 100, 300]) * KIB, delay=0.005 if slow else 0.0
    )
    options = {**SLOW, "min_parallel_size": 1 << 20, "parallel_below": 1e12 if slow else None}
    async with running_store(tmp_path, **options) as store:
        f = store.open(key_for(data), src.fetch)

        async def one(off: int, n: int) -> None:
            assert await store.read(f, off, n) == data[off : off + n]

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                off = rng.randrange(len(data))
                nursery.start_soon(one, off, rng.randrange(1, 300 * KIB))
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.refetched() == 0


async def test_usage_reports_streams_and_entries(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    src = FakeSource(data, allowance=5 * BS)
    async with running_store(tmp_path, max_bytes=1 << 20, block_size=BS) as store:
        f = store.open(key_for(data), src.fetch)
        await store.read(f, 0, 10)
        await settle()
        use = store.usage()
        assert use["budget"] == 1 << 20
        assert use["pinned"] == 1
        assert use["bytes_used"] == 5 * BS
        [stream] = use["streams"]
        assert stream["doc_id"] == "doc-1"
        assert stream["position"] == 5 * BS
        assert stream["bytes"] == 5 * BS
        src.release()
        await store.ensure_complete(f)
        store.close(f)
        await settle()
        use = store.usage()
        assert use["streams"] == []
        assert use["pinned"] == 0
        assert use["entries"] == use["complete_entries"] == 1
        assert use["bytes_used"] == len(data)


# -------------------------------------------------------------------- restart and the index


async def test_complete_entry_survives_a_restart_with_zero_requests(tmp_path: Path) -> None:
    data = pattern(33 * BS + 1)
    key = key_for(data)
    src = FakeSource(data)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, src.fetch)
        await store.ensure_complete(f)
        store.close(f)
    async with running_store(tmp_path, block_size=BS) as store:
        assert store.is_complete(key)
        f = store.open(key, no_fetch)
        assert await store.read(f, 0, len(data) + 10) == data
        store.close(f)
        assert store.usage()["bytes_used"] == len(data)
    assert len(src.calls) == 1


async def test_complete_entry_survives_an_abandoned_store(tmp_path: Path) -> None:
    data = pattern(8 * BS)
    key = key_for(data)
    src = FakeSource(data)
    store = ContentStore(tmp_path, 1 << 20, block_size=BS)
    # Like kill -9: the store is never shut down, its files and index stay as they are.
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            f = store.open(key, src.fetch)
            await store.ensure_complete(f)
            store._closed = True  # make run's exit skip the orderly shutdown
            scope.cancel()
    async with running_store(tmp_path, block_size=BS) as store2:
        f = store2.open(key, no_fetch)
        assert await store2.read(f, 0, len(data)) == data
        store2.close(f)
    store._index.close()


async def test_partial_entry_resumes_after_a_restart(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    key = key_for(data)
    src = FakeSource(data, allowance=10 * BS)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, 10) == data[:10]
        await settle()
        store.close(f)
        await settle()
    src.release()
    async with running_store(tmp_path, block_size=BS) as store:
        assert store.usage()["bytes_used"] == 10 * BS
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, 10 * BS) == data[: 10 * BS]
        assert len(src.calls) == 1  # blocks 0..9 came from the disk
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert src.ranges_asked[1] == (10 * BS, 30 * BS)
    assert src.refetched() == 0


async def test_partial_bitmap_is_dropped_when_block_size_changes(tmp_path: Path) -> None:
    data = pattern(30 * BS)
    key = key_for(data)
    src = FakeSource(data, allowance=10 * BS)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, src.fetch)
        await store.read(f, 0, 10)
        store.close(f)
    src.release()
    async with running_store(tmp_path, block_size=2 * BS) as store:
        assert store.usage()["entries"] == 0
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, len(data)) == data
        store.close(f)
    assert src.ranges_asked[1] == (0, 30 * BS)


async def test_damaged_index_and_orphans_are_cleaned_up(tmp_path: Path) -> None:
    data = pattern(5 * BS)
    key = key_for(data)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(key, FakeSource(data).fetch)
        await store.ensure_complete(f)
        store.close(f)
    content = tmp_path / "content"
    orphan = content / ("ab" * 32 + ".part")
    orphan.write_bytes(b"x")
    for name in ("index.db-wal", "index.db-shm"):
        (content / name).unlink(missing_ok=True)
    (content / "index.db").write_bytes(b"this is not a database" * 100)
    async with running_store(tmp_path, block_size=BS) as store:
        assert not store.is_complete(key)
        assert not orphan.exists()
        assert not (content / key.digest()).exists()
        f = store.open(key, FakeSource(data).fetch)
        assert await store.read(f, 0, len(data)) == data
        store.close(f)


async def test_files_are_private(tmp_path: Path) -> None:
    data = pattern(5 * BS)
    root = tmp_path / "cache"
    async with running_store(root, block_size=BS) as store:
        f = store.open(key_for(data), FakeSource(data).fetch)
        await store.ensure_complete(f)
        store.close(f)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
        names = os.listdir(store.dir)
        assert "index.db" in names
        for name in names:
            assert stat.S_IMODE((store.dir / name).stat().st_mode) == 0o600, name


# ---------------------------------------------------------------------- keys and eviction


async def test_other_version_or_hash_never_serves_old_bytes(tmp_path: Path) -> None:
    old = pattern(6 * BS, seed=1)
    new = pattern(6 * BS, seed=2)
    async with running_store(tmp_path, block_size=BS) as store:
        f = store.open(ContentKey("doc-1", 1, "h1", len(old)), FakeSource(old).fetch)
        assert await store.read(f, 0, len(old)) == old
        store.close(f)
        for key in (
            ContentKey("doc-1", 2, "h1", len(new)),  # next version
            ContentKey("doc-1", 1, "h2", len(new)),  # same number, new change token
        ):
            src = FakeSource(new)
            f = store.open(key, src.fetch)
            assert await store.read(f, 0, len(new)) == new
            store.close(f)
            assert len(src.calls) == 1


async def test_lru_eviction_skips_open_entries(tmp_path: Path) -> None:
    docs = {name: pattern(10 * BS, seed=i) for i, name in enumerate("ABCD")}
    keys = {name: key_for(data, doc=name) for name, data in docs.items()}
    async with running_store(tmp_path, max_bytes=25 * BS, block_size=BS) as store:

        async def fill(name: str) -> object:
            f = store.open(keys[name], FakeSource(docs[name]).fetch)
            await store.ensure_complete(f)
            return f

        fa = await fill("A")  # A stays open: the least recently used, but pinned
        store.close(await fill("B"))  # type: ignore[arg-type]
        store.close(await fill("C"))  # type: ignore[arg-type]
        await settle()
        assert store.is_complete(keys["A"])
        assert not store.is_complete(keys["B"])
        assert store.is_complete(keys["C"])
        assert not (store.dir / keys["B"].digest()).exists()
        assert await store.read(fa, 0, 10 * BS) == docs["A"]  # type: ignore[arg-type]
        store.close(fa)  # type: ignore[arg-type]
        store.close(await fill("D"))  # type: ignore[arg-type]
        await settle()
        assert [store.is_complete(keys[n]) for n in "ACD"] == [True, False, True]
        assert store.usage()["bytes_used"] == 20 * BS


async def test_open_entry_may_exceed_the_budget_until_closed(tmp_path: Path) -> None:
    data = pattern(10 * BS)
    key = key_for(data)
    async with running_store(tmp_path, max_bytes=5 * BS, block_size=BS) as store:
        f = store.open(key, FakeSource(data).fetch)
        path = await store.ensure_complete(f)
        store.evict_to_budget()
        assert path.exists()
        assert await store.read(f, 0, len(data)) == data
        store.close(f)
        await settle()
        assert not path.exists()
        assert store.usage()["bytes_used"] == 0


# ---------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 40 * 64),
    block_size=st.sampled_from([64, 100, 256]),
    chunk_size=st.integers(1, 300),
    ranges=st.booleans(),
    max_streams=st.integers(1, 4),
    far_blocks=st.integers(1, 6),
    reads=st.lists(st.tuples(st.integers(0, 40 * 64), st.integers(0, 500)), max_size=12),
    concurrent=st.booleans(),
    split=st.sampled_from(["at once", "when slow", "never"]),
)
def test_any_reads_return_the_right_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    block_size: int,
    chunk_size: int,
    ranges: bool,
    max_streams: int,
    far_blocks: int,
    reads: list[tuple[int, int]],
    concurrent: bool,
    split: str,
) -> None:
    """Whatever the access pattern and server, reads are right and no byte is fetched from a
    ranged server more than once."""
    root = tmp_path_factory.mktemp("prop")
    data = pattern(size, seed=size)
    src_holder: list[FakeSource] = []

    async def main() -> None:
        # Parallel streams from the start, once a stream turns out slow, or never.
        slow = split == "when slow"
        src = FakeSource(
            data,
            ranges=ranges,
            chunk_size=max(chunk_size, 64) if slow else chunk_size,
            delay=0.01 if slow else 0,
        )
        src_holder.append(src)
        async with running_store(
            root,
            block_size=block_size,
            max_streams=max_streams,
            min_parallel_size=8 * block_size,
            far_distance=far_blocks * block_size,
            parallel_below={"at once": None, "when slow": 1e9, "never": 1.0}[split],
        ) as store:
            f = store.open(key_for(data), src.fetch)

            async def one(off: int, n: int) -> None:
                assert await store.read(f, off, n) == data[off : off + n]

            if concurrent:
                async with trio.open_nursery() as nursery:
                    for off, n in reads:
                        nursery.start_soon(one, off, n)
            else:
                for off, n in reads:
                    await one(off, n)
            assert (await store.ensure_complete(f)).read_bytes() == data
            store.close(f)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    src = src_holder[0]
    if ranges:
        assert src.refetched() == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 30 * 64),
    chunk_size=st.integers(1, 200),
    ranges=st.booleans(),
    cuts=st.lists(st.integers(0, 30 * 64), max_size=4),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.integers(0, 30 * 64), st.integers(1, 300)),
            st.tuples(st.just("reopen"), st.just(0), st.just(0)),
            st.tuples(st.just("restart"), st.just(0), st.just(0)),
        ),
        max_size=10,
    ),
)
def test_reads_survive_cut_bodies_closes_and_restarts(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    chunk_size: int,
    ranges: bool,
    cuts: list[int],
    steps: list[tuple[str, int, int]],
) -> None:
    """Bodies cut short (retryable), handles closed mid-stream and stores restarted on the same
    directory never make a read return wrong bytes."""
    root = tmp_path_factory.mktemp("prop2")
    data = pattern(size, seed=size + 7)
    key = key_for(data)

    async def main() -> None:
        src = FakeSource(data, ranges=ranges, chunk_size=chunk_size)
        src.faults = [Short(c) for c in cuts]
        pending = list(steps)
        while True:
            async with running_store(
                root, block_size=64, min_parallel_size=8 * 64, fetch_retries=5
            ) as store:
                f = store.open(key, src.fetch)
                while pending and pending[0][0] != "restart":
                    op, off, n = pending.pop(0)
                    if op == "read":
                        assert await store.read(f, off, n) == data[off : off + n]
                    else:
                        store.close(f)
                        await trio.testing.wait_all_tasks_blocked()
                        f = store.open(key, src.fetch)
                restart = bool(pending)
                if restart:
                    pending.pop(0)
                else:
                    assert (await store.ensure_complete(f)).read_bytes() == data
                store.close(f)
            if not restart:
                break

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_an_adopted_file_is_served_without_a_fetch_also_after_a_restart(
    tmp_path: Path,
) -> None:
    data = pattern(300 * BS)
    key = key_for(data)
    sent = tmp_path / "sent.data"
    sent.write_bytes(data)
    async with running_store(tmp_path / "c", block_size=BS) as store:
        assert store.adopt(key, sent)
        assert not sent.exists()  # moved, not copied
        assert store.is_complete(key)
        assert store.usage()["bytes_used"] == len(data)
        f = store.open(key, no_fetch)
        assert await store.read(f, 1000, 5000) == data[1000:6000]
        store.close(f)
        # Already cached: a second file for the same key is left alone.
        other = tmp_path / "other.data"
        other.write_bytes(data)
        assert not store.adopt(key, other) and other.exists()
    async with running_store(tmp_path / "c", block_size=BS) as store:
        f = store.open(key, no_fetch)
        assert await store.read(f, 0, len(data)) == data
        store.close(f)


async def test_adopt_refuses_what_does_not_fit(tmp_path: Path) -> None:
    data = pattern(10 * BS)
    path = tmp_path / "sent.data"
    path.write_bytes(data)
    async with running_store(tmp_path / "c", max_bytes=5 * BS, block_size=BS) as store:
        assert not store.adopt(key_for(data), path)  # larger than the whole cache
        assert not store.adopt(key_for(data + b"x"), path)  # not the key's size
        assert not store.adopt(key_for(b"y" * 10), tmp_path / "missing")
        assert path.read_bytes() == data
        assert not store.is_complete(key_for(data))
    fits = pattern(3 * BS)
    small = tmp_path / "small.data"
    small.write_bytes(fits)
    assert not store.adopt(key_for(fits), small)  # the store was closed
    assert small.read_bytes() == fits


def wait_for_no_deleted_files(directory: Path) -> None:
    """The deleting thread runs on its own: poll for its result."""
    wait_until(
        lambda: not any(n.endswith(".deleted") for n in os.listdir(directory)),
        30,
        "the evicted files to be deleted",
        interval=0.01,
    )


async def test_a_large_evicted_entry_goes_without_touching_its_successor(tmp_path: Path) -> None:
    big = pattern(20 << 20)
    root = tmp_path / "c"
    async with running_store(root, max_bytes=30 << 20) as store:
        first = tmp_path / "first.data"
        first.write_bytes(big)
        assert store.adopt(key_for(big, "doc-1"), first)
        second = tmp_path / "second.data"
        second.write_bytes(big)
        assert store.adopt(key_for(big, "doc-2"), second)  # evicts doc-1 (over budget)
        assert not store.is_complete(key_for(big, "doc-1"))
        # doc-1 comes straight back under its old name while its old file is being deleted.
        again = tmp_path / "again.data"
        again.write_bytes(big)
        assert store.adopt(key_for(big, "doc-1"), again)
        wait_for_no_deleted_files(store.dir)
        f = store.open(key_for(big, "doc-1"), no_fetch)
        assert await store.read(f, (20 << 20) - 10, 10) == big[-10:]
        store.close(f)
    # A leftover of a deletion that never ran is removed at the next start.
    (store.dir / ("0" * 64 + ".1234abcd.deleted")).write_bytes(b"x")
    async with running_store(root, max_bytes=30 << 20) as store:
        assert not any(n.endswith(".deleted") for n in os.listdir(store.dir))
        assert store.is_complete(key_for(big, "doc-1"))
