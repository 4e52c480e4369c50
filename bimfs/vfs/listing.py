"""Directory listings: what the server lists, turned into directory entries.

A project's listing is two calls made together (its documents and its folder tree) and serves
the project directory and every folder in it. Listings are cached for ``--dir-ttl`` seconds
(``TtlCache``: one load for all who ask, errors such as 404 remembered briefly).

The mount's own changes (new documents, versions, renames, deletes, folders, tags) are applied
to the cached listing from the server's answers, so a change costs no listing call; the
directory entries were already changed by the operation itself. A listing fetched while such a
change was under way may predate it: the change is applied to it as well when it arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from bimfs.api.errors import NotFoundError
from bimfs.api.models import Attachment, FolderNode, Project, Team
from bimfs.cache.journal import Journal
from bimfs.cache.metadata import TtlCache
from bimfs.config import Config
from bimfs.vfs.background import Background
from bimfs.vfs.errors import first_error
from bimfs.vfs.keys import UploadTarget, VersionKey
from bimfs.vfs.known import KnownTree, ProjectListing
from bimfs.vfs.memory import LARGE_LISTING, give_back_memory
from bimfs.vfs.names import VERSIONS_DIR, NameRequest, assign_names, version_file_name
from bimfs.vfs.nodes import DirKind, DirNode, FileNode, LocalData, Node
from bimfs.vfs.online import Offline
from bimfs.vfs.remote import Remote
from bimfs.vfs.tree import Tree

log = logging.getLogger(__name__)

PREFETCH_PARALLEL = 8


Change = Callable[[ProjectListing], None]


class Listings:
    """Loads, caches and applies listings to the tree."""

    def __init__(
        self,
        config: Config,
        remote: Remote,
        tree: Tree,
        journal: Journal,
        background: Background,
        known: KnownTree,
    ) -> None:
        self.config = config
        self.known = known
        self.remote = remote
        self.tree = tree
        self.journal = journal
        self.background = background
        self.meta: TtlCache[tuple[str, ...], Any] = TtlCache(
            maxsize=100_000, ttl=config.dir_ttl, negative_ttl=config.negative_ttl
        )
        self.teams: dict[str, Team] = {}
        # New files saved by an earlier run, shown in their directory at its first listing.
        self.orphans: dict[tuple[str, str, str], list[FileNode]] = {}
        self._prefetch_limit = trio.CapacityLimiter(PREFETCH_PARALLEL)
        self._prefetching: set[tuple[str, str]] = set()
        self._refreshing: set[tuple[str, ...]] = set()
        # Our own changes made while a project's listing is being fetched.
        self._loading: dict[tuple[str, str], int] = {}
        self._changes: dict[tuple[str, str], list[tuple[int, Change]]] = {}
        self._change_seq = 0

    # ---------------------------------------------------------------- loading

    async def _get(self, key: tuple[str, ...], load: Callable[[], Awaitable[Any]]) -> Any:
        """The fresh value of ``key``; while the server cannot be reached, the last one known
        (stale, never an error once something was known, in this run or an earlier one)."""

        async def loaded() -> Any:
            value = await load()
            self.known.changed(key, value)
            return value

        try:
            return await self.meta.get(key, loaded, negative=lambda e: isinstance(e, NotFoundError))
        except Offline:
            known = self.meta.peek(key)
            if known is None:
                known = self._from_disk(key)
            if known is None:
                raise
            return known

    def _from_disk(self, key: tuple[str, ...]) -> Any | None:
        """The value an earlier run kept on disk, remembered as known but not fresh."""
        value = self.known.load(key)
        if value is not None:
            self.meta.put(key, value)
            self.meta.invalidate(key)
        return value

    async def get_teams(self) -> list[Team]:
        teams: list[Team] = await self._get(("teams",), self.remote.get_teams)
        for team in teams:
            self.teams[team.slug] = team
        return teams

    async def _projects(self, slug: str) -> list[Project]:
        projects: list[Project] = await self._get(
            ("projects", slug), lambda: self.remote.get_projects(slug)
        )
        return projects

    async def _fetch_project(self, slug: str, pid: str) -> ProjectListing:
        result: dict[str, Any] = {}

        async def docs() -> None:
            result["docs"] = await self.remote.list_attachments(slug, pid)

        async def folders() -> None:
            result["folders"] = await self.remote.get_folders(slug, pid)

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
        listing = ProjectListing(
            docs={a.id: a for a in result["docs"]},
            folders=folder_map,
            doc_folder=doc_folder,
            fetched_at=time.time(),
        )
        result.clear()  # the answers are in the listing now
        if len(listing.docs) >= LARGE_LISTING:
            give_back_memory()  # what parsing the answer took for a moment
        return listing

    async def project(self, slug: str, pid: str) -> ProjectListing:
        """The project's listing (fetched when stale), with our own changes applied."""

        async def load() -> ProjectListing:
            key = (slug, pid)
            since = self._change_seq
            self._loading[key] = self._loading.get(key, 0) + 1
            try:
                fetched = await self._fetch_project(slug, pid)
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

        listing: ProjectListing = await self._get(("listing", slug, pid), load)
        return listing

    async def versions(self, slug: str, aid: str) -> list[Attachment]:
        """Every version of a document, oldest first."""
        node = self.tree.doc_nodes.get(aid)
        doc = node.doc if node is not None else None

        async def load() -> list[Attachment]:
            if doc is not None and doc.version == 1 and doc.id == aid:
                # Version numbers are never reused and the only version cannot be deleted,
                # so a document whose latest version is 1 has exactly that one: no call needed.
                return [doc]
            return await self.remote.list_versions(slug, aid)

        versions: list[Attachment] = await self._get(("versions", slug, aid), load)
        return versions

    def _single_version(self, aid: str) -> bool:
        node = self.tree.doc_nodes.get(aid)
        return node is not None and node.doc is not None and node.doc.version == 1

    # ---------------------------------------------------------------- our own changes

    def _known(self, slug: str, pid: str) -> ProjectListing | None:
        known: ProjectListing | None = self.meta.peek(("listing", slug, pid))
        return known

    def _change(self, slug: str, pid: str, change: Change) -> None:
        """Apply one of our own changes to the project's known listing, and to the listings
        being fetched right now (their answer may predate the change: a file deleted here must
        not come back from it)."""
        listing = self._known(slug, pid)
        if listing is not None:
            change(listing)
            self.known.changed(("listing", slug, pid), listing)
        if self._loading.get((slug, pid)):
            self._change_seq += 1
            self._changes.setdefault((slug, pid), []).append((self._change_seq, change))

    def put_doc(self, slug: str, pid: str, att: Attachment, folder_id: str | None = None) -> None:
        """The server's answer for a document (new, new version, renamed, new metadata);
        ``folder_id`` places a new document in its folder."""

        def put(listing: ProjectListing) -> None:
            listing.docs[att.id] = att
            if folder_id:
                listing.doc_folder[att.id] = folder_id

        self._change(slug, pid, put)

    def drop_doc(self, slug: str, pid: str, aid: str) -> None:
        def drop(listing: ProjectListing) -> None:
            listing.docs.pop(aid, None)
            listing.doc_folder.pop(aid, None)

        self._change(slug, pid, drop)
        self.meta.discard(("versions", slug, aid))

    def put_folder(self, slug: str, pid: str, folder: FolderNode) -> None:
        def put(listing: ProjectListing) -> None:
            listing.folders[folder.id] = folder

        self._change(slug, pid, put)

    def drop_folder(self, slug: str, pid: str, folder_id: str) -> None:
        def drop(listing: ProjectListing) -> None:
            listing.folders.pop(folder_id, None)

        self._change(slug, pid, drop)

    def put_version(self, slug: str, att: Attachment) -> None:
        """A version just made joins the document's cached version list."""
        key = ("versions", slug, att.id)
        known: list[Attachment] | None = self.meta.peek(key)
        if att.version == 1:
            self.meta.put(key, [att])
        elif known is not None and self.meta.is_fresh(key):
            kept = [v for v in known if v.version != att.version]
            self.meta.put(key, [*kept, att])

    def set_versions(self, slug: str, aid: str, versions: list[Attachment]) -> None:
        self.meta.put(("versions", slug, aid), versions)

    # ---------------------------------------------------------------- directories

    async def children(self, d: DirNode) -> dict[str, Node]:
        """The directory's current entries (refreshing its listing when stale)."""
        if d.kind is DirKind.ROOT:
            teams = await self.get_teams()
            if d.listing_token is not teams:
                self._build_root(d, teams)
        elif d.kind is DirKind.TEAM:
            assert d.slug is not None
            projects = await self._projects(d.slug)
            if d.listing_token is not projects:
                self._build_team(d, projects)
        elif d.kind in (DirKind.PROJECT, DirKind.FOLDER):
            assert d.slug is not None and d.pid is not None
            listing = await self.project(d.slug, d.pid)
            if d.listing_token is not listing:
                self.build_docs_dir(d, listing)
        elif d.kind is DirKind.VERSIONS:
            assert d.parent is not None
            await self.children(d.parent)
            self._build_versions_dir(d)
        elif d.kind is DirKind.VDIR:
            assert d.slug is not None and d.doc_id is not None
            versions = await self.versions(d.slug, d.doc_id)
            if d.listing_token is not versions:
                self._build_vdir(d, versions)
        return d.children

    def refresh_soon(self, d: DirNode) -> None:
        """Refresh a directory's listing in the background if it is stale (``getattr`` never
        waits for it)."""
        key = self._listing_key(d)
        if key is None or self.meta.is_fresh(key) or key in self._refreshing:
            return
        if self.background.spawn(self._refresh, d, key):
            self._refreshing.add(key)

    async def _refresh(self, d: DirNode, key: tuple[str, ...]) -> None:
        try:
            await self.children(d)
        except Exception as exc:  # a background refresh must never take the mount down
            log.debug("refreshing %s: %s", d.path(), exc)
        finally:
            self._refreshing.discard(key)

    @staticmethod
    def _listing_key(d: DirNode) -> tuple[str, ...] | None:
        if d.kind in (DirKind.PROJECT, DirKind.FOLDER) and d.slug and d.pid:
            return ("listing", d.slug, d.pid)
        if d.kind is DirKind.VDIR and d.slug and d.doc_id:
            return ("versions", d.slug, d.doc_id)
        return None

    async def entry(self, d: DirNode, name: str) -> Node | None:
        """One entry of ``d`` by name; in ``versions/`` without building all of it (O(1))."""
        if d.kind is not DirKind.VERSIONS:
            return (await self.children(d)).get(name)
        assert d.parent is not None
        found = self.vdir_for(d, name, (await self.children(d.parent)).get(name))
        if found is not None:
            d.children[name] = found
        return found

    def _build_root(self, d: DirNode, teams: list[Team]) -> None:
        names = assign_names(NameRequest(t.slug, t.slug, 0.0, t.id) for t in teams)
        children: dict[str, Node] = {}
        for team in teams:
            name = names[team.slug]
            node = self.tree.dir_node(
                ("team", team.slug), name, d, DirKind.TEAM,
                slug=team.slug, entity_id=team.id, mtime=self.tree.started,
            )  # fmt: skip
            node.name, node.parent, node.entity_id = name, d, team.id
            children[name] = node
        self.tree.replace_children(d, children)
        d.listing_token = teams

    def _build_team(self, d: DirNode, projects: list[Project]) -> None:
        slug = d.slug or ""
        names = assign_names(NameRequest(p.id, p.name, p.created or 0.0, p.id) for p in projects)
        children: dict[str, Node] = {}
        for project in projects:
            name = names[project.id]
            node = self.tree.dir_node(
                ("project", slug, project.id), name, d, DirKind.PROJECT,
                slug=slug, pid=project.id, entity_id=project.id,
            )  # fmt: skip
            node.name, node.parent = name, d
            node.writable = project.has_write_access
            node.mtime = project.changed or project.created or self.tree.started
            children[name] = node
        self.tree.replace_children(d, children)
        d.listing_token = projects

    def build_docs_dir(self, d: DirNode, listing: ProjectListing) -> None:
        """A project's or folder's entries: its folders and documents from the listing,
        ``versions/``, and the local overlay (files not uploaded yet, temp files)."""
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
            if orphan.doc is not None or orphan.removed:
                continue  # uploaded (or gone) before this first listing: shown as its document
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
            fnode = self.tree.dir_node(
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
            node = self.tree.doc_nodes.get(doc.id)
            if node is None or node.removed:
                node = self.tree.doc_file(d, name, doc)
                self._attach_pending(node)
            else:
                self.tree.update_doc(node, doc)
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
                    self.tree.mark_removed(old)
        versions = self.tree.dir_node(
            ("versions", slug, pid, here or ""), VERSIONS_DIR, d, DirKind.VERSIONS,
            slug=slug, pid=pid, folder_id=here,
        )  # fmt: skip
        versions.mtime = d.mtime
        children[VERSIONS_DIR] = versions
        for name, node in d.overlay.items():
            children[name] = node
        self.tree.replace_children(d, children)
        d.listing_token = listing
        if len(docs) >= LARGE_LISTING:
            give_back_memory()  # what building the entries took for a moment

    def _attach_pending(self, node: FileNode) -> None:
        """A document node seen for the first time shows unsent content from an earlier run."""
        entries = [e for e in self.journal.by_key(str(node.key)) if e.data_path.exists()]
        if entries and node.local is None:
            entry = max(entries, key=lambda e: e.created)
            node.local = LocalData(
                path=entry.data_path,
                size=entry.size,
                mtime=entry.created,
                committed=True,
                journal_id=entry.id,
                base_version=UploadTarget.from_meta(entry.meta).base_version,
            )

    def _upload_done(self, node: FileNode) -> bool:
        return not self.journal.by_key(str(node.key)) and (
            node.local is None or not node.local.dirty
        )

    # ---------------------------------------------------------------- versions/

    def _build_versions_dir(self, d: DirNode) -> None:
        parent = d.parent
        assert parent is not None
        children: dict[str, Node] = {}
        for name, node in parent.children.items():
            vdir = self.vdir_for(d, name, node)
            if vdir is not None:
                children[name] = vdir
        self.tree.replace_children(d, children)

    def vdir_for(self, d: DirNode, name: str, node: Node | None) -> DirNode | None:
        """``versions/<name>/`` of the document ``node`` shown as ``name`` beside ``d``."""
        if not isinstance(node, FileNode) or node.doc is None or node.local_only:
            return None
        doc = node.doc
        vdir = self.tree.dir_node(
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
            key = VersionKey(d.slug or "", version.id, version.version)
            node = self.tree.key_nodes.get(key)
            if node is None or node.removed:
                node = self.tree.new_file(d, name, key)
            node.version = version
            node.name, node.parent = name, d
            children[name] = node
        self.tree.replace_children(d, children)
        d.listing_token = versions

    def prefetch_versions(self, d: DirNode) -> None:
        """Someone listing ``versions/`` usually descends into it (``ls -R``, ``find``): fetch
        the version lists in the background, a few at a time, so each subdirectory is ready
        when asked for. Still one call per directory; the waits overlap."""
        for node in d.children.values():
            if (
                isinstance(node, DirNode)
                and node.doc_id
                and node.listing_token is None
                and not self._single_version(node.doc_id)
                and (node.slug or "", node.doc_id) not in self._prefetching
            ):
                wanted = (node.slug or "", node.doc_id)
                if self.background.spawn(self._prefetch, *wanted):
                    self._prefetching.add(wanted)

    async def _prefetch(self, slug: str, aid: str) -> None:
        try:
            async with self._prefetch_limit:
                await self.versions(slug, aid)
        except Exception as exc:  # a prefetch must never take the mount down
            log.debug("prefetching versions of %s: %s", aid, exc)
        finally:
            self._prefetching.discard((slug, aid))
