"""Background work of the filesystem layer (prefetches, commit retries, streamed uploads):
started in the mount's nursery once it runs, skipped before (in-process tests without it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class Background:
    """Starts tasks in the nursery given to ``attach``."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``fn(*args)``; False (nothing started) when not running."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True
