"""Giving memory back after a large listing.

Parsing a listing of many thousand documents takes several kilobytes per document for a
moment (the answer, its parsed JSON); what the listing keeps is much less. The C allocator
keeps the freed memory for later unless asked to return it, so after a large listing the mount
asks (``malloc_trim``, glibc only; elsewhere nothing happens).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

LARGE_LISTING = 2000
"""Listings of at least this many entries are followed by giving memory back."""


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_trim = _load_trim()


def give_back_memory() -> None:
    """Return the C heap's free pages to the system (a few milliseconds)."""
    if _trim is None:
        return
    start = time.perf_counter()
    _trim(0)
    log.debug("gave free memory back in %.1f ms", (time.perf_counter() - start) * 1e3)
