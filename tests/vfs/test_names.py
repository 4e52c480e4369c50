"""Safe and stable names (INTERFACES §1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bimfs.vfs.names import (
    NAME_MAX,
    LocalOnlyMatcher,
    NameRequest,
    assign_names,
    is_backup_name,
    safe_name,
    split_ext,
    version_file_name,
)


def test_version_file_names() -> None:
    assert version_file_name("plan.pdf", 3) == "plan.v3.pdf"
    assert version_file_name("archive.tar.gz", 2) == "archive.tar.v2.gz"
    assert version_file_name("README", 2) == "README.v2"
    assert version_file_name(".bashrc", 1) == ".bashrc.v1"


def test_split_ext() -> None:
    assert split_ext("a.b.c") == ("a.b", ".c")
    assert split_ext("noext") == ("noext", "")
    assert split_ext("trailingdot.") == ("trailingdot.", "")


def test_safe_name_rules() -> None:
    assert safe_name("a/b") == "a\u2215b"
    assert safe_name("bad\x00\x07name\x7f") == "badname"
    assert safe_name("") != ""
    assert safe_name("\x01") != ""
    assert safe_name(".") not in (".", "..")
    assert safe_name("..") not in (".", "..")
    long = "é" * 300 + ".pdf"
    short = safe_name(long)
    assert len(short.encode()) <= NAME_MAX and short.endswith(".pdf")


def test_duplicates_oldest_keeps_the_name() -> None:
    names = assign_names(
        [
            NameRequest("b", "plan.pdf", 20.0, "bbbbbbbb-2222"),
            NameRequest("a", "plan.pdf", 10.0, "6cea110a-88f4"),
            NameRequest("v", "versions", 0.0, "12345678-9999"),
        ],
        reserved=["versions"],
    )
    assert names["a"] == "plan.pdf"
    assert names["b"] == "plan (bbbbbbbb).pdf"
    assert names["v"] == "versions (12345678)"


@given(st.lists(st.tuples(st.text(max_size=300), st.floats(0, 1e9), st.uuids()), max_size=30))
def test_names_unique_safe_and_order_independent(entries: list) -> None:  # type: ignore[type-arg]
    requests = [NameRequest(str(u), raw, t, str(u)) for raw, t, u in entries]
    forward = assign_names(requests, ["versions"])
    backward = assign_names(list(reversed(requests)), ["versions"])
    assert forward == backward
    values = list(forward.values())
    assert len(values) == len(set(values))
    for name in values:
        assert name not in ("", ".", "..", "versions")
        assert "/" not in name and "\x00" not in name
        assert len(name.encode()) <= NAME_MAX


def test_local_only_patterns() -> None:
    match = LocalOnlyMatcher(["*.tmpx"])
    for name in (
        ".plan.txt.swp",
        ".x.swx",
        "4913",
        "plan.txt~",
        ".~lock.a.odt#",
        "~$a.docx",
        ".goutputstream-ABC",
        ".DS_Store",
        "Thumbs.db",
        "THUMBS.DB",
        "desktop.ini",
        "a.tmpx",
        "~WRL0001.tmp",
        "~WRD0000.tmp",
        "~wrf0003.TMP",
        "~RF1a2b.TMP",
        "3E4D1C00.tmp",
        "3e4d1c00.TMP",
        "ppt5A1B.tmp",
        "Ground Floor.dwl",
        "Ground Floor.dwl2",
    ):
        assert match(name), name
    for name in (
        "plan.txt",
        "sedAbc123",
        "report.pdf",
        "x.swp.txt",
        "5B2A1F00",  # Excel's new content before its rename: an unsent new file
        "3E4D1C0.tmp",
        "3E4D1C00X.tmp",
        "20240501.pdf",
        "Ground Floor.dwg",
    ):
        assert not match(name), name


@pytest.mark.parametrize(
    ("name", "new", "backup"),
    [
        ("Model.dwg", "Model.bak", True),
        ("Model.dwg", "Model.BAK", True),
        ("MODEL.DWG", "MODEL.BAK", True),
        ("Model.dwg", "Model.dwg.bak", True),
        ("Model.dwg", "Model~.dwg", True),
        ("README", "README.bak", True),
        ("Model.dwg", "model.bak", False),  # another stem
        ("Model.dwg", "Other.bak", False),
        ("Model.bak", "Model.bak", False),
        ("Model.dwg", "Model.dwg", False),
        ("README", "README~", False),  # vim's backup: a local-only name already
        ("Model.dwg", "Model.bak2", False),
        ("Tower.rvt", "Tower.0001.rvt", True),
        ("Tower.rvt", "Tower.2025.rvt", True),  # a rename after all unless a save follows
        ("Tower.rvt", "Tower.001.rvt", False),
        ("Tower.rvt", "Tower.0001.rfa", False),
        ("Tower.rvt", "Other.0001.rvt", False),
        ("Tower.rvt", "Tower.٠٠٠١.rvt", False),  # digits, but not ASCII ones
        ("README", "README.0001", False),
    ],
)
def test_backup_names(name: str, new: str, backup: bool) -> None:
    assert is_backup_name(name, new) is backup
