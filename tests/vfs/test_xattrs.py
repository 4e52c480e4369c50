"""``bimfs.vfs.xattrs`` on ``FakeRemote``: metadata, sync state, writable tags."""

from __future__ import annotations

import errno

import pytest

from bimfs.vfs.errors import FsError
from tests.support.fake_remote import TOM
from tests.vfs.fake import FakeHarness


async def test_a_documents_attributes(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "plan.pdf", b"%PDF", content_type="application/pdf")
    fake.server.new_version(doc.id, b"%PDF-2", user=TOM)
    ino = await fake.dir_ino("plan.pdf")
    names = await fake.fs.listxattr(ino)
    for name in ("id", "version", "hash", "type", "creator", "changed_by", "tag"):
        assert f"user.bimplus.{name}" in names
    assert await fake.xattr("plan.pdf", "user.bimplus.id") == doc.id
    assert await fake.xattr("plan.pdf", "user.bimplus.version") == "2"
    assert "tom.keller@acme.test" in await fake.xattr("plan.pdf", "user.bimplus.changed_by")
    assert "demo@bimfs.test" in await fake.xattr("plan.pdf", "user.bimplus.creator")
    assert await fake.xattr("plan.pdf", "user.bimfs.state") == "synced"
    assert await fake.xattr("", "user.bimplus.id") == fake.pid


async def test_tag_and_classification_are_sent_at_once(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "a.txt", b"a")
    ino = await fake.dir_ino("a.txt")
    await fake.fs.setxattr(ino, "user.bimplus.tag", b"approved")
    await fake.fs.setxattr(ino, "user.bimplus.classification", b"plans")
    att = fake.server.model(fake.server.doc(doc.id))
    assert (att.tag, att.classification) == ("approved", "plans")
    assert await fake.xattr("a.txt", "user.bimplus.tag") == "approved"
    assert fake.server.versions(doc.id)[-1].version == 1  # metadata is no version


async def test_tag_of_a_new_file_goes_with_its_upload(fake: FakeHarness) -> None:
    await fake.write_file("new.txt", b"n")
    await fake.fs.setxattr(await fake.dir_ino("new.txt"), "user.bimplus.tag", b"draft")
    assert fake.remote.calls["update_attachment"] == 0
    await fake.sync()
    assert fake.docs()["new.txt"].tag == "draft"


async def test_release_shares_the_latest_version(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "a.txt", b"a")
    await fake.fs.setxattr(await fake.dir_ino("a.txt"), "user.bimplus.release", b"1")
    assert fake.server.doc(doc.id).release


async def test_read_only_names_are_refused_unless_unchanged(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "a.txt", b"a")
    ino = await fake.dir_ino("a.txt")
    await fake.fs.setxattr(ino, "user.bimplus.id", doc.id.encode())  # as it is: accepted
    with pytest.raises(FsError) as err:
        await fake.fs.setxattr(ino, "user.bimplus.id", b"other")
    assert err.value.errno == errno.ENOTSUP
    with pytest.raises(FsError) as err:
        await fake.fs.removexattr(ino, "user.bimplus.tag")
    assert err.value.errno == errno.EACCES


async def test_states_of_a_save(fake: FakeHarness) -> None:
    await fake.write_file("a.txt", b"a")
    assert await fake.xattr("a.txt", "user.bimfs.state") == "pending"
    await fake.write_file(".a.txt.swp", b"swap")
    assert await fake.xattr(".a.txt.swp", "user.bimfs.state") == "local"
    await fake.sync()
    assert await fake.xattr("a.txt", "user.bimfs.state") == "synced"
    assert list(fake.docs()) == ["a.txt"]
