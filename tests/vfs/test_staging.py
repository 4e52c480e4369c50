"""``bimfs.vfs.staging`` on ``FakeRemote``: a file being written behaves as on a local disk
until its upload, and its content is durable in the journal from ``close()``."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.fake_remote import FakeRemote
from tests.vfs.fake import FakeHarness, fake_config, fake_fs, open_fake


async def test_edits_before_the_upload_are_local_disk_semantics(fake: FakeHarness) -> None:
    await fake.write_file("a.bin", b"0123456789")
    ino = await fake.dir_ino("a.bin")
    fh, _ = await fake.fs.open(ino, os.O_RDWR)
    await fake.fs.write(fh, 20, b"sparse")  # a hole from 10 to 20
    assert await fake.fs.read(fh, 0, 100) == b"0123456789" + bytes(10) + b"sparse"
    await fake.fs.release(fh)
    await fake.truncate("a.bin", 4)
    await fake.append("a.bin", b"+tail")
    assert (await fake.fs.getattr(ino)).size == 9
    assert await fake.read("a.bin") == b"0123+tail"
    assert fake.docs() == {}
    await fake.sync()
    assert fake.content("a.bin") == b"0123+tail"
    assert fake.remote.calls["create_attachment"] == 1


async def test_editing_a_document_copies_its_current_content(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"hello world")
    ino = await fake.dir_ino("a.txt")
    fh, _ = await fake.fs.open(ino, os.O_RDWR)
    await fake.fs.write(fh, 6, b"WORLD")
    await fake.fs.release(fh)
    assert fake.remote.calls["open_download"] >= 1
    await fake.sync()
    assert fake.content("a.txt") == b"hello WORLD"
    assert fake.versions("a.txt") == [1, 2]


async def test_two_writers_one_version(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"aaaa")
    ino = await fake.dir_ino("a.txt")
    one, _ = await fake.fs.open(ino, os.O_WRONLY)
    two, _ = await fake.fs.open(ino, os.O_WRONLY)
    await fake.fs.write(one, 0, b"1")
    await fake.fs.write(two, 1, b"2")
    await fake.fs.release(one)
    await fake.fs.write(two, 2, b"3")
    await fake.fs.release(two)
    await fake.sync()
    assert fake.content("a.txt") == b"123a"
    assert fake.versions("a.txt") == [1, 2]


async def test_a_closed_save_survives_a_crash(tmp_path: Path) -> None:
    """Saved (closed) and never sent: the next mount on the cache dir shows and sends it."""
    remote = FakeRemote()
    async with open_fake(tmp_path, remote, write_back_delay=3600) as fake:
        await fake.write_file("a.txt", b"kept")
        assert fake.docs() == {}
    remote.reset_calls()
    async with open_fake(tmp_path, remote, write_back_delay=3600) as again:
        assert await again.read("a.txt") == b"kept"
        await again.sync()
        assert again.content("a.txt") == b"kept"
    assert remote.calls["create_attachment"] == 1


async def test_a_new_file_sent_before_its_folder_is_listed_again(tmp_path: Path) -> None:
    """After a crash, a pending new file is sent at once by the next mount, before anybody
    lists its folder: it is shown once, as the document it became."""
    remote = FakeRemote()
    async with open_fake(tmp_path, remote, write_back_delay=3600) as fake:
        await fake.write_file("a.txt", b"kept")
    async with open_fake(tmp_path, remote, write_back_delay=3600) as again:
        await again.sync()
        assert list(again.docs()) == ["a.txt"]
        assert await again.names() == ["a.txt"]
        assert await again.xattr("a.txt", "user.bimplus.id") == again.docs()["a.txt"].id


async def test_deleting_an_unsent_file_sends_nothing(fake: FakeHarness) -> None:
    await fake.write_file("a.txt", b"x")
    await fake.unlink("a.txt")
    await fake.sync()
    assert fake.docs() == {}
    assert fake.remote.calls["create_attachment"] == 0
    assert not fake.fs.journal.entries()


def test_fake_fs_builds_without_running(tmp_path: Path) -> None:
    fs = fake_fs(fake_config(tmp_path), FakeRemote())
    assert fs.root.ino == 1
