"""``bimfs status [MOUNTPOINT] [--json]``: pending and failed uploads, transfers in progress,
cache use; every mount when no mountpoint is named."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import (
    DEADLINE,
    SLUG,
    Daemon,
    new_project,
    one_error_line,
    read_status,
    run_bimfs,
    server_docs,
    server_sha256,
    write_random,
)
from tests.cli.proxy import GateProxy
from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

MiB = 1 << 20


def status_json(*args: str | Path) -> Any:
    result = run_bimfs("status", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def every_mount(ours: tuple[Path, ...], *args: str) -> str:
    """``bimfs status`` of every mount; a dead mount of something else on this machine
    may make it exit 1, but never one of ``ours``."""
    result = run_bimfs("status", *args)
    if result.returncode != 0:
        for line in result.stderr.splitlines():
            assert not any(str(path) in line for path in ours), result.stderr
            assert "not responding" in line, result.stderr
    return result.stdout


def status_text(*args: str | Path) -> str:
    result = run_bimfs("status", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_status_shows_pending_uploads(emulator: Emulator, daemon: Callable[..., Daemon]) -> None:
    new_project(emulator, "Pending")
    d = daemon("--write-back-delay", "60")
    d.p(SLUG, "Pending", "one.txt").write_bytes(b"1\n")
    d.p(SLUG, "Pending", "two.txt").write_bytes(b"22\n")

    status = status_json(d.path)
    assert status["mountpoint"] == str(d.path)
    assert status["api_url"] == emulator.url
    assert status["pending"] == 2
    assert status["failed"] == []
    assert sorted((u["path"], u["state"], u["size"]) for u in status["uploads"]) == [
        ("/bimfs-demo/Pending/one.txt", "pending", 2),
        ("/bimfs-demo/Pending/two.txt", "pending", 3),
    ]
    text = status_text(d.path)
    assert text.splitlines()[0] == f"{d.path}  ({emulator.url})"
    assert "  pending uploads: 2" in text.splitlines()


def test_status_shows_failed_upload_with_reason(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    emulator.admin("PUT", "/teams/acme-build", json={"totalStorage": 1})
    pid = emulator.project_id("acme-build", "Tender Documents")
    d = daemon("--write-back-delay", "0.2")
    path = d.p("acme-build", "Tender Documents", "over-quota.txt")
    path.write_bytes(b"too much for this team\n")
    wait_until(lambda: read_status(d.path)["failed"], DEADLINE, "the upload to fail")

    status = status_json(d.path)
    assert status["pending"] == 0
    [failed] = status["failed"]
    assert failed["path"] == "/acme-build/Tender Documents/over-quota.txt"
    assert "quota" in failed["reason"]
    text = status_text(d.path)
    assert f"  failed: /acme-build/Tender Documents/over-quota.txt: {failed['reason']}" in (
        text.splitlines()
    )
    assert os.getxattr(path, "user.bimfs.state").decode() == f"failed: {failed['reason']}"
    assert path.read_bytes() == b"too much for this team\n"  # kept, never dropped silently

    # unmount does not wait for a failed upload; it says what stays in the journal.
    result = run_bimfs("unmount", d.path)
    assert result.returncode == 0, result.stderr
    assert "over-quota.txt" in result.stderr and "quota" in result.stderr
    assert not os.path.ismount(d.path)
    assert "over-quota.txt" not in server_docs(emulator, pid, "acme-build")


def test_status_shows_upload_in_progress(
    emulator: Emulator, daemon: Callable[..., Daemon], proxy: GateProxy, tmp_path: Path
) -> None:
    size = 32 * MiB
    pid = new_project(emulator, "Big Upload")
    d = daemon("--write-back-delay", "0.2", api_url=proxy.url)
    project = d.p(SLUG, "Big Upload")
    assert os.listdir(project) == []
    # Let the upload start, then hold it part-way until the status has been seen.
    proxy.hold_after(2 * MiB)
    digest = write_random(project / "big.bin", size)

    def in_progress() -> dict[str, Any] | None:
        for t in read_status(d.path)["transfers"]:
            if t["state"] == "uploading" and t["sent"] > 0:
                return dict(t)
        return None

    transfer = wait_until(in_progress, DEADLINE, "the upload to be in progress")
    status = status_json(d.path)
    [t] = status["transfers"]
    assert t["name"] == "big.bin"
    assert t["state"] == "uploading"
    assert 0 < t["sent"] < size and t["size"] == size
    assert t["rate"] > 0
    assert transfer["sent"] <= t["sent"]
    assert status["pending"] == 1
    [line] = [ln for ln in status_text(d.path).splitlines() if "uploading" in ln]
    assert "/32.0 MiB" in line, line

    proxy.release()
    wait_until(lambda: read_status(d.path)["pending"] == 0, DEADLINE, "the upload to finish")
    assert read_status(d.path)["transfers"] == []
    doc = server_docs(emulator, pid)["big.bin"]
    assert server_sha256(emulator, SLUG, doc["id"]) == (size, digest)
    assert "big.bin" in line, line  # the user is told which file is being sent


def test_status_shows_cache_use(emulator: Emulator, daemon: Callable[..., Daemon]) -> None:
    pid = emulator.project_id(SLUG, "Empty Project")
    emulator.admin(
        "POST",
        f"/teams/{SLUG}/projects/{pid}/blob",
        params={"fileName": "blob.bin", "size": str(3 * MiB)},
    )
    d = daemon("--cache-size", "64M")
    with open(d.p(SLUG, "Empty Project", "blob.bin"), "rb") as fh:
        while fh.read(MiB):
            pass
    wait_until(
        lambda: read_status(d.path)["cache"]["bytes_used"] >= 3 * MiB,
        DEADLINE,
        "the file in the cache",
    )
    cache = status_json(d.path)["cache"]
    assert cache["budget"] == 64 * MiB
    assert 3 * MiB <= cache["bytes_used"] <= 64 * MiB
    line = next(ln for ln in status_text(d.path).splitlines() if "cache:" in ln)
    assert line.strip() == f"cache: 3.0 MiB of 64.0 MiB in {d.cache_dir}", line


def test_status_without_mountpoint_lists_every_mount(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    first = daemon()
    second = daemon("--team", "acme-build")
    ours_paths = (first.path, second.path)
    listed = json.loads(every_mount(ours_paths, "--json"))
    assert isinstance(listed, list)
    ours = {
        s["mountpoint"]: s for s in listed if s["mountpoint"] in (str(first.path), str(second.path))
    }
    assert set(ours) == {str(first.path), str(second.path)}
    assert ours[str(first.path)]["cache_dir"] == str(first.cache_dir)
    text = every_mount(ours_paths)
    assert f"{first.path}  ({emulator.url})" in text.splitlines()
    assert f"{second.path}  ({emulator.url})" in text.splitlines()

    # Naming one mount shows that one only, as an object.
    assert status_json(second.path)["mountpoint"] == str(second.path)


def test_status_of_something_else_fails_with_one_line(tmp_path: Path) -> None:
    result = run_bimfs("status", tmp_path)
    assert f"{tmp_path} is not a bimfs mount" in one_error_line(result)


def test_status_still_lists_mounts_beside_a_dead_one(
    emulator: Emulator,
    daemon: Callable[..., Daemon],
    mount_factory: Callable[..., Mount],
) -> None:
    """A mount whose process died (kill -9) leaves a dead mountpoint behind; ``bimfs status``
    must still show the working mounts."""
    alive = daemon()
    dead = mount_factory(emulator)
    assert dead.process is not None
    dead.process.kill()
    dead.process.wait()
    dead.process = None
    try:
        assert f" {dead.path} fuse.bimfs " in Path("/proc/self/mounts").read_text()
        result = run_bimfs("status")
        # The exit code may say that one mount is broken; the working one must be shown.
        assert f"{alive.path}  ({emulator.url})" in result.stdout.splitlines(), result.stderr
        assert str(dead.path) in result.stdout + result.stderr
    finally:
        subprocess.run(["fusermount3", "-uz", str(dead.path)], capture_output=True, check=False)
