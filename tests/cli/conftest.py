"""Fixtures of the command-line tests: daemon mounts that are always cleaned up.

Every process a test starts is accounted for at teardown: mounts are unmounted (the mount
process must then end), and anything still alive is killed by its pid. Foreground mounts come
from ``mount_factory`` (``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Daemon, base_env
from tests.cli.proxy import GateProxy
from tests.support.emulator import Emulator
from tests.support.mount import fail_once
from tests.support.processes import write_token


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
    fail_once(d.stop for d in daemons)


@pytest.fixture
def token_file(emulator: Emulator, tmp_path: Path) -> Path:
    """A file holding a valid token of the test's emulator."""
    return write_token(tmp_path / "token", emulator.token)


@pytest.fixture
def daemon(
    emulator: Emulator, token_file: Path, daemon_factory: Callable[..., Daemon]
) -> Callable[..., Daemon]:
    """``daemon(*args, api_url=None)`` -> a daemon mount of the test's emulator (or of
    ``api_url``), with ``args`` added to its command line."""

    def start(*args: str, api_url: str | None = None) -> Daemon:
        d = daemon_factory()
        d.mount(
            "--api-url", api_url or emulator.url, "--token-file", token_file,
            "--cache-dir", d.cache_dir, *args,
        )  # fmt: skip
        return d

    return start


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[GateProxy]:
    """A proxy to the test's emulator that can hold an upload part-way (``tests/cli/proxy.py``)."""
    gate = GateProxy(emulator.port)
    try:
        yield gate
    finally:
        gate.close()
