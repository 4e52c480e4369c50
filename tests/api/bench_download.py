"""Download throughput of the client against curl, from the same emulator, same document.

    .venv/bin/python tests/api/bench_download.py [--size-mib 1024] [--rounds 3] [--parallel 4]

Prints MB/s of curl, of the client's single-stream loop (``open_download`` + ``chunks``), of
``download_to`` into a file, and of N parallel range requests, with their ratios to curl
(best of the rounds each). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bimfs.api.auth import StaticToken  # noqa: E402
from bimfs.api.client import BimplusClient  # noqa: E402
from tests.support.emulator import start_emulator  # noqa: E402


def curl_rate(url: str, token: str, dest: str = "/dev/null") -> float:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            dest,
            "-w",
            "%{speed_download}",
            "-H",
            f"Authorization: BimPlus {token}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out)


async def client_rates(
    url: str, token: str, slug: str, aid: str, size: int, parallel: int, scratch: Path
) -> tuple[float, float, float]:
    async with BimplusClient(url, StaticToken(token)) as client:
        start = time.perf_counter()
        n = 0
        async with client.open_download(slug, aid) as dl:
            async for chunk in dl.chunks():
                n += len(chunk)
        assert n == size
        loop_rate = n / (time.perf_counter() - start)

        start = time.perf_counter()
        with open(scratch, "wb") as f:  # noqa: ASYNC230 (a benchmark)
            n = await client.download_to(slug, aid, f)
        assert n == size
        file_rate = n / (time.perf_counter() - start)

        step = -(-size // parallel)
        total = 0

        async def part(i: int) -> None:
            nonlocal total
            end = min(size, (i + 1) * step)
            async with client.open_download(slug, aid, start=i * step, end=end) as dl:
                async for chunk in dl.chunks():
                    total += len(chunk)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(parallel):
                nursery.start_soon(part, i)
        assert total == size
        par_rate = size / (time.perf_counter() - start)
    return loop_rate, file_rate, par_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        emu = start_emulator(Path(tmp) / "emu")
        try:
            pid = emu.project_id("bimfs-demo", "Empty Project")
            blob = emu.admin(
                "POST",
                f"/teams/bimfs-demo/projects/{pid}/blob",
                params={"fileName": "bench.bin", "size": size},
            )
            url = f"{emu.url}/bimfs-demo/attachments/{blob['id']}/download"
            curl, curl_file, loop, to_file, par = [], [], [], [], []
            for _ in range(args.rounds):
                curl.append(curl_rate(url, emu.token))
                curl_file.append(curl_rate(url, emu.token, str(Path(tmp) / "curl.bin")))
                rates = trio.run(
                    client_rates,
                    emu.url,
                    emu.token,
                    "bimfs-demo",
                    blob["id"],
                    size,
                    args.parallel,
                    Path(tmp) / "out.bin",
                )
                loop.append(rates[0])
                to_file.append(rates[1])
                par.append(rates[2])
            ref, ref_file = max(curl), max(curl_file)
            print(f"document: {args.size_mib} MiB, best of {args.rounds}")
            print(f"curl -o /dev/null      {ref / 1e6:8.0f} MB/s")
            print(f"curl -o file           {ref_file / 1e6:8.0f} MB/s")
            for label, values, base in (
                ("client chunks()", loop, ref),
                (f"client {args.parallel} ranges", par, ref),
                ("client download_to", to_file, ref_file),
            ):
                best = max(values)
                print(f"{label:22} {best / 1e6:8.0f} MB/s  ratio {best / base:5.2f}")
        finally:
            emu.stop()


if __name__ == "__main__":
    main()
