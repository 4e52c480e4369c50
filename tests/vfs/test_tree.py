"""``bimfs.vfs.tree`` and handles on ``FakeRemote``: inode numbers, names, lookups and
streaming uploads of large files written from empty."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.fake_remote import TOM
from tests.vfs.fake import FakeHarness, open_fake


async def test_inodes_are_stable_across_listings_and_versions(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "a.txt", b"one")
    ino = await fake.dir_ino("a.txt")
    fake.server.new_version(doc.id, b"two", user=TOM)
    fake.server.upload(fake.pid, "b.txt", b"b")
    assert await fake.names() == ["a.txt", "b.txt"]
    assert await fake.dir_ino("a.txt") == ino
    assert (await fake.fs.getattr(ino)).size == 3
    await fake.rename("a.txt", "c.txt")
    assert await fake.dir_ino("c.txt") == ino


async def test_same_names_on_the_server_are_told_apart(fake: FakeHarness) -> None:
    first = fake.server.upload(fake.pid, "plan.pdf", b"first")
    second = fake.server.upload(fake.pid, "plan.pdf", b"second")
    names = await fake.names()
    assert len(names) == 2 and "plan.pdf" in names
    ids = {await fake.xattr(n, "user.bimplus.id") for n in names}
    assert ids == {first.id, second.id}
    assert await fake.read("plan.pdf") == b"first"  # the older keeps the plain name


async def test_forgotten_removed_nodes_go(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"a")
    ino = await fake.dir_ino("a.txt")
    before = len(fake.fs.tree.inodes)
    await fake.unlink("a.txt")
    fake.fs.forget(ino, 1000)
    assert len(fake.fs.tree.inodes) < before


async def test_open_handles_are_released(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"a")
    ino = await fake.dir_ino("a.txt")
    handles = [(await fake.fs.open(ino, os.O_RDONLY))[0] for _ in range(3)]
    assert len(set(handles)) == 3
    for fh in handles:
        await fake.fs.release(fh)
    assert fake.fs.tree.node(ino).open_count == 0


async def test_a_large_file_written_from_empty_is_streamed(tmp_path: Path) -> None:
    """8 MiB and more written sequentially start travelling while written: one streamed
    upload, one document, nothing sent the ordinary way."""
    async with open_fake(tmp_path, write_back_delay=0) as fake:
        pino = await fake.dir_ino("")
        fh, _ = await fake.fs.create(pino, "big.bin", os.O_WRONLY | os.O_CREAT)
        block = bytes(range(256)) * 4096  # 1 MiB
        for i in range(9):
            await fake.fs.write(fh, i * len(block), block)
        await fake.fs.flush(fh)
        await fake.fs.release(fh)
        await fake.sync()
        assert fake.remote.calls["stream_upload"] == 1
        assert fake.remote.calls["create_attachment"] == 0
        assert fake.content("big.bin") == block * 9
