"""``bimfs.vfs.uploads`` (and the uploader under it) on ``FakeRemote``: when a save is sent,
retries, lost answers, colleagues' versions, refusals."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from bimfs.api.errors import ForbiddenError, ServerError
from bimfs.vfs import staging as staging_module
from tests.support.fake_remote import TOM, FakeRemote
from tests.vfs.fake import FakeHarness, open_fake


async def wait_for(condition: object, limit: float = 10.0) -> None:
    """Wait (at most ``limit`` seconds) until ``condition()`` is true."""
    assert callable(condition)
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 (a condition on the fake server)
            await trio.sleep(0.01)


async def test_the_write_back_delay_holds_the_upload(tmp_path: Path) -> None:
    async with open_fake(tmp_path, write_back_delay=0.5) as fake:
        await fake.names()
        await fake.write_file("a.txt", b"one")
        await trio.sleep(0.1)
        assert fake.remote.calls["create_attachment"] == 0
        assert await fake.xattr("a.txt", "user.bimfs.state") == "pending"
        await wait_for(lambda: "a.txt" in fake.docs())
        assert fake.content("a.txt") == b"one"
        await wait_for(lambda: not fake.fs.journal.entries())


async def test_saves_within_the_delay_make_one_version(tmp_path: Path) -> None:
    async with open_fake(tmp_path, write_back_delay=0.3) as fake:
        fake.server.upload(fake.pid, "a.txt", b"v1")
        await fake.names()
        for content in (b"v2a", b"v2b", b"v2c"):
            await fake.write_file("a.txt", content)
        await wait_for(lambda: len(fake.versions("a.txt")) == 2)
        await trio.sleep(0.4)
        assert fake.versions("a.txt") == [1, 2]
        assert fake.content("a.txt") == b"v2c"


async def test_no_upload_while_open_for_writing(fake: FakeHarness) -> None:
    """A file closed empty, reopened and written for a long time: nothing is sent before its
    last close, also when a drain asks."""
    pino = await fake.dir_ino("")
    fh, _ = await fake.fs.create(pino, "report.ods", os.O_WRONLY | os.O_CREAT)
    await fake.fs.release(fh)
    fh, _ = await fake.fs.open(await fake.dir_ino("report.ods"), os.O_RDWR)
    await fake.fs.write(fh, 0, b"part one, ")
    assert not await fake.fs.drain(0.2)
    assert fake.docs() == {}
    await fake.fs.write(fh, 10, b"part two")
    await fake.fs.release(fh)
    await fake.sync()
    assert fake.content("report.ods") == b"part one, part two"
    assert fake.remote.calls["create_attachment"] == 1


async def test_a_failed_upload_is_retried(fake: FakeHarness) -> None:
    fake.remote.fail_next("create_attachment", ServerError(503, "busy"), times=2)
    await fake.write_file("a.txt", b"content")
    await fake.sync()
    assert fake.content("a.txt") == b"content"
    assert fake.remote.calls["create_attachment"] == 3
    assert await fake.xattr("a.txt", "user.bimfs.state") == "synced"


async def test_a_refused_upload_is_kept_and_not_retried(fake: FakeHarness) -> None:
    fake.remote.fail_next("create_attachment", ForbiddenError(403, "locked"))
    await fake.write_file("a.txt", b"content")
    await fake.fs.drain(2)
    assert fake.docs() == {}
    assert fake.remote.calls["create_attachment"] == 1
    state = await fake.xattr("a.txt", "user.bimfs.state")
    assert state.startswith("failed: ") and "403" in state
    assert await fake.read("a.txt") == b"content"


async def test_one_save_one_version_after_a_lost_answer(fake: FakeHarness) -> None:
    """The server stored the version but the answer was lost and could not be settled: the
    retry finds it in the version list and sends nothing again."""
    fake.server.upload(fake.pid, "a.txt", b"v1")
    await fake.names()
    fake.remote.lose_answer("create_version")
    await fake.write_file("a.txt", b"version two")
    await fake.sync()
    assert fake.versions("a.txt") == [1, 2]
    assert fake.content("a.txt") == b"version two"
    assert fake.remote.calls["create_version"] == 1
    assert await fake.xattr("a.txt", "user.bimfs.state") == "synced"


async def test_one_save_one_document_after_a_lost_answer(fake: FakeHarness) -> None:
    fake.remote.lose_answer("create_attachment")
    await fake.write_file("new.txt", b"a new file")
    await fake.sync()
    assert list(fake.docs()) == ["new.txt"]
    assert fake.remote.calls["create_attachment"] == 1
    assert await fake.read("new.txt") == b"a new file"


async def test_a_lost_answer_settled_by_the_client(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "a.txt", b"v1")
    await fake.names()
    fake.remote.lose_answer("create_version", settle=True)
    await fake.write_file("a.txt", b"v2")
    await fake.sync()
    assert fake.versions("a.txt") == [1, 2]


async def test_a_colleagues_version_is_never_buried(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "notes.txt", b"start\n")
    await fake.names()
    await fake.append("notes.txt", b"ours\n")
    fake.server.new_version(doc.id, b"start\ntheirs\n", user=TOM)
    await fake.sync()
    docs = fake.docs()
    copies = [n for n in docs if n != "notes.txt"]
    assert len(copies) == 1
    assert re.fullmatch(r"notes \(conflict \d{4}-\d\d-\d\d \d{4} demo\)\.txt", copies[0])
    assert fake.content(copies[0]) == b"start\nours\n"
    assert fake.content("notes.txt") == b"start\ntheirs\n"
    assert fake.versions("notes.txt") == [1, 2]
    assert await fake.read("notes.txt") == b"start\ntheirs\n"
    assert await fake.read(copies[0]) == b"start\nours\n"
    state = await fake.xattr(copies[0], "user.bimfs.state")
    assert state == "conflict: based on v1, server had v2 by tom.keller@acme.test"


async def test_two_conflict_copies_in_one_minute_have_two_names(fake: FakeHarness) -> None:
    """A second conflict of the same file within the minute gets its own name: a second copy
    of the same name would show with a name made up by the mount, and elsewhere (the web app,
    another mount) as two documents of one name."""
    doc = fake.server.upload(fake.pid, "notes.txt", b"start\n")
    await fake.names()
    for n in (1, 2):
        await fake.append("notes.txt", b"ours %d\n" % n)
        fake.server.new_version(doc.id, b"theirs %d\n" % n, user=TOM)
        await fake.sync()
    copies = sorted(name for name in fake.docs() if name != "notes.txt")
    assert len(copies) == 2, copies
    assert re.fullmatch(r"notes \(conflict \d{4}-\d\d-\d\d \d{4} demo( 2)?\)\.txt", copies[0])
    assert sorted(await fake.names()) == sorted(["notes.txt", *copies])


async def test_a_colleague_renamed_the_document_meanwhile(fake: FakeHarness) -> None:
    """A rename is no new version: a save begun before it goes on as the next version."""
    doc = fake.server.upload(fake.pid, "a.txt", b"v1")
    fh, _ = await fake.fs.open(await fake.dir_ino("a.txt"), os.O_WRONLY | os.O_TRUNC)
    await fake.remote.colleague.update_attachment(fake.server.slug, doc.id, file_name="b.txt")
    await fake.fs.write(fh, 0, b"v2")
    await fake.fs.release(fh)
    await fake.sync()
    assert [v.version for v in fake.server.versions(doc.id)] == [1, 2]
    assert fake.server.content(doc.id) == b"v2"
    # The version keeps the colleague's name (the server names a document after the file
    # name of its newest upload, which used to undo the rename).
    assert list(fake.docs()) == ["b.txt"]
    assert await fake.names() == ["b.txt"]
    assert await fake.read("b.txt") == b"v2"


async def test_a_colleague_deleted_the_document_meanwhile(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "plan.txt", b"v1")
    await fake.names()
    await fake.remote.colleague.delete_attachment(fake.server.slug, doc.id)
    await fake.write_file("plan.txt", b"edited")
    await fake.sync()
    docs = fake.docs()
    assert list(docs) == ["plan.txt"] and docs["plan.txt"].id != doc.id
    assert fake.content("plan.txt") == b"edited"


async def test_a_crash_after_the_server_stored_the_save(tmp_path: Path) -> None:
    """The mount dies between the server storing an upload and its answer: the next mount on
    the same cache dir finds it and sends nothing again."""
    remote = FakeRemote()
    async with open_fake(tmp_path, remote) as fake:
        doc = fake.server.upload(fake.pid, "model.ifc", b"v1")
        await fake.names()
        fake.remote.lose_answer("create_version")
        fake.remote.hold("list_versions")  # the retry would look; the mount dies first
        await fake.write_file("model.ifc", b"version two")
        await wait_for(lambda: fake.remote.calls["list_versions"] > 0)
        assert fake.remote.calls["create_version"] == 1
    remote.release_held()
    remote.reset_calls()
    async with open_fake(tmp_path, remote) as again:
        await again.sync()
        assert await again.read("model.ifc") == b"version two"
    assert remote.calls["create_version"] == 0
    assert [v.version for v in remote.server.versions(doc.id)] == [1, 2]


async def test_a_save_committed_while_the_first_upload_ends(fake: FakeHarness) -> None:
    """A new file is saved again; its first upload ends (making it a document) while the
    second save is being committed to the journal: the second save is that document's next
    version, not a new document that is deleted again as nobody's."""
    await fake.write_file("a.txt", b"first")
    fake.remote.hold("create_attachment")
    draining = trio.Event()

    async def drain() -> None:
        await fake.fs.drain(30)
        draining.set()

    entered, proceed = threading.Event(), threading.Event()
    journal = fake.fs.journal
    real_commit = journal.commit

    def slow_commit(*args: Any) -> Any:
        entered.set()
        proceed.wait(10)
        return real_commit(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await wait_for(lambda: fake.remote.calls["create_attachment"] == 1)
        fh, _ = await fake.fs.open(await fake.dir_ino("a.txt"), os.O_WRONLY | os.O_TRUNC)
        await fake.fs.write(fh, 0, b"second")
        journal.commit = slow_commit  # type: ignore[method-assign]
        nursery.start_soon(fake.fs.release, fh)
        await wait_for(entered.is_set)
        fake.remote.release_held()
        await wait_for(lambda: "a.txt" in fake.docs())
        await wait_for(lambda: not fake.fs.uploader.running())
        proceed.set()
        await draining.wait()
    journal.commit = real_commit  # type: ignore[method-assign]
    await fake.sync()
    assert list(fake.docs()) == ["a.txt"]
    assert fake.versions("a.txt") == [1, 2]
    assert fake.content("a.txt") == b"second"
    assert fake.remote.calls["delete_attachment"] == 0
    assert await fake.read("a.txt") == b"second"


@pytest.mark.parametrize("stored", [False, True], ids=["committing", "stored"])
async def test_a_save_committed_while_the_previous_version_uploads(
    fake: FakeHarness, stored: bool
) -> None:
    """Our previous save becomes v2 while the next one is being committed: the next one
    builds on v2 (no conflict with our own save). ``stored``: the next save is already in the
    journal (the uploader may pick it up) but its commit has not come back yet; it was sent on
    v1 now and then, and became a conflict copy of our own save."""
    fake.server.upload(fake.pid, "a.txt", b"one")
    await fake.write_file("a.txt", b"two")
    fake.remote.hold("create_version")
    entered, proceed = threading.Event(), threading.Event()
    journal = fake.fs.journal
    real_commit = journal.commit

    def slow_commit(*args: Any) -> Any:
        entry = real_commit(*args) if stored else None
        entered.set()
        proceed.wait(10)
        return entry if stored else real_commit(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake.fs.drain, 30)
        await wait_for(lambda: fake.remote.calls["create_version"] == 1)
        fh, _ = await fake.fs.open(await fake.dir_ino("a.txt"), os.O_WRONLY | os.O_TRUNC)
        await fake.fs.write(fh, 0, b"three")
        journal.commit = slow_commit  # type: ignore[method-assign]
        nursery.start_soon(fake.fs.release, fh)
        await wait_for(entered.is_set)
        fake.remote.release_held()
        await wait_for(lambda: fake.versions("a.txt") == [1, 2])
        if stored:
            # The uploader has taken the new save: a moment for it to send it, were it to.
            await wait_for(lambda: bool(fake.fs.uploader.running()))
            await trio.sleep(0.2)
        else:
            await wait_for(lambda: not fake.fs.uploader.running())
        proceed.set()
    journal.commit = real_commit  # type: ignore[method-assign]
    await fake.sync()
    assert list(fake.docs()) == ["a.txt"]
    assert fake.versions("a.txt") == [1, 2, 3]
    assert fake.content("a.txt") == b"three"


async def test_a_change_begun_while_the_previous_save_uploads(
    fake: FakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncate copies the pending save's bytes while that save's upload ends (and its
    file moves into the content cache): the copy still reads them, and the change builds on
    the version the save became."""
    fake.server.upload(fake.pid, "a.txt", b"one")
    await fake.write_file("a.txt", b"version two")
    fake.remote.hold("create_version")
    entered, proceed = threading.Event(), threading.Event()

    def slowly(copy: Any) -> Any:
        def run(*args: Any) -> Any:
            entered.set()
            proceed.wait(10)
            return copy(*args)

        return run

    for name in ("copy_fd", "copy_path"):  # whichever the copy runs in its thread
        if hasattr(staging_module, name):
            monkeypatch.setattr(staging_module, name, slowly(getattr(staging_module, name)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake.fs.drain, 30)
        await wait_for(lambda: fake.remote.calls["create_version"] == 1)
        nursery.start_soon(fake.truncate, "a.txt", 7)
        await wait_for(entered.is_set)
        fake.remote.release_held()
        await wait_for(lambda: fake.versions("a.txt") == [1, 2])
        await wait_for(lambda: not fake.fs.uploader.running())
        proceed.set()
    await fake.sync()
    assert list(fake.docs()) == ["a.txt"]
    assert fake.versions("a.txt") == [1, 2, 3]
    assert fake.content("a.txt") == b"version"
    assert await fake.read("a.txt") == b"version"
