"""How real programs save, replayed in-process on ``Filesystem`` against the emulator.

Each test follows the system calls a program makes (taken from strace of the program) and
checks the server afterwards: exactly the documents and versions a local disk user expects.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bimfs.vfs.errors import FsError
from tests.support.emulator import Emulator
from tests.vfs.conftest import SLUG, Harness, open_harness

LISTING = "GET /v2/{slug}/projects/{pid}/attachments"
STRUCTURES = "GET /v2/{slug}/projects/{pid}/structures"


async def write_all(harness: Harness, fh: int, data: bytes) -> None:
    await harness.fs.write(fh, 0, data)


async def test_gio_replace_renames_while_the_temp_is_open(harness: Harness) -> None:
    """GLib's replace (gedit, Nautilus, `gio save`): write `.goutputstream-XXXXXX`, fsync,
    rename it over the target while its descriptor is still open, then close."""
    harness.emu.upload(SLUG, harness.project["id"], "README", b"old\n")
    pino = await harness.project_ino()
    await harness.fs.lookup(pino, "README")
    fh, _ = await harness.fs.create(pino, ".goutputstream-ABC123", os.O_WRONLY | os.O_CREAT)
    await write_all(harness, fh, b"new\n")
    await harness.fs.fsync(fh)
    await harness.fs.rename(pino, ".goutputstream-ABC123", pino, "README", 0)
    await harness.fs.flush(fh)  # close() must succeed
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    docs = harness.docs()
    assert list(docs) == ["README"]
    assert harness.emu.download(SLUG, docs["README"]["id"]) == b"new\n"
    assert [v["version"] for v in harness.emu.versions(SLUG, docs["README"]["id"])] == [1, 2]
    # A later save of the same file works too.
    ino = await harness.ino(SLUG, "vfs", "README")
    fh, _ = await harness.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    await write_all(harness, fh, b"third\n")
    await harness.fs.flush(fh)
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    assert harness.emu.download(SLUG, docs["README"]["id"]) == b"third\n"


async def test_no_upload_while_open_for_writing(emulator: Emulator, tmp_path: Path) -> None:
    """A program that closes a new file empty, reopens it and writes for a long time: nothing
    reaches the server before the last close."""
    async with open_harness(emulator, tmp_path, write_back_delay=2.0) as harness:
        await _reopen_and_write(harness)


async def _reopen_and_write(harness: Harness) -> None:
    pino = await harness.project_ino()
    fh, _ = await harness.fs.create(pino, "report.ods", os.O_WRONLY | os.O_CREAT)
    await harness.fs.flush(fh)
    await harness.fs.release(fh)
    ino = await harness.ino(SLUG, "vfs", "report.ods")
    fh, _ = await harness.fs.open(ino, os.O_RDWR)
    await harness.fs.write(fh, 0, b"part one, ")
    await harness.fs.fsync(fh)
    # A drain ignores the write-back delay, but not a file open for writing.
    assert not await harness.fs.drain(0.5)
    assert harness.docs() == {}
    await harness.fs.write(fh, 10, b"part two")
    await harness.fs.flush(fh)
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    docs = harness.docs()
    assert list(docs) == ["report.ods"]
    assert harness.emu.download(SLUG, docs["report.ods"]["id"]) == b"part one, part two"
    assert harness.emu.count("POST /v2/{slug}/projects/{pid}/attachments") == 1


async def test_office_temp_names_stay_local(harness: Harness) -> None:
    """LibreOffice writes `lu*.tmp` and renames it over the document; Microsoft Office writes
    `~WRL*.tmp`, `~WRD*.tmp` and `~RF*.TMP`: none of them is ever uploaded."""
    harness.emu.upload(SLUG, harness.project["id"], "budget.xlsx", b"v1")
    pino = await harness.project_ino()
    await harness.fs.lookup(pino, "budget.xlsx")
    harness.emu.reset_stats()
    for name in ("~WRL0001.tmp", "~WRD0002.tmp", "~RF1a2b.TMP"):
        await harness.write_file(name, b"scratch")
    await harness.write_file("lu4711abcd.tmp", b"v2")
    await harness.fs.rename(pino, "lu4711abcd.tmp", pino, "budget.xlsx", 0)
    assert await harness.fs.drain(30)
    docs = harness.docs()
    assert list(docs) == ["budget.xlsx"]
    assert harness.emu.download(SLUG, docs["budget.xlsx"]["id"]) == b"v2"
    assert harness.emu.count("POST /v2/{slug}/projects/{pid}/attachments") == 0


async def test_versions_hidden_from_listings_but_reachable(harness: Harness) -> None:
    harness.emu.upload(SLUG, harness.project["id"], "plan.pdf", b"%PDF-1")
    pino = await harness.project_ino()
    assert [n for n, _ in await harness.fs.listdir(pino)] == ["plan.pdf"]
    vdir = await harness.ino(SLUG, "vfs", "versions", "plan.pdf")
    assert [n for n, _ in await harness.fs.listdir(vdir)] == ["plan.v1.pdf"]
    # The project's link count does not include versions/.
    assert (await harness.fs.getattr(pino)).nlink == 2


async def test_show_versions_lists_it(emulator: Emulator, tmp_path: Path) -> None:
    async with open_harness(emulator, tmp_path, show_versions=True) as harness:
        harness.emu.upload(SLUG, harness.project["id"], "plan.pdf", b"%PDF-1")
        pino = await harness.project_ino()
        assert [n for n, _ in await harness.fs.listdir(pino)] == ["plan.pdf", "versions"]
        assert (await harness.fs.getattr(pino)).nlink == 3


async def test_folder_holding_only_versions_is_empty_for_rmdir(harness: Harness) -> None:
    pino = await harness.project_ino()
    folder = await harness.fs.mkdir(pino, "Drawings")
    fh, _ = await harness.fs.create(folder.ino, "a.dwg", os.O_WRONLY | os.O_CREAT)
    await harness.fs.write(fh, 0, b"dwg")
    await harness.fs.flush(fh)
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    await harness.fs.lookup(folder.ino, "versions")
    await harness.fs.unlink(folder.ino, "a.dwg")
    await harness.fs.rmdir(pino, "Drawings")
    assert harness.docs() == {}
    assert harness.emu.folders(SLUG, harness.project["id"]) == []


async def test_own_changes_need_no_listing_calls(emulator: Emulator, tmp_path: Path) -> None:
    """Creating, renaming, changing and deleting documents and folders applies the server's
    answers to the cached listing: the project is listed once, not after every change."""
    async with open_harness(emulator, tmp_path, dir_ttl=3600) as harness:
        pino = await harness.project_ino()
        await harness.fs.listdir(pino)
        harness.emu.reset_stats()
        folder = await harness.fs.mkdir(pino, "Sub")
        for i in range(10):
            fh, _ = await harness.fs.create(folder.ino, f"f{i}.txt", os.O_WRONLY | os.O_CREAT)
            await harness.fs.write(fh, 0, b"x" * i)
            await harness.fs.flush(fh)
            await harness.fs.release(fh)
            assert await harness.fs.drain(30)
        await harness.fs.rename(folder.ino, "f0.txt", folder.ino, "renamed.txt", 0)
        f1 = await harness.fs.lookup(folder.ino, "f1.txt")
        await harness.fs.setxattr(f1.ino, "user.bimplus.tag", b"T")
        fh, _ = await harness.fs.open(f1.ino, os.O_WRONLY | os.O_TRUNC)
        await harness.fs.write(fh, 0, b"second version")
        await harness.fs.release(fh)
        assert await harness.fs.drain(30)
        names = sorted(n for n, _ in await harness.fs.listdir(folder.ino))
        assert names == sorted(["renamed.txt", *(f"f{i}.txt" for i in range(1, 10))])
        vdir = await harness.ino(SLUG, "vfs", "Sub", "versions", "f1.txt")
        assert [n for n, _ in await harness.fs.listdir(vdir)] == ["f1.v1.txt", "f1.v2.txt"]
        for name in names:
            await harness.fs.unlink(folder.ino, name)
        assert [n for n, _ in await harness.fs.listdir(folder.ino)] == []
        await harness.fs.rmdir(pino, "Sub")
        assert [n for n, _ in await harness.fs.listdir(pino)] == []
        assert harness.emu.count(LISTING) == 0 and harness.emu.count(STRUCTURES) == 0
        assert harness.emu.count("GET /v2/{slug}/attachments/{id}/versions") == 0
        assert harness.docs() == {}
        assert harness.emu.folders(SLUG, harness.project["id"]) == []


async def test_own_changes_survive_a_listing_fetched_meanwhile(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_harness(emulator, tmp_path, dir_ttl=3600) as harness:
        for i in range(3):
            harness.emu.upload(SLUG, harness.project["id"], f"d{i}.txt", b"d")
        pino = await harness.project_ino()
        assert len(await harness.fs.listdir(pino)) == 3
        harness.emu.reset_stats()
        await harness.fs.unlink(pino, "d0.txt")
        await harness.write_file("new.txt", b"n")
        assert await harness.fs.drain(30)
        await harness.fs.rename(pino, "d1.txt", pino, "moved.txt", 0)
        await harness.fs.mkdir(pino, "Folder")
        names = [n for n, _ in await harness.fs.listdir(pino)]
        assert names == ["Folder", "d2.txt", "moved.txt", "new.txt"]
        assert harness.emu.count(LISTING) == 0 and harness.emu.count(STRUCTURES) == 0
        # A listing fetched before a change but answered after it is patched with it: the
        # delete reaches the server after the listing's answer was made, and the listing is
        # handed over after the delete is done.
        client = harness.fs.remote
        real_list, real_delete = client.list_attachments, client.delete_attachment
        listed, deleted = trio.Event(), trio.Event()

        async def list_then_wait(slug: str, pid: str) -> Any:
            answer = await real_list(slug, pid)
            listed.set()
            await deleted.wait()
            return answer

        async def wait_then_delete(slug: str, aid: str) -> None:
            await listed.wait()
            await real_delete(slug, aid)

        client.list_attachments = list_then_wait  # type: ignore[method-assign]
        client.delete_attachment = wait_then_delete  # type: ignore[method-assign]
        seen: list[str] = []

        async def remove() -> None:
            await harness.fs.unlink(pino, "d2.txt")
            deleted.set()

        async def list_project() -> None:
            seen.extend(n for n, _ in await harness.fs.listdir(pino))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove)
            await trio.testing.wait_all_tasks_blocked()
            harness.fs.listings.meta.invalidate(("listing", SLUG, harness.project["id"]))
            nursery.start_soon(list_project)
        client.list_attachments = real_list  # type: ignore[method-assign]
        client.delete_attachment = real_delete  # type: ignore[method-assign]
        assert seen == ["Folder", "moved.txt", "new.txt"]
        assert [n for n, _ in await harness.fs.listdir(pino)] == seen


async def test_create_read_only_makes_the_file(harness: Harness) -> None:
    """`flock dir/job.lock cmd` opens the lock file with O_CREAT|O_RDONLY."""
    pino = await harness.project_ino()
    fh, attr = await harness.fs.create(pino, "job.lock", os.O_RDONLY | os.O_CREAT)
    assert attr.size == 0
    assert await harness.fs.read(fh, 0, 10) == b""
    await harness.fs.release(fh)
    assert [n for n, _ in await harness.fs.listdir(pino)] == ["job.lock"]
    assert await harness.fs.drain(30)
    assert list(harness.docs()) == ["job.lock"]


async def test_names_over_255_bytes(harness: Harness) -> None:
    pino = await harness.project_ino()
    await harness.write_file("short.txt", b"s")
    assert await harness.fs.drain(30)
    long = "x" * 256
    for call in (
        harness.fs.lookup(pino, long),
        harness.fs.create(pino, long, os.O_WRONLY | os.O_CREAT),
        harness.fs.mkdir(pino, long),
        harness.fs.rename(pino, "short.txt", pino, long, 0),
    ):
        with pytest.raises(FsError) as info:
            await call
        assert info.value.errno == errno.ENAMETOOLONG
    assert [n for n, _ in await harness.fs.listdir(pino)] == ["short.txt"]


async def test_times_and_link_counts(harness: Harness) -> None:
    pino = await harness.project_ino()
    await harness.write_file("t.txt", b"t")
    assert await harness.fs.drain(30)
    ino = await harness.ino(SLUG, "vfs", "t.txt")
    attr = await harness.fs.setattr(ino, None, None, mtime=1_000_000.0, atime=2_000_000.0)
    assert (attr.mtime, attr.atime) == (1_000_000.0, 2_000_000.0)
    attr = await harness.fs.setattr(ino, None, None, atime=3_000_000.0)
    assert (attr.mtime, attr.atime) == (1_000_000.0, 3_000_000.0)
    await harness.fs.mkdir(pino, "A")
    await harness.fs.mkdir(pino, "B")
    assert (await harness.fs.getattr(pino)).nlink == 4
    fh, _ = await harness.fs.open(ino, os.O_RDONLY)
    await harness.fs.unlink(pino, "t.txt")
    assert (await harness.fs.getattr(ino)).nlink == 0
    await harness.fs.release(fh)


async def test_copying_extended_attributes_along(harness: Harness) -> None:
    """`mv` between folders and `cp -a` copy every extended attribute to the new file: the
    tag and classification go with its upload, the read-only ones are refused quietly
    (ENOTSUP, which those tools skip) unless they already have that value."""
    harness.emu.upload(SLUG, harness.project["id"], "src.txt", b"s")
    pino = await harness.project_ino()
    src = await harness.fs.lookup(pino, "src.txt")
    await harness.fs.setxattr(src.ino, "user.bimplus.tag", b"T-1")
    await harness.fs.setxattr(
        src.ino, "user.bimplus.id", await harness.fs.getxattr(src.ino, "user.bimplus.id")
    )
    fh, attr = await harness.fs.create(pino, "copy.txt", os.O_WRONLY | os.O_CREAT)
    await harness.fs.write(fh, 0, b"s")
    for name in await harness.fs.listxattr(src.ino):
        value = await harness.fs.getxattr(src.ino, name)
        if name in ("user.bimplus.tag", "user.bimplus.classification"):
            await harness.fs.setxattr(attr.ino, name, value)
        else:
            with pytest.raises(FsError) as info:
                await harness.fs.setxattr(attr.ino, name, value)
            assert info.value.errno == errno.ENOTSUP, name
    assert await harness.fs.getxattr(attr.ino, "user.bimplus.tag") == b"T-1"
    await harness.fs.flush(fh)
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    assert harness.docs()["copy.txt"]["tag"] == "T-1"
    assert await harness.fs.getxattr(attr.ino, "user.bimplus.tag") == b"T-1"


class HeldUploads:
    """Holds the client's document creations at a gate (the real request runs once the gate
    opens), so a test can act while a first upload is under way."""

    def __init__(self, harness: Harness, *, stored: bool = False) -> None:
        self.client = harness.fs.remote
        self.real = self.client.create_attachment
        self.gate = trio.Event()
        self.waiting = trio.Event()
        self.stored = stored  # hold after the server stored it, before its answer arrives

    def __enter__(self) -> HeldUploads:
        async def held(*args: Any, **kwargs: Any) -> Any:
            answer = await self.real(*args, **kwargs) if self.stored else None
            self.waiting.set()
            await self.gate.wait()
            return answer if self.stored else await self.real(*args, **kwargs)

        self.client.create_attachment = held  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.create_attachment = self.real  # type: ignore[method-assign]


async def test_saved_file_keeps_its_times_after_the_upload(harness: Harness) -> None:
    """Editors compare a file's time with the one they saw at their last save (vim warns
    "changed since reading it"): the upload must not move it."""
    await harness.write_file("t.txt", b"t")
    ino = await harness.ino(SLUG, "vfs", "t.txt")
    before = await harness.fs.getattr(ino)
    assert await harness.fs.drain(30)
    harness.fs.listings.meta.invalidate(("listing", SLUG, harness.project["id"]))
    after = await harness.fs.getattr(ino)
    assert (after.mtime, after.ctime) == (before.mtime, before.ctime)
    assert await harness.fs.getxattr(ino, "user.bimfs.state") == b"synced"


async def test_folder_time_is_stable(harness: Harness) -> None:
    pino = await harness.project_ino()
    made = await harness.fs.mkdir(pino, "New")
    harness.fs.listings.meta.invalidate(("listing", SLUG, harness.project["id"]))
    await harness.fs.listdir(pino)
    assert (await harness.fs.getattr(made.ino)).mtime == made.mtime


async def test_rename_while_the_first_upload_runs(harness: Harness) -> None:
    pino = await harness.project_ino()
    with HeldUploads(harness) as held:
        await harness.write_file("draft.tmp", b"content")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.fs.drain, 30)
            await held.waiting.wait()
            await harness.fs.rename(pino, "draft.tmp", pino, "final.txt", 0)
            held.gate.set()
    assert await harness.fs.drain(30)
    assert [n for n, _ in await harness.fs.listdir(pino)] == ["final.txt"]
    docs = harness.docs()
    assert list(docs) == ["final.txt"]
    assert harness.emu.download(SLUG, docs["final.txt"]["id"]) == b"content"


async def test_rename_over_a_document_while_the_first_upload_runs(harness: Harness) -> None:
    target = harness.emu.upload(SLUG, harness.project["id"], "tgt.bin", b"old content")
    pino = await harness.project_ino()
    await harness.fs.lookup(pino, "tgt.bin")
    with HeldUploads(harness) as held:
        await harness.write_file("src.tmp", b"new content")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.fs.drain, 30)
            await held.waiting.wait()
            await harness.fs.rename(pino, "src.tmp", pino, "tgt.bin", 0)
            held.gate.set()
    assert await harness.fs.drain(30)
    assert [n for n, _ in await harness.fs.listdir(pino)] == ["tgt.bin"]
    docs = harness.docs()
    assert list(docs) == ["tgt.bin"] and docs["tgt.bin"]["id"] == target["id"]
    assert harness.emu.download(SLUG, target["id"]) == b"new content"
    assert [v["version"] for v in harness.emu.versions(SLUG, target["id"])] == [1, 2]
    ino = await harness.ino(SLUG, "vfs", "tgt.bin")
    assert await harness.fs.getxattr(ino, "user.bimplus.id") == target["id"].encode()
    # Later saves go to the target document.
    fh, _ = await harness.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    await harness.fs.write(fh, 0, b"edited")
    await harness.fs.release(fh)
    assert await harness.fs.drain(30)
    assert harness.emu.download(SLUG, target["id"]) == b"edited"
    assert list(harness.docs()) == ["tgt.bin"]


async def test_rmdir_after_deleting_a_file_whose_first_upload_runs(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_harness(emulator, tmp_path, dir_ttl=3600) as harness:
        await _rmdir_after_deleting(harness)


async def _rmdir_after_deleting(harness: Harness) -> None:
    pino = await harness.project_ino()
    folder = await harness.fs.mkdir(pino, "rc")
    with HeldUploads(harness, stored=True) as held:
        fh, _ = await harness.fs.create(folder.ino, "f", os.O_WRONLY | os.O_CREAT)
        await harness.fs.write(fh, 0, b"hello")
        await harness.fs.release(fh)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.fs.drain, 30)
            await held.waiting.wait()
            await harness.fs.unlink(folder.ino, "f")
            assert await harness.fs.listdir(folder.ino) == []

            async def rmdir() -> None:
                await harness.fs.rmdir(pino, "rc")

            nursery.start_soon(rmdir)
            await trio.testing.wait_all_tasks_blocked()
            held.gate.set()
    assert harness.docs() == {}
    assert harness.emu.folders(SLUG, harness.project["id"]) == []


async def test_sizes_beyond_a_file_are_the_callers_error(harness: Harness) -> None:
    await harness.write_file("small.txt", b"s")
    assert await harness.fs.drain(30)
    ino = await harness.ino(SLUG, "vfs", "small.txt")
    with pytest.raises(FsError) as info:
        await harness.fs.setattr(ino, 1 << 62, None)
    assert info.value.errno in (errno.EFBIG, errno.EINVAL)
    assert (await harness.fs.getattr(ino)).size == 1


async def test_editing_a_document_larger_than_the_cache(emulator: Emulator, tmp_path: Path) -> None:
    """Changing a document in place starts from a copy of it; one the cache cannot hold is
    read through into that copy instead of failing."""
    async with open_harness(emulator, tmp_path, cache_bytes=16 << 20) as harness:
        size = 20 << 20
        doc = emulator.admin(
            "POST",
            f"/teams/{SLUG}/projects/{harness.project['id']}/blob",
            params={"fileName": "big.bin", "size": size, "seed": "edit"},
        )
        original = emulator.download(SLUG, doc["id"])
        ino = await harness.ino(SLUG, "vfs", "big.bin")
        fh, _ = await harness.fs.open(ino, os.O_WRONLY)
        await harness.fs.write(fh, size, b"tail")
        await harness.fs.flush(fh)
        await harness.fs.release(fh)
        assert await harness.fs.drain(60)
        assert emulator.download(SLUG, doc["id"]) == original + b"tail"
