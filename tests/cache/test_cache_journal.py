"""The upload journal: durable commits, superseding, and recovery after a crash."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from bimfs.cache.errors import JournalEntryNotFoundError, JournalError
from bimfs.cache.journal import Journal
from tests.support.processes import wait_until


def save(journal: Journal, key: str, content: bytes, **meta: object) -> str:
    staging = journal.staging_path()
    staging.write_bytes(content)
    return journal.commit(key, {"file_name": key.rsplit("/", 1)[-1], **meta}, staging).id


def files(journal: Journal) -> list[str]:
    return sorted(os.listdir(journal.dir))


def test_commit_is_durable_and_visible_to_the_next_process(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry_id = save(journal, "doc:1", b"hello", slug="team", base_version=3)
    entry = journal.get(entry_id)
    assert entry is not None
    assert entry.state == "pending"
    assert entry.size == 5
    assert entry.data_path.read_bytes() == b"hello"
    assert files(journal) == sorted([f"{entry_id}.data", f"{entry_id}.json"])
    # A new process (the old objects are simply abandoned, as after kill -9) sees the same.
    again = Journal(tmp_path)
    [loaded] = again.entries()
    assert loaded.id == entry_id
    assert loaded.key == "doc:1"
    assert loaded.meta == {"file_name": "doc:1", "slug": "team", "base_version": 3}
    assert loaded.data_path.read_bytes() == b"hello"
    assert loaded.name == "doc:1"


def test_saves_in_a_row_supersede_the_pending_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"one")
    other = save(journal, "doc:2", b"other")
    second = save(journal, "doc:1", b"two")
    assert [e.id for e in journal.entries()] == [other, second]
    assert journal.get(first) is None
    assert not (journal.dir / f"{first}.data").exists()
    assert not (journal.dir / f"{first}.json").exists()
    assert [e.id for e in Journal(tmp_path).entries()] == [other, second]


def test_an_uploading_entry_is_not_superseded(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"one")
    journal.mark_uploading(first)
    second = save(journal, "doc:1", b"two")
    third = save(journal, "doc:1", b"three")
    # The one being sent stays; of the two saves since, only the last remains (in order).
    assert [e.id for e in journal.by_key("doc:1")] == [first, third]
    assert journal.get(second) is None


def test_a_failed_entry_is_never_dropped_by_a_new_save(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"one")
    journal.mark_failed(first, "403 Forbidden: locked")
    second = save(journal, "doc:1", b"two")
    assert [e.id for e in journal.by_key("doc:1")] == [first, second]
    failed = journal.get(first)
    assert failed is not None
    assert failed.display_state == "failed: 403 Forbidden: locked"
    assert failed.data_path.read_bytes() == b"one"


def test_state_changes_are_persisted(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry_id = save(journal, "new:team/p1/f1/a.txt", b"x")
    assert journal.mark_uploading(entry_id).attempts == 1
    journal.mark_pending(entry_id, 1234.5)
    assert journal.mark_uploading(entry_id).attempts == 2
    journal.mark_failed(entry_id, "413 Payload Too Large\n(limit)")
    journal.update_meta(entry_id, {"file_name": "b.txt"})
    journal.rekey(entry_id, "doc:42")
    loaded = Journal(tmp_path).get(entry_id)
    assert loaded is not None
    assert (loaded.state, loaded.attempts, loaded.reason) == (
        "failed",
        2,
        "413 Payload Too Large (limit)",
    )
    assert loaded.key == "doc:42"
    assert loaded.meta["file_name"] == "b.txt"
    assert loaded.not_before == 1234.5
    journal.retry_failed(entry_id)
    again = journal.get(entry_id)
    assert again is not None
    assert (again.state, again.reason) == ("pending", "")


def test_complete_and_discard_remove_record_and_content(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    a = save(journal, "doc:1", b"a")
    b = save(journal, "doc:2", b"b")
    journal.complete(a)
    journal.complete(a)  # already gone: nothing to do
    journal.discard(b)
    assert journal.entries() == []
    assert files(journal) == []
    with pytest.raises(JournalEntryNotFoundError):
        journal.discard(b)
    with pytest.raises(JournalEntryNotFoundError):
        journal.mark_failed(b, "x")


def test_complete_may_hand_the_content_over_instead_of_deleting_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    kept = save(journal, "doc:1", b"keep me")
    dropped = save(journal, "doc:2", b"drop me")
    kept_entry, dropped_entry = journal.get(kept), journal.get(dropped)
    assert kept_entry is not None and dropped_entry is not None
    elsewhere = tmp_path.parent / f"{tmp_path.name}-adopted.data"
    seen: list[Path] = []

    def take(path: Path) -> bool:
        seen.append(path)
        # The record is gone before the content is handed over.
        assert journal.get(kept) is None
        os.rename(path, elsewhere)
        return True

    journal.complete(kept, take)
    journal.complete(dropped, lambda path: False)
    assert seen == [kept_entry.data_path]
    assert elsewhere.read_bytes() == b"keep me"
    assert files(journal) == []
    assert Journal(tmp_path).entries() == []


def test_a_large_sent_content_is_deleted_off_the_callers_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    big = save(journal, "doc:1", os.urandom(20 << 20))
    entry = journal.get(big)
    assert entry is not None
    data = entry.data_path
    journal.complete(big)
    # Gone from the journal at once, whatever the deletion of its file still takes.
    assert journal.entries() == []
    assert Journal(tmp_path).entries() == []
    wait_until(lambda: not data.exists(), 30, "the sent file to be deleted", interval=0.01)
    assert files(journal) == []


def test_crash_leftovers_are_handled_safely(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    kept = save(journal, "doc:1", b"kept")
    lost = save(journal, "doc:2", b"lost content")
    broken = save(journal, "doc:3", b"broken record")
    d = journal.dir
    # A commit that died after moving the content but before the record was renamed in place:
    (d / "0000000099-aaaaaaaaaaaa.data").write_bytes(b"never acknowledged")
    (d / "0000000099-aaaaaaaaaaaa.json.tmp").write_bytes(b'{"format": 1, "id": "00000')
    # A file still being written when the process died.
    (d / "feedface.staging").write_bytes(b"unsaved")
    # A record whose content vanished, and a record damaged on disk.
    (d / f"{lost}.data").unlink()
    (d / f"{broken}.json").write_bytes(b"\x00\x00garbage")

    again = Journal(tmp_path)
    entries = {e.id: e for e in again.entries()}
    assert set(entries) == {kept, lost}
    assert entries[kept].state == "pending"
    assert entries[lost].state == "failed"
    assert "missing" in entries[lost].reason
    names = files(again)
    assert "0000000099-aaaaaaaaaaaa.data" not in names
    assert "0000000099-aaaaaaaaaaaa.json.tmp" not in names
    assert "feedface.staging" not in names
    # The damaged record is kept aside with its content, for a human to look at.
    assert f"{broken}.json.corrupt" in names
    assert (d / f"{broken}.data").read_bytes() == b"broken record"
    # New commits after the restart get ids ordered after the old ones.
    newer = save(again, "doc:1", b"newer")
    assert [e.id for e in again.by_key("doc:1")] == [newer]  # "kept" was pending: superseded
    assert again.entries()[-1].id == newer


def test_crash_between_record_and_supersede_keeps_both_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"one")
    record = json.loads((journal.dir / f"{first}.json").read_text())
    second = save(journal, "doc:1", b"two")
    # Put the superseded entry back, as if the process died before removing it.
    (journal.dir / f"{first}.json").write_text(json.dumps(record))
    (journal.dir / f"{first}.data").write_bytes(b"one")
    assert [e.id for e in Journal(tmp_path).by_key("doc:1")] == [first, second]


def test_commit_refuses_bad_input(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"x")
    with pytest.raises(JournalError):
        journal.commit("doc:1", {}, outside)
    staging = journal.staging_path()
    with pytest.raises(JournalError):
        journal.commit("doc:1", {"bad": object()}, staging)
    assert journal.entries() == []
    assert staging.exists()  # nothing was taken


def test_key_state_and_usage(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.key_state("doc:1") is None
    a = save(journal, "doc:1", b"aaa")
    assert journal.key_state("doc:1") == "pending"
    journal.mark_uploading(a)
    save(journal, "doc:1", b"bb")
    assert journal.key_state("doc:1") == "uploading"
    f = save(journal, "doc:2", b"c")
    journal.mark_failed(f, "403 Forbidden")
    assert journal.key_state("doc:2") == "failed: 403 Forbidden"
    # Bytes not on the server yet: the pending and the uploading save, not the failed one.
    assert journal.usage() == {
        "pending": 1, "uploading": 1, "failed": 1, "entries": 3, "bytes": 6, "pending_bytes": 5,
    }  # fmt: skip
    journal.complete(a)
    journal.discard(f)
    usage = journal.usage()
    assert (usage["entries"], usage["bytes"], usage["pending_bytes"]) == (1, 2, 2)


def test_journal_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    journal = Journal(root)
    staging = journal.staging_path()
    assert stat.S_IMODE(staging.stat().st_mode) == 0o600
    save(journal, "doc:1", b"x")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.dir.stat().st_mode) == 0o700
    for name in files(journal):
        assert stat.S_IMODE((journal.dir / name).stat().st_mode) == 0o600, name


async def test_commit_may_run_in_a_worker_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    def commit(i: int) -> str:
        staging = journal.staging_path()
        staging.write_bytes(b"x" * i)
        return journal.commit(f"doc:{i % 3}", {}, staging).id

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(trio.to_thread.run_sync, commit, i)
    entries = journal.entries()
    # One pending entry per key survives, and records on disk agree with memory.
    assert sorted(e.key for e in entries) == ["doc:0", "doc:1", "doc:2"]
    assert [e.id for e in Journal(tmp_path).entries()] == [e.id for e in entries]


# -- at scale ------------------------------------------------------------------------------------


def without_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of commits in a test: the order of operations stays, the waits for the disk go."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr("bimfs.cache.journal.fsync_dir", lambda path: None)


class CountingKey(str):
    """A key that counts how often it is compared: how many entries an operation looked at."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        CountingKey.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_work_on_one_key_does_not_grow_with_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_fsync(monkeypatch)
    journal = Journal(tmp_path)
    keys = [CountingKey(f"doc:{i}") for i in range(3000)]
    for key in keys:
        save(journal, key, b"x")
    probe = keys[1234]
    CountingKey.compared = 0
    newer = save(journal, probe, b"newer")  # supersedes the pending save of that key only
    assert [e.id for e in journal.by_key(probe)] == [newer]
    assert journal.key_state(probe) == "pending"
    journal.mark_failed(newer, "403 Forbidden")
    assert journal.key_state(probe) == "failed: 403 Forbidden"
    assert journal.usage() == {
        "pending": 2999, "uploading": 0, "failed": 1, "entries": 3000, "bytes": 2999 + 5,
        "pending_bytes": 2999,
    }  # fmt: skip
    assert journal.count("pending", "uploading") == 2999
    assert CountingKey.compared < 20


def test_pages_list_each_entry_once_while_entries_come_and_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_fsync(monkeypatch)
    journal = Journal(tmp_path)
    ids = [save(journal, f"doc:{i}", b"x") for i in range(1000)]
    kept = set(ids)
    seen: list[str] = []
    cursor = 0
    while page := journal.after(cursor, 64):
        seen.extend(e.id for e in page)
        cursor = page[-1].seq
        # Meanwhile uploads finish (behind and ahead of the page) and new saves arrive.
        for n in (len(seen) // 2, len(seen) + 100):
            gone = ids[min(n, len(ids) - 1)]
            if gone in kept:
                journal.complete(gone)
                kept.discard(gone)
        if len(seen) < len(ids):
            save(journal, f"new:{len(seen)}", b"y")
    assert len(seen) == len(set(seen))  # nothing twice
    assert kept <= set(seen)  # everything that stayed was listed
    assert [e.id for e in journal.after(0, 10**6)] == [e.id for e in journal.entries()]
    assert journal.after(journal.last_seq(), 10) == []


def test_entries_by_state_in_the_order_they_got_there(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    a, b, c = (save(journal, f"doc:{i}", b"x") for i in range(3))
    journal.mark_failed(c, "403")
    journal.mark_failed(a, "413")
    assert [e.id for e in journal.with_state("failed")] == [c, a]
    assert [e.id for e in journal.with_state("pending")] == [b]
    journal.mark_uploading(b)
    assert [e.id for e in journal.with_state("uploading", limit=5)] == [b]
    assert journal.with_state("pending") == []
    assert [e.id for e in journal.with_state("failed", limit=1)] == [c]


def test_changes_name_the_keys_touched_and_the_entries_removed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"x")
    assert journal.take_changes() == (set(), set())  # recording starts with the first call
    second = save(journal, "doc:1", b"y")  # supersedes the first
    journal.rekey(second, "doc:2")
    assert journal.take_changes() == ({"doc:1", "doc:2"}, {first})
    journal.update_meta(second, {"file_name": "renamed"})  # no change for the scheduler
    assert journal.take_changes() == (set(), set())
    journal.mark_uploading(second)
    journal.complete(second)
    assert journal.take_changes() == ({"doc:2"}, {second})
    assert journal.keys() == []


def test_records_sharing_a_place_in_the_order_are_both_kept(tmp_path: Path) -> None:
    """A journal put together from copies may hold two records with one ``seq``."""
    journal = Journal(tmp_path)
    first = save(journal, "doc:1", b"one")
    second = save(journal, "doc:2", b"two")
    record = json.loads((journal.dir / f"{second}.json").read_text())
    twin = f"{record['seq']:010d}-ffffffffffff"
    record.update(id=twin, key="doc:3", data=f"{twin}.data")
    (journal.dir / f"{twin}.json").write_text(json.dumps(record))
    (journal.dir / f"{twin}.data").write_bytes(b"two")
    again = Journal(tmp_path)
    assert [e.id for e in again.entries()] == [first, second, twin]
    assert len({e.seq for e in again.entries()}) == 3
    assert [e.id for e in again.after(again.get(second).seq, 10)] == [twin]  # type: ignore[union-attr]
    assert [e.id for e in Journal(tmp_path).entries()] == [first, second, twin]
