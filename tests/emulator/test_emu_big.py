"""A 1 GiB upload and download through the emulator with bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from bimfs.emulator.samples import pseudo_random_chunks
from tests.support.emulator import Emulator

GIB = 1024**3
RSS_LIMIT = 200 * 1024**2


@pytest.mark.slow
def test_one_gib_upload_and_download(emulator: Emulator) -> None:
    pid = emulator.project_id("bimfs-demo", "Empty Project")
    boundary = "big-upload-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    sent = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield head
        for chunk in pseudo_random_chunks("big", GIB):
            sent.update(chunk)
            yield chunk
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + GIB + len(tail)),
    }
    resp = emulator.request(
        "POST", f"/bimfs-demo/projects/{pid}/attachments", content=body(), headers=headers
    )
    assert resp.status_code == 201, resp.text
    att = resp.json()
    assert att["size"] == GIB

    received = hashlib.sha256()
    total = 0
    with emulator.client.stream(
        "GET", f"/v2/bimfs-demo/attachments/{att['id']}/download", headers=emulator.auth_headers
    ) as download:
        assert download.status_code == 200
        for chunk in download.iter_raw(1024 * 1024):
            received.update(chunk)
            total += len(chunk)
    assert total == GIB
    assert received.digest() == sent.digest()
    assert emulator.peak_rss() < RSS_LIMIT
