"""A cache on a small, full disk: reads still work, saves fail with ENOSPC, the mount recovers.

The cache dir is on an 8 MiB tmpfs mounted for the test (root only). The documents read are
larger than that disk; the disk is filled with a file of the test's own to make saves fail, then
emptied again, and the same mount must read and save as before, leaving no orphan in the cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.disk import fill, small_disk, used_bytes
from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"
DISK = 8 << 20
BIG = 48 << 20  # six times the cache disk
DOWNLOAD = "GET /v2/{slug}/attachments/{id}/versions/{n}/download"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """The small disk; requested before the mount, so unmounted after it."""
    with small_disk(tmp_path / "small-disk", DISK) as path:
        yield path


@pytest.fixture
def cache_mount(disk: Path, emulator: Emulator, mount_factory: Callable[..., Mount]) -> Mount:
    """A mount of the demo account whose cache dir is on the small disk (its budget is larger
    than the disk)."""
    return mount_factory(
        emulator,
        "--dir-ttl", "1", "--write-back-delay", "0.2", "--cache-size", "64M",
        cache_dir=disk / "cache",
    )  # fmt: skip


def new_project(emu: Emulator, name: str) -> str:
    project = emu.admin(
        "POST", f"/teams/{SLUG}/projects", json={"name": name, "hasWriteAccess": True}
    )
    return str(project["id"])


def sha(path: Path) -> str:
    """The sha256 of a file, read in pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def leftovers(cache: Path) -> list[str]:
    """Files in the cache dir that no finished operation may leave behind: partial or trashed
    content entries, staging files, half-written journal records, unsaved or unsent content."""
    found = []
    for dirpath, _dirs, files in os.walk(cache):
        for name in files:
            if name.endswith((".part", ".deleted", ".staging", ".tmp", ".unsaved", ".data")):
                found.append(os.path.relpath(os.path.join(dirpath, name), cache))
    return sorted(found)


def test_a_document_larger_than_the_cache_disk_is_read(
    cache_mount: Mount, emulator: Emulator, disk: Path
) -> None:
    pid = new_project(emulator, "big-reads")
    data = os.urandom(BIG)
    emulator.upload(SLUG, pid, "model.ifc", data)
    emulator.upload(SLUG, pid, "small.txt", b"hello" * 1000)
    expected = hashlib.sha256(data).hexdigest()
    del data
    big = cache_mount.p(SLUG, "big-reads", "model.ifc")
    small = cache_mount.p(SLUG, "big-reads", "small.txt")
    assert small.read_bytes() == b"hello" * 1000
    before = cache_mount.peak_rss()
    sent = emulator.stats()["bytes_out"]
    assert sha(big) == expected
    assert emulator.stats()["bytes_out"] - sent >= BIG
    assert emulator.count(DOWNLOAD) >= 2
    # With bounded memory: the mount process never held the document.
    assert cache_mount.peak_rss() - before < BIG // 2
    # Not kept (the disk could not hold it), and nothing of it left behind once it is closed;
    # the small document is kept as usual.
    wait_until(lambda: not leftovers(disk / "cache"), 10, "no partial cache files")
    assert used_bytes(disk) < 2 << 20
    cache_mount.unmount()
    cache_mount.start()
    downloads = emulator.count(DOWNLOAD)
    assert small.read_bytes() == b"hello" * 1000
    assert emulator.count(DOWNLOAD) == downloads
    # A later read fetches it again, and is right again.
    sent = emulator.stats()["bytes_out"]
    assert sha(big) == expected
    assert emulator.stats()["bytes_out"] - sent >= BIG
    assert leftovers(disk / "cache") == []


def test_the_cache_disk_filling_up_during_a_read(
    cache_mount: Mount, emulator: Emulator, disk: Path
) -> None:
    pid = new_project(emulator, "filling")
    data = os.urandom(5 << 20)  # fits on the disk when the read starts
    other = os.urandom(4 << 20)
    emulator.upload(SLUG, pid, "plan.pdf", data)
    emulator.upload(SLUG, pid, "other.pdf", other)
    path = cache_mount.p(SLUG, "filling", "plan.pdf")
    wait_until(path.exists, 10, "plan.pdf listed")
    emulator.set_faults(stream_rate=2 << 20)
    try:
        with open(path, "rb") as f:
            head = f.read(256 << 10)
            filler = fill(disk / "filler")
            rest = f.read()
    finally:
        emulator.set_faults(stream_rate=0)
    assert head + rest == data
    # Its partial file was deleted: the disk holds little more than the test's own file.
    wait_until(lambda: not leftovers(disk / "cache"), 10, "no partial cache files")
    os.unlink(filler)
    assert used_bytes(disk) < 2 << 20
    # Room again: the next read keeps what it reads.
    assert sha(cache_mount.p(SLUG, "filling", "other.pdf")) == hashlib.sha256(other).hexdigest()
    # Complete once the bytes read are on the cache disk (written behind the reader when slow).
    wait_until(lambda: cache_mount.status()["cache"]["complete_entries"] == 1, 30, "other.pdf kept")
    cache_mount.unmount()
    cache_mount.start()
    downloads = emulator.count(DOWNLOAD)
    assert sha(cache_mount.p(SLUG, "filling", "other.pdf")) == hashlib.sha256(other).hexdigest()
    assert emulator.count(DOWNLOAD) == downloads


def test_a_full_cache_disk_fails_saves_and_recovers_without_remount(
    cache_mount: Mount, emulator: Emulator, disk: Path
) -> None:
    pid = new_project(emulator, "full-disk")
    big = os.urandom(BIG)
    emulator.upload(SLUG, pid, "model.ifc", big)
    emulator.upload(SLUG, pid, "notes.txt", b"first notes\n")
    project = cache_mount.p(SLUG, "full-disk")
    assert (project / "notes.txt").read_bytes() == b"first notes\n"
    filler = fill(disk / "filler")

    # A read needs no room: it is passed through.
    assert sha(project / "model.ifc") == hashlib.sha256(big).hexdigest()

    # A save needs room: it fails with ENOSPC.
    content = os.urandom(1 << 20)
    with pytest.raises(OSError) as failed, open(project / "report.bin", "wb") as f:
        f.write(content)
    assert failed.value.errno == errno.ENOSPC

    # Room again: the same mount saves and reads as before.
    os.unlink(filler)
    (project / "report.bin").write_bytes(content)
    (project / "notes.txt").write_bytes(b"second notes\n")
    cache_mount.wait_synced()
    assert emulator.download(SLUG, emulator.attachment(SLUG, pid, "report.bin")["id"]) == content
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    assert emulator.download(SLUG, notes["id"]) == b"second notes\n"
    assert (project / "report.bin").read_bytes() == content
    assert sha(project / "model.ifc") == hashlib.sha256(big).hexdigest()
    assert leftovers(disk / "cache") == []


def test_mounting_with_a_full_cache_disk(
    cache_mount: Mount, emulator: Emulator, disk: Path
) -> None:
    pid = new_project(emulator, "mount-full")
    emulator.upload(SLUG, pid, "notes.txt", b"notes\n")
    data = os.urandom(3 << 20)
    emulator.upload(SLUG, pid, "plan.pdf", data)
    project = cache_mount.p(SLUG, "mount-full")
    assert (project / "notes.txt").read_bytes() == b"notes\n"
    cache_mount.unmount()
    filler = fill(disk / "filler")
    cache_mount.start()
    assert (project / "notes.txt").read_bytes() == b"notes\n"
    assert sha(project / "plan.pdf") == hashlib.sha256(data).hexdigest()
    os.unlink(filler)
    (project / "notes.txt").write_bytes(b"more notes\n")
    cache_mount.wait_synced()
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    assert emulator.download(SLUG, notes["id"]) == b"more notes\n"
    assert leftovers(disk / "cache") == []
