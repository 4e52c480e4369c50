"""The filesystem layer's own refusals, and helpers to report other errors.

``FsError(errno)`` is a POSIX decision the layer makes itself (a right missing, a name too long);
API errors pass through unchanged. ``bimfs.fuse.errno_map`` turns both into errno, the one
mapping.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

import trio

from bimfs.vfs.names import NAME_MAX


class FsError(Exception):
    """A POSIX-level refusal decided by the filesystem layer itself."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


def describe(exc: BaseException) -> str:
    """An error as one short line (for ``failed: <reason>`` and logs)."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first error of a task group that is not a cancellation (else the group itself)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = first_error(exc)
            if inner is not exc:
                return inner
        elif not isinstance(exc, trio.Cancelled):
            return exc
    return group


def check_name(name: str) -> None:
    """A name given by a program: over 255 bytes fails as on a local disk (FUSE itself lets
    names of up to 1024 bytes through)."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


@contextlib.contextmanager
def callers_mistake() -> Iterator[None]:
    """A size or offset beyond what a file can hold is the caller's error, as on a local
    disk (`EFBIG`, `EINVAL`), not a fault of the mount's disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EFBIG, errno.EINVAL):
            raise FsError(exc.errno) from None
        raise
