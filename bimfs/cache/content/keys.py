"""What identifies cached bytes, what the store needs to fetch them, and an open handle.

``ContentKey`` holds the document id, version, hash (Bimplus's change token) and size; an
entry's file name is the sha256 of all four, so no entry can ever serve another version's
bytes. ``Fetcher`` is how the filesystem layer hands the store its downloads (the API client's
``Download`` fits ``Download`` as is): this package never talks HTTP itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bimfs.cache.content.entries import Entry

__all__ = ["CachedFile", "ContentKey", "Download", "Fetcher"]


@dataclass(frozen=True)
class ContentKey:
    """The identity of one version's bytes. Two keys share an entry only if all fields match."""

    doc_id: str
    version: int
    hash: str
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("content size must not be negative")

    def digest(self) -> str:
        """sha256 (hex) of all four fields, length-prefixed so no two keys can collide."""
        h = hashlib.sha256()
        for part in (self.doc_id, str(self.version), self.hash, str(self.size)):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()


class Download(Protocol):
    """What a fetcher yields: the API client's download handle fits as is."""

    @property
    def start(self) -> int:
        """Where the body really starts (0 when the server ignored the range)."""
        ...

    @property
    def length(self) -> int | None:
        """The body's length, when announced."""
        ...

    @property
    def total_size(self) -> int | None:
        """The whole document's size, when announced."""
        ...

    @property
    def range_supported(self) -> bool:
        """Whether the server honoured the range."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body; raises an error with ``retryable`` true if it ends short."""
        ...


Fetcher = Callable[[int, int], AbstractAsyncContextManager[Download]]
"""``fetch(start, end)`` opens a download of bytes ``[start, end)`` (end exclusive)."""


class CachedFile:
    """One open view of a cache entry, from ``ContentStore.open`` until ``ContentStore.close``.

    While any view of an entry is open the entry is pinned: never evicted.
    """

    __slots__ = ("_closed", "_entry", "fetch", "key")

    def __init__(self, key: ContentKey, entry: Entry, fetch: Fetcher) -> None:
        self.key = key
        self.fetch = fetch
        self._entry = entry
        self._closed = False

    @property
    def size(self) -> int:
        """The content's size in bytes (``key.size``)."""
        return self.key.size

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<CachedFile {self.key.doc_id} v{self.key.version} {state}>"
