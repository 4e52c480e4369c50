"""Local content: the copy a save is written into, and the one way it enters the journal.

Order of a save: ``make_local`` gives the file a staging file in the journal's directory (a
copy of the current content, or empty for ``O_TRUNC``), ``write``/``truncate`` change it, and at
``flush`` (every ``close()``) or ``fsync`` ``commit`` makes it a durable journal entry before
returning. Everything a file holds locally (a save being written, a temp file, content taken
back from the journal) is created by ``new_staging`` in the journal's staging area, so every
path that later hands it to the journal (a close, a rename over a document while the file is
still open) hands over a file the journal accepts.

A commit that fails (a full or failing cache disk) keeps the bytes in their staging file, the
file dirty and its error for ``close()``; it is retried with backoff and at the next close, and
counts as not saved (``unsaved``) until it succeeds. ``keep_unsaved`` keeps what never made it
when the mount ends.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bimfs.backoff import backoff
from bimfs.cache.files import WRITEBACK_STEP, start_writeback
from bimfs.cache.journal import UPLOADING, Journal, JournalEntry
from bimfs.cache.uploader import Uploader
from bimfs.vfs.background import Background
from bimfs.vfs.errors import callers_mistake, describe
from bimfs.vfs.keys import UploadTarget
from bimfs.vfs.nodes import DirNode, FileNode, LocalData, Node
from bimfs.vfs.reads import Reads, copy_fd, copy_path
from bimfs.vfs.rights import Rights
from bimfs.vfs.tree import Tree

log = logging.getLogger(__name__)

RETRY_BASE = 1.0
RETRY_CAP = 10.0  # a save waits at most this long after space was freed


def content_type(name: str, fallback: str | None = None) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or fallback or "application/octet-stream"


def target_of(node: FileNode) -> UploadTarget:
    """Where the node's next save goes, as it stands now."""
    parent = node.parent
    assert parent is not None
    slug, pid = parent.slug or "", parent.pid or ""
    if node.doc is not None:
        return UploadTarget(
            op="version",
            slug=slug,
            pid=pid,
            aid=node.doc.id,
            folder_id=parent.folder_id,  # where it is re-created if deleted on the server
            file_name=node.doc.file_name,
            content_type=node.doc.type or content_type(node.doc.file_name),
            base_version=node.local.base_version if node.local is not None else node.doc.version,
            path=node.path(),
        )
    return UploadTarget(
        op="create",
        slug=slug,
        pid=pid,
        folder_id=parent.folder_id,
        file_name=node.name,
        content_type=content_type(node.name),
        path=node.path(),
        tag=node.pending_attrs.get("tag"),
        classification=node.pending_attrs.get("classification"),
    )


class Staging:
    """The local content of files and their commits to the journal."""

    def __init__(
        self,
        journal: Journal,
        tree: Tree,
        reads: Reads,
        uploader: Uploader,
        background: Background,
        on_append: Callable[[FileNode, LocalData], None],
    ) -> None:
        self.journal = journal
        self.tree = tree
        self.reads = reads
        self.uploader = uploader
        self.background = background
        self.on_append = on_append  # a sequential write grew the file (streamed uploads)
        # Files whose content could not be handed to the journal at close (reason by node).
        self.unsaved: dict[FileNode, str] = {}
        self._retrying = False

    # ---------------------------------------------------------------- the local copy

    def new_staging(self) -> tuple[Path, int]:
        """A new empty staging file in the journal, open read-write: the one place local
        content is created."""
        path = self.journal.staging_path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path, fd

    async def make_local(self, node: FileNode, truncate: bool) -> LocalData:
        """Give the node an uncommitted local copy to write into (copy on write)."""
        local = node.local
        if local is not None and not local.committed:
            if local.fd is None:  # content taken back from the journal (a rename to a temp name)
                local.fd = os.open(local.path, os.O_RDWR | os.O_CLOEXEC)
            if truncate:
                local.abandon_stream()
                os.ftruncate(local.fd, 0)
                local.append_only = True
                local.size = 0
                local.dirty = True
                local.mtime = time.time()
                node.generation += 1
            return local
        path, fd = self.new_staging()
        try:
            size = 0 if truncate else await self._copy_current(node, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        if local is not None:
            local.abandon_stream()
        node.local = LocalData(
            path=path,
            size=size,
            mtime=time.time(),
            fd=fd,
            dirty=truncate,
            append_only=truncate,
            # Made from the earlier unsent save, or from the version the file shows now.
            base_version=local.base_version
            if local is not None
            else (node.doc.version if node.doc is not None else None),
        )
        if truncate:
            node.generation += 1
        return node.local

    async def copy_of(self, node: FileNode) -> LocalData:
        """New local content holding the node's current bytes (to become another file's)."""
        path, fd = self.new_staging()
        try:
            size = await self._copy_current(node, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        base = node.local.base_version if node.local is not None else None
        if node.local is None and node.doc is not None:
            base = node.doc.version
        return LocalData(path, size, time.time(), fd=fd, dirty=True, base_version=base)

    async def _copy_current(self, node: FileNode, fd: int) -> int:
        """Copy the node's current bytes (local or server) into ``fd``; returns the size."""
        if node.local is not None:
            return await copy_committed(node.local.path, fd)
        if node.server is not None and node.server.size:
            Rights.require_download(node.path(), node.server)
        return await self.reads.copy_into(node, fd)

    async def _wait_commit(self, node: FileNode) -> None:
        while node.committing is not None:
            await node.committing.wait()

    async def write(self, node: FileNode, offset: int, data: bytes, direct: bool) -> int:
        await self._wait_commit(node)
        local = await self.make_local(node, truncate=False)
        assert local.fd is not None
        if local.append_only and offset != local.size:
            local.append_only = False
            local.abandon_stream()
        # On the trio thread: a worker-thread hop per write measured slower for `cp` (more CPU,
        # no overlap gained), see docs/performance.md.
        with callers_mistake():
            written = os.pwrite(local.fd, data, offset)
        end = offset + written
        local.size = max(local.size, end)
        local.dirty = True
        if direct:
            # The kernel's pages of this file no longer show every byte written. Pages another
            # open handle cached are dropped now (in the background); after the upload they
            # are not kept as the new version's pages either.
            local.direct_writes = True
            if node.open_count > 1:
                self.tree.invalidate_inode(node.ino)
        node.generation += 1
        if end - local.writeback_start >= WRITEBACK_STEP:
            # Written far enough: let the disk start on it now rather than all at close().
            start_writeback(local.fd, local.writeback_start, end - local.writeback_start)
            local.writeback_start = end
        if local.append_only:
            self.on_append(node, local)
        local.mtime = time.time()
        self.uploader.touch(str(node.key))
        return written

    async def truncate(self, node: FileNode, size: int) -> None:
        await self._wait_commit(node)
        local = await self.make_local(node, truncate=size == 0)
        assert local.fd is not None
        with callers_mistake():
            os.ftruncate(local.fd, size)
        if size != 0:
            local.append_only = False
            local.abandon_stream()
        local.size = size
        local.dirty = True
        local.mtime = time.time()
        node.generation += 1

    # ---------------------------------------------------------------- into the journal

    async def commit(self, node: FileNode) -> None:
        """Hand the node's new content to the journal (durable before this returns).

        The fsync and the journal record run in a worker thread so a large file does not stall
        every other request; writes to the node wait until the commit is done.
        """
        await self._wait_commit(node)
        local = node.local
        if local is None or not local.dirty or node.local_only or node.removed:
            return
        assert local.fd is not None
        done = node.committing = trio.Event()
        log.debug("committing %s (%d bytes)", node.path(), local.size)
        key, meta = str(node.key), target_of(node).to_meta()
        try:
            entry = await trio.to_thread.run_sync(self.journal.commit, key, meta, local.path)
        except BaseException as exc:
            # The bytes stay in their staging file and the node stays dirty: the error goes
            # to close() (or fsync), the next close or the background retry commits again,
            # and until then status counts the file as not saved (unmount refuses to finish).
            self.unsaved[node] = describe(exc)
            if not self._retrying and self.background.spawn(self._retry_unsaved):
                self._retrying = True
            raise
        else:
            if not node.removed:
                self._retarget_committed(node, entry.id, key, meta)
            self.unsaved.pop(node, None)
            local.path = entry.data_path
            local.committed = True
            local.journal_id = entry.id
            local.dirty = False
            os.close(local.fd)
            local.fd = None
            log.debug("committed %s", node.path())
        finally:
            node.committing = None
            done.set()
        self.uploader.notify()

    def _retarget_committed(
        self, node: FileNode, entry_id: str, key: str, meta: dict[str, Any]
    ) -> None:
        """An earlier upload of the file ended while its save was committed: the first one
        made it a document (this save is the document's next version, not another new
        document), or a version this save now builds on (no conflict with our own save).
        The new entry goes where the file saves now."""
        now_key, now_meta = str(node.key), retarget_meta(node)
        if now_key != key:
            self.journal.rekey(entry_id, now_key)
        if {**meta, **now_meta} != meta:
            self.journal.update_meta(entry_id, now_meta)

    async def commit_closed(self, node: FileNode) -> None:
        """Commit content that no open handle will commit (a rename of a closed file)."""
        local = node.local
        if local is None:
            return
        local.dirty = True
        if local.fd is None:
            local.fd = os.open(local.path, os.O_RDWR | os.O_CLOEXEC)
        await self.commit(node)

    async def save_again(self, node: FileNode) -> None:
        """Commit a copy of the node's committed content as a new save of its identity (its
        upload under the old identity is under way and cannot be redirected)."""
        local = node.local
        assert local is not None and local.committed
        staging, fd = self.new_staging()
        try:
            size = await copy_committed(local.path, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        node.local = LocalData(
            staging, size, local.mtime, fd=fd, dirty=True, base_version=local.base_version
        )
        await self.commit(node)

    async def retarget(self, node: FileNode) -> None:
        """Point the node's unsent save at its current identity and name (after a rename)."""
        if node.local is None or node.local.journal_id is None:
            return
        entry = self.journal.get(node.local.journal_id)
        if entry is None:
            return
        if entry.state == UPLOADING:
            if entry.key != str(node.key):
                # Its upload is under way for the identity it had: the content is saved again
                # for the new one (the upload's own result is dropped when it ends).
                await self.save_again(node)
            return
        if entry.key != str(node.key):
            for stale in self.journal.by_key(str(node.key)):
                if stale.state != UPLOADING and stale.id != entry.id:
                    self.journal.discard(stale.id)
            self.journal.rekey(entry.id, str(node.key))
        self.journal.update_meta(entry.id, retarget_meta(node))

    def take_back(self, node: FileNode, entry: JournalEntry) -> None:
        """An unsent save leaves the journal and becomes local content again (a new file
        renamed to a temp name)."""
        target, fd = self.new_staging()
        try:
            copy_path(entry.data_path, fd)
        finally:
            os.close(fd)
        if node.local is not None and node.local.journal_id == entry.id:
            node.local.path = target
            node.local.committed = False
            node.local.journal_id = None
        else:
            with contextlib.suppress(OSError):
                os.unlink(target)
        self.journal.discard(entry.id)

    # ---------------------------------------------------------------- dropping

    def remove(self, d: DirNode, name: str, node: Node) -> None:
        """``node`` leaves the tree as ``name`` of ``d``; a closed file's local content goes
        with it (an open one keeps it until its last close)."""
        self.tree.unlink(d, name, node)
        if isinstance(node, FileNode) and node.open_count == 0:
            self.discard(node)

    def discard(self, node: FileNode) -> None:
        """Let go of the node's local content (the journal keeps what it owns)."""
        if node.local is not None:
            node.local.close()
            node.local = None
        self.unsaved.pop(node, None)

    def drop_unsent(self, node: FileNode) -> None:
        """The user removed a file: its not-yet-sent content goes with it (an upload under way
        finishes, and its new document is deleted again)."""
        if node.local is not None:
            node.local.abandon_stream()
        for entry in self.journal.by_key(str(node.key)):
            if entry.state == UPLOADING:
                node.deleted = True
            else:
                self.journal.discard(entry.id)
        self.unsaved.pop(node, None)

    def replace_all(self, node: FileNode) -> None:
        """The node's content is being replaced as a whole: unsent older saves are dropped."""
        for entry in self.journal.by_key(str(node.key)):
            if entry.state != UPLOADING:
                self.journal.discard(entry.id)
        if node.local is not None and node.open_count == 0:
            self.discard(node)

    # ---------------------------------------------------------------- not saved

    async def _retry_unsaved(self) -> None:
        """Commit again, with backoff, what a close could not hand to the journal (a full or
        failing cache disk), until every such file is in the journal or gone."""
        attempt = 0
        try:
            while self.unsaved:
                await trio.sleep(backoff(attempt, base=RETRY_BASE, cap=RETRY_CAP))
                attempt += 1
                await self.commit_unsaved()
        finally:
            self._retrying = False

    async def commit_unsaved(self) -> None:
        for node in list(self.unsaved):
            local = node.local
            if node.removed or local is None or not local.dirty or node.local_only:
                self.unsaved.pop(node, None)
                continue
            if node.writers:
                continue  # its own close commits it
            try:
                await self.commit(node)
            except Exception as exc:
                log.warning("%s is still not saved locally: %s", node.path(), describe(exc))
            else:
                log.info("%s is saved locally now", node.path())

    def keep_unsaved(self) -> None:
        """At exit: content that never made it into the journal (its close failed, and every
        retry too) is not deleted with the staging area at the next start: each file is
        renamed to ``<cache-dir>/journal/<name>.unsaved`` and named in an error line."""
        for node, reason in list(self.unsaved.items()):
            local = node.local
            if local is None or local.committed or not local.path.exists():
                continue
            kept = local.path.with_suffix(".unsaved")
            try:
                os.rename(local.path, kept)
            except OSError as exc:
                log.error("%s was not saved (%s) and cannot be kept: %s", node.path(), reason, exc)
            else:
                log.error(
                    "%s was not saved (%s); its content is kept in %s", node.path(), reason, kept
                )


async def copy_committed(path: Path, fd: int) -> int:
    """Copy a save's content into ``fd``; returns the size. Opened here, before the copy leaves
    the trio thread: the save's upload may end while the copy runs and move the file into the
    content cache (or the journal delete it); the open descriptor reads it all the same."""
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return await trio.to_thread.run_sync(copy_fd, src, fd)
    finally:
        os.close(src)


def retarget_meta(node: FileNode) -> dict[str, Any]:
    """The meta that points a journal entry at where the node saves now, merged into the old
    one: a file moved to the project's root leaves no folder of its old place behind."""
    meta = target_of(node).to_meta()
    meta.setdefault("folder_id", None)
    return meta
