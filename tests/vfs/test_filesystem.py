"""The filesystem layer in-process, without the kernel: a real client against the emulator.

These drive ``Filesystem`` the way the FUSE adapter does (inode numbers, names, handles) and
check the server afterwards, so the POSIX decisions are tested fast and deterministically.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import AuthError, UnauthorizedError
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import Journal
from bimfs.config import Config
from bimfs.vfs.errors import FsError
from bimfs.vfs.filesystem import Filesystem
from tests.support.emulator import Emulator
from tests.vfs.conftest import ROOT, SLUG, Harness


async def test_tree_and_names(harness: Harness) -> None:
    names = [n for n, _ in await harness.fs.listdir(ROOT)]
    assert SLUG in names
    team = await harness.ino(SLUG)
    assert "vfs" in [n for n, _ in await harness.fs.listdir(team)]
    pino = await harness.project_ino()
    # versions/ is not listed, but reachable by name.
    assert [n for n, _ in await harness.fs.listdir(pino)] == []
    assert await harness.fs.listdir(await harness.ino(SLUG, "vfs", "versions")) == []


async def test_new_file_becomes_one_document(harness: Harness) -> None:
    await harness.write_file("a.txt", b"hello")
    assert await harness.fs.drain(30)
    docs = harness.docs()
    assert list(docs) == ["a.txt"] and docs["a.txt"]["size"] == 5
    assert harness.emu.download(SLUG, docs["a.txt"]["id"]) == b"hello"


async def test_vim_backup_rename_makes_a_version(harness: Harness) -> None:
    harness.emu.upload(SLUG, harness.project["id"], "cfg.ini", b"v1")
    pino = await harness.project_ino()
    await harness.fs.lookup(pino, "cfg.ini")
    await harness.fs.rename(pino, "cfg.ini", pino, "cfg.ini~", 0)
    await harness.write_file("cfg.ini", b"v2")
    await harness.fs.unlink(pino, "cfg.ini~")
    assert await harness.fs.drain(30)
    docs = harness.docs()
    assert list(docs) == ["cfg.ini"]
    versions = harness.emu.api("GET", f"/{SLUG}/attachments/{docs['cfg.ini']['id']}/versions")
    assert [int(v["version"]) for v in versions] == [1, 2]
    assert harness.emu.download(SLUG, docs["cfg.ini"]["id"]) == b"v2"


async def test_backup_rename_then_rm_deletes_the_document(harness: Harness) -> None:
    harness.emu.upload(SLUG, harness.project["id"], "old.txt", b"x")
    pino = await harness.project_ino()
    await harness.fs.lookup(pino, "old.txt")
    await harness.fs.rename(pino, "old.txt", pino, "old.txt~", 0)
    assert harness.docs()  # still on the server while only renamed locally
    await harness.fs.unlink(pino, "old.txt~")
    assert harness.docs() == {}


async def test_single_version_documents_list_versions_without_a_call(harness: Harness) -> None:
    harness.emu.upload(SLUG, harness.project["id"], "one.txt", b"1")
    pino = await harness.project_ino()
    await harness.fs.listdir(pino)
    harness.emu.reset_stats()
    vdir = await harness.ino(SLUG, "vfs", "versions", "one.txt")
    assert [n for n, _ in await harness.fs.listdir(vdir)] == ["one.v1.txt"]
    assert harness.emu.count("GET /v2/{slug}/attachments/{id}/versions") == 0


async def test_rights_refused_before_transfer(harness: Harness) -> None:
    doc = harness.emu.upload(SLUG, harness.project["id"], "secret.pdf", b"%PDF")
    harness.emu.admin("PUT", f"/attachments/{doc['id']}/rights", json={"download": False})
    ino = await harness.ino(SLUG, "vfs", "secret.pdf")
    with pytest.raises(FsError) as info:
        await harness.fs.open(ino, os.O_RDONLY)
    assert info.value.errno == errno.EACCES


async def test_listing_errors_are_the_api_errors_not_groups(harness: Harness) -> None:
    team = await harness.ino(SLUG)
    harness.emu.admin(
        "POST", f"/teams/{SLUG}/projects", json={"name": "later", "hasWriteAccess": True}
    )
    harness.fs.remote._auth = StaticToken("expired")
    harness.fs.listings.meta.clear()
    with pytest.raises((UnauthorizedError, AuthError)):
        await harness.fs.lookup(team, "later")


async def test_team_root_has_its_id(emulator: Emulator, tmp_path: Path) -> None:
    config = Config(
        mountpoint=tmp_path / "m", api_url=emulator.url, cache_dir=tmp_path / "c", team=SLUG
    )
    config.cache_dir.mkdir()
    team = next(t for t in emulator.api("GET", "/teams") if t["slug"] == SLUG)
    async with BimplusClient(emulator.url, StaticToken(emulator.token)) as client:
        fs = Filesystem(
            config, client, ContentStore(config.cache_dir, 64 << 20), Journal(config.cache_dir)
        )
        assert await fs.getxattr(ROOT, "user.bimplus.id") == team["id"].encode()
        assert await fs.getxattr(ROOT, "user.bimplus.slug") == SLUG.encode()
        # Namespaces this file system does not have are unsupported, not merely unset.
        for foreign in ("security.capability", "security.selinux", "system.posix_acl_access"):
            with pytest.raises(FsError) as info:
                await fs.getxattr(ROOT, foreign)
            assert info.value.errno == errno.ENOTSUP
        with pytest.raises(FsError) as info:
            await fs.getxattr(ROOT, "user.other")
        assert info.value.errno == errno.ENODATA
