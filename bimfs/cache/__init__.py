"""bimfs.cache: what bimfs keeps on this machine.

- ``content``: document bytes on disk, fetched lazily by ranges, bounded by a byte budget.
- ``journal`` and ``uploader``: saved content waiting for (or being sent by) a background upload.
- ``metadata``: a TTL cache with single-flight loading for API answers.

This layer never talks HTTP itself: downloads and uploads are callables passed in by the
filesystem layer, so ``bimfs.api`` and ``httpx`` are never imported here.
"""

from bimfs.cache.content import CachedFile, ContentKey, ContentStore, Download, Fetcher
from bimfs.cache.errors import (
    CacheClosedError,
    CacheError,
    CacheFullError,
    ContentError,
    ContentShortError,
    ContentSizeError,
    ContentTimeoutError,
    JournalEntryNotFoundError,
    JournalError,
)
from bimfs.cache.journal import Journal, JournalEntry
from bimfs.cache.metadata import TtlCache
from bimfs.cache.uploader import Uploader, UploadFn

__all__ = [
    "CacheClosedError",
    "CacheError",
    "CacheFullError",
    "CachedFile",
    "ContentError",
    "ContentKey",
    "ContentShortError",
    "ContentSizeError",
    "ContentStore",
    "ContentTimeoutError",
    "Download",
    "Fetcher",
    "Journal",
    "JournalEntry",
    "JournalEntryNotFoundError",
    "JournalError",
    "TtlCache",
    "UploadFn",
    "Uploader",
]
