"""Shared fixtures. The emulator fixtures start a real emulator process per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Emulator, start_emulator

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
