"""Shared fixtures. The emulator fixtures start a real emulator process per test; the mount
factory a real ``bimfs mount --foreground`` per call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Emulator, start_emulator
from tests.support.mount import Mount, finish_mounts

# -- emulator fixtures ------------------------------------------------------------------------


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A fresh emulator (seed ``demo``, fixed token ``test-token``) on its own data dir."""
    emu = start_emulator(tmp_path / "emulator-data")
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Start emulators with extra CLI args: ``emulator_factory("--fail-rate", "0.3")``;
    keyword arguments ``token``, ``seed`` and ``data_dir`` as in ``start_emulator``.
    All are stopped at teardown."""
    started: list[Emulator] = []

    def factory(*args: str, data_dir: Path | None = None, **kwargs: str) -> Emulator:
        path = data_dir or tmp_path / f"emulator-data-{len(started)}"
        emu = start_emulator(path, *args, **kwargs)
        started.append(emu)
        return emu

    try:
        yield factory
    finally:
        for emu in started:
            emu.stop()


# -- mount fixtures -----------------------------------------------------------------------------


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """``mount_factory(emulator, *args, cache_dir=None)`` -> a ready ``Mount`` with its own
    dirs under ``tmp_path``; every one is unmounted at teardown and its log checked."""
    mounts: list[Mount] = []

    def factory(emulator: Emulator, *args: str, cache_dir: Path | None = None) -> Mount:
        m = Mount(emulator, tmp_path / f"m{len(mounts)}", args, cache_dir=cache_dir)
        mounts.append(m)
        return m

    yield factory
    finish_mounts(mounts)
