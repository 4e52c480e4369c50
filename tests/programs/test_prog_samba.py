"""Windows colleagues through Samba: a real ``smbd`` shares a real mount (``-o allow_other``) with
the share section of ``docs/samba-share.conf``; real SMB clients (the ``smbclient`` program and
the ``smbprotocol`` package) put, overwrite, rename and delete files and replay the saves of
Word and Excel. Each leaves on the server exactly the documents and versions a local save would,
and no lock or temp file reaches it.

The Office sequences, as Microsoft documents them for Word ("How Word creates temporary files")
and as Excel is seen doing on network shares:

    Word:  create ~$doc.docx (owner file, kept open while the document is)
           write the new content to ~WRD0000.tmp
           rename doc.docx -> ~WRL0001.tmp
           rename ~WRD0000.tmp -> doc.docx
           delete ~WRL0001.tmp
           (on closing the document) delete ~$doc.docx
    Excel: the same with the new content in an 8-hex-digit name without extension (5B2A1F00)
           and the original renamed to an 8-hex-digit name with .tmp (3E4D1C00.tmp)

AutoCAD's save with backups on, as Autodesk documents it ("AutoCAD file save process"):

    open:  create Model.dwl and Model.dwl2 (who has the drawing open)
    save:  write the drawing to a .tmp
           delete Model.bak
           rename Model.dwg -> Model.bak
           rename the .tmp -> Model.dwg
    close: delete Model.dwl and Model.dwl2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.programs.helpers import Project
from tests.support import samba
from tests.support.mount import Mount
from tests.support.server import CREATE, CREATE_IN_OBJECT, DELETE_DOCUMENT, NEW_VERSION, changes

# The default write-back delay (what users get): Office renames its temp file within it.
SAMBA_MOUNT_ARGS = ("--dir-ttl", "1", "-o", "allow_other")

if (_why := samba.missing()) is not None:
    pytest.skip(f"Samba cannot run: {_why}", allow_module_level=True)

smbclient = pytest.importorskip("smbclient", reason="the smbprotocol package is not installed")


@pytest.fixture
def shared(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project], tmp_path: Path
) -> Iterator[tuple[Project, samba.SambaServer]]:
    """A fresh project on a mount of its own, shared by a Samba server."""
    mount = mount_factory(*SAMBA_MOUNT_ARGS)
    server = samba.SambaServer(tmp_path / "samba", mount.path)
    try:
        yield new_project(mount), server
    finally:
        smbclient.reset_connection_cache()
        server.stop()


class Smb:
    """The smbprotocol client on one project directory of the share."""

    def __init__(self, project: Project, server: samba.SambaServer) -> None:
        self.server = server
        self.base = ("programs", project.name)
        self.kw: dict[str, Any] = {
            "port": server.port, "username": samba.USER, "password": samba.PASSWORD,
        }  # fmt: skip

    def path(self, name: str) -> str:
        return self.server.unc(*self.base, name)

    def open(self, name: str, mode: str, **kwargs: Any) -> Any:
        return smbclient.open_file(self.path(name), mode=mode, **kwargs, **self.kw)

    def write(self, name: str, data: bytes) -> None:
        with self.open(name, "wb") as fh:
            fh.write(data)

    def rename(self, old: str, new: str) -> None:
        smbclient.rename(self.path(old), self.path(new), **self.kw)

    def remove(self, name: str) -> None:
        smbclient.remove(self.path(name), **self.kw)

    def listdir(self) -> list[str]:
        return sorted(smbclient.listdir(self.server.unc(*self.base), **self.kw))


def _office_save(
    smb: Smb, doc: str, new: bytes, *, temp: str, backup: str, owner: bytes = b"alice"
) -> None:
    # Word names the owner file of report.docx ~$port.docx (two characters replaced).
    lock = "~$" + doc[2:]
    # The owner file: hidden, written once, held open (others may read it) until the document
    # is closed.
    holder = smb.open(lock, "wb", share_access="r", file_attributes=0x2)
    holder.write(owner.ljust(162, b"\x00"))
    holder.flush()
    try:
        smb.write(temp, new)
        smb.rename(doc, backup)
        smb.rename(temp, doc)
        smb.remove(backup)
    finally:
        holder.close()
    smb.remove(lock)


def _server_state(project: Project) -> dict[str, list[int]]:
    return {path: project.server.versions(path) for path in project.server.paths()}


def test_put_overwrite_rename_delete_with_smbclient(
    shared: tuple[Project, samba.SambaServer], tmp_path: Path
) -> None:
    """The smbclient program: a new file is a new document, an overwrite its next version, a
    rename renames it on the server (history kept), a delete deletes it; a new folder holds
    its documents."""
    project, server = shared
    first, second = tmp_path / "first.pdf", tmp_path / "second.pdf"
    first.write_bytes(b"%PDF first\n" * 1000)
    second.write_bytes(b"%PDF second\n" * 3000)
    where = f"cd programs\\{project.name}"

    server.smbclient(where, f"put {first} plan.pdf")
    project.sync()
    assert _server_state(project) == {"plan.pdf": [1]}
    assert project.server.content("plan.pdf") == first.read_bytes()
    doc_id = project.server.document("plan.pdf")["id"]

    server.smbclient(where, f"put {second} plan.pdf")
    project.sync()
    assert _server_state(project) == {"plan.pdf": [1, 2]}
    assert project.server.content("plan.pdf", 2) == second.read_bytes()

    server.smbclient(where, "rename plan.pdf ground-floor.pdf")
    project.sync()
    assert _server_state(project) == {"ground-floor.pdf": [1, 2]}
    assert project.server.document("ground-floor.pdf")["id"] == doc_id

    server.smbclient(where, "mkdir Drawings", f"put {first} Drawings\\detail.pdf")
    project.sync()
    assert _server_state(project) == {"ground-floor.pdf": [1, 2], "Drawings/detail.pdf": [1]}

    server.smbclient(where, "del ground-floor.pdf")
    project.sync()
    assert _server_state(project) == {"Drawings/detail.pdf": [1]}
    assert (project.dir / "Drawings" / "detail.pdf").read_bytes() == first.read_bytes()
    listing = server.smbclient(where, "ls")
    assert "ground-floor.pdf" not in listing and "Drawings" in listing
    assert changes(project.emu) == {CREATE: 1, CREATE_IN_OBJECT: 1, NEW_VERSION: 1,
                                    DELETE_DOCUMENT: 1}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "temp", "backup"),
    [
        ("report.docx", "~WRD0000.tmp", "~WRL0001.tmp"),  # Word
        ("costs.xlsx", "5B2A1F00", "3E4D1C00.tmp"),  # Excel
    ],
    ids=["word", "excel"],
)
def test_office_save_is_one_version(
    shared: tuple[Project, samba.SambaServer], doc: str, temp: str, backup: str
) -> None:
    """Two saves of an Office document over SMB: each is exactly one new version of it, the
    document keeps its id, and neither the owner file nor a temp file reaches the server."""
    project, server = shared
    project.seed(doc, b"PK version one")
    project.wait_visible(doc)
    doc_id = project.server.document(doc)["id"]
    project.emu.reset_stats()
    smb = Smb(project, server)
    assert smb.listdir() == [doc]
    assert smb.open(doc, "rb").read() == b"PK version one"

    contents = [b"PK version two" * 5000, b"PK version three" * 7000]
    for n, content in enumerate(contents, start=2):
        _office_save(smb, doc, content, temp=temp, backup=backup)
        project.sync()
        assert _server_state(project) == {doc: list(range(1, n + 1))}
        assert project.server.document(doc)["id"] == doc_id
        assert project.server.content(doc, n) == content
        assert smb.listdir() == [doc]
        with smb.open(doc, "rb") as fh:
            assert fh.read() == content
    assert changes(project.emu) == {NEW_VERSION: 2}


def test_autocad_save_with_backup_keeps_the_history(
    shared: tuple[Project, samba.SambaServer],
) -> None:
    """Two AutoCAD saves over SMB: each is the drawing's next version, the backup holds the
    previous one on the share only, and deleting it at the next save deletes nothing (before,
    the drawing's history moved to `Model.bak` and was deleted with it at the next save)."""
    project, server = shared
    project.seed("Model.dwg", b"AC1032 version one")
    project.wait_visible("Model.dwg")
    doc_id = project.server.document("Model.dwg")["id"]
    project.emu.reset_stats()
    smb = Smb(project, server)
    for lock in ("Model.dwl", "Model.dwl2"):
        smb.write(lock, b"alice on WS-12")
    contents = [b"AC1032 version two" * 3000, b"AC1032 version three" * 4000]
    previous = b"AC1032 version one"
    for n, content in enumerate(contents, start=2):
        smb.write("atmp5612.tmp", content)
        if "Model.bak" in smb.listdir():
            smb.remove("Model.bak")
        smb.rename("Model.dwg", "Model.bak")
        smb.rename("atmp5612.tmp", "Model.dwg")
        project.sync()
        assert _server_state(project) == {"Model.dwg": list(range(1, n + 1))}
        assert project.server.document("Model.dwg")["id"] == doc_id
        assert project.server.content("Model.dwg", n) == content
        with smb.open("Model.bak", "rb") as fh:
            assert fh.read() == previous
        previous = content
    for lock in ("Model.dwl", "Model.dwl2"):
        smb.remove(lock)
    assert smb.listdir() == ["Model.bak", "Model.dwg"]
    assert changes(project.emu) == {NEW_VERSION: 2}


def test_temp_and_lock_files_stay_local(shared: tuple[Project, samba.SambaServer]) -> None:
    """Temp and lock names Windows programs leave behind (an aborted save, an open drawing) are
    usable through the share but never uploaded, whatever their case."""
    project, server = shared
    smb = Smb(project, server)
    names = ["~$report.docx", "~WRL0003.TMP", "3E4D1C00.TMP", "ppt7A2B.tmp", "Plan.dwl",
             "Plan.dwl2", "Thumbs.db", "desktop.ini"]  # fmt: skip
    for name in names:
        smb.write(name, b"local " + name.encode())
    smb.write("Plan.dwg", b"AC1032 drawing")
    project.sync()
    assert sorted(smb.listdir()) == sorted([*names, "Plan.dwg"])
    with smb.open("plan.DWL", "rb") as fh:  # Windows names are case-insensitive
        assert fh.read() == b"local Plan.dwl"
    assert _server_state(project) == {"Plan.dwg": [1]}
    for name in names:
        smb.remove(name)
    assert smb.listdir() == ["Plan.dwg"]
    assert changes(project.emu) == {CREATE: 1}
