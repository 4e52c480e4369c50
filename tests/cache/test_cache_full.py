"""The cache on a full, small or failing disk: reads go on, the content store, the journal
and the uploader clean up after themselves, and all of them work again as soon as there is
room, without a new start.

Real disks where that is practical (a tmpfs of a few MiB, root only; see
``tests.support.disk``), and failures injected into the one write helper of the cache files
(``writer.timed_pwrite``) for the errors a tmpfs does not make (EIO, EDQUOT, EFBIG).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing

import bimfs.cache.content.streams as streams_module
import bimfs.cache.content.writer as writer_module
from bimfs.cache.content import ContentKey, ContentStore, Download
from bimfs.cache.errors import CacheFullError
from bimfs.cache.journal import Journal, JournalEntry
from bimfs.cache.uploader import Uploader
from tests.cache.fakes import FakeFetchError, FakeSource, Short, running_store
from tests.support.disk import fill, free_bytes, small_disk

KIB = 1024
BS = 64 * KIB


def key_for(data: bytes, doc: str) -> ContentKey:
    return ContentKey(doc, 1, "h", len(data))


def cache_files(store: ContentStore) -> list[str]:
    """The content files in the store's directory (not the index)."""
    return sorted(n for n in os.listdir(store.dir) if not n.startswith("index.db"))


async def read_all(store: ContentStore, key: ContentKey, src: FakeSource, step: int) -> bytes:
    f = store.open(key, src.fetch)
    try:
        out = bytearray()
        while len(out) < key.size:
            out += await store.read(f, len(out), step)
        return bytes(out)
    finally:
        store.close(f)


async def kept(store: ContentStore, key: ContentKey) -> bool:
    """True once ``key`` is complete in the cache (its finalisation may still be under way)."""
    f = store.open(key, no_fetch)
    try:
        await store.ensure_complete(f)
    finally:
        store.close(f)
    return store.is_complete(key)


def no_fetch(start: int, end: int) -> AbstractAsyncContextManager[Download]:
    raise AssertionError(f"unexpected fetch of [{start}, {end})")


async def cache(store: ContentStore, data: bytes, doc: str) -> ContentKey:
    """Have ``data`` cached whole under a key of its own."""
    key = key_for(data, doc)
    f = store.open(key, FakeSource(data, chunk_size=16 * KIB).fetch)
    await store.ensure_complete(f)
    store.close(f)
    assert store.is_complete(key)
    return key


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", 4 << 20) as path:
        yield path


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A full disk is a condition the cache handles: nothing it logs is an error."""
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ----------------------------------------------------------------- larger than the disk


async def test_content_larger_than_the_disk_is_read_without_keeping_it(
    disk: Path, no_errors: None
) -> None:
    data = os.urandom(6 << 20)
    key = key_for(data, "big")
    src = FakeSource(data, chunk_size=100 * KIB)
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, 100) == data[:100]
        assert store.usage()["passed_through"] == 1
        assert cache_files(store) == []  # not even a partial file was made
        with pytest.raises(CacheFullError) as caught:
            await store.ensure_complete(f)
        assert caught.value.errno == errno.ENOSPC
        out = bytearray(data[:100])
        while len(out) < len(data):
            out += await store.read(f, len(out), 128 * KIB)
        assert out == data
        store.close(f)
        assert not store.is_complete(key)
        assert store.usage()["entries"] == 0
        # A later read fetches it again (in one stream, as before).
        served = src.bytes_served
        assert await read_all(store, key, src, 200 * KIB) == data
        assert src.bytes_served - served == len(data)
    assert len(src.calls) == 2


async def test_a_passed_through_read_holds_a_bounded_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache that must leave more free than any disk has: nothing fits, all is passed through.
    monkeypatch.setattr(streams_module, "MEMORY_AHEAD", 256 * KIB)
    monkeypatch.setattr(streams_module, "MEMORY_BEHIND", 64 * KIB)
    data = os.urandom(4 << 20)
    key = key_for(data, "big")
    src = FakeSource(data, chunk_size=32 * KIB)
    async with running_store(tmp_path, 1 << 30, block_size=BS, min_free=1 << 62) as store:
        f = store.open(key, src.fetch)
        pos = 0
        while pos < len(data):
            assert await store.read(f, pos, 48 * KIB) == data[pos : pos + 48 * KIB]
            pos += 48 * KIB
            await trio.testing.wait_all_tasks_blocked()
            # The stream waits for its reader: never more than its window ahead of it.
            assert src.bytes_served <= pos + 256 * KIB + 32 * KIB
            if pos == 48 * KIB * 40:
                # A read slightly behind (the kernel's read-ahead comes out of order) is
                # served from the window.
                back = pos - 50 * KIB
                assert await store.read(f, back, 10 * KIB) == data[back : back + 10 * KIB]
        assert len(src.calls) == 1
        # One far behind it starts a stream of its own.
        assert await store.read(f, 100, 1000) == data[100:1100]
        assert len(src.calls) == 2
        store.close(f)
        await trio.testing.wait_all_tasks_blocked()
        assert store.usage()["streams"] == []
    assert cache_files_in(tmp_path) == []


def cache_files_in(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root / "content") if not n.startswith("index.db"))


async def test_a_read_longer_than_the_window_of_content_passed_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "MEMORY_AHEAD", 128 * KIB)
    monkeypatch.setattr(streams_module, "MEMORY_BEHIND", 32 * KIB)
    data = os.urandom(2 << 20)
    src = FakeSource(data, chunk_size=32 * KIB)
    async with running_store(tmp_path, 1 << 30, block_size=BS, min_free=1 << 62) as store:
        f = store.open(key_for(data, "big"), src.fetch)
        with trio.fail_after(10):
            assert await store.read(f, 1000, 1 << 20) == data[1000 : 1000 + (1 << 20)]
        store.close(f)


async def test_a_flaky_download_of_content_passed_through_goes_on_while_it_moves(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    data = os.urandom(2 << 20)
    src = FakeSource(data, chunk_size=32 * KIB)
    src.faults = [Short(after=200 * KIB) for _ in range(6)]  # more than fetch_retries
    async with running_store(
        tmp_path, 1 << 30, block_size=BS, min_free=1 << 62, fetch_retries=3
    ) as store:
        assert await read_all(store, key_for(data, "big"), src, 128 * KIB) == data
    assert len(src.calls) == 7
    assert src.refetched() == 0  # each retry goes on from where the last one stopped


async def test_concurrent_and_far_reads_of_content_passed_through(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    key = key_for(data, "big")
    src = FakeSource(data, chunk_size=50 * KIB)
    async with running_store(tmp_path, 1 << 30, block_size=BS, min_free=1 << 62) as store:
        handles = [store.open(key, src.fetch) for _ in range(3)]
        results: dict[int, bytes] = {}

        async def reader(i: int) -> None:
            # Three sequential readers, at the start, in the middle, near the end.
            start = i * (1 << 20)
            out = bytearray()
            while len(out) < 700 * KIB:
                out += await store.read(handles[i], start + len(out), 64 * KIB)
            results[i] = bytes(out)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(reader, i)
        for i in range(3):
            assert results[i] == data[i << 20 : (i << 20) + len(results[i])]
        for h in handles:
            store.close(h)
    assert cache_files_in(tmp_path) == []


async def test_random_reads_of_content_passed_through_hold_few_windows(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    key = key_for(data, "big")
    src = FakeSource(data, chunk_size=50 * KIB)
    async with running_store(
        tmp_path, 1 << 30, block_size=BS, min_free=1 << 62, far_distance=256 * KIB
    ) as store:
        f = store.open(key, src.fetch)
        for i in range(12):
            offset = (i * 5 % 12) * (600 * KIB)
            assert await store.read(f, offset, 1000) == data[offset : offset + 1000]
            await trio.testing.wait_all_tasks_blocked()
            assert len(store.usage()["streams"]) <= 4  # max_streams
        store.close(f)


async def test_a_server_without_ranges_passed_through(tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    key = key_for(data, "big")
    src = FakeSource(data, chunk_size=50 * KIB, ranges=False)
    async with running_store(tmp_path, 1 << 30, block_size=BS, min_free=1 << 62) as store:
        f = store.open(key, src.fetch)
        with trio.fail_after(30):
            assert await store.read(f, 1 << 20, 100) == data[1 << 20 : (1 << 20) + 100]
            assert await store.read(f, 0, len(data)) == data
        store.close(f)


# --------------------------------------------------------------------------- eviction


async def test_room_is_made_by_evicting_least_recently_used_entries(
    disk: Path, no_errors: None
) -> None:
    async with running_store(disk, 1 << 30, block_size=BS, min_free=0) as store:
        unit = free_bytes(disk) // 4 // BS * BS
        a_data = os.urandom(unit)
        a = await cache(store, a_data, "a")
        held = store.open(a, FakeSource(a_data).fetch)  # open: never evicted, though oldest
        b = await cache(store, os.urandom(unit), "b")
        c = await cache(store, os.urandom(unit), "c")
        d_data = os.urandom(unit * 3 // 2)
        d = key_for(d_data, "d")
        assert await read_all(store, d, FakeSource(d_data), 128 * KIB) == d_data
        assert await kept(store, d)  # it fitted once b was evicted
        assert not store.is_complete(b)
        assert store.is_complete(a) and store.is_complete(c)
        # Larger than the disk: passed through, and nothing is evicted for it.
        e_data = os.urandom(5 << 20)
        e = key_for(e_data, "e")
        assert await read_all(store, e, FakeSource(e_data), 256 * KIB) == e_data
        assert not store.is_complete(e)
        assert store.is_complete(a) and store.is_complete(c) and store.is_complete(d)
        store.close(held)


async def test_a_large_entry_evicted_for_room_is_gone_before_the_write(
    tmp_path: Path, no_errors: None
) -> None:
    # Files of 16 MiB and more are deleted by a thread; room made for a write waits for it.
    with small_disk(tmp_path / "disk", 24 << 20) as disk:
        async with running_store(disk, 1 << 30, block_size=1 << 20, min_free=0) as store:
            big = await cache(store, os.urandom(16 << 20), "big")
            data = os.urandom(12 << 20)
            key = key_for(data, "next")
            assert await read_all(store, key, FakeSource(data, chunk_size=1 << 20), 1 << 20) == (
                data
            )
            assert await kept(store, key)
            assert not store.is_complete(big)
            assert cache_files(store) == [key.digest()]


async def test_the_disk_filling_up_during_a_read_evicts_then_passes_through(
    disk: Path, no_errors: None
) -> None:
    async with running_store(disk, 1 << 30, block_size=BS, min_free=0) as store:
        unit = free_bytes(disk) // 4 // BS * BS
        a = await cache(store, os.urandom(unit), "a")
        data = os.urandom(unit * 2)
        key = key_for(data, "d")
        src = FakeSource(data, chunk_size=32 * KIB, allowance=128 * KIB)
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, 100) == data[:100]
        await trio.testing.wait_all_tasks_blocked()
        # Something else takes the room the rest of it needs, all but half a unit: evicting
        # `a` makes it fit again.
        fill(disk / "filler", leave=len(data) - 128 * KIB - unit // 2)
        src.release()
        assert await store.read(f, 0, len(data)) == data
        path = await store.ensure_complete(f)
        assert store.is_complete(key) and not store.is_complete(a)
        assert path.exists()

        # Now the disk is full and nothing can be evicted (d is open): the next one is
        # passed through.
        fill(disk / "filler2")
        other = os.urandom(unit)
        okey = key_for(other, "o")
        g = store.open(okey, FakeSource(other, chunk_size=32 * KIB).fetch)
        assert await store.read(g, 0, len(other)) == other
        store.close(g)
        assert not store.is_complete(okey)
        assert cache_files(store) == [key.digest()]
        store.close(f)


async def test_a_read_on_a_full_disk_cleans_up_and_the_next_keeps_it(
    disk: Path, no_errors: None
) -> None:
    data = os.urandom(2 << 20)
    key = key_for(data, "doc")
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        src = FakeSource(data, chunk_size=32 * KIB, allowance=256 * KIB)
        f = store.open(key, src.fetch)
        assert await store.read(f, 0, 100) == data[:100]
        await trio.testing.wait_all_tasks_blocked()
        assert len(cache_files(store)) == 1  # its .part file
        filler = fill(disk / "filler")
        src.release()
        out = bytearray()
        while len(out) < len(data):
            out += await store.read(f, len(out), 100 * KIB)
        assert out == data
        assert cache_files(store) == []  # the partial file is gone already
        assert store.usage()["entries"] == 0
        store.close(f)
        # Room again: the same store keeps the next read of it.
        os.unlink(filler)
        assert await read_all(store, key, FakeSource(data), 100 * KIB) == data
        assert await kept(store, key)
    # ... for good: a new store (a remount) finds it.
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        assert store.is_complete(key)


async def test_a_store_opened_on_a_full_disk_works_from_its_index(
    disk: Path, no_errors: None
) -> None:
    data = os.urandom(300 * KIB)
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        key = await cache(store, data, "doc")
    filler = fill(disk / "filler")
    # A remount while the disk is full: the index cannot be opened for writing (a WAL
    # database needs room for its log and shared memory), so it is read into memory.
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        assert store.is_complete(key)
        f = store.open(key, no_fetch)
        assert await store.read(f, 0, len(data)) == data
        other = os.urandom(200 * KIB)
        okey = key_for(other, "other")
        assert await read_all(store, okey, FakeSource(other), 64 * KIB) == other
        store.close(f)
    os.unlink(filler)
    async with running_store(disk, 1 << 30, block_size=BS) as store:
        assert await read_all(store, okey, FakeSource(other), 64 * KIB) == other
        assert await kept(store, okey)


# ---------------------------------------------------------------- injected write errors


class FailingWrites:
    """Stands in for the write of received bytes to a cache file: the writes at or after
    ``fail_from`` raise ``OSError(code)``, ``times`` times (None: always)."""

    def __init__(self, fail_from: int, code: int, times: int | None = None) -> None:
        self.fail_from = fail_from
        self.code = code
        self.times = times
        self.failed = 0
        self._real = writer_module.timed_pwrite

    def __call__(self, fd: int, data: memoryview, offset: int) -> float:
        if offset + len(data) > self.fail_from and (self.times is None or self.failed < self.times):
            self.failed += 1
            raise OSError(self.code, os.strerror(self.code))
        return self._real(fd, data, offset)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG])
@pytest.mark.parametrize("in_thread", [False, True])
async def test_a_failing_cache_write_never_fails_the_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
    in_thread: bool,
) -> None:
    monkeypatch.setattr(writer_module, "timed_pwrite", FailingWrites(700 * KIB, code))
    data = os.urandom(2 << 20)
    key = key_for(data, "doc")
    src = FakeSource(data, chunk_size=128 * KIB)
    options = {"thread_writes_below": float("inf")} if in_thread else {}
    async with running_store(tmp_path, 1 << 30, block_size=BS, **options) as store:
        kept = await cache(store, b"k" * (300 * KIB), "kept")
        f = store.open(key, src.fetch)
        out = bytearray()
        while len(out) < len(data):
            out += await store.read(f, len(out), 96 * KIB)
        assert out == data
        with pytest.raises(CacheFullError):
            await store.ensure_complete(f)
        store.close(f)
        # Cleaned up: no partial file, no row; the disk had room, so nothing was evicted.
        assert cache_files(store) == [kept.digest()]
        assert store.usage()["entries"] == 1
        assert not store.is_complete(key)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot keep doc v1 in the cache" in w for w in warnings), warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The index kept nothing of it either.
    async with running_store(tmp_path, 1 << 30, block_size=BS) as store:
        assert store.usage()["entries"] == 1


async def test_a_failing_fsync_of_a_complete_entry_passes_it_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_errors: None
) -> None:
    data = os.urandom(1 << 20)
    key = key_for(data, "doc")
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async with running_store(tmp_path, 1 << 30, block_size=BS) as store:
        monkeypatch.setattr(os, "fsync", failing_fsync)
        src = FakeSource(data, chunk_size=128 * KIB)
        f = store.open(key, src.fetch)
        with pytest.raises(OSError) as caught:
            await store.ensure_complete(f)
        assert caught.value.errno == errno.EIO
        monkeypatch.setattr(os, "fsync", real_fsync)
        # The bytes a failing disk may not have kept are fetched again, not served from it.
        assert await store.read(f, 0, len(data)) == data
        assert len(src.calls) == 2
        store.close(f)
        assert cache_files(store) == []
        # The next open tries to keep it again.
        assert await read_all(store, key, FakeSource(data), 256 * KIB) == data
        assert await kept(store, key)


# ---------------------------------------------------------------------------- journal


def journal_files(journal: Journal) -> list[str]:
    return sorted(os.listdir(journal.dir))


def staged(journal: Journal, content: bytes) -> Path:
    staging = journal.staging_path()
    staging.write_bytes(content)
    return staging


def test_a_commit_on_a_full_disk_leaves_the_journal_as_it_was(disk: Path) -> None:
    journal = Journal(disk)
    content = os.urandom(300 * KIB)
    staging = staged(journal, content)
    filler = fill(disk / "filler")
    with pytest.raises(OSError) as caught:
        journal.commit("doc:1", {"file_name": "a.txt"}, staging)
    assert caught.value.errno == errno.ENOSPC
    # The content is back in its staging file, whole; no record, no orphan.
    assert journal_files(journal) == [staging.name]
    assert staging.read_bytes() == content
    assert journal.entries() == []
    os.unlink(filler)
    entry = journal.commit("doc:1", {"file_name": "a.txt"}, staging)
    assert journal_files(journal) == sorted([f"{entry.id}.data", f"{entry.id}.json"])
    [again] = Journal(disk).entries()
    assert again.data_path.read_bytes() == content


def test_a_record_change_on_a_full_disk_leaves_nothing_behind(disk: Path) -> None:
    journal = Journal(disk)
    entry = journal.commit("doc:1", {"file_name": "a.txt"}, staged(journal, b"saved"))
    files = journal_files(journal)
    filler = fill(disk / "filler")
    for change in (
        lambda: journal.mark_uploading(entry.id),
        lambda: journal.mark_failed(entry.id, "refused"),
        lambda: journal.update_meta(entry.id, {"file_name": "b.txt"}),
    ):
        with pytest.raises(OSError) as caught:
            change()
        assert caught.value.errno == errno.ENOSPC
        assert journal_files(journal) == files  # no half-written record left behind
    # The entry is as it was, in memory and on disk.
    for seen in (journal.get(entry.id), Journal(disk).get(entry.id)):
        assert seen is not None
        assert (seen.state, seen.attempts, seen.name) == ("pending", 0, "a.txt")
    os.unlink(filler)
    assert journal.mark_uploading(entry.id).attempts == 1
    [loaded] = Journal(disk).entries()
    assert (loaded.state, loaded.attempts) == ("uploading", 1)


async def test_an_upload_whose_outcome_cannot_be_recorded_is_sent_again(
    disk: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(disk)
    journal.commit("doc:1", {"file_name": "a.txt"}, staged(journal, b"saved"))
    attempts: list[int] = []
    gate = trio.Event()

    async def upload(entry: JournalEntry, progress: Callable[[int], None]) -> None:
        attempts.append(entry.attempts)
        if len(attempts) == 1:
            await gate.wait()
            raise FakeFetchError("connection reset", retryable=True)

    uploader = Uploader(journal, upload, delay=0.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        await trio.testing.wait_all_tasks_blocked()
        assert attempts == [1]
        # The upload fails while the disk is full: "pending again" cannot be recorded.
        filler = fill(disk / "filler")
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        os.unlink(filler)
        assert await uploader.wait_idle(600)
        nursery.cancel_scope.cancel()
    assert attempts == [1, 2]  # sent again, and the callable can tell it may have landed
    assert journal.entries() == []
    assert journal_files(journal) == []
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name.startswith("bimfs")}
    assert not [m for m, level in levels.items() if level >= logging.ERROR], levels
    assert any("could not update the upload journal" in m for m in levels)


async def test_uploads_go_on_soon_after_the_journal_disk_has_room_again(
    disk: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(disk)
    journal.commit("doc:1", {"file_name": "a.txt"}, staged(journal, b"saved"))
    sent: list[float] = []

    async def upload(entry: JournalEntry, progress: Callable[[int], None]) -> None:
        sent.append(trio.current_time())

    filler = fill(disk / "filler")
    uploader = Uploader(journal, upload, delay=0.0, max_backoff=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []  # its attempt could not be recorded: not sent
        os.unlink(filler)
        freed = trio.current_time()
        assert await uploader.wait_idle(600)
        nursery.cancel_scope.cancel()
    assert len(sent) == 1 and sent[0] - freed < 5
