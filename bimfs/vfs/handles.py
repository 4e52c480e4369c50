"""Open files and open directories.

A file handle is one open file description: its node, whether it may write, and its way to the
bytes (a cache handle, or a descriptor of the local content). A directory handle is a snapshot
of the entries at ``opendir``, so offsets stay stable while the directory changes; an entry
counts as a kernel lookup only once ``readdir`` actually handed it over.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bimfs.cache.content import CachedFile
from bimfs.vfs.errors import FsError
from bimfs.vfs.nodes import Attr, FileNode


@dataclass
class Handle:
    """One open file description."""

    fh: int
    node: FileNode
    writable: bool
    cached: CachedFile | None = None
    local_fd: int | None = None  # fd for reading committed local data
    local_path: Path | None = None
    # Writes bypass the kernel's page cache (see ``Filesystem.direct_io``).
    direct: bool = False


class Handles:
    """The open files, by handle number."""

    def __init__(self) -> None:
        self._open: dict[int, Handle] = {}
        self._next = 1

    def add(self, node: FileNode, writable: bool, direct: bool) -> Handle:
        handle = Handle(self._next, node, writable, direct=direct)
        self._next += 1
        self._open[handle.fh] = handle
        return handle

    def get(self, fh: int) -> Handle:
        handle = self._open.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    def pop(self, fh: int) -> Handle | None:
        return self._open.pop(fh, None)


class DirHandles:
    """Open directories: the snapshot taken at ``opendir``."""

    def __init__(self) -> None:
        self._open: dict[int, list[tuple[str, Attr]]] = {}
        self._next = 1

    def open(self, entries: list[tuple[str, Attr]]) -> int:
        fh = self._next
        self._next += 1
        self._open[fh] = entries
        return fh

    def entries(self, fh: int, start: int) -> Iterator[tuple[int, str, Attr]]:
        """``(offset of the next entry, name, attributes)`` from offset ``start``."""
        listing = self._open.get(fh, [])
        for index in range(start, len(listing)):
            name, attr = listing[index]
            yield index + 1, name, attr

    def close(self, fh: int) -> None:
        self._open.pop(fh, None)
