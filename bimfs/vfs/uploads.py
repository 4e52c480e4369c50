"""Sending saves: what the uploader does with a journal entry, and streaming a large file while
it is still being written.

``Uploads.upload`` is the uploader's callable (``bimfs.cache.uploader``): it sends one journal
entry, then applies the server's answer to the tree, the cached listing and the content cache.
The file may have moved on while its upload ran (renamed, deleted, turned into a temp file, its
bytes moved to another document): the answer is reconciled with what the file is now.

A large file written sequentially from empty is streamed while it is written
(``bimfs.vfs.streams``); the stream is completed when its entry is uploaded here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import trio

from bimfs.api import settle
from bimfs.api.errors import ApiError, NotFoundError
from bimfs.api.models import Attachment
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import UPLOADING, Journal, JournalEntry
from bimfs.cache.uploader import Uploader
from bimfs.config import Config
from bimfs.vfs.background import Background
from bimfs.vfs.conflicts import Conflicts, conflict_name
from bimfs.vfs.errors import describe
from bimfs.vfs.keys import DocKey, UploadTarget, parse_key
from bimfs.vfs.listing import Listings
from bimfs.vfs.nodes import FileNode, LocalData
from bimfs.vfs.online import Connectivity, unreachable
from bimfs.vfs.reads import content_key
from bimfs.vfs.remote import Remote
from bimfs.vfs.rights import Rights
from bimfs.vfs.staging import target_of
from bimfs.vfs.streams import EAGER_IDLE_SLACK, EAGER_MIN_SIZE, EagerUpload
from bimfs.vfs.tree import Tree

log = logging.getLogger(__name__)

Take = Callable[[Path], bool]


class Uploads:
    """Sends journal entries and applies the answers."""

    def __init__(
        self,
        config: Config,
        remote: Remote,
        journal: Journal,
        content: ContentStore,
        tree: Tree,
        listings: Listings,
        rights: Rights,
        background: Background,
        conflicts: Conflicts,
        connectivity: Connectivity,
    ) -> None:
        self.config = config
        self.conflicts = conflicts
        self.connectivity = connectivity
        self.remote = remote
        self.journal = journal
        self.content = content
        self.tree = tree
        self.listings = listings
        self.rights = rights
        self.background = background
        self.streams: set[EagerUpload] = set()  # running now (for ``bimfs status``)
        self.uploader = Uploader(
            journal,
            self.upload,
            delay=config.write_back_delay,
            describe=describe,
            busy=self.open_for_writing,
        )

    # ---------------------------------------------------------------- state

    def resume(self) -> None:
        """Show new files whose upload is still pending from an earlier run as overlay
        entries of their directory (at its first listing), readable before they are sent."""
        for entry in self.journal.entries():
            target = UploadTarget.from_meta(entry.meta)
            if not target.creating:
                continue  # shown on the document's node (Listings._attach_pending)
            node = self.tree.new_file(None, target.file_name, parse_key(entry.key))
            node.local = LocalData(
                path=entry.data_path,
                size=entry.size,
                mtime=entry.created,
                committed=True,
                journal_id=entry.id,
            )
            node.created = entry.created
            where = (target.slug, target.pid, target.folder_id or "")
            self.listings.orphans.setdefault(where, []).append(node)
        self.uploader.notify()

    def open_for_writing(self, key: str) -> bool:
        """Whether the file of an upload target is open for writing now: its upload waits
        for the last close (a program that closes a new file empty and reopens it to write
        for minutes must not see the empty file on the server)."""
        node = self.tree.key_nodes.get(parse_key(key))
        return node is not None and node.writers > 0

    def uploading(self, node: FileNode) -> bool:
        return any(e.state == UPLOADING for e in self.journal.by_key(str(node.key)))

    async def settle_into(self, slug: str, pid: str, folder_id: str | None) -> None:
        """Wait until no new document is being uploaded into this folder (bounded): a folder
        whose last file was deleted while its first upload ran is empty on the server only
        once that upload ended (and the document it made was deleted again)."""

        def busy() -> bool:
            for e in self.journal.with_state(UPLOADING):
                t = UploadTarget.from_meta(e.meta)
                if t.creating and (t.slug, t.pid, t.folder_id) == (slug, pid, folder_id):
                    return True
            return False

        with trio.move_on_after(self.config.request_timeout):
            while busy():
                await self.uploader.wait_changed()

    # ---------------------------------------------------------------- streams

    def grew(self, node: FileNode, local: LocalData) -> None:
        """A file written only at its end grew: feed its stream, or start one."""
        if local.eager is not None:
            local.eager.grew(local.size)
        elif local.size >= EAGER_MIN_SIZE and self._stream_ok(node):
            eager = EagerUpload(
                str(node.key),
                target_of(node),
                local.path,
                idle_limit=self.config.write_back_delay + EAGER_IDLE_SLACK,
            )
            eager.grew(local.size)
            if self.background.spawn(self._run_stream, eager):
                local.eager = eager
                log.debug("streaming %s while it is written", node.path())

    def _stream_ok(self, node: FileNode) -> bool:
        """Whether a file being written may already be streamed to the server."""
        parent = node.parent
        return (
            self.config.stream_uploads
            and self.config.write_back_delay <= EAGER_IDLE_SLACK
            and not node.local_only
            and not node.removed
            and parent is not None
            and self.rights.writable_dir(parent)
            and (node.doc is None or node.doc.rights.update)
        )

    async def _run_stream(self, eager: EagerUpload) -> None:
        self.streams.add(eager)
        try:
            await eager.run(self.remote)
        finally:
            self.streams.discard(eager)

    async def _finish_stream(
        self, entry: JournalEntry, progress: Callable[[int], None]
    ) -> Attachment | None:
        """Complete the streaming upload made for exactly this entry, if there is one."""
        node = self.tree.key_nodes.get(parse_key(entry.key))
        local = node.local if node is not None else None
        if local is None or local.eager is None or local.journal_id != entry.id:
            return None
        eager, local.eager = local.eager, None
        if not isinstance(eager, EagerUpload) or not eager.matches(entry):
            eager.abort()
            return None
        return await eager.finish(entry.size, progress)

    # ---------------------------------------------------------------- sending

    async def upload(self, entry: JournalEntry, progress: Callable[[int], None]) -> Take | None:
        """``send`` one entry, telling the connectivity what the server did."""
        try:
            take = await self.send(entry, progress)
        except ApiError as exc:
            if unreachable(exc):
                self.connectivity.went_offline(exc)
            raise
        self.connectivity.reached()
        return take

    async def send(self, entry: JournalEntry, progress: Callable[[int], None]) -> Take | None:
        """Send one journal entry (called by the uploader, retried by it). Returns what the
        journal should do with the sent content: become the new version's cache entry.

        An entry an earlier attempt may have stored (``attempts`` > 1: the mount died or the
        answer was lost) is first looked for on the server, so one save is one version. A new
        version is checked against the server's newest first: someone else's version since the
        save's base is never buried (a conflict copy, see ``bimfs.vfs.conflicts``), and a save of
        a document deleted on the server becomes a new document under its name.
        """
        owner = self.tree.key_nodes.get(parse_key(entry.key))
        if owner is not None and owner.committing is not None:
            # Picked up the moment its commit stored it, before the commit came back here and
            # pointed it at where the file saves now (a base our previous save just became:
            # without it, a false conflict with our own save).
            await owner.committing.wait()
            entry = self.journal.get(entry.id) or entry
        target = UploadTarget.from_meta(entry.meta)
        asked = target.file_name
        plan = _Plan(target)
        att = await self._earlier_attempt(entry, target) if entry.attempts > 1 else None
        if att is None:
            plan = await self._plan(entry, target)
            att = await self._send(entry, plan.target, progress)
            if att is None:
                return None
            if self._raced(plan, att):
                plan, att = await self._after_race(entry, plan, att, progress)
        cache_key = content_key(att)
        take = functools.partial(self.content.adopt, cache_key) if att.size == entry.size else None
        target = plan.target
        self.listings.put_version(target.slug, att)
        self.listings.put_doc(target.slug, target.pid, att, target.folder_id)
        if plan.conflict is not None:
            self._conflict_copy(entry, att, plan)
            return take
        key = parse_key(entry.key)
        node = self.tree.key_nodes.get(key)
        if target.creating and (
            node is None or node.deleted or node.removed or node.local_only or node.key != key
        ):
            # Deleted, made a temp file, or its bytes became another document's version while
            # this upload ran: the document it made is nobody's.
            with contextlib.suppress(NotFoundError):
                await self.remote.delete_attachment(target.slug, att.id)
            self.listings.drop_doc(target.slug, target.pid, att.id)
            return None
        if node is None or node.key != key:
            return take  # a version of a document whose file moved on to another identity
        if target.creating:
            if plan.replaced_deleted is not None:
                self.listings.drop_doc(target.slug, target.pid, plan.replaced_deleted)
            self._now_a_document(entry, att)
            # A new file keeps the name it has here now; a document re-created after its
            # deletion on the server keeps its own.
            wanted = target.file_name if plan.replaced_deleted else node.name
        else:
            known = node.doc.file_name if node.doc is not None else att.file_name
            # Renamed here while this upload ran: the name given here. Else the name the
            # document had on the server when the upload began (a colleague's rename kept).
            wanted = known if known != asked else target.file_name
        if att.file_name != wanted:
            # Renamed while this upload ran (the server names a document after the file name
            # of its newest upload): the document takes the name it has here now.
            att = await self.remote.update_attachment(target.slug, att.id, file_name=wanted)
            self.listings.put_doc(target.slug, target.pid, att)
        self._adopt_answer(node, entry, att, take)
        return take

    async def _earlier_attempt(
        self, entry: JournalEntry, target: UploadTarget
    ) -> Attachment | None:
        """What an earlier attempt of this entry stored, if it did (found through the server's
        lists: the same size, after the save's base, made by this account)."""
        me = await self.remote.me()
        if target.creating:
            since = settle.settle_since(entry.first_attempt, 0.0)
            found = await settle.created_since(
                self.remote, target.slug, target.pid, target.folder_id, target.file_name,
                entry.size, since, me,
            )  # fmt: skip
            if found is not None and found.id in self.tree.doc_nodes:
                return None  # a document this mount already shows as another file
        elif target.aid is not None and target.base_version is not None:
            found = await settle.version_since(
                self.remote, target.slug, target.aid, target.base_version, entry.size, me
            )
        else:
            return None
        if found is not None:
            log.info("%s: the upload interrupted earlier had arrived; not sent again", target.path)
        return found

    async def _plan(self, entry: JournalEntry, target: UploadTarget) -> _Plan:
        """Where the save goes, given the server's state of its document now."""
        if target.creating or target.aid is None:
            return _Plan(target)
        try:
            current = await self.remote.get_attachment(target.slug, target.aid)
        except NotFoundError:
            return self._recreate(target)
        base = target.base_version
        if base is None or current.version == base:
            if current.file_name != target.file_name:
                # Renamed on the server since this mount last saw it (a rename made here is
                # sent at once): the version keeps that name, as the server would otherwise
                # rename the document after the file name of its newest upload.
                target = dataclasses.replace(target, file_name=current.file_name)
            return _Plan(target)
        message = _conflict_message(base, current)
        if self.config.on_conflict == "newest-wins":
            log.warning("%s: %s; saved as the newest version (--on-conflict newest-wins)",
                        target.path, message)  # fmt: skip
            return _Plan(dataclasses.replace(target, base_version=current.version))
        return await self._copy_plan(entry, target, message, current)

    async def _copy_plan(
        self, entry: JournalEntry, target: UploadTarget, message: str, current: Attachment
    ) -> _Plan:
        """The save goes to a conflict copy next to the document (a name of its own, should
        the same file have had another conflict within the minute)."""
        user = _user_label(await self.remote.me())
        node = self.tree.key_nodes.get(parse_key(entry.key))
        taken = node.parent.children if node is not None and node.parent is not None else {}
        name = conflict_name(target.file_name, user)
        n = 2
        while name in taken:
            name = conflict_name(target.file_name, f"{user} {n}")
            n += 1
        copy = dataclasses.replace(
            target, op="create", aid=None, base_version=None, file_name=name,
            path=_sibling(target.path, name),
        )  # fmt: skip
        log.warning("%s: %s; the save is kept as %s", target.path, message, name)
        return _Plan(copy, conflict=message, server=current, original=target)

    @staticmethod
    def _raced(plan: _Plan, att: Attachment) -> bool:
        """Whether another version landed between the check of the server's newest version
        and our upload: ours did not become the version after its base."""
        t = plan.target
        return (
            plan.conflict is None
            and not t.creating
            and t.base_version is not None
            and att.id == t.aid
            and att.version > t.base_version + 1
        )

    async def _after_race(
        self, entry: JournalEntry, plan: _Plan, att: Attachment, progress: Callable[[int], None]
    ) -> tuple[_Plan, Attachment]:
        """Someone saved the same document while ours was being sent (two people saving at
        once): unless the versions in between are our own, ours is taken back and kept as a
        conflict copy, as if their version had been seen first."""
        target = plan.target
        assert target.aid is not None and target.base_version is not None
        me = await self.remote.me()
        versions = await self.remote.list_versions(target.slug, target.aid)
        # Versions after our save's base: another client's (an interrupted earlier attempt
        # of this very save would be ours: same size, this account).
        theirs = [
            v for v in versions
            if target.base_version < v.version < att.version
            and not (
                entry.attempts > 1
                and v.size == entry.size
                and settle.made_by(v.changed_by or v.creator, me)
            )
        ]  # fmt: skip
        if not theirs:
            return plan, att
        newest = theirs[-1]
        who = newest.changed_by.label if newest.changed_by else "someone"
        message = (
            f"conflict: based on v{target.base_version}, server had v{newest.version} by {who}"
        )
        if self.config.on_conflict == "newest-wins":
            log.warning("%s: %s; saved as the newest version (--on-conflict newest-wins)",
                        target.path, message)  # fmt: skip
            return plan, att
        try:
            await self.remote.delete_version(target.slug, target.aid, att.version)
            current = await self.remote.get_attachment(target.slug, target.aid)
        except ApiError as exc:
            log.warning("%s: %s; ours stays the newest version v%d (taking it back failed: %s)",
                        target.path, message, att.version, exc)  # fmt: skip
            return plan, att
        self.listings.meta.invalidate(("versions", target.slug, target.aid))
        copy_plan = await self._copy_plan(entry, target, message, current)
        copy = await self._send(entry, copy_plan.target, progress)
        assert copy is not None  # a create never answers "nothing to send"
        return copy_plan, copy

    def _recreate(self, target: UploadTarget) -> _Plan:
        log.warning(
            "%s was deleted on the server while it was edited here: saved as a new document",
            target.path,
        )
        assert target.aid is not None
        created = dataclasses.replace(target, op="create", aid=None, base_version=None)
        return _Plan(created, replaced_deleted=target.aid)

    async def _send(
        self, entry: JournalEntry, target: UploadTarget, progress: Callable[[int], None]
    ) -> Attachment | None:
        streamed = await self._finish_stream(entry, progress)
        if streamed is not None:
            return streamed
        if target.creating:
            return await self.remote.create_attachment(
                target.slug,
                target.pid,
                entry.data_path,
                file_name=target.file_name,
                content_type=target.content_type,
                classification=target.classification,
                tag=target.tag,
                folder_id=target.folder_id,
                progress=progress,
            )
        assert target.aid is not None
        try:
            return await self.remote.create_version(
                target.slug,
                target.aid,
                entry.data_path,
                file_name=target.file_name,
                content_type=target.content_type,
                progress=progress,
                known_version=target.base_version,
            )
        except NotFoundError:
            owner = self.tree.key_nodes.get(parse_key(entry.key))
            if owner is None or owner.removed:
                # Its document was deleted here meanwhile (its bytes, if they were moved to
                # another document, were saved again for it): nothing left to send.
                return None
            raise

    def _conflict_copy(self, entry: JournalEntry, att: Attachment, plan: _Plan) -> None:
        """The save went to a conflict copy: show the copy next to the document, and the
        document as the server has it (their version)."""
        assert plan.conflict is not None and plan.original is not None
        self.conflicts.add(att.id, plan.target.path, plan.conflict)
        node = self.tree.key_nodes.get(parse_key(entry.key))
        parent = node.parent if node is not None else None
        copy_node = None
        if parent is not None and plan.target.file_name not in parent.children:
            copy_node = self.tree.doc_file(parent, plan.target.file_name, att)
            self.tree.place(parent, plan.target.file_name, copy_node, overlay=False)
        # Saves of the same file queued after this one continue the copy, not their version.
        later = [e for e in self.journal.by_key(entry.key) if e.id != entry.id]
        for other in later:
            self.journal.rekey(other.id, str(DocKey(att.id)))
            meta = UploadTarget.from_meta(other.meta).to_meta()
            meta.update(op="version", aid=att.id, base_version=att.version,
                        file_name=att.file_name, path=plan.target.path)  # fmt: skip
            self.journal.update_meta(other.id, meta)
        if node is None:
            return
        local = node.local
        if (
            local is not None
            and copy_node is not None
            and local.journal_id in {e.id for e in later}
        ):
            copy_node.local, node.local = local, None
        elif local is not None and local.committed and local.journal_id == entry.id:
            node.local = None
        if plan.server is not None:
            self.tree.update_doc(node, plan.server)
            self.listings.put_doc(plan.original.slug, plan.original.pid, plan.server)
        self.tree.invalidate_inode(node.ino)

    def _now_a_document(self, entry: JournalEntry, att: Attachment) -> None:
        """Later saves of a file whose first upload created ``att`` become its versions."""
        for other in self.journal.by_key(entry.key):
            if other.id != entry.id:
                self.journal.rekey(other.id, str(DocKey(att.id)))
                meta = UploadTarget.from_meta(other.meta).to_meta()
                meta.update(op="version", aid=att.id, base_version=att.version)
                self.journal.update_meta(other.id, meta)

    def _adopt_answer(
        self, node: FileNode, entry: JournalEntry, att: Attachment, take: Take | None
    ) -> None:
        node.doc = att
        node.pending_attrs.clear()
        self.tree.set_key(node, DocKey(att.id))
        self.tree.doc_nodes[att.id] = node
        parent = node.parent
        if parent is not None and not node.local_only and parent.overlay.get(node.name) is node:
            # Shown from the listing from now on. (A backup of its document, `doc~`, stays a
            # local file under its own name while the document is hidden from its name.)
            del parent.overlay[node.name]
        self._rebase(node, entry, att)
        local = node.local
        if local is None or not local.committed or local.journal_id != entry.id:
            return  # a newer save is already on its way
        node.local = None
        # A copy of these bytes being made now (a write that began before this answer) builds
        # on the version they became, not on their own base (no conflict with our own save).
        local.base_version = att.version
        # Times do not jump when the upload ends (editors compare them to detect changes made
        # by others); they follow the server again when it has a newer version.
        node.saved_mtime = (node.generation, local.mtime)
        if take is not None and not local.direct_writes:
            # The kernel's pages of this file hold exactly the bytes just sent: keep them for
            # the next open; only the attributes (the server's times) change.
            node.kernel_key = content_key(att)
            self.tree.invalidate_attributes(node.ino)
        else:
            node.kernel_key = None
            self.tree.invalidate_inode(node.ino)

    def _rebase(self, node: FileNode, entry: JournalEntry, att: Attachment) -> None:
        """Saves made after this one build on it: the version it became is their base, not
        a version of someone else (no conflict with our own earlier save)."""
        for other in self.journal.by_key(str(node.key)):
            if other.id != entry.id and other.state != UPLOADING:
                self.journal.update_meta(other.id, {"base_version": att.version})
        local = node.local
        if local is not None and local.journal_id != entry.id:
            local.base_version = att.version


@dataclasses.dataclass
class _Plan:
    """Where one save goes."""

    target: UploadTarget
    conflict: str | None = None  # the conflict message, when it goes to a conflict copy
    server: Attachment | None = None  # then: the server's newest version of the document
    original: UploadTarget | None = None  # then: where it would have gone
    replaced_deleted: str | None = None  # re-created: the id of the document deleted meanwhile


def _conflict_message(base: int, theirs: Attachment) -> str:
    who = theirs.changed_by.label if theirs.changed_by else "someone"
    return f"conflict: based on v{base}, server had v{theirs.version} by {who}"


def _user_label(me: frozenset[str]) -> str:
    """A short name of this account for conflict copies: the local part of its email."""
    emails = sorted(n for n in me if "@" in n)
    if emails:
        return emails[0].split("@", 1)[0]
    return sorted(me)[0][:16] if me else "local"


def _sibling(path: str, name: str) -> str:
    return path.rsplit("/", 1)[0] + "/" + name if "/" in path else name
