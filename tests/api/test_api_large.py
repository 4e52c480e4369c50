"""Large transfers: bodies read straight from the socket, and bounded memory for 1 GiB."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bimfs.api import download as download_mod
from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import ApiTimeoutError, IncompleteBodyError
from tests.api.scripted_server import Reply, ScriptedServer
from tests.support.emulator import Emulator

SLUG = "bimfs-demo"
ROOT = Path(__file__).resolve().parents[2]


def make_blob(emu: Emulator, size: int, name: str = "big.bin") -> str:
    pid = emu.project_id(SLUG, "Empty Project")
    blob = emu.admin(
        "POST", f"/teams/{SLUG}/projects/{pid}/blob", params={"fileName": name, "size": size}
    )
    return str(blob["id"])


async def test_long_body_is_read_directly(emulator: Emulator) -> None:
    size = download_mod.DIRECT_BODY_MIN + 12345
    aid = make_blob(emulator, size)
    expected = hashlib.sha256(emulator.download(SLUG, aid)).hexdigest()
    async with BimplusClient(emulator.url, StaticToken(emulator.token)) as client:
        digest = hashlib.sha256()
        async with client.open_download(SLUG, aid) as dl:
            assert dl._direct is not None  # the socket path, not h11
            async for chunk in dl.chunks():
                digest.update(chunk)
            assert dl.received == size
        assert digest.hexdigest() == expected
        # The client goes on working (that connection was closed, not reused half-read).
        assert await client.get_teams()
        async with client.open_download(SLUG, aid, start=size - 10) as dl:
            assert dl._direct is None
            assert len(b"".join([c async for c in dl.chunks()])) == 10


async def test_parallel_direct_ranges(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_mod, "DIRECT_BODY_MIN", 64 * 1024)
    size = 6 << 20
    aid = make_blob(emulator, size)
    whole = emulator.download(SLUG, aid)
    parts = 6
    step = size // parts
    results: dict[int, bytes] = {}
    async with BimplusClient(emulator.url, StaticToken(emulator.token)) as client:

        async def fetch(i: int) -> None:
            async with client.open_download(SLUG, aid, start=i * step, end=(i + 1) * step) as dl:
                assert dl._direct is not None and dl.start == i * step
                results[i] = b"".join([c async for c in dl.chunks()])

        for _ in range(2):  # twice: fresh connections replace the closed ones
            results.clear()
            async with trio.open_nursery() as nursery:
                for i in range(parts):
                    nursery.start_soon(fetch, i)
            assert b"".join(results[i] for i in range(parts)) == whole


async def test_direct_body_cut_short(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_mod, "DIRECT_BODY_MIN", 1000)
    body = os.urandom(300_000)
    scripted.on("GET", "/t/attachments/a/download", Reply(200, body, send_only=200_000))
    scripted.on("GET", "/t/attachments/b/download", Reply(200, body))
    async with BimplusClient(scripted.url, StaticToken("x"), backoff_base=0.0) as client:
        got = bytearray()
        with pytest.raises(IncompleteBodyError):
            async with client.open_download("t", "a") as dl:
                assert dl._direct is not None
                async for chunk in dl.chunks():
                    got += chunk
        assert len(got) == 200_000 and bytes(got) == body[:200_000]
        out = io.BytesIO()
        assert await client.download_to("t", "b", out) == len(body)
        assert out.getvalue() == body
        # Leaving a direct body early closes its connection cleanly.
        async with client.open_download("t", "b") as dl:
            async for _chunk in dl.chunks():
                break
        out = io.BytesIO()
        await client.download_to("t", "b", out)
        assert out.getvalue() == body


@pytest.mark.slow
def test_one_gib_upload_and_download_in_bounded_memory(emulator: Emulator, tmp_path: Path) -> None:
    size = 1 << 30
    source = tmp_path / "source.bin"
    with open(source, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
    dest = tmp_path / "dest.bin"
    pid = emulator.project_id(SLUG, "Empty Project")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = Path(__file__).with_name("memory_probe.py")
    out = subprocess.run(
        [
            sys.executable,
            str(probe),
            emulator.url,
            emulator.token,
            SLUG,
            pid,
            str(source),
            str(dest),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    result = json.loads(out.stdout)
    assert result["size"] == size and result["written"] == size
    assert dest.stat().st_size == size
    with open(source, "rb") as a, open(dest, "rb") as b:
        while True:
            x, y = a.read(1 << 24), b.read(1 << 24)
            assert x == y
            if not x:
                break
    assert result["rss_peak"] < 200 * 1024 * 1024, result


async def test_direct_body_stall_times_out(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_mod, "DIRECT_BODY_MIN", 1000)
    scripted.on(
        "GET", "/t/attachments/a/download", Reply(200, b"x" * 5000, {"Content-Length": "9000"})
    )
    async with BimplusClient(scripted.url, StaticToken("x"), timeout=0.3) as client:
        got = bytearray()
        with pytest.raises(ApiTimeoutError):
            async with client.open_download("t", "a") as dl:
                assert dl._direct is not None
                async for chunk in dl.chunks():
                    got += chunk
    assert bytes(got) == b"x" * 5000
