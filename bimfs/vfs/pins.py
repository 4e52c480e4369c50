"""Pins: documents kept downloaded and current for offline work (``bimfs pin PATH``).

A pin names a path of the account (a team, project, folder or document). Every document under
it (its latest version) is downloaded into the content cache in the background, is never
evicted while pinned (``ContentStore.keep``) and counts in the cache budget: a pin whose
documents, with those pinned already, would not fit ``--cache-size`` is refused (``ENOSPC``).
The pins are rescanned every ``--pin-refresh`` (one listing of each pinned directory per
round); a new version seen on the server is fetched, and the version it replaces may be evicted
again.

Pins are kept in ``<cache-dir>/pins.json`` as account paths (``team/project/folder``, the team
included also on a ``--team`` mount), so they outlive the mount. The mount reports them through
extended attributes (``bimfs.vfs.xattrs``): ``user.bimfs.pinned`` (``1``/``0``, writable) and
``user.bimfs.pin`` (the progress of the pin covering a node, JSON), and in its status.

Nothing here fails the mount: errors of a round (the server unreachable, a download refused)
are recorded on the pin, shown in the status, and retried at the next round.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from bimfs.cache.content import ContentKey, ContentStore, Fetcher
from bimfs.config import Config
from bimfs.vfs.background import Background
from bimfs.vfs.errors import FsError
from bimfs.vfs.listing import Listings
from bimfs.vfs.nodes import DirKind, DirNode, FileNode, Node
from bimfs.vfs.online import Connectivity, unreachable
from bimfs.vfs.reads import Reads, content_key
from bimfs.vfs.tree import Tree

log = logging.getLogger(__name__)

PINS_FILE = "pins.json"
# How many pins the status summary lists (each is a few hundred bytes at most).
STATUS_PINS = 100


@dataclass
class PinnedFile:
    """One document version a pin keeps: its cache key and how to download it."""

    key: ContentKey
    digest: str
    fetch: Fetcher
    path: str


@dataclass
class Pin:
    """One pinned path and what its last scan found."""

    path: str  # the account path: team/project/...
    files: dict[str, PinnedFile] = field(default_factory=dict)  # digest -> file
    scanned: float | None = None  # wall clock of the last complete scan
    error: str | None = None
    fetching: str | None = None  # the path of the document being downloaded


class Pins:
    """The pins of one cache dir and the background task that keeps them."""

    def __init__(
        self,
        config: Config,
        tree: Tree,
        listings: Listings,
        reads: Reads,
        content: ContentStore,
        connectivity: Connectivity,
        background: Background,
    ) -> None:
        self.config = config
        self.tree = tree
        self.listings = listings
        self.reads = reads
        self.content = content
        self.connectivity = connectivity
        self.background = background
        self.file = config.cache_dir / PINS_FILE
        self.interval = max(1.0, config.pin_refresh)
        self.pins: dict[str, Pin] = {path: Pin(path) for path in self._load()}
        self._wake = trio.Event()
        self._running = False

    # ------------------------------------------------------------------ persistence

    def _load(self) -> list[str]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("pin list %s unreadable (%s); pin again what you need", self.file, exc)
            return []
        pins = data.get("pins") if isinstance(data, dict) else None
        return [p for p in pins if isinstance(p, str)] if isinstance(pins, list) else []

    def _save(self) -> None:
        """Write the pin list atomically (write, fsync, rename)."""
        tmp = self.file.with_name(PINS_FILE + ".tmp")
        data = json.dumps({"pins": sorted(self.pins)}, indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.file)

    # ------------------------------------------------------------------ paths

    def account_path(self, node: Node) -> str:
        """``team/project/...`` of a node (the root of a ``--team`` mount is its team)."""
        parts = node.path().strip("/")
        root = self.tree.root
        if root.kind is DirKind.TEAM and root.slug:
            return f"{root.slug}/{parts}" if parts else root.slug
        return parts

    def mount_path(self, account_path: str) -> str:
        """The path of an account path in the mount (for messages and the status)."""
        root = self.tree.root
        rel = account_path
        if root.kind is DirKind.TEAM and root.slug:
            rel = account_path.removeprefix(root.slug).lstrip("/")
        return str(self.config.mountpoint / rel) if rel else str(self.config.mountpoint)

    def covering(self, node: Node) -> Pin | None:
        """The pin of ``node`` itself or of its nearest pinned ancestor."""
        path = self.account_path(node)
        while True:
            pin = self.pins.get(path)
            if pin is not None:
                return pin
            if not path:
                return None
            path = path.rpartition("/")[0]

    async def _resolve(self, path: str) -> Node | None:
        root = self.tree.root
        parts = [p for p in path.split("/") if p]
        if root.kind is DirKind.TEAM:
            if not parts or parts[0] != root.slug:
                return None  # a pin of another team: kept for the mounts that show it
            parts = parts[1:]
        node: Node | None = root
        for part in parts:
            if not isinstance(node, DirNode):
                return None
            node = await self.listings.entry(node, part)
        return node

    # ------------------------------------------------------------------ pin, unpin

    @staticmethod
    def _check_pinnable(node: Node) -> None:
        if isinstance(node, FileNode):
            if node.is_version_file:
                raise FsError(errno.EINVAL, "version files are not pinned: pin the document")
            return
        assert isinstance(node, DirNode)
        if node.kind in (DirKind.VERSIONS, DirKind.VDIR):
            raise FsError(errno.EINVAL, "versions/ is not pinned: pin the documents")

    async def pin(self, node: Node) -> None:
        """Pin ``node``: refused with ``ENOSPC`` when its documents and those pinned already
        do not fit the cache budget; the downloads then run in the background."""
        self._check_pinnable(node)
        path = self.account_path(node)
        if path in self.pins:
            return
        files = await self._scan(node)
        kept = self._kept_files()
        kept.update(files)
        need = sum(f.key.size for f in kept.values())
        if need > self.config.cache_size:
            where = self.mount_path(path)
            raise FsError(
                errno.ENOSPC,
                f"pinning {where} would keep {need} bytes, more than the cache budget "
                f"({self.config.cache_size} bytes, --cache-size)",
            )
        pin = Pin(path, files=files, scanned=time.time())
        self.pins[path] = pin
        self._save()
        self._keep()
        log.info("pinned %s: %d documents, %d bytes", self.mount_path(path), len(files), need)
        self._wake.set()

    async def unpin(self, node: Node) -> None:
        """Unpin ``node`` (pinned itself); its documents may be evicted again."""
        path = self.account_path(node)
        if path not in self.pins:
            pin = self.covering(node)
            if pin is not None:
                raise FsError(
                    errno.EINVAL, f"{node.path()} is pinned through {self.mount_path(pin.path)}"
                )
            return
        del self.pins[path]
        self._save()
        self._keep()
        log.info("unpinned %s", self.mount_path(path))

    # ------------------------------------------------------------------ scanning, keeping

    async def _scan(self, node: Node) -> dict[str, PinnedFile]:
        """Every server document under ``node`` (latest versions), by cache digest."""
        found: dict[str, PinnedFile] = {}

        def add(f: FileNode) -> None:
            if f.doc is None or f.local_only or f.is_version_file or f.local is not None:
                return  # nothing on the server, or its content is on this machine already
            if not f.doc.rights.download:
                return  # not readable by this user: there is nothing to keep
            key = content_key(f.doc)
            if key.size == 0:
                return
            digest = key.digest()
            found[digest] = PinnedFile(key, digest, self.reads.fetcher(f), f.path())

        async def walk(d: DirNode) -> None:
            children = await self.listings.children(d)
            for child in list(children.values()):
                if isinstance(child, FileNode):
                    add(child)
                elif isinstance(child, DirNode) and child.kind not in (
                    DirKind.VERSIONS, DirKind.VDIR,
                ):  # fmt: skip
                    await walk(child)

        if isinstance(node, FileNode):
            add(node)
        elif isinstance(node, DirNode):
            await walk(node)
        return found

    def _kept_files(self) -> dict[str, PinnedFile]:
        kept: dict[str, PinnedFile] = {}
        for pin in self.pins.values():
            kept.update(pin.files)
        return kept

    def _keep(self) -> None:
        self.content.keep(frozenset(self._kept_files()))

    # ------------------------------------------------------------------ the background task

    def start(self) -> None:
        """Start keeping the pins (once the mount's nursery runs)."""
        if not self._running and self.background.spawn(self._run):
            self._running = True

    async def _run(self) -> None:
        self._keep()
        while True:
            self._wake = trio.Event()
            try:
                await self._round()
            except Exception as exc:  # a pin must never take the mount down
                log.warning("keeping pinned documents: %s", exc)
            with trio.move_on_after(self.interval):
                await self._wake.wait()

    async def _round(self) -> None:
        """Rescan every pin, keep what they hold now, download what is missing."""
        for pin in list(self.pins.values()):
            try:
                node = await self._resolve(pin.path)
                if node is None:
                    pin.error = "not found in this mount"
                    continue
                files = await self._scan(node)
            except Exception as exc:
                pin.error = _describe(exc)
                if unreachable(exc):
                    break  # offline: keep what each pin holds until the server answers
                continue
            if self.pins.get(pin.path) is pin:
                pin.files, pin.scanned, pin.error = files, time.time(), None
        self._keep()
        for pin in list(self.pins.values()):
            if not await self._fetch(pin):
                break

    async def _fetch(self, pin: Pin) -> bool:
        """Download the pin's missing documents; False when the server cannot be reached."""
        for f in list(pin.files.values()):
            if self.pins.get(pin.path) is not pin or not self.connectivity.online:
                return self.connectivity.online
            if self.content.is_complete(f.key):
                continue
            pin.fetching = f.path
            cached = self.content.open(f.key, f.fetch)
            try:
                await self.content.ensure_complete(cached)
            except Exception as exc:
                pin.error = f"{f.path}: {_describe(exc)}"
                if unreachable(exc):
                    self.connectivity.went_offline(exc)
                    return False
                log.warning("pinned %s not downloaded: %s", f.path, pin.error)
            finally:
                pin.fetching = None
                self.content.close(cached)
        return True

    # ------------------------------------------------------------------ reporting

    def describe(self, pin: Pin) -> dict[str, Any]:
        """A pin's progress: documents and bytes, how much of them is cached, and whether
        it is complete (every document of its last scan cached)."""
        files = list(pin.files.values())
        cached = [self.content.cached_bytes(f.key, f.digest) for f in files]
        done = sum(1 for f, n in zip(files, cached, strict=True) if n == f.key.size)
        total = sum(f.key.size for f in files)
        return {
            "path": self.mount_path(pin.path),
            "files": len(files),
            "bytes": total,
            "cached_files": done,
            "cached_bytes": sum(cached),
            "complete": pin.scanned is not None and done == len(files),
            "fetching": pin.fetching,
            "error": pin.error,
            "checked": _iso(pin.scanned),
        }

    def status(self) -> list[dict[str, Any]]:
        """Every pin (the first ``STATUS_PINS``), for ``bimfs status``."""
        return [self.describe(p) for p in sorted(self.pins.values(), key=lambda p: p.path)][
            :STATUS_PINS
        ]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _iso(ts: float | None) -> str | None:
    if ts is None or math.isnan(ts):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
