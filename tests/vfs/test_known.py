"""The last known tree on disk: what it keeps, and what it ignores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bimfs.api.models import Attachment, FolderNode, Project, Rights, Team, User
from bimfs.vfs import known as known_module
from bimfs.vfs.known import KnownTree, ProjectListing

API = "https://api.example.test/v2"


def listing() -> ProjectListing:
    odd = Attachment(
        id="a1", file_name="plan \udc80.pdf", size=2**40, version=7, tag="x",
        creator=User("u1", "one@example.test", "One"), rights=Rights(update=False),
        changed=1_700_000_000.5,
    )  # fmt: skip
    return ProjectListing(
        docs={"a1": odd, "a2": Attachment(id="a2", file_name="b.txt")},
        folders={"f1": FolderNode(id="f1", name="Plans", type="DocumentFolder", parent=None)},
        doc_folder={"a1": "f1"},
        fetched_at=0.0,
    )


def test_round_trip(tmp_path: Path) -> None:
    known = KnownTree(tmp_path, API)
    teams = [Team(id="t1", slug="acme", name="Acme", total_storage=10, used_storage=None)]
    projects = [Project(id="p1", name="Site", team_slug="acme", has_write_access=False)]
    known.write([(("teams",), teams), (("projects", "acme"), projects)])
    known.write([(("listing", "acme", "p1"), listing())])
    assert known.load(("teams",)) == teams
    assert known.load(("projects", "acme")) == projects
    loaded = known.load(("listing", "acme", "p1"))
    assert isinstance(loaded, ProjectListing)
    assert loaded.docs == listing().docs and loaded.folders == listing().folders
    assert loaded.doc_folder == {"a1": "f1"} and loaded.fetched_at > 0
    assert known.load(("listing", "acme", "p2")) is None
    # Versions are never kept.
    known.write([(("versions", "acme", "a1"), [])])
    assert known.load(("versions", "acme", "a1")) is None


def test_another_api_or_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    KnownTree(tmp_path, API).write([(("teams",), [Team(id="t1", slug="acme", name="Acme")])])
    assert KnownTree(tmp_path, "https://other.example.test/v2").load(("teams",)) is None
    [path] = (tmp_path / "known").iterdir()
    data = json.loads(path.read_text())
    data["value"] = [["only an id"]]
    path.write_text(json.dumps(data))
    assert KnownTree(tmp_path, API).load(("teams",)) is None
    path.write_text('{"format": 1, "api_url": "')
    assert KnownTree(tmp_path, API).load(("teams",)) is None


async def test_changes_are_written_soon_and_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known_module, "FLUSH_DELAY", 0.01)
    known = KnownTree(tmp_path, API)
    teams = [Team(id="t1", slug="acme", name="Acme")]
    async with trio.open_nursery() as nursery:
        await nursery.start(known.run)
        known.changed(("teams",), teams)
        for _ in range(1000):  # written within seconds (a thread writes it)
            await trio.sleep(0.01)
            if KnownTree(tmp_path, API).load(("teams",)) == teams:
                break
        assert KnownTree(tmp_path, API).load(("teams",)) == teams
        current = listing()
        known.changed(("listing", "acme", "p1"), current)
        current.docs.pop("a2")  # a change after the mark is what gets written
        nursery.cancel_scope.cancel()
    kept = KnownTree(tmp_path, API).load(("listing", "acme", "p1"))
    assert kept is not None and sorted(kept.docs) == ["a1"]
