"""Errors raised by the cache layer itself.

Errors from the callables the cache is given (downloads, uploads) are passed through unchanged,
so the one errno table in ``bimfs.fuse`` keeps seeing the API client's own exceptions. Only the
decisions the cache makes on its own are reported with these classes::

    CacheError                        anything the cache layer decides by itself
    ├── ContentError                  a cached read could not be served
    │   ├── ContentTimeoutError       the bytes did not arrive before the read's deadline
    │   ├── ContentShortError         a download ended before the bytes it was asked for
    │   └── ContentSizeError          the server sent more (or other) bytes than the key's size
    ├── CacheFullError                the cache disk has no room for content needed whole
    ├── CacheClosedError              a handle was used after close, or the store is not running
    └── JournalError                  the upload journal could not do what was asked
        └── JournalEntryNotFoundError no journal entry has that id

Like the API client's errors, each class says through ``retryable`` whether trying the same
thing again later can help.
"""

from __future__ import annotations

import errno


class CacheError(Exception):
    """Base of every error the cache layer raises on its own."""

    retryable: bool = False


class ContentError(CacheError):
    """A read from the content store could not be served."""


class ContentTimeoutError(ContentError, TimeoutError):
    """The bytes a read needs did not arrive before its deadline (``read_timeout``)."""

    retryable = True


class ContentShortError(ContentError):
    """A download's body ended before the range it was asked for, without saying so itself."""

    retryable = True


class ContentSizeError(ContentError):
    """The server's content does not match the key: longer than ``key.size``, or another total.

    Trying again cannot help: the metadata the key was built from is out of date.
    """


class CacheFullError(CacheError, OSError):
    """The cache disk has no room for content that is needed whole (``ensure_complete``: a
    copy of a document to edit), even after evicting what could be evicted.

    An ``OSError`` with ``errno.ENOSPC``, like the disk's own error. Reads never raise it:
    content the cache cannot keep is passed through to the reader. Freeing space on the cache
    disk and trying again helps.
    """

    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class CacheClosedError(CacheError):
    """A closed handle was used, or the store's background task (``run``) is not running."""


class JournalError(CacheError):
    """The upload journal could not do what was asked."""


class JournalEntryNotFoundError(JournalError, KeyError):
    """No journal entry has the given id (it was completed or discarded meanwhile)."""

    def __str__(self) -> str:
        # KeyError's repr-style message would quote the text; one clear line reads better.
        return str(self.args[0]) if self.args else "journal entry not found"
