"""A real mount for tests: ``bimfs mount --foreground`` of a test emulator, with its own dirs.

    m = Mount(emulator, tmp_path / "m0", ("--dir-ttl", "1"))   # ready when it returns
    (m.p("bimfs-demo") / "Office Building").iterdir()
    m.unmount()
    m.check_log()                                                # no unexpected error lines

The ``mount_factory`` fixture (``tests/conftest.py``) makes them and always cleans up.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.support.emulator import Emulator
from tests.support.processes import MountProcess, ProcessError, wait_until, write_token

MOUNT_TIMEOUT = 30.0


class Mount(MountProcess):
    """A running ``bimfs mount --foreground`` (verbose) of ``emulator``'s account.

    ``root`` holds its mountpoint (``mnt``), cache dir, token file and log. Error lines whose
    text contains one of ``allowed_errors`` are expected (``check_log``).
    """

    def __init__(
        self,
        emulator: Emulator,
        root: Path,
        args: tuple[str, ...],
        cache_dir: Path | None = None,
        mountpoint: Path | None = None,
    ) -> None:
        self.emulator = emulator
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        path = mountpoint or root / "mnt"
        path.mkdir(exist_ok=True)
        super().__init__(
            path,
            api_url=emulator.url,
            token_file=write_token(root / "token", emulator.token),
            cache_dir=cache_dir or root / "cache",
            log_path=root / f"mount-{time.monotonic_ns()}.log",
            args=args,
            start_timeout=MOUNT_TIMEOUT,
        )
        self.allowed_errors: list[str] = []
        self.start()

    def command(self) -> list[str]:
        # Verbose: a failing test shows what the mount did.
        command = super().command()
        at = command.index("--foreground") + 1
        return [*command[:at], "-v", *command[at:]]

    def p(self, *parts: str) -> Path:
        """A path inside the mount."""
        return self.path.joinpath(*parts)

    def restart(self) -> None:
        """Unmount and mount again (same dirs, same arguments)."""
        self.unmount()
        self.start()

    def bimfs(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m bimfs ARGS`` (``status``, ``unmount``) to completion."""
        return subprocess.run(
            [sys.executable, "-m", "bimfs", *args], capture_output=True, text=True, timeout=timeout
        )

    def wait_synced(self, timeout: float = 60.0) -> None:
        """Wait until the mount reports no pending upload (``bimfs status --json``)."""
        wait_until(
            lambda: not self.status()["pending"],
            timeout,
            lambda: f"no pending upload: {self.status()}\n{self.log()}",
            interval=0.05,
        )

    def check_log(self) -> None:
        """Fail when the mount logged an error or a traceback that was not expected."""
        assert not self.problems(self.allowed_errors), "mount logged errors:\n" + self.log()


def finish_mounts(mounts: list[Mount]) -> None:
    """Teardown of a fixture's mounts: unmount each and check its log."""
    fail_once(step for m in mounts for step in (m.unmount, m.check_log))


def fail_once(steps: Iterable[Callable[[], object]]) -> None:
    """Run every teardown step even when some fail, then fail the test once, naming every
    problem found."""
    failures = []
    for step in steps:
        try:
            step()
        except (AssertionError, ProcessError) as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n".join(failures))
