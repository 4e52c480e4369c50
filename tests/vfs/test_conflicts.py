"""``bimfs.vfs.conflicts``: the list of conflict copies kept in the cache dir."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bimfs.vfs.conflicts import Conflicts, conflict_name


def test_a_fresh_cache_dir_has_no_conflicts_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        conflicts = Conflicts(tmp_path)
    assert conflicts.message("any") is None
    assert caplog.records == []


def test_kept_across_restarts_and_unreadable_lists_start_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Conflicts(tmp_path).add("a1", "team/p/x (conflict).txt", "conflict: based on v1")
    assert Conflicts(tmp_path).message("a1") == "conflict: based on v1"
    (tmp_path / "conflicts.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert Conflicts(tmp_path).message("a1") is None
    assert "unreadable" in caplog.text


def test_conflict_name() -> None:
    assert conflict_name("plan.pdf", "demo", 0).startswith("plan (conflict 19")
    assert conflict_name("plan.pdf", "demo", 0).endswith(" demo).pdf")
