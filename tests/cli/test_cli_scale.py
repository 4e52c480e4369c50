"""``bimfs status`` and ``bimfs unmount`` with many pending saves, and when a mount cannot be read.

The mount's status is far larger than one extended attribute may be (64 KiB) once a few hundred
saves are pending; both commands must still work, with bounded human output, the complete
detail in ``--json``, and one clear error line (and a non-zero exit) when there is nothing to read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bimfs.cli import status as cli
from tests.cli.helpers import (
    CREATE,
    SLUG,
    Daemon,
    new_project,
    one_error_line,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.journal import write_pending_creates
from tests.support.mount import Mount
from tests.support.processes import pid_alive

pytestmark = pytest.mark.mount


def mount(d: Daemon, emulator: Emulator, token_file: Path, *args: str) -> Daemon:
    d.mount(
        "--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir, *args,
    )  # fmt: skip
    return d


def status_json(mountpoint: Path) -> Any:
    result = run_bimfs("status", mountpoint, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def status_lines(*args: str | Path) -> list[str]:
    result = run_bimfs("status", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_status_and_unmount_with_hundreds_of_pending_saves(
    emulator: Emulator, token_file: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    count = 500
    pid = new_project(emulator, "Many Saves")
    # Far longer than the test: the saves stay pending until unmount sends them.
    d = mount(daemon_factory(), emulator, token_file, "--write-back-delay", "3600")
    project = d.p(SLUG, "Many Saves")
    names = [f"save-{i:04d}.txt" for i in range(count)]
    for i, name in enumerate(names):
        (project / name).write_bytes(b"save %d\n" % i)
    paths = [f"/{SLUG}/Many Saves/{name}" for name in names]

    # Human output: the count, the first few paths and how many more; --all lists every one.
    lines = status_lines(d.path)
    assert lines[0] == f"{d.path}  ({emulator.url})"
    assert "  pending uploads: 500" in lines
    shown = [ln.strip() for ln in lines if ln.strip() in paths]
    assert 0 < len(shown) <= 20
    assert f"    ... and {count - len(shown)} more" in "\n".join(lines)
    assert len(lines) < 40
    every = status_lines(d.path, "--all")
    assert sorted(ln.strip() for ln in every if ln.startswith(f"    /{SLUG}/")) == paths

    # --json: the complete detail, every save with its path and state.
    status = status_json(d.path)
    assert status["pending"] == count
    assert status["failed"] == []
    assert [u["path"] for u in status["uploads"]] == paths  # in the order they were saved
    assert {u["state"] for u in status["uploads"]} == {"pending"}
    assert all(u["size"] == len(b"save %d\n" % i) for i, u in enumerate(status["uploads"]))
    assert server_docs(emulator, pid) == {}

    # unmount asks for everything now (the write-back delay is an hour) and waits for it.
    result = run_bimfs("unmount", d.path, "--timeout", "150", timeout=200)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not os.path.ismount(d.path)
    assert d.pid is not None and not pid_alive(d.pid)
    docs = server_docs(emulator, pid)
    assert sorted(docs) == names
    assert emulator.count(CREATE, 201) + emulator.count(CREATE, 200) == count  # each once
    for i in (0, count // 2, count - 1):
        assert emulator.download(SLUG, docs[names[i]]["id"]) == b"save %d\n" % i


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when the machine has one, else under ``tmp_path``: 200 000 journal
    files are written and read in seconds there, where a disk shared with other work can take
    minutes. bimfs runs the same code on either."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="bimfs-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(120)
def test_status_and_unmount_with_100000_pending_saves(
    emulator: Emulator,
    token_file: Path,
    memory_dir: Path,
    daemon_factory: Callable[..., Daemon],  # after memory_dir: its mounts end first
) -> None:
    count = 100_000
    pid = new_project(emulator, "Scale")
    d = daemon_factory()
    d.cache_dir = memory_dir / "cache"
    # What a mount stopped with 100 000 unsent saves leaves behind; the next mount resumes them.
    paths = write_pending_creates(
        d.cache_dir, slug=SLUG, pid=pid, project_name="Scale", count=count
    )
    # The server refuses every upload for now (503/500, retried with backoff): all stay pending.
    emulator.set_faults(fail_rate=1.0, routes=[CREATE])
    mount(d, emulator, token_file, "--drain-timeout", "1")

    lines = status_lines(d.path)
    assert "  pending uploads: 100000" in lines
    assert len(lines) < 40
    assert any(ln.startswith("    ... and 99") and ln.endswith(" more") for ln in lines), lines

    status = status_json(d.path)
    assert status["pending"] == count
    assert [u["path"] for u in status["uploads"]] == paths
    assert status["failed"] == []

    # unmount asks for the uploads, gives up after its timeout, says how many are left and
    # which come first, and leaves the mount in place.
    result = run_bimfs("unmount", d.path, "--timeout", "2", timeout=120)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"bimfs: {count} upload(s) still pending after 2 s; not unmounted:"
    listed = [ln.strip() for ln in lines[1:-1]]
    assert 0 < len(listed) <= 20
    assert set(listed) <= set(paths)
    assert lines[-1].startswith(f"  ... and {count - len(listed)} more")
    assert os.path.ismount(d.path)
    assert server_docs(emulator, pid) == {}


def test_status_of_a_dead_mount_fails_with_one_line(
    emulator: Emulator,
    token_file: Path,
    daemon_factory: Callable[..., Daemon],
    mount_factory: Callable[..., Mount],
) -> None:
    alive = mount(daemon_factory(), emulator, token_file)
    dead = mount_factory(emulator)
    assert dead.process is not None
    dead.process.kill()
    dead.process.wait()
    dead.process = None
    try:
        assert f" {dead.path} fuse.bimfs " in Path("/proc/self/mounts").read_text()
        for args in (("status",), ("status", "--json")):
            line = one_error_line(run_bimfs(*args, dead.path))
            assert str(dead.path) in line, line
            assert "not a bimfs mount" not in line, line
            assert f"bimfs unmount {dead.path}" in line, line  # what to do about it
        # Every mount: the working one is shown, the dead one named on stderr, exit non-zero.
        result = run_bimfs("status")
        assert result.returncode != 0
        assert f"{alive.path}  ({emulator.url})" in result.stdout.splitlines()
        assert any(str(dead.path) in ln for ln in result.stderr.splitlines()), result.stderr
        assert all(ln.startswith("bimfs: ") for ln in result.stderr.splitlines())
        result = run_bimfs("status", "--json")
        assert result.returncode != 0
        assert str(alive.path) in {s["mountpoint"] for s in json.loads(result.stdout)}
    finally:
        subprocess.run(["fusermount3", "-uz", str(dead.path)], capture_output=True, check=False)


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("unmount",)])
def test_commands_on_something_that_is_not_a_mount_fail(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        line = one_error_line(run_bimfs(*command, path))
        assert f"{path} is not a bimfs mount" in line


def test_a_status_too_large_to_read_is_not_called_not_a_mount(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A mount running an older bimfs answers E2BIG once its status outgrows 64 KiB."""

    def too_big(path: Path, name: str) -> bytes:
        raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))

    monkeypatch.setattr(cli, "getxattr", too_big)
    monkeypatch.setattr(cli, "bimfs_mounts", lambda: [tmp_path])
    with pytest.raises(cli.CliError) as err:
        cli.read_status(tmp_path)
    assert "not a bimfs mount" not in str(err.value)
    assert str(tmp_path) in str(err.value)
