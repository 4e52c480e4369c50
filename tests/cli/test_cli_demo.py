"""``bimfs demo`` and ``scripts/demo`` without a terminal: show the demo tree, then stop and leave
no mount and no emulator behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import (
    DEADLINE,
    base_env,
    processes_mentioning,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[2]

# Lines of the printed tree (indentation shows the depth).
EXPECTED_LINES = [
    "acme-build/",
    "bimfs-demo/",
    "  Office Building/",
    "    plan.pdf  (957 B)",
    "    notes.txt  ",
    "    Drawings/",
    "      ground-floor.pdf  ",
    "      Details/",
    "  Archive 2019/",
    "  Bridge Renovation/",
    "    bridge.ifc  ",
]


def check_demo_run(result: subprocess.CompletedProcess[str], mountpoint: Path, data: Path) -> None:
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "emulator: http://127.0.0.1:" in out
    assert f"mounted at {mountpoint}" in out
    lines = out.splitlines()
    for expected in EXPECTED_LINES:
        assert any(line.startswith(expected) for line in lines), f"{expected!r} not in\n{out}"
    # versions/ directories are not expanded
    assert not any(".v1." in line for line in lines), out
    # Nothing left behind: no mount, no emulator, no mount process.
    assert not os.path.ismount(mountpoint)
    wait_until(lambda: not processes_mentioning(str(data)), DEADLINE, "no demo process left")
    assert not processes_mentioning(str(mountpoint))


def test_bimfs_demo_without_terminal(tmp_path: Path) -> None:
    mountpoint = tmp_path / "demo-mnt"
    data = tmp_path / "demo-data"
    result = subprocess.run(
        [sys.executable, "-m", "bimfs", "demo", str(mountpoint), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=base_env(tmp_path),
    )
    check_demo_run(result, mountpoint, data)


def test_scripts_demo_without_terminal(tmp_path: Path) -> None:
    """The real ``scripts/demo`` and ``scripts/_install`` in a checkout whose installation is
    already done (so the run neither installs packages nor touches the shared virtualenv)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("demo", "_install"):
        shutil.copy2(ROOT / "scripts" / name, checkout / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    venv_bin = checkout / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("python", "bimfs"):
        (venv_bin / tool).symlink_to(Path(sys.executable).parent / tool)
    # The installer's stamp: newer than pyproject.toml, so nothing is installed.
    stamp = checkout / ".venv" / ".bimfs-installed-emulator"
    stamp.touch()
    old = stamp.stat().st_mtime - 60
    os.utime(checkout / "pyproject.toml", (old, old))

    mountpoint = tmp_path / "demo-mnt"
    data = tmp_path / "demo-data"
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "demo"), str(mountpoint), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=base_env(tmp_path),
    )
    assert "installing" not in result.stderr, result.stderr
    check_demo_run(result, mountpoint, data)
