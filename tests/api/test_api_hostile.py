"""Hostile server answers over real HTTP (the emulator's ``answers`` fault): one bad entry of a
list is skipped or repaired and reported once; a body that is not JSON is a protocol error."""

from __future__ import annotations

import io
import logging

import pytest

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.entries import MAX_SIZE
from bimfs.api.errors import ProtocolError
from tests.support.emulator import Emulator, EmulatorError

SLUG = "bimfs-demo"
OFFICE = "Office Building"
DOCS = "GET /v2/{slug}/projects/{pid}/attachments"
VERSIONS = "GET /v2/{slug}/attachments/{id}/versions"
FOLDERS = "GET /v2/{slug}/projects/{pid}/structures"
TEAMS = "GET /v2/teams"
PROJECTS = "GET /v2/{slug}/projects"


def connect(emu: Emulator) -> BimplusClient:
    return BimplusClient(emu.url, StaticToken(emu.token), backoff_base=0.01, backoff_cap=0.05)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_bad_entries_of_the_document_list_are_skipped_once(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    expected = {d["fileName"] for d in emulator.attachments(SLUG, pid)}
    emulator.hostile_answers(
        {"route": DOCS, "where": {"fileName": "costs.csv"}, "set": {"size": 2**63}},
        {"route": DOCS, "where": {"fileName": "README"}, "set": {"size": -5}},
        {"route": DOCS, "where": {"fileName": "model.ifc"}, "set": {"size": "large"}},
        {"route": DOCS, "where": {"fileName": "plan.pdf"}, "drop": ["id"]},
        {"route": DOCS, "where": {"fileName": "notes.txt"}, "set": {"id": 17}},
        {"route": DOCS, "append": [42, None, [], "text", {"fileName": "x"}]},
    )
    caplog.set_level(logging.WARNING, logger="bimfs.api")
    async with connect(emulator) as client:
        docs = await client.list_attachments(SLUG, pid)
        first = warnings(caplog)
        again = await client.list_attachments(SLUG, pid)
    bad = {"costs.csv", "README", "model.ifc", "plan.pdf", "notes.txt"}
    assert {d.file_name for d in docs} == expected - bad
    assert [d.id for d in again] == [d.id for d in docs]
    # One line per bad entry (5 changed, 5 appended), none at the second listing.
    assert len(first) == 10, first
    assert all("is skipped" in line and DOCS in line for line in first)
    assert warnings(caplog) == first
    assert any("size 9223372036854775808 is not a byte count" in line for line in first)
    assert any("size -5" in line for line in first) and any("'large'" in line for line in first)


async def test_a_lone_surrogate_name_is_repaired_and_stays_reachable(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    emulator.hostile_answers(
        {"route": DOCS, "where": {"id": notes["id"]}, "set": {"fileName": "\udc80notes.txt"}},
        {"route": VERSIONS, "set": {"fileName": "\ud800v.txt", "name": "\udfff"}},
    )
    caplog.set_level(logging.WARNING, logger="bimfs.api")
    async with connect(emulator) as client:
        docs = await client.list_attachments(SLUG, pid)
        await client.list_attachments(SLUG, pid)
        versions = await client.list_versions(SLUG, notes["id"])
        content = io.BytesIO()
        await client.download_to(SLUG, notes["id"], content)
    repaired = [d for d in docs if d.id == notes["id"]]
    assert [d.file_name for d in repaired] == ["\ufffdnotes.txt"]
    assert repaired[0].file_name.encode("utf-8")
    assert [v.file_name for v in versions] == ["\ufffdv.txt"] * len(versions) and versions
    assert all(v.name == "\ufffd" for v in versions)
    assert content.getvalue() == emulator.download(SLUG, notes["id"])
    lines = [line for line in warnings(caplog) if "fileName" in line]
    assert len([line for line in lines if DOCS in line]) == 1, lines
    assert "U+FFFD" in lines[0] and "\udc80" not in lines[0]


async def test_bad_teams_projects_and_folders_are_skipped(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    emulator.hostile_answers(
        {"route": TEAMS, "where": {"slug": "acme-build"}, "set": {"slug": "\udc80"}},
        {"route": TEAMS, "where": {"slug": SLUG}, "set": {"totalStorage": 2**64}},
        {"route": TEAMS, "append": [None]},
        {"route": PROJECTS, "where": {"name": "Empty Project"}, "set": {"id": None}},
        {"route": PROJECTS, "where": {"name": "Archive 2019"}, "set": {"name": "A\udc80"}},
        {"route": PROJECTS, "append": [[1, 2]]},
        {"route": FOLDERS, "where": {"name": "Details"}, "set": {"id": ["x"]}},
        {"route": FOLDERS, "where": {"name": "Empty Folder"}, "set": {"name": "E\udc81"}},
        {"route": FOLDERS, "append": ["folder"]},
    )
    caplog.set_level(logging.WARNING, logger="bimfs.api")
    async with connect(emulator) as client:
        teams = await client.get_teams()
        projects = await client.get_projects(SLUG)
        folders = await client.get_folders(SLUG, pid)
    assert [(t.slug, t.total_storage) for t in teams] == [(SLUG, None)]
    names = {p.name for p in projects}
    assert "Empty Project" not in names and "A\ufffd" in names and OFFICE in names
    top = {f.name: f for f in folders}
    assert set(top) == {"Drawings", "E\ufffd"}
    assert [c.name for c in top["Drawings"].children if c.is_folder] == []
    assert {c.name for c in top["Drawings"].children} == {"ground-floor.pdf", "first-floor.pdf"}
    assert len(warnings(caplog)) == 8, warnings(caplog)


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>proxy error</body></html>",
        '[{"id": "a", "fileName": "x.txt", "si',
        '{"id": "a"}',
        "42",
        "[" * 100_000 + "]" * 100_000,
        "",
    ],
    ids=["html", "truncated", "object", "number", "deep", "empty"],
)
async def test_a_body_that_is_not_a_list_is_a_protocol_error(emulator: Emulator, body: str) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    emulator.hostile_answers({"route": DOCS, "body": body})
    async with connect(emulator) as client:
        with pytest.raises(ProtocolError) as info:
            await client.list_attachments(SLUG, pid)
        assert info.value.call == DOCS
        assert len(str(info.value)) < 400
        emulator.hostile_answers()
        assert await client.list_attachments(SLUG, pid)


def test_bad_rules_are_refused(emulator: Emulator) -> None:
    for rules in ({"route": 1}, {"route": DOCS, "set": []}, {"route": DOCS, "colour": "red"}):
        with pytest.raises(EmulatorError) as info:
            emulator.hostile_answers(rules)
        assert info.value.status == 400
    emulator.hostile_answers({"route": DOCS, "set": {"size": MAX_SIZE}})
    assert emulator.admin("GET", "/faults")["answers"][0]["set"] == {"size": MAX_SIZE}
