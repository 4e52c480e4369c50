"""Write side through a real mount: every save becomes exactly one version, nothing is lost.

Each test works in a fresh, empty writable project created through the emulator's admin API and
checks the server afterwards: how many documents and versions exist, and their bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"
CREATE = "POST /v2/{slug}/projects/{pid}/attachments"
NEW_VERSION = "POST /v2/{slug}/attachments/{id}/versions"


class Project:
    """A fresh writable project and its view through the mount."""

    def __init__(self, emu: Emulator, mount: Mount, name: str) -> None:
        self.emu = emu
        self.mount = mount
        self.json = emu.admin(
            "POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True}
        )
        self.pid = self.json["id"]
        self.dir = mount.p(SLUG, name)

    def docs(self) -> dict[str, dict[str, Any]]:
        docs = self.emu.attachments(SLUG, self.pid)
        names = [d["fileName"] for d in docs]
        assert len(names) == len(set(names)), f"duplicate documents on the server: {names}"
        return {d["fileName"]: d for d in docs}

    def versions(self, name: str) -> list[dict[str, Any]]:
        aid = self.docs()[name]["id"]
        return list(self.emu.api("GET", f"/{SLUG}/attachments/{aid}/versions"))

    def content(self, name: str, version: int | None = None) -> bytes:
        return self.emu.download(SLUG, self.docs()[name]["id"], version)

    def seed(self, name: str, data: bytes) -> dict[str, Any]:
        return self.emu.upload(SLUG, self.pid, name, data)

    def sync(self) -> None:
        self.mount.wait_synced()


@pytest.fixture
def project(emulator: Emulator, mount: Mount, request: pytest.FixtureRequest) -> Project:
    return Project(emulator, mount, f"w-{request.node.name[:40]}")


def sh(*cmd: str, cwd: Path | None = None, inp: str | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, input=inp)
    assert result.returncode == 0, f"{cmd}: {result.stderr}"
    return result.stdout


def test_cp_new_file_creates_one_document(project: Project, tmp_path: Path) -> None:
    src = tmp_path / "report.pdf"
    src.write_bytes(os.urandom(300_000))
    sh("cp", str(src), str(project.dir / "report.pdf"))
    project.sync()
    docs = project.docs()
    assert list(docs) == ["report.pdf"]
    assert project.content("report.pdf") == src.read_bytes()
    assert docs["report.pdf"]["type"] == "application/pdf"
    assert len(project.versions("report.pdf")) == 1


def test_cp_over_existing_document_makes_one_version(project: Project, tmp_path: Path) -> None:
    project.seed("plan.txt", b"v1\n")
    src = tmp_path / "plan.txt"
    src.write_bytes(b"version two\n" * 1000)
    sh("cp", str(src), str(project.dir / "plan.txt"))
    project.sync()
    assert [int(v["version"]) for v in project.versions("plan.txt")] == [1, 2]
    assert project.content("plan.txt") == src.read_bytes()
    assert project.content("plan.txt", 1) == b"v1\n"


def test_append_truncate_and_sed(project: Project) -> None:
    project.seed("notes.txt", b"line one\n")
    path = project.dir / "notes.txt"
    sh("sh", "-c", f"echo 'line two' >> '{path}'")
    project.sync()
    assert project.content("notes.txt") == b"line one\nline two\n"
    sh("truncate", "-s", "5", str(path))
    project.sync()
    assert project.content("notes.txt") == b"line "
    sh("sed", "-i", "s/line/LINE/", str(path))
    project.sync()
    assert project.content("notes.txt") == b"LINE "
    assert [int(v["version"]) for v in project.versions("notes.txt")] == [1, 2, 3, 4]
    assert list(project.docs()) == ["notes.txt"]


@pytest.mark.parametrize("backup", ["backup", "nobackup"])
@pytest.mark.parametrize("backupcopy", ["auto", "no", "yes"])
def test_vim_saves_make_one_version(project: Project, backupcopy: str, backup: str) -> None:
    # "nobackup" is vim's default: the backup is written, then deleted after the save.
    project.seed("config.ini", b"[a]\nkey=1\n")
    path = project.dir / "config.ini"
    settings = f"set backupcopy={backupcopy} {backup} writebackup"
    sh("vim", "-es", "-u", "NONE", "-i", "NONE", "-c", settings, "-c", "%s/key=1/key=2/",
       "-c", "wq", str(path))  # fmt: skip
    project.sync()
    assert list(project.docs()) == ["config.ini"]
    assert project.content("config.ini") == b"[a]\nkey=2\n"
    assert len(project.versions("config.ini")) == 2
    assert path.read_bytes() == b"[a]\nkey=2\n"


def test_python_write_temp_then_replace(project: Project) -> None:
    project.seed("data.csv", b"a,b\n1,2\n")
    code = (
        "import os, tempfile, sys\n"
        "d = sys.argv[1]\n"
        "fd, tmp = tempfile.mkstemp(dir=d, prefix='data.csv.', suffix='.tmp')\n"
        "os.write(fd, b'a,b\\n3,4\\n'); os.fsync(fd); os.close(fd)\n"
        "os.replace(tmp, os.path.join(d, 'data.csv'))\n"
    )
    sh(sys.executable, "-c", code, str(project.dir))
    project.sync()
    assert list(project.docs()) == ["data.csv"]
    assert project.content("data.csv") == b"a,b\n3,4\n"
    assert len(project.versions("data.csv")) == 2


def test_rsync_a_directory_in(project: Project, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    files = {f"file{i}.bin": os.urandom(1000 + i) for i in range(5)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    sh("rsync", "-a", f"{src}/", f"{project.dir}/")
    project.sync()
    docs = project.docs()
    assert sorted(docs) == sorted(files)
    for name, data in files.items():
        assert project.content(name) == data
        assert len(project.versions(name)) == 1
    # again with one change: exactly one new version
    (src / "file0.bin").write_bytes(b"changed")
    sh("rsync", "-a", f"{src}/", f"{project.dir}/")
    project.sync()
    assert len(project.versions("file0.bin")) == 2
    assert all(len(project.versions(n)) == 1 for n in files if n != "file0.bin")


def test_mv_rename_and_mv_over(project: Project) -> None:
    project.seed("a.txt", b"AAA")
    project.seed("b.txt", b"BBB")
    sh("mv", str(project.dir / "a.txt"), str(project.dir / "c.txt"))
    project.sync()
    assert sorted(project.docs()) == ["b.txt", "c.txt"]
    assert project.content("c.txt") == b"AAA"
    sh("mv", str(project.dir / "c.txt"), str(project.dir / "b.txt"))
    project.sync()
    assert sorted(project.docs()) == ["b.txt"]
    assert project.content("b.txt") == b"AAA"
    assert [int(v["version"]) for v in project.versions("b.txt")] == [1, 2]
    assert sorted(os.listdir(project.dir)) == ["b.txt"]


def test_mv_to_a_backup_name_is_a_rename_once_no_save_follows(project: Project) -> None:
    """`mv plan.dwg plan.bak` by hand (the name AutoCAD renames a drawing to while it saves):
    with no file saved under `plan.dwg` within the write-back delay, the document is renamed
    on the server, with its id and history."""
    doc = project.seed("plan.dwg", b"AC1032 v1")
    (project.dir / "plan.dwg").write_bytes(b"AC1032 v2")
    project.sync()
    sh("mv", str(project.dir / "plan.dwg"), str(project.dir / "plan.bak"))
    wait_until(lambda: sorted(project.docs()) == ["plan.bak"], 15, "the rename on the server")
    assert project.docs()["plan.bak"]["id"] == doc["id"]
    assert [int(v["version"]) for v in project.versions("plan.bak")] == [1, 2]
    assert (project.dir / "plan.bak").read_bytes() == b"AC1032 v2"
    assert os.getxattr(project.dir / "plan.bak", "user.bimfs.state") == b"synced"
    assert sorted(os.listdir(project.dir)) == ["plan.bak"]


def test_rm_document_and_version_and_restore(project: Project) -> None:
    project.seed("doc.txt", b"one")
    project.seed("gone.txt", b"bye")
    path = project.dir / "doc.txt"
    path.write_bytes(b"two")
    project.sync()
    path.write_bytes(b"three")
    project.sync()
    assert [int(v["version"]) for v in project.versions("doc.txt")] == [1, 2, 3]
    os.remove(project.dir / "versions" / "doc.txt" / "doc.v2.txt")
    assert [int(v["version"]) for v in project.versions("doc.txt")] == [1, 3]
    shutil.copyfile(project.dir / "versions" / "doc.txt" / "doc.v1.txt", path)
    project.sync()
    assert [int(v["version"]) for v in project.versions("doc.txt")] == [1, 3, 4]
    assert project.content("doc.txt") == b"one"
    os.remove(project.dir / "gone.txt")
    assert "gone.txt" not in project.docs()


def test_setfattr_tag_classification_release(project: Project) -> None:
    project.seed("model.ifc", b"ISO-10303-21;\n")
    path = str(project.dir / "model.ifc")
    sh("setfattr", "-n", "user.bimplus.tag", "-v", "approved", path)
    sh("setfattr", "-n", "user.bimplus.classification", "-v", "Report", path)
    sh("setfattr", "-n", "user.bimplus.release", "-v", "1", path)
    doc = project.docs()["model.ifc"]
    assert doc["tag"] == "approved"
    assert doc["classification"] == "Report"
    assert str(doc["release"]).lower() == "true"
    out = sh("getfattr", "-n", "user.bimplus.tag", "--only-values", path)
    assert out == "approved"


def test_mkdir_and_file_in_folder(project: Project) -> None:
    folder = project.dir / "Drawings"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"in folder")
    project.sync()
    folders = project.emu.api(
        "GET", f"/{SLUG}/projects/{project.pid}/structures", params={"type": "DocumentFolder"}
    )
    node = next(f for f in folders if f["name"] == "Drawings")
    assert [c["name"] for c in node["children"] if c["type"] == "Attachment"] == ["a.txt"]
    assert sorted(os.listdir(project.dir)) == ["Drawings"]
    assert (folder / "a.txt").read_bytes() == b"in folder"
    os.remove(folder / "a.txt")
    os.rmdir(folder)
    assert not project.emu.api(
        "GET", f"/{SLUG}/projects/{project.pid}/structures", params={"type": "DocumentFolder"}
    )


def test_temp_and_lock_files_stay_local(project: Project) -> None:
    for name in (".~lock.plan.odt#", "~$report.docx", ".DS_Store", "x.txt~", ".a.txt.swp"):
        (project.dir / name).write_bytes(b"local")
        assert (project.dir / name).read_bytes() == b"local"
    project.sync()
    assert project.docs() == {}


def test_no_update_right_fails_at_open(emulator: Emulator, project: Project) -> None:
    doc = project.seed("locked.txt", b"locked")
    emulator.admin("PUT", f"/attachments/{doc['id']}/rights", json={"update": False})
    project.mount.emulator.reset_stats()
    wait_until(
        lambda: not os.stat(project.dir / "locked.txt").st_mode & 0o200,
        10,
        "the file to turn read-only",
        interval=0.2,
    )
    with pytest.raises(PermissionError):
        open(project.dir / "locked.txt", "r+b")  # noqa: SIM115
    assert project.versions("locked.txt")[-1]["version"] in (1, "1")


def test_read_only_mount_refuses_writes(emulator: Emulator, mount_factory: Any) -> None:
    m = mount_factory(emulator, "--read-only")
    project_dir = next(p for p in m.p(SLUG).iterdir() if p.is_dir())
    with pytest.raises(OSError) as info:
        (project_dir / "new.txt").write_bytes(b"x")
    assert info.value.errno == 30  # EROFS


def test_kill_9_with_pending_uploads_loses_nothing(
    emulator: Emulator, mount_factory: Any, tmp_path: Path
) -> None:
    cache = tmp_path / "cache-k9"
    m = mount_factory(emulator, "--write-back-delay", "3600", cache_dir=cache)
    p = Project(emulator, m, "kill9")
    files = {f"f{i}.bin": os.urandom(5000 + i) for i in range(10)}
    for name, data in files.items():
        (p.dir / name).write_bytes(data)
    assert p.docs() == {}
    m.kill()
    m.args = ("--write-back-delay", "0")
    m.start()
    m.wait_synced()
    docs = p.docs()
    assert sorted(docs) == sorted(files)
    for name, data in files.items():
        assert p.content(name) == data


def test_quota_exceeded_shows_failed_and_keeps_content(
    emulator: Emulator, project: Project
) -> None:
    emulator.admin("PUT", f"/teams/{SLUG}", json={"totalStorage": 1})
    project.mount.allowed_errors.append("quota")
    path = project.dir / "big.bin"
    data = os.urandom(100_000)
    path.write_bytes(data)

    def failed() -> str | None:
        state = os.getxattr(path, "user.bimfs.state").decode()
        return state if state.startswith("failed") else None

    state = wait_until(
        failed,
        30,
        lambda: f"a failed upload: {os.getxattr(path, 'user.bimfs.state')!r}",
        interval=0.1,
    )
    assert "quota" in state.lower() or "403" in state
    assert path.read_bytes() == data
    status = project.mount.bimfs("status", str(project.mount.path), "--json")
    assert "big.bin" in status.stdout
    assert project.docs() == {}


def test_copy_in_under_faults_loses_and_corrupts_nothing(
    emulator_factory: Any, mount_factory: Any, tmp_path: Path
) -> None:
    emu = emulator_factory("--retry-after", "0", "--fault-seed", "3")
    m = mount_factory(emu, "--write-back-delay", "0")
    m.allowed_errors.append("failed")
    p = Project(emu, m, "faults")
    emu.set_faults(fail_rate=0.2, reset_rate=0.05)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"doc{i:03}.bin": os.urandom(2000 + i * 37) for i in range(100)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    sh("cp", "-r", f"{src}/.", str(p.dir))
    m.wait_synced(timeout=240)
    emu.set_faults(fail_rate=0, reset_rate=0)
    docs = p.docs()
    assert sorted(docs) == sorted(files)
    for name, data in files.items():
        assert p.content(name) == data
        assert len(p.versions(name)) == 1


def test_unmount_waits_for_pending_uploads(emulator: Emulator, mount_factory: Any) -> None:
    m = mount_factory(emulator, "--write-back-delay", "1")
    p = Project(emulator, m, "unmount-wait")
    (p.dir / "last.txt").write_bytes(b"sent before unmount returns")
    result = m.bimfs("unmount", str(m.path), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    m.process.wait(30)  # type: ignore[union-attr]
    m.process = None
    assert p.content("last.txt") == b"sent before unmount returns"


def test_sparse_writes_and_two_writers_behave_like_a_local_disk(project: Project) -> None:
    path = project.dir / "sparse.bin"
    a = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    b = os.open(path, os.O_RDWR)
    try:
        os.pwrite(a, b"head", 0)
        os.pwrite(b, b"tail", 1 << 20)
        os.pwrite(a, b"HE", 0)
        assert os.pread(b, 4, 0) == b"HEad"  # one writer sees the other's bytes at once
        assert os.fstat(b).st_size == (1 << 20) + 4
    finally:
        os.close(a)
        os.close(b)
    project.sync()
    expected = b"HEad" + bytes((1 << 20) - 4) + b"tail"
    assert project.content("sparse.bin") == expected
    assert len(project.versions("sparse.bin")) == 1
    assert path.read_bytes() == expected


def test_mv_between_projects_copies_then_deletes(emulator: Emulator, mount: Mount) -> None:
    src = Project(emulator, mount, "mv-source")
    dst = Project(emulator, mount, "mv-target")
    src.seed("moved.txt", b"moving house")
    with pytest.raises(OSError) as info:
        os.rename(src.dir / "moved.txt", dst.dir / "moved.txt")
    assert info.value.errno == 18  # EXDEV: mv falls back to copy + delete
    sh("mv", str(src.dir / "moved.txt"), str(dst.dir / "moved.txt"))
    dst.sync()
    assert src.docs() == {}
    assert dst.content("moved.txt") == b"moving house"


@pytest.mark.parametrize("mode", ["copy", "newest-wins"])
def test_conflicting_server_change_keeps_both_contents(
    emulator: Emulator, mount_factory: Any, mode: str
) -> None:
    """Someone else saves a version while ours waits: theirs is never buried. By default
    ours becomes a conflict copy next to the document; with newest-wins, the newest version.
    Either way one warning says so."""
    m = mount_factory(emulator, "--write-back-delay", "3600", "--on-conflict", mode)
    p = Project(emulator, m, f"conflict-{mode}")
    doc = p.seed("shared.txt", b"base")
    assert (p.dir / "shared.txt").read_bytes() == b"base"
    (p.dir / "shared.txt").write_bytes(b"mine")  # pending locally
    emulator.new_version(SLUG, doc["id"], "shared.txt", b"theirs")
    result = m.bimfs("unmount", str(m.path), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    m.process.wait(30)  # type: ignore[union-attr]
    m.process = None
    versions = p.versions("shared.txt")
    contents = [p.content("shared.txt", int(v["version"])) for v in versions]
    warnings = [line for line in m.log().splitlines() if "based on v1, server had v2" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0]
    if mode == "newest-wins":
        assert contents == [b"base", b"theirs", b"mine"]
        assert sorted(p.docs()) == ["shared.txt"]
        return
    assert contents == [b"base", b"theirs"]
    copies = [n for n in p.docs() if n.startswith("shared (conflict ")]
    assert len(copies) == 1 and copies[0].endswith(".txt")
    assert p.content(copies[0]) == b"mine"


@pytest.mark.parametrize("pattern", ["sequential", "rewrite-middle", "temp-then-rename"])
def test_large_saves_streamed_while_written_arrive_exactly_once(
    emulator: Emulator, mount_factory: Any, pattern: str
) -> None:
    m = mount_factory(emulator, "--write-back-delay", "0.5")
    p = Project(emulator, m, f"stream-{pattern}")
    data = bytearray(os.urandom(20 << 20))
    target = p.dir / "big.bin"
    path = p.dir / ".big.bin.partial" if pattern == "temp-then-rename" else target
    with open(path, "wb") as fh:
        for start in range(0, len(data), 1 << 20):
            fh.write(data[start : start + (1 << 20)])
        if pattern == "rewrite-middle":
            fh.seek(5 << 20)
            fh.write(b"X" * 100)
            data[5 << 20 : (5 << 20) + 100] = b"X" * 100
    if pattern == "temp-then-rename":
        os.rename(path, target)
    p.sync()
    assert list(p.docs()) == ["big.bin"]
    assert p.content("big.bin") == bytes(data)
    assert len(p.versions("big.bin")) == 1
    creates = emulator.stats()["requests"].get(CREATE, {})
    assert creates.get("201") == 1
    if pattern == "sequential":
        assert creates == {"201": 1}  # streamed while written: one request, nothing abandoned
    # over an existing document: one new version, streamed too
    data2 = os.urandom(12 << 20)
    with open(target, "wb") as fh:
        fh.write(data2)
    p.sync()
    assert [int(v["version"]) for v in p.versions("big.bin")] == [1, 2]
    assert p.content("big.bin") == data2


def test_status_shows_a_save_streamed_while_it_is_written(
    emulator: Emulator, mount_factory: Any
) -> None:
    import json

    from bimfs.cli import format_status

    m = mount_factory(emulator, "--write-back-delay", "0")
    p = Project(emulator, m, "stream-status")
    data = os.urandom(12 << 20)
    with open(p.dir / "growing.bin", "wb") as fh:
        fh.write(data)
        fh.flush()

        # Still open, so the status is read in this process (a child would close the file on
        # exec, and that close is a save): the bytes travel already, and the status says so.
        def streaming() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
            status = m.status()
            streams = [t for t in status["transfers"] if t["state"] == "streaming"]
            return (status, streams) if streams and streams[0]["sent"] > 0 else None

        status, streams = wait_until(
            streaming, 30, lambda: f"bytes streamed while written: {m.status()}", interval=0.05
        )
        assert streams[0]["path"].endswith("/stream-status/growing.bin")
        assert streams[0]["size"] == len(data)
        text = format_status(status)
        assert "streaming" in text and "growing.bin" in text
        assert status["pending"] == 0  # nothing saved yet
    p.sync()
    assert p.content("growing.bin") == data
    assert len(p.versions("growing.bin")) == 1
    out = m.bimfs("status", str(m.path), "--json")
    assert json.loads(out.stdout)["transfers"] == []


def test_what_was_saved_is_read_back_without_a_download(
    emulator: Emulator, mount_factory: Any
) -> None:
    m = mount_factory(emulator, "--write-back-delay", "0")
    p = Project(emulator, m, "read-back")
    small, big = os.urandom(300_000), os.urandom(12 << 20)  # big: streamed while written
    (p.dir / "small.bin").write_bytes(small)
    shutil.copyfile(p.dir / "small.bin", p.dir / "copy.bin")
    with open(p.dir / "big.bin", "wb") as fh:
        fh.write(big)
    p.sync()
    assert p.content("big.bin") == big and p.content("copy.bin") == small
    emulator.reset_stats()
    for name, data in [("small.bin", small), ("copy.bin", small), ("big.bin", big)]:
        assert (p.dir / name).read_bytes() == data
    # A new mount with the same cache: the kernel's pages are gone, the cache serves them.
    m.unmount()
    m.start()
    for name, data in [("small.bin", small), ("copy.bin", small), ("big.bin", big)]:
        assert (p.dir / name).read_bytes() == data
    requests = emulator.stats()["requests"]
    assert not [k for k in requests if "download" in k.lower()], requests
    # The uploaded versions are what was written.
    assert [int(v["version"]) for v in p.versions("big.bin")] == [1]


def test_a_reader_sees_what_a_write_only_writer_wrote(emulator: Emulator, mount: Mount) -> None:
    p = Project(emulator, mount, "coherence")
    old = b"A" * 300_000
    p.seed("shared.bin", old)
    path = p.dir / "shared.bin"
    # A write-only descriptor: its writes bypass the kernel's page cache.
    writer = os.open(path, os.O_WRONLY)
    reader = os.open(path, os.O_RDONLY)
    try:
        try:
            assert os.pread(reader, len(old), 0) == old  # now in the kernel's page cache
            os.pwrite(writer, b"B" * 1000, 5000)
        finally:
            os.close(writer)
        expected = old[:5000] + b"B" * 1000 + old[6000:]
        wait_until(  # the stale pages are dropped
            lambda: os.pread(reader, 1000, 5000) == b"B" * 1000,
            10,
            "the written bytes",
            interval=0.01,
        )
        assert os.pread(reader, len(old), 0) == expected
    finally:
        os.close(reader)
    p.sync()
    assert p.content("shared.bin") == expected
    assert path.read_bytes() == expected


@pytest.mark.parametrize("save", ["new document", "new version"])
def test_kill_9_after_the_server_stored_an_upload_gives_one_version(
    emulator: Emulator, mount_factory: Any, tmp_path: Path, save: str
) -> None:
    """The mount is killed after the server stored the upload but before its answer arrived;
    the next mount settles it through the server's lists instead of sending it again."""
    cache = tmp_path / "cache-stored"
    m = mount_factory(emulator, "--write-back-delay", "0", cache_dir=cache)
    p = Project(emulator, m, "stored")
    if save == "new version":
        p.seed("plan.txt", b"plan v1\n")
        wait_until(lambda: (p.dir / "plan.txt").exists(), 30, "plan.txt to show")
        route = "POST /v2/{slug}/attachments/{id}/versions"
    else:
        route = "POST /v2/{slug}/projects/{pid}/attachments"
    emulator.set_faults(hold_ms=60_000, routes=[route])
    try:
        (p.dir / "plan.txt").write_bytes(b"plan v2, stored\n")

        def stored() -> bool:
            doc = p.docs().get("plan.txt")
            return doc is not None and p.content("plan.txt") == b"plan v2, stored\n"

        wait_until(stored, 30, "the server to store the upload")
        m.kill()  # its answer is still held by the server
    finally:
        emulator.set_faults(hold_ms=0, routes=[])
    m.start()
    m.wait_synced()
    docs = p.docs()
    assert list(docs) == ["plan.txt"]
    versions = p.versions("plan.txt")
    assert len(versions) == (2 if save == "new version" else 1), versions
    assert (p.dir / "plan.txt").read_bytes() == b"plan v2, stored\n"
    assert os.getxattr(p.dir / "plan.txt", "user.bimfs.state") == b"synced"


def test_two_mounts_saving_one_document_at_once_keep_both(
    emulator: Emulator, mount_factory: Any
) -> None:
    """Two mounts (two computers of the team) append a line to notes.txt and send it at the
    same moment: one line is the new version, the other a conflict copy next to it, and one
    warning says so; nothing is buried."""
    a = mount_factory(emulator, "--write-back-delay", "3600")
    b = mount_factory(emulator, "--write-back-delay", "3600")
    p = Project(emulator, a, "two-mounts")
    doc = p.seed("notes.txt", b"start\n")
    b_dir = b.p(SLUG, "two-mounts")
    wait_until(lambda: (b_dir / "notes.txt").exists(), 30, "notes.txt on the second mount")
    for m, line in ((a, b"from a\n"), (b, b"from b\n")):
        path = m.p(SLUG, "two-mounts", "notes.txt")
        assert path.read_bytes() == b"start\n"
        with open(path, "ab") as fh:
            fh.write(line)
    # Both send now, at once.
    threads = [
        threading.Thread(target=os.setxattr, args=(m.path, "user.bimfs.sync", b"60"))
        for m in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    a.wait_synced()
    b.wait_synced()
    newest = p.content("notes.txt")
    assert newest in (b"start\nfrom a\n", b"start\nfrom b\n")
    assert len(p.versions("notes.txt")) == 2
    copies = [n for n in p.docs() if n.startswith("notes (conflict ")]
    assert len(copies) == 1, list(p.docs())
    other = b"start\nfrom b\n" if newest == b"start\nfrom a\n" else b"start\nfrom a\n"
    assert p.content(copies[0]) == other
    warnings = [
        line
        for m in (a, b)
        for line in m.log().splitlines()
        if " WARNING " in line and "conflict: based on v1, server had v2" in line
    ]
    assert len(warnings) == 1, warnings
    assert doc["id"] == p.docs()["notes.txt"]["id"]
