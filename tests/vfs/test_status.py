"""The status a mount publishes: a bounded summary and pages that list every save once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bimfs.cache.journal import Journal
from bimfs.cache.uploader import Uploader
from bimfs.vfs import status

XATTR_SIZE_MAX = 65536


async def never(entry: Any, progress: Any) -> None:
    raise AssertionError("nothing is uploaded here")


def journal_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[str]) -> Journal:
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr("bimfs.cache.journal.fsync_dir", lambda path: None)
    journal = Journal(tmp_path)
    for i, path in enumerate(paths):
        staging = journal.staging_path()
        staging.write_bytes(b"%d" % i)
        journal.commit(f"new:{i}", {"path": path, "file_name": path.rsplit("/", 1)[-1]}, staging)
    return journal


def summary_of(journal: Journal) -> dict[str, Any]:
    return status.summary(
        about={"mountpoint": "/mnt"},
        journal=journal,
        uploader=Uploader(journal, never),
        streams=[],
        cache={"bytes_used": 0},
    )


def all_pages(journal: Journal) -> list[bytes]:
    uploader = Uploader(journal, never)
    pages = []
    after: int | None = 0
    while after is not None:
        page = status.page(journal, uploader, after)
        pages.append(page)
        after = json.loads(page)["next"]
    return pages


async def test_summary_and_pages_of_thousands_of_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [f"/team/Project/folder/file-{i:05d}.ifc" for i in range(5000)]
    journal = journal_of(tmp_path, monkeypatch, paths)
    for entry in journal.after(0, 30)[5:30]:
        journal.mark_failed(entry.id, "403 Forbidden: locked")

    summary = summary_of(journal)
    assert len(status.encode(summary)) < status.PAGE_BYTES
    assert summary["pending"] == 4975
    assert summary["counts"] == {
        "pending": 4975, "uploading": 0, "failed": 25, "entries": 5000,
        "bytes": sum(len(b"%d" % i) for i in range(5000)),
        "pending_bytes": sum(len(b"%d" % i) for i in range(5000) if not 5 <= i < 30),
    }  # fmt: skip
    assert [u["path"] for u in summary["uploads"]] == paths[:20]
    assert [f["path"] for f in summary["failed"]] == paths[5:25]
    assert summary["failed"][0]["reason"] == "403 Forbidden: locked"
    assert summary["truncated"] is True
    assert summary["transfers"] == []

    pages = all_pages(journal)
    assert len(pages) > 10
    assert all(len(page) <= status.PAGE_BYTES for page in pages)
    listed = [u for page in pages for u in json.loads(page)["uploads"]]
    assert [u["path"] for u in listed] == paths
    assert [u["state"] for u in listed[:30]] == ["pending"] * 5 + ["failed"] * 25
    first = listed[0]
    assert first["file_name"] == "file-00000.ifc"
    assert first["size"] == 1
    assert first["next_attempt"] is not None


async def test_a_small_journal_is_listed_whole_in_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = journal_of(tmp_path, monkeypatch, ["/t/p/a.txt", "/t/p/b.txt"])
    summary = summary_of(journal)
    assert summary["truncated"] is False
    assert [u["path"] for u in summary["uploads"]] == ["/t/p/a.txt", "/t/p/b.txt"]
    assert json.loads(status.page(journal, Uploader(journal, never), 0))["next"] is None
    empty = Journal(tmp_path / "empty")
    assert json.loads(status.page(empty, Uploader(empty, never), 0)) == {
        "uploads": [],
        "next": None,
    }


async def test_long_names_in_any_script_stay_within_the_attribute_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = "/".join(["Ünterordner-" + "🏗" * 40] * 60)  # far beyond any path a mount shows
    paths = [f"/team/{deep}/{i}-" + "ä" * 200 for i in range(300)]
    journal = journal_of(tmp_path, monkeypatch, paths)
    summary = status.encode(summary_of(journal))
    assert len(summary) < XATTR_SIZE_MAX
    pages = all_pages(journal)
    assert all(len(page) < XATTR_SIZE_MAX for page in pages)
    listed = [u for page in pages for u in json.loads(page)["uploads"]]
    assert len(listed) == 300
    assert all(len(u["path"]) == status.TEXT_LIMIT and u["path"].endswith("…") for u in listed)


def test_page_names() -> None:
    assert status.page_after("user.bimfs.status.0") == 0
    assert status.page_after("user.bimfs.status.123456") == 123456
    for name in (
        "user.bimfs.status",
        "user.bimfs.status.",
        "user.bimfs.status.-1",
        "user.bimfs.status.1.2",
        "user.bimfs.status.x",
        "user.bimfs.status.\u0663",  # a digit, but not an ASCII one
        "user.bimfs.status." + "9" * 40,
        "user.bimfs.statusx.1",
    ):
        assert status.page_after(name) is None, name


def test_sync_duration() -> None:
    assert status.sync_duration(b"300", 30.0) == 300.0
    assert status.sync_duration(b"2.5\n", 30.0) == 2.5
    for value in (b"", b"1x", b"inf", b"nan", b"-5", b"0", b"\xff"):
        assert status.sync_duration(value, 30.0) == 30.0, value
