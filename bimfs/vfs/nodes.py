"""The nodes of the in-memory tree: directories, files, and the local content a file may hold.

Nodes are long-lived objects: a document keeps its node (and inode number) across listings,
renames and uploads, so the kernel's view stays consistent. Directory children are rebuilt from
the server's listing plus the local overlay (files not yet uploaded, local-only temp files).
Every attribute a node can have is declared here (``__slots__``: a project of many thousand
documents holds as many nodes, so none carries a ``__dict__``); nothing is added at run time.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from bimfs.api.models import Attachment
from bimfs.vfs.keys import NodeKey

DIR_MODE_RO = stat.S_IFDIR | 0o555
DIR_MODE_RW = stat.S_IFDIR | 0o755


class Stream(Protocol):
    """An upload that follows a file while it is written (``bimfs.vfs.uploads.EagerUpload``)."""

    def grew(self, size: int) -> None: ...

    def abort(self) -> None: ...


class DirKind(enum.Enum):
    ROOT = "root"
    TEAM = "team"
    PROJECT = "project"
    FOLDER = "folder"
    VERSIONS = "versions"  # versions/ of a project or folder
    VDIR = "vdir"  # versions/<fileName>/


@dataclass(frozen=True, slots=True)
class Attr:
    """What ``stat`` shows for a node."""

    ino: int
    mode: int
    size: int
    mtime: float
    ctime: float
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    atime: float | None = None  # None: the same as mtime
    # How long the kernel may keep these attributes and the name's entry (None: the default,
    # ``bimfs.fuse.operations.ATTR_TIMEOUT``).
    ttl: float | None = None

    @property
    def blocks(self) -> int:
        return (self.size + 511) // 512


class Node:
    """Base of all nodes."""

    __slots__ = ("generation", "ino", "lookups", "name", "parent", "removed", "times_set")

    ino: int
    name: str
    parent: DirNode | None

    def __init__(self, ino: int, name: str, parent: DirNode | None) -> None:
        self.ino = ino
        self.name = name
        self.parent = parent
        self.lookups = 0  # the kernel's references (lookups minus forgets)
        self.removed = False
        # Bumped whenever a file's content changes (a local write, a new version seen on the
        # server); times set by utimes hold only for the generation they were set on.
        self.generation = 0
        # (generation, atime, mtime) set by utimes/touch; None where not set.
        self.times_set: tuple[int, float | None, float | None] | None = None

    def path(self) -> str:
        """A readable path for messages."""
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


class DirNode(Node):
    """A directory: root, team, project, document folder, versions/ or versions/<doc>/."""

    __slots__ = (
        "children",
        "detached",
        "doc_id",
        "entity_id",
        "folder_id",
        "hidden",
        "kind",
        "listing_token",
        "mtime",
        "overlay",
        "pid",
        "slug",
        "writable",
    )

    def __init__(
        self,
        ino: int,
        name: str,
        parent: DirNode | None,
        kind: DirKind,
        *,
        slug: str | None = None,
        pid: str | None = None,
        folder_id: str | None = None,
        doc_id: str | None = None,
        entity_id: str | None = None,
        writable: bool = False,
        mtime: float = 0.0,
    ) -> None:
        super().__init__(ino, name, parent)
        self.kind = kind
        self.slug = slug
        self.pid = pid
        self.folder_id = folder_id
        self.doc_id = doc_id
        self.entity_id = entity_id
        self.writable = writable
        self.mtime = mtime
        self.children: dict[str, Node] = {}
        # What the children were built from (a listing object), None while never listed.
        self.listing_token: object | None = None
        # Files that exist only here until uploaded (or forever, for local-only names).
        self.overlay: dict[str, FileNode] = {}
        # name -> doc id of a document moved away to a local-only name (vim's backup rename):
        # a file created under that name again becomes a new version of that document.
        self.detached: dict[str, str] = {}
        # Server documents hidden here while a local operation on them is in flight.
        self.hidden: set[str] = set()

    @property
    def holds_documents(self) -> bool:
        return self.kind in (DirKind.PROJECT, DirKind.FOLDER)


@dataclass
class LocalData:
    """Content of a file that lives on this machine: a staging file being written, a journal
    entry waiting for upload, or a local-only file. ``committed`` data is owned by the journal
    and never written again (a new write copies it first)."""

    path: Path
    size: int
    mtime: float
    committed: bool = False
    journal_id: str | None = None
    dirty: bool = False
    fd: int | None = None
    # Written only at its end since it was empty: a candidate for streaming while written.
    append_only: bool = False
    eager: Stream | None = None  # the stream sending this content while it is written
    # Writeback of the staging file was started up to here (sequential writes only).
    writeback_start: int = 0
    # Written through a handle that bypasses the kernel's page cache (``direct_io``).
    direct_writes: bool = False
    # The server version this content was made from (None: a file the server never had);
    # a save is a conflict when the server's newest version is another one at upload time.
    base_version: int | None = None

    def abandon_stream(self) -> None:
        """Stop streaming this content (the server discards the incomplete body)."""
        if self.eager is not None:
            self.eager.abort()
            self.eager = None

    def close(self) -> None:
        """Let go of the content: the stream, the open file and, unless the journal owns
        it, the file itself."""
        self.abandon_stream()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not self.committed:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


class FileNode(Node):
    """A document (latest version), a version file, a pending new file or a local-only file."""

    __slots__ = (
        "committing",
        "created",
        "deleted",
        "detached_from",
        "doc",
        "kernel_key",
        "key",
        "local",
        "local_only",
        "open_count",
        "pending_attrs",
        "saved_mtime",
        "version",
        "writers",
    )

    def __init__(
        self,
        ino: int,
        name: str,
        parent: DirNode | None,
        *,
        key: NodeKey,
        doc: Attachment | None = None,
        version: Attachment | None = None,
        local_only: bool = False,
    ) -> None:
        super().__init__(ino, name, parent)
        self.doc = doc
        self.version = version  # set for read-only version files
        self.key = key
        self.local_only = local_only
        self.local: LocalData | None = None
        self.open_count = 0
        self.writers = 0  # open handles that may write
        self.kernel_key: object | None = None  # the content key the kernel's pages show
        # (generation, mtime) of content saved here and uploaded: shown instead of the
        # server's time until the server has another version.
        self.saved_mtime: tuple[int, float] | None = None
        self.committing: trio.Event | None = None
        # Deleted here while its first upload ran: the document it makes is deleted again.
        self.deleted = False
        self.created = 0.0
        # user.bimplus.tag / classification set before the first upload (sent with it).
        self.pending_attrs: dict[str, str] = {}
        # Vim's backup rename: (directory, name) this document was moved away from.
        self.detached_from: tuple[DirNode, str] | None = None

    @property
    def is_version_file(self) -> bool:
        return self.version is not None

    @property
    def server(self) -> Attachment | None:
        """The server object whose bytes this file shows when nothing local overrides them."""
        return self.version if self.version is not None else self.doc
