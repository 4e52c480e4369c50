"""A real mount against a hostile server: bad entries in a listing, answers that are not JSON,
and a token rotated in the token file while mounted."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.support.emulator import Emulator
from tests.support.mount import Mount

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"
OFFICE = "Office Building"
DOCS = "GET /v2/{slug}/projects/{pid}/attachments"
FOLDERS = "GET /v2/{slug}/projects/{pid}/structures"
DIR_TTL = ("--dir-ttl", "0.3")


def ls(path: os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ls", "-la", str(path)], capture_output=True, text=True, timeout=60)


def test_a_listing_with_hostile_entries_shows_the_good_ones(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    emulator.hostile_answers(
        {"route": DOCS, "where": {"fileName": "costs.csv"}, "set": {"size": 2**63}},
        {"route": DOCS, "where": {"fileName": "README"}, "set": {"size": "-1"}},
        {"route": DOCS, "where": {"fileName": "plan.pdf"}, "set": {"id": None}},
        {"route": DOCS, "where": {"id": notes["id"]}, "set": {"fileName": "\udc80notes.txt"}},
        {"route": DOCS, "append": [7, None, ["x"]]},
        {"route": FOLDERS, "where": {"name": "Details"}, "set": {"id": 5}},
    )
    m = mount_factory(emulator, *DIR_TTL)
    project = m.p(SLUG, OFFICE)
    for _ in range(3):  # listed again and again: the same entries, each reported once
        result = ls(project)
        assert result.returncode == 0, result.stderr
    names = set(os.listdir(project))
    assert "site-photo.png" in names and "model.ifc" in names and "Drawings" in names
    assert not names & {"costs.csv", "README", "plan.pdf", "notes.txt"}
    assert "\ufffdnotes.txt" in names
    # A folder node of the wrong shape: its documents show in the project directory.
    assert {"detail-01.png", "detail-02.txt"} <= names
    assert "Details" not in os.listdir(project / "Drawings")
    # The repaired name reaches the document: the same bytes as on the server.
    assert (project / "\ufffdnotes.txt").read_bytes() == emulator.download(SLUG, notes["id"])
    assert (project / "\ufffdnotes.txt").stat().st_size == notes["size"]
    # A save of it is a new version of the same document. A save renames nothing: the
    # version keeps the name the server's own answer for the document gives (only the
    # listing is hostile here).
    with open(project / "\ufffdnotes.txt", "ab") as fh:
        fh.write(b"one more line\n")
    m.wait_synced()
    versions = emulator.versions(SLUG, notes["id"])
    assert len(versions) == notes["version"] + 1
    assert versions[-1]["fileName"] == "notes.txt"
    assert emulator.download(SLUG, notes["id"]).endswith(b"one more line\n")
    skipped = [line for line in m.log().splitlines() if "is skipped" in line]
    assert len(skipped) == 7, m.log()
    assert len([line for line in m.log().splitlines() if "U+FFFD" in line]) == 1
    assert "Traceback" not in m.log()
    # The server answers properly again: everything is back under its own name.
    emulator.hostile_answers()
    assert {"costs.csv", "README", "plan.pdf", "notes.txt"} <= set(_eventually(project))


def _eventually(path: os.PathLike[str]) -> list[str]:
    from tests.support.processes import wait_until

    found: list[str] = []

    def listed() -> bool:
        found[:] = os.listdir(path)
        return "plan.pdf" in found

    wait_until(listed, 10.0, f"plan.pdf listed in {path}")
    return found


@pytest.mark.parametrize("body", ["<html>bad gateway</html>", '[{"id": "x", "fileN', "{}"])
def test_an_answer_that_is_not_a_list_is_eproto_and_the_mount_lives(
    emulator: Emulator, mount_factory: Callable[..., Mount], body: str
) -> None:
    emulator.hostile_answers({"route": DOCS, "body": body})
    m = mount_factory(emulator, *DIR_TTL)
    project = m.p(SLUG, OFFICE)
    with pytest.raises(OSError) as info:
        os.listdir(project)
    assert info.value.errno == errno.EPROTO
    result = ls(project)
    assert result.returncode != 0 and "Protocol error" in result.stderr
    assert os.listdir(m.p(SLUG))  # the rest of the mount answers
    lines = [line for line in m.log().splitlines() if DOCS.split(" ", 1)[1] in line]
    assert lines and all("WARNING" in line for line in lines), m.log()
    assert "Traceback" not in m.log()
    emulator.hostile_answers()
    assert "plan.pdf" in _eventually(project)


def test_a_token_rotated_in_the_token_file_is_used_without_remounting(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    fixed = emulator.token
    first = emulator.issue_token()
    emulator.token = first  # the mount's token file gets an expiring token
    try:
        m = mount_factory(emulator, *DIR_TTL)
    finally:
        emulator.token = fixed
    assert "plan.pdf" in os.listdir(m.p(SLUG, OFFICE))
    emulator.expire_tokens()
    # Expired and not rotated yet: refused (the file was read again, same token).
    with pytest.raises(PermissionError):
        os.listdir(m.p(SLUG, "Residential Complex"))
    with pytest.raises(PermissionError):
        (m.p(SLUG, "Residential Complex", "budget.xlsx")).read_bytes()
    rejected = [line for line in m.log().splitlines() if "write a new one" in line]
    assert len(rejected) == 1 and "WARNING" in rejected[0], m.log()
    second = emulator.issue_token()
    m.token_file.write_text(second + "\n")
    assert "budget.xlsx" in os.listdir(m.p(SLUG, "Residential Complex"))
    tender = emulator.project_id("acme-build", "Tender Documents")
    spec = emulator.attachment("acme-build", tender, "specification.txt")
    data = (m.p("acme-build", "Tender Documents", "specification.txt")).read_bytes()
    assert data == emulator.download("acme-build", spec["id"])
    log = m.log()
    assert "using the new token of token file" in log
    assert first not in log and second not in log and fixed not in log
