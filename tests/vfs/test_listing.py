"""``bimfs.vfs.listing`` on ``FakeRemote``: the mount's own changes are applied to the cached
listing from the server's answers, without listing again."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_remote import TOM
from tests.vfs.fake import FakeHarness, open_fake


async def test_own_changes_cost_no_listing(tmp_path: Path) -> None:
    async with open_fake(tmp_path, dir_ttl=3600, write_back_delay=60) as fake:
        a = fake.server.upload(fake.pid, "a.txt", b"a")
        fake.server.upload(fake.pid, "b.txt", b"b")
        assert await fake.names() == ["a.txt", "b.txt"]
        fake.remote.reset_calls()
        await fake.write_file("c.txt", b"new")
        await fake.write_file("a.txt", b"a2")
        await fake.rename("b.txt", "d.txt")
        await fake.mkdir("Plans")
        await fake.write_file("Plans/p.txt", b"p")
        await fake.sync()
        await fake.unlink("c.txt")
        assert await fake.names() == ["Plans", "a.txt", "d.txt"]
        assert await fake.names("Plans") == ["p.txt"]
        assert fake.remote.calls["list_attachments"] == 0
        assert fake.remote.calls["get_folders"] == 0
        assert (await fake.fs.getattr(await fake.dir_ino("a.txt"))).size == 2
        assert await fake.xattr("a.txt", "user.bimplus.version") == "2"
        assert sorted(fake.docs()) == ["a.txt", "d.txt", "p.txt"]
        assert fake.server.content(a.id) == b"a2"


async def test_rm_of_many_files_is_one_listing(tmp_path: Path) -> None:
    async with open_fake(tmp_path, dir_ttl=3600) as fake:
        for i in range(30):
            fake.server.upload(fake.pid, f"f{i:02}.txt", b"x")
        assert len(await fake.names()) == 30
        for i in range(30):
            await fake.unlink(f"f{i:02}.txt")
        assert await fake.names() == []
        assert fake.remote.calls["list_attachments"] == 1
        assert fake.remote.calls["delete_attachment"] == 30
        assert fake.docs() == {}


async def test_others_changes_show_after_the_ttl(tmp_path: Path) -> None:
    async with open_fake(tmp_path, dir_ttl=0) as fake:
        doc = fake.server.upload(fake.pid, "a.txt", b"one")
        assert await fake.read("a.txt") == b"one"
        fake.server.new_version(doc.id, b"two!", user=TOM)
        fake.server.upload(fake.pid, "b.txt", b"b", user=TOM)
        assert await fake.names() == ["a.txt", "b.txt"]
        assert await fake.read("a.txt") == b"two!"
        await fake.remote.colleague.delete_attachment(fake.server.slug, doc.id)
        assert await fake.names() == ["b.txt"]


async def test_versions_directory(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "plan.txt", b"one")
    fake.server.new_version(doc.id, b"two", user=TOM)
    assert await fake.names("versions/plan.txt") == ["plan.v1.txt", "plan.v2.txt"]
    assert await fake.read("versions/plan.txt/plan.v1.txt") == b"one"
    await fake.unlink("versions/plan.txt/plan.v1.txt")
    assert [v.version for v in fake.server.versions(doc.id)] == [2]
    assert await fake.names("versions/plan.txt") == ["plan.v2.txt"]
