"""In-process filesystem tests: ``Filesystem`` with a real client against the emulator."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import Journal
from bimfs.config import Config
from bimfs.vfs.filesystem import Filesystem
from bimfs.vfs.tree import ROOT_INO
from tests.support.emulator import Emulator
from tests.vfs.fake import fake  # noqa: F401  (the FakeRemote harness fixture)

SLUG = "bimfs-demo"
ROOT = ROOT_INO


class Harness:
    def __init__(self, fs: Filesystem, emu: Emulator, project: dict[str, Any]) -> None:
        self.fs = fs
        self.emu = emu
        self.project = project

    async def ino(self, *names: str) -> int:
        ino = ROOT
        for name in names:
            ino = (await self.fs.lookup(ino, name)).ino
        return ino

    async def project_ino(self) -> int:
        return await self.ino(SLUG, self.project["name"])

    async def write_file(self, name: str, data: bytes) -> None:
        fh, _ = await self.fs.create(await self.project_ino(), name, os.O_WRONLY | os.O_CREAT)
        await self.fs.write(fh, 0, data)
        await self.fs.flush(fh)
        await self.fs.release(fh)

    def docs(self) -> dict[str, dict[str, Any]]:
        return {d["fileName"]: d for d in self.emu.attachments(SLUG, self.project["id"])}


@contextlib.asynccontextmanager
async def open_harness(
    emulator: Emulator,
    tmp_path: Path,
    project: str | dict[str, Any] = "vfs",
    cache: str = "cache",
    cache_bytes: int = 64 << 20,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A running ``Filesystem`` over a writable project (a new one by that name, or the one
    given as the emulator's JSON of it), with its cache in ``tmp_path / cache`` (another
    mount of the same account: another cache); ``overrides`` go to ``Config``."""
    created = (
        project
        if isinstance(project, dict)
        else emulator.admin(
            "POST", f"/teams/{SLUG}/projects", json={"name": project, "hasWriteAccess": True}
        )
    )
    settings: dict[str, Any] = {"write_back_delay": 0, "dir_ttl": 0, **overrides}
    config = Config(
        mountpoint=tmp_path / "mnt", api_url=emulator.url, cache_dir=tmp_path / cache, **settings
    )
    config.cache_dir.mkdir(exist_ok=True)
    async with BimplusClient(emulator.url, StaticToken(emulator.token)) as client:
        fs = Filesystem(
            config, client, ContentStore(config.cache_dir, cache_bytes),
            Journal(config.cache_dir),
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(fs.run)
            yield Harness(fs, emulator, created)
            nursery.cancel_scope.cancel()


@pytest.fixture
async def harness(emulator: Emulator, tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(emulator, tmp_path) as h:
        yield h
