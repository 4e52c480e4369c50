"""``bimfs.vfs.rights`` and the tree on ``FakeRemote``: mode bits and refusals follow the
document's rights and the project's write access, before any transfer."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from bimfs.vfs.errors import FsError
from tests.vfs.fake import FakeHarness


async def test_no_download_right_means_not_readable(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "secret.pdf", b"secret")
    fake.server.set_rights(doc.id, download=False)
    ino = await fake.dir_ino("secret.pdf")
    assert not (await fake.fs.getattr(ino)).mode & stat.S_IRUSR
    with pytest.raises(FsError) as err:
        await fake.fs.open(ino, os.O_RDONLY)
    assert err.value.errno == errno.EACCES
    assert fake.remote.calls["open_download"] == 0


async def test_no_update_right_means_not_writable(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "fixed.txt", b"x")
    fake.server.set_rights(doc.id, update=False)
    ino = await fake.dir_ino("fixed.txt")
    assert not (await fake.fs.getattr(ino)).mode & stat.S_IWUSR
    with pytest.raises(FsError) as err:
        await fake.fs.open(ino, os.O_WRONLY)
    assert err.value.errno == errno.EACCES


async def test_no_delete_right(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "kept.txt", b"x")
    fake.server.set_rights(doc.id, delete=False)
    await fake.names()
    with pytest.raises(FsError) as err:
        await fake.unlink("kept.txt")
    assert err.value.errno == errno.EACCES
    assert list(fake.docs()) == ["kept.txt"]
    assert fake.remote.calls["delete_attachment"] == 0


async def test_a_project_without_write_access(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"x")
    fake.server.set_write_access(fake.pid, False)
    pino = await fake.dir_ino("")
    with pytest.raises(FsError) as err:
        await fake.fs.create(pino, "new.txt", os.O_WRONLY | os.O_CREAT)
    assert err.value.errno == errno.EACCES


async def test_folders(fake: FakeHarness) -> None:
    await fake.mkdir("Plans")
    await fake.mkdir("Plans/Sub")
    assert [f.name for f in fake.server.folder_nodes(fake.pid)] == ["Plans"]
    await fake.write_file("Plans/Sub/a.txt", b"a")
    await fake.sync()
    with pytest.raises(FsError) as err:
        await fake.rmdir("Plans")
    assert err.value.errno == errno.ENOTEMPTY
    await fake.unlink("Plans/Sub/a.txt")
    await fake.rmdir("Plans/Sub")
    await fake.rmdir("Plans")
    assert fake.server.folder_nodes(fake.pid) == []
    assert fake.docs() == {}


async def test_deleting_the_only_version_is_refused(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "one.txt", b"x")
    with pytest.raises(FsError) as err:
        await fake.unlink("versions/one.txt/one.v1.txt")
    assert err.value.errno == errno.EPERM


async def test_handles_survive_a_delete_while_open(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"still readable")
    ino = await fake.dir_ino("a.txt")
    fh, _ = await fake.fs.open(ino, os.O_RDONLY)
    assert await fake.fs.read(fh, 0, 5) == b"still"  # a small document is cached whole
    await fake.unlink("a.txt")
    assert await fake.fs.read(fh, 0, 100) == b"still readable"
    assert (await fake.fs.getattr(ino)).nlink == 0
    await fake.fs.release(fh)
