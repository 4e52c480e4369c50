"""Mounting from ``/etc/fstab``: util-linux ``mount`` runs ``mount.fuse3``, which runs
``bimfs SOURCE MOUNTPOINT -o OPTIONS`` through ``/bin/sh``, with an empty environment.

The fstab file is a temporary one (``mount -T FILE``). ``mount`` gives its helper no ``PATH``, so
``/bin/sh`` finds the program only in the standard directories: the ``fuse.bimfs`` test runs in a
private mount namespace where this checkout's ``bimfs`` is bind-mounted over ``/usr/local/bin``,
as an installed one would be; the ``fuse`` test names the program by its full path
(``/path/to/bimfs#SOURCE``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import SLUG, new_project, read_status, server_docs
from tests.support.emulator import Emulator
from tests.support.processes import fusermount, pid_alive, wait_until, write_token

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) with an fstab needs root"),
    pytest.mark.skipif(shutil.which("mount.fuse3") is None, reason="needs fuse3's mount.fuse3"),
]

BIMFS = Path(sys.executable).parent / "bimfs"


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "site"
    path.mkdir()
    yield path
    if os.path.ismount(path):
        fusermount(path, lazy=True)


def fstab_line(source: str, mountpoint: Path, kind: str, options: list[str]) -> str:
    return f"{source} {mountpoint} {kind} {','.join(options)} 0 0\n"


def test_an_fstab_line_with_the_full_path_mounts_with_mount_a_and_umount(
    emulator: Emulator, tmp_path: Path, mountpoint: Path
) -> None:
    assert BIMFS.exists(), "the bimfs command of this environment"
    token = write_token(tmp_path / "token", emulator.token)
    fstab = tmp_path / "fstab"
    options = [
        f"team={SLUG}", f"token_file={token}", f"cache_dir={tmp_path / 'cache'}",
        "dir_ttl=5", "write_back_delay=0", "allow_other", "default_permissions",
        "_netdev", "nofail", "x-systemd.device-timeout=10", "defaults",
    ]  # fmt: skip
    fstab.write_text(
        "# another line first\n"
        + fstab_line(f"{BIMFS}#{emulator.url}", mountpoint, "fuse", options)
    )
    pid = new_project(emulator, "From Fstab")

    # mount -a: every line of the file that is not noauto.
    result = subprocess.run(
        ["mount", "-a", "-T", str(fstab)], env={}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(mountpoint)
    mounts = Path("/proc/self/mounts").read_text()
    line = next(m for m in mounts.splitlines() if f" {mountpoint} " in m)
    assert " fuse.bimfs " in line and "allow_other" in line and "default_permissions" in line
    status = read_status(mountpoint)
    assert status["api_url"] == emulator.url
    assert status["cache_dir"] == str(tmp_path / "cache")
    # team= made the team the root.
    assert "From Fstab" in os.listdir(mountpoint)
    (mountpoint / "From Fstab" / "boot.txt").write_bytes(b"mounted by mount(8)\n")
    wait_until(lambda: "boot.txt" in server_docs(emulator, pid), 30, "the save to arrive")

    server_pid = int(status["pid"])
    subprocess.run(["umount", str(mountpoint)], check=True)
    wait_until(lambda: not pid_alive(server_pid), 30, "the mount process to exit")
    assert emulator.download(SLUG, server_docs(emulator, pid)["boot.txt"]["id"]) == (
        b"mounted by mount(8)\n"
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_fuse_bimfs_line_with_a_named_mount(
    emulator: Emulator, tmp_path: Path, mountpoint: Path
) -> None:
    """``site /mnt/site fuse.bimfs config=FILE,...``: the source is a named mount."""
    token = write_token(tmp_path / "token", emulator.token)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[mount.site]\napi-url = "{emulator.url}"\ntoken-file = "{token}"\n'
        f'mountpoint = "{mountpoint}"\n'
    )
    fstab = tmp_path / "fstab"
    options = [f"config={config}", f"cache_dir={tmp_path / 'cache'}", "ro", "_netdev", "noauto"]
    fstab.write_text(fstab_line("site", mountpoint, "fuse.bimfs", options))
    programs = tmp_path / "bin"
    programs.mkdir()
    (programs / "bimfs").symlink_to(BIMFS)
    # In a mount namespace of its own: bimfs where sh looks for it, mount, read, unmount.
    script = f"""
set -e
mount --bind {programs} /usr/local/bin
env -i mount -T {fstab} {mountpoint}
ls {mountpoint}/{SLUG}
touch {mountpoint}/{SLUG}/x 2>/dev/null && echo writable || echo read-only
{BIMFS} unmount {mountpoint}
"""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()
    assert "Office Building" in listed
    assert listed[-1] == "read-only"
    assert not os.path.ismount(mountpoint)


def test_every_command_is_told_apart_from_the_mount_helper_form() -> None:
    """``bimfs SOURCE MOUNTPOINT`` is read as a mount unless the first word is a command."""
    import argparse

    from bimfs.cli.fstab import COMMANDS, helper_argv
    from bimfs.cli.parser import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == COMMANDS
    for command in sub.choices:
        assert helper_argv([command, "x"]) == [command, "x"]
