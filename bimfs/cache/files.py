"""File helpers shared by the content store and the journal."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Files at least this large are deleted by a short-lived thread (see ``delete``).
DELETE_LATER_SIZE = 16 << 20


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete(path: Path, size: int) -> None:
    """Delete ``path`` (``size`` bytes), which nothing will ever create again under that name.

    Deleting a large file frees its page cache, about 0.2 s per GiB, and the caller is often
    the event loop: a file of at least ``DELETE_LATER_SIZE`` bytes is deleted by a short-lived
    thread. A missing file is fine. Should the process end before that thread ran, the file is
    left behind; callers name such files so that their next start removes them.
    """
    if size < DELETE_LATER_SIZE:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    threading.Thread(target=_unlink_quietly, args=(path,), name="delete", daemon=True).start()


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete %s: %s", path, exc)
