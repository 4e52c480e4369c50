"""Throughput of reads through the content store against curl, same emulator, same document.

    .venv/bin/python tests/cache/bench_content.py [--size-mib 1024] [--rounds 3]

Reads the document the way the FUSE layer does (``ContentStore.read`` of 128 KiB, in order),
cold (empty cache: the store downloads while the reader waits) with one stream and with the
default parallel streams, then warm (from the complete cache file). Prints MB/s and the ratio to
curl (best of the rounds each). Not a test: the numbers depend on the machine.

Two references: curl into /dev/null (the network alone) and curl into a new file on the cache's
file system (network plus filling the page cache, which a cold read through any disk cache
pays too; on some virtual machines first-touch memory makes that the bottleneck).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bimfs.api.auth import StaticToken  # noqa: E402
from bimfs.api.client import BimplusClient  # noqa: E402
from bimfs.api.download import Download  # noqa: E402
from bimfs.cache.content import ContentKey, ContentStore  # noqa: E402
from tests.support.emulator import start_emulator  # noqa: E402

SLUG = "bimfs-demo"
READ = 128 << 10


def curl_rate(url: str, token: str, dest: str = "/dev/null") -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", dest, "-w", "%{speed_download}",
         "-H", f"Authorization: BimPlus {token}", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out)


async def store_rates(
    url: str, token: str, key: ContentKey, cache: Path, options: dict[str, Any]
) -> tuple[float, float]:
    """(cold MB/s, warm MB/s) of sequential 128 KiB reads."""
    shutil.rmtree(cache, ignore_errors=True)
    async with BimplusClient(url, StaticToken(token)) as client:

        def fetch(start: int, end: int) -> AbstractAsyncContextManager[Download]:
            return client.open_download(SLUG, key.doc_id, start=start, end=end)

        store = ContentStore(cache, 4 * key.size, **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            rates = []
            for _ in range(2):
                f = store.open(key, fetch)
                start = time.perf_counter()
                offset = 0
                while offset < key.size:
                    offset += len(await store.read(f, offset, READ))
                rates.append(key.size / (time.perf_counter() - start))
                await store.ensure_complete(f)
                store.close(f)
            nursery.cancel_scope.cancel()
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        emu = start_emulator(Path(tmp) / "emu")
        try:
            pid = emu.project_id(SLUG, "Empty Project")
            blob = emu.admin(
                "POST",
                f"/teams/{SLUG}/projects/{pid}/blob",
                params={"fileName": "bench.bin", "size": size},
            )
            doc = emu.api("GET", f"/{SLUG}/attachments/{blob['id']}")
            key = ContentKey(str(doc["id"]), int(doc["version"]), str(doc["hash"]), size)
            url = f"{emu.url}/{SLUG}/attachments/{key.doc_id}/download"
            configs = {
                "one stream": {"max_streams": 1},
                "4 streams": {"max_streams": 4},
            }
            curl: list[float] = []
            curl_file: list[float] = []
            cold: dict[str, list[float]] = {name: [] for name in configs}
            warm: list[float] = []
            for _ in range(args.rounds):
                curl.append(curl_rate(url, emu.token))
                target = Path(tmp) / "curl.out"
                curl_file.append(curl_rate(url, emu.token, str(target)))
                target.unlink()
                for name, options in configs.items():
                    c, w = trio.run(
                        store_rates, emu.url, emu.token, key, Path(tmp) / "cache", options
                    )
                    cold[name].append(c)
                    warm.append(w)
            ref = max(curl)
            ref_file = max(curl_file)
            print(
                f"document: {args.size_mib} MiB, reads of {READ >> 10} KiB, best of {args.rounds}"
            )
            print(f"curl > /dev/null       {ref / 1e6:8.0f} MB/s")
            print(f"curl > file            {ref_file / 1e6:8.0f} MB/s")
            for name, values in cold.items():
                best = max(values)
                print(
                    f"cold, {name:16} {best / 1e6:8.0f} MB/s  ratio {best / ref:5.2f}"
                    f"  (to curl > file {best / ref_file:5.2f})"
                )
            best = max(warm)
            print(f"warm                   {best / 1e6:8.0f} MB/s  ratio {best / ref:5.2f}")
        finally:
            emu.stop()


if __name__ == "__main__":
    main()
