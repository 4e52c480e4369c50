"""Real programs (gio, LibreOffice, rsync, tar, unzip, mv, flock, sqlite3, git, fio, cp, find,
du) through a real mount, checked on the server through the emulator's API.

One emulator and one mount serve the whole package; every test gets its own empty project (team
``programs``), so tests do not see each other's documents. The emulator's request counters are
zeroed when a test's project is created, so a test can check exactly what was sent for it (the
tests of this package run one after another). Tests that remount get a mount of their own from
``mount_factory``. The shared mount's log is checked after each test for the lines that test
caused.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.programs.helpers import MOUNT_ARGS, SLUG, Project
from tests.support.emulator import Emulator, start_emulator
from tests.support.mount import Mount, finish_mounts

_names = itertools.count(1)


@pytest.fixture(scope="package")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator for the package: no seed data, one team ``programs``."""
    emu = start_emulator(tmp_path_factory.mktemp("programs-emulator"), seed="none")
    try:
        emu.admin("POST", "/teams", json={"slug": SLUG, "name": "Programs", "totalStorage": 0})
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="package")
def shared_mount(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount of the whole account for the package (its log is checked per test)."""
    m = Mount(emulator, tmp_path_factory.mktemp("programs-mount"), MOUNT_ARGS)
    try:
        yield m
    finally:
        m.unmount()


@pytest.fixture
def mount_factory(emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """``mount_factory(*args)`` -> a new mount of its own (default ``MOUNT_ARGS``), unmounted
    and its log checked at teardown."""
    mounts: list[Mount] = []

    def factory(*args: str) -> Mount:
        m = Mount(emulator, tmp_path / f"mount{len(mounts)}", args or MOUNT_ARGS)
        mounts.append(m)
        return m

    yield factory
    finish_mounts(mounts)


@pytest.fixture
def new_project(emulator: Emulator, request: pytest.FixtureRequest) -> Callable[..., Project]:
    """``new_project(mount)`` -> a fresh project seen through ``mount``; the emulator's
    request counters are zeroed."""

    def factory(mount: Mount) -> Project:
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:48]
        p = Project(emulator, mount, f"{next(_names):03}-{label}")
        emulator.reset_stats()
        return p

    return factory


@pytest.fixture
def project(shared_mount: Mount, new_project: Callable[..., Project]) -> Iterator[Project]:
    """A fresh project on the shared mount. At teardown the mount must still be mounted and its
    log must hold no error or traceback written during the test."""
    if shared_mount.process is None or shared_mount.process.poll() is not None:
        shared_mount.kill()  # a previous test killed it: start it again for this one
        shared_mount.start()
    start = len(shared_mount.log())
    yield new_project(shared_mount)
    text = shared_mount.log()[start:]
    bad = [
        line for line in text.splitlines()
        if (" ERROR " in line or "Traceback" in line or " CRITICAL " in line)
        and not any(allowed in line for allowed in shared_mount.allowed_errors)
    ]  # fmt: skip
    shared_mount.allowed_errors.clear()
    problems = []
    if bad:
        problems.append("the mount logged errors during the test:\n" + text)
    if not os.path.ismount(shared_mount.path):
        problems.append("the shared mount is gone:\n" + text)
    if problems:
        pytest.fail("\n".join(problems))
