"""Pins for offline work through a real mount: ``bimfs pin`` downloads everything under a path,
keeps it out of eviction and current, within the cache budget; ``bimfs unpin`` lets it go.
Checked with the server stopped (bytes read from the mount), through the emulator's request
counters, and through the mount's extended attributes and status."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until
from tests.support.server import ServerProject, downloads

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"
MIB = 1 << 20


def pin_progress(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(os.getxattr(path, "user.bimfs.pin"))
    return data


def pinned(path: Path) -> str:
    return os.getxattr(path, "user.bimfs.pinned").decode()


def read_uncached(path: Path) -> bytes:
    """The file's bytes, after dropping the kernel's pages of it: the read reaches bimfs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while chunk := os.read(fd, MIB):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def within_budget(m: Mount) -> None:
    """Wait until the cache is back within its 16 MiB budget (the close of a file reaches the
    mount after ``close()`` returned)."""
    wait_until(
        lambda: m.status()["cache"]["bytes_used"] <= 16 * MIB, 10,
        lambda: f"the cache within its budget: {m.status()['cache']}",
    )  # fmt: skip


def new_project(emu: Emulator, m: Mount, name: str, docs: dict[str, bytes]) -> ServerProject:
    made = emu.admin("POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True})
    project = ServerProject(emu, SLUG, made["id"])
    for file_name, data in docs.items():
        project.upload(file_name, data)
    wait_until(lambda: all(m.p(SLUG, name, n).exists() for n in docs), 30, f"{name} to show")
    return project


def server_files(project: ServerProject) -> dict[str, bytes]:
    """Every document the user may download, by path, with its latest bytes."""
    return {
        path: project.content(path)
        for path, doc in project.tree().items()
        if doc.get("rights", {}).get("download", True)
    }


def test_pinned_project_reads_offline_after_a_remount(emulator: Emulator, mount: Mount) -> None:
    """Pin a project (folders included): everything is downloaded with progress lines, the pin
    survives a remount, and with the server gone every pinned file reads byte-exact."""
    office = mount.p(SLUG, "Office Building")
    project = ServerProject(emulator, SLUG, emulator.project_id(SLUG, "Office Building"))
    expected = server_files(project)
    assert "Drawings/Details/detail-02.txt" in expected and len(expected) >= 10

    result = mount.bimfs("pin", str(office))
    assert result.returncode == 0, result.stderr
    assert f"{office}: {len(expected)}/{len(expected)} documents" in result.stdout
    assert "complete" in result.stdout.splitlines()[-1]
    assert pinned(office) == "1" and pinned(office / "Drawings" / "ground-floor.pdf") == "1"
    assert pinned(mount.p(SLUG, "Residential Complex")) == "0"
    total = sum(len(data) for data in expected.values())
    progress = pin_progress(office / "plan.pdf")
    assert progress["path"] == str(office) and progress["complete"]
    assert (progress["files"], progress["bytes"], progress["cached_bytes"]) == (
        len(expected), total, total,
    )  # fmt: skip

    mount.restart()
    assert pinned(office) == "1"
    wait_until(lambda: pin_progress(office)["complete"], 30, "the pin to be checked again")
    status = mount.status()
    assert [(p["path"], p["complete"]) for p in status["pins"]] == [(str(office), True)]
    assert status["cache"]["kept_bytes"] >= total
    shown = mount.bimfs("status", str(mount.path))
    assert f"pinned: {office}" in shown.stdout and "complete" in shown.stdout

    emulator.stop()
    for rel, data in expected.items():
        assert read_uncached(office / rel) == data, rel
    with pytest.raises(PermissionError):
        (office / "confidential.pdf").read_bytes()  # no download right: never pinned
    mount.allowed_errors.append("server cannot be reached")


def test_pin_past_the_budget_is_refused(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    """A pin whose documents do not fit the cache budget is refused with one clear line;
    nothing is pinned or downloaded."""
    m = mount_factory(emulator, "--dir-ttl", "1", "--cache-size", "16M")
    docs = {"a.bin": secrets.token_bytes(9 * MIB), "b.bin": secrets.token_bytes(9 * MIB)}
    new_project(emulator, m, "Too Big", docs)
    path = m.p(SLUG, "Too Big")
    emulator.reset_stats()

    result = m.bimfs("pin", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "18.0 MiB" in lines[0] and "16.0 MiB" in lines[0] and "--cache-size" in lines[0]
    assert pinned(path) == "0"
    assert m.status()["pins"] == []
    assert downloads(emulator) == 0

    # One document fits: pinned and downloaded.
    result = m.bimfs("pin", str(path / "a.bin"))
    assert result.returncode == 0, result.stderr
    assert pinned(path / "a.bin") == "1" and pinned(path / "b.bin") == "0"
    # Its folder is refused now as well, and unpinning a file pinned through it is explained.
    result = m.bimfs("pin", str(path))
    assert result.returncode == 1 and "cache budget" in result.stderr


def test_unpin_lets_eviction_free_the_space(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    """Pinned documents stay cached while other reads fill the budget; once unpinned, the
    next reads evict them (reading them again downloads again)."""
    m = mount_factory(emulator, "--dir-ttl", "1", "--cache-size", "16M")
    kept = {f"part{n}.bin": secrets.token_bytes(4 * MIB) for n in range(3)}
    new_project(emulator, m, "Kept", kept)
    new_project(emulator, m, "Other", {"big.bin": secrets.token_bytes(10 * MIB)})
    kept_dir, big = m.p(SLUG, "Kept"), m.p(SLUG, "Other", "big.bin")
    result = m.bimfs("pin", str(kept_dir))
    assert result.returncode == 0, result.stderr

    read_uncached(big)  # 12 MiB pinned + 10 MiB read: over the 16 MiB budget
    within_budget(m)
    emulator.reset_stats()
    for name, data in kept.items():
        assert read_uncached(kept_dir / name) == data
    assert downloads(emulator) == 0  # the pinned documents were kept

    result = m.bimfs("unpin", str(kept_dir / "part0.bin"))
    assert result.returncode == 1 and f"pinned through {kept_dir}" in result.stderr
    result = m.bimfs("unpin", str(kept_dir))
    assert result.returncode == 0, result.stderr
    assert pinned(kept_dir) == "0" and m.status()["pins"] == []
    assert m.status()["cache"]["kept_bytes"] == 0

    read_uncached(big)
    within_budget(m)
    emulator.reset_stats()
    for name, data in kept.items():
        assert read_uncached(kept_dir / name) == data
    assert downloads(emulator) > 0  # evicted to make room once unpinned


def test_new_version_of_a_pinned_file_is_fetched_in_the_background(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    """A colleague's new version of a pinned document is downloaded without anyone reading
    it (at the next pin refresh): with the server gone afterwards, the file reads as the new
    version."""
    mount = mount_factory(emulator, "--dir-ttl", "1", "--pin-refresh", "1")
    first, second = secrets.token_bytes(300_000), secrets.token_bytes(500_000)
    project = new_project(emulator, mount, "Shared", {"model.ifc": first})
    path = mount.p(SLUG, "Shared", "model.ifc")
    result = mount.bimfs("pin", str(path))
    assert result.returncode == 0, result.stderr
    assert read_uncached(path) == first

    project.add_version("model.ifc", second)
    wait_until(
        lambda: pin_progress(path)["bytes"] == len(second) and pin_progress(path)["complete"],
        30, lambda: f"the new version to be fetched: {pin_progress(path)}",
    )  # fmt: skip
    assert os.getxattr(path, "user.bimplus.version") == b"2"

    emulator.stop()
    assert read_uncached(path) == second
    mount.allowed_errors.append("server cannot be reached")


def test_pin_errors(mount: Mount, tmp_path: Path) -> None:
    """Paths that cannot be pinned get one clear line each."""
    result = mount.bimfs("pin", str(tmp_path))
    assert result.returncode == 1 and "not in a bimfs mount" in result.stderr
    versions = mount.p(SLUG, "Office Building", "versions", "plan.pdf")
    with pytest.raises(OSError) as info:
        os.setxattr(versions, "user.bimfs.pinned", b"1")
    assert info.value.errno == errno.EINVAL
    result = mount.bimfs("pin", str(versions))
    assert result.returncode == 1 and "only documents and their folders" in result.stderr
