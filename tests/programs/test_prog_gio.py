"""GIO saves (``gio save``, ``gio copy``: what GNOME programs do through ``g_file_replace``).

Over an existing local file GIO saves like this (strace of gio 2.74 on the mount):

    openat(target, O_WRONLY|O_CREAT|O_EXCL)          = EEXIST
    openat(target, O_WRONLY|O_CREAT|O_NOFOLLOW)      = 3   (to check what it replaces)
    openat(".goutputstream-XXXXXX", O_WRONLY|O_CREAT|O_EXCL, 0666) = 4
    fchown(4), fchmod(4, mode of the target)
    close(3)
    write(4, ...)...
    fsync(4)
    rename(".goutputstream-XXXXXX", target)           <- while 4 is still open
    close(4)                                          <- must return 0: gio fails otherwise

The temp name is local-only (INTERFACES §5) and the rename makes its bytes the target's next
version, so the server must see exactly one new version and never a ``.goutputstream-*``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.programs.helpers import Project, ok, remount
from tests.support.mount import Mount
from tests.support.server import NEW_VERSION, changes

pytestmark = pytest.mark.mount


def check_one_new_version(p: Project, name: str, old: bytes, new: bytes) -> None:
    p.sync()
    assert p.server.paths() == [name]  # no .goutputstream-* document
    assert p.server.versions(name) == [1, 2]
    assert p.server.content(name) == new
    assert p.server.content(name, 1) == old
    assert changes(p.emu) == {NEW_VERSION: 1}


def check_after_remount(p: Project, name: str, new: bytes) -> None:
    remount(p.mount)
    assert (p.dir / name).read_bytes() == new
    assert [n for n in p.dir.iterdir() if n.name.startswith(".goutputstream-")] == []
    assert p.server.paths() == [name]
    assert p.server.versions(name) == [1, 2]


def test_gio_save_over_a_document_makes_one_version(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project]
) -> None:
    p = new_project(mount_factory())
    p.seed("README", b"first\n")
    p.wait_visible("README")
    p.emu.reset_stats()
    ok(["gio", "save", p.dir / "README"], input=b"x\n")  # exit 0: every close() succeeded
    assert (p.dir / "README").read_bytes() == b"x\n"
    check_one_new_version(p, "README", b"first\n", b"x\n")
    check_after_remount(p, "README", b"x\n")


def test_gio_copy_over_a_document_makes_one_version(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project], tmp_path: Path
) -> None:
    p = new_project(mount_factory())
    p.seed("plan.txt", b"old plan\n")
    p.wait_visible("plan.txt")
    src = tmp_path / "plan.txt"
    src.write_bytes(b"new plan\n" * 5000)
    p.emu.reset_stats()
    ok(["gio", "copy", src, p.dir / "plan.txt"])
    assert (p.dir / "plan.txt").read_bytes() == src.read_bytes()
    check_one_new_version(p, "plan.txt", b"old plan\n", src.read_bytes())
    check_after_remount(p, "plan.txt", src.read_bytes())
