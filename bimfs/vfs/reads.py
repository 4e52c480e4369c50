"""Reading a file: local content (a save not uploaded yet, a temp file) from its file, a
server version through the content cache, which downloads only the bytes asked for and what
follows them (see ``bimfs.cache.content``).

A version's bytes are cached under ``ContentKey(id, version, hash, size)``: reads look them up
and a sent save is adopted under the same key, so the derivation lives in ``content_key``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import trio

from bimfs.api.errors import ApiError
from bimfs.api.models import Attachment
from bimfs.cache.content import CachedFile, ContentKey, ContentStore, Download, Fetcher
from bimfs.cache.errors import CacheFullError
from bimfs.vfs.handles import Handle
from bimfs.vfs.nodes import FileNode
from bimfs.vfs.online import Connectivity, Offline, unreachable
from bimfs.vfs.remote import Remote

T = TypeVar("T")

# While offline, how long a read may wait for the content cache (cached bytes come at once).
OFFLINE_CACHE_WAIT = 0.5
COPY_CHUNK = 1 << 20


def content_key(att: Attachment) -> ContentKey:
    """The content cache's key for a document version."""
    return ContentKey(att.id, att.version, att.hash, att.size)


class Reads:
    """Opens the cache for files and answers reads."""

    def __init__(self, remote: Remote, content: ContentStore, connectivity: Connectivity) -> None:
        self.remote = remote
        self.content = content
        self.connectivity = connectivity

    def key(self, node: FileNode) -> ContentKey | None:
        server = node.server
        return None if server is None else content_key(server)

    def fetcher(self, node: FileNode) -> Fetcher:
        """How the cache downloads the node's version: that exact version's URL, so a newer
        version on the server can never be mixed into the bytes."""
        server = node.server
        assert server is not None and node.parent is not None
        slug = node.parent.slug or ""
        aid, version = server.id, server.version

        def fetch(start: int, end: int) -> AbstractAsyncContextManager[Download]:
            return self.remote.open_download(slug, aid, version=version, start=start, end=end)

        return fetch

    def open_cached(self, node: FileNode) -> CachedFile | None:
        """The cache handle for the node's server bytes (nothing is downloaded yet); None when
        there is nothing to read from the server."""
        key = self.key(node)
        if key is None or key.size == 0:
            return None
        return self.content.open(key, self.fetcher(node))

    async def read(self, handle: Handle, offset: int, size: int) -> bytes:
        node = handle.node
        local = node.local
        if local is not None:
            if local.fd is not None:
                return os.pread(local.fd, size, offset)
            if handle.local_fd is None or handle.local_path != local.path:
                # Opened before the local copy existed, or a later save moved it: follow it.
                if handle.local_fd is not None:
                    os.close(handle.local_fd)
                handle.local_fd = os.open(local.path, os.O_RDONLY | os.O_CLOEXEC)
                handle.local_path = Path(local.path)
            return os.pread(handle.local_fd, size, offset)
        if handle.cached is None:
            handle.cached = self.open_cached(node)
            if handle.cached is None:
                return b""
        cached = handle.cached
        if not self.connectivity.online:
            data = self.content.read_cached(cached, offset, size)
            if data is None:
                raise Offline()  # at once: not cached, and the server cannot be reached
            return data
        return await self._from_server(lambda: self.content.read(cached, offset, size))

    async def _from_server(self, wait: Callable[[], Awaitable[T]]) -> T:
        """Wait for bytes that may have to come from the server: within the bound while
        online (then the mount goes offline), only as long as the cache needs while offline
        (what is cached is read at local speed, what is not fails at once)."""
        connectivity = self.connectivity
        limit = connectivity.bound if connectivity.online else OFFLINE_CACHE_WAIT
        try:
            with trio.fail_after(limit):
                return await wait()
        except trio.TooSlowError:
            connectivity.went_offline()
            raise Offline() from None
        except ApiError as exc:
            if unreachable(exc):
                connectivity.went_offline(exc)
                raise Offline() from exc
            raise

    async def copy_into(self, node: FileNode, fd: int) -> int:
        """Copy the node's whole server version into ``fd`` (downloading what the cache lacks);
        returns the size."""
        cached = self.open_cached(node)
        if cached is None:
            return 0
        try:
            try:
                if self.connectivity.online:
                    # A whole document may take long: only a stall (the store's own deadline)
                    # or the server going away stops it.
                    path = await self.content.ensure_complete(cached)
                else:
                    path = await self._from_server(lambda: self.content.ensure_complete(cached))
            except CacheFullError:
                # The cache cannot hold it as well as the copy: read it through instead.
                return await self._read_through(cached, fd)
            return copy_path(path, fd)
        finally:
            self.content.close(cached)

    async def _read_through(self, cached: CachedFile, fd: int) -> int:
        size = cached.key.size
        offset = 0
        while offset < size:
            want = min(COPY_CHUNK, size - offset)
            chunk = await self._from_server(
                functools.partial(self.content.read, cached, offset, want)
            )
            if not chunk:
                break
            write_all(fd, chunk, offset)
            offset += len(chunk)
        return offset


def copy_path(path: Path, dst: int) -> int:
    """Copy a file into ``dst`` from offset 0; returns the size."""
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return copy_fd(src, dst)
    finally:
        os.close(src)


def copy_fd(src: int, dst: int) -> int:
    """Copy all of the open file ``src`` into ``dst``, both from offset 0; returns the size."""
    total = 0
    while chunk := os.pread(src, COPY_CHUNK, total):
        write_all(dst, chunk, total)
        total += len(chunk)
    return total


def write_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset`` (a short write continues where it stopped)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
