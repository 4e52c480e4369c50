"""The background uploader on the trio mock clock: quiet period, retries, order, drain."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from bimfs.cache.journal import Journal, JournalEntry
from bimfs.cache.uploader import Uploader
from tests.cache.fakes import FakeFetchError


@dataclass
class Sent:
    key: str
    content: bytes
    at: float
    attempts: int


@dataclass
class FakeServer:
    """The upload callable: streams the content like the API client would, then follows the
    script (one action per call: None = accept, an exception = raise it, "hold" = wait)."""

    script: list[object] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    attempts: list[tuple[str, float]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    release: trio.Event = field(default_factory=trio.Event)

    async def upload(self, entry: JournalEntry, progress: Callable[[int], None]) -> None:
        self.attempts.append((entry.key, trio.current_time()))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            action = self.script.pop(0) if self.script else None
            content = b""
            # Plain blocking reads on purpose: a worker thread would let the mock clock jump
            # ahead while the read is in flight.
            with open(entry.data_path, "rb") as f:  # noqa: ASYNC230
                while chunk := f.read(4):
                    content += chunk
                    progress(len(content))
                    await trio.lowlevel.checkpoint()
            if action == "hold":
                await self.release.wait()
            elif isinstance(action, BaseException):
                raise action
            self.sent.append(Sent(entry.key, content, trio.current_time(), entry.attempts))
        finally:
            self.running -= 1


def save(journal: Journal, key: str, content: bytes) -> str:
    staging = journal.staging_path()
    staging.write_bytes(content)
    return journal.commit(key, {"file_name": key + ".txt"}, staging).id


@asynccontextmanager
async def running(uploader: Uploader) -> AsyncIterator[Uploader]:
    async with trio.open_nursery() as nursery:
        await nursery.start(uploader.run)
        yield uploader
        nursery.cancel_scope.cancel()


def retryable(msg: str = "connection reset") -> FakeFetchError:
    return FakeFetchError(msg, retryable=True)


def refused(msg: str = "403 Forbidden") -> FakeFetchError:
    return FakeFetchError(msg, retryable=False)


async def test_upload_waits_for_the_quiet_period(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=2.0)
    async with running(uploader):
        start = trio.current_time()
        save(journal, "doc:1", b"content")
        uploader.notify()
        assert await uploader.wait_idle(60)
    assert [(s.key, s.content) for s in server.sent] == [("doc:1", b"content")]
    assert server.sent[0].at == pytest.approx(start + 2.0)
    assert journal.entries() == []
    assert list(journal.dir.iterdir()) == []


async def test_touch_restarts_the_quiet_period(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=2.0)
    async with running(uploader):
        start = trio.current_time()
        save(journal, "doc:1", b"v1")
        uploader.notify()
        await trio.sleep(1.5)
        uploader.touch("doc:1")  # still being written
        await trio.sleep(1.0)
        assert server.attempts == []
        assert await uploader.wait_idle(60)
    assert server.sent[0].at == pytest.approx(start + 3.5)


async def test_saves_within_the_delay_give_one_upload(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=2.0)
    async with running(uploader):
        for i in range(5):
            save(journal, "doc:1", f"version {i}".encode())
            uploader.notify()
            await trio.sleep(0.5)
        assert await uploader.wait_idle(60)
    assert [s.content for s in server.sent] == [b"version 4"]


async def test_retryable_errors_back_off_then_succeed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bimfs.cache.uploader")
    journal = Journal(tmp_path)
    server = FakeServer(script=[retryable(), retryable(), retryable(), retryable()])
    uploader = Uploader(journal, server.upload, delay=1.0, max_backoff=60.0)
    async with running(uploader):
        save(journal, "doc:1", b"data")
        uploader.notify()
        assert await uploader.wait_idle(600)
    times = [t for _, t in server.attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 1, 2, 4, 8 s (+-20 % jitter): exponential.
    for gap, base in zip(gaps, [1, 2, 4, 8], strict=True):
        assert 0.8 * base <= gap <= 1.2 * base
    assert server.sent[0].attempts == 5  # the callable can tell earlier attempts happened
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG and "attempt" in r.message]
    assert len(warnings) == 1 and "attempt 3" in warnings[0].message
    assert len(debugs) == 3


async def test_backoff_is_capped_and_honours_retry_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    throttled = retryable("429 Too Many Requests")
    throttled.retry_after = 30.0  # type: ignore[attr-defined]
    journal = Journal(tmp_path)
    server = FakeServer(script=[throttled, *[retryable() for _ in range(8)]])
    uploader = Uploader(journal, server.upload, delay=0.0, max_backoff=10.0)
    async with running(uploader):
        save(journal, "doc:1", b"data")
        uploader.notify()
        assert await uploader.wait_idle(600)
    times = [t for _, t in server.attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 30.0
    assert max(gaps[1:]) <= 12.0


async def test_permanent_refusal_keeps_the_content_as_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=[refused("413 Payload Too Large")])
    uploader = Uploader(journal, server.upload, delay=1.0, describe=lambda e: f"refused ({e})")
    async with running(uploader):
        entry_id = save(journal, "doc:1", b"big")
        uploader.notify()
        assert await uploader.wait_idle(60)  # a failed entry does not keep the uploader busy
        await trio.sleep(3600)
        assert len(server.attempts) == 1  # and it is not retried on its own
        [item] = uploader.transfers()
        assert item["state"] == "failed"
        assert item["reason"] == "refused (413 Payload Too Large)"
        assert item["name"] == "doc:1.txt"
        entry = journal.get(entry_id)
        assert entry is not None
        assert entry.data_path.read_bytes() == b"big"
        # Until a user asks for a retry.
        uploader.retry(entry_id)
        assert await uploader.wait_idle(60)
    assert journal.entries() == []
    assert [s.content for s in server.sent] == [b"big"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "413" in warnings[0].message


async def test_entries_of_one_key_go_in_order_others_in_parallel(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=["hold"])
    uploader = Uploader(journal, server.upload, delay=1.0, max_parallel=2)
    async with running(uploader):
        save(journal, "doc:1", b"first")
        uploader.notify()
        await trio.sleep(1.5)
        assert server.running == 1  # "first" is being sent (and held)
        save(journal, "doc:1", b"second")
        save(journal, "doc:2", b"other")
        uploader.notify()
        await trio.sleep(10)
        # doc:2 went; doc:1's second save waits for the first to finish.
        assert [s.content for s in server.sent] == [b"other"]
        assert [k for k, _ in server.attempts] == ["doc:1", "doc:2"]
        states = sorted((t["key"], t["state"]) for t in uploader.transfers())
        assert states == [("doc:1", "pending"), ("doc:1", "uploading")]
        server.release.set()
        assert await uploader.wait_idle(60)
    assert [s.content for s in server.sent] == [b"other", b"first", b"second"]


async def test_at_most_max_parallel_uploads(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=0.5, max_parallel=2)
    async with running(uploader):
        for i in range(6):
            save(journal, f"doc:{i}", b"x" * 40)
        uploader.notify()
        assert await uploader.wait_idle(60)
    assert len(server.sent) == 6
    assert server.max_running == 2


async def test_drain_sends_now_and_reports(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=[retryable()])
    uploader = Uploader(journal, server.upload, delay=100.0, max_backoff=1000.0)
    async with running(uploader):
        save(journal, "doc:1", b"a")
        uploader.notify()
        start = trio.current_time()
        assert await uploader.drain(timeout=30)
        assert trio.current_time() - start < 5  # neither the delay nor a long backoff applied
        assert [s.content for s in server.sent] == [b"a"]


async def test_drain_times_out_when_the_server_hangs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=["hold"])
    uploader = Uploader(journal, server.upload, delay=100.0)
    async with running(uploader):
        save(journal, "doc:1", b"a")
        uploader.notify()
        assert not await uploader.drain(timeout=30)
    # Cancelled mid-upload: still pending for the next run, not lost, not failed.
    [entry] = journal.entries()
    assert entry.state == "pending"


async def test_progress_is_reported(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=["hold"])
    uploader = Uploader(journal, server.upload, delay=0.0)
    async with running(uploader):
        save(journal, "doc:1", b"0123456789")
        uploader.notify()
        await trio.sleep(5)
        [item] = uploader.transfers()
        assert item["state"] == "uploading"
        assert item["sent"] == item["size"] == 10
        assert item["rate"] > 0
        server.release.set()
        assert await uploader.wait_idle(10)
    assert uploader.transfers() == []


async def test_a_crash_mid_upload_is_resumed_by_the_next_process(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    waiting = save(journal, "doc:2", b"never started")
    interrupted = save(journal, "doc:1", b"was being sent")
    journal.mark_uploading(interrupted)
    # The process dies here: objects abandoned, a new journal and uploader on the same dir.
    journal2 = Journal(tmp_path)
    server = FakeServer()
    uploader = Uploader(journal2, server.upload, delay=5.0)
    async with running(uploader):
        start = trio.current_time()
        assert await uploader.wait_idle(60)
        # Resumed at once: they were quiet long before the restart.
        assert all(t == pytest.approx(start) for _, t in server.attempts)
    sent = {s.key: s for s in server.sent}
    assert sent["doc:1"].content == b"was being sent"
    assert sent["doc:1"].attempts == 2  # tells the callable to check whether it landed
    assert sent["doc:2"].attempts == 1
    assert journal2.entries() == []
    assert not (journal2.dir / f"{waiting}.data").exists()


async def test_entries_discarded_while_scheduled_are_skipped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=["hold"])
    uploader = Uploader(journal, server.upload, delay=1.0)
    async with running(uploader):
        entry_id = save(journal, "doc:1", b"a")
        uploader.notify()
        await trio.sleep(2)
        assert server.running == 1
        journal.discard(entry_id)  # the user deleted the file meanwhile
        server.release.set()
        uploader.notify()
        assert await uploader.wait_idle(10)
    assert journal.entries() == []


async def test_a_failing_describe_still_records_the_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def describe(exc: BaseException) -> str:
        raise KeyError("no mapping")

    journal = Journal(tmp_path)
    server = FakeServer(script=[refused("403 Forbidden")])
    uploader = Uploader(journal, server.upload, delay=0.0, describe=describe)
    async with running(uploader):
        save(journal, "doc:1", b"a")
        uploader.notify()
        assert await uploader.wait_idle(10)
    [entry] = journal.entries()
    assert entry.display_state == "failed: FakeFetchError: 403 Forbidden"


async def test_retry_of_an_entry_in_backoff_sends_it_now(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    server = FakeServer(script=[retryable()])
    uploader = Uploader(journal, server.upload, delay=0.0, base_backoff=500, max_backoff=1000)
    async with running(uploader):
        entry_id = save(journal, "doc:1", b"a")
        uploader.notify()
        await trio.sleep(5)
        assert len(server.attempts) == 1  # failed once, backing off for about 500 s
        start = trio.current_time()
        uploader.retry(entry_id)
        assert await uploader.wait_idle(60)
        assert trio.current_time() - start < 1
    assert [s.content for s in server.sent] == [b"a"]


# -- at scale ------------------------------------------------------------------------------------


class CountingJournal(Journal):
    """Counts the entries handed out: how much of the journal the uploader reads."""

    copies = 0

    def _copy(self, entry: JournalEntry) -> JournalEntry:
        self.copies += 1
        return super()._copy(entry)


def without_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)
    monkeypatch.setattr("bimfs.cache.journal.fsync_dir", lambda path: None)


async def test_work_per_upload_does_not_grow_with_the_queue(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_fsync(monkeypatch)
    journal = CountingJournal(tmp_path)
    resumed = 1000
    for i in range(resumed):  # left by an earlier process: due at once
        save(journal, f"doc:{i}", b"old %d" % i)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=1.0, max_parallel=4)
    journal.copies = 0
    async with running(uploader):
        # New saves while those go: three in a row for each of 200 documents.
        for i in range(600):
            save(journal, f"new:{i % 200}", b"new %d" % i)
            uploader.notify()
            await trio.sleep(0.001)
        assert await uploader.wait_idle(3600)
        assert uploader.transfers() == []
    uploaded = len(server.sent)
    assert uploaded >= resumed + 200
    # A few looks at each entry, not one at every entry per wake-up (that would be ~a million).
    assert journal.copies < 20 * (resumed + 600)
    # Each document's saves reached the server in the order they were made.
    for key in {s.key for s in server.sent if s.key.startswith("new:")}:
        numbers = [int(s.content.split()[1]) for s in server.sent if s.key == key]
        assert numbers == sorted(numbers)
        assert numbers[-1] >= 400  # its last save is among them


async def test_many_due_entries_go_oldest_first_when_equally_due(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path)
    for i in range(50):
        save(journal, f"doc:{i}", b"%d" % i)
    server = FakeServer()
    uploader = Uploader(journal, server.upload, delay=5.0, max_parallel=1)
    async with running(uploader):
        assert await uploader.wait_idle(600)
    assert [s.key for s in server.sent] == [f"doc:{i}" for i in range(50)]
