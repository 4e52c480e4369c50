"""Client behaviour on answers the emulator never gives, against a scripted loopback server:
malformed JSON, cut bodies, stalls, dropped uploads, Retry-After, redirects of errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import (
    ApiTimeoutError,
    ForbiddenError,
    IncompleteBodyError,
    NotFoundError,
    ProtocolError,
    ServerError,
    TooManyRequestsError,
    TransportError,
    UnauthorizedError,
    UploadOutcomeUnknownError,
)
from tests.api.scripted_server import Reply, Request, ScriptedServer

TOKEN = "scripted-token-123"


ME = {"id": "u-me", "email": "me@bimfs.test"}
SOMEONE = {"id": "u-anna", "email": "anna@bimfs.test"}


def client_for(server: ScriptedServer, **kwargs: object) -> BimplusClient:
    options: dict = {"backoff_base": 0.0, "timeout": 5.0}
    options.update(kwargs)
    # Who the token belongs to: what settling an interrupted upload compares changedBy with.
    if ("GET", "/v2/authorize") not in server.routes:
        server.on("GET", "/authorize", ok_json({"user_id": ME["email"], "expires_in": 3600}))
    return BimplusClient(server.url, StaticToken(TOKEN), **options)


def doc(aid: str = "a1", version: int = 1, size: int = 3, **extra: object) -> dict:
    return {
        "id": aid, "fileName": "f.txt", "version": version, "size": size,
        "creator": ME, "changedBy": ME, **extra,
    }  # fmt: skip


def ok_json(data: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


async def test_malformed_json_is_a_protocol_error_naming_the_call(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/team/projects/p1/attachments", Reply(200, b"<html>oops</html>"))
    async with client_for(scripted) as client:
        with pytest.raises(ProtocolError) as info:
            await client.list_attachments("team", "p1")
    assert info.value.call == "GET /v2/{slug}/projects/{pid}/attachments"
    assert "GET /v2/{slug}/projects/{pid}/attachments" in str(info.value)


@pytest.mark.parametrize(
    ("path", "body", "call"),
    [
        ("/teams", {"not": "a list"}, "teams"),
        ("/team/projects", {"id": "p"}, "projects"),
        ("/team/attachments/a1", [1, 2], "attachment"),
        ("/team/attachments/a1", {"id": "a1", "size": 2**63}, "attachment"),
        ("/team/attachments/a1/versions", None, "versions"),
        ("/team/projects/p1/structures", "text", "folders"),
        ("/authorize", [], "check"),
    ],
)
async def test_wrong_shapes(scripted: ScriptedServer, path: str, body: object, call: str) -> None:
    scripted.on("GET", path, ok_json(body))
    async with client_for(scripted) as client:
        with pytest.raises(ProtocolError):
            if call == "teams":
                await client.get_teams()
            elif call == "projects":
                await client.get_projects("team")
            elif call == "attachment":
                await client.get_attachment("team", "a1")
            elif call == "versions":
                await client.list_versions("team", "a1")
            elif call == "folders":
                await client.get_folders("team", "p1")
            else:
                await client.check_token()


@pytest.mark.parametrize(
    ("path", "body", "call"),
    [
        ("/teams", [{"name": "no slug", "id": "x"}], "teams"),
        ("/team/projects", [{"name": "no id"}], "projects"),
        ("/team/attachments/a1/versions", [None], "versions"),
        ("/team/projects/p1/structures", [{"id": "f", "children": 5}], "folders"),
    ],
)
async def test_unusable_entries_are_left_out(
    scripted: ScriptedServer, path: str, body: object, call: str
) -> None:
    scripted.on("GET", path, ok_json(body))
    async with client_for(scripted) as client:
        if call == "teams":
            assert await client.get_teams() == []
        elif call == "projects":
            assert await client.get_projects("team") == []
        elif call == "versions":
            assert await client.list_versions("team", "a1") == []
        else:
            assert await client.get_folders("team", "p1") == []


async def test_empty_and_broken_utf8(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(200, b""))
    scripted.on("GET", "/projects", Reply(200, b"\xff\xfe[]"))
    async with client_for(scripted) as client:
        with pytest.raises(ProtocolError):
            await client.get_teams()
        with pytest.raises(ProtocolError):
            await client.get_all_projects()


async def test_error_body_is_a_short_single_line(scripted: ScriptedServer) -> None:
    page = b"<html><body><h1>Forbidden</h1>\n<p>" + b"quota exceeded " * 100 + b"</p></body></html>"
    scripted.on("GET", "/teams", Reply(403, page, {"Content-Type": "text/html"}))
    async with client_for(scripted) as client:
        with pytest.raises(ForbiddenError) as info:
            await client.get_teams()
    err = info.value
    assert err.status == 403
    assert err.body.startswith("Forbidden quota exceeded")
    assert len(err.body) <= 200 and "\n" not in err.body and "<" not in err.body
    assert "\n" not in str(err)


async def test_token_never_in_errors(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(400, f"bad token {TOKEN}".encode()))
    async with client_for(scripted) as client:
        with pytest.raises(Exception) as info:
            await client.get_teams()
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(client)
    assert scripted.requests[0].headers["authorization"] == f"BimPlus {TOKEN}"


async def test_bearer_token_type(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", ok_json([]))
    async with client_for(scripted, token_type="bearer") as client:
        assert await client.get_teams() == []
    assert scripted.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    with pytest.raises(ValueError):
        client_for(scripted, token_type="Basic")


async def test_401_with_static_token(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(401, b"expired"))
    async with client_for(scripted) as client:
        with pytest.raises(UnauthorizedError) as info:
            await client.get_teams()
    assert info.value.status == 401
    assert scripted.count("GET", "/teams") == 1


async def test_retry_after_and_5xx_retried(scripted: ScriptedServer) -> None:
    answers = iter(
        [
            Reply(429, b"slow down", {"Retry-After": "0"}),
            Reply(503, b"busy"),
            Reply(500, b"oops"),
        ]
    )
    scripted.on("GET", "/teams", lambda _r: next(answers, ok_json([{"id": "t", "slug": "s"}])))
    async with client_for(scripted) as client:
        teams = await client.get_teams()
    assert [t.slug for t in teams] == ["s"]
    assert scripted.count("GET", "/teams") == 4


async def test_retries_run_out(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(503, b"down"))
    scripted.on("GET", "/projects", Reply(429, b"slow", {"Retry-After": "0"}))
    async with client_for(scripted, retries=2) as client:
        with pytest.raises(ServerError):
            await client.get_teams()
        with pytest.raises(TooManyRequestsError) as info:
            await client.get_all_projects()
    assert info.value.retry_after == 0
    assert scripted.count("GET", "/teams") == 3
    assert scripted.count("GET", "/projects") == 3


async def test_long_retry_after_is_left_to_the_caller(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(429, b"later", {"Retry-After": "3600"}))
    async with client_for(scripted) as client:
        with pytest.raises(TooManyRequestsError) as info:
            await client.get_teams()
    assert info.value.retry_after == 3600
    assert scripted.count("GET", "/teams") == 1


async def test_dropped_connection_is_retried_for_gets(scripted: ScriptedServer) -> None:
    answers = iter([Reply(drop=True), Reply(200, b'{"id": "x"}', send_only=3)])
    scripted.on("GET", "/team/attachments/a1", lambda _r: next(answers, ok_json(doc())))
    async with client_for(scripted) as client:
        att = await client.get_attachment("team", "a1")
    assert att.id == "a1"
    assert scripted.count("GET", "/team/attachments/a1") == 3


async def test_stall_hits_the_deadline(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(hang=True))
    async with client_for(scripted, timeout=0.3, retries=0) as client:
        with pytest.raises(ApiTimeoutError):
            await client.get_teams()


async def test_stalled_body_hits_the_deadline(scripted: ScriptedServer) -> None:
    """Headers arrive, the body never completes: the per-call deadline ends the wait."""
    scripted.on("GET", "/teams", Reply(200, b"[" + b" " * 50, {"Content-Length": "1000"}))
    async with client_for(scripted, timeout=0.3, retries=1) as client:
        with pytest.raises(ApiTimeoutError):
            await client.get_teams()
    assert scripted.count("GET", "/teams") == 2


async def test_stalled_download_body_times_out(scripted: ScriptedServer) -> None:
    scripted.on(
        "GET", "/team/attachments/a1/download", Reply(200, b"x" * 10, {"Content-Length": "99"})
    )
    async with client_for(scripted, timeout=0.3) as client:
        with pytest.raises(ApiTimeoutError):
            async with client.open_download("team", "a1") as dl:
                async for _chunk in dl.chunks():
                    pass


async def test_delete_retried_404_is_success(scripted: ScriptedServer) -> None:
    answers = iter([Reply(drop=True)])
    scripted.on("DELETE", "/team/attachments/a1", lambda _r: next(answers, Reply(404, b"gone")))
    async with client_for(scripted) as client:
        await client.delete_attachment("team", "a1")
        assert scripted.count("DELETE", "/team/attachments/a1") == 2
        # A first-attempt 404 is a real 404.
        with pytest.raises(NotFoundError):
            await client.delete_attachment("team", "a1")


async def test_cut_download_body(scripted: ScriptedServer) -> None:
    body = bytes(range(256)) * 40
    scripted.on("GET", "/team/attachments/a1/download", Reply(200, body, send_only=1000))
    async with client_for(scripted) as client:
        got = bytearray()
        with pytest.raises(IncompleteBodyError):
            async with client.open_download("team", "a1") as dl:
                assert dl.length == len(body)
                async for chunk in dl.chunks():
                    got += chunk
        # What was handed out is a correct prefix, and the error says it is not all.
        assert bytes(got) == body[: len(got)]
        assert len(got) < len(body)


async def test_download_to_resumes_a_cut_body_with_ranges(scripted: ScriptedServer) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    calls: list[str | None] = []

    def serve(req: Request) -> Reply:
        rng = req.headers.get("range")
        calls.append(rng)
        start = int(rng[6:].split("-")[0]) if rng else 0
        part = body[start:]
        headers = {"Accept-Ranges": "bytes"}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        # The first two answers break off after 300000 bytes.
        return Reply(status, part, headers, send_only=300_000 if len(calls) <= 2 else None)

    scripted.on("GET", "/team/attachments/a1/download", serve)
    out = io.BytesIO()
    seen: list[int] = []
    async with client_for(scripted) as client:
        n = await client.download_to("team", "a1", out, progress=seen.append)
    assert n == len(body) and out.getvalue() == body
    assert calls[0] is None and calls[1] is not None and calls[1].startswith("bytes=")
    assert seen[-1] == len(body)


async def test_download_to_skips_when_ranges_are_ignored(scripted: ScriptedServer) -> None:
    body = bytes(range(256)) * 100
    scripted.on("GET", "/team/attachments/a1/versions/2/download", Reply(200, body))
    async with client_for(scripted) as client:
        out = io.BytesIO()
        n = await client.download_to("team", "a1", out, version=2, start=1000, end=3000)
        async with client.open_download("team", "a1", version=2, start=1000) as dl:
            assert dl.start == 0 and not dl.range_supported and dl.total_size == len(body)
    assert n == 2000 and out.getvalue() == body[1000:3000]
    assert scripted.requests[0].headers["range"] == "bytes=1000-2999"


async def test_206_without_content_range_is_a_protocol_error(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/team/attachments/a1/download", Reply(206, b"abc"))
    async with client_for(scripted) as client:
        with pytest.raises(ProtocolError):
            async with client.open_download("team", "a1", start=5):
                pass


def write_source(tmp_path: Path, size: int = 3) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"a" * size)
    return path


async def test_upload_dropped_after_storing_is_found_in_versions(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """The server stored version 3 and then the connection broke: the version list settles
    it, and the upload is not sent twice."""
    versions = [doc(version=1, size=9), doc(version=2, size=9)]

    def post(_req: Request) -> Reply:
        versions.append(doc(version=3, size=3))
        return Reply(drop=True)

    scripted.on("POST", "/team/attachments/a1/versions", post)
    scripted.on("GET", "/team/attachments/a1/versions", lambda _r: ok_json(versions))
    async with client_for(scripted) as client:
        result = await client.create_version(
            "team",
            "a1",
            write_source(tmp_path),
            file_name="f.txt",
            content_type="text/plain",
            known_version=2,
        )
    assert result.version == 3
    assert scripted.count("POST", "/team/attachments/a1/versions") == 1


async def test_a_colleagues_version_is_not_taken_for_a_dropped_upload(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """While our upload was lost, a colleague stored a version of the same size: it is not
    ours, so ours is sent again (one version each)."""
    versions = [doc(version=1, size=9)]
    posts = []

    def post(_req: Request) -> Reply:
        posts.append(1)
        if len(posts) == 1:
            versions.append(doc(version=2, size=3, changedBy=SOMEONE))
            return Reply(drop=True)  # ours was lost, theirs landed meanwhile
        versions.append(doc(version=3, size=3))
        return ok_json(versions[-1], 201)

    scripted.on("POST", "/team/attachments/a1/versions", post)
    scripted.on("GET", "/team/attachments/a1/versions", lambda _r: ok_json(versions))
    async with client_for(scripted) as client:
        result = await client.create_version(
            "team", "a1", write_source(tmp_path), file_name="f.txt", content_type="x/y",
            known_version=1,
        )  # fmt: skip
    assert result.version == 3
    assert len(posts) == 2


async def test_upload_dropped_before_storing_is_sent_again(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    versions = [doc(version=1, size=9)]
    posts = []

    def post(req: Request) -> Reply:
        posts.append(req)
        if len(posts) == 1:
            return Reply(drop=True)  # lost: nothing stored
        versions.append(doc(version=2, size=3))
        return ok_json(versions[-1], 201)

    scripted.on("POST", "/team/attachments/a1/versions", post)
    scripted.on("GET", "/team/attachments/a1/versions", lambda _r: ok_json(versions))
    async with client_for(scripted) as client:
        result = await client.create_version(
            "team", "a1", write_source(tmp_path), file_name="f.txt", content_type="text/plain"
        )
    assert result.version == 2
    assert len(posts) == 2 and len(versions) == 2
    # known_version was not given: the list was read first.
    assert scripted.requests[0].method == "GET"


async def test_upload_outcome_unknown_when_the_check_fails(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    scripted.on("POST", "/team/attachments/a1/versions", Reply(drop=True))
    scripted.on("GET", "/team/attachments/a1/versions", Reply(403, b"no"))
    async with client_for(scripted) as client:
        with pytest.raises(UploadOutcomeUnknownError):
            await client.create_version(
                "team",
                "a1",
                write_source(tmp_path),
                file_name="f.txt",
                content_type="text/plain",
                known_version=1,
            )
    assert scripted.count("POST", "/team/attachments/a1/versions") == 1


async def test_upload_refused_with_5xx_is_sent_again(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    answers = iter([Reply(503, b"busy"), Reply(429, b"slow", {"Retry-After": "0"})])
    scripted.on(
        "POST",
        "/team/projects/p1/attachments",
        lambda _r: next(answers, ok_json(doc("new", size=3), 201)),
    )
    async with client_for(scripted) as client:
        result = await client.create_attachment(
            "team", "p1", write_source(tmp_path), file_name="f.txt", content_type="text/plain"
        )
    assert result.id == "new"
    assert scripted.count("POST", "/team/projects/p1/attachments") == 3
    assert scripted.count("GET", "/team/projects/p1/attachments") == 0
    for req in scripted.requests:
        # A fixed length, never chunked; the same complete body every time.
        assert "transfer-encoding" not in req.headers
        assert int(req.headers["content-length"]) == len(req.body)
        assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert b'name="f"; filename="f.txt"' in req.body
        assert b"\r\n\r\naaa\r\n--" in req.body


async def test_upload_403_is_final(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.on("POST", "/team/projects/p1/attachments", Reply(403, b"Storage quota exceeded"))
    async with client_for(scripted) as client:
        with pytest.raises(ForbiddenError, match="quota"):
            await client.create_attachment(
                "team", "p1", write_source(tmp_path), file_name="f.txt", content_type="x/y"
            )
    assert scripted.count("POST", "/team/projects/p1/attachments") == 1


async def test_create_dropped_after_storing_is_found(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    stored: list[dict] = [doc("old", size=3, createdAt="2001-01-01T00:00:00")]

    def post(_req: Request) -> Reply:
        stored.append(doc("new", size=3, createdAt="2999-01-01T00:00:00Z"))
        return Reply(drop=True)

    scripted.on("POST", "/team/projects/p1/attachments", post)
    scripted.on("GET", "/team/projects/p1/attachments", lambda _r: ok_json(stored))
    async with client_for(scripted) as client:
        result = await client.create_attachment(
            "team", "p1", write_source(tmp_path), file_name="f.txt", content_type="x/y"
        )
    # The old same-named, same-sized document is not mistaken for this upload.
    assert result.id == "new"
    assert scripted.count("POST", "/team/projects/p1/attachments") == 1


async def test_unreadable_success_answer_is_settled(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    versions = [doc(version=1, size=9)]

    def post(_req: Request) -> Reply:
        versions.append(doc(version=2, size=3))
        return Reply(201, b"not json at all")

    scripted.on("POST", "/team/attachments/a1/versions", post)
    scripted.on("GET", "/team/attachments/a1/versions", lambda _r: ok_json(versions))
    async with client_for(scripted) as client:
        result = await client.create_version(
            "team",
            "a1",
            write_source(tmp_path),
            file_name="f.txt",
            content_type="x/y",
            known_version=1,
        )
    assert result.version == 2
    assert scripted.count("POST", "/team/attachments/a1/versions") == 1


async def test_connect_refused_is_a_transport_error(tmp_path: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    async with BimplusClient(
        f"http://127.0.0.1:{port}/v2", StaticToken(TOKEN), retries=1, backoff_base=0.0
    ) as client:
        with pytest.raises(TransportError):
            await client.get_teams()
        with pytest.raises(TransportError):
            await client.create_attachment(
                "t", "p", write_source(tmp_path), file_name="f", content_type="x/y"
            )


async def test_cancellation_is_never_swallowed(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/teams", Reply(hang=True))
    async with client_for(scripted, timeout=60.0) as client:
        with trio.move_on_after(0.2) as scope:
            await client.get_teams()
        assert scope.cancelled_caught
        # The client is still usable afterwards.
        scripted.on("GET", "/projects", ok_json([]))
        assert await client.get_all_projects() == []


async def test_download_redirect_drops_the_token_across_origins(
    scripted: ScriptedServer,
) -> None:
    body = b"stored elsewhere" * 100
    other = f"http://localhost:{scripted.port}/v2/blob/1"
    scripted.on("GET", "/t/attachments/a/download", Reply(302, b"", {"Location": other}))
    scripted.on("GET", "/blob/1", Reply(200, body))
    async with client_for(scripted) as client:
        out = io.BytesIO()
        assert await client.download_to("t", "a", out) == len(body)
    assert out.getvalue() == body
    first, second = scripted.requests
    assert first.headers["authorization"] == f"BimPlus {TOKEN}"
    assert "authorization" not in second.headers


async def test_download_to_does_not_retry_twice(scripted: ScriptedServer) -> None:
    scripted.on("GET", "/t/attachments/a/download", Reply(503, b"down"))
    async with client_for(scripted, retries=2) as client:
        with pytest.raises(ServerError):
            await client.download_to("t", "a", io.BytesIO())
    assert scripted.count("GET", "/t/attachments/a/download") == 3


async def test_create_folder_dropped_after_creating(scripted: ScriptedServer) -> None:
    folders: list[dict] = [{"id": "f1", "name": "Existing", "type": "DocumentFolder"}]

    def post(req: Request) -> Reply:
        body = json.loads(req.body)
        assert body == {"name": "New", "parent": "f1", "type": "DocumentFolder"}
        folders[0].setdefault("children", []).append(
            {"id": "f2", "name": "New", "parent": "f1", "type": "DocumentFolder"}
        )
        return Reply(drop=True)

    scripted.on("POST", "/t/projects/p/structures", post)
    scripted.on("GET", "/t/projects/p/structures", lambda _r: ok_json(folders))
    async with client_for(scripted) as client:
        node = await client.create_folder("t", "p", "New", "f1")
    assert node.id == "f2" and node.parent == "f1"
    assert scripted.count("POST", "/t/projects/p/structures") == 1
