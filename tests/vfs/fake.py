"""In-process filesystem tests without a server process: ``Filesystem`` over ``FakeRemote``.

Like ``tests/vfs/conftest.py``'s ``open_harness`` (the emulator over HTTP), but every call is
an in-memory one: a test takes milliseconds. ``FakeHarness`` has the POSIX-like helpers the
tests use (write a file, append, read, rename) and the server's view (``docs``, ``content``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from bimfs.api.models import Attachment
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import Journal
from bimfs.config import Config
from bimfs.vfs.errors import FsError
from bimfs.vfs.filesystem import Filesystem
from bimfs.vfs.tree import ROOT_INO
from tests.support.fake_remote import SLUG, FakeRemote

__all__ = ["SLUG", "FakeHarness", "fake_fs", "open_fake"]


class FakeHarness:
    """A running ``Filesystem`` on ``remote``, showing project ``pid`` (named ``project``)."""

    def __init__(self, fs: Filesystem, remote: FakeRemote, pid: str, project: str) -> None:
        self.fs = fs
        self.remote = remote
        self.server = remote.server
        self.pid = pid
        self.project = project

    # ---- the tree ----------------------------------------------------------------------------

    async def ino(self, *names: str) -> int:
        ino = ROOT_INO
        for name in (SLUG, self.project, *names):
            ino = (await self.fs.lookup(ino, name)).ino
        return ino

    async def dir_ino(self, path: str) -> int:
        return await self.ino(*[p for p in path.split("/") if p])

    async def names(self, path: str = "") -> list[str]:
        return sorted(name for name, _ in await self.fs.listdir(await self.dir_ino(path)))

    async def exists(self, path: str) -> bool:
        try:
            await self.dir_ino(path)
        except FsError:
            return False
        return True

    @staticmethod
    def split(path: str) -> tuple[str, str]:
        parent, _, name = path.rpartition("/")
        return parent, name

    # ---- POSIX-like calls --------------------------------------------------------------------

    async def write_file(self, path: str, data: bytes, *, flags: int = 0) -> None:
        """``open(path, "wb").write(data)``: create or truncate, write, close."""
        parent, name = self.split(path)
        pino = await self.dir_ino(parent)
        try:
            ino = (await self.fs.lookup(pino, name)).ino
        except FsError:
            fh, _ = await self.fs.create(pino, name, os.O_WRONLY | os.O_CREAT | flags)
        else:
            fh, _ = await self.fs.open(ino, os.O_WRONLY | os.O_TRUNC | flags)
        try:
            if data:
                await self.fs.write(fh, 0, data)
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def append(self, path: str, data: bytes) -> None:
        ino = await self.dir_ino(path)
        size = (await self.fs.getattr(ino)).size
        fh, _ = await self.fs.open(ino, os.O_WRONLY | os.O_APPEND)
        try:
            await self.fs.write(fh, size, data)
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def truncate(self, path: str, size: int) -> None:
        ino = await self.dir_ino(path)
        await self.fs.setattr(ino, size, None)

    async def read(self, path: str) -> bytes:
        ino = await self.dir_ino(path)
        fh, _ = await self.fs.open(ino, os.O_RDONLY)
        try:
            chunks = []
            offset = 0
            while True:
                chunk = await self.fs.read(fh, offset, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                offset += len(chunk)
        finally:
            await self.fs.release(fh)

    async def rename(self, old: str, new: str, flags: int = 0) -> None:
        old_parent, old_name = self.split(old)
        new_parent, new_name = self.split(new)
        await self.fs.rename(
            await self.dir_ino(old_parent), old_name, await self.dir_ino(new_parent), new_name,
            flags,
        )  # fmt: skip

    async def unlink(self, path: str) -> None:
        parent, name = self.split(path)
        await self.fs.unlink(await self.dir_ino(parent), name)

    async def mkdir(self, path: str) -> None:
        parent, name = self.split(path)
        await self.fs.mkdir(await self.dir_ino(parent), name)

    async def rmdir(self, path: str) -> None:
        parent, name = self.split(path)
        await self.fs.rmdir(await self.dir_ino(parent), name)

    async def xattr(self, path: str, name: str) -> str:
        return (await self.fs.getxattr(await self.dir_ino(path), name)).decode()

    async def sync(self) -> None:
        assert await self.fs.drain(30)

    # ---- the server's view -------------------------------------------------------------------

    def docs(self) -> dict[str, Attachment]:
        return self.server.docs(self.pid)

    def content(self, name: str) -> bytes:
        return self.server.content(self.docs()[name].id)

    def versions(self, name: str) -> list[int]:
        return [v.version for v in self.server.versions(self.docs()[name].id)]


def fake_config(tmp_path: Path, cache: str = "cache", **overrides: Any) -> Config:
    settings: dict[str, Any] = {"write_back_delay": 0, "dir_ttl": 0, **overrides}
    config = Config(
        mountpoint=tmp_path / "mnt", api_url="http://fake.invalid/v2",
        cache_dir=tmp_path / cache, **settings,
    )  # fmt: skip
    config.cache_dir.mkdir(exist_ok=True)
    return config


def fake_fs(config: Config, remote: FakeRemote, cache_bytes: int = 64 << 20) -> Filesystem:
    return Filesystem(
        config, remote, ContentStore(config.cache_dir, cache_bytes), Journal(config.cache_dir)
    )


@contextlib.asynccontextmanager
async def open_fake(
    tmp_path: Path,
    remote: FakeRemote | None = None,
    project: str = "vfs",
    cache: str = "cache",
    **overrides: Any,
) -> AsyncIterator[FakeHarness]:
    """A running ``Filesystem`` over ``remote`` (a new fake account when None), showing the
    project ``project`` (made when missing); ``overrides`` go to ``Config``."""
    remote = remote or FakeRemote()
    found = [p for p in remote.server.projects.values() if p.name == project]
    pid = found[0].id if found else remote.server.add_project(project).id
    fs = fake_fs(fake_config(tmp_path, cache, **overrides), remote)
    async with trio.open_nursery() as nursery:
        await nursery.start(fs.run)
        yield FakeHarness(fs, remote, pid, project)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeHarness]:
    """A fake account's mount with a write-back delay of a minute (``sync`` sends at once)."""
    async with open_fake(tmp_path, write_back_delay=60) as h:
        yield h
