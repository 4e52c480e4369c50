"""Downloads: HTTP ranges, --no-range, ETag, HEAD; and the range parser itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bimfs.emulator.transfer import RangeNotSatisfiable, parse_range
from tests.support.emulator import Emulator


def big_document(emu: Emulator, size: int = 3 * 1024 * 1024 + 5) -> tuple[str, str, bytes]:
    """A pseudo-random document in the Empty Project: (download path, hash, content)."""
    pid = emu.project_id("bimfs-demo", "Empty Project")
    att = emu.admin(
        "POST",
        f"/teams/bimfs-demo/projects/{pid}/blob",
        params={"fileName": "r.bin", "size": size, "seed": 1},
    )
    content = emu.download("bimfs-demo", att["id"])
    assert len(content) == size
    return f"/bimfs-demo/attachments/{att['id']}/download", att["hash"], content


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 0)),
        ("bytes=10-19", (10, 19)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=90-1000", (90, 99)),
        ("bytes = 5-6", (5, 6)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=abc", None),
        ("bytes=5-2", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_ranges_over_http(emulator: Emulator) -> None:
    path, hash_, content = big_document(emulator)
    size = len(content)
    full = emulator.request("GET", path)
    assert full.status_code == 200
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["etag"] == f'"{hash_}"'
    assert full.headers["content-length"] == str(size)
    assert full.headers["content-type"] == "application/octet-stream"

    cases = {
        "bytes=0-99": (0, 99),
        f"bytes={size - 10}-": (size - 10, size - 1),
        "bytes=-4096": (size - 4096, size - 1),
        "bytes=1048570-1048585": (1048570, 1048585),
        f"bytes=5-{size * 2}": (5, size - 1),
    }
    for header, (first, last) in cases.items():
        resp = emulator.request("GET", path, headers={"Range": header})
        assert resp.status_code == 206, header
        assert resp.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert resp.headers["content-length"] == str(last - first + 1)
        assert resp.content == content[first : last + 1]

    bad = emulator.request("GET", path, headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{size}"
    multi = emulator.request("GET", path, headers={"Range": "bytes=0-1,4-5"})
    assert multi.status_code == 200 and multi.content == content
    stats = emulator.stats()["requests"]["GET /v2/{slug}/attachments/{id}/download"]
    assert stats["206"] == 5 and stats["416"] == 1


def test_head_and_if_none_match(emulator: Emulator) -> None:
    path, hash_, content = big_document(emulator, 1000)
    head = emulator.request("HEAD", path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "1000"
    cached = emulator.request("GET", path, headers={"If-None-Match": f'"{hash_}"'})
    assert cached.status_code == 304 and cached.content == b""
    stale = emulator.request("GET", path, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == content


def test_version_download_ranges(emulator: Emulator) -> None:
    pid = emulator.project_id("bimfs-demo", "Office Building")
    plan = emulator.attachment("bimfs-demo", pid, "plan.pdf")
    v1 = emulator.download("bimfs-demo", plan["id"], 1)
    resp = emulator.request(
        "GET",
        f"/bimfs-demo/attachments/{plan['id']}/versions/1/download",
        headers={"Range": "bytes=0-7"},
    )
    assert resp.status_code == 206 and resp.content == v1[:8] == b"%PDF-1.4"
    versions = emulator.api("GET", f"/bimfs-demo/attachments/{plan['id']}/versions")
    assert resp.headers["etag"] == f'"{versions[0]["hash"]}"'


def test_no_range_flag(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--no-range")
    path, _, content = big_document(emu, 5000)
    resp = emu.request("GET", path, headers={"Range": "bytes=0-9"})
    assert resp.status_code == 200 and resp.content == content
    assert "accept-ranges" not in resp.headers
    assert "content-range" not in resp.headers
    # Range support switched on at run time.
    emu.set_faults(range_enabled=True)
    resp = emu.request("GET", path, headers={"Range": "bytes=0-9"})
    assert resp.status_code == 206 and resp.content == content[:10]
    emu.set_faults(range_enabled=False)
    assert emu.request("GET", path, headers={"Range": "bytes=0-9"}).status_code == 200


def test_api_token_in_query_for_downloads(emulator: Emulator) -> None:
    path, _, content = big_document(emulator, 100)
    resp = emulator.request("GET", path, auth=False, params={"api-token": emulator.token})
    assert resp.status_code == 200 and resp.content == content
