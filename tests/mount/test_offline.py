"""The building site: a server that stops answering, or is gone, while people work.

Real mounts against the emulator process, which is stopped with SIGSTOP (a black hole: its
socket accepts, nothing answers) or killed (connections refused). Every filesystem call must
answer within the bound (``--offline-after``, 2 s here; about 10 s by default), cached
content reads as usual, saves queue and arrive once when the server is back.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"
BOUND = 2.0
# What a call may take once offline: the bound plus FUSE and scheduling slack.
WITHIN = BOUND + 3.0


@pytest.fixture
def stoppable(emulator: Emulator) -> Iterator[Emulator]:
    yield emulator
    os.kill(emulator.pid, signal.SIGCONT)  # never leave it stopped for the teardown


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.monotonic()
    try:
        result: Any = fn()
    except OSError as exc:
        result = exc
    return time.monotonic() - start, result


def status(m: Mount) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(os.getxattr(m.path, "user.bimfs.status"))
    return data


def project(emu: Emulator, m: Mount, name: str) -> tuple[str, Path]:
    made = emu.admin("POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True})
    path = m.p(SLUG, name)
    wait_until(path.exists, 30, "the new project to show")
    return made["id"], path


def test_black_holed_server(stoppable: Emulator, mount_factory: Any) -> None:
    emu = stoppable
    m = mount_factory(emu, "--offline-after", str(BOUND), "--write-back-delay", "0.2",
                      "--dir-ttl", "1")  # fmt: skip
    pid, proj = project(emu, m, "site")
    emu.upload(SLUG, pid, "plan.txt", b"plan v1\n")
    emu.upload(SLUG, pid, "uncached.txt", b"never read\n")
    wait_until(lambda: (proj / "plan.txt").exists(), 30, "plan.txt to show")
    assert (proj / "plan.txt").read_bytes() == b"plan v1\n"  # now cached
    held = open(proj / "plan.txt", "rb")  # noqa: SIM115 - an open file across the outage
    try:
        os.kill(emu.pid, signal.SIGSTOP)
        time.sleep(1.5)  # past the directory TTL: every listing is stale now
        took, names = timed(lambda: sorted(os.listdir(proj)))
        assert took < WITHIN and names == ["plan.txt", "uncached.txt"], (took, names)
        for what, call in {
            "cat cached": lambda: (proj / "plan.txt").read_bytes(),
            "pread open": lambda: os.pread(held.fileno(), 100, 0),
            "stat": lambda: os.stat(proj / "plan.txt").st_size,
            "df": lambda: os.statvfs(proj).f_bavail,
            "ls -l": lambda: [os.stat(p) for p in proj.iterdir()],
        }.items():
            took, result = timed(call)
            assert took < WITHIN and not isinstance(result, OSError), (what, took, result)
        took, result = timed(lambda: (proj / "uncached.txt").read_bytes())
        assert took < 1.0 and isinstance(result, OSError), (took, result)
        assert result.errno in (errno.EIO, errno.ENETUNREACH)

        # Saves queue: a new file, an edit, a temp-then-rename.
        def append() -> None:
            with open(proj / "plan.txt", "ab") as fh:
                fh.write(b"offline line\n")

        sed = ["sed", "-i", "s/v1/v2/", str(proj / "plan.txt")]
        for what, call in {
            "cp new": lambda: (proj / "new.txt").write_bytes(b"written offline\n"),
            "append": append,
            "sed -i": lambda: subprocess.run(sed, check=True, timeout=30),
        }.items():
            took, result = timed(call)
            assert took < WITHIN and not isinstance(result, OSError), (what, took, result)
        doc = status(m)
        assert doc["connection"].startswith("offline since") and doc["pending"] >= 2
        assert (proj / "plan.txt").read_bytes() == b"plan v2\noffline line\n"
    finally:
        os.kill(emu.pid, signal.SIGCONT)
        held.close()
    wait_until(lambda: status(m)["online"], 60, "the mount to be online again")
    m.wait_synced(60)
    docs = {d["fileName"]: d for d in emu.attachments(SLUG, pid)}
    assert sorted(docs) == ["new.txt", "plan.txt", "uncached.txt"]
    assert emu.download(SLUG, docs["new.txt"]["id"]) == b"written offline\n"
    assert emu.download(SLUG, docs["plan.txt"]["id"]) == b"plan v2\noffline line\n"
    assert len(emu.versions(SLUG, docs["plan.txt"]["id"])) == 2  # one upload after the outage
    m.allowed_errors.append("cannot be reached")


def test_killed_server_comes_back(emulator: Emulator, mount_factory: Any) -> None:
    emu = emulator
    m = mount_factory(emu, "--offline-after", str(BOUND), "--write-back-delay", "0.2")
    pid, proj = project(emu, m, "gone")
    emu.upload(SLUG, pid, "a.txt", b"a\n")
    wait_until(lambda: (proj / "a.txt").exists(), 30, "a.txt to show")
    assert (proj / "a.txt").read_bytes() == b"a\n"
    emu.process.kill()
    emu.process.wait()
    took, result = timed(lambda: (proj / "b.txt").write_bytes(b"b\n"))
    assert took < WITHIN and not isinstance(result, OSError), (took, result)
    took, result = timed(lambda: (proj / "a.txt").read_bytes())
    assert took < WITHIN and result == b"a\n", (took, result)
    wait_until(lambda: not status(m)["online"], 30, "the mount to notice")
    emu.restart()  # same data, same port
    wait_until(lambda: status(m)["online"], 60, "the mount to be online again")
    m.wait_synced(60)
    names = sorted(d["fileName"] for d in emu.attachments(SLUG, pid))
    assert names == ["a.txt", "b.txt"]
    m.allowed_errors.append("cannot be reached")


def test_mount_starts_offline_from_the_last_known_tree(
    stoppable: Emulator, mount_factory: Any, tmp_path: Path
) -> None:
    emu = stoppable
    cache = tmp_path / "site-cache"
    first = mount_factory(emu, "--write-back-delay", "0.2", cache_dir=cache)
    pid, proj = project(emu, first, "known")
    emu.upload(SLUG, pid, "a.txt", b"a v1\n")
    emu.upload(SLUG, pid, "unread.txt", b"not read\n")
    wait_until(lambda: (proj / "a.txt").exists(), 30, "a.txt to show")
    assert (proj / "a.txt").read_bytes() == b"a v1\n"
    first.unmount()  # the listings it saw stay in its cache dir

    # Another cache dir never saw the account: refused, one line, as before.
    token = first.root / "token"
    mnt = tmp_path / "offline-mnt"
    mnt.mkdir()

    def mount(cache_dir: Path) -> subprocess.CompletedProcess[str]:
        return first.bimfs(
            "mount", str(mnt), "--api-url", emu.url, "--token-file", str(token),
            "--cache-dir", str(cache_dir), "--offline-after", str(BOUND),
            "--write-back-delay", "0.2", timeout=60,
        )  # fmt: skip

    try:
        offline_mount(emu, mount, mnt, cache, tmp_path / "fresh-cache", pid)
    finally:
        # Whatever failed, leave no mount behind.
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)


def offline_mount(
    emu: Emulator,
    mount: Callable[[Path], subprocess.CompletedProcess[str]],
    mnt: Path,
    cache: Path,
    fresh: Path,
    pid: str,
) -> None:
    os.kill(emu.pid, signal.SIGSTOP)
    try:
        refused = mount(fresh)
        assert refused.returncode != 0
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "cannot reach the API" in refused.stderr or "failed" in refused.stderr

        took, mounted = timed(lambda: mount(cache))
        assert mounted.returncode == 0, mounted.stderr
        assert took < WITHIN + 5, took
        [line] = mounted.stderr.splitlines()
        assert "mounted offline" in line, line
        here = mnt / SLUG / "known"
        took, names = timed(lambda: sorted(os.listdir(here)))
        assert took < WITHIN and names == ["a.txt", "unread.txt"], (took, names)
        assert (here / "a.txt").read_bytes() == b"a v1\n"
        assert (here / "a.txt").stat().st_size == 5
        took, result = timed(lambda: (here / "unread.txt").read_bytes())
        assert took < WITHIN and isinstance(result, OSError), (took, result)
        (here / "b.txt").write_bytes(b"made offline\n")
        with open(here / "a.txt", "ab") as fh:
            fh.write(b"a offline\n")
        doc = json.loads(os.getxattr(mnt, "user.bimfs.status"))
        assert doc["connection"].startswith("offline since") and doc["pending"] == 2, doc
    finally:
        os.kill(emu.pid, signal.SIGCONT)
    try:
        wait_until(
            lambda: json.loads(os.getxattr(mnt, "user.bimfs.status"))["pending"] == 0,
            60,
            "the saves made offline to be sent",
        )
        docs = {d["fileName"]: d for d in emu.attachments(SLUG, pid)}
        assert sorted(docs) == ["a.txt", "b.txt", "unread.txt"]
        assert emu.download(SLUG, docs["b.txt"]["id"]) == b"made offline\n"
        assert emu.download(SLUG, docs["a.txt"]["id"]) == b"a v1\na offline\n"
        assert len(emu.versions(SLUG, docs["a.txt"]["id"])) == 2
        assert (mnt / SLUG / "known" / "unread.txt").read_bytes() == b"not read\n"
    finally:
        done = subprocess.run(
            [sys.executable, "-m", "bimfs", "unmount", str(mnt)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
