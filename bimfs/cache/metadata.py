"""A small TTL cache for API answers, with single-flight loading and negative caching.

``get`` returns a fresh value without calling anything; on a miss exactly one task runs the
loader while every other task asking for the same key waits for its outcome (value or
exception), so 100 concurrent ``ls`` of one directory cost one request. Errors the caller calls
``negative`` (e.g. 404) are remembered for ``negative_ttl`` seconds.

Built on cachetools containers used directly (``TTLCache`` for fresh values and errors,
``LRUCache`` for the last known value behind ``peek``); never ``@cached`` on a coroutine, which
would cache the coroutine object rather than its result.

Invalidation is race-free: ``invalidate``/``put``/``clear`` detach a load that is in flight, so
its (possibly older) result is handed to the tasks already waiting for it but never stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio
from cachetools import LRUCache, TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _never(exc: BaseException) -> bool:
    return False


class _Flight(Generic[V]):
    """One load in progress; waiters block on ``done``."""

    __slots__ = ("done", "error", "has_value", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.has_value = False
        self.value: V | None = None
        self.error: BaseException | None = None


class TtlCache(Generic[K, V]):
    """Values by key, fresh for ``ttl`` seconds of ``timer``; at most ``maxsize`` of them."""

    def __init__(
        self,
        *,
        maxsize: int,
        ttl: float,
        negative_ttl: float = 2.0,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._fresh: TTLCache[K, V] = TTLCache(maxsize, ttl, timer=timer)
        self._errors: TTLCache[K, BaseException] = TTLCache(
            maxsize, max(negative_ttl, 0.0), timer=timer
        )
        self._negative = negative_ttl > 0
        self._last: LRUCache[K, V] = LRUCache(maxsize)
        self._flights: dict[K, _Flight[V]] = {}

    async def get(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        negative: Callable[[BaseException], bool] = _never,
    ) -> V:
        """The fresh value of ``key``, loading it (once, whoever asks) when missing.

        Raises what the loader raised; an error for which ``negative`` is true is raised again
        without loading for ``negative_ttl`` seconds. If the loading task is cancelled, one of
        the waiting tasks loads instead.
        """
        while True:
            try:
                return self._fresh[key]
            except KeyError:
                pass
            error = self._errors.get(key)
            if error is not None:
                # Drop the stored traceback so repeated raises do not keep growing it.
                raise error.with_traceback(None)
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.has_value:
                return flight.value  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
            # The loader was cancelled: try again (one waiter becomes the loader).
        flight = _Flight()
        self._flights[key] = flight
        try:
            value = await load()
        except Exception as exc:
            flight.error = exc
            if self._negative and self._flights.get(key) is flight and negative(exc):
                self._errors[key] = exc
            raise
        else:
            flight.value = value
            flight.has_value = True
            if self._flights.get(key) is flight:
                self._fresh[key] = value
                self._last[key] = value
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def peek(self, key: K) -> V | None:
        """The last value known for ``key``, fresh or expired (or invalidated); never loads."""
        return self._last.get(key)

    def is_fresh(self, key: K) -> bool:
        """True if ``get`` would answer without loading."""
        return key in self._fresh

    def put(self, key: K, value: V) -> None:
        """Store a value learnt otherwise (e.g. from a write's answer) as fresh."""
        self._flights.pop(key, None)
        self._errors.pop(key, None)
        self._fresh[key] = value
        self._last[key] = value

    def invalidate(self, key: K) -> None:
        """The next ``get`` loads again; ``peek`` still shows the last known value."""
        self._flights.pop(key, None)
        self._errors.pop(key, None)
        self._fresh.pop(key, None)

    def discard(self, key: K) -> None:
        """Forget ``key`` entirely, ``peek`` included (e.g. the object was deleted)."""
        self.invalidate(key)
        self._last.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._flights.clear()
        self._errors.clear()
        self._fresh.clear()
        self._last.clear()
