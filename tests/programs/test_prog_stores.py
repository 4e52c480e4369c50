"""Programs that keep their own data structures in files and care about locks, renames and
fsync: flock, sqlite3, git and fio (with data verification after a remount on an empty cache).

What each does on the mount (strace):
- ``flock FILE cmd`` opens FILE with ``O_RDONLY|O_CREAT|O_NOCTTY`` (creating it when missing),
  takes ``flock(LOCK_EX)``, runs cmd, exits.
- sqlite3 (journal_mode DELETE) opens ``db`` ``O_RDWR|O_CREAT``, takes fcntl locks, writes the
  rollback journal ``db-journal`` (``O_RDWR|O_CREAT``), fsyncs it, writes ``db``, fsyncs it and
  unlinks the journal at each commit; in WAL mode it keeps ``db-wal`` and ``db-shm`` (mmapped
  shared) while a connection is open and checkpoints then unlinks them at the last close.
- git writes objects as ``objects/xx/tmp_obj_XXXXXX``, then ``link()``s them to their name
  (EPERM here: it falls back to ``rename()``); refs and the index through ``*.lock`` files
  renamed over the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.programs.helpers import Project, local_files, ok, remount, run
from tests.support.mount import Mount
from tests.support.server import DELETE_DOCUMENT, changes, creates, downloads

pytestmark = pytest.mark.mount


def test_flock_creates_its_lock_file_and_excludes(project: Project) -> None:
    (project.dir / "jobs").mkdir()
    lock = project.dir / "jobs" / "job.lock"
    out = project.dir / "jobs" / "out.txt"
    # Inside the lock, a second non-blocking flock on the same file must fail (exit 1).
    script = f"flock -n '{lock}' true; echo $? > '{out}'"
    ok(["flock", lock, "sh", "-c", script])  # open(O_RDONLY|O_CREAT) of a new name
    assert out.read_bytes() == b"1\n"
    ok(["flock", lock, "true"])  # the lock file exists now: opened O_RDONLY, nothing written
    project.sync()
    assert project.server.contents() == {"jobs/job.lock": b"", "jobs/out.txt": b"1\n"}
    assert project.server.versions("jobs/job.lock") == [1]


SQL_SCHEMA = "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);"


def sql(db: Path, *statements: str) -> str:
    return ok(["sqlite3", "-bail", db, *statements]).stdout.decode()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_database_stays_one_document_and_intact(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project], journal: str
) -> None:
    m = mount_factory()
    p = new_project(m)
    db = p.dir / "app.db"
    assert sql(db, f"PRAGMA journal_mode={journal};").strip() == journal
    sql(db, SQL_SCHEMA)
    writers = 2
    for batch in range(3):  # one process, one transaction each
        values = ", ".join(f"('item {batch}-{i}', {i})" for i in range(50))
        sql(db, f"BEGIN; INSERT INTO items(name, qty) VALUES {values}; COMMIT;")
        writers += 1
    # several transactions in one process, one of them rolled back
    sql(db, "BEGIN; UPDATE items SET qty = qty + 1; COMMIT;",
        "BEGIN; DELETE FROM items WHERE id % 10 = 0; COMMIT;",
        "BEGIN; DELETE FROM items; ROLLBACK;")  # fmt: skip
    writers += 1
    assert sql(db, "PRAGMA integrity_check;").strip() == "ok"
    assert sql(db, "SELECT count(*), sum(qty) FROM items;").strip() == "135|3375"
    p.sync()

    assert p.server.paths() == ["app.db"]  # no -journal, -wal or -shm document left
    assert p.server.content("app.db") == db.read_bytes()
    assert 1 <= len(p.server.versions("app.db")) <= writers
    sent = changes(p.emu)  # no journal, WAL or shm document was ever created (or deleted)
    assert creates(p.emu) == 1 and DELETE_DOCUMENT not in sent, sent
    versions = p.server.versions("app.db")

    remount(m, empty_cache=True)
    p.emu.reset_stats()
    assert sql(db, "PRAGMA integrity_check;").strip() == "ok"
    assert sql(db, "SELECT count(*), sum(qty) FROM items;").strip() == "135|3375"
    p.sync()
    assert downloads(p.emu) > 0  # the check read what the server has
    assert p.server.paths() == ["app.db"]
    assert p.server.versions("app.db") == versions  # reading made no version
    assert sorted(n for n in os.listdir(p.dir) if n != "versions") == ["app.db"]


def test_git_commits_and_fsck(project: Project) -> None:
    repo = project.dir / "repo"
    env = dict(os.environ, GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.test",
               GIT_COMMITTER_NAME="T", GIT_COMMITTER_EMAIL="t@example.test")  # fmt: skip
    git = ["git", "-C", repo]
    ok(["git", "-c", "init.defaultBranch=main", "init", "-q", "--template=", repo], env=env)
    (repo / "README.md").write_bytes(b"# project\n")
    (repo / "src").mkdir()
    (repo / "src" / "main.py").write_bytes(b"print('hello')\n")
    ok([*git, "add", "-A"], env=env)
    ok([*git, "commit", "-q", "-m", "first"], env=env)
    (repo / "src" / "main.py").write_bytes(b"print('hello, world')\n")
    (repo / "src" / "util.py").write_bytes(b"X = 1\n")
    ok([*git, "add", "-A"], env=env)
    ok([*git, "commit", "-q", "-m", "second"], env=env)
    fsck = ok([*git, "fsck", "--full", "--strict", "--no-progress"], env=env)
    assert (fsck.stdout + fsck.stderr).decode() == ""  # no "bad sha1 file", nothing dangling
    assert ok([*git, "log", "--format=%s"], env=env).stdout == b"second\nfirst\n"
    assert ok([*git, "status", "--porcelain"], env=env).stdout == b""
    project.sync()

    local = {f"repo/{k}": v for k, v in local_files(repo).items()}
    server = project.server.contents()
    assert sorted(server) == sorted(local)  # no *.lock, tmp_obj_* or other temp left
    assert server == local


FIO_JOB = ["--name=verify", "--rw=write", "--bs=64k", "--size=4M", "--verify=crc32c",
           "--ioengine=psync", "--fallocate=none", "--verify_state_save=0"]  # fmt: skip


def test_fio_data_verifies_after_a_remount_on_an_empty_cache(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project], tmp_path: Path
) -> None:
    m = mount_factory()
    p = new_project(m)
    target = p.dir / "fio.bin"
    ok(["fio", *FIO_JOB, f"--filename={target}", "--do_verify=1"], cwd=tmp_path)
    p.sync()
    assert p.server.paths() == ["fio.bin"]
    assert p.server.versions("fio.bin") == [1]
    assert p.server.document("fio.bin")["size"] == 4 << 20

    remount(m, empty_cache=True)
    p.emu.reset_stats()
    result = run(["fio", *FIO_JOB, f"--filename={target}", "--verify_only"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()
    assert downloads(p.emu) > 0  # verified what came back from the server
    p.sync()
    assert changes(p.emu) == {}  # verifying wrote nothing
