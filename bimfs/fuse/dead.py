"""Dead mounts: a FUSE mountpoint whose process has ended (killed, crashed) answers every call
with ``ENOTCONN`` ("Transport endpoint is not connected") until it is unmounted.

This module finds out what is mounted at a path without touching the path itself (stat would
fail), and clears a dead mount with ``fusermount3 -u``, lazily (``-z``) when something still
holds it open.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BIMFS_TYPE", "ClearError", "DeadMount", "clear", "dead_mount_type", "mount_type"]

BIMFS_TYPE = "fuse.bimfs"
"""The filesystem type of a bimfs mount in ``/proc/self/mounts``."""

DEAD = (errno.ENOTCONN, errno.ECONNABORTED)
"""What a dead FUSE mount answers (``ECONNABORTED`` when the kernel aborted the connection)."""

_FUSERMOUNT_TIMEOUT = 30.0


class ClearError(Exception):
    """A dead mount could not be cleared; the message is one line."""


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _spellings(path: Path) -> set[str]:
    """The ways ``path`` may be written in the mount table, without a stat of ``path`` itself
    (its parent is resolved: it is alive)."""
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    return {absolute, os.path.join(os.path.realpath(parent), name)}


def mount_type(path: Path) -> str | None:
    """The type of the topmost filesystem mounted exactly at ``path`` (``fuse.bimfs``,
    ``fuse.sshfs``, ...), or None when nothing is mounted there."""
    wanted = _spellings(path)
    found: str | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as table:
            for line in table:
                parts = line.split()
                if len(parts) >= 3 and _unescape(parts[1]) in wanted:
                    found = parts[2]  # later lines are mounted on top of earlier ones
    except OSError:
        return None
    return found


@dataclass(frozen=True)
class DeadMount:
    """A dead mount found at a path: its filesystem type and the error it answers."""

    fstype: str
    reason: str

    @property
    def is_bimfs(self) -> bool:
        return self.fstype == BIMFS_TYPE


def dead_mount_type(path: Path) -> DeadMount | None:
    """What is dead at ``path``: None when ``path`` answers (or is missing, or fails for
    another reason), else the dead mount's type (``"unknown"`` when the mount table does not
    list ``path`` itself: the dead mount is above it)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in DEAD:
            return None
        return DeadMount(mount_type(path) or "unknown", exc.strerror or str(exc))
    return None


def clear(path: Path) -> bool:
    """Unmount the dead mount at ``path``; True when it had to be done lazily (something still
    holds it open: it goes once that lets go). Raises ``ClearError``."""
    if _fusermount("-u", str(path)) is None:
        return False
    failure = _fusermount("-u", "-z", str(path))
    if failure is None:
        return True
    raise ClearError(f"cannot unmount the dead mount at {path}: {failure}")


def _fusermount(*args: str) -> str | None:
    """Run ``fusermount3 ARGS``; None on success, else its last line of complaint."""
    try:
        result = subprocess.run(
            ["fusermount3", *args],
            capture_output=True,
            text=True,
            timeout=_FUSERMOUNT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return "fusermount3 not found (apt-get install fuse3)"
    except subprocess.TimeoutExpired:
        return f"fusermount3 did not finish in {_FUSERMOUNT_TIMEOUT:g} s"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"fusermount3 exited {result.returncode}"
