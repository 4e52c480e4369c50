"""TtlCache: single flight, expiry, negative caching, invalidation races."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bimfs.cache.metadata import TtlCache


class NotFound(Exception):
    pass


class Loader:
    """Counts calls; optionally blocks until released; returns or raises per call."""

    def __init__(self, *, gate: bool = False) -> None:
        self.calls = 0
        self.gate = trio.Event() if gate else None
        self.results: list[object] = []

    async def __call__(self) -> object:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        result = self.results.pop(0) if self.results else f"value-{n}"
        if isinstance(result, BaseException):
            raise result
        return result


async def test_hundred_concurrent_getters_cause_one_load() -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30)
    load = Loader(gate=True)
    got: list[object] = []

    async def getter() -> None:
        got.append(await cache.get("dir", load))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        assert load.calls == 1
        assert load.gate is not None
        load.gate.set()
    assert got == ["value-1"] * 100
    assert load.calls == 1


async def test_waiters_get_the_loaders_exception() -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30)
    load = Loader(gate=True)
    boom = RuntimeError("server down")
    load.results = [boom]
    errors: list[BaseException] = []

    async def getter() -> None:
        try:
            await cache.get("dir", load)
        except RuntimeError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        assert load.gate is not None
        load.gate.set()
    assert errors == [boom] * 10
    assert load.calls == 1
    # Not a negative: the next get loads again.
    assert await cache.get("dir", load) == "value-2"


async def test_fresh_hits_do_not_load_and_values_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30)
    load = Loader()
    assert await cache.get("k", load) == "value-1"
    await trio.sleep(29)
    assert await cache.get("k", load) == "value-1"
    assert load.calls == 1
    assert cache.is_fresh("k")
    await trio.sleep(2)
    assert not cache.is_fresh("k")
    assert cache.peek("k") == "value-1"  # expired, still the last known value
    assert await cache.get("k", load) == "value-2"
    assert load.calls == 2


async def test_negative_results_are_cached_for_negative_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30, negative_ttl=5)
    load = Loader()
    load.results = [NotFound("gone"), "back"]

    def is_negative(exc: BaseException) -> bool:
        return isinstance(exc, NotFound)

    for _ in range(3):
        with pytest.raises(NotFound):
            await cache.get("k", load, negative=is_negative)
    assert load.calls == 1
    await trio.sleep(6)
    assert await cache.get("k", load, negative=is_negative) == "back"
    assert load.calls == 2


async def test_invalidate_during_a_load_never_stores_the_stale_answer() -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30)
    stale = Loader(gate=True)
    stale.results = ["stale"]
    fresh = Loader()
    fresh.results = ["fresh"]
    got: list[object] = []

    async def early() -> None:
        got.append(await cache.get("k", stale))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early)
        await trio.testing.wait_all_tasks_blocked()
        cache.invalidate("k")  # e.g. a file was created in the directory meanwhile
        assert await cache.get("k", fresh) == "fresh"
        assert stale.gate is not None
        stale.gate.set()
    assert got == ["stale"]  # the early caller gets its answer ...
    assert await cache.get("k", fresh) == "fresh"  # ... but it does not replace the newer one
    assert fresh.calls == 1


async def test_cancelled_loader_hands_over_to_a_waiter() -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=10, ttl=30)
    load = Loader(gate=True)
    got: list[object] = []

    async def waiter() -> None:
        got.append(await cache.get("k", load))

    async with trio.open_nursery() as nursery:
        loader_scope = trio.CancelScope()

        async def first_get() -> None:
            with loader_scope:
                await cache.get("k", load)

        nursery.start_soon(first_get)
        await trio.testing.wait_all_tasks_blocked()
        assert load.calls == 1
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        loader_scope.cancel()  # the loading task goes away mid-load
        await trio.testing.wait_all_tasks_blocked()
        assert load.calls == 2  # the waiter took over
        assert load.gate is not None
        load.gate.set()
    assert got == ["value-2"]


async def test_put_peek_discard_clear() -> None:
    cache: TtlCache[str, object] = TtlCache(maxsize=2, ttl=30)
    load = Loader()
    cache.put("a", "A")
    assert await cache.get("a", load) == "A"
    assert load.calls == 0
    cache.invalidate("a")
    assert cache.peek("a") == "A"
    assert await cache.get("a", load) == "value-1"
    cache.discard("a")
    assert cache.peek("a") is None
    cache.put("b", "B")
    cache.put("c", "C")
    cache.put("d", "D")  # maxsize 2: the least recently used goes
    assert cache.peek("b") is None
    cache.clear()
    assert cache.peek("d") is None
    assert not cache.is_fresh("d")
