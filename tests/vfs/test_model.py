"""A reference-model test: random sequences of file operations, crashes, colleagues' changes
and outages on an in-process ``Filesystem`` over ``FakeRemote``, checked against a plain dict
of what each path should hold.

After every sync (online, everything drained):

* what the filesystem shows (names, contents) is the model;
* the server holds exactly one document per file, its newest version with the model's bytes;
* since the last sync no document got more than one version of ours, and no save made two
  documents (one save, one version, also across crashes and lost answers);
* a colleague's version is never buried: when both changed a file, their bytes are at the
  name and ours in a conflict copy ``<stem> (conflict YYYY-MM-DD HHMM demo)<ext>``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bimfs.api.errors import ServerError
from bimfs.vfs import online
from bimfs.vfs.errors import FsError
from bimfs.vfs.filesystem import Filesystem
from bimfs.vfs.tree import ROOT_INO
from tests.support.fake_remote import DEMO, SLUG, TOM, FakeRemote
from tests.vfs.fake import fake_config, fake_fs

PROJECT = "model"
FOLDER = "F"
NAMES = ("a.txt", "b.txt", "c.md", f"{FOLDER}/a.txt", f"{FOLDER}/d.bin")
CONFLICT = re.compile(r"(.+) \(conflict \d{4}-\d\d-\d\d \d{4} demo\)(\.[^.]*)?")

paths = st.sampled_from(NAMES)
contents = st.binary(max_size=24)

ops = st.one_of(
    st.tuples(st.just("write"), paths, contents),
    st.tuples(st.just("append"), paths, contents),
    st.tuples(st.just("truncate"), paths, st.integers(0, 30)),
    st.tuples(st.just("rename"), paths, paths),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("read"), paths),
    st.tuples(st.just("mkdir")),
    st.tuples(st.just("rmdir")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("crash"), st.booleans()),
    st.tuples(st.just("lose_answer"), st.booleans()),
    st.tuples(st.just("fail_next")),
    st.tuples(st.just("offline")),
    st.tuples(st.just("colleague_saves"), paths, contents),
    st.tuples(st.just("colleague_deletes"), paths),
    st.tuples(st.just("colleague_renames"), paths, paths),
    st.tuples(st.just("both_save"), paths, contents, contents),
    st.tuples(st.just("edit_deleted"), paths, contents),
)


@dataclass
class World:
    """The filesystem under test, its server, and the model."""

    root: Path
    remote: FakeRemote
    nursery: trio.Nursery
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    fs: Filesystem | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    seen_versions: dict[str, int] = field(default_factory=dict)  # doc id -> newest at last sync
    saves: dict[str, list[bytes]] = field(default_factory=dict)  # path -> saves since then
    theirs: set[tuple[str, int]] = field(default_factory=set)  # versions colleagues made
    restarts: int = 0

    # ---- the filesystem's life -----------------------------------------------------------

    async def start(self) -> None:
        config = fake_config(self.root, "cache", write_back_delay=60, dir_ttl=0)
        fs = fake_fs(config, self.remote)
        fs.uploader.base_backoff, fs.uploader.max_backoff = 0.005, 0.02
        self.fs = fs
        self.scope = await self.nursery.start(self._run, fs)

    async def _run(self, fs: Filesystem, task_status: Any) -> None:
        done = self.stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(fs.run)
                    task_status.started(scope)
                    await trio.sleep_forever()
        finally:
            done.set()

    async def crash(self) -> None:
        """Drop the filesystem without a clean shutdown; a new one on the same cache dir."""
        assert self.scope is not None and self.stopped is not None
        self.scope.cancel()
        await self.stopped.wait()
        self.restarts += 1
        await self.start()

    @property
    def filesystem(self) -> Filesystem:
        assert self.fs is not None
        return self.fs

    # ---- paths -------------------------------------------------------------------------

    async def ino(self, path: str) -> int:
        ino = ROOT_INO
        for name in (SLUG, PROJECT, *[p for p in path.split("/") if p]):
            ino = (await self.filesystem.lookup(ino, name)).ino
        return ino

    @staticmethod
    def split(path: str) -> tuple[str, str]:
        parent, _, name = path.rpartition("/")
        return parent, name

    def saved(self, path: str) -> None:
        """A save of ``path`` (its content now) was made."""
        self.saves.setdefault(path, []).append(self.files[path])

    def reachable(self, path: str) -> bool:
        parent, _ = self.split(path)
        return not parent or parent in self.dirs

    @property
    def offline(self) -> bool:
        return self.remote.offline

    # ---- operations (each leaves the model and the filesystem in step) ------------------

    async def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        try:
            await getattr(self, "op_" + kind)(*op[1:])
        except FsError as exc:
            # Offline, whatever needs the server may fail at once; nothing else may fail.
            if not (self.offline and exc.errno == errno.ENETUNREACH):
                raise

    async def op_write(self, path: str, data: bytes) -> None:
        if not self.reachable(path):
            return
        fs = self.filesystem
        parent, name = self.split(path)
        pino = await self.ino(parent)
        if path in self.files:
            fh, _ = await fs.open(await self.ino(path), os.O_WRONLY | os.O_TRUNC)
        else:
            fh, _ = await fs.create(pino, name, os.O_WRONLY | os.O_CREAT)
        try:
            self.files[path] = b""  # created or truncated: that much is done
            if data:
                await fs.write(fh, 0, data)
            await fs.flush(fh)
        finally:
            await fs.release(fh)
        self.files[path] = data
        self.saved(path)

    async def op_append(self, path: str, data: bytes) -> None:
        if path not in self.files:
            return
        fs = self.filesystem
        fh, _ = await fs.open(await self.ino(path), os.O_WRONLY | os.O_APPEND)
        try:
            await fs.write(fh, len(self.files[path]), data)
            await fs.flush(fh)
        finally:
            await fs.release(fh)
        self.files[path] += data
        self.saved(path)

    async def op_truncate(self, path: str, size: int) -> None:
        if path not in self.files:
            return
        await self.filesystem.setattr(await self.ino(path), size, None)
        old = self.files[path]
        self.files[path] = old[:size] + bytes(max(0, size - len(old)))
        self.saved(path)

    async def op_rename(self, src: str, dst: str) -> None:
        if src not in self.files or not self.reachable(dst) or src == dst:
            return
        (sp, sn), (dp, dn) = self.split(src), self.split(dst)
        try:
            await self.filesystem.rename(await self.ino(sp), sn, await self.ino(dp), dn, 0)
        except FsError as exc:
            if sp != dp and exc.errno == errno.EXDEV:
                return  # no move of a document on Bimplus: `mv` copies
            raise
        # Between folders only a file not sent yet moves (its upload goes to the new folder).
        self.files[dst] = self.files.pop(src)
        self.saves[dst] = [*self.saves.get(dst, []), *self.saves.pop(src, [])]
        self.saved(dst)

    async def op_unlink(self, path: str) -> None:
        if path not in self.files:
            return
        parent, name = self.split(path)
        await self.filesystem.unlink(await self.ino(parent), name)
        del self.files[path]

    async def op_read(self, path: str) -> None:
        """Reads show the model; offline, content not in the cache fails at once."""
        if path not in self.files:
            return
        fs = self.filesystem
        with trio.fail_after(5):
            fh, _ = await fs.open(await self.ino(path), os.O_RDONLY)
            try:
                data = await fs.read(fh, 0, 1 << 16)
            finally:
                await fs.release(fh)
        assert data == self.files[path], path

    async def op_mkdir(self) -> None:
        if FOLDER in self.dirs:
            return
        await self.filesystem.mkdir(await self.ino(""), FOLDER)
        self.dirs.add(FOLDER)

    async def op_rmdir(self) -> None:
        if FOLDER not in self.dirs:
            return
        busy = any(p.startswith(FOLDER + "/") for p in self.files)
        try:
            await self.filesystem.rmdir(await self.ino(""), FOLDER)
        except FsError as exc:
            if busy and exc.errno == errno.ENOTEMPTY:
                return
            raise
        assert not busy, "a folder with files was removed"
        self.dirs.discard(FOLDER)

    async def op_crash(self, mid_upload: bool) -> None:
        """A crash, possibly between the server storing an upload and its answer."""
        if mid_upload and not self.offline:
            for method in ("create_version", "create_attachment", "stream_upload"):
                self.remote.lose_answer(method)
            await self.filesystem.drain(0.05)
        await self.crash()
        self.remote.clear_faults()

    async def op_lose_answer(self, settled: bool) -> None:
        for method in ("create_version", "create_attachment"):
            self.remote.lose_answer(method, settle=settled)

    async def op_fail_next(self) -> None:
        for method in ("create_version", "create_attachment", "get_attachment"):
            self.remote.fail_next(method, ServerError(503, "busy"))

    async def op_offline(self) -> None:
        self.remote.offline = True

    async def online(self) -> None:
        self.remote.offline = False
        fs = self.filesystem
        with trio.fail_after(30):
            while not fs.connectivity.online:  # noqa: ASYNC110 (the probe's own schedule)
                await trio.sleep(0.005)

    async def op_sync(self) -> None:
        await self.online()
        assert await self.filesystem.drain(30), "not everything was sent"
        self.remote.clear_faults()
        await self.check()

    # ---- colleagues (on a synced state, or while we edit) -------------------------------

    def doc_id(self, path: str) -> str:
        return self.server_docs()[path]

    async def op_colleague_saves(self, path: str, data: bytes) -> None:
        await self.op_sync()
        if path not in self.files:
            return
        att = self.remote.server.new_version(self.doc_id(path), data, user=TOM)
        self.theirs.add((att.id, att.version))
        self.files[path] = data

    async def op_colleague_deletes(self, path: str) -> None:
        await self.op_sync()
        if path not in self.files:
            return
        await self.remote.colleague.delete_attachment(SLUG, self.doc_id(path))
        del self.files[path]

    async def op_colleague_renames(self, src: str, dst: str) -> None:
        await self.op_sync()
        if src not in self.files or dst in self.files or self.split(src)[0] != self.split(dst)[0]:
            return
        name = self.split(dst)[1]
        await self.remote.colleague.update_attachment(SLUG, self.doc_id(src), file_name=name)
        self.files[dst] = self.files.pop(src)

    async def op_both_save(self, path: str, ours: bytes, theirs: bytes) -> None:
        """We save, a colleague saves before our upload: theirs at the name, ours in a copy."""
        await self.op_sync()
        parent, _ = self.split(path)
        if path not in self.files or any(
            self.split(p)[0] == parent and CONFLICT.fullmatch(p) for p in self.files
        ):
            # A second conflict copy of a file in the same minute gets the same name on the
            # server (Bimplus allows that; the mount tells them apart by id): not modelled.
            return
        aid = self.doc_id(path)
        await self.op_write(path, ours)
        att = self.remote.server.new_version(aid, theirs, user=TOM)
        self.theirs.add((att.id, att.version))
        await self.online()
        assert await self.filesystem.drain(30)
        copies = [
            p
            for p in self.server_docs()
            if p not in self.files and self.split(p)[0] == parent and CONFLICT.fullmatch(p)
        ]
        assert len(copies) == 1, f"no single conflict copy of {path}: {self.server_docs()}"
        stem, ext = CONFLICT.fullmatch(self.split(copies[0])[1]).groups()  # type: ignore[union-attr]
        assert parent + ("/" if parent else "") + stem + (ext or "") == path
        self.files[path] = theirs
        self.files[copies[0]] = ours
        self.saves[copies[0]] = [ours]
        await self.check()

    async def op_edit_deleted(self, path: str, ours: bytes) -> None:
        """We save, a colleague deletes the document before our upload: the edit wins."""
        await self.op_sync()
        if path not in self.files:
            return
        aid = self.doc_id(path)
        await self.op_write(path, ours)
        await self.remote.colleague.delete_attachment(SLUG, aid)
        await self.op_sync()

    # ---- invariants --------------------------------------------------------------------

    def server_docs(self) -> dict[str, str]:
        """The project's documents on the server by path (folder/name) -> id; each path once."""
        server = self.remote.server
        pid = next(p.id for p in server.projects.values() if p.name == PROJECT)
        folders = {f.id: f.name for f in server.folders.values()}
        found: dict[str, str] = {}
        for doc in server.docs_by_id.values():
            if doc.project_id != pid:
                continue
            path = doc.file_name
            if doc.folder_id is not None:
                path = f"{folders[doc.folder_id]}/{path}"
            assert path not in found, f"two documents named {path}"
            found[path] = doc.id
        return found

    async def shown(self, path: str = "") -> dict[str, bytes]:
        """What the filesystem shows below ``path``: file path -> content."""
        fs = self.filesystem
        result: dict[str, bytes] = {}
        for name, attr in await fs.listdir(await self.ino(path)):
            full = f"{path}/{name}" if path else name
            if stat.S_ISDIR(attr.mode):
                assert full in self.dirs, f"unexpected folder {full}"
                result.update(await self.shown(full))
                continue
            fh, _ = await fs.open(attr.ino, os.O_RDONLY)
            try:
                data = await fs.read(fh, 0, 1 << 16)
            finally:
                await fs.release(fh)
            assert len(data) == attr.size, f"{full}: size {attr.size}, read {len(data)}"
            result[full] = data
        return result

    async def check(self) -> None:
        fs = self.filesystem
        assert not fs.journal.entries(), "a save is left in the journal"
        shown = await self.shown()
        assert shown == self.files, f"shown {shown}, model {self.files}"
        server = self.remote.server
        docs = self.server_docs()
        assert sorted(docs) == sorted(self.files), f"server {docs}, model {self.files}"
        for path, aid in docs.items():
            assert server.content(aid) == self.files[path], path
            # One save, one version: ours since the last sync are some of the saves made
            # since, in their order, none twice (coalesced saves leave some out).
            mine = [
                server.content(aid, v.version)
                for v in server.versions(aid)
                if v.version > self.seen_versions.get(aid, 0)
                and v.changed_by is not None
                and v.changed_by.id == DEMO.id
                # A rename records its author on the newest version: a colleague's version
                # renamed by us says changedBy us.
                and (aid, v.version) not in self.theirs
            ]
            saves = iter(self.saves.get(path, []))
            assert all(any(s == m for s in saves) for m in mine), (
                f"{path}: versions {mine} of ours, saves {self.saves.get(path)}"
            )
            self.seen_versions[aid] = server.versions(aid)[-1].version
        self.saves.clear()
        folders = {f.name for f in server.folders.values()}
        assert folders == self.dirs


async def scenario(steps: list[tuple[Any, ...]], root: Path) -> World:
    remote = FakeRemote()
    remote.server.add_project(PROJECT)
    async with trio.open_nursery() as nursery:
        world = World(root, remote, nursery)
        await world.start()
        for step in steps:
            await world.apply(step)
        await world.op_sync()
        await world.crash()
        await world.check()  # a clean restart shows the same
        nursery.cancel_scope.cancel()
    return world


@pytest.fixture
def fast_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline probe asks every few milliseconds instead of seconds."""
    monkeypatch.setattr(online, "PROBE_FIRST", 0.002)
    monkeypatch.setattr(online, "PROBE_CAP", 0.01)


@settings(
    max_examples=int(os.environ.get("BIMFS_MODEL_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, max_size=int(os.environ.get("BIMFS_MODEL_STEPS", "25"))))
def test_filesystem_follows_the_model(fast_probe: None, steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="bimfs-model-") as tmp:
        trio.run(scenario, steps, Path(tmp))


def test_a_short_story(fast_probe: None, tmp_path: Path) -> None:
    """One fixed sequence touching every operation (quick to read when the model changes)."""
    steps: list[tuple[Any, ...]] = [
        ("mkdir",), ("write", "a.txt", b"one"), ("write", "F/a.txt", b"in F"), ("sync",),
        ("append", "a.txt", b"+"), ("crash", True), ("sync",),
        ("rename", "a.txt", "b.txt"), ("rename", "b.txt", "F/b.txt"), ("offline",),
        ("write", "c.md", b"offline"), ("unlink", "F/a.txt"), ("sync",),
        ("colleague_saves", "b.txt", b"tom"), ("both_save", "b.txt", b"ours", b"theirs"),
        ("edit_deleted", "c.md", b"edited"), ("colleague_renames", "c.md", "a.txt"),
        ("lose_answer", False), ("truncate", "a.txt", 2), ("fail_next",), ("sync",),
        ("rmdir",), ("unlink", "F/d.bin"), ("colleague_deletes", "a.txt"),
    ]  # fmt: skip
    trio.run(scenario, steps, tmp_path)
