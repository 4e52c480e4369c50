"""Read side through a real mount, checked against what the API serves."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bimfs.api.models import parse_time
from bimfs.vfs.names import NameRequest, assign_names, safe_name, version_file_name
from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

DOWNLOAD = "GET /v2/{slug}/attachments/{id}/download"
VERSION_DOWNLOAD = "GET /v2/{slug}/attachments/{id}/versions/{n}/download"


def downloads(emu: Emulator) -> int:
    return emu.count(DOWNLOAD) + emu.count(VERSION_DOWNLOAD)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)


def expected_layout(emu: Emulator) -> dict[str, Any]:
    """Team dir -> project dir -> {relative path: attachment JSON}, computed from the API."""
    layout: dict[str, Any] = {}
    for team in emu.api("GET", "/teams"):
        slug = team["slug"]
        projects = emu.api("GET", f"/{slug}/projects")
        pnames = assign_names(
            NameRequest(p["id"], p["name"], parse_time(p.get("created")) or 0.0, p["id"])
            for p in projects
        )
        team_map: dict[str, Any] = {}
        for project in projects:
            docs = emu.api("GET", f"/{slug}/projects/{project['id']}/attachments")
            folders = emu.api(
                "GET", f"/{slug}/projects/{project['id']}/structures?type=DocumentFolder"
            )
            team_map[pnames[project["id"]]] = _project_files(docs, folders)
        layout[slug] = team_map
    return layout


def _project_files(docs: list[dict[str, Any]], folders: list[dict[str, Any]]) -> dict[str, Any]:
    files: dict[str, Any] = {}
    in_folder: dict[str, tuple[str, str]] = {}  # doc id -> folder id, folder path
    folder_paths: dict[str, str] = {"": ""}

    def walk(node: dict[str, Any], path: str) -> None:
        folder_paths[node["id"]] = path
        subfolders = [c for c in node.get("children", []) if c["type"] != "Attachment"]
        names = assign_names(NameRequest(c["id"], c["name"], 0.0, c["id"]) for c in subfolders)
        for child in node.get("children", []):
            if child["type"] == "Attachment":
                in_folder[child["id"]] = (node["id"], path)
            else:
                walk(child, f"{path}/{names[child['id']]}")

    top_names = assign_names(NameRequest(f["id"], f["name"], 0.0, f["id"]) for f in folders)
    for top in folders:
        walk(top, top_names[top["id"]])
    by_dir: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        _, path = in_folder.get(doc["id"], ("", ""))
        by_dir.setdefault(path, []).append(doc)
    for path, group in by_dir.items():
        reserved = ["versions"]
        names = assign_names(
            (
                NameRequest(
                    d["id"], d["fileName"],
                    parse_time(d.get("createdAt") or d.get("createAt")) or 0.0, d["id"],
                )
                for d in group
            ),
            reserved,
        )  # fmt: skip
        for doc in group:
            rel = f"{path}/{names[doc['id']]}" if path else names[doc["id"]]
            files[rel] = doc
    return files


def all_files(layout: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (slug, f"{slug}/{project}/{rel}", doc)
        for slug, projects in layout.items()
        for project, files in projects.items()
        for rel, doc in files.items()
    ]


def test_tree_sizes_times_and_bytes_match_the_api(mount: Mount, emulator: Emulator) -> None:
    layout = expected_layout(emulator)
    assert len(layout) >= 2
    listing = run("ls", "-lR", str(mount.path)).stdout
    assert "versions" in listing
    files = all_files(layout)
    assert len(files) >= 8
    readable = 0
    for slug, rel, doc in files:
        path = mount.p(rel)
        st = path.stat()
        assert st.st_size == doc["size"], rel
        assert st.st_blocks == math.ceil(doc["size"] / 512), rel
        changed = parse_time(doc.get("changed")) or parse_time(doc.get("createdAt"))
        if changed:
            assert abs(st.st_mtime - changed) < 1.5, rel
        if doc.get("rights", {}).get("download", True):
            data = path.read_bytes()
            assert (
                hashlib.sha256(data).digest()
                == hashlib.sha256(emulator.download(slug, doc["id"])).digest()
            ), rel
            readable += 1
    assert readable >= 6
    # Directories seen by find are exactly the teams, projects, folders and versions dirs.
    found = set(run("find", str(mount.path), "-type", "f").stdout.splitlines())
    for _, rel, _ in files:
        assert str(mount.p(rel)) in found


def test_every_version_file_matches_the_version_download(mount: Mount, emulator: Emulator) -> None:
    layout = expected_layout(emulator)
    checked = 0
    for slug, rel, doc in all_files(layout):
        if not doc.get("rights", {}).get("download", True):
            continue
        path = mount.p(rel)
        vdir = path.parent / "versions" / path.name
        versions = emulator.api("GET", f"/{slug}/attachments/{doc['id']}/versions")
        names = sorted(os.listdir(vdir))
        assert names == sorted(version_file_name(path.name, int(v["version"])) for v in versions)
        for v in versions:
            n = int(v["version"])
            data = (vdir / version_file_name(path.name, n)).read_bytes()
            assert data == emulator.download(slug, doc["id"], n), (rel, n)
            checked += 1
            with pytest.raises(PermissionError):
                open(vdir / version_file_name(path.name, n), "r+b")  # noqa: SIM115
    assert checked > len(all_files(layout))  # several documents have several versions


def test_hostile_names_are_safe_and_stable(emulator: Emulator, mount_factory: Any) -> None:
    mount = mount_factory(emulator, "--dir-ttl", "0")  # every listing is fetched afresh
    layout = expected_layout(emulator)
    raw_names = [doc["fileName"] for _, _, doc in all_files(layout)]
    assert any("/" in n for n in raw_names)
    assert any(len(n.encode()) > 255 for n in raw_names)
    first = sorted(run("find", str(mount.path)).stdout.splitlines())
    for line in first:
        name = os.path.basename(line)
        assert "/" not in name and len(name.encode()) <= 255
        assert all(ord(c) >= 32 for c in name)
    assert any("\u2215" in line for line in first)
    slashed = [n for n in raw_names if "/" in n]
    assert any(safe_name(n) in {os.path.basename(x) for x in first} for n in slashed)
    second = sorted(run("find", str(mount.path)).stdout.splitlines())
    assert first == second


def test_duplicate_file_names_get_the_id_suffix(mount: Mount, emulator: Emulator) -> None:
    layout = expected_layout(emulator)
    suffixed = [rel for _, rel, _ in all_files(layout) if " (" in os.path.basename(rel)]
    assert suffixed, "the seed has two documents with the same fileName"
    for rel in suffixed:
        assert mount.p(rel).exists()


def test_xattrs(mount: Mount, emulator: Emulator) -> None:
    layout = expected_layout(emulator)
    slug, rel, doc = next(
        (s, r, d) for s, r, d in all_files(layout) if int(d.get("version", 1)) > 1
    )
    out = run("getfattr", "-d", "-m", "-", "--absolute-names", str(mount.p(rel))).stdout
    assert f'user.bimplus.id="{doc["id"]}"' in out
    assert f'user.bimplus.version="{int(doc["version"])}"' in out
    assert f'user.bimplus.hash="{doc["hash"]}"' in out
    assert 'user.bimfs.state="synced"' in out
    for key in (
        "type",
        "attachment_type",
        "classification",
        "tag",
        "creator",
        "changed_by",
        "created",
        "changed",
    ):
        assert f"user.bimplus.{key}=" in out
    team = run("getfattr", "-d", "--absolute-names", str(mount.p(slug))).stdout
    assert f'user.bimplus.slug="{slug}"' in team
    assert "user.bimplus.id=" in team


def test_rights_are_enforced_before_any_transfer(mount: Mount, emulator: Emulator) -> None:
    layout = expected_layout(emulator)
    _, rel, _ = next(
        (s, r, d) for s, r, d in all_files(layout)
        if not d.get("rights", {}).get("download", True)
    )  # fmt: skip
    path = mount.p(rel)
    assert path.stat().st_mode & 0o444 == 0
    emulator.reset_stats()
    with pytest.raises(PermissionError):
        path.read_bytes()
    assert downloads(emulator) == 0
    # A read-only project: nothing can be created or changed there.
    ro = [
        (s, p) for s, projects in layout.items() for p in projects
        if not next(
            x for x in emulator.api("GET", f"/{s}/projects") if x["name"].replace("/", "\u2215")
            == p or safe_name(x["name"]) == p
        )["hasWriteAccess"]
    ]  # fmt: skip
    assert ro
    s, p = ro[0]
    with pytest.raises(PermissionError):
        (mount.p(s, p) / "new.txt").write_bytes(b"x")
    some = [rel for rel in layout[s][p]]
    if some:
        with pytest.raises(PermissionError):
            open(mount.p(s, p, some[0]), "r+b")  # noqa: SIM115


def test_du_df_and_stat(emulator: Emulator, mount_factory: Any) -> None:
    teams = emulator.api("GET", "/teams")
    quota_team = next(t for t in teams if t.get("totalStorage"))
    m = mount_factory(emulator, "--team", quota_team["slug"])
    st = os.statvfs(m.path)
    assert st.f_blocks * st.f_frsize == pytest.approx(quota_team["totalStorage"], rel=0.01)
    assert st.f_bavail > 0
    df = run("df", "-B1", str(m.path)).stdout.splitlines()[-1].split()
    assert int(df[1]) == pytest.approx(quota_team["totalStorage"], rel=0.01)
    du = run("du", "-sb", str(m.path)).stdout.split()[0]
    assert int(du) > 0
    # the team is the root: its projects are the top level
    projects = {
        safe_name(p["name"]) for p in emulator.api("GET", f"/{quota_team['slug']}/projects")
    }
    assert projects <= set(os.listdir(m.path))


def test_document_changed_through_the_api_shows_after_the_ttl(
    mount: Mount, emulator: Emulator
) -> None:
    layout = expected_layout(emulator)
    slug, rel, doc = next(
        (s, r, d) for s, r, d in all_files(layout)
        if d.get("rights", {}).get("download", True) and d.get("rights", {}).get("update", True)
        and "/" not in r.split("/", 2)[2]
    )  # fmt: skip
    path = mount.p(rel)
    before = path.read_bytes()
    new = b"changed on the server\n" * 100
    emulator.api(
        "POST",
        f"/{slug}/attachments/{doc['id']}/versions",
        files={"file": (doc["fileName"], new, "application/octet-stream")},
    )
    wait_until(
        lambda: path.stat().st_size == len(new), 15, "the new size after the TTL", interval=0.2
    )
    assert path.read_bytes() == new != before


def test_remount_reuses_the_cache(emulator: Emulator, mount_factory: Any, tmp_path: Path) -> None:
    layout = expected_layout(emulator)
    cache = tmp_path / "shared-cache"
    m = mount_factory(emulator, cache_dir=cache)
    readable = [
        (s, r) for s, r, d in all_files(layout) if d.get("rights", {}).get("download", True)
    ]
    first = {r: m.p(r).read_bytes() for _, r in readable}
    m.unmount()
    emulator.reset_stats()
    m.start()
    for _, r in readable:
        assert m.p(r).read_bytes() == first[r]
    assert downloads(emulator) == 0


@pytest.mark.parametrize(
    "faults",
    [{"range_enabled": False}, {"fail_rate": 0.2, "latency_ms": 20, "retry_after": 0}],
    ids=["no-range", "faults"],
)
def test_bytes_are_right_without_ranges_and_under_faults(
    emulator: Emulator, mount_factory: Any, faults: dict[str, Any]
) -> None:
    writable = next(p for p in emulator.api("GET", "/bimfs-demo/projects") if p["hasWriteAccess"])
    size = 24 << 20
    doc = emulator.admin(
        "POST", f"/teams/bimfs-demo/projects/{writable['id']}/blob",
        params={"fileName": "big.bin", "size": str(size), "seed": "7"},
    )  # fmt: skip
    expected = emulator.download("bimfs-demo", doc["id"])
    assert len(expected) == size
    m = mount_factory(emulator)
    path = m.p("bimfs-demo", safe_name(writable["name"]), "big.bin")
    assert path.stat().st_size == size
    emulator.set_faults(**faults)
    with open(path, "rb") as fh:
        fh.seek(size - 1000)
        assert fh.read() == expected[-1000:]
        fh.seek(0)
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(expected).digest()
    if "range_enabled" in faults:
        assert emulator.count(VERSION_DOWNLOAD, 206) == 0


def test_status_command_and_errors(mount: Mount) -> None:
    out = mount.bimfs("status", str(mount.path), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["pending"] == 0
    assert "cache" in status
    missing = mount.bimfs("status", "/nonexistent-bimfs")
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1


def test_mount_errors_are_one_line(emulator: Emulator, tmp_path: Path) -> None:
    import sys

    mp = tmp_path / "mp"
    token = tmp_path / "tok"
    token.write_text("not-a-valid-token")
    env = {k: v for k, v in os.environ.items() if k != "BIMPLUS_TOKEN"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")

    def mount_error(*extra: str, url: str = emulator.url) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "bimfs", "mount", str(mp), "--api-url", url, *extra],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr
        return result.stderr

    assert "does not exist" in mount_error()
    mp.mkdir()
    assert "token" in mount_error().lower()
    assert "rejected" in mount_error("--token-file", str(token))
    assert "reach" in mount_error("--token-file", str(token), url="http://127.0.0.1:9/v2")
    assert not os.path.ismount(mp)
    (mp / "x").write_text("x")
    assert "not empty" in mount_error("--token-file", str(token))
