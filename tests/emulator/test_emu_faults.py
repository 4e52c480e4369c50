"""Injected faults, quirks mode and statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bimfs.api.models import Attachment
from tests.support.emulator import Emulator, multipart_body

DOWNLOAD = "GET /v2/{slug}/attachments/{id}/download"
NEW_VERSION = "POST /v2/{slug}/attachments/{id}/versions"


def make_blob(emu: Emulator, size: int) -> str:
    pid = emu.project_id("bimfs-demo", "Empty Project")
    att = emu.admin(
        "POST",
        f"/teams/bimfs-demo/projects/{pid}/blob",
        params={"fileName": "f.bin", "size": size, "seed": 3},
    )
    return str(att["id"])


def test_fail_rate(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--fail-rate", "1", "--fault-seed", "7")
    statuses = set()
    for _ in range(20):
        resp = emu.request("GET", "/teams")
        assert resp.status_code in (500, 503)
        assert resp.headers["content-type"].startswith("text/plain")
        statuses.add(resp.status_code)
    assert statuses == {500, 503}
    # Login routes under /v2 are faulted too; /_emulator never is.
    assert emu.request("POST", "/v2/authorize", json={}).status_code in (500, 503)
    assert emu.count("GET /v2/teams") == 20
    assert emu.count("GET /v2/teams", 200) == 0
    emu.set_faults(fail_rate=0)
    assert emu.request("GET", "/teams").status_code == 200


def test_throttle(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--throttle-rate", "1", "--retry-after", "3")
    resp = emu.request("GET", "/teams")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    emu.set_faults(retry_after=0)
    assert emu.request("GET", "/teams").headers["retry-after"] == "0"
    emu.set_faults(throttle_rate=0)
    assert emu.request("GET", "/teams").status_code == 200
    assert emu.count("GET /v2/teams", 429) == 2


def test_same_seed_same_faults(emulator_factory: Callable[..., Emulator]) -> None:
    runs = []
    for _ in range(2):
        emu = emulator_factory("--fail-rate", "0.4", "--throttle-rate", "0.2", "--fault-seed", "42")
        runs.append([emu.request("GET", "/teams").status_code for _ in range(40)])
        emu.stop()
    assert runs[0] == runs[1]
    assert {200, 429} <= set(runs[0]) and set(runs[0]) & {500, 503}


def test_faults_limited_to_routes(emulator: Emulator) -> None:
    aid = make_blob(emulator, 100)
    emulator.set_faults(fail_rate=1, routes=[DOWNLOAD])
    assert emulator.request("GET", "/teams").status_code == 200
    assert emulator.request("GET", f"/bimfs-demo/attachments/{aid}/download").status_code in (
        500,
        503,
    )


def test_faults_admin_validation(emulator: Emulator) -> None:
    current = emulator.admin("GET", "/faults")
    assert current["fail_rate"] == 0 and current["range_enabled"] is True
    for bad in (
        {"fail_rate": 2},
        {"bogus": 1},
        {"latency_ms": -1},
        {"hold_ms": -1},
        {"quirks": "yes"},
        {"routes": "x"},
    ):
        assert emulator.request("POST", "/_emulator/faults", json=bad).status_code == 400
    assert emulator.admin("GET", "/faults") == current
    changed = emulator.admin("POST", "/faults", json={"latency_ms": 5, "stream_rate": 1000})
    assert changed["latency_ms"] == 5 and changed["stream_rate"] == 1000


def test_hold_answers_after_storing(emulator: Emulator) -> None:
    """``hold_ms`` on a route: the upload is stored at once, its answer comes late."""
    pid = emulator.project_id("bimfs-demo", "Office Building")
    emulator.set_faults(hold_ms=60_000, routes=["POST /v2/{slug}/projects/{pid}/attachments"])
    try:
        with pytest.raises(httpx.ReadTimeout):
            emulator.request(
                "POST", f"/bimfs-demo/projects/{pid}/attachments",
                files={"file": ("held.txt", b"held\n")}, timeout=1.0,
            )  # fmt: skip
        names = [d["fileName"] for d in emulator.attachments("bimfs-demo", pid)]
        assert "held.txt" in names  # other routes answer at once
    finally:
        emulator.set_faults(hold_ms=0, routes=[])


def read_until_reset(emu: Emulator, path: str) -> tuple[int, int]:
    """(announced Content-Length, bytes received before the connection dropped)."""
    received = 0
    with emu.client.stream("GET", "/v2" + path, headers=emu.auth_headers) as resp:
        assert resp.status_code == 200
        announced = int(resp.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in resp.iter_raw():
                received += len(chunk)
    return announced, received


def test_reset_mid_download(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--fault-seed", "1")
    size = 4 * 1024 * 1024
    aid = make_blob(emu, size)
    emu.set_faults(reset_rate=1, routes=[DOWNLOAD])
    for _ in range(3):
        announced, received = read_until_reset(emu, f"/bimfs-demo/attachments/{aid}/download")
        assert announced == size and received < size
    # The other routes are unaffected and the server still works.
    emu.set_faults(reset_rate=0)
    assert len(emu.download("bimfs-demo", aid)) == size


def test_reset_on_other_requests_drops_the_answer(emulator: Emulator) -> None:
    emulator.set_faults(reset_rate=1, routes=["GET /v2/teams"])
    with pytest.raises(httpx.TransportError):
        emulator.request("GET", "/teams")
    assert emulator.count("GET /v2/teams", None) == 1
    assert emulator.stats()["requests"]["GET /v2/teams"] == {"reset": 1}


def test_reset_during_uploads_both_ways(emulator_factory: Callable[..., Emulator]) -> None:
    """A reset either cuts the request body (nothing stored) or the answer after the version was
    stored; the client sees the same transport error in both cases."""
    emu = emulator_factory("--fault-seed", "3")
    pid = emu.project_id("bimfs-demo", "Office Building")
    notes = emu.attachment("bimfs-demo", pid, "notes.txt")
    path = f"/bimfs-demo/attachments/{notes['id']}/versions"
    emu.set_faults(reset_rate=1, routes=[NEW_VERSION])
    attempts = 12
    for i in range(attempts):
        body, headers = multipart_body(
            "notes.txt", b"attempt %d " % i * 20000, content_type="text/plain"
        )
        with pytest.raises(httpx.TransportError):
            emu.request("POST", path, content=body, headers=headers)
    emu.set_faults(reset_rate=0)
    versions = emu.api("GET", path)
    stored = len(versions) - 4
    assert 0 < stored < attempts
    # Stored versions are complete; cut ones left nothing behind.
    for version in versions[4:]:
        data = emu.download("bimfs-demo", notes["id"], version["version"])
        assert len(data) == version["size"] and data.startswith(b"attempt ")
    total_versions = 0
    for team in emu.api("GET", "/teams"):
        for project in emu.api("GET", f"/{team['slug']}/projects"):
            for att in emu.attachments(team["slug"], project["id"]):
                total_versions += len(
                    emu.api("GET", f"/{team['slug']}/attachments/{att['id']}/versions")
                )
    assert len(list(Path(emu.data_dir, "blobs").iterdir())) == total_versions
    assert list(Path(emu.data_dir, "tmp").iterdir()) == []


def test_latency_and_stream_rate(emulator: Emulator) -> None:
    aid = make_blob(emulator, 100_000)
    emulator.set_faults(latency_ms=300)
    started = time.monotonic()
    assert emulator.request("GET", "/teams").status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator.set_faults(latency_ms=0, stream_rate=200_000)
    started = time.monotonic()
    assert len(emulator.download("bimfs-demo", aid)) == 100_000
    assert time.monotonic() - started >= 0.45


def test_quirks_shapes_parse_like_normal_ones(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--quirks")
    pid = emu.project_id("bimfs-demo", "Office Building")
    quirky = emu.attachments("bimfs-demo", pid)
    assert all(isinstance(a["version"], str) for a in quirky)
    assert {a["release"] for a in quirky} == {"true", "false"}
    with_createat = [a for a in quirky if "createAt" in a]
    assert with_createat and len(with_createat) < len(quirky)
    assert any("sizeMB" not in a for a in quirky) and any(
        a.get("classification", "") is None for a in quirky
    )
    dates = [a["changed"] for a in quirky]
    styles = {
        ("." in d, len(d.split(".")[-1]) if "." in d else 0, "+" in d, d.endswith("Z"))
        for d in dates
    }
    assert len(styles) >= 3
    teams = emu.api("GET", "/teams")
    assert any(t["storageStats"] is None for t in teams) or all(
        isinstance(t["storageStats"], dict) for t in teams
    )

    emu.set_faults(quirks=False)
    normal = {a["id"]: a for a in emu.attachments("bimfs-demo", pid)}
    for raw in quirky:
        q = Attachment.from_json(raw)
        n = Attachment.from_json(normal[raw["id"]])
        assert (q.file_name, q.size, q.version, q.hash, q.release) == (
            n.file_name,
            n.size,
            n.version,
            n.hash,
            n.release,
        )
        assert q.changed is not None and n.changed is not None
        assert abs(q.changed - n.changed) < 1
        if "createAt" in raw or "createdAt" in raw:
            assert q.created_at is not None and n.created_at is not None
            assert abs(q.created_at - n.created_at) < 1


def test_stats_counting(emulator: Emulator) -> None:
    aid = make_blob(emulator, 1000)
    emulator.reset_stats()
    assert emulator.stats() == {"requests": {}, "bytes_in": 0, "bytes_out": 0}
    assert len(emulator.download("bimfs-demo", aid)) == 1000
    assert emulator.stats()["bytes_out"] == 1000
    body, headers = multipart_body("f.bin", b"x" * 500)
    resp = emulator.request(
        "POST", f"/bimfs-demo/attachments/{aid}/versions", content=body, headers=headers
    )
    assert resp.status_code == 201
    stats = emulator.stats()
    assert stats["bytes_in"] == len(body)
    assert stats["bytes_out"] == 1000 + len(resp.content)
    emulator.download("bimfs-demo", aid, 1)
    emulator.request("GET", "/teams", auth=False)
    emulator.request("DELETE", f"/bimfs-demo/attachments/{aid}/versions/2")
    assert emulator.stats()["requests"] == {
        "GET /v2/{slug}/attachments/{id}/download": {"200": 1},
        "POST /v2/{slug}/attachments/{id}/versions": {"201": 1},
        "GET /v2/{slug}/attachments/{id}/versions/{n}/download": {"200": 1},
        "GET /v2/teams": {"401": 1},
        "DELETE /v2/{slug}/attachments/{id}/versions/{n}": {"200": 1},
    }
    assert emulator.count(DOWNLOAD, 200) == 1 and emulator.count(DOWNLOAD) == 1
    assert emulator.count(DOWNLOAD, 404) == 0 and emulator.count("GET /nothing") == 0
