"""The one place where exceptions become errno values.

Every pyfuse3 handler goes through ``to_errno``; tests check that every ``ApiError`` and every
``CacheError`` subclass has an entry, so a new error class cannot silently become EIO.
"""

from __future__ import annotations

import errno

from bimfs.api import errors as api
from bimfs.cache import errors as cache_errors
from bimfs.vfs.errors import FsError

#: Most specific first: the first matching class wins.
API_ERRNO: tuple[tuple[type[BaseException], int], ...] = (
    (api.NotFoundError, errno.ENOENT),
    (api.ForbiddenError, errno.EACCES),
    (api.UnauthorizedError, errno.EACCES),
    (api.BadRequestError, errno.EINVAL),
    (api.ConflictError, errno.EBUSY),
    (api.PayloadTooLargeError, errno.EFBIG),
    (api.TooManyRequestsError, errno.EAGAIN),
    (api.ServerError, errno.EIO),
    (api.StatusError, errno.EIO),
    (api.IncompleteBodyError, errno.EIO),
    (api.TransportError, errno.EIO),
    (api.ApiTimeoutError, errno.ETIMEDOUT),
    (api.ProtocolError, errno.EPROTO),
    (api.AuthError, errno.EACCES),
    (api.UploadOutcomeUnknownError, errno.EIO),
    (api.ApiError, errno.EIO),
)

#: The cache layer's own decisions, most specific first.
CACHE_ERRNO: tuple[tuple[type[BaseException], int], ...] = (
    (cache_errors.ContentTimeoutError, errno.ETIMEDOUT),
    (cache_errors.ContentShortError, errno.EIO),
    (cache_errors.ContentSizeError, errno.EIO),
    (cache_errors.ContentError, errno.EIO),
    (cache_errors.CacheFullError, errno.ENOSPC),
    (cache_errors.CacheClosedError, errno.EIO),
    (cache_errors.JournalEntryNotFoundError, errno.EIO),
    (cache_errors.JournalError, errno.EIO),
    (cache_errors.CacheError, errno.EIO),
)

_TABLE = CACHE_ERRNO + API_ERRNO  # disjoint trees: the order between the two does not matter


def to_errno(exc: BaseException) -> int:
    """The errno a failed operation reports for ``exc``."""
    if isinstance(exc, BaseExceptionGroup):
        # A task group's failure: report its first real error.
        inner = next((e for e in exc.exceptions if not isinstance(e, BaseExceptionGroup)), None)
        if inner is None and exc.exceptions:
            return to_errno(exc.exceptions[0])
        return to_errno(inner) if inner is not None else errno.EIO
    if isinstance(exc, FsError):
        return exc.errno
    for cls, value in _TABLE:
        if isinstance(exc, cls):
            return value
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, TimeoutError):
        return errno.ETIMEDOUT
    return errno.EIO
