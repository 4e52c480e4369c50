"""Helpers of the program tests: a fresh project seen through a mount, running programs, remounting,
and walking local trees."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.server import ServerProject

SLUG = "programs"
#: The mount options of the shared mount and, by default, of ``mount_factory``'s mounts.
MOUNT_ARGS = ("--dir-ttl", "1", "--write-back-delay", "0.2")
COMMAND_TIMEOUT = 120.0


def remount(m: Mount, *, empty_cache: bool = False) -> None:
    """Unmount ``m`` once every save is sent and mount it again on the same mountpoint: with the
    same cache dir, or with a new empty one (nothing is then served from this machine)."""
    m.wait_synced()
    m.unmount()
    if empty_cache:
        m.cache_dir = m.root / f"cache-{time.monotonic_ns()}"
    m.start()


class Project:
    """A fresh empty project: the server's view of it and its directory on a mount."""

    def __init__(self, emu: Emulator, mount: Mount, name: str) -> None:
        self.emu = emu
        self.mount = mount
        self.name = name
        self.json = emu.admin(
            "POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True}
        )
        self.pid: str = self.json["id"]
        self.server = ServerProject(emu, SLUG, self.pid)
        # The team's listing may be younger than the directory TTL: wait until it shows.
        deadline = time.monotonic() + 15
        while not self.dir.is_dir():
            assert time.monotonic() < deadline, f"project {name!r} not shown by the mount"
            time.sleep(0.05)

    @property
    def dir(self) -> Path:
        return self.mount.p(SLUG, self.name)

    def sync(self, timeout: float = 60.0) -> None:
        """Wait until the mount has sent every save."""
        self.mount.wait_synced(timeout)

    def seed(self, name: str, *contents: bytes) -> dict[str, Any]:
        """A document at the project's root with one version per content, through the API."""
        doc = self.server.upload(name, contents[0])
        for data in contents[1:]:
            doc = self.server.add_version(name, data)
        return doc

    def wait_visible(self, *names: str, timeout: float = 15.0) -> None:
        """Wait until the mount lists documents created on the server (directory TTL)."""
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(self.dir / n) for n in names):
            assert time.monotonic() < deadline, f"{names} not visible in {os.listdir(self.dir)}"
            time.sleep(0.05)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to completion; its exit status is for the caller to check."""
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, input=input, capture_output=True, timeout=timeout,
        env=env, check=False, stdin=None if input is not None else subprocess.DEVNULL,
    )  # fmt: skip


def ok(cmd: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``run`` that fails the test, with the program's output, unless it exits 0."""
    result = run(cmd, **kwargs)
    assert result.returncode == 0, (
        f"{[str(c) for c in cmd]} exited {result.returncode}\n"
        f"stdout: {result.stdout.decode(errors='replace')[-3000:]}\n"
        f"stderr: {result.stderr.decode(errors='replace')[-3000:]}"
    )
    return result


def local_files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path, with its bytes; ``versions/`` directories are
    left out (they are the mount's history, not files of the tree)."""
    result: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "versions")
        for name in filenames:
            path = Path(dirpath, name)
            result[path.relative_to(root).as_posix()] = path.read_bytes()
    return result


def local_dirs(root: Path) -> set[str]:
    """Every directory below ``root`` by relative path, ``versions/`` left out."""
    result: set[str] = set()
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "versions"]
        for name in dirnames:
            result.add(Path(dirpath, name).relative_to(root).as_posix())
    return result


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Create ``files`` (relative path -> bytes) below ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
