"""File helpers shared by the content store, the journal and the staging files."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bimfs.cache.errors import ContentShortError

log = logging.getLogger(__name__)

#: Files at least this large are deleted by a short-lived thread (see ``delete``).
DELETE_LATER_SIZE = 16 << 20

#: ``errno`` values of a write that failed because the disk (or the user's quota) is full.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(exc: BaseException) -> bool:
    """True when ``exc`` says the disk (or the user's quota) has no room left."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def disk_space(path: Path) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the file system holding ``path``, free counting only what a
    process without the superuser's reserve may write; None when it cannot be asked."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (creations, renames, removals) durable."""
    _fsync(path, os.O_DIRECTORY)


def fsync_path(path: Path) -> None:
    """Make the file's data durable (a file whose descriptor is no longer at hand)."""
    _fsync(path, 0)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path, *, chmod: bool) -> None:
    """Create ``path`` (and its parents) readable by the owner only; with ``chmod`` an existing
    directory is made private too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if chmod:
        os.chmod(path, 0o700)


def file_size(path: Path) -> int | None:
    """The size of ``path``, None when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def timed_pwrite(fd: int, data: memoryview, offset: int) -> float:
    """Write all of ``data`` at ``offset``; return the seconds it took."""
    start = time.perf_counter()
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n
    return time.perf_counter() - start


def pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``; ``ContentShortError`` when the file ends before."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise ContentShortError(f"cache file ended at {offset + got}, expected {offset + size}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def delete(path: Path, size: int, done: Callable[[], None] | None = None) -> None:
    """Delete ``path`` (``size`` bytes), which nothing will ever create again under that name.

    Deleting a large file frees its page cache, about 0.2 s per GiB, and the caller is often
    the event loop: a file of at least ``DELETE_LATER_SIZE`` bytes is deleted by a short-lived
    thread, which calls ``done()`` (if given) when the file is gone. A missing file is fine.
    Should the process end before that thread ran, the file is left behind; callers name such
    files so that their next start removes them.
    """
    if size < DELETE_LATER_SIZE:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if done is not None:
            done()
        return
    threading.Thread(
        target=_unlink_quietly, args=((path,), done), name="delete", daemon=True
    ).start()


def unlink_all(paths: Iterable[Path]) -> None:
    """Delete every file of ``paths`` now (missing ones are fine; others' errors are logged)."""
    _unlink_quietly(paths, None)


def _unlink_quietly(paths: Iterable[Path], done: Callable[[], None] | None) -> None:
    try:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not delete %s: %s", path, exc)
    finally:
        if done is not None:
            done()


#: How much a sequential writer writes between two calls of ``start_writeback``.
WRITEBACK_STEP = 32 << 20

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def _load_sync_file_range() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``length`` bytes at ``offset`` of a staging file to disk
    now, without waiting for it: the ``fsync`` that ``commit`` does at ``close()`` then has
    only the tail left to write. A hint only (no-op where ``sync_file_range`` is missing, and
    its errors are ignored): durability still comes from that ``fsync``."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
