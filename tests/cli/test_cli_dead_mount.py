"""Dead mountpoints: the mount process was killed (SIGKILL), the kernel still holds the mount and
answers ENOTCONN. ``bimfs unmount`` clears it, ``bimfs mount`` clears a dead bimfs mount and
mounts; a dead mount of another filesystem is refused with one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import (
    Daemon,
    new_project,
    one_error_line,
    read_status,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.processes import fusermount, pid_alive, wait_until, write_token

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"


@pytest.fixture
def leftovers() -> Iterator[list[Path]]:
    """Mountpoints to clear lazily at teardown, whatever the test left there."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def mount_args(emulator: Emulator, d: Daemon, *extra: str) -> list[str | Path]:
    token = write_token(d.root / "token", emulator.token)
    return ["--api-url", emulator.url, "--token-file", token, "--cache-dir", d.cache_dir, *extra]


def kill(d: Daemon) -> None:
    assert d.pid is not None
    os.kill(d.pid, signal.SIGKILL)
    pid = d.pid
    wait_until(lambda: not pid_alive(pid), 10.0, f"the mount process {pid} to die")
    wait_until(lambda: _dead(d.path), 10.0, f"{d.path} to answer ENOTCONN")


def test_unmount_clears_a_dead_mount(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], leftovers: list[Path]
) -> None:
    d = daemon_factory()
    leftovers.append(d.path)
    d.mount(*mount_args(emulator, d))
    assert "Office Building" in os.listdir(d.p(SLUG))
    kill(d)
    result = run_bimfs("unmount", d.path, env=d.env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bimfs: cleared the dead bimfs mount at")
    assert "lazily" not in lines[0]
    assert not os.path.ismount(d.path) and os.listdir(d.path) == []
    # A second unmount: nothing is mounted there any more.
    assert "is not a bimfs mount" in one_error_line(run_bimfs("unmount", d.path, env=d.env))


def test_unmount_clears_a_dead_mount_still_in_use_lazily(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], leftovers: list[Path]
) -> None:
    d = daemon_factory()
    leftovers.append(d.path)
    d.mount(*mount_args(emulator, d))
    holder = subprocess.Popen(["sleep", "60"], cwd=d.p(SLUG, "Office Building"))
    try:
        kill(d)
        result = run_bimfs("unmount", d.path, env=d.env)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "lazily" in lines[0], result.stderr
        assert not os.path.ismount(d.path) and os.listdir(d.path) == []
    finally:
        holder.kill()
        holder.wait()


def test_mount_on_a_dead_bimfs_mount_clears_it_and_sends_what_was_saved(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], leftovers: list[Path]
) -> None:
    pid = new_project(emulator, "Killed")
    d = daemon_factory()
    leftovers.append(d.path)
    d.mount(*mount_args(emulator, d, "--write-back-delay", "60"))
    d.p(SLUG, "Killed", "saved.txt").write_bytes(b"saved before the kill\n")
    assert read_status(d.path)["pending"] == 1
    kill(d)
    result = d.mount(*mount_args(emulator, d, "--write-back-delay", "0.2"))
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"bimfs: cleared the dead bimfs mount at {d.path} (Transport endpoint is not connected)"
    )
    assert os.path.ismount(d.path)
    wait_until(lambda: "saved.txt" in server_docs(emulator, pid), 30.0, "the save on the server")
    doc = server_docs(emulator, pid)["saved.txt"]
    assert emulator.download(SLUG, doc["id"]) == b"saved before the kill\n"
    assert (d.p(SLUG, "Killed", "saved.txt")).read_bytes() == b"saved before the kill\n"


FOREIGN = textwrap.dedent(
    """
    import sys, pyfuse3, trio
    pyfuse3.init(pyfuse3.Operations(), sys.argv[1], ["fsname=other", "subtype=other"])
    print("mounted", flush=True)
    trio.run(pyfuse3.main)
    """
)


def test_a_dead_mount_of_another_filesystem_is_refused_with_one_line(
    emulator: Emulator, tmp_path: Path, leftovers: list[Path]
) -> None:
    path = tmp_path / "other"
    path.mkdir()
    leftovers.append(path)
    other = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "mounted"
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()
    wait_until(lambda: _dead(path), 10.0, f"{path} dead")
    token = write_token(tmp_path / "token", emulator.token)
    cache = tmp_path / "cache"
    args = ["--api-url", emulator.url, "--token-file", token, "--cache-dir", cache]
    line = one_error_line(run_bimfs("mount", path, *args))
    assert line == (
        f"bimfs: {path} is a dead fuse.other mount, not bimfs (Transport endpoint is not "
        f"connected); clear it with: fusermount3 -u {path}"
    )
    line = one_error_line(run_bimfs("unmount", path))
    assert "dead fuse.other mount, not bimfs" in line
    assert _dead(path)  # left alone: not ours
    fusermount(path)
    assert not _dead(path)


def _dead(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False
