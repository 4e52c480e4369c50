"""The client over TLS (a self-signed certificate trusted through SSL_CERT_FILE): JSON calls,
bodies read straight from the TLS stream, and verification that cannot be turned off."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from bimfs.api import download as download_mod
from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import IncompleteBodyError, TransportError
from tests.api.scripted_server import Reply, ScriptedServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_server(
    nursery: trio.Nursery, certificate: tuple[Path, Path]
) -> AsyncIterator[ScriptedServer]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ScriptedServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            return
        await server.serve(tls)  # type: ignore[arg-type]

    nursery.start_soon(trio.serve_listeners, serve, listeners)
    yield server


def https(server: ScriptedServer) -> str:
    return f"https://127.0.0.1:{server.port}/v2"


async def test_tls_calls_and_direct_bodies(
    tls_server: ScriptedServer,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setattr(download_mod, "DIRECT_BODY_MIN", 1000)
    body = os.urandom(3 << 20)
    tls_server.on("GET", "/teams", Reply(200, json.dumps([{"id": "1", "slug": "t"}]).encode()))
    tls_server.on("GET", "/t/attachments/a/download", Reply(200, body))
    tls_server.on("GET", "/t/attachments/b/download", Reply(200, body, send_only=1 << 20))
    async with BimplusClient(https(tls_server), StaticToken("x"), backoff_base=0.0) as client:
        assert [t.slug for t in await client.get_teams()] == ["t"]
        async with client.open_download("t", "a") as dl:
            assert dl._direct is not None
            assert b"".join([c async for c in dl.chunks()]) == body
        got = bytearray()
        with pytest.raises(IncompleteBodyError):
            async with client.open_download("t", "b") as dl:
                async for chunk in dl.chunks():
                    got += chunk
        assert bytes(got) == body[: len(got)] and len(got) <= 1 << 20
        assert [t.slug for t in await client.get_teams()] == ["t"]


async def test_untrusted_certificate_is_refused(
    tls_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls_server.on("GET", "/teams", Reply(200, b"[]"))
    async with BimplusClient(https(tls_server), StaticToken("x"), retries=0) as client:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get_teams()
    assert tls_server.requests == []
