"""Real mounts: the emulator and ``bimfs mount --foreground`` as processes, driven by real tools.

Every test gets a fresh emulator (seed ``demo``) and a fresh mount; teardown always unmounts and
fails the test if the mount logged an error or a traceback it was not told to expect.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Emulator

MOUNT_TIMEOUT = 30.0

pytestmark = pytest.mark.mount


class Mount:
    """A running ``bimfs mount --foreground`` process."""

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
        self.path = mountpoint or root / "mnt"
        self.path.mkdir(exist_ok=True)
        self.cache_dir = cache_dir or root / "cache"
        self.token_file = root / "token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(emulator.token + "\n")
        self.args = args
        self.log_path = root / f"mount-{time.monotonic_ns()}.log"
        self.allowed_errors: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bimfs", "mount", str(self.path),
            "--api-url", self.emulator.url,
            "--token-file", str(self.token_file),
            "--cache-dir", str(self.cache_dir),
            "--foreground", "-v",
            *self.args,
        ]  # fmt: skip

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("BIMPLUS_TOKEN", None)
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.path):
            if self.process.poll() is not None:
                raise AssertionError(f"mount exited {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"mount not ready in {MOUNT_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def p(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def unmount(self, timeout: float = 60.0) -> None:
        """Unmount like a user (fusermount3 -u) and wait for the process to finish."""
        if self.process is None:
            return
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False, capture_output=True)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"mount did not exit after unmount:\n{self.log()}") from None
        self.process = None

    def kill(self) -> None:
        """``kill -9`` the mount process and clean up the dead mountpoint."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, capture_output=True)

    def restart(self) -> None:
        self.unmount()
        self.start()

    def bimfs(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bimfs", *args], capture_output=True, text=True, timeout=timeout
        )

    def wait_synced(self, timeout: float = 60.0) -> None:
        """Wait until the mount reports no pending upload (``bimfs status --json``)."""
        import json

        deadline = time.monotonic() + timeout
        while True:
            status = json.loads(os.getxattr(self.path, "user.bimfs.status"))
            if not status["pending"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"uploads still pending: {status}\n{self.log()}")
            time.sleep(0.05)

    def check_log(self) -> None:
        text = self.log()
        bad = [
            line for line in text.splitlines()
            if (" ERROR " in line or "Traceback" in line or " CRITICAL " in line)
            and not any(allowed in line for allowed in self.allowed_errors)
        ]  # fmt: skip
        assert not bad, "mount logged errors:\n" + text


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """``mount_factory(emulator, *args, cache_dir=None)`` -> a ready ``Mount``."""
    mounts: list[Mount] = []

    def factory(emulator: Emulator, *args: str, cache_dir: Path | None = None) -> Mount:
        m = Mount(emulator, tmp_path / f"m{len(mounts)}", args, cache_dir=cache_dir)
        mounts.append(m)
        return m

    yield factory
    finish_mounts(mounts)


def finish_mounts(mounts: list[Mount]) -> None:
    """Teardown of a fixture's mounts: unmount each and check its log, then fail the test
    once, naming every problem found."""
    failures = []
    for m in mounts:
        try:
            m.unmount()
        except AssertionError as exc:
            failures.append(str(exc))
        try:
            m.check_log()
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def mount(emulator: Emulator, mount_factory: Callable[..., Mount]) -> Mount:
    """A mount of the whole demo account with a short directory TTL."""
    return mount_factory(emulator, "--dir-ttl", "1", "--write-back-delay", "0.2")
