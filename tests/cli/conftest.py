"""Fixtures of the command-line tests: daemon and foreground mounts that are always cleaned up.

Every process a test starts is accounted for at teardown: mounts are unmounted (the mount
process must then end), and anything still alive is killed by its pid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Daemon, base_env
from tests.mount.conftest import Mount, finish_mounts
from tests.support.emulator import Emulator


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``daemon_factory(env=None)`` -> a ``Daemon`` not mounted yet (its own mountpoint and
    cache dir under ``tmp_path``); all are unmounted and waited for at teardown."""
    daemons: list[Daemon] = []

    def factory(env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(tmp_path / f"d{len(daemons)}", env or base_env(tmp_path))
        daemons.append(d)
        return d

    yield factory
    failures = []
    for d in daemons:
        try:
            d.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def foreground_factory(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """``foreground_factory(emulator, *args)`` -> a ready ``bimfs mount --foreground`` (the
    mount tests' ``Mount``); unmounted at teardown, its log checked for errors."""
    mounts: list[Mount] = []

    def factory(emu: Emulator, *args: str) -> Mount:
        m = Mount(emu, tmp_path / f"f{len(mounts)}", args)
        mounts.append(m)
        return m

    yield factory
    finish_mounts(mounts)
