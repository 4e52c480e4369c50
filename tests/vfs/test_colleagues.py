"""Two people, one document; crashes between the server storing a save and its answer.

In-process ``Filesystem`` instances (each its own cache dir, as two mounts are) against the
emulator process, checked through its API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from tests.support.emulator import Emulator
from tests.vfs.conftest import SLUG, Harness, open_harness

NEW_VERSION = "POST /v2/{slug}/attachments/{id}/versions"
CREATES = (
    "POST /v2/{slug}/projects/{pid}/attachments",
    "POST /v2/{slug}/objects/{pid}/attachments",
)


async def append(harness: Harness, name: str, line: bytes) -> None:
    """What `echo line >> name` does: open for appending, write at the end, close."""
    ino = await harness.ino(SLUG, harness.project["name"], name)
    size = (await harness.fs.getattr(ino)).size
    fh, _ = await harness.fs.open(ino, os.O_WRONLY | os.O_APPEND)
    await harness.fs.write(fh, size, line)
    await harness.fs.flush(fh)
    await harness.fs.release(fh)


async def read(harness: Harness, *names: str) -> bytes:
    ino = await harness.ino(SLUG, harness.project["name"], *names)
    fh, _ = await harness.fs.open(ino, os.O_RDONLY)
    try:
        return await harness.fs.read(fh, 0, 1 << 20)
    finally:
        await harness.fs.release(fh)


def project(emulator: Emulator, name: str) -> dict[str, Any]:
    made: dict[str, Any] = emulator.admin(
        "POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True}
    )
    return made


async def test_two_saves_of_one_version_keep_both(emulator: Emulator, tmp_path: Path) -> None:
    """Two mounts append a line to the same version of notes.txt: the second to upload does
    not bury the first; its save becomes a conflict copy, says so and is listed."""
    proj = project(emulator, "notes")
    doc = emulator.upload(SLUG, proj["id"], "notes.txt", b"start\n")
    async with (
        open_harness(emulator, tmp_path, proj, cache="a", write_back_delay=60) as a,
        open_harness(emulator, tmp_path, proj, cache="b", write_back_delay=60) as b,
    ):
        await append(a, "notes.txt", b"from a\n")
        await append(b, "notes.txt", b"from b\n")
        assert await a.fs.drain(30)
        assert await b.fs.drain(30)
        versions = emulator.versions(SLUG, doc["id"])
        assert [v["version"] for v in versions] == [1, 2]
        assert emulator.download(SLUG, doc["id"]) == b"start\nfrom a\n"
        docs = b.docs()
        copies = [n for n in docs if n.startswith("notes (conflict ")]
        assert len(copies) == 1 and copies[0].endswith(" demo).txt"), list(docs)
        copy = copies[0]
        assert emulator.download(SLUG, docs[copy]["id"]) == b"start\nfrom b\n"
        # B sees their version at the name, and its own save next to it.
        assert await read(b, "notes.txt") == b"start\nfrom a\n"
        assert await read(b, copy) == b"start\nfrom b\n"
        ino = await b.ino(SLUG, "notes", copy)
        state = (await b.fs.getxattr(ino, "user.bimfs.state")).decode()
        assert state == "conflict: based on v1, server had v2 by demo@bimfs.test"
        assert b.fs.status()["conflicts"][0]["state"] == state
        # A sees nothing odd; its file is synced.
        ino_a = await a.ino(SLUG, "notes", "notes.txt")
        assert await a.fs.getxattr(ino_a, "user.bimfs.state") == b"synced"


async def test_newest_wins_when_asked(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proj = project(emulator, "nw")
    doc = emulator.upload(SLUG, proj["id"], "notes.txt", b"start\n")
    async with open_harness(
        emulator, tmp_path, proj, write_back_delay=60, on_conflict="newest-wins"
    ) as b:
        ino = (await b.fs.lookup(await b.project_ino(), "notes.txt")).ino
        fh, _ = await b.fs.open(ino, os.O_WRONLY | os.O_APPEND)
        await b.fs.write(fh, 6, b"ours\n")  # our copy: version 1 and our line
        emulator.new_version(SLUG, doc["id"], "notes.txt", b"start\ntheirs\n")
        await b.fs.release(fh)
        assert await b.fs.drain(30)
    assert [v["version"] for v in emulator.versions(SLUG, doc["id"])] == [1, 2, 3]
    assert emulator.download(SLUG, doc["id"]) == b"start\nours\n"
    assert list(b.docs()) == ["notes.txt"]
    assert any("based on v1, server had v2" in r.getMessage() for r in caplog.records)


async def test_own_saves_one_after_another_are_no_conflict(harness: Harness) -> None:
    """A second save made while the first is still uploading builds on it."""
    doc = harness.emu.upload(SLUG, harness.project["id"], "r.txt", b"0")
    pino = await harness.project_ino()
    ino = (await harness.fs.lookup(pino, "r.txt")).ino
    for content in (b"one", b"two", b"three"):
        fh, _ = await harness.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        await harness.fs.write(fh, 0, content)
        await harness.fs.release(fh)
        await trio.lowlevel.checkpoint()
    assert await harness.fs.drain(30)
    assert list(harness.docs()) == ["r.txt"]
    assert harness.emu.download(SLUG, doc["id"]) == b"three"


async def test_document_deleted_on_the_server_while_edited(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The edit wins over the delete: the save becomes a new document under its name."""
    proj = project(emulator, "del")
    doc = emulator.upload(SLUG, proj["id"], "plan.txt", b"v1")
    async with open_harness(emulator, tmp_path, proj, write_back_delay=60) as h:
        pino = await h.project_ino()
        ino = (await h.fs.lookup(pino, "plan.txt")).ino
        emulator.api("DELETE", f"/{SLUG}/attachments/{doc['id']}")
        fh, _ = await h.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        await h.fs.write(fh, 0, b"edited")
        await h.fs.release(fh)
        assert await h.fs.drain(30)
        docs = h.docs()
        assert list(docs) == ["plan.txt"] and docs["plan.txt"]["id"] != doc["id"]
        assert emulator.download(SLUG, docs["plan.txt"]["id"]) == b"edited"
        assert await read(h, "plan.txt") == b"edited"
        assert await h.fs.getxattr(ino, "user.bimplus.id") == docs["plan.txt"]["id"].encode()


async def die_after_storing(h: Harness, name: str, content: bytes) -> None:
    """Save ``content`` as ``name``; the server stores it, its answer never arrives."""
    stored = trio.Event()
    remote = h.fs.remote
    real_version, real_create = remote.create_version, remote.create_attachment

    async def version(*args: Any, **kwargs: Any) -> Any:
        await real_version(*args, **kwargs)  # stored on the server ...
        stored.set()
        await trio.sleep_forever()  # ... and the answer never comes: the mount dies

    async def create(*args: Any, **kwargs: Any) -> Any:
        await real_create(*args, **kwargs)
        stored.set()
        await trio.sleep_forever()

    remote.create_version = version  # type: ignore[method-assign]
    remote.create_attachment = create  # type: ignore[method-assign]
    try:
        if name == "new.txt":
            await h.write_file(name, content)
        else:
            ino = await h.ino(SLUG, h.project["name"], name)
            fh, _ = await h.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
            await h.fs.write(fh, 0, content)
            await h.fs.release(fh)
        await stored.wait()
    finally:
        remote.create_version = real_version  # type: ignore[method-assign]
        remote.create_attachment = real_create  # type: ignore[method-assign]


async def test_crash_after_the_server_stored_the_upload(emulator: Emulator, tmp_path: Path) -> None:
    """The mount dies after the server stored a save and before its answer arrived: the next
    mount finds it on the server and sends nothing again (one version, one document)."""
    proj = project(emulator, "crash")
    doc = emulator.upload(SLUG, proj["id"], "model.ifc", b"v1")
    for name, content in (("model.ifc", b"version two"), ("new.txt", b"a new file")):
        async with open_harness(emulator, tmp_path, proj, write_back_delay=0) as h:
            await die_after_storing(h, name, content)
        emulator.reset_stats()
        async with open_harness(emulator, tmp_path, proj, write_back_delay=0) as again:
            assert await again.fs.drain(30)
            assert await read(again, name) == content
        assert sum(emulator.count(c) for c in (NEW_VERSION, *CREATES)) == 0
    docs = {d["fileName"]: d for d in emulator.attachments(SLUG, proj["id"])}
    assert sorted(docs) == ["model.ifc", "new.txt"]
    assert [v["version"] for v in emulator.versions(SLUG, doc["id"])] == [1, 2]


class HeldVersions:
    """The real client, whose ``create_version`` first lets ``meanwhile`` happen: the moment
    between the check of the server's newest version and the upload."""

    def __init__(self, remote: Any, meanwhile: Any) -> None:
        self._remote = remote
        self._meanwhile = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._remote, name)

    async def create_version(self, *args: Any, **kwargs: Any) -> Any:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            await trio.to_thread.run_sync(meanwhile)
        return await self._remote.create_version(*args, **kwargs)


@pytest.mark.parametrize("mode", ["copy", "newest-wins"])
async def test_a_colleague_saving_during_our_upload_is_not_buried(
    emulator: Emulator, tmp_path: Path, mode: str
) -> None:
    """Their version lands after our check and before ours: ours is taken back and kept as a
    conflict copy (or, with newest-wins, stays the newest with a warning)."""
    proj = project(emulator, f"race-{mode}")
    doc = emulator.upload(SLUG, proj["id"], "plan.txt", b"v1\n")

    def colleague() -> None:
        emulator.new_version(SLUG, doc["id"], "plan.txt", b"v1\ntheirs, saved meanwhile\n")

    async with open_harness(emulator, tmp_path, proj, write_back_delay=60, on_conflict=mode) as h:
        h.fs.uploads.remote = HeldVersions(h.fs.uploads.remote, colleague)  # type: ignore[assignment]
        await append(h, "plan.txt", b"ours\n")
        assert await h.fs.drain(30)
        contents = [
            emulator.download(SLUG, doc["id"], int(v["version"]))
            for v in emulator.versions(SLUG, doc["id"])
        ]
        copies = [n for n in h.docs() if n.startswith("plan (conflict ")]
        if mode == "newest-wins":
            assert contents == [b"v1\n", b"v1\ntheirs, saved meanwhile\n", b"v1\nours\n"]
            assert copies == []
            return
        assert contents == [b"v1\n", b"v1\ntheirs, saved meanwhile\n"]
        assert len(copies) == 1, list(h.docs())
        assert emulator.download(SLUG, h.docs()[copies[0]]["id"]) == b"v1\nours\n"
        assert await read(h, "plan.txt") == b"v1\ntheirs, saved meanwhile\n"
        assert await read(h, copies[0]) == b"v1\nours\n"
        ino = await h.ino(SLUG, proj["name"], copies[0])
        state = (await h.fs.getxattr(ino, "user.bimfs.state")).decode()
        assert state == "conflict: based on v1, server had v2 by demo@bimfs.test"
