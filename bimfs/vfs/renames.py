"""Renames, and every way editors save through them, in one place.

- write a temp file, rename it over the target (``sed -i``, LibreOffice, rsync,
  ``os.replace``): the temp's bytes become the target's next version (``_over``); GLib/GIO
  (gedit, ``gio save``) does the same while the temp is still open, and its bytes are
  committed at its close.
- rename the target to a backup, write a new file under its name, delete the backup (vim
  ``backupcopy=no``): the document is *detached* from its name (hidden, still on the server);
  the new file under the name becomes its next version (``new_file``); deleting the backup
  drops only local data, unless nothing was written back (``remove_backup``). AutoCAD does the
  same with the drawing's own backup name (``Model.dwg`` -> ``Model.bak``, ``is_backup_name``)
  and the new content written to a temp file first and renamed to the drawing's name; if no
  file follows under the drawing's name within the grace, the rename is made on the server
  after all (``_settle_backup``).
- rename within a directory (``mv``): the document is renamed on the server.
- rename to another folder, project or team: ``EXDEV``, so ``mv`` copies and deletes.

Temp and lock names (``LocalOnlyMatcher``) never reach the server. Every rename hands content
to the journal the one way ``Staging`` provides, and points unsent saves at the file's new
identity and name (``Staging.retarget``).
"""

from __future__ import annotations

import errno
import logging

import trio

from bimfs.api.errors import ApiError
from bimfs.api.models import Attachment
from bimfs.cache.journal import UPLOADING, Journal
from bimfs.vfs.background import Background
from bimfs.vfs.errors import FsError, check_name
from bimfs.vfs.keys import DocKey, LocalKey, NewKey
from bimfs.vfs.listing import Listings
from bimfs.vfs.names import VERSIONS_DIR, LocalOnlyMatcher, is_backup_name
from bimfs.vfs.nodes import DirKind, DirNode, FileNode, Node
from bimfs.vfs.remote import Remote
from bimfs.vfs.rights import Rights
from bimfs.vfs.staging import Staging
from bimfs.vfs.tree import Tree
from bimfs.vfs.uploads import Uploads

log = logging.getLogger(__name__)

BACKUP_GRACE_MIN = 1.0
"""The least time (seconds; else the write-back delay) a document renamed to its backup name
waits for the save that follows (AutoCAD's comes within milliseconds) before it counts as
renamed."""


class Renames:
    """``rename`` and the editor patterns around it."""

    def __init__(
        self,
        remote: Remote,
        tree: Tree,
        listings: Listings,
        staging: Staging,
        uploads: Uploads,
        rights: Rights,
        journal: Journal,
        local_only: LocalOnlyMatcher,
        background: Background,
        backup_grace: float,
    ) -> None:
        self.remote = remote
        self.tree = tree
        self.listings = listings
        self.staging = staging
        self.uploads = uploads
        self.rights = rights
        self.journal = journal
        self.local_only = local_only
        self.background = background
        # How long a document renamed to its backup name waits for the save that writes its
        # new content under its name before the rename is made on the server.
        self.backup_grace = backup_grace

    # ---------------------------------------------------------------- new files

    def new_file(self, d: DirNode, name: str) -> FileNode:
        """The node of a file created as ``name`` in ``d``: a local-only temp file, the
        document a backup rename moved away from that name (its next version), or a new file
        (a new document at its first upload)."""
        check_name(name)
        if name == VERSIONS_DIR and d.holds_documents:
            raise FsError(errno.EEXIST)
        local_only = self.local_only(name)
        self.rights.require_documents_here(d)
        if not local_only:
            self.rights.require_writable_dir(d)
        detached = None if local_only else d.detached.pop(name, None)
        if detached is not None:
            # vim's backup rename: the new file under the old name is the next version.
            node = self.tree.new_file(d, name, LocalKey.fresh())
            if self._claim_detached(node, d, detached):
                d.overlay.pop(name, None)
                self.tree.place(d, name, node, overlay=False)
                return node
            self.tree.inodes.drop(node.ino)
        node = self.tree.new_file(d, name, LocalKey.fresh() if local_only else NewKey.fresh())
        node.local_only = local_only
        self.tree.place(d, name, node, overlay=True)
        return node

    async def remove_backup(self, node: FileNode) -> None:
        """A local-only file is deleted: if it is a backup that nothing was written back for
        (``mv doc doc~ && rm doc~``), the document is deleted, as ``rm doc`` would."""
        origin = node.detached_from
        if origin is None or node.doc is None:
            return
        home, old_name = origin
        if home.detached.get(old_name) != node.doc.id:
            return
        del home.detached[old_name]
        if self.rights.writable_dir(home) and node.doc.rights.delete:
            await self.remote.delete_attachment(home.slug or "", node.doc.id)
            self.listings.drop_doc(home.slug or "", home.pid or "", node.doc.id)
        home.hidden.discard(node.doc.id)

    # ---------------------------------------------------------------- rename

    async def rename(self, d1: DirNode, old: str, d2: DirNode, new: str, flags: int) -> None:
        check_name(new)
        src = await self.listings.entry(d1, old)
        if src is None:
            raise FsError(errno.ENOENT)
        if flags:
            raise FsError(errno.EINVAL, "rename flags are not supported")
        if {d1.kind, d2.kind} & {DirKind.VERSIONS, DirKind.VDIR}:
            raise FsError(errno.EACCES, "versions/ is read-only")
        self.rights.require_documents_here(d1)
        self.rights.require_documents_here(d2)
        if (d1.slug, d1.pid) != (d2.slug, d2.pid):
            raise FsError(errno.EXDEV)
        if isinstance(src, DirNode):
            raise FsError(errno.EXDEV, "document folders are moved by copying")
        assert isinstance(src, FileNode)
        dst = await self.listings.entry(d2, new)
        if dst is src:
            return
        if isinstance(dst, DirNode):
            raise FsError(errno.EISDIR)
        new_local = self.local_only(new)
        if not (src.local_only and new_local):
            self.rights.require_change()
        if new_local or self._backup_rename(d1, src, d2, new, dst):
            await self._to_local_only(d1, src, d2, new, dst)
        elif dst is not None:
            assert isinstance(dst, FileNode)
            await self._over(d1, src, d2, new, dst)
        else:
            await self._to_new_name(d1, src, d2, new)

    @staticmethod
    def _backup_rename(d1: DirNode, src: FileNode, d2: DirNode, new: str, dst: Node | None) -> bool:
        """A document renamed to its own backup name (AutoCAD's ``Model.dwg`` -> ``Model.bak``)
        with nothing on the server under that name: the first step of a save that writes the
        new content under the document's name next, so handled as vim's ``doc~``. A file not
        on the server yet is renamed as usual: its bytes exist nowhere else."""
        return (
            d1 is d2
            and src.doc is not None
            and not src.local_only
            and (dst is None or (isinstance(dst, FileNode) and dst.local_only))
            and is_backup_name(src.name, new)
        )

    async def _to_local_only(
        self, d1: DirNode, src: FileNode, d2: DirNode, new: str, dst: Node | None
    ) -> None:
        if isinstance(dst, FileNode):
            self.staging.remove(d2, new, dst)
        if not src.local_only:
            if src.doc is not None:
                # The document stays on the server, out of sight under its old name; a file
                # created there again becomes its next version (vim backupcopy=no).
                d1.detached[src.name] = src.doc.id
                d1.hidden.add(src.doc.id)
                src.detached_from = (d1, src.name)
                if not self.local_only(new):
                    # A backup by its name only (``Model.bak``): a rename after all unless
                    # the save follows within the grace.
                    self.background.spawn(self._settle_backup, d1, src, src.name, src.doc.id)
            else:
                # A new, never-sent file turned into a temp file: keep its bytes here only.
                for entry in self.journal.by_key(str(src.key)):
                    if entry.state != UPLOADING:
                        self.staging.take_back(src, entry)
            src.local_only = True
        self.tree.move(d1, src, d2, new, overlay=True)

    async def _settle_backup(self, home: DirNode, node: FileNode, old_name: str, aid: str) -> None:
        """A document renamed to its backup name (``mv plan.dwg plan.bak``) and nothing saved
        under its name within the grace: the rename was meant, and is made on the server."""
        await trio.sleep(self.backup_grace)
        if (
            home.detached.get(old_name) != aid
            or self.tree.doc_nodes.get(aid) is not node  # an earlier save's backup
            or node.detached_from != (home, old_name)
            or node.removed
            or node.parent is not home
            or node.doc is None
            or self.local_only(node.name)
        ):
            return  # claimed by a save, deleted, renamed back or to a temp name meanwhile
        # Decided now: a save under the old name from here on is a new file.
        del home.detached[old_name]
        node.detached_from = None
        try:
            self.rights.require_update(home, node.doc, node.path())
            updated = await self.remote.update_attachment(home.slug or "", aid, file_name=node.name)
        except (FsError, ApiError) as exc:
            log.warning("%s: shown on this machine only; renaming %s failed: %s",
                        node.path(), old_name, exc)  # fmt: skip
            home.detached.setdefault(old_name, aid)
            node.detached_from = (home, old_name)
            return
        node.doc = updated
        node.local_only = False
        home.hidden.discard(aid)
        self.tree.invalidate_attributes(node.ino)  # a document's mode and times again
        if node.parent is home and not node.removed:
            self.tree.move(home, node, home, node.name, overlay=False)
        self.listings.put_doc(home.slug or "", home.pid or "", updated)
        if node.local is not None and node.local.dirty and node.open_count == 0:
            await self.staging.commit_closed(node)

    async def _to_new_name(self, d1: DirNode, src: FileNode, d2: DirNode, new: str) -> None:
        self.rights.require_writable_dir(d2)
        detached = d2.detached.pop(new, None)
        if src.local_only:
            await self._temp_to_real_name(d1, src, d2, new, detached)
            return
        if src.doc is None:
            if d1 is not d2 and self.uploads.uploading(src):
                # Its first upload is under way into the old folder, and documents cannot be
                # moved between folders: `mv` copies and deletes instead.
                raise FsError(errno.EXDEV, "the file is being uploaded into its folder")
            # Not sent yet: the upload simply goes out under the new name / folder.
            claimed = detached is not None and self._claim_detached(src, d2, detached)
            self.tree.move(d1, src, d2, new, overlay=not claimed)
            await self.staging.retarget(src)
            return
        if d1 is not d2:
            raise FsError(errno.EXDEV, "moving a document between folders is done by copying")
        self.rights.require_update(d1, src.doc, src.path())
        updated = await self.remote.update_attachment(d1.slug or "", src.doc.id, file_name=new)
        src.doc = updated
        self.tree.invalidate_attributes(src.ino)  # the server's time of the rename
        self.tree.move(d1, src, d2, new, overlay=False)
        await self.staging.retarget(src)
        self.listings.put_doc(d1.slug or "", d1.pid or "", updated)

    async def _temp_to_real_name(
        self, d1: DirNode, src: FileNode, d2: DirNode, new: str, detached: str | None
    ) -> None:
        if detached is not None and src.doc is not None and src.doc.id == detached:
            # The backup goes back to its own name: undo the detach, nothing to send.
            src.local_only = False
            src.detached_from = None
            d2.hidden.discard(detached)
            self.tree.move(d1, src, d2, new, overlay=False)
            if src.local is not None and src.local.dirty:
                await self.staging.commit(src)
            return
        if src.local is None:
            await self.staging.make_local(src, truncate=False)
        src.local_only = False
        if detached is None or not self._claim_detached(src, d2, detached):
            src.doc = None
            self.tree.set_key(src, NewKey.fresh())
        self.tree.move(d1, src, d2, new, overlay=src.doc is None)
        await self.staging.commit_closed(src)

    async def _over(self, d1: DirNode, src: FileNode, d2: DirNode, new: str, dst: FileNode) -> None:
        if dst.local_only:
            # Overwriting a temp file with a real one: the temp goes away locally.
            self.staging.remove(d2, new, dst)
            await self._to_new_name(d1, src, d2, new)
            return
        self.rights.require_file_writable(dst)
        if src.doc is not None and not src.local_only and src.local is None:
            await self._document_over(d1, src, dst)
            return
        # Local bytes (a new file, a temp file, or a document with unsent changes) become the
        # target's next version: the source node takes over the target's identity.
        self.staging.replace_all(dst)
        if src.doc is not None and not src.local_only:
            # The source document itself still exists on the server; its unsent bytes move.
            await self._delete_document(d1, src.doc, src.path())
        if src.local is None:
            await self.staging.make_local(src, truncate=False)
        src.local_only = False
        self.staging.remove(d2, new, dst)
        self._take_identity(src, dst)
        if src.local is not None:
            # It replaces the target as the user knew it: a save based on that version.
            src.local.base_version = dst.doc.version if dst.doc is not None else None
        self.tree.move(d1, src, d2, new, overlay=src.doc is None)
        if src.local is not None and not src.local.committed and src.open_count == 0:
            await self.staging.commit_closed(src)
        else:
            await self.staging.retarget(src)

    async def _document_over(self, d1: DirNode, src: FileNode, dst: FileNode) -> None:
        """A document already on the server replaces another: its bytes become the target's
        new version, then the source document is deleted."""
        assert src.doc is not None
        self.rights.require_delete(d1, src.doc, src.path())
        staging = await self.staging.copy_of(src)
        self.staging.replace_all(dst)
        staging.base_version = dst.doc.version if dst.doc is not None else None
        dst.local = staging
        await self.staging.commit(dst)
        await self._delete_document(d1, src.doc, src.path())
        self.staging.remove(d1, src.name, src)

    async def _delete_document(self, d: DirNode, doc: Attachment, path: str) -> None:
        self.rights.require_delete(d, doc, path)
        await self.remote.delete_attachment(d.slug or "", doc.id)
        self.listings.drop_doc(d.slug or "", d.pid or "", doc.id)

    # ---------------------------------------------------------------- identities

    def _claim_detached(self, node: FileNode, d: DirNode, aid: str) -> bool:
        """``node`` becomes the document that a backup rename moved away from this name.

        The backup keeps showing the old bytes under its temp name, as a local-only file with no
        document identity of its own; ``node`` takes the identity (its next save is a version).
        """
        backup = self.tree.doc_nodes.get(aid)
        if backup is None or backup.doc is None:
            return False
        node.doc = backup.doc
        if backup is not node:
            self.tree.set_key(backup, LocalKey.fresh())
            self.tree.invalidate_attributes(backup.ino)  # a local-only file's mode from now on
        self.tree.set_key(node, DocKey(aid))
        node.local_only = False
        node.removed = False
        self.tree.doc_nodes[aid] = node
        d.hidden.discard(aid)
        return True

    def _take_identity(self, src: FileNode, target: FileNode) -> None:
        """``src`` becomes the node of ``target``'s document (its next version), or of
        ``target``'s unsent new file."""
        src.doc = target.doc
        self.tree.set_key(src, target.key)
        if target.doc is not None:
            self.tree.doc_nodes[target.doc.id] = src
            if target.parent is not None:
                target.parent.hidden.discard(target.doc.id)
        target.removed = True
