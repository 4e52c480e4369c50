"""What ``stat`` and ``statfs`` show.

Files: the local content's size and time while there is some, else the server version's (the
time a save had before its upload is kept until the server has a newer version); times set by
``utimes`` hold until the content changes. Directories: the project's time, 2 + their listed
subdirectories as link count (1, "not counted", before their first listing). ``statfs``: the
teams' storage quota where every shown team has one, else a large plausible size.
"""

from __future__ import annotations

import contextlib
import math
import time

from bimfs.api.errors import ApiError
from bimfs.api.models import Team
from bimfs.config import Config
from bimfs.vfs.known import ProjectListing
from bimfs.vfs.listing import Listings
from bimfs.vfs.names import NAME_MAX
from bimfs.vfs.nodes import Attr, DirKind, DirNode, FileNode, Node
from bimfs.vfs.online import Offline
from bimfs.vfs.rights import Rights

# Below this many seconds of freshness left, the default timeout is as good.
MIN_TTL = 1.0
UNKNOWN_QUOTA = 1 << 50  # 1 PiB: "a large plausible size"
BLOCK = 4096


class Attributes:
    """Node attributes and filesystem figures."""

    def __init__(self, config: Config, rights: Rights, listings: Listings) -> None:
        self.config = config
        self.rights = rights
        self.listings = listings

    def of(self, node: Node) -> Attr:
        """The attributes of a node as ``stat`` shows them."""
        uid, gid = self.config.uid, self.config.gid
        if isinstance(node, DirNode):
            mode = self.rights.dir_mode(node)
            size, mtime, nlink = 0, node.mtime, self._links(node)
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
            mode = self.rights.file_mode(node)
            nlink = 0 if node.removed else 1  # unlinked while open
        ctime, atime = mtime, None
        times = node.times_set
        if times is not None and times[0] == node.generation:
            atime = times[1]
            mtime = mtime if times[2] is None else times[2]
        ttl = self._ttl(node) if isinstance(node, FileNode) else None
        return Attr(node.ino, mode, size, mtime, ctime, nlink, uid, gid, atime, ttl)

    def _ttl(self, node: FileNode) -> float | None:
        """How long the kernel may keep a document's attributes: while the listing they come
        from is fresh, its document can change only through this mount, which tells the kernel
        of every change it makes (so ``ls -l`` and ``stat`` of a large project ask for nothing
        again until then). Default for everything else (content here, open for writing)."""
        parent = node.parent
        if node.local is not None or node.writers or node.local_only or node.doc is None:
            return None
        if node.version is not None or parent is None:
            return None
        listing = parent.listing_token
        if not isinstance(listing, ProjectListing) or listing.docs.get(node.doc.id) is not node.doc:
            return None
        left = listing.fetched_at + self.config.dir_ttl - time.time()
        return left if left > MIN_TTL else None

    def _links(self, d: DirNode) -> int:
        """2 + the subdirectories it lists (``versions/`` only when listed); 1 ("not
        counted", as tools read it) while its entries are not known yet."""
        if d.listing_token is None and not d.children:
            return 1
        hidden = None if self.config.show_versions else DirKind.VERSIONS
        return 2 + sum(
            1 for c in d.children.values() if isinstance(c, DirNode) and c.kind is not hidden
        )

    @staticmethod
    def set_times(node: Node, atime: float | None, mtime: float | None) -> None:
        """``utimes``: shown until the content changes (never sent to the server)."""
        old = node.times_set
        if old is None or old[0] != node.generation:
            old = (node.generation, None, None)
        node.times_set = (
            node.generation,
            old[1] if atime is None else atime,
            old[2] if mtime is None else mtime,
        )

    async def statfs(self) -> dict[str, int]:
        total, used = UNKNOWN_QUOTA, 0
        team_slug = self.config.team
        teams: list[Team] = []
        with contextlib.suppress(ApiError, Offline):
            teams = await self.listings.get_teams()
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
            "namemax": NAME_MAX,
        }
