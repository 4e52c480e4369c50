"""The filesystem, without pyfuse3: every POSIX decision bimfs makes lives here.

``Filesystem`` speaks in inode numbers, names (``str``), ``Attr`` values and ``FsError``; the FUSE
adapter (``bimfs.fuse.operations``) only translates. API errors pass through unchanged and are
turned into errno by ``bimfs.fuse.errno_map``, the one mapping.

Concurrency: everything runs on one trio thread. Code between two awaits is atomic; every await
may let another request change the tree, so state is re-read after awaits, never cached in locals
across them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import math
import mimetypes
import os
import shutil
import stat
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bimfs.api.errors import ApiError, ConflictError, NotFoundError
from bimfs.api.models import Attachment, FolderNode, Project, Team
from bimfs.cache.content import CachedFile, ContentKey, ContentStore
from bimfs.cache.files import WRITEBACK_STEP, start_writeback
from bimfs.cache.journal import Journal, JournalEntry
from bimfs.cache.metadata import TtlCache
from bimfs.cache.uploader import Uploader
from bimfs.config import Config
from bimfs.vfs import status as status_doc
from bimfs.vfs.eager import EAGER_MIN_SIZE, EagerUpload
from bimfs.vfs.names import (
    NAME_MAX,
    VERSIONS_DIR,
    LocalOnlyMatcher,
    NameRequest,
    assign_names,
    safe_name,
    version_file_name,
)
from bimfs.vfs.nodes import (
    DIR_MODE_RO,
    DIR_MODE_RW,
    Attr,
    DirKind,
    DirNode,
    FileNode,
    FsError,
    InodeTable,
    LocalData,
    Node,
)
from bimfs.vfs.remote import Remote

log = logging.getLogger(__name__)

XATTR_PREFIX = "user.bimplus."
STATE_XATTR = "user.bimfs.state"
STATUS_XATTR = "user.bimfs.status"  # on the mount root: JSON for `bimfs status` / `unmount`
SYNC_XATTR = "user.bimfs.sync"  # on the mount root: writing it sends pending uploads now
_OUR_XATTRS = (XATTR_PREFIX, "user.bimfs.")
_WRITABLE_XATTRS = ("tag", "classification", "release")  # under user.bimplus.
UNKNOWN_QUOTA = 1 << 50  # 1 PiB: "a large plausible size"
BLOCK = 4096


@dataclass
class ProjectListing:
    """One project's documents and folder tree, fetched together (two calls, in parallel)."""

    docs: dict[str, Attachment]
    folders: dict[str, FolderNode]  # every folder node by id
    doc_folder: dict[str, str]  # attachment id -> folder id (absent: project root)
    fetched_at: float


@dataclass
class Handle:
    """One open file description."""

    fh: int
    node: FileNode
    writable: bool
    cached: CachedFile | None = None
    local_fd: int | None = None  # fd for reading committed local data
    local_path: Path | None = None
    # Writes bypass the kernel's page cache (see ``direct_io``).
    direct: bool = False


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


class Filesystem:
    """The bimfs tree over a Bimplus account."""

    def __init__(
        self,
        config: Config,
        client: Remote,
        content: ContentStore,
        journal: Journal,
    ) -> None:
        self.config = config
        self.client = client
        self.content = content
        self.journal = journal
        self.local_only = LocalOnlyMatcher(config.local_only)
        self.inodes = InodeTable()
        self.meta: TtlCache[tuple[str, ...], Any] = TtlCache(
            maxsize=100_000, ttl=config.dir_ttl, negative_ttl=config.negative_ttl
        )
        self.uploader = Uploader(
            journal,
            self._upload,
            delay=config.write_back_delay,
            describe=_describe,
            busy=self._open_for_writing,
        )
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.dir_nodes: dict[tuple[str, ...], DirNode] = {}
        self.doc_nodes: dict[str, FileNode] = {}
        self.key_nodes: dict[str, FileNode] = {}
        # Streaming uploads running now (for ``bimfs status``).
        self._eager: set[EagerUpload] = set()
        self.teams: dict[str, Team] = {}
        self.projects: dict[tuple[str, str], Project] = {}
        self.invalidate_inode: Callable[[int], None] = lambda ino: None
        self.invalidate_attributes: Callable[[int], None] = lambda ino: None
        self.invalidate_entry: Callable[[int, str], None] = lambda parent, name: None
        self.orphans: dict[tuple[str, str, str], list[FileNode]] = {}
        self._nursery: trio.Nursery | None = None
        self._prefetch_limit = trio.CapacityLimiter(8)
        self._prefetching: set[tuple[str, str, str]] = set()
        # Our own changes made while a project's listing is being fetched (see _change_listing).
        self._loading: dict[tuple[str, str], int] = {}
        self._changes: dict[tuple[str, str], list[tuple[int, Callable[[ProjectListing], None]]]]
        self._changes = {}
        self._change_seq = 0
        # Files whose content could not be handed to the journal at close (reason by node).
        self._unsaved: dict[FileNode, str] = {}
        self._retrying_commits = False
        self.started = time.time()
        now = time.time()
        if config.team:
            root = DirNode(InodeTable.ROOT, "", None, DirKind.TEAM, slug=config.team, mtime=now)
        else:
            root = DirNode(InodeTable.ROOT, "", None, DirKind.ROOT, mtime=now)
        root.lookups = 1
        self.root = root
        self.inodes.add(root)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the background services (content streams, uploader) until cancelled."""
        # Local content of earlier versions of bimfs lived here; all of it now is in the
        # journal's staging area (removed at load, like this).
        shutil.rmtree(self.config.cache_dir / "local", ignore_errors=True)
        self._resume_journal()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.content.run)
            await nursery.start(self.uploader.run)
            task_status.started()

    def _resume_journal(self) -> None:
        """Show files whose upload is still pending from an earlier run as local overlay
        entries of their directory, so they can be read and seen before they are sent."""
        for entry in self.journal.entries():
            meta = entry.meta
            if meta.get("op") == "create":
                node = self._new_file_node(None, meta.get("file_name", "unnamed"), entry.key)
                node.local = LocalData(
                    path=entry.data_path,
                    size=entry.size,
                    mtime=entry.created,
                    committed=True,
                    journal_id=entry.id,
                )
                node.created = entry.created
                where = (meta.get("slug") or "", meta.get("pid") or "", meta.get("folder_id") or "")
                self.orphans.setdefault(where, []).append(node)
        self.uploader.notify()

    def _attach_pending(self, node: FileNode) -> None:
        """A document node seen for the first time shows unsent content from an earlier run."""
        entries = [e for e in self.journal.by_key(node.key) if e.data_path.exists()]
        if entries and node.local is None:
            entry = max(entries, key=lambda e: e.created)
            node.local = LocalData(
                path=entry.data_path,
                size=entry.size,
                mtime=entry.created,
                committed=True,
                journal_id=entry.id,
            )

    async def drain(self, limit: float) -> bool:
        """Send every pending upload now (for at most ``limit`` seconds); True when none is
        left pending and nothing saved is missing from the journal."""
        await self._commit_unsaved()
        sent = await self.uploader.drain(limit)
        return sent and not self._unsaved

    def keep_unsaved(self) -> None:
        """At exit: content that never made it into the journal (its close failed, and every
        retry too) is not deleted with the staging area at the next start: each file is
        renamed to ``<cache-dir>/journal/<name>.unsaved`` and named in an error line."""
        for node, reason in list(self._unsaved.items()):
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

    # ------------------------------------------------------------------ helpers

    def _node(self, ino: int) -> Node:
        return self.inodes.get(ino)

    def _dir(self, ino: int) -> DirNode:
        node = self.inodes.get(ino)
        if not isinstance(node, DirNode):
            raise FsError(errno.ENOTDIR)
        return node

    def _file(self, ino: int) -> FileNode:
        node = self.inodes.get(ino)
        if not isinstance(node, FileNode):
            raise FsError(errno.EISDIR)
        return node

    def _get_dir_node(
        self, key: tuple[str, ...], name: str, parent: DirNode, kind: DirKind, **fields: Any
    ) -> DirNode:
        """The directory node for ``key``, created on first sight (stable inode)."""
        node = self.dir_nodes.get(key)
        if node is None or node.removed:
            node = DirNode(self.inodes.new_ino(), name, parent, kind, **fields)
            self.dir_nodes[key] = node
            self.inodes.add(node)
        return node

    def _new_file_node(self, parent: DirNode | None, name: str, key: str) -> FileNode:
        node = FileNode(self.inodes.new_ino(), name, parent, key=key)
        node.created = time.time()
        self.inodes.add(node)
        if key:
            self.key_nodes[key] = node
        return node

    def _writable_dir(self, d: DirNode) -> bool:
        return d.holds_documents and d.writable and not self.config.read_only

    def _content_type(self, name: str, fallback: str | None = None) -> str:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        return guessed or fallback or "application/octet-stream"

    # ------------------------------------------------------------------ listings

    async def _teams(self) -> list[Team]:
        teams: list[Team] = await self.meta.get(("teams",), self.client.get_teams)
        for team in teams:
            self.teams[team.slug] = team
        return teams

    async def _projects(self, slug: str) -> list[Project]:
        projects: list[Project] = await self.meta.get(
            ("projects", slug),
            lambda: self.client.get_projects(slug),
            negative=lambda e: isinstance(e, NotFoundError),
        )
        for project in projects:
            self.projects[(slug, project.id)] = project
        return projects

    async def _listing(self, slug: str, pid: str) -> ProjectListing:
        async def load() -> ProjectListing:
            result: dict[str, Any] = {}

            async def docs() -> None:
                result["docs"] = await self.client.list_attachments(slug, pid)

            async def folders() -> None:
                result["folders"] = await self.client.get_folders(slug, pid)

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(docs)
                    nursery.start_soon(folders)
            except BaseExceptionGroup as group:
                # Report the API's own error (401, 404, ...), not the group around it.
                raise first_error(group) from None
            folder_map: dict[str, FolderNode] = {}
            doc_folder: dict[str, str] = {}

            def walk(node: FolderNode) -> None:
                folder_map[node.id] = node
                for child in node.children:
                    if child.is_folder:
                        walk(child)
                    else:
                        doc_folder[child.id] = node.id

            for top in result["folders"]:
                if top.is_folder:
                    walk(top)
            return ProjectListing(
                docs={a.id: a for a in result["docs"]},
                folders=folder_map,
                doc_folder=doc_folder,
                fetched_at=time.time(),
            )

        async def load_and_replay() -> ProjectListing:
            key = (slug, pid)
            since = self._change_seq
            self._loading[key] = self._loading.get(key, 0) + 1
            try:
                fetched = await load()
            finally:
                self._loading[key] -= 1
                changes = self._changes.get(key, [])
                if not self._loading[key]:
                    del self._loading[key]
                    self._changes.pop(key, None)
            for seq, change in changes:
                if seq > since:
                    change(fetched)
            return fetched

        listing: ProjectListing = await self.meta.get(("listing", slug, pid), load_and_replay)
        return listing

    async def _versions(self, slug: str, aid: str) -> list[Attachment]:
        node = self.doc_nodes.get(aid)
        doc = node.doc if node is not None else None

        async def load() -> list[Attachment]:
            if doc is not None and doc.version == 1 and doc.id == aid:
                # Version numbers are never reused and the only version cannot be deleted,
                # so a document whose latest version is 1 has exactly that one: no call needed.
                return [doc]
            return await self.client.list_versions(slug, aid)

        versions: list[Attachment] = await self.meta.get(("versions", slug, aid), load)
        return versions

    def _single_version(self, aid: str) -> bool:
        node = self.doc_nodes.get(aid)
        return node is not None and node.doc is not None and node.doc.version == 1

    # The mount's own changes are applied to the project's cached listing from the server's
    # answers (the directories' entries were already changed by the operation itself), so a
    # change costs no listing call: the listing is fetched again only when its TTL runs out.

    def _known_listing(self, slug: str, pid: str) -> ProjectListing | None:
        known: ProjectListing | None = self.meta.peek(("listing", slug, pid))
        return known

    def _change_listing(
        self, slug: str, pid: str, change: Callable[[ProjectListing], None]
    ) -> None:
        """Apply one of our own changes to the project's known listing, and to the listings
        being fetched right now (their answer may predate the change: a file deleted here must
        not come back from it)."""
        listing = self._known_listing(slug, pid)
        if listing is not None:
            change(listing)
        if self._loading.get((slug, pid)):
            self._change_seq += 1
            self._changes.setdefault((slug, pid), []).append((self._change_seq, change))

    def _listing_put_doc(
        self, slug: str, pid: str, att: Attachment, folder_id: str | None = None
    ) -> None:
        """The server's answer for a document (new, new version, renamed, new metadata);
        ``folder_id`` places a new document in its folder."""

        def put(listing: ProjectListing) -> None:
            listing.docs[att.id] = att
            if folder_id:
                listing.doc_folder[att.id] = folder_id

        self._change_listing(slug, pid, put)

    def _listing_drop_doc(self, slug: str, pid: str, aid: str) -> None:
        def drop(listing: ProjectListing) -> None:
            listing.docs.pop(aid, None)
            listing.doc_folder.pop(aid, None)

        self._change_listing(slug, pid, drop)
        self.meta.discard(("versions", slug, aid))

    def _listing_put_folder(self, slug: str, pid: str, folder: FolderNode) -> None:
        def put(listing: ProjectListing) -> None:
            listing.folders[folder.id] = folder

        self._change_listing(slug, pid, put)

    def _listing_drop_folder(self, slug: str, pid: str, folder_id: str) -> None:
        def drop(listing: ProjectListing) -> None:
            listing.folders.pop(folder_id, None)

        self._change_listing(slug, pid, drop)

    def _versions_put(self, slug: str, att: Attachment) -> None:
        """A version just made joins the document's cached version list."""
        known: list[Attachment] | None = self.meta.peek(("versions", slug, att.id))
        if att.version == 1:
            self.meta.put(("versions", slug, att.id), [att])
        elif known is not None and self.meta.is_fresh(("versions", slug, att.id)):
            kept = [v for v in known if v.version != att.version]
            self.meta.put(("versions", slug, att.id), [*kept, att])

    async def children(self, d: DirNode) -> dict[str, Node]:
        """The directory's current entries (refreshing its listing when stale)."""
        if d.kind is DirKind.ROOT:
            teams = await self._teams()
            if d.listing_token is not teams:
                self._build_root(d, teams)
        elif d.kind is DirKind.TEAM:
            assert d.slug is not None
            projects = await self._projects(d.slug)
            if d.listing_token is not projects:
                self._build_team(d, projects)
        elif d.kind in (DirKind.PROJECT, DirKind.FOLDER):
            assert d.slug is not None and d.pid is not None
            listing = await self._listing(d.slug, d.pid)
            if d.listing_token is not listing:
                self._build_docs_dir(d, listing)
        elif d.kind is DirKind.VERSIONS:
            assert d.parent is not None
            await self.children(d.parent)
            self._build_versions_dir(d)
        elif d.kind is DirKind.VDIR:
            assert d.slug is not None and d.doc_id is not None
            versions = await self._versions(d.slug, d.doc_id)
            if d.listing_token is not versions:
                self._build_vdir(d, versions)
        return d.children

    def _build_root(self, d: DirNode, teams: list[Team]) -> None:
        names = assign_names(NameRequest(t.slug, t.slug, 0.0, t.id) for t in teams)
        children: dict[str, Node] = {}
        for team in teams:
            name = names[team.slug]
            node = self._get_dir_node(
                ("team", team.slug), name, d, DirKind.TEAM,
                slug=team.slug, entity_id=team.id, mtime=self.started,
            )  # fmt: skip
            node.name, node.parent, node.entity_id = name, d, team.id
            children[name] = node
        self._replace_children(d, children)
        d.listing_token = teams

    def _build_team(self, d: DirNode, projects: list[Project]) -> None:
        slug = d.slug or ""
        names = assign_names(NameRequest(p.id, p.name, p.created or 0.0, p.id) for p in projects)
        children: dict[str, Node] = {}
        for project in projects:
            name = names[project.id]
            node = self._get_dir_node(
                ("project", slug, project.id), name, d, DirKind.PROJECT,
                slug=slug, pid=project.id, entity_id=project.id,
            )  # fmt: skip
            node.name, node.parent = name, d
            node.writable = project.has_write_access
            node.mtime = project.changed or project.created or self.started
            children[name] = node
        self._replace_children(d, children)
        d.listing_token = projects

    def _build_docs_dir(self, d: DirNode, listing: ProjectListing) -> None:
        slug, pid = d.slug or "", d.pid or ""
        here = d.folder_id
        folders = [
            f
            for f in listing.folders.values()
            if (f.parent if f.parent in listing.folders else None) == here
        ]
        docs = [
            a
            for a in listing.docs.values()
            if listing.doc_folder.get(a.id) == here and a.id not in d.hidden
        ]
        for orphan in self.orphans.pop((slug, pid, here or ""), []):
            orphan.parent = d
            d.overlay.setdefault(orphan.name, orphan)
        reserved = [VERSIONS_DIR, *d.overlay.keys()]
        folder_names = assign_names(
            (NameRequest("f:" + f.id, f.name, 0.0, f.id) for f in folders), reserved
        )
        doc_names = assign_names(
            (NameRequest(a.id, a.file_name, a.created_at or 0.0, a.id) for a in docs),
            [*reserved, *folder_names.values()],
        )
        children: dict[str, Node] = {}
        for folder in folders:
            name = folder_names["f:" + folder.id]
            fnode = self._get_dir_node(
                ("folder", slug, pid, folder.id), name, d, DirKind.FOLDER,
                slug=slug, pid=pid, folder_id=folder.id, entity_id=folder.id,
            )  # fmt: skip
            fnode.name, fnode.parent, fnode.writable = name, d, d.writable
            # Folders have no time of their own on the server: the project's at first sight,
            # or the time it was made here; stable afterwards.
            fnode.mtime = fnode.mtime or d.mtime
            children[name] = fnode
        present: set[str] = set()
        for doc in docs:
            name = doc_names[doc.id]
            present.add(doc.id)
            node = self.doc_nodes.get(doc.id)
            if node is None or node.removed:
                node = self._new_file_node(d, name, f"doc:{doc.id}")
                node.doc = doc
                self.doc_nodes[doc.id] = node
                self._attach_pending(node)
            else:
                self._update_doc(node, doc)
            node.name, node.parent = name, d
            children[name] = node
        # Documents that vanished from the server: keep them only while local data is pending.
        for old in list(d.children.values()):
            if (
                isinstance(old, FileNode)
                and old.doc is not None
                and old.doc.id not in present
                and old.parent is d
                and not old.local_only
                and old.name not in d.overlay
            ):
                if old.local is not None and not self._upload_done(old):
                    children.setdefault(old.name, old)
                elif old.doc.id not in listing.docs:
                    self._mark_removed(old)
        versions = self._get_dir_node(
            ("versions", slug, pid, here or ""), VERSIONS_DIR, d, DirKind.VERSIONS,
            slug=slug, pid=pid, folder_id=here,
        )  # fmt: skip
        versions.mtime = d.mtime
        children[VERSIONS_DIR] = versions
        for name, node in d.overlay.items():
            children[name] = node
        self._replace_children(d, children)
        d.listing_token = listing

    def _uploading(self, key: str) -> bool:
        return any(e.state == "uploading" for e in self.journal.by_key(key))

    async def _settle_uploads_into(self, slug: str, pid: str, folder_id: str | None) -> None:
        """Wait until no new document is being uploaded into this folder (bounded): a folder
        whose last file was deleted while its first upload ran is empty on the server only
        once that upload ended (and the document it made was deleted again)."""

        def busy() -> bool:
            return any(
                e.state == "uploading"
                and e.meta.get("op") == "create"
                and (e.meta.get("slug"), e.meta.get("pid")) == (slug, pid)
                and (e.meta.get("folder_id") or None) == folder_id
                for e in self.journal.entries()
            )

        with trio.move_on_after(self.config.request_timeout):
            while busy():
                await self.uploader.wait_changed()

    def _open_for_writing(self, key: str) -> bool:
        """Whether the file of an upload target is open for writing now: its upload waits
        for the last close (a program that closes a new file empty and reopens it to write
        for minutes must not see the empty file on the server)."""
        node = self.key_nodes.get(key)
        return node is not None and node.writers > 0

    def _upload_done(self, node: FileNode) -> bool:
        return not self.journal.by_key(node.key) and (node.local is None or not node.local.dirty)

    def _update_doc(self, node: FileNode, doc: Attachment) -> None:
        old = node.doc
        node.doc = doc
        if old is not None and (old.hash, old.version, old.size) != (
            doc.hash,
            doc.version,
            doc.size,
        ):
            # Changed on the server: drop the kernel's attributes and pages for it.
            node.kernel_key = None
            node.generation += 1
            if node.local is None:
                self.invalidate_inode(node.ino)

    def _mark_removed(self, node: Node) -> None:
        node.removed = True
        if (
            isinstance(node, FileNode)
            and node.doc is not None
            and self.doc_nodes.get(node.doc.id) is node
        ):
            del self.doc_nodes[node.doc.id]

    def _replace_children(self, d: DirNode, children: dict[str, Node]) -> None:
        kept = {id(node) for node in children.values()}
        for name, old in d.children.items():
            if children.get(name) is not old and old.parent is d and id(old) not in kept:
                if not (isinstance(old, FileNode) and old.doc is not None):
                    old.removed = old.removed or not isinstance(old, FileNode)
                self.invalidate_entry(d.ino, name)
        d.children = children

    def _build_versions_dir(self, d: DirNode) -> None:
        parent = d.parent
        assert parent is not None
        children: dict[str, Node] = {}
        for name, node in parent.children.items():
            vdir = self._vdir_for(d, name, node)
            if vdir is not None:
                children[name] = vdir
        self._replace_children(d, children)

    def _vdir_for(self, d: DirNode, name: str, node: Node | None) -> DirNode | None:
        """``versions/<name>/`` of the document ``node`` shown as ``name`` beside ``d``."""
        if not isinstance(node, FileNode) or node.doc is None or node.local_only:
            return None
        doc = node.doc
        vdir = self._get_dir_node(
            ("vdir", d.slug or "", doc.id), name, d, DirKind.VDIR,
            slug=d.slug, pid=d.pid, doc_id=doc.id, entity_id=doc.id,
        )  # fmt: skip
        vdir.name, vdir.parent = name, d
        vdir.writable = bool(d.parent and d.parent.writable) and doc.rights.delete
        vdir.mtime = doc.mtime
        known = vdir.listing_token
        if isinstance(known, list) and known and max(v.version for v in known) != doc.version:
            # A newer version on the server invalidates the version list too.
            self.meta.invalidate(("versions", d.slug or "", doc.id))
        return vdir

    def _build_vdir(self, d: DirNode, versions: list[Attachment]) -> None:
        children: dict[str, Node] = {}
        for version in versions:
            name = version_file_name(d.name, version.version)
            key = ("ver", d.slug or "", version.id, str(version.version))
            node = self.key_nodes.get("|".join(key))
            if node is None or node.removed:
                node = self._new_file_node(d, name, "|".join(key))
            node.version = version
            node.name, node.parent = name, d
            children[name] = node
        self._replace_children(d, children)
        d.listing_token = versions

    # ------------------------------------------------------------------ attributes

    def _file_mode(self, node: FileNode) -> int:
        if node.local_only:
            return stat.S_IFREG | 0o644
        server = node.server
        readable = server is None or server.rights.download or node.local is not None
        mode = stat.S_IFREG | (0o444 if readable else 0)
        if self._file_writable(node):
            mode |= 0o200
        return mode

    def _file_writable(self, node: FileNode) -> bool:
        if node.local_only:
            return True
        if node.is_version_file or self.config.read_only:
            return False
        parent = node.parent
        if parent is None or not parent.writable:
            return False
        return node.doc is None or node.doc.rights.update

    def attr(self, node: Node) -> Attr:
        """The attributes of a node as ``stat`` shows them."""
        uid, gid = self.config.uid, self.config.gid
        if isinstance(node, DirNode):
            mode = DIR_MODE_RW if self._dir_mode_writable(node) else DIR_MODE_RO
            size, mtime, nlink = 0, node.mtime, self._dir_links(node)
        else:
            assert isinstance(node, FileNode)
            if node.local is not None:
                size, mtime = node.local.size, node.local.mtime
            elif node.server is not None:
                size, mtime = node.server.size, node.server.mtime
                kept = node.saved_mtime
                if kept is not None and kept[0] == node.generation:
                    mtime = kept[1]  # saved here: the time it had before its upload
            else:
                size, mtime = 0, node.created
            mode = self._file_mode(node)
            nlink = 0 if node.removed else 1  # unlinked while open
        ctime, atime = mtime, None
        times = node.times_set
        if times is not None and times[0] == node.generation:
            atime = times[1]
            mtime = mtime if times[2] is None else times[2]
        return Attr(node.ino, mode, size, mtime, ctime, nlink, uid, gid, atime)

    def _dir_links(self, d: DirNode) -> int:
        """2 + the subdirectories it lists (``versions/`` only when listed); 1 ("not
        counted", as tools read it) while its entries are not known yet."""
        if d.listing_token is None and not d.children:
            return 1
        hidden = None if self.config.show_versions else DirKind.VERSIONS
        return 2 + sum(
            1 for c in d.children.values() if isinstance(c, DirNode) and c.kind is not hidden
        )

    def _dir_mode_writable(self, d: DirNode) -> bool:
        if self.config.read_only:
            return False
        if d.kind is DirKind.VDIR:
            return d.writable
        return self._writable_dir(d)

    async def getattr(self, ino: int) -> Attr:
        node = self._node(ino)
        if isinstance(node, FileNode) and node.parent is not None and node.local is None:
            # Refresh the directory so a changed document shows its new size after the TTL.
            with contextlib.suppress(ApiError):
                await self.children(node.parent)
        return self.attr(node)

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """Find ``name`` in a directory; counts a kernel lookup on success."""
        d = self._dir(parent_ino)
        if name == ".":
            node: Node = d
        elif name == "..":
            node = d.parent or d
        else:
            _check_name(name)
            if d.kind is DirKind.VERSIONS:
                # One document's entry, without building the whole directory (O(1)).
                assert d.parent is not None
                found: Node | None = self._vdir_for(
                    d, name, (await self.children(d.parent)).get(name)
                )
                if found is not None:
                    d.children[name] = found
            else:
                found = (await self.children(d)).get(name)
            if found is None:
                raise FsError(errno.ENOENT)
            node = found
        node.lookups += 1
        return self.attr(node)

    def forget(self, ino: int, nlookup: int) -> None:
        node = self.inodes.maybe(ino)
        if node is None or ino == InodeTable.ROOT:
            return
        node.lookups = max(0, node.lookups - nlookup)
        if node.lookups == 0 and node.removed and not self._has_handles(node):
            self.inodes.drop(ino)

    def _has_handles(self, node: Node) -> bool:
        return isinstance(node, FileNode) and node.open_count > 0

    async def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        """A snapshot of a directory's entries with their attributes."""
        d = self._dir(ino)
        entries = await self.children(d)
        if d.kind is DirKind.VERSIONS:
            self._prefetch_versions(d)
        # versions/ is reachable by name but not listed (as ZFS's .zfs with snapdir=hidden),
        # so tools that walk a tree (rsync --delete, rm -rf, tar, find, du) leave history alone.
        shown = self.config.show_versions
        return [
            (name, self.attr(node))
            for name, node in sorted(entries.items())
            if shown or not (isinstance(node, DirNode) and node.kind is DirKind.VERSIONS)
        ]

    def _prefetch_versions(self, d: DirNode) -> None:
        """Someone listing ``versions/`` usually descends into it (``ls -R``, ``find``): fetch
        the version lists in the background, a few at a time, so each subdirectory is ready
        when asked for. Still one call per directory; the waits overlap."""
        nursery = self._nursery
        if nursery is None:
            return
        wanted = [
            (node.slug or "", node.doc_id)
            for node in d.children.values()
            if isinstance(node, DirNode)
            and node.doc_id
            and node.listing_token is None
            and not self._single_version(node.doc_id)
        ]
        if not wanted:
            return

        async def fetch(slug: str, aid: str) -> None:
            async with self._prefetch_limit:
                try:
                    await self._versions(slug, aid)
                except Exception as exc:  # a prefetch must never take the mount down
                    log.debug("prefetching versions of %s: %s", aid, exc)

        for slug, aid in wanted:
            if aid is not None and ("versions", slug, aid) not in self._prefetching:
                self._prefetching.add(("versions", slug, aid))
                nursery.start_soon(self._prefetch_one, fetch, slug, aid)

    async def _prefetch_one(
        self, fetch: Callable[[str, str], Awaitable[None]], slug: str, aid: str
    ) -> None:
        try:
            await fetch(slug, aid)
        finally:
            self._prefetching.discard(("versions", slug, aid))

    # ------------------------------------------------------------------ statfs

    async def statfs(self) -> dict[str, int]:
        total, used = UNKNOWN_QUOTA, 0
        team_slug = self.config.team
        teams: list[Team] = []
        with contextlib.suppress(ApiError):
            teams = await self._teams()
        chosen = [t for t in teams if team_slug is None or t.slug == team_slug]
        quotas = [t.total_storage for t in chosen if t.total_storage]
        if quotas and len(quotas) == len(chosen):
            total = sum(q for q in quotas if q)
            used = sum(t.used_storage or 0 for t in chosen)
        free = max(total - used, BLOCK)
        return {
            "bsize": BLOCK,
            "frsize": BLOCK,
            "blocks": math.ceil(total / BLOCK),
            "bfree": free // BLOCK,
            "bavail": free // BLOCK,
            "files": 1_000_000,
            "ffree": 1_000_000,
            "namemax": 255,
        }

    # ------------------------------------------------------------------ open / read

    def _check_open(self, node: FileNode, write: bool, truncate: bool) -> None:
        if node.removed and node.open_count == 0 and node.parent is None:
            raise FsError(errno.ENOENT)
        if write:
            if self.config.read_only:
                raise FsError(errno.EROFS)
            if not self._file_writable(node):
                raise FsError(errno.EACCES, f"{node.path()}: no update right")
        if not truncate:
            # Reading, or changing in place (which starts from the current content).
            server = node.server
            if (
                node.local is None
                and not node.local_only
                and server is not None
                and not server.rights.download
            ):
                raise FsError(errno.EACCES, f"{node.path()}: no download right")

    def _content_key(self, node: FileNode) -> ContentKey | None:
        server = node.server
        if server is None:
            return None
        return _cache_key(server)

    def _fetcher(self, node: FileNode) -> Callable[[int, int], Any]:
        server = node.server
        assert server is not None and node.parent is not None
        slug = node.parent.slug or ""
        aid, version = server.id, server.version

        def fetch(start: int, end: int) -> Any:
            return self.client.open_download(slug, aid, version=version, start=start, end=end)

        return fetch

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Open a file; returns (fh, keep_cache). Nothing is downloaded here."""
        node = self._file(ino)
        accmode = flags & os.O_ACCMODE
        write = accmode in (os.O_WRONLY, os.O_RDWR)
        self._check_open(node, write, truncate=write and bool(flags & os.O_TRUNC))
        if not write and flags & os.O_TRUNC:
            raise FsError(errno.EACCES)
        handle = Handle(self._new_fh(), node, write, direct=accmode == os.O_WRONLY)
        keep_cache = False
        if write:
            if flags & os.O_TRUNC:
                await self._make_local(node, truncate=True)
            # Otherwise the current content is copied only when the handle first changes it
            # (many programs open read-write, or write-only to test access, and change nothing).
            node.writers += 1
        elif node.local is None and not (node.local_only and node.doc is None):
            key = self._content_key(node)
            if key is not None and key.size > 0:
                handle.cached = self.content.open(key, self._fetcher(node))
                keep_cache = node.kernel_key == key
                node.kernel_key = key
        if node.local is not None:
            keep_cache = False
            node.kernel_key = None
        node.open_count += 1
        self.handles[handle.fh] = handle
        return handle.fh, keep_cache

    def direct_io(self, fh: int) -> bool:
        """Whether the kernel should send this handle's writes straight to ``write`` instead
        of through its page cache: for write-only opens (``cp``, ``>``, most saves). That is
        one copy less per byte and no page-cache pages to allocate for bytes that are going to
        disk and the network anyway. Such a descriptor cannot be read or mmapped, so nothing
        it does needs those pages; other open handles of the file are kept coherent by
        ``write`` (see there)."""
        return self._handle(fh).direct

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        node = handle.node
        local = node.local
        if local is not None:
            if local.fd is not None:
                return os.pread(local.fd, size, offset)
            if handle.local_fd is None or handle.local_path != local.path:
                # Opened before the local copy existed, or a later save moved it: follow it.
                if handle.local_fd is not None:
                    os.close(handle.local_fd)
                handle.local_fd = os.open(local.path, os.O_RDONLY)
                handle.local_path = local.path
            return os.pread(handle.local_fd, size, offset)
        if handle.cached is None:
            server = node.server
            if server is None or server.size == 0:
                return b""
            key = self._content_key(node)
            assert key is not None
            handle.cached = self.content.open(key, self._fetcher(node))
        return await self.content.read(handle.cached, offset, size)

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    # ------------------------------------------------------------------ local data

    def _new_staging(self) -> tuple[Path, int]:
        """A new empty staging file in the journal, open read-write: the one place local
        content is created. Everything a file holds locally (a save being written, a temp
        file, content taken back from the journal) lives in the journal's staging area, so
        whatever path later hands it to the journal (a close, a rename over a document while
        the file is still open) hands over a file the journal accepts, by a rename on the same
        disk."""
        path = self.journal.staging_path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path, fd

    async def _make_local(self, node: FileNode, truncate: bool) -> LocalData:
        """Give the node an uncommitted local copy to write into (copy on write)."""
        local = node.local
        if local is not None and not local.committed:
            if local.fd is None:  # content taken back from the journal (a rename to a temp name)
                local.fd = os.open(local.path, os.O_RDWR | os.O_CLOEXEC)
            if truncate:
                self._abandon_eager(local)
                os.ftruncate(local.fd, 0)
                local.append_only = True
                local.size = 0
                local.dirty = True
                local.mtime = time.time()
                node.generation += 1
            return local
        path, fd = self._new_staging()
        try:
            size = 0
            if not truncate:
                size = await self._copy_current(node, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        if local is not None:
            self._abandon_eager(local)
        node.local = LocalData(
            path=Path(path),
            size=size,
            mtime=time.time(),
            fd=fd,
            dirty=truncate,
            append_only=truncate,
        )
        if truncate:
            node.generation += 1
        return node.local

    async def _copy_current(self, node: FileNode, fd: int) -> int:
        """Copy the node's current bytes (local or server) into ``fd``; returns the size."""
        if node.local is not None:
            src = os.open(node.local.path, os.O_RDONLY)
            try:
                return _copy_fd(src, fd)
            finally:
                os.close(src)
        key = self._content_key(node)
        if key is None or key.size == 0:
            return 0
        server = node.server
        assert server is not None
        if not server.rights.download:
            raise FsError(errno.EACCES, f"{node.path()}: no download right to edit in place")
        cached = self.content.open(key, self._fetcher(node))
        try:
            path = await self.content.ensure_complete(cached)
            src = os.open(path, os.O_RDONLY)
            try:
                return _copy_fd(src, fd)
            finally:
                os.close(src)
        finally:
            self.content.close(cached)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        while node.committing is not None:
            await node.committing.wait()
        local = await self._make_local(node, truncate=False)
        assert local.fd is not None
        if local.append_only and offset != local.size:
            local.append_only = False
            self._abandon_eager(local)
        # On the trio thread: a worker-thread hop per write measured slower for `cp` (more CPU,
        # no overlap gained), see docs/performance.md.
        with _callers_mistake():
            written = os.pwrite(local.fd, data, offset)
        end = offset + written
        local.size = max(local.size, end)
        local.dirty = True
        if handle.direct:
            # The kernel's pages of this file no longer show every byte written. Pages another
            # open handle cached are dropped now (in the background); after the upload they
            # are not kept as the new version's pages either.
            local.direct_writes = True
            if node.open_count > 1:
                self.invalidate_inode(node.ino)
        node.generation += 1
        if end - local.writeback_start >= WRITEBACK_STEP:
            # Written far enough: let the disk start on it now rather than all at close().
            start_writeback(local.fd, local.writeback_start, end - local.writeback_start)
            local.writeback_start = end
        if local.append_only:
            if local.eager is not None:
                local.eager.grew(local.size)
            elif local.size >= EAGER_MIN_SIZE and self._stream_ok(node):
                self._start_eager(node, local)
        local.mtime = time.time()
        self.uploader.touch(node.key)
        return written

    async def truncate(self, node: FileNode, size: int, fh: int | None) -> None:
        if not self._file_writable(node):
            raise FsError(errno.EACCES if not self.config.read_only else errno.EROFS)
        while node.committing is not None:
            await node.committing.wait()
        local = await self._make_local(node, truncate=size == 0)
        assert local.fd is not None
        with _callers_mistake():
            os.ftruncate(local.fd, size)
        if size != 0:
            local.append_only = False
            self._abandon_eager(local)
        local.size = size
        local.dirty = True
        local.mtime = time.time()
        node.generation += 1
        if fh is None and node.open_count == 0:
            await self._commit(node)

    def _upload_meta(self, node: FileNode) -> dict[str, Any]:
        parent = node.parent
        assert parent is not None
        if node.doc is not None:
            return {
                "op": "version",
                "slug": parent.slug,
                "pid": parent.pid,
                "aid": node.doc.id,
                "file_name": node.doc.file_name,
                "content_type": node.doc.type or self._content_type(node.doc.file_name),
                "base_version": node.doc.version,
                "path": node.path(),
            }
        return {
            "op": "create",
            "slug": parent.slug,
            "pid": parent.pid,
            "folder_id": parent.folder_id,
            "file_name": node.name,
            "content_type": self._content_type(node.name),
            "path": node.path(),
            **node.pending_attrs,  # tag / classification set before the first upload
        }

    async def _commit(self, node: FileNode) -> None:
        """Hand the node's new content to the journal (durable before this returns).

        The fsync and the journal record run in a worker thread so a large file does not stall
        every other request; writes to the node wait until the commit is done.
        """
        while node.committing is not None:
            await node.committing.wait()
        local = node.local
        if local is None or not local.dirty or node.local_only or node.removed:
            return
        assert local.fd is not None
        done = node.committing = trio.Event()
        log.debug("committing %s (%d bytes)", node.path(), local.size)
        try:
            entry = await trio.to_thread.run_sync(
                self.journal.commit, node.key, self._upload_meta(node), local.path
            )
        except BaseException as exc:
            # The bytes stay in their staging file and the node stays dirty: the error goes
            # to close() (or fsync), the next close or the background retry commits again,
            # and until then status counts the file as not saved (unmount refuses to finish).
            self._unsaved[node] = _describe(exc)
            self._schedule_commit_retry()
            raise
        else:
            self._unsaved.pop(node, None)
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

    def _schedule_commit_retry(self) -> None:
        if self._nursery is not None and not self._retrying_commits:
            self._retrying_commits = True
            self._nursery.start_soon(self._retry_commits)

    async def _retry_commits(self) -> None:
        """Commit again, with backoff, what a close could not hand to the journal (a full or
        failing cache disk), until every such file is in the journal or gone."""
        delay = 1.0
        try:
            while self._unsaved:
                await trio.sleep(delay)
                delay = min(delay * 2, 60.0)
                await self._commit_unsaved()
        finally:
            self._retrying_commits = False

    async def _commit_unsaved(self) -> None:
        for node in list(self._unsaved):
            local = node.local
            if node.removed or local is None or not local.dirty or node.local_only:
                self._unsaved.pop(node, None)
                continue
            if node.writers:
                continue  # its own close commits it
            try:
                await self._commit(node)
            except Exception as exc:
                log.warning("%s is still not saved locally: %s", node.path(), _describe(exc))
            else:
                log.info("%s is saved locally now", node.path())

    async def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable:
            await self._commit(handle.node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.open_count -= 1
        if handle.cached is not None:
            self.content.close(handle.cached)
        if handle.local_fd is not None:
            os.close(handle.local_fd)
        if handle.writable:
            node.writers -= 1
        try:
            if handle.writable and node.local is not None:
                if not node.writers:
                    # The write-back delay counts from the last close that left no writer.
                    self.uploader.touch(node.key)
                    self.uploader.notify()
                await self._commit(node)
        finally:
            if node.removed and node.open_count == 0:
                self._discard_local(node)
                if node.lookups == 0:
                    self.inodes.drop(node.ino)

    def _discard_local(self, node: FileNode) -> None:
        local = node.local
        if local is None:
            return
        self._abandon_eager(local)
        if local.fd is not None:
            os.close(local.fd)
            local.fd = None
        if not local.committed:
            with contextlib.suppress(OSError):
                os.unlink(local.path)
        node.local = None

    # ------------------------------------------------------------------ create

    async def create(self, parent_ino: int, name: str, flags: int) -> tuple[int, Attr]:
        d = self._dir(parent_ino)
        entries = await self.children(d)
        existing = entries.get(name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            if isinstance(existing, DirNode):
                raise FsError(errno.EISDIR)
            fh, _ = await self.open(existing.ino, flags & ~os.O_CREAT)
            existing.lookups += 1
            return fh, self.attr(existing)
        node = self._add_new_file(d, name)
        try:
            # The new, empty file exists whatever the access mode asked for (`flock f cmd`
            # creates its lock file read-only): it becomes a document like any new file.
            await self._make_local(node, truncate=True)
            fh, _ = await self.open(node.ino, flags & ~(os.O_CREAT | os.O_TRUNC))
            if not self._handle(fh).writable:
                await self._commit(node)  # no close of a writer will do it
        except BaseException:
            self._remove_entry(d, name, node)
            raise
        node.lookups += 1
        return fh, self.attr(node)

    def _add_new_file(self, d: DirNode, name: str) -> FileNode:
        _check_name(name)
        if name == VERSIONS_DIR and d.holds_documents:
            raise FsError(errno.EEXIST)
        local_only = self.local_only(name)
        if not local_only:
            if self.config.read_only:
                raise FsError(errno.EROFS)
            if not self._writable_dir(d):
                raise FsError(errno.EACCES, f"{d.path()}: no write access")
        elif not d.holds_documents:
            raise FsError(errno.EACCES)
        detached = None if local_only else d.detached.pop(name, None)
        if detached is not None:
            # vim's backup rename: the new file under the old name is the next version.
            node = self._new_file_node(d, name, "")
            if self._claim_detached(node, d, detached):
                d.overlay.pop(name, None)
                d.children[name] = node
                return node
            self.inodes.drop(node.ino)
        key = f"local:{uuid.uuid4().hex}" if local_only else f"new:{uuid.uuid4().hex}"
        node = self._new_file_node(d, name, key)
        node.local_only = local_only
        d.overlay[name] = node
        d.children[name] = node
        return node

    # ------------------------------------------------------------------ setattr

    async def setattr(
        self,
        ino: int,
        size: int | None,
        fh: int | None,
        mtime: float | None = None,
        atime: float | None = None,
    ) -> Attr:
        node = self._node(ino)
        if size is not None:
            if not isinstance(node, FileNode):
                raise FsError(errno.EISDIR)
            await self.truncate(node, size, fh)
        # chmod, chown and utimes are accepted and do nothing on the server. Times set here
        # are shown until the content changes, so `rsync -a` and `cp -p` see their own times
        # and a second rsync skips unchanged files.
        if mtime is not None or atime is not None:
            old = node.times_set
            if old is None or old[0] != node.generation:
                old = (node.generation, None, None)
            node.times_set = (
                node.generation,
                old[1] if atime is None else atime,
                old[2] if mtime is None else mtime,
            )
        return self.attr(node)

    # ------------------------------------------------------------------ unlink / rmdir / mkdir

    async def unlink(self, parent_ino: int, name: str) -> None:
        d = self._dir(parent_ino)
        entries = await self.children(d)
        node = entries.get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        if isinstance(node, DirNode):
            raise FsError(errno.EISDIR)
        assert isinstance(node, FileNode)
        if node.is_version_file:
            await self._delete_version(d, node)
        elif node.local_only:
            await self._unlink_local_only(d, node)
        elif node.doc is None:
            self._drop_pending(node)
        else:
            if self.config.read_only:
                raise FsError(errno.EROFS)
            if not d.writable or not node.doc.rights.delete:
                raise FsError(errno.EACCES, f"{node.path()}: no delete right")
            await self.client.delete_attachment(d.slug or "", node.doc.id)
            self._drop_pending(node)
            self._listing_drop_doc(d.slug or "", d.pid or "", node.doc.id)
        self._remove_entry(d, name, node)

    def _remove_entry(self, d: DirNode, name: str, node: Node) -> None:
        if d.children.get(name) is node:
            del d.children[name]
        if d.overlay.get(name) is node:
            del d.overlay[name]
        node.removed = True
        if isinstance(node, FileNode):
            if node.doc is not None and self.doc_nodes.get(node.doc.id) is node:
                del self.doc_nodes[node.doc.id]
            if node.open_count == 0:
                self._discard_local(node)
        self.invalidate_entry(d.ino, name)

    def _drop_pending(self, node: FileNode) -> None:
        """The user removed a file: its not-yet-sent content goes with it."""
        if node.local is not None:
            self._abandon_eager(node.local)
        for entry in self.journal.by_key(node.key):
            if entry.state == "uploading":
                node.deleted = True
            else:
                self.journal.discard(entry.id)

    async def _unlink_local_only(self, d: DirNode, node: FileNode) -> None:
        origin = getattr(node, "detached_from", None)
        if origin is not None and node.doc is not None:
            home, old_name = origin
            if home.detached.get(old_name) == node.doc.id:
                # `mv doc doc~ && rm doc~` with nothing put back: the document is deleted.
                del home.detached[old_name]
                if self._writable_dir(home) and node.doc.rights.delete:
                    await self.client.delete_attachment(home.slug or "", node.doc.id)
                    self._listing_drop_doc(home.slug or "", home.pid or "", node.doc.id)
                home.hidden.discard(node.doc.id)

    async def _delete_version(self, d: DirNode, node: FileNode) -> None:
        if self.config.read_only:
            raise FsError(errno.EROFS)
        version = node.version
        assert version is not None and d.parent is not None
        if not d.writable or not version.rights.delete:
            raise FsError(errno.EACCES, f"{node.path()}: no delete right")
        versions = await self._versions(d.slug or "", version.id)
        if len(versions) <= 1:
            raise FsError(errno.EPERM, "the only version of a document cannot be deleted")
        try:
            await self.client.delete_version(d.slug or "", version.id, version.version)
        except ConflictError as exc:
            raise FsError(errno.EPERM, str(exc)) from exc
        slug = d.slug or ""
        left = [v for v in versions if v.version != version.version]
        self.meta.put(("versions", slug, version.id), left)
        newest = max(left, key=lambda v: v.version)
        doc_node = self.doc_nodes.get(version.id)
        if doc_node is not None and doc_node.doc is not None:
            if doc_node.doc.version != newest.version:
                # The newest version went: the one before it is the document's content now.
                self._update_doc(doc_node, newest)
            self._listing_put_doc(slug, d.pid or "", doc_node.doc)

    async def mkdir(self, parent_ino: int, name: str) -> Attr:
        _check_name(name)
        d = self._dir(parent_ino)
        if self.config.read_only:
            raise FsError(errno.EROFS)
        if not self._writable_dir(d):
            raise FsError(errno.EACCES)
        entries = await self.children(d)
        if name in entries:
            raise FsError(errno.EEXIST)
        if name == VERSIONS_DIR or safe_name(name) != name:
            raise FsError(errno.EINVAL, f"{name!r} cannot be a document folder name")
        slug, pid = d.slug or "", d.pid or ""
        folder = await self.client.create_folder(slug, pid, name, d.folder_id)
        self._listing_put_folder(
            slug, pid, dataclasses.replace(folder, name=name, parent=d.folder_id, children=())
        )
        listing = self._known_listing(slug, pid)
        node = self._get_dir_node(
            ("folder", slug, pid, folder.id), name, d, DirKind.FOLDER,
            slug=d.slug, pid=d.pid, folder_id=folder.id, entity_id=folder.id,
            writable=d.writable, mtime=time.time(),
        )  # fmt: skip
        # Known to be empty: its listing is the project's, already at hand.
        node.children = {}
        if listing is not None:
            self._build_docs_dir(node, listing)
        d.children[name] = node
        node.lookups += 1
        return self.attr(node)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        d = self._dir(parent_ino)
        entries = await self.children(d)
        node = entries.get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise FsError(errno.ENOTDIR)
        if node.kind is not DirKind.FOLDER:
            raise FsError(errno.EACCES if node.kind is not DirKind.VERSIONS else errno.EBUSY)
        if self.config.read_only:
            raise FsError(errno.EROFS)
        inner = await self.children(node)
        if any(n != VERSIONS_DIR for n in inner):
            raise FsError(errno.ENOTEMPTY)
        await self._settle_uploads_into(d.slug or "", d.pid or "", node.folder_id)
        try:
            await self.client.delete_folder(d.slug or "", node.folder_id or "")
        except ConflictError as exc:
            raise FsError(errno.ENOTEMPTY) from exc
        self._listing_drop_folder(d.slug or "", d.pid or "", node.folder_id or "")
        self._remove_entry(d, name, node)

    # ------------------------------------------------------------------ rename

    async def rename(self, old_ino: int, old: str, new_ino: int, new: str, flags: int) -> None:
        _check_name(new)
        d1, d2 = self._dir(old_ino), self._dir(new_ino)
        src_entries = await self.children(d1)
        src = src_entries.get(old)
        if src is None:
            raise FsError(errno.ENOENT)
        if flags:
            raise FsError(errno.EINVAL, "rename flags are not supported")
        if d1.kind in (DirKind.VERSIONS, DirKind.VDIR) or d2.kind in (
            DirKind.VERSIONS,
            DirKind.VDIR,
        ):
            raise FsError(errno.EACCES, "versions/ is read-only")
        if not d1.holds_documents or not d2.holds_documents:
            raise FsError(errno.EACCES)
        if (d1.slug, d1.pid) != (d2.slug, d2.pid):
            raise FsError(errno.EXDEV)
        if isinstance(src, DirNode):
            raise FsError(errno.EXDEV, "document folders are moved by copying")
        assert isinstance(src, FileNode)
        dst_entries = await self.children(d2)
        dst = dst_entries.get(new)
        if dst is src:
            return
        if isinstance(dst, DirNode):
            raise FsError(errno.EISDIR)
        new_local = self.local_only(new)
        if not (src.local_only and new_local) and self.config.read_only:
            raise FsError(errno.EROFS)
        if new_local:
            await self._rename_to_local_only(d1, src, d2, new, dst)
        elif dst is not None:
            assert isinstance(dst, FileNode)
            await self._rename_over(d1, src, d2, new, dst)
        else:
            await self._rename_to_new_name(d1, src, d2, new)

    def _move_node(self, d1: DirNode, node: FileNode, d2: DirNode, new: str, overlay: bool) -> None:
        old = node.name
        if d1.children.get(old) is node:
            del d1.children[old]
        if d1.overlay.get(old) is node:
            del d1.overlay[old]
        node.name, node.parent = new, d2
        d2.children[new] = node
        if overlay:
            d2.overlay[new] = node
        self.invalidate_entry(d1.ino, old)

    async def _rename_to_local_only(
        self, d1: DirNode, src: FileNode, d2: DirNode, new: str, dst: Node | None
    ) -> None:
        if isinstance(dst, FileNode):
            self._remove_entry(d2, new, dst)
        if not src.local_only:
            if src.doc is not None:
                # The document stays on the server, out of sight under its old name; a file
                # created there again becomes its next version (vim backupcopy=no).
                d1.detached[src.name] = src.doc.id
                d1.hidden.add(src.doc.id)
                src.detached_from = (d1, src.name)  # type: ignore[attr-defined]
            else:
                # A new, never-sent file turned into a temp file: keep its bytes here only.
                for entry in self.journal.by_key(src.key):
                    if entry.state != "uploading":
                        self._adopt_entry_locally(src, entry)
            src.local_only = True
        self._move_node(d1, src, d2, new, overlay=True)

    def _adopt_entry_locally(self, node: FileNode, entry: JournalEntry) -> None:
        target, fd = self._new_staging()
        try:
            _copy_path(entry.data_path, fd)
        finally:
            os.close(fd)
        if node.local is not None and node.local.journal_id == entry.id:
            node.local.path = target
            node.local.committed = False
            node.local.journal_id = None
        self.journal.discard(entry.id)

    async def _rename_to_new_name(self, d1: DirNode, src: FileNode, d2: DirNode, new: str) -> None:
        if not self._writable_dir(d2):
            raise FsError(errno.EACCES)
        detached = d2.detached.pop(new, None)
        if src.local_only:
            if detached is not None and src.doc is not None and src.doc.id == detached:
                # The backup goes back to its own name: undo the detach, nothing to send.
                src.local_only = False
                d2.hidden.discard(detached)
                self._move_node(d1, src, d2, new, overlay=False)
                if src.local is not None and src.local.dirty:
                    await self._commit(src)
                return
            if src.local is None:
                await self._make_local(src, truncate=False)
            src.local_only = False
            if detached is None or not self._claim_detached(src, d2, detached):
                src.doc = None
                src.key = f"new:{uuid.uuid4().hex}"
                self.key_nodes[src.key] = src
            self._move_node(d1, src, d2, new, overlay=src.doc is None)
            await self._commit_now(src)
            return
        if src.doc is None:
            if d1 is not d2 and self._uploading(src.key):
                # Its first upload is under way into the old folder, and documents cannot be
                # moved between folders: `mv` copies and deletes instead.
                raise FsError(errno.EXDEV, "the file is being uploaded into its folder")
            # Not sent yet: the upload simply goes out under the new name / folder.
            if detached is not None and self._claim_detached(src, d2, detached):
                await self._rekey_entries(src)
                self._move_node(d1, src, d2, new, overlay=False)
            else:
                self._move_node(d1, src, d2, new, overlay=True)
                await self._rekey_entries(src)
            return
        if d1 is not d2:
            raise FsError(errno.EXDEV, "moving a document between folders is done by copying")
        if not src.doc.rights.update:
            raise FsError(errno.EACCES)
        updated = await self.client.update_attachment(d1.slug or "", src.doc.id, file_name=new)
        src.doc = updated
        self._move_node(d1, src, d2, new, overlay=False)
        await self._rekey_entries(src)
        self._listing_put_doc(d1.slug or "", d1.pid or "", updated)

    def _claim_detached(self, node: FileNode, d: DirNode, aid: str) -> bool:
        """``node`` becomes the document that a backup rename moved away from this name.

        The backup keeps showing the old bytes under its temp name, as a local-only file with no
        document identity of its own; ``node`` takes the identity (its next save is a version).
        """
        backup = self.doc_nodes.get(aid)
        if backup is None or backup.doc is None:
            return False
        node.doc = backup.doc
        if backup is not node:
            if self.key_nodes.get(backup.key) is backup:
                del self.key_nodes[backup.key]
            backup.key = f"local:{uuid.uuid4().hex}"
            self.key_nodes[backup.key] = backup
        node.key = f"doc:{aid}"
        node.local_only = False
        node.removed = False
        self.key_nodes[node.key] = node
        self.doc_nodes[aid] = node
        d.hidden.discard(aid)
        return True

    def _take_identity(self, src: FileNode, target: FileNode) -> None:
        """``src`` becomes the node of ``target``'s document (its next version)."""
        src.doc = target.doc
        src.key = target.key
        self.key_nodes[src.key] = src
        if target.doc is not None:
            self.doc_nodes[target.doc.id] = src
            if target.parent is not None:
                target.parent.hidden.discard(target.doc.id)
        if target is not src:
            target.removed = True

    async def _rekey_entries(self, node: FileNode) -> None:
        """Point the node's not-yet-sent journal entries at its current identity and name."""
        if node.local is None or node.local.journal_id is None:
            return
        entry = self.journal.get(node.local.journal_id)
        if entry is None:
            return
        if entry.state == "uploading":
            if entry.key != node.key:
                # Its upload is under way for the identity it had: the content is saved again
                # for the new one (the upload's own result is dropped when it ends).
                await self._save_again(node)
            return
        if entry.key != node.key:
            for stale in self.journal.by_key(node.key):
                if stale.state != "uploading" and stale.id != entry.id:
                    self.journal.discard(stale.id)
            self.journal.rekey(entry.id, node.key)
        self.journal.update_meta(entry.id, self._upload_meta(node))

    async def _save_again(self, node: FileNode) -> None:
        """Commit a copy of the node's committed content as a new save of its identity."""
        local = node.local
        assert local is not None and local.committed
        staging, fd = self._new_staging()
        try:
            size = await trio.to_thread.run_sync(_copy_path, local.path, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        node.local = LocalData(staging, size, local.mtime, fd=fd, dirty=True)
        await self._commit(node)

    async def _commit_now(self, node: FileNode) -> None:
        local = node.local
        if local is None:
            return
        if local.committed:
            await self._rekey_entries(node)
            return
        local.dirty = True
        if local.fd is None:
            local.fd = os.open(local.path, os.O_RDWR | os.O_CLOEXEC)
        await self._commit(node)

    async def _rename_over(
        self, d1: DirNode, src: FileNode, d2: DirNode, new: str, dst: FileNode
    ) -> None:
        if dst.local_only:
            # Overwriting a temp file with a real one: the temp goes away locally.
            self._remove_entry(d2, new, dst)
            await self._rename_to_new_name(d1, src, d2, new)
            return
        if not self._file_writable(dst):
            raise FsError(errno.EACCES, f"{dst.path()}: no update right")
        if src.doc is not None and not src.local_only and src.local is None:
            # A document already on the server replaces another: copy its bytes as the
            # target's new version, then delete the source document.
            if not self._writable_dir(d1) or not src.doc.rights.delete:
                raise FsError(errno.EACCES)
            staging, fd = self._new_staging()
            try:
                size = await self._copy_current(src, fd)
            except BaseException:
                os.close(fd)
                os.unlink(staging)
                raise
            self._discard_pending_of(dst)
            dst.local = LocalData(Path(staging), size, time.time(), fd=fd, dirty=True)
            await self._commit(dst)
            await self.client.delete_attachment(d1.slug or "", src.doc.id)
            self._listing_drop_doc(d1.slug or "", d1.pid or "", src.doc.id)
            self._remove_entry(d1, src.name, src)
            return
        # Local bytes (a new file, a temp file, or a document with unsent changes) become the
        # target's next version: the source node takes over the target's identity.
        self._discard_pending_of(dst)
        was_doc_with_changes = src.doc is not None and not src.local_only
        if was_doc_with_changes and src.doc is not None:
            # The source document itself still exists on the server; its unsent bytes move.
            if not self._writable_dir(d1) or not src.doc.rights.delete:
                raise FsError(errno.EACCES)
            await self.client.delete_attachment(d1.slug or "", src.doc.id)
            self._listing_drop_doc(d1.slug or "", d1.pid or "", src.doc.id)
        if src.local is None:
            await self._make_local(src, truncate=False)
        src.local_only = False
        self._remove_entry(d2, new, dst)
        dst.removed = True
        self._take_identity(src, dst)
        if dst.doc is None:
            src.doc = None
        self._move_node(d1, src, d2, new, overlay=src.doc is None)
        if src.local is not None and not src.local.committed and src.open_count == 0:
            await self._commit_now(src)
        else:
            await self._rekey_entries(src)

    def _discard_pending_of(self, node: FileNode) -> None:
        """The node's content is being replaced as a whole: unsent older saves are dropped."""
        for entry in self.journal.by_key(node.key):
            if entry.state != "uploading":
                self.journal.discard(entry.id)
        if node.local is not None and node.open_count == 0:
            self._discard_local(node)

    # ------------------------------------------------------------------ streaming uploads

    def _stream_ok(self, node: FileNode) -> bool:
        """Whether a file being written may already be streamed to the server."""
        config = self.config
        parent = node.parent
        return (
            config.stream_uploads
            and config.write_back_delay <= 30
            and self._nursery is not None
            and not node.local_only
            and not node.removed
            and parent is not None
            and self._writable_dir(parent)
            and (node.doc is None or node.doc.rights.update)
        )

    def _start_eager(self, node: FileNode, local: LocalData) -> None:
        assert self._nursery is not None
        eager = EagerUpload(
            node.key,
            self._upload_meta(node),
            local.path,
            idle_limit=self.config.write_back_delay + 30.0,
        )
        local.eager = eager
        eager.grew(local.size)
        log.debug("streaming %s while it is written", node.path())
        self._nursery.start_soon(self._run_eager, eager)

    async def _run_eager(self, eager: EagerUpload) -> None:
        self._eager.add(eager)
        try:
            await eager.run(self.client)
        finally:
            self._eager.discard(eager)

    @staticmethod
    def _abandon_eager(local: LocalData) -> None:
        if local.eager is not None:
            local.eager.abort()
            local.eager = None

    async def _finish_eager(
        self, entry: JournalEntry, progress: Callable[[int], None]
    ) -> Attachment | None:
        """Complete the streaming upload made for exactly this entry, if there is one."""
        node = self.key_nodes.get(entry.key)
        local = node.local if node is not None else None
        if local is None or local.eager is None or local.journal_id != entry.id:
            return None
        eager, local.eager = local.eager, None
        if not eager.matches(entry.key, entry.meta):
            eager.abort()
            return None
        result: Attachment | None = await eager.finish(entry.size, progress)
        return result

    # ------------------------------------------------------------------ uploads

    async def _upload(
        self, entry: JournalEntry, progress: Callable[[int], None]
    ) -> Callable[[Path], bool] | None:
        """Send one journal entry (called by the uploader, retried by it). Returns what the
        journal should do with the sent content: become the new version's cache entry."""
        meta = entry.meta
        slug = meta["slug"]
        streamed = await self._finish_eager(entry, progress)
        if streamed is not None:
            att = streamed
        elif meta.get("op") == "create":
            att = await self.client.create_attachment(
                slug,
                meta["pid"],
                entry.data_path,
                file_name=meta["file_name"],
                content_type=meta.get("content_type") or "application/octet-stream",
                classification=meta.get("classification"),
                tag=meta.get("tag"),
                folder_id=meta.get("folder_id"),
                progress=progress,
            )
        else:
            try:
                att = await self.client.create_version(
                    slug,
                    meta["aid"],
                    entry.data_path,
                    file_name=meta["file_name"],
                    content_type=meta.get("content_type") or "application/octet-stream",
                    progress=progress,
                    known_version=meta.get("base_version"),
                )
            except NotFoundError:
                owner = self.key_nodes.get(entry.key)
                if owner is None or owner.key != entry.key or owner.removed:
                    # Its document was deleted here meanwhile (its bytes, if they were moved
                    # to another document, were saved again for it): nothing left to send.
                    return None
                raise
        creating = meta.get("op") == "create"
        node = self.key_nodes.get(entry.key)
        pid = meta.get("pid") or ""
        self._versions_put(slug, att)
        self._listing_put_doc(slug, pid, att, meta.get("folder_id") if creating else None)
        key = _cache_key(att)
        take = functools.partial(self.content.adopt, key) if att.size == entry.size else None
        if creating and (
            node is None or node.deleted or node.removed or node.local_only or node.key != entry.key
        ):
            # Deleted, made a temp file, or its bytes became another document's version while
            # this upload ran: the document it made is nobody's.
            with contextlib.suppress(NotFoundError):
                await self.client.delete_attachment(slug, att.id)
            self._listing_drop_doc(slug, pid, att.id)
            return None
        if node is None or node.key != entry.key:
            return take  # a version of a document whose file moved on to another identity
        if creating:
            new_key = f"doc:{att.id}"
            for other in self.journal.by_key(entry.key):
                if other.id != entry.id:
                    self.journal.rekey(other.id, new_key)
                    self.journal.update_meta(
                        other.id,
                        {**other.meta, "op": "version", "aid": att.id, "base_version": att.version},
                    )
            wanted = node.name
        else:
            new_key = entry.key
            wanted = node.doc.file_name if node.doc is not None else att.file_name
        if att.file_name != wanted and not node.removed:
            # Renamed while this upload ran (the server names a document after the file name
            # of its newest upload): the document takes the name it has here now.
            att = await self.client.update_attachment(slug, att.id, file_name=wanted)
            self._listing_put_doc(slug, pid, att)
        node.doc = att
        node.pending_attrs.clear()
        if new_key != node.key:
            self.key_nodes.pop(node.key, None)
            node.key = new_key
            self.key_nodes[new_key] = node
        self.doc_nodes[att.id] = node
        parent = node.parent
        if parent is not None and parent.overlay.get(node.name) is node:
            del parent.overlay[node.name]
        local = node.local
        if local is not None and local.committed and local.journal_id == entry.id:
            node.local = None
            # Times do not jump when the upload ends (editors compare them to detect changes
            # made by others); they follow the server again when it has a newer version.
            node.saved_mtime = (node.generation, local.mtime)
            if take is not None and not local.direct_writes:
                # The kernel's pages of this file hold exactly the bytes just sent: keep them
                # for the next open; only the attributes (the server's times) change.
                node.kernel_key = key
                self.invalidate_attributes(node.ino)
            else:
                node.kernel_key = None
                self.invalidate_inode(node.ino)
        return take

    # ------------------------------------------------------------------ xattrs

    def _state(self, node: FileNode) -> str:
        unsaved = self._unsaved.get(node)
        if unsaved is not None:
            return f"failed: not saved locally: {unsaved}"
        entries = self.journal.by_key(node.key) if node.key else []
        failed = [e for e in entries if e.state == "failed"]
        if failed:
            return f"failed: {failed[-1].reason}"
        if any(e.state == "uploading" for e in entries):
            return "uploading"
        if node.local_only:
            return "local"
        if entries or (node.local is not None and node.local.dirty):
            return "pending"
        return "synced"

    def _xattrs(self, node: Node) -> dict[str, str]:
        if isinstance(node, DirNode):
            out: dict[str, str] = {}
            if node is self.root and node.kind is DirKind.ROOT:
                return out
            if node.entity_id is None and node.kind is DirKind.TEAM and node.slug in self.teams:
                node.entity_id = self.teams[node.slug].id  # the root of a --team mount
            if node.entity_id:
                out[XATTR_PREFIX + "id"] = node.entity_id
            if node.kind is DirKind.TEAM and node.slug:
                out[XATTR_PREFIX + "slug"] = node.slug
            return out
        assert isinstance(node, FileNode)
        out = {STATE_XATTR: self._state(node)}
        server = node.server
        if server is None:
            out.update({XATTR_PREFIX + k: v for k, v in node.pending_attrs.items()})
            return out
        out.update(
            {
                XATTR_PREFIX + "id": server.id,
                XATTR_PREFIX + "version": str(server.version),
                XATTR_PREFIX + "hash": server.hash,
                XATTR_PREFIX + "type": server.type,
                XATTR_PREFIX + "attachment_type": server.attachment_type,
                XATTR_PREFIX + "classification": server.classification,
                XATTR_PREFIX + "tag": server.tag,
                XATTR_PREFIX + "creator": server.creator.label if server.creator else "",
                XATTR_PREFIX + "changed_by": server.changed_by.label if server.changed_by else "",
                XATTR_PREFIX + "created": _iso(server.created_at),
                XATTR_PREFIX + "changed": _iso(server.changed),
            }
        )
        return out

    async def _known_root_team(self, node: Node) -> None:
        if node is self.root and self.root.kind is DirKind.TEAM and self.root.entity_id is None:
            with contextlib.suppress(ApiError):
                await self._teams()

    async def listxattr(self, ino: int) -> list[str]:
        node = self._node(ino)
        await self._known_root_team(node)
        return sorted(self._xattrs(node))

    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self._node(ino)
        if not name.startswith(_OUR_XATTRS):
            # The kernel asks for security.capability before every write to a file, and `ls`
            # for ACLs and SELinux labels: answered without building anything.
            raise FsError(errno.ENODATA)
        await self._known_root_team(node)
        if name == STATUS_XATTR and node is self.root:
            return status_doc.encode(self.status())
        if node is self.root and (after := status_doc.page_after(name)) is not None:
            return status_doc.page(self.journal, self.uploader, after)
        value = self._xattrs(node).get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value.encode()

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self._node(ino)
        if node is self.root and name == SYNC_XATTR:
            # `bimfs unmount`: send every pending save now instead of after its quiet period,
            # for as long as it waits (the value), else ten drain timeouts.
            if self._nursery is not None:
                limit = status_doc.sync_duration(value, self.config.drain_timeout * 10)
                self._nursery.start_soon(self.uploader.drain, limit)
            return
        text = value.decode("utf-8", errors="replace").strip("\x00")
        short = name.removeprefix(XATTR_PREFIX)
        writable = name.startswith(XATTR_PREFIX) and short in _WRITABLE_XATTRS
        if not writable or not isinstance(node, FileNode) or node.is_version_file:
            if name.startswith(_OUR_XATTRS) and self._xattrs(node).get(name) == text:
                return  # the value it has already: nothing to change
            # Read-only names (and other namespaces) are not supported for writing: tools that
            # copy extended attributes along (`mv` and `cp -a` between folders, `rsync -X`)
            # skip such an attribute quietly, where a permission error would be printed.
            raise FsError(errno.ENOTSUP, f"{name} cannot be set")
        if self.config.read_only:
            raise FsError(errno.EROFS)
        parent = node.parent
        assert parent is not None
        if node.doc is None:
            if node.local_only or short == "release":
                raise FsError(errno.ENOTSUP, f"{name} cannot be set on {node.path()}")
            # A new file not sent yet: the tag or classification goes with its upload.
            node.pending_attrs[short] = text
            await self._rekey_entries(node)
            return
        slug = parent.slug or ""
        if short == "tag":
            self._require(node.doc.rights.update and parent.writable)
            node.doc = await self.client.update_attachment(slug, node.doc.id, tag=text)
        elif short == "classification":
            self._require(node.doc.rights.update and parent.writable)
            node.doc = await self.client.update_attachment(slug, node.doc.id, classification=text)
        else:
            if text.strip() not in ("1", "true"):
                raise FsError(errno.EINVAL, "write 1 to release (share) the latest version")
            self._require(node.doc.rights.share)
            node.doc = await self.client.release(slug, node.doc.id)
        self._listing_put_doc(slug, parent.pid or "", node.doc)

    @staticmethod
    def _require(ok: bool) -> None:
        if not ok:
            raise FsError(errno.EACCES)

    async def removexattr(self, ino: int, name: str) -> None:
        raise FsError(errno.EACCES if name.startswith("user.bim") else errno.ENODATA)

    # ------------------------------------------------------------------ status

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
            streams=[t for t in (e.status() for e in self._eager) if t is not None],
            cache=self.content.usage(),
        )
        if self._unsaved:
            # Saved files whose content could not yet be put in the journal (retried): not
            # sent, not journalled, so unmount must not finish.
            doc["pending"] += len(self._unsaved)
            doc["unsaved"] = [
                {"path": node.path(), "reason": reason}
                for node, reason in list(self._unsaved.items())[: status_doc.SUMMARY_ITEMS]
            ]
        return doc


def _cache_key(att: Attachment) -> ContentKey:
    """The content cache's key for a document version: what reads look up and what a sent
    save is stored under must be derived the same way."""
    return ContentKey(att.id, att.version, att.hash, att.size)


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


def _check_name(name: str) -> None:
    """A name given by a program: over 255 bytes fails as on a local disk (FUSE itself lets
    names of up to 1024 bytes through)."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


@contextlib.contextmanager
def _callers_mistake() -> Any:
    """A size or offset beyond what a file can hold is the caller's error, as on a local
    disk (`EFBIG`, `EINVAL`), not a fault of the mount's disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EFBIG, errno.EINVAL):
            raise FsError(exc.errno) from None
        raise


def _copy_path(path: Path, dst: int) -> int:
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _copy_fd(src, dst)
    finally:
        os.close(src)


def _copy_fd(src: int, dst: int) -> int:
    total = 0
    while True:
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return total
        os.pwrite(dst, chunk, total)
        total += len(chunk)


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
