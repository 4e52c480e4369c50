"""Run by test_api_large.py in a subprocess: upload and download a big file through the client,
then print the process's peak RSS (VmHWM) as JSON. Arguments: API URL, token, slug, project
id, source file, destination file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


async def main(url: str, token: str, slug: str, pid: str, source: str, dest: str) -> None:
    before = peak_rss()
    async with BimplusClient(url, StaticToken(token), timeout=120.0) as client:
        doc = await client.create_attachment(
            slug, pid, Path(source), file_name="large.bin", content_type="application/octet-stream"
        )
        after_upload = peak_rss()
        with open(dest, "wb") as f:  # noqa: ASYNC230 (a probe)
            written = await client.download_to(slug, doc.id, f)
    print(
        json.dumps(
            {
                "id": doc.id,
                "size": doc.size,
                "written": written,
                "rss_start": before,
                "rss_after_upload": after_upload,
                "rss_peak": peak_rss(),
            }
        )
    )


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:7])
