"""The inode table and the indices of the tree: which node is which inode, which directory
node stands for which server object, which file node holds which document or upload target.

``Tree`` also carries the kernel's cache invalidation callbacks (set by the FUSE adapter) and
the small operations every part of the layer uses to place, move and remove nodes, so that the
indices and the kernel's view change together.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from bimfs.api.models import Attachment
from bimfs.config import Config
from bimfs.vfs.errors import FsError
from bimfs.vfs.keys import DocKey, NodeKey
from bimfs.vfs.nodes import DirKind, DirNode, FileNode, Node

ROOT_INO = 1


class InodeTable:
    """Maps inode numbers to nodes and hands out new numbers. Numbers are never reused while
    the mount lives, so the kernel never confuses an old inode with a new node."""

    ROOT = ROOT_INO

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._next = self.ROOT + 1

    def new_ino(self) -> int:
        ino = self._next
        self._next += 1
        return ino

    def add(self, node: Node) -> Node:
        self._nodes[node.ino] = node
        return node

    def get(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        return node

    def maybe(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def drop(self, ino: int) -> None:
        self._nodes.pop(ino, None)

    def __len__(self) -> int:
        return len(self._nodes)


class Tree:
    """The nodes of one mount and their indices."""

    def __init__(self, config: Config) -> None:
        self.inodes = InodeTable()
        self.started = time.time()
        if config.team:
            root = DirNode(ROOT_INO, "", None, DirKind.TEAM, slug=config.team, mtime=self.started)
        else:
            root = DirNode(ROOT_INO, "", None, DirKind.ROOT, mtime=self.started)
        root.lookups = 1
        self.root = root
        self.inodes.add(root)
        # ("team", slug) / ("project", slug, pid) / ("folder", slug, pid, fid) /
        # ("versions", slug, pid, fid) / ("vdir", slug, aid) -> the directory's node
        self.dir_nodes: dict[tuple[str, ...], DirNode] = {}
        self.doc_nodes: dict[str, FileNode] = {}  # document id -> the node showing it
        self.key_nodes: dict[NodeKey, FileNode] = {}  # upload target -> the node saving to it
        # Set by the FUSE adapter: forget the kernel's pages and attributes of an inode, its
        # attributes only, or a directory entry.
        self.invalidate_inode: Callable[[int], None] = lambda ino: None
        self.invalidate_attributes: Callable[[int], None] = lambda ino: None
        self.invalidate_entry: Callable[[int, str], None] = lambda parent, name: None

    # ---------------------------------------------------------------- finding

    def node(self, ino: int) -> Node:
        return self.inodes.get(ino)

    def dir(self, ino: int) -> DirNode:
        node = self.inodes.get(ino)
        if not isinstance(node, DirNode):
            raise FsError(errno.ENOTDIR)
        return node

    def file(self, ino: int) -> FileNode:
        node = self.inodes.get(ino)
        if not isinstance(node, FileNode):
            raise FsError(errno.EISDIR)
        return node

    # ---------------------------------------------------------------- making

    def dir_node(
        self, key: tuple[str, ...], name: str, parent: DirNode, kind: DirKind, **fields: Any
    ) -> DirNode:
        """The directory node for ``key``, created on first sight (stable inode)."""
        node = self.dir_nodes.get(key)
        if node is None or node.removed:
            node = DirNode(self.inodes.new_ino(), name, parent, kind, **fields)
            self.dir_nodes[key] = node
            self.inodes.add(node)
        return node

    def new_file(self, parent: DirNode | None, name: str, key: NodeKey) -> FileNode:
        node = FileNode(self.inodes.new_ino(), name, parent, key=key)
        node.created = time.time()
        self.inodes.add(node)
        self.key_nodes[key] = node
        return node

    def doc_file(self, parent: DirNode, name: str, doc: Attachment) -> FileNode:
        """A new node showing a server document."""
        node = self.new_file(parent, name, DocKey(doc.id))
        node.doc = doc
        self.doc_nodes[doc.id] = node
        return node

    def set_key(self, node: FileNode, key: NodeKey) -> None:
        """The file saves to another target from now on (its old key is forgotten)."""
        if self.key_nodes.get(node.key) is node:
            del self.key_nodes[node.key]
        node.key = key
        self.key_nodes[key] = node

    # ---------------------------------------------------------------- lookup counting

    def count_lookup(self, node: Node) -> None:
        """The kernel got a reference to ``node`` (a lookup, a create, a readdir entry)."""
        node.lookups += 1

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel dropped ``nlookup`` references; a removed node goes when none is left."""
        node = self.inodes.maybe(ino)
        if node is None or ino == ROOT_INO:
            return
        node.lookups = max(0, node.lookups - nlookup)
        if node.lookups == 0 and node.removed and not _open(node):
            self.inodes.drop(ino)

    def release_removed(self, node: FileNode) -> None:
        """The last handle of a removed file closed: it goes when the kernel forgot it."""
        if node.lookups == 0:
            self.inodes.drop(node.ino)

    # ---------------------------------------------------------------- changing

    def place(self, d: DirNode, name: str, node: FileNode, *, overlay: bool) -> None:
        """Show ``node`` as ``name`` in ``d`` (in the overlay: until its first upload)."""
        node.name, node.parent = name, d
        d.children[name] = node
        if overlay:
            d.overlay[name] = node

    def move(self, d1: DirNode, node: FileNode, d2: DirNode, new: str, *, overlay: bool) -> None:
        old = node.name
        if d1.children.get(old) is node:
            del d1.children[old]
        if d1.overlay.get(old) is node:
            del d1.overlay[old]
        self.place(d2, new, node, overlay=overlay)
        self.invalidate_entry(d1.ino, old)

    def unlink(self, d: DirNode, name: str, node: Node) -> None:
        """``node`` is no longer ``name`` in ``d`` (its local content is the caller's)."""
        if d.children.get(name) is node:
            del d.children[name]
        if d.overlay.get(name) is node:
            del d.overlay[name]
        self.mark_removed(node)
        self.invalidate_entry(d.ino, name)

    def mark_removed(self, node: Node) -> None:
        node.removed = True
        if (
            isinstance(node, FileNode)
            and node.doc is not None
            and self.doc_nodes.get(node.doc.id) is node
        ):
            del self.doc_nodes[node.doc.id]

    def replace_children(self, d: DirNode, children: dict[str, Node]) -> None:
        """A directory's entries after a listing; entries that went are invalidated."""
        kept = {id(node) for node in children.values()}
        for name, old in d.children.items():
            if children.get(name) is not old and old.parent is d and id(old) not in kept:
                if not (isinstance(old, FileNode) and old.doc is not None):
                    old.removed = old.removed or not isinstance(old, FileNode)
                self.invalidate_entry(d.ino, name)
        d.children = children

    def update_doc(self, node: FileNode, doc: Attachment) -> None:
        """The server's current state of a node's document (from a listing)."""
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


def _open(node: Node) -> bool:
    return isinstance(node, FileNode) and node.open_count > 0
