"""Extended attributes: a document's Bimplus metadata, its sync state, and the mount's status.

On files: ``user.bimplus.*`` (id, version, hash, type, ..., tag, classification) and
``user.bimfs.state``; on team and project directories ``user.bimplus.id`` (teams also
``.slug``). Writable: ``user.bimplus.tag`` and ``.classification`` (sent at once, or with the
first upload of a new file), ``user.bimplus.release`` (``1`` shares the latest version). Any
other name fails with ``ENOTSUP`` unless set to the value it has, so tools that copy attributes
along skip them quietly. The mount root carries ``user.bimfs.status`` (and its pages) and takes
``user.bimfs.sync`` (see ``bimfs.vfs.status``). Files and directories answer
``user.bimfs.pinned`` (``1``/``0``, writable: pins and unpins them) and ``user.bimfs.pin`` (the
progress of the pin covering them, JSON); neither is listed, so tools that copy attributes
along never pin a copy (see ``bimfs.vfs.pins``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import time
from collections.abc import Callable
from typing import Any

from bimfs.api.errors import ApiError
from bimfs.cache.journal import FAILED, UPLOADING, Journal
from bimfs.cache.uploader import Uploader
from bimfs.config import Config
from bimfs.vfs import status as status_doc
from bimfs.vfs.background import Background
from bimfs.vfs.conflicts import Conflicts
from bimfs.vfs.errors import FsError
from bimfs.vfs.listing import Listings
from bimfs.vfs.nodes import DirKind, DirNode, FileNode, Node
from bimfs.vfs.pins import Pins
from bimfs.vfs.remote import Remote
from bimfs.vfs.rights import Rights
from bimfs.vfs.staging import Staging
from bimfs.vfs.tree import Tree

PREFIX = "user.bimplus."
STATE = "user.bimfs.state"
STATUS = "user.bimfs.status"  # on the mount root: JSON for `bimfs status` / `unmount`
SYNC = "user.bimfs.sync"  # on the mount root: writing it sends pending uploads now
PINNED = "user.bimfs.pinned"  # 1/0 on files and directories: `bimfs pin` / `unpin`
PIN = "user.bimfs.pin"  # JSON: the progress of the pin covering a node
OURS = (PREFIX, "user.bimfs.")
WRITABLE = ("tag", "classification", "release")  # under user.bimplus.


class Xattrs:
    """The extended attributes of every node."""

    def __init__(
        self,
        config: Config,
        remote: Remote,
        tree: Tree,
        listings: Listings,
        staging: Staging,
        rights: Rights,
        journal: Journal,
        uploader: Uploader,
        background: Background,
        conflicts: Conflicts,
        status: Callable[[], dict[str, Any]],
        pins: Pins,
    ) -> None:
        self.config = config
        self.remote = remote
        self.tree = tree
        self.listings = listings
        self.staging = staging
        self.rights = rights
        self.journal = journal
        self.uploader = uploader
        self.background = background
        self.conflicts = conflicts
        self.status = status
        self.pins = pins

    def state(self, node: FileNode) -> str:
        """``user.bimfs.state``: synced, pending, uploading, local, failed: <reason>, or
        conflict: <why> on a conflict copy."""
        unsaved = self.staging.unsaved.get(node)
        if unsaved is not None:
            return f"failed: not saved locally: {unsaved}"
        entries = self.journal.by_key(str(node.key))
        failed = [e for e in entries if e.state == FAILED]
        if failed:
            return f"failed: {failed[-1].reason}"
        if any(e.state == UPLOADING for e in entries):
            return "uploading"
        if node.local_only:
            return "local"
        if entries or (node.local is not None and node.local.dirty):
            return "pending"
        conflict = self.conflicts.message(node.doc.id) if node.doc is not None else None
        return conflict or "synced"

    def table(self, node: Node) -> dict[str, str]:
        """Every attribute of ``node`` with its value."""
        if isinstance(node, DirNode):
            return self._dir_table(node)
        assert isinstance(node, FileNode)
        out = {STATE: self.state(node)}
        server = node.server
        if server is None:
            out.update({PREFIX + k: v for k, v in node.pending_attrs.items()})
            return out
        out.update(
            {
                PREFIX + "id": server.id,
                PREFIX + "version": str(server.version),
                PREFIX + "hash": server.hash,
                PREFIX + "type": server.type,
                PREFIX + "attachment_type": server.attachment_type,
                PREFIX + "classification": server.classification,
                PREFIX + "tag": server.tag,
                PREFIX + "creator": server.creator.label if server.creator else "",
                PREFIX + "changed_by": server.changed_by.label if server.changed_by else "",
                PREFIX + "created": _iso(server.created_at),
                PREFIX + "changed": _iso(server.changed),
            }
        )
        return out

    def _dir_table(self, node: DirNode) -> dict[str, str]:
        out: dict[str, str] = {}
        if node is self.tree.root and node.kind is DirKind.ROOT:
            return out
        teams = self.listings.teams
        if node.entity_id is None and node.kind is DirKind.TEAM and node.slug in teams:
            node.entity_id = teams[node.slug].id  # the root of a --team mount
        if node.entity_id:
            out[PREFIX + "id"] = node.entity_id
        if node.kind is DirKind.TEAM and node.slug:
            out[PREFIX + "slug"] = node.slug
        return out

    async def _know_root_team(self, node: Node) -> None:
        root = self.tree.root
        if node is root and root.kind is DirKind.TEAM and root.entity_id is None:
            with contextlib.suppress(ApiError):
                await self.listings.get_teams()

    async def names(self, node: Node) -> list[str]:
        await self._know_root_team(node)
        return sorted(self.table(node))

    async def get(self, node: Node, name: str) -> bytes:
        if not name.startswith(OURS):
            # The kernel asks for security.capability before every write to a file, and `ls`
            # for ACLs and SELinux labels: namespaces this file system does not have.
            raise FsError(errno.ENODATA if name.startswith("user.") else errno.ENOTSUP)
        await self._know_root_team(node)
        if node is self.tree.root:
            if name == STATUS:
                return status_doc.encode(self.status())
            if (after := status_doc.page_after(name)) is not None:
                return status_doc.page(self.journal, self.uploader, after)
        if name == PINNED:
            return b"1" if self.pins.covering(node) is not None else b"0"
        if name == PIN:
            pin = self.pins.covering(node)
            if pin is None:
                raise FsError(errno.ENODATA)
            return json.dumps(self.pins.describe(pin)).encode()
        value = self.table(node).get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value.encode()

    async def set(self, node: Node, name: str, value: bytes) -> None:
        if node is self.tree.root and name == SYNC:
            # `bimfs unmount`: send every pending save now instead of after its quiet period,
            # for as long as it waits (the value), else ten drain timeouts.
            limit = status_doc.sync_duration(value, self.config.drain_timeout * 10)
            self.background.spawn(self.uploader.drain, limit)
            return
        text = value.decode("utf-8", errors="replace").strip("\x00")
        if name == PINNED:
            await self._set_pinned(node, text.strip())
            return
        short = name.removeprefix(PREFIX)
        writable = name.startswith(PREFIX) and short in WRITABLE
        if not writable or not isinstance(node, FileNode) or node.is_version_file:
            if name.startswith(OURS) and self.table(node).get(name) == text:
                return  # the value it has already: nothing to change
            # Read-only names (and other namespaces) are not supported for writing: tools that
            # copy extended attributes along (`mv` and `cp -a` between folders, `rsync -X`)
            # skip such an attribute quietly, where a permission error would be printed.
            raise FsError(errno.ENOTSUP, f"{name} cannot be set")
        self.rights.require_change()
        parent = node.parent
        assert parent is not None
        if node.doc is None:
            if node.local_only or short == "release":
                raise FsError(errno.ENOTSUP, f"{name} cannot be set on {node.path()}")
            # A new file not sent yet: the tag or classification goes with its upload.
            node.pending_attrs[short] = text
            await self.staging.retarget(node)
            return
        slug, aid = parent.slug or "", node.doc.id
        if short == "release":
            if text.strip() not in ("1", "true"):
                raise FsError(errno.EINVAL, "write 1 to release (share) the latest version")
            self.rights.require_share(node.doc, node.path())
            node.doc = await self.remote.release(slug, aid)
        else:
            self.rights.require_update(parent, node.doc, node.path())
            node.doc = await self.remote.update_attachment(slug, aid, **{short: text})
        self.listings.put_doc(slug, parent.pid or "", node.doc)
        self.tree.invalidate_attributes(node.ino)  # the server's time of the change

    async def _set_pinned(self, node: Node, text: str) -> None:
        if text in ("1", "true", "yes"):
            await self.pins.pin(node)
        elif text in ("0", "false", "no"):
            await self.pins.unpin(node)
        else:
            raise FsError(errno.EINVAL, f"write 1 or 0 to {PINNED}")

    async def remove(self, node: Node, name: str) -> None:
        raise FsError(errno.EACCES if name.startswith("user.bim") else errno.ENODATA)


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
