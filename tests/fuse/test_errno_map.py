"""The one errno mapping covers every API and cache error class."""

from __future__ import annotations

import errno
import inspect

from bimfs.api import errors as api
from bimfs.cache import errors as cache_errors
from bimfs.fuse.errno_map import API_ERRNO, CACHE_ERRNO, to_errno
from bimfs.vfs.errors import FsError


def _api_error_classes() -> list[type[api.ApiError]]:
    return [
        cls for _, cls in inspect.getmembers(api, inspect.isclass)
        if issubclass(cls, api.ApiError)
    ]  # fmt: skip


def _cache_error_classes() -> list[type[cache_errors.CacheError]]:
    return [
        cls for _, cls in inspect.getmembers(cache_errors, inspect.isclass)
        if issubclass(cls, cache_errors.CacheError)
    ]  # fmt: skip


def test_every_api_error_class_has_its_own_entry() -> None:
    mapped = {cls for cls, _ in API_ERRNO}
    missing = [cls.__name__ for cls in _api_error_classes() if cls not in mapped]
    assert not missing, f"no errno for {missing}"


def test_every_cache_error_class_has_its_own_entry() -> None:
    mapped = {cls for cls, _ in CACHE_ERRNO}
    missing = [cls.__name__ for cls in _cache_error_classes() if cls not in mapped]
    assert not missing, f"no errno for {missing}"
    for cls, value in CACHE_ERRNO:
        assert to_errno(cls("x")) == value, cls


def test_specific_errnos() -> None:
    assert to_errno(api.NotFoundError(404)) == errno.ENOENT
    assert to_errno(api.ForbiddenError(403)) == errno.EACCES
    assert to_errno(api.ApiTimeoutError("slow")) == errno.ETIMEDOUT
    assert to_errno(api.ServerError(503)) == errno.EIO
    assert to_errno(api.IncompleteBodyError("short")) == errno.EIO
    assert to_errno(FsError(errno.EXDEV)) == errno.EXDEV
    assert to_errno(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert to_errno(RuntimeError("bug")) == errno.EIO
    timeouts = [
        cls for _, cls in inspect.getmembers(cache_errors, inspect.isclass)
        if cls.__name__ == "ContentTimeoutError"
    ]  # fmt: skip
    assert timeouts and to_errno(timeouts[0]("late")) == errno.ETIMEDOUT


def test_most_specific_first() -> None:
    for table in (API_ERRNO, CACHE_ERRNO):
        seen: list[type[BaseException]] = []
        for cls, _ in table:
            assert not any(issubclass(cls, earlier) for earlier in seen), cls
            seen.append(cls)
