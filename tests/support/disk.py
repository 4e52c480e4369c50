"""A small real disk for tests of a full cache: a tmpfs of a few MiB, and a file that fills it.

    with small_disk(tmp_path / "disk", 8 << 20) as disk:   # pytest.skip unless root
        filler = fill(disk / "filler")                      # the disk is full now
        os.unlink(filler)

Mounting needs root (the suite runs as root); without it the test is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``path`` (created) for the block, then unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            # Still busy (a process that has a file open on it): detach it now, gone later.
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int = 0) -> Path:
    """Write ``path`` until its disk is full (to the last page), or until only ``leave`` bytes
    are free; returns ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if leave:
            block = b"\xa5" * (1 << 20)
            while (want := free_bytes(path.parent) - leave) > 0:
                os.write(fd, block[:want])
            return path
        for size in (1 << 20, 64 << 10, 4 << 10, 512, 1):
            block = b"\xa5" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return path


def free_bytes(path: Path) -> int:
    """The bytes still free on the disk holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path: Path) -> int:
    """The bytes in use on the disk holding ``path``."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
