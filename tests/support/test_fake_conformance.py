"""The fake cannot drift: one scenario against ``BimplusClient`` + the emulator and against
``FakeRemote``, with the same observable results."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from bimfs.api import settle
from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import ApiError
from bimfs.api.models import Attachment, FolderNode
from bimfs.api.multipart import GrowingSource
from bimfs.vfs.remote import Remote
from tests.support.emulator import Emulator
from tests.support.fake_remote import FakeRemote

SLUG = "bimfs-demo"
TYPE = "text/plain"


class Side:
    """What the scenario needs beyond the Remote: set-up and fault controls of one side."""

    def project(self, name: str) -> str:
        raise NotImplementedError

    def forbid(self, pid: str, aid: str) -> None:
        """Take the delete right on ``aid`` and write access to ``pid`` away."""
        raise NotImplementedError

    def lose_next_version_answer(self) -> None:
        raise NotImplementedError

    def calm(self) -> None:
        """No more faults."""

    def settled(self) -> bool:
        """Whether the version list was read since ``lose_next_version_answer`` (settling)."""
        raise NotImplementedError


class EmulatorSide(Side):
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def project(self, name: str) -> str:
        made = self.emu.admin(
            "POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True}
        )
        return str(made["id"])

    def forbid(self, pid: str, aid: str) -> None:
        self.emu.admin("PUT", f"/attachments/{aid}/rights", json={"delete": False})
        self.emu.admin("PUT", f"/projects/{pid}", json={"hasWriteAccess": False})

    def lose_next_version_answer(self) -> None:
        # Every upload of a version is cut, the body or the answer: the client settles it.
        route = "POST /v2/{slug}/attachments/{id}/versions"
        self.emu.set_faults(reset_rate=1.0, routes=[route], fault_seed=3)
        self.emu.reset_stats()

    def calm(self) -> None:
        self.emu.set_faults(reset_rate=0.0, routes=[])

    def settled(self) -> bool:
        return self.emu.count("GET /v2/{slug}/attachments/{id}/versions") > 0


class FakeSide(Side):
    def __init__(self, fake: FakeRemote) -> None:
        self.fake = fake

    def project(self, name: str) -> str:
        return self.fake.server.add_project(name).id

    def forbid(self, pid: str, aid: str) -> None:
        self.fake.server.set_rights(aid, delete=False)
        self.fake.server.set_write_access(pid, False)

    def lose_next_version_answer(self) -> None:
        self.fake.lose_answer("create_version", settle=True)
        self.listed = self.fake.calls["list_versions"]

    def settled(self) -> bool:
        return self.fake.calls["list_versions"] > self.listed


def doc(att: Attachment) -> tuple[Any, ...]:
    creator = att.creator.email if att.creator else None
    who = (creator, att.changed_by.email if att.changed_by else None)
    return (att.file_name, att.size, att.version, att.type, *who, bool(att.hash), att.rights)


def tree(nodes: list[FolderNode] | tuple[FolderNode, ...]) -> list[Any]:
    return [(n.name, n.type, n.is_folder, tree(n.children)) for n in nodes]


async def outcome(call: Awaitable[Any]) -> str:
    """The class of the error ``call`` raises (and its retryable flag), or ``ok``."""
    try:
        await call
    except ApiError as exc:
        return f"{type(exc).__name__} retryable={exc.retryable}"
    return "ok"


async def scenario(remote: Remote, side: Side, tmp: Path) -> list[Any]:
    seen: list[Any] = []
    note: Callable[..., None] = lambda *items: seen.append(items)  # noqa: E731

    def source(name: str, data: bytes) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    started = time.time()
    me = await remote.me()
    note("me", sorted(me))
    note("teams", SLUG in {t.slug for t in await remote.get_teams()})
    pid = side.project("conformance")
    projects = {p.id: p for p in await remote.get_projects(SLUG)}
    note("project", projects[pid].name, projects[pid].has_write_access)
    note("empty", await remote.list_attachments(SLUG, pid))

    a = await remote.create_attachment(
        SLUG, pid, source("a", b"alpha"), file_name="a.txt", content_type=TYPE
    )
    note("created", doc(a))
    v2 = await remote.create_version(
        SLUG, a.id, source("a2", b"alpha two"), file_name="a.txt", content_type=TYPE,
        known_version=1,
    )  # fmt: skip
    note("version", doc(v2))
    note("versions", [doc(v) for v in await remote.list_versions(SLUG, a.id)])
    renamed = await remote.update_attachment(SLUG, a.id, file_name="b.txt")
    note("renamed", doc(renamed), doc(await remote.get_attachment(SLUG, a.id)))
    note("versions renamed", [v.file_name for v in await remote.list_versions(SLUG, a.id)])
    note("delete v1", await outcome(remote.delete_version(SLUG, a.id, 1)))
    note("delete only", await outcome(remote.delete_version(SLUG, a.id, 2)))
    note("delete missing", await outcome(remote.delete_version(SLUG, a.id, 7)))
    v3 = await remote.create_version(
        SLUG, a.id, source("a3", b"alpha three!"), file_name="b.txt", content_type=TYPE
    )
    numbers = [v.version for v in await remote.list_versions(SLUG, a.id)]
    note("numbers are not reused", doc(v3), numbers)

    # Downloads, whole and in ranges.
    async def fetch(**kwargs: Any) -> tuple[Any, ...]:
        async with remote.open_download(SLUG, a.id, **kwargs) as download:
            body = b"".join([c async for c in download.chunks()])
            return (body, download.start, download.length, download.total_size)

    note("whole", await fetch())
    note("range", await fetch(start=2, end=5))
    note("tail", await fetch(start=6))
    note("past the end", await outcome(fetch(start=12)))
    note("version 2", await fetch(version=2))
    note("version 1 gone", await outcome(fetch(version=1)))

    # Folders.
    plans = await remote.create_folder(SLUG, pid, "Plans", None)
    note("folder", plans.name, plans.type, plans.parent, plans.is_folder)
    sub = await remote.create_folder(SLUG, pid, "Sub", plans.id)
    note("sub", sub.name, sub.parent == plans.id)
    note("twice", await outcome(remote.create_folder(SLUG, pid, "Plans", None)))
    note("no parent", await outcome(remote.create_folder(SLUG, pid, "X", "nonexistent")))
    c = await remote.create_attachment(
        SLUG, pid, source("c", b"in a folder"), file_name="c.txt", content_type=TYPE,
        folder_id=plans.id,
    )  # fmt: skip
    note("in folder", doc(c), tree(await remote.get_folders(SLUG, pid)))
    note("listed", sorted(d.file_name for d in await remote.list_attachments(SLUG, pid)))
    note("not empty", await outcome(remote.delete_folder(SLUG, plans.id)))
    note("empty sub", await outcome(remote.delete_folder(SLUG, sub.id)))
    note("delete doc", await outcome(remote.delete_attachment(SLUG, c.id)))
    note("gone", await outcome(remote.get_attachment(SLUG, c.id)))
    note("now empty", await outcome(remote.delete_folder(SLUG, plans.id)))
    note("folders", tree(await remote.get_folders(SLUG, pid)))
    note("folder gone", await outcome(remote.delete_folder(SLUG, plans.id)))

    # A streamed upload: the file grows while it is sent.
    growing = source("g", b"")
    src = GrowingSource(growing)
    result: list[Attachment] = []

    async def stream() -> None:
        result.append(
            await remote.stream_upload(SLUG, src, file_name="g.txt", content_type=TYPE, pid=pid)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        for part in (b"grow", b"ing ", b"file"):
            with growing.open("ab") as f:
                f.write(part)
            src.grew(growing.stat().st_size)
            await trio.sleep(0.01)
        src.finish(growing.stat().st_size)
    note("streamed", doc(result[0]))
    async with remote.open_download(SLUG, result[0].id) as download:
        note("streamed bytes", b"".join([c async for c in download.chunks()]))

    # An upload whose answer is lost: settled through the version list, stored once.
    side.lose_next_version_answer()
    v4 = await remote.create_version(
        SLUG, a.id, source("a4", b"after a lost answer"), file_name="b.txt", content_type=TYPE,
        known_version=3,
    )  # fmt: skip
    side.calm()
    note("settled through the version list", side.settled())
    note("settled", doc(v4), [v.version for v in await remote.list_versions(SLUG, a.id)])
    found = await settle.version_since(remote, SLUG, a.id, 3, v4.size, await remote.me())
    note("found again", found is not None and doc(found))
    since = settle.settle_since(started, 0.0)
    made = await settle.created_since(remote, SLUG, pid, None, "g.txt", 12, since, me)
    note("created found", made is not None and made.id == result[0].id)

    # Rights.
    side.forbid(pid, a.id)
    note("rights", doc(await remote.get_attachment(SLUG, a.id)))
    note("no delete right", await outcome(remote.delete_attachment(SLUG, a.id)))
    note("no write access", await outcome(remote.create_attachment(
        SLUG, pid, source("d", b"d"), file_name="d.txt", content_type=TYPE)))  # fmt: skip
    note("no rename", await outcome(remote.update_attachment(SLUG, a.id, file_name="z.txt")))
    note("missing", await outcome(remote.get_attachment(SLUG, "nonexistent")))
    note("unknown project", await outcome(remote.list_attachments(SLUG, "nonexistent")))
    return seen


async def test_fake_answers_like_the_client(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    async with BimplusClient(emulator.url, StaticToken(emulator.token)) as client:
        real = await scenario(client, EmulatorSide(emulator), tmp_path / "real")
    fake = FakeRemote()
    faked = await scenario(fake, FakeSide(fake), tmp_path / "fake")
    assert ("settled through the version list", True) in real  # the fault did cut an answer
    for want, got in zip(real, faked, strict=True):
        assert got == want
