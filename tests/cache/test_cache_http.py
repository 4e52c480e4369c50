"""The content store over real HTTP: the API client against the emulator process on loopback.

These check that the client's download handle fits the store's ``Fetcher`` as is, and count the
requests the server really saw (``/_emulator/stats``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.download import Download
from bimfs.cache.content import ContentKey, Fetcher
from tests.cache.fakes import running_store
from tests.support.emulator import Emulator

SLUG = "bimfs-demo"
PROJECT = "Office Building"
DOWNLOAD = "GET /v2/{slug}/attachments/{id}/versions/{n}/download"
KIB = 1024
MIB = 1024 * KIB


def publish(emu: Emulator, name: str, size: int, seed: int) -> tuple[ContentKey, bytes]:
    data = random.Random(seed).randbytes(size)
    doc = emu.upload(SLUG, emu.project_id(SLUG, PROJECT), name, data)
    key = ContentKey(str(doc["id"]), int(doc["version"]), str(doc["hash"]), int(doc["size"]))
    assert key.size == size
    emu.reset_stats()
    return key, data


def fetcher(client: BimplusClient, key: ContentKey) -> Fetcher:
    # Typed with the client's own Download: mypy checks that it fits the store's protocol.
    def fetch(start: int, end: int) -> AbstractAsyncContextManager[Download]:
        return client.open_download(SLUG, key.doc_id, version=key.version, start=start, end=end)

    return fetch


def connect(emu: Emulator) -> BimplusClient:
    return BimplusClient(emu.url, StaticToken(emu.token), backoff_base=0.01, timeout=20.0)


async def test_far_then_sequential_reads_and_a_remount(emulator: Emulator, tmp_path: Path) -> None:
    key, data = publish(emulator, "cache-http.bin", 5 * MIB + 123, seed=1)
    options = {"block_size": 256 * KIB, "min_parallel_size": 1 << 40, "far_distance": MIB}
    async with connect(emulator) as client, running_store(tmp_path, **options) as store:
        f = store.open(key, fetcher(client, key))
        assert emulator.count(DOWNLOAD) == 0  # nothing at open
        # The end first (a ZIP's directory): one ranged request for the last block only.
        assert await store.read(f, len(data) - 100, 100) == data[-100:]
        assert emulator.count(DOWNLOAD, 206) == 1
        # Then sequentially from the start, as `cp` does: requests for a read-ahead window
        # that doubles as the reader goes on (1, 2, then the 2 MiB left before the end).
        out = bytearray()
        while len(out) < len(data):
            out += await store.read(f, len(out), 128 * KIB)
        assert out == data
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert emulator.count(DOWNLOAD) == 4
    assert emulator.stats()["bytes_out"] == pytest.approx(len(data), rel=0.01)  # each byte once
    # A remount on the same cache dir serves it without a single request.
    async with connect(emulator) as client, running_store(tmp_path, **options) as store:
        f = store.open(key, fetcher(client, key))
        assert await store.read(f, 0, len(data)) == data
        store.close(f)
    assert emulator.count(DOWNLOAD) == 4


async def test_parallel_ranges(emulator: Emulator, tmp_path: Path) -> None:
    key, data = publish(emulator, "cache-parallel.bin", 4 * MIB, seed=2)
    options = {
        "block_size": 128 * KIB,
        "min_parallel_size": MIB,
        "max_streams": 4,
        "parallel_below": None,
    }
    async with connect(emulator) as client, running_store(tmp_path, **options) as store:
        f = store.open(key, fetcher(client, key))
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert emulator.count(DOWNLOAD, 206) == 4
    assert emulator.stats()["bytes_out"] == pytest.approx(len(data), rel=0.01)


async def test_server_without_ranges(
    emulator_factory: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu: Emulator = emulator_factory("--no-range")
    key, data = publish(emu, "cache-norange.bin", 3 * MIB, seed=3)
    options = {"block_size": 256 * KIB, "min_parallel_size": 1 << 40}
    async with connect(emu) as client, running_store(tmp_path, **options) as store:
        f = store.open(key, fetcher(client, key))
        # Asked from 2 MiB, answered from 0: everything is kept, nothing is asked twice.
        assert await store.read(f, 2 * MIB, 10) == data[2 * MIB : 2 * MIB + 10]
        assert await store.read(f, 0, len(data)) == data
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    assert emu.count(DOWNLOAD) == 1


async def test_a_throttled_server_gets_parallel_streams(
    emulator_factory: Callable[..., Emulator], tmp_path: Path
) -> None:
    # 4 MB/s per response: the first stream is far below parallel_below (whatever the load on
    # this machine, it cannot be faster), so it splits the rest of the file after its probe.
    emu: Emulator = emulator_factory("--stream-rate", "4000000")
    key, data = publish(emu, "cache-throttled.bin", 4 * MIB, seed=4)
    options = {
        "block_size": 128 * KIB,
        "min_parallel_size": MIB,
        "max_streams": 4,
        "parallel_below": 20e6,
    }
    async with connect(emu) as client, running_store(tmp_path, **options) as store:
        f = store.open(key, fetcher(client, key))
        assert await store.read(f, 0, 100) == data[:100]
        assert (await store.ensure_complete(f)).read_bytes() == data
        store.close(f)
    # How many depends on where the first stream was when it decided (its chunks come in
    # pieces of about 1 MiB); at least one more, at most max_streams in all.
    assert 2 <= emu.count(DOWNLOAD, 206) <= 4
    # The first stream stops where the others begin: only what it had in flight past its new
    # end (the rest of its last chunk of about 1 MiB, a paced piece or two) is sent twice.
    assert emu.stats()["bytes_out"] <= len(data) + 2 * MIB
