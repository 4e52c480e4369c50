"""The filesystem without pyfuse3: the POSIX entry points, each delegating to the part of the
layer that owns the decision (see ``bimfs/vfs/__init__.py`` for the map).

``Filesystem`` speaks in inode numbers, names (``str``), ``Attr`` values and ``FsError``; the FUSE
adapter (``bimfs.fuse.operations``) only translates. API errors pass through unchanged and are
turned into errno by ``bimfs.fuse.errno_map``, the one mapping.

Concurrency: everything runs on one trio thread. Code between two awaits is atomic; every await
may let another request change the tree, so state is re-read after awaits, never cached in locals
across them.

The order of a read: ``lookup`` (``Listings.entry``) -> ``open`` (rights, a cache handle:
``Reads.open_cached``) -> ``read`` (``Reads.read`` -> ``ContentStore.read``). The order of a save:
``open``/``create`` -> ``write`` (``Staging.write`` into a staging file) -> ``flush``
(``Staging.commit`` -> ``Journal.commit``) -> ``release`` (the write-back delay starts) ->
``Uploader`` -> ``Uploads.upload`` -> ``Remote.create_version``/``create_attachment``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import trio

from bimfs.api.errors import ConflictError
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import Journal
from bimfs.config import Config
from bimfs.vfs import status as status_doc
from bimfs.vfs.attrs import Attributes
from bimfs.vfs.background import Background
from bimfs.vfs.conflicts import Conflicts
from bimfs.vfs.errors import FsError, check_name
from bimfs.vfs.handles import DirHandles, Handle, Handles
from bimfs.vfs.known import KnownTree
from bimfs.vfs.listing import Listings
from bimfs.vfs.names import VERSIONS_DIR, LocalOnlyMatcher, safe_name
from bimfs.vfs.nodes import Attr, DirKind, DirNode, FileNode, Node
from bimfs.vfs.online import Connectivity, bounded_remote
from bimfs.vfs.pins import Pins
from bimfs.vfs.reads import Reads
from bimfs.vfs.remote import Remote
from bimfs.vfs.renames import BACKUP_GRACE_MIN, Renames
from bimfs.vfs.rights import Rights
from bimfs.vfs.staging import Staging
from bimfs.vfs.tree import Tree
from bimfs.vfs.uploads import Uploads
from bimfs.vfs.xattrs import Xattrs


class Filesystem:
    """The bimfs tree over a Bimplus account."""

    def __init__(
        self, config: Config, remote: Remote, content: ContentStore, journal: Journal
    ) -> None:
        self.config = config
        self.remote = remote
        self.content = content
        self.journal = journal
        self.background = Background()
        self.connectivity = Connectivity(
            remote, self.background, bound=config.offline_after, on_change=self._online_changed
        )
        # What programs ask for waits at most the bound (uploads are not bounded, see online.py)
        self.server = bounded_remote(remote, self.connectivity)
        self.tree = Tree(config)
        self.rights = Rights(config)
        self.known = KnownTree(config.cache_dir, config.api_url)
        self.listings = Listings(
            config, self.server, self.tree, journal, self.background, self.known
        )
        self.attributes = Attributes(config, self.rights, self.listings)
        self.reads = Reads(remote, content, self.connectivity)
        self.conflicts = Conflicts(config.cache_dir)
        self.uploads = Uploads(
            config, remote, journal, content, self.tree, self.listings, self.rights,
            self.background, self.conflicts, self.connectivity,
        )  # fmt: skip
        self.uploader = self.uploads.uploader
        self.staging = Staging(
            journal, self.tree, self.reads, self.uploader, self.background, self.uploads.grew
        )
        self.renames = Renames(
            self.server, self.tree, self.listings, self.staging, self.uploads, self.rights, journal,
            LocalOnlyMatcher(config.local_only), self.background,
            max(config.write_back_delay, BACKUP_GRACE_MIN),
        )  # fmt: skip
        self.pins = Pins(
            config, self.tree, self.listings, self.reads, content, self.connectivity,
            self.background,
        )  # fmt: skip
        self.xattrs = Xattrs(
            config, self.server, self.tree, self.listings, self.staging, self.rights, journal,
            self.uploader, self.background, self.conflicts, self.status, self.pins,
        )  # fmt: skip
        self.handles = Handles()
        self.dir_handles = DirHandles()

    @property
    def root(self) -> DirNode:
        return self.tree.root

    def _online_changed(self, online: bool) -> None:
        if online:
            self.uploader.resume()
        else:
            self.uploader.pause()

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the background services (content streams, uploader) until cancelled."""
        # Local content of earlier versions of bimfs lived here; all of it now is in the
        # journal's staging area (removed at load, like this).
        shutil.rmtree(self.config.cache_dir / "local", ignore_errors=True)
        self.uploads.resume()
        async with trio.open_nursery() as nursery:
            self.background.attach(nursery)
            await nursery.start(self.content.run)
            await nursery.start(self.uploader.run)
            await nursery.start(self.known.run)
            self.pins.start()
            task_status.started()

    def start_offline(self, reason: str) -> None:
        """The server could not be reached at mount time: serve the last known tree."""
        self.connectivity.went_offline(reason)

    async def drain(self, limit: float) -> bool:
        """Send every pending upload now (for at most ``limit`` seconds); True when none is
        left pending and nothing saved is missing from the journal."""
        await self.staging.commit_unsaved()
        sent = await self.uploader.drain(limit)
        return sent and not self.staging.unsaved

    def keep_unsaved(self) -> None:
        """At exit: keep what never made it into the journal (see ``Staging.keep_unsaved``)."""
        self.staging.keep_unsaved()

    def status(self) -> dict[str, Any]:
        """The summary for ``bimfs status`` and ``bimfs unmount``, bounded whatever the journal
        holds; the detail is paged (``status_doc.page``, see ``bimfs/vfs/status.py``)."""
        doc = status_doc.summary(
            about={
                "mountpoint": str(self.config.mountpoint),
                "api_url": self.config.api_url,
                "cache_dir": str(self.config.cache_dir),
                "pid": os.getpid(),
            },
            journal=self.journal,
            uploader=self.uploader,
            streams=[t for t in (e.status() for e in self.uploads.streams) if t is not None],
            cache=self.content.usage(),
        )
        doc["connection"] = self.connectivity.describe()
        doc["pins"] = self.pins.status()
        doc["online"] = self.connectivity.online
        conflicts = self.conflicts.listing()
        if conflicts:
            doc["conflicts"] = conflicts[: status_doc.SUMMARY_ITEMS]
            doc["conflict_count"] = len(conflicts)
        unsaved = self.staging.unsaved
        if unsaved:
            # Saved files whose content could not yet be put in the journal (retried): not
            # sent, not journalled, so unmount must not finish.
            doc["pending"] += len(unsaved)
            doc["unsaved"] = [
                {"path": node.path(), "reason": reason}
                for node, reason in list(unsaved.items())[: status_doc.SUMMARY_ITEMS]
            ]
        return doc

    # ---------------------------------------------------------------- names and attributes

    def attr(self, node: Node) -> Attr:
        return self.attributes.of(node)

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """Find ``name`` in a directory; counts a kernel lookup on success."""
        d = self.tree.dir(parent_ino)
        if name == ".":
            node: Node | None = d
        elif name == "..":
            node = d.parent or d
        else:
            check_name(name)
            node = await self.listings.entry(d, name)
        if node is None:
            raise FsError(errno.ENOENT)
        self.tree.count_lookup(node)
        return self.attr(node)

    def forget(self, ino: int, nlookup: int) -> None:
        self.tree.forget(ino, nlookup)

    async def getattr(self, ino: int) -> Attr:
        node = self.tree.node(ino)
        if isinstance(node, FileNode) and node.parent is not None and node.local is None:
            # A changed document shows its new size once its listing is refreshed (after the
            # TTL); that happens in the background: stat, and the kernel's checks before each
            # read of an open file, never wait for the server.
            self.listings.refresh_soon(node.parent)
        return self.attr(node)

    async def setattr(
        self,
        ino: int,
        size: int | None,
        fh: int | None,
        mtime: float | None = None,
        atime: float | None = None,
    ) -> Attr:
        node = self.tree.node(ino)
        if size is not None:
            if not isinstance(node, FileNode):
                raise FsError(errno.EISDIR)
            self.rights.require_file_writable(node)
            await self.staging.truncate(node, size)
            if fh is None and node.open_count == 0:
                await self.staging.commit(node)
        # chmod, chown and utimes are accepted and do nothing on the server.
        if mtime is not None or atime is not None:
            self.attributes.set_times(node, atime, mtime)
        return self.attr(node)

    async def statfs(self) -> dict[str, int]:
        return await self.attributes.statfs()

    # ---------------------------------------------------------------- directories

    async def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        """A snapshot of a directory's entries with their attributes."""
        d = self.tree.dir(ino)
        entries = await self.listings.children(d)
        if d.kind is DirKind.VERSIONS:
            self.listings.prefetch_versions(d)
        # versions/ is reachable by name but not listed (as ZFS's .zfs with snapdir=hidden),
        # so tools that walk a tree (rsync --delete, rm -rf, tar, find, du) leave history alone.
        shown = self.config.show_versions
        return [
            (name, self.attr(node))
            for name, node in sorted(entries.items())
            if shown or not (isinstance(node, DirNode) and node.kind is DirKind.VERSIONS)
        ]

    async def opendir(self, ino: int) -> int:
        return self.dir_handles.open(await self.listdir(ino))

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Attr]]:
        """The snapshot's entries from offset ``start``: call ``entry_sent`` for each one the
        kernel accepted (only those count as lookups)."""
        return self.dir_handles.entries(fh, start)

    def entry_sent(self, ino: int) -> None:
        node = self.tree.inodes.maybe(ino)
        if node is not None:
            self.tree.count_lookup(node)

    def releasedir(self, fh: int) -> None:
        self.dir_handles.close(fh)

    async def mkdir(self, parent_ino: int, name: str) -> Attr:
        check_name(name)
        d = self.tree.dir(parent_ino)
        self.rights.require_writable_dir(d)
        if await self.listings.entry(d, name) is not None:
            raise FsError(errno.EEXIST)
        if name == VERSIONS_DIR or safe_name(name) != name:
            raise FsError(errno.EINVAL, f"{name!r} cannot be a document folder name")
        slug, pid = d.slug or "", d.pid or ""
        folder = await self.server.create_folder(slug, pid, name, d.folder_id)
        self.listings.put_folder(
            slug, pid, dataclasses.replace(folder, name=name, parent=d.folder_id, children=())
        )
        node = self.tree.dir_node(
            ("folder", slug, pid, folder.id), name, d, DirKind.FOLDER,
            slug=d.slug, pid=d.pid, folder_id=folder.id, entity_id=folder.id,
            writable=d.writable, mtime=time.time(),
        )  # fmt: skip
        # Known to be empty: its listing is the project's, already at hand.
        listing = self.listings.meta.peek(("listing", slug, pid))
        if listing is not None:
            self.listings.build_docs_dir(node, listing)
        d.children[name] = node
        self.tree.count_lookup(node)
        return self.attr(node)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        d = self.tree.dir(parent_ino)
        node = await self.listings.entry(d, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise FsError(errno.ENOTDIR)
        if node.kind is not DirKind.FOLDER:
            raise FsError(errno.EACCES if node.kind is not DirKind.VERSIONS else errno.EBUSY)
        self.rights.require_change()
        if any(n != VERSIONS_DIR for n in await self.listings.children(node)):
            raise FsError(errno.ENOTEMPTY)
        slug, pid = d.slug or "", d.pid or ""
        await self.uploads.settle_into(slug, pid, node.folder_id)
        try:
            await self.server.delete_folder(slug, node.folder_id or "")
        except ConflictError as exc:
            raise FsError(errno.ENOTEMPTY) from exc
        self.listings.drop_folder(slug, pid, node.folder_id or "")
        self.staging.remove(d, name, node)

    # ---------------------------------------------------------------- files

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Open a file; returns (fh, keep_cache). Nothing is downloaded here."""
        node = self.tree.file(ino)
        if node.removed and node.open_count == 0 and node.parent is None:
            raise FsError(errno.ENOENT)
        accmode = flags & os.O_ACCMODE
        write = accmode in (os.O_WRONLY, os.O_RDWR)
        truncate = bool(flags & os.O_TRUNC)
        if write:
            self.rights.require_file_writable(node)
        elif truncate:
            raise FsError(errno.EACCES)
        if not truncate:
            self.rights.require_readable(node)  # reading, or changing what is there
        handle = self.handles.add(node, write, direct=accmode == os.O_WRONLY)
        keep_cache = False
        try:
            if write:
                if truncate:
                    await self.staging.make_local(node, truncate=True)
                # Otherwise the current content is copied only when the handle first changes
                # it (many programs open read-write, or write-only to test access, and change
                # nothing).
                node.writers += 1
            elif node.local is None and not (node.local_only and node.doc is None):
                handle.cached = self.reads.open_cached(node)
                if handle.cached is not None:
                    key = self.reads.key(node)
                    keep_cache = node.kernel_key == key
                    node.kernel_key = key
        except BaseException:
            self.handles.pop(handle.fh)
            raise
        if node.local is not None:
            keep_cache = False
            node.kernel_key = None
        node.open_count += 1
        return handle.fh, keep_cache

    def direct_io(self, fh: int) -> bool:
        """Whether the kernel should send this handle's writes straight to ``write`` instead
        of through its page cache: for write-only opens (``cp``, ``>``, most saves). That is
        one copy less per byte and no page-cache pages to allocate for bytes that are going to
        disk and the network anyway. Such a descriptor cannot be read or mmapped, so nothing
        it does needs those pages; other open handles of the file are kept coherent by
        ``Staging.write``."""
        return self.handles.get(fh).direct

    async def create(self, parent_ino: int, name: str, flags: int) -> tuple[int, Attr]:
        d = self.tree.dir(parent_ino)
        existing = await self.listings.entry(d, name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            if isinstance(existing, DirNode):
                raise FsError(errno.EISDIR)
            fh, _ = await self.open(existing.ino, flags & ~os.O_CREAT)
            self.tree.count_lookup(existing)
            return fh, self.attr(existing)
        node = self.renames.new_file(d, name)
        try:
            # The new, empty file exists whatever the access mode asked for (`flock f cmd`
            # creates its lock file read-only): it becomes a document like any new file.
            await self.staging.make_local(node, truncate=True)
            fh, _ = await self.open(node.ino, flags & ~(os.O_CREAT | os.O_TRUNC))
            if not self.handles.get(fh).writable:
                await self.staging.commit(node)  # no close of a writer will do it
        except BaseException:
            self.staging.remove(d, name, node)
            raise
        self.tree.count_lookup(node)
        return fh, self.attr(node)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return await self.reads.read(self.handles.get(fh), offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handles.get(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        return await self.staging.write(handle.node, offset, data, handle.direct)

    async def flush(self, fh: int) -> None:
        handle = self.handles.get(fh)
        if handle.writable:
            await self.staging.commit(handle.node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is None:
            return
        node = handle.node
        node.open_count -= 1
        self._close_handle(handle)
        if handle.writable:
            node.writers -= 1
        try:
            if handle.writable and node.local is not None:
                if not node.writers:
                    # The write-back delay counts from the last close that left no writer.
                    self.uploader.touch(str(node.key))
                    self.uploader.notify()
                await self.staging.commit(node)
        finally:
            if node.removed and node.open_count == 0:
                self.staging.discard(node)
                self.tree.release_removed(node)

    def _close_handle(self, handle: Handle) -> None:
        if handle.cached is not None:
            self.content.close(handle.cached)
        if handle.local_fd is not None:
            os.close(handle.local_fd)

    async def unlink(self, parent_ino: int, name: str) -> None:
        d = self.tree.dir(parent_ino)
        node = await self.listings.entry(d, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if isinstance(node, DirNode):
            raise FsError(errno.EISDIR)
        assert isinstance(node, FileNode)
        if node.is_version_file:
            await self._delete_version(d, node)
        elif node.local_only:
            await self.renames.remove_backup(node)
        elif node.doc is None:
            self.staging.drop_unsent(node)
        else:
            self.rights.require_delete(d, node.doc, node.path())
            await self.server.delete_attachment(d.slug or "", node.doc.id)
            self.staging.drop_unsent(node)
            self.listings.drop_doc(d.slug or "", d.pid or "", node.doc.id)
            self.conflicts.drop(node.doc.id)
        self.staging.remove(d, name, node)

    async def _delete_version(self, d: DirNode, node: FileNode) -> None:
        version = node.version
        assert version is not None and d.parent is not None
        self.rights.require_delete(d, version, node.path())
        slug = d.slug or ""
        versions = await self.listings.versions(slug, version.id)
        if len(versions) <= 1:
            raise FsError(errno.EPERM, "the only version of a document cannot be deleted")
        try:
            await self.server.delete_version(slug, version.id, version.version)
        except ConflictError as exc:
            raise FsError(errno.EPERM, str(exc)) from exc
        left = [v for v in versions if v.version != version.version]
        self.listings.set_versions(slug, version.id, left)
        newest = max(left, key=lambda v: v.version)
        doc_node = self.tree.doc_nodes.get(version.id)
        if doc_node is not None and doc_node.doc is not None:
            if doc_node.doc.version != newest.version:
                # The newest version went: the one before it is the document's content now.
                self.tree.update_doc(doc_node, newest)
            self.listings.put_doc(slug, d.pid or "", doc_node.doc)

    async def rename(self, old_ino: int, old: str, new_ino: int, new: str, flags: int) -> None:
        await self.renames.rename(self.tree.dir(old_ino), old, self.tree.dir(new_ino), new, flags)

    # ---------------------------------------------------------------- extended attributes

    async def listxattr(self, ino: int) -> list[str]:
        return await self.xattrs.names(self.tree.node(ino))

    async def getxattr(self, ino: int, name: str) -> bytes:
        return await self.xattrs.get(self.tree.node(ino), name)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        await self.xattrs.set(self.tree.node(ino), name, value)

    async def removexattr(self, ino: int, name: str) -> None:
        await self.xattrs.remove(self.tree.node(ino), name)
