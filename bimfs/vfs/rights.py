"""Bimplus rights as POSIX modes, and the checks that refuse an operation before any transfer.

Each ``require_*`` states one rule and raises ``FsError`` (``EROFS`` for a read-only mount,
``EACCES`` for a missing right). bimfs checks the rights itself, so they hold for root too.
"""

from __future__ import annotations

import errno
import stat

from bimfs.api.models import Attachment
from bimfs.config import Config
from bimfs.vfs.errors import FsError
from bimfs.vfs.nodes import DIR_MODE_RO, DIR_MODE_RW, DirKind, DirNode, FileNode


class Rights:
    """The rules of one mount (``--read-only`` applies to all of them)."""

    def __init__(self, config: Config) -> None:
        self.read_only = config.read_only

    # ---------------------------------------------------------------- modes

    def writable_dir(self, d: DirNode) -> bool:
        """Whether documents can be created, renamed and deleted in ``d``."""
        return d.holds_documents and d.writable and not self.read_only

    def file_writable(self, node: FileNode) -> bool:
        if node.local_only:
            return True
        if node.is_version_file or self.read_only:
            return False
        parent = node.parent
        if parent is None or not parent.writable:
            return False
        return node.doc is None or node.doc.rights.update

    def file_mode(self, node: FileNode) -> int:
        if node.local_only:
            return stat.S_IFREG | 0o644
        server = node.server
        readable = server is None or server.rights.download or node.local is not None
        mode = stat.S_IFREG | (0o444 if readable else 0)
        if self.file_writable(node):
            mode |= 0o200
        return mode

    def dir_mode(self, d: DirNode) -> int:
        if self.read_only:
            writable = False
        elif d.kind is DirKind.VDIR:
            writable = d.writable  # deleting versions needs the document's delete right
        else:
            writable = self.writable_dir(d)
        return DIR_MODE_RW if writable else DIR_MODE_RO

    # ---------------------------------------------------------------- rules

    def require_change(self) -> None:
        """Any change on a ``--read-only`` mount."""
        if self.read_only:
            raise FsError(errno.EROFS)

    def require_writable_dir(self, d: DirNode) -> None:
        """Creating, renaming or deleting in ``d`` (a project or folder with write access)."""
        self.require_change()
        if not self.writable_dir(d):
            raise FsError(errno.EACCES, f"{d.path()}: no write access")

    def require_documents_here(self, d: DirNode) -> None:
        """Files live in projects and folders only (not in the root, a team, versions/)."""
        if not d.holds_documents:
            raise FsError(errno.EACCES, f"{d.path() or '/'}: no documents here")

    def require_file_writable(self, node: FileNode) -> None:
        """Changing a file's content (the update right; versions are immutable)."""
        self.require_change()
        if not self.file_writable(node):
            raise FsError(errno.EACCES, f"{node.path()}: no update right")

    def require_readable(self, node: FileNode) -> None:
        """Reading a document's bytes, or changing them in place (which starts from them)."""
        server = node.server
        if node.local is None and not node.local_only and server is not None:
            self.require_download(node.path(), server)

    @staticmethod
    def require_download(path: str, doc: Attachment) -> None:
        if not doc.rights.download:
            raise FsError(errno.EACCES, f"{path}: no download right")

    def require_delete(self, d: DirNode, doc: Attachment, path: str) -> None:
        """Deleting a document (or one of its versions) in ``d``."""
        self.require_change()
        if not d.writable or not doc.rights.delete:
            raise FsError(errno.EACCES, f"{path}: no delete right")

    def require_update(self, d: DirNode, doc: Attachment, path: str) -> None:
        """Renaming a document or changing its metadata."""
        self.require_change()
        if not d.writable or not doc.rights.update:
            raise FsError(errno.EACCES, f"{path}: no update right")

    def require_share(self, doc: Attachment, path: str) -> None:
        self.require_change()
        if not doc.rights.share:
            raise FsError(errno.EACCES, f"{path}: no share right")
