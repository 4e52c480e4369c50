"""``bimfs.vfs.renames`` on ``FakeRemote``: how editors save, renames of documents and folders.

Each test follows a program's system calls and checks the server: one version per save,
temp names never uploaded, history kept.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from bimfs.vfs.errors import FsError
from tests.vfs.fake import FakeHarness, open_fake


async def test_temp_written_and_renamed_over_the_target(fake: FakeHarness) -> None:
    """`sed -i`, rsync, `os.replace`: a temp file renamed over the document is its next
    version; the temp name never reaches the server."""
    doc = fake.server.upload(fake.pid, "plan.txt", b"one\n")
    await fake.names()
    await fake.write_file(".plan.txt.XyZ123", b"two\n")
    await fake.rename(".plan.txt.XyZ123", "plan.txt")
    await fake.sync()
    assert list(fake.docs()) == ["plan.txt"]
    assert fake.docs()["plan.txt"].id == doc.id
    assert fake.versions("plan.txt") == [1, 2]
    assert fake.content("plan.txt") == b"two\n"
    assert await fake.read("plan.txt") == b"two\n"
    assert fake.remote.calls["create_attachment"] == 0


async def test_gio_renames_the_temp_while_it_is_open(fake: FakeHarness) -> None:
    fake.server.upload(fake.pid, "README", b"old\n")
    pino = await fake.dir_ino("")
    await fake.fs.lookup(pino, "README")
    fh, _ = await fake.fs.create(pino, ".goutputstream-ABC123", os.O_WRONLY | os.O_CREAT)
    await fake.fs.write(fh, 0, b"new\n")
    await fake.fs.fsync(fh)
    await fake.fs.rename(pino, ".goutputstream-ABC123", pino, "README", 0)
    await fake.fs.write(fh, 4, b"more\n")  # still written through the open descriptor
    await fake.fs.flush(fh)
    await fake.fs.release(fh)
    await fake.sync()
    assert list(fake.docs()) == ["README"]
    assert fake.content("README") == b"new\nmore\n"
    assert fake.versions("README") == [1, 2]


async def test_libreoffice_store(fake: FakeHarness) -> None:
    """Lock file, `luXXXX.tmp` created empty and closed, reopened, written, renamed over the
    document: one version; neither the lock nor the temp file on the server."""
    fake.server.upload(fake.pid, "report.odt", b"v1")
    await fake.names()
    await fake.write_file(".~lock.report.odt#", b"lock")
    await fake.write_file("lu12345abcd.tmp", b"")
    pino = await fake.dir_ino("")
    fh, _ = await fake.fs.open(await fake.dir_ino("lu12345abcd.tmp"), os.O_RDWR)
    await fake.fs.write(fh, 0, b"stored by LibreOffice")
    await fake.fs.flush(fh)
    await fake.fs.release(fh)
    await fake.rename("lu12345abcd.tmp", "report.odt")
    await fake.fs.unlink(pino, ".~lock.report.odt#")
    await fake.sync()
    assert list(fake.docs()) == ["report.odt"]
    assert fake.versions("report.odt") == [1, 2]
    assert fake.content("report.odt") == b"stored by LibreOffice"
    assert await fake.names() == ["report.odt"]


async def test_vim_backup_pattern_keeps_the_history(fake: FakeHarness) -> None:
    """vim `backupcopy=no`: `mv doc doc~`, write a new `doc`, `rm doc~`: the new file is the
    document's next version, the backup never leaves the machine."""
    doc = fake.server.upload(fake.pid, "notes.md", b"first\n")
    await fake.names()
    await fake.rename("notes.md", "notes.md~")
    await fake.write_file("notes.md", b"first\nsecond\n")
    await fake.unlink("notes.md~")
    await fake.sync()
    docs = fake.docs()
    assert list(docs) == ["notes.md"] and docs["notes.md"].id == doc.id
    assert fake.versions("notes.md") == [1, 2]
    assert fake.content("notes.md") == b"first\nsecond\n"


@pytest.mark.parametrize("backup", ["old.dwg~", "old.bak"])
async def test_mv_to_a_backup_and_rm_deletes_the_document(fake: FakeHarness, backup: str) -> None:
    fake.server.upload(fake.pid, "old.dwg", b"x")
    await fake.names()
    await fake.rename("old.dwg", backup)
    await fake.unlink(backup)
    await fake.sync()
    assert fake.docs() == {}


async def _autocad_save(fake: FakeHarness, drawing: str, backup: str, data: bytes) -> None:
    """AutoCAD's save with backups on (Autodesk's "AutoCAD file save process"): the drawing is
    written to a temp file, the old backup deleted, the drawing renamed to the backup, the
    temp renamed to the drawing."""
    await fake.write_file("atmp4711.tmp", data)
    if await fake.exists(backup):
        await fake.unlink(backup)
    await fake.rename(drawing, backup)
    await fake.rename("atmp4711.tmp", drawing)


@pytest.mark.parametrize(
    "backup", ["Model.bak", "Model.BAK", "Model.dwg.bak", "Model~.dwg", "Model.0001.dwg"]
)
async def test_autocad_backup_save_keeps_the_history(fake: FakeHarness, backup: str) -> None:
    """Each save is the drawing's next version; the backup holds the previous bytes on this
    machine only, and deleting it at the next save deletes nothing on the server."""
    doc = fake.server.upload(fake.pid, "Model.dwg", b"drawing v1")
    await fake.names()
    await _autocad_save(fake, "Model.dwg", backup, b"drawing v2")
    assert await fake.read(backup) == b"drawing v1"
    await fake.sync()
    await _autocad_save(fake, "Model.dwg", backup, b"drawing v3")
    await fake.sync()
    docs = fake.docs()
    assert list(docs) == ["Model.dwg"] and docs["Model.dwg"].id == doc.id
    assert fake.versions("Model.dwg") == [1, 2, 3]
    assert fake.content("Model.dwg") == b"drawing v3"
    assert await fake.read(backup) == b"drawing v2"
    assert fake.remote.calls["delete_attachment"] == 0


@pytest.mark.parametrize("backup", ["Model.bak", "Model.dwg~"])
async def test_backup_of_a_save_not_sent_yet(fake: FakeHarness, backup: str) -> None:
    """The document renamed to its backup while its last save is still pending: that save is
    sent all the same, and the backup stays visible under its name after it was (it once
    vanished from the directory with the document hidden, until the next mount)."""
    fake.server.upload(fake.pid, "Model.dwg", b"v1")
    await fake.names()
    await fake.write_file("Model.dwg", b"v2 not sent yet")
    await fake.rename("Model.dwg", backup)
    await fake.sync()
    assert fake.versions("Model.dwg") == [1, 2]
    assert await fake.names() == [backup]
    assert await fake.read(backup) == b"v2 not sent yet"
    await fake.write_file("atmp4711.tmp", b"v3")
    await fake.rename("atmp4711.tmp", "Model.dwg")
    await fake.sync()
    assert sorted(await fake.names()) == sorted([backup, "Model.dwg"])
    assert fake.versions("Model.dwg") == [1, 2, 3]
    assert list(fake.docs()) == ["Model.dwg"]


async def test_autocad_saves_spaced_around_the_grace(tmp_path: Path) -> None:
    """Saves 0.6 s apart with a 1 s grace: the wait started by one save's backup rename ends
    during a later save and renames nothing (only a backup no save followed is renamed)."""
    async with open_fake(tmp_path, write_back_delay=0.3) as fake:
        doc = fake.server.upload(fake.pid, "Model.dwg", b"v1")
        await fake.names()
        for n in (2, 3, 4):
            await _autocad_save(fake, "Model.dwg", "Model.bak", b"v%d" % n)
            await trio.sleep(0.6)
        await trio.sleep(1.0)
        await fake.sync()
        assert list(fake.docs()) == ["Model.dwg"] and fake.docs()["Model.dwg"].id == doc.id
        assert fake.versions("Model.dwg") == [1, 2, 3, 4]
        assert sorted(await fake.names()) == ["Model.bak", "Model.dwg"]
        assert await fake.read("Model.bak") == b"v3"


async def test_a_bak_made_any_other_way_is_a_document(fake: FakeHarness) -> None:
    """Only a rename of a document to its own backup name is a save's backup: a `.bak` file
    copied in, or a rename to another stem's `.bak`, is an ordinary document."""
    fake.server.upload(fake.pid, "site.dwg", b"site")
    await fake.names()
    await fake.write_file("database.bak", b"a database dump")
    await fake.rename("site.dwg", "other.bak")
    await fake.sync()
    assert sorted(fake.docs()) == ["database.bak", "other.bak"]
    assert fake.content("database.bak") == b"a database dump"
    assert fake.content("other.bak") == b"site"


@pytest.mark.parametrize("edit", [False, True])
async def test_a_bak_rename_with_no_save_after_it_is_a_rename(tmp_path: Path, edit: bool) -> None:
    """`mv plan.dwg plan.bak` by hand, nothing saved under `plan.dwg` within the grace: the
    document is renamed on the server, keeps its id and history, and what was written to the
    `.bak` meanwhile is its next version."""
    async with open_fake(tmp_path, write_back_delay=0.2) as fake:
        doc = fake.server.upload(fake.pid, "plan.dwg", b"v1")
        await fake.names()
        await fake.rename("plan.dwg", "plan.bak")
        if edit:
            await fake.write_file("plan.bak", b"v2, written as plan.bak")
        assert list(fake.docs()) == ["plan.dwg"]  # not yet: the save may still follow
        with trio.fail_after(10):
            while list(fake.docs()) != ["plan.bak"]:  # noqa: ASYNC110 (the fake server)
                await trio.sleep(0.05)
        await fake.sync()
        assert fake.docs()["plan.bak"].id == doc.id
        assert fake.versions("plan.bak") == ([1, 2] if edit else [1])
        assert await fake.names() == ["plan.bak"]
        assert await fake.read("plan.bak") == (b"v2, written as plan.bak" if edit else b"v1")
        assert await fake.xattr("plan.bak", "user.bimfs.state") == "synced"
        # And a file saved under the old name now is a document of its own.
        await fake.write_file("plan.dwg", b"new drawing")
        await fake.sync()
        assert sorted(fake.docs()) == ["plan.bak", "plan.dwg"]
        assert fake.docs()["plan.dwg"].id != doc.id


async def test_rename_is_a_rename_on_the_server(fake: FakeHarness) -> None:
    doc = fake.server.upload(fake.pid, "a.txt", b"content")
    await fake.names()
    await fake.rename("a.txt", "b.txt")
    await fake.sync()
    docs = fake.docs()
    assert list(docs) == ["b.txt"] and docs["b.txt"].id == doc.id
    assert fake.versions("b.txt") == [1]
    assert fake.remote.calls["update_attachment"] == 1
    assert await fake.read("b.txt") == b"content"
    assert not await fake.exists("a.txt")


async def test_rename_onto_an_existing_document_keeps_its_history(fake: FakeHarness) -> None:
    target = fake.server.upload(fake.pid, "target.txt", b"t1")
    fake.server.new_version(target.id, b"t2")
    fake.server.upload(fake.pid, "source.txt", b"from source")
    await fake.names()
    await fake.rename("source.txt", "target.txt")
    await fake.sync()
    docs = fake.docs()
    assert list(docs) == ["target.txt"] and docs["target.txt"].id == target.id
    assert fake.versions("target.txt") == [1, 2, 3]
    assert fake.content("target.txt") == b"from source"
    assert await fake.names() == ["target.txt"]


async def test_new_file_renamed_before_its_upload(fake: FakeHarness) -> None:
    await fake.names()
    await fake.write_file("draft.txt", b"text")
    await fake.rename("draft.txt", "final.txt")
    await fake.sync()
    assert list(fake.docs()) == ["final.txt"]
    assert fake.remote.calls["create_attachment"] == 1


async def test_new_file_renamed_while_its_upload_runs(fake: FakeHarness) -> None:
    """The document made by the upload takes the name the file has when it ends."""
    await fake.names()
    fake.remote.hold("create_attachment")
    await fake.write_file("draft.txt", b"text")
    while fake.remote.calls["create_attachment"] == 0:
        await fake.fs.drain(0.01)
    await fake.rename("draft.txt", "final.txt")
    fake.remote.release_held()
    await fake.sync()
    assert list(fake.docs()) == ["final.txt"]
    assert fake.content("final.txt") == b"text"


async def test_rename_of_a_folder_is_refused_as_a_move(fake: FakeHarness) -> None:
    """Bimplus has no folder rename: `mv` gets EXDEV and copies (tests/mount covers that)."""
    await fake.mkdir("Plans")
    await fake.write_file("Plans/a.txt", b"a")
    await fake.sync()
    with pytest.raises(FsError) as err:
        await fake.rename("Plans", "Drawings")
    assert err.value.errno == errno.EXDEV
    assert [f.name for f in fake.server.folder_nodes(fake.pid)] == ["Plans"]


async def test_move_between_folders_is_exdev(fake: FakeHarness) -> None:
    await fake.mkdir("A")
    await fake.mkdir("B")
    await fake.write_file("A/x.txt", b"x")
    await fake.sync()
    with pytest.raises(FsError) as err:
        await fake.rename("A/x.txt", "B/x.txt")
    assert err.value.errno == errno.EXDEV


async def test_rename_in_a_folder(fake: FakeHarness) -> None:
    await fake.mkdir("A")
    await fake.write_file("A/x.txt", b"x")
    await fake.sync()
    await fake.rename("A/x.txt", "A/y.txt")
    await fake.sync()
    assert await fake.names("A") == ["y.txt"]
    folder = fake.server.folder_nodes(fake.pid)[0]
    assert [c.name for c in folder.children] == ["y.txt"]


async def test_an_unsent_file_moved_out_of_a_folder(fake: FakeHarness) -> None:
    """Not sent yet, a file moves like on a local disk: its upload goes to the new place."""
    await fake.mkdir("F")
    await fake.write_file("F/a.txt", b"a")
    await fake.rename("F/a.txt", "a.txt")
    await fake.sync()
    assert await fake.names() == ["F", "a.txt"]
    assert await fake.names("F") == []
    assert fake.server.doc(fake.docs()["a.txt"].id).folder_id is None
