"""Entries kept for offline work (``ContentStore.keep``, what pins use): never evicted, counted
in the budget, evictable again once released."""

from __future__ import annotations

from pathlib import Path

import trio.testing

from bimfs.cache.content import ContentKey, ContentStore
from tests.cache.fakes import FakeSource, pattern, running_store

BS = 1024


def key_for(data: bytes, doc: str) -> ContentKey:
    return ContentKey(doc, 1, "h1", len(data))


async def fill(store: ContentStore, key: ContentKey, data: bytes) -> None:
    f = store.open(key, FakeSource(data).fetch)
    await store.ensure_complete(f)
    store.close(f)
    await trio.testing.wait_all_tasks_blocked()


async def test_kept_entries_are_never_evicted_until_released(tmp_path: Path) -> None:
    docs = {name: pattern(10 * BS, seed=i) for i, name in enumerate("ABCD")}
    keys = {name: key_for(data, name) for name, data in docs.items()}
    async with running_store(tmp_path, max_bytes=25 * BS, block_size=BS) as store:
        await fill(store, keys["A"], docs["A"])
        store.keep(frozenset({keys["A"].digest()}))
        for name in "BCD":  # from C on, each fill pushes the least recently used entry out
            await fill(store, keys[name], docs[name])
        assert [store.is_complete(keys[n]) for n in "ABCD"] == [True, False, False, True]
        usage = store.usage()
        assert usage["bytes_used"] == 20 * BS and usage["kept_bytes"] == 10 * BS
        assert store.cached_bytes(keys["A"]) == 10 * BS and store.cached_bytes(keys["B"]) == 0

        store.keep(frozenset())  # released: the least recently used again, evicted first
        assert store.usage()["kept_bytes"] == 0
        await fill(store, keys["B"], docs["B"])
        assert [store.is_complete(keys[n]) for n in "ABCD"] == [False, True, False, True]


async def test_kept_entries_count_in_the_budget(tmp_path: Path) -> None:
    """With the budget held by kept entries, a new entry does not stay after its close."""
    a, b = pattern(20 * BS, seed=1), pattern(10 * BS, seed=2)
    async with running_store(tmp_path, max_bytes=25 * BS, block_size=BS) as store:
        await fill(store, key_for(a, "A"), a)
        store.keep(frozenset({key_for(a, "A").digest()}))
        await fill(store, key_for(b, "B"), b)
        assert store.is_complete(key_for(a, "A"))
        assert not store.is_complete(key_for(b, "B"))
        assert store.usage()["bytes_used"] == 20 * BS
