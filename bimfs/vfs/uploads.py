"""Sending saves: what the uploader does with a journal entry, and streaming a large file while
it is still being written.

``Uploads.upload`` is the uploader's callable (``bimfs.cache.uploader``): it sends one journal
entry, then applies the server's answer to the tree, the cached listing and the content cache.
The file may have moved on while its upload ran (renamed, deleted, turned into a temp file, its
bytes moved to another document): the answer is reconciled with what the file is now.

A large file written sequentially from empty (``cp``, an export) can travel to Bimplus while the
program is still writing it (``EagerUpload``): the request body follows the staging file as it
grows and is completed only when the uploader takes the entry it was made for, so the server
stores exactly one version, of the final content, after the close. A write elsewhere than at the
end, a truncate, a rename, a delete or a long pause abandons the stream (the server discards an
incomplete body) and the entry is uploaded the ordinary way: the journal stays the single source
of truth.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bimfs.api.errors import NotFoundError
from bimfs.api.models import Attachment
from bimfs.api.multipart import GrowingSource
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import UPLOADING, Journal, JournalEntry
from bimfs.cache.uploader import Uploader
from bimfs.config import Config
from bimfs.vfs.background import Background
from bimfs.vfs.errors import describe
from bimfs.vfs.keys import DocKey, UploadTarget, parse_key
from bimfs.vfs.listing import Listings
from bimfs.vfs.nodes import FileNode, LocalData
from bimfs.vfs.reads import content_key
from bimfs.vfs.remote import Remote
from bimfs.vfs.rights import Rights
from bimfs.vfs.staging import target_of
from bimfs.vfs.tree import Tree

log = logging.getLogger(__name__)

#: Files smaller than this are not worth a second request path.
EAGER_MIN_SIZE = 8 << 20
#: A stream whose file has not grown for the write-back delay plus this long is given up.
EAGER_IDLE_SLACK = 30.0

Take = Callable[[Path], bool]


class EagerUpload:
    """One streaming upload of one staging file."""

    def __init__(self, key: str, target: UploadTarget, path: Path, idle_limit: float) -> None:
        self.key = key
        self.target = target
        self.source = GrowingSource(path)
        self.idle_limit = idle_limit
        self.result: Attachment | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        self.sent = 0
        self._progress: Callable[[int], None] | None = None
        self._scope = trio.CancelScope()
        self.started = self._last_growth = trio.current_time()
        self._finishing = False

    def matches(self, entry: JournalEntry) -> bool:
        """True when a journal entry is for exactly what this stream is sending."""
        return entry.key == self.key and self.target.same_request(
            UploadTarget.from_meta(entry.meta)
        )

    def status(self) -> dict[str, Any] | None:
        """This stream as a ``bimfs status`` transfer while the file is still being written;
        None once it is finishing (the uploader then reports the journal entry itself)."""
        if self._finishing or self.done.is_set():
            return None
        elapsed = trio.current_time() - self.started
        return {
            "id": None,
            "key": self.key,
            "name": self.target.file_name,
            "path": self.target.path,
            "state": "streaming",
            "sent": self.sent,
            "size": self.source.size,
            "rate": self.sent / elapsed if elapsed > 0 else 0.0,
            "reason": None,
            "attempts": 1,
            "next_attempt": None,
        }

    def grew(self, size: int) -> None:
        self._last_growth = trio.current_time()
        self.source.grew(size)

    def abort(self) -> None:
        """Abandon the stream (the server discards the incomplete body)."""
        self._scope.cancel()

    def _on_progress(self, sent: int) -> None:
        self.sent = sent
        if self._progress is not None:
            self._progress(sent)

    async def run(self, remote: Remote) -> None:
        """Send until finished, aborted or idle for too long. Never raises."""
        t = self.target
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_idle)
                    self.result = await remote.stream_upload(
                        t.slug,
                        self.source,
                        file_name=t.file_name,
                        content_type=t.content_type,
                        pid=t.pid if t.creating else None,
                        folder_id=t.folder_id if t.creating else None,
                        aid=None if t.creating else t.aid,
                        known_version=t.base_version,
                        progress=self._on_progress,
                    )
                    nursery.cancel_scope.cancel()
                    log.debug("streamed upload of %s stored", t.path)
            except Exception as exc:  # the journal entry is uploaded the ordinary way instead
                self.error = exc
                log.debug("streaming upload of %s given up: %s", t.path, exc)
        self.done.set()

    async def _watch_idle(self) -> None:
        while True:
            await trio.sleep(1.0)
            idle = trio.current_time() - self._last_growth
            if not self._finishing and idle > self.idle_limit:
                log.debug("streaming upload of %s idle for %.0f s", self.target.path, idle)
                self.abort()
                return

    async def finish(self, size: int, progress: Callable[[int], None]) -> Attachment | None:
        """Complete the body at ``size`` bytes and wait for the server's answer; None when the
        stream failed or was abandoned (the caller then uploads the entry itself)."""
        self._finishing = True
        log.debug("finishing streamed upload of %s at %d bytes", self.target.path, size)
        self._progress = progress
        progress(self.sent)
        if self.source.size > size:
            self.abort()
        else:
            self.source.finish(size)
        await self.done.wait()
        return self.result


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
    ) -> None:
        self.config = config
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

    async def upload(self, entry: JournalEntry, progress: Callable[[int], None]) -> Take | None:
        """Send one journal entry (called by the uploader, retried by it). Returns what the
        journal should do with the sent content: become the new version's cache entry."""
        target = UploadTarget.from_meta(entry.meta)
        att = await self._send(entry, target, progress)
        if att is None:
            return None
        slug, pid = target.slug, target.pid
        key = parse_key(entry.key)
        node = self.tree.key_nodes.get(key)
        self.listings.put_version(slug, att)
        self.listings.put_doc(slug, pid, att, target.folder_id if target.creating else None)
        cache_key = content_key(att)
        take = functools.partial(self.content.adopt, cache_key) if att.size == entry.size else None
        if target.creating and (
            node is None or node.deleted or node.removed or node.local_only or node.key != key
        ):
            # Deleted, made a temp file, or its bytes became another document's version while
            # this upload ran: the document it made is nobody's.
            with contextlib.suppress(NotFoundError):
                await self.remote.delete_attachment(slug, att.id)
            self.listings.drop_doc(slug, pid, att.id)
            return None
        if node is None or node.key != key:
            return take  # a version of a document whose file moved on to another identity
        if target.creating:
            self._now_a_document(entry, att)
            wanted = node.name
        else:
            wanted = node.doc.file_name if node.doc is not None else att.file_name
        if att.file_name != wanted:
            # Renamed while this upload ran (the server names a document after the file name
            # of its newest upload): the document takes the name it has here now.
            att = await self.remote.update_attachment(slug, att.id, file_name=wanted)
            self.listings.put_doc(slug, pid, att)
        self._adopt_answer(node, entry, att, take)
        return take

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
        if parent is not None and parent.overlay.get(node.name) is node:
            del parent.overlay[node.name]
        local = node.local
        if local is None or not local.committed or local.journal_id != entry.id:
            return  # a newer save is already on its way
        node.local = None
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
