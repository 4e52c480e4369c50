"""The processes the tests and the benchmark run: the emulator, ``bimfs mount --foreground``.

Standard library only: ``scripts/bench.py`` imports this module too, and it speaks to the
emulator with urllib where the tests use httpx (``tests.support.emulator``). Both sides start
and stop processes the same way:

    emu = EmulatorProcess(data_dir, token="t")          # waits for the ready line
    mount = MountProcess(mnt, api_url=emu.url, token_file=..., cache_dir=..., log_path=...)
    mount.start()                                        # waits until mnt is a mount point
    ...
    mount.unmount()                                      # fusermount3 -u, waits for the exit
    emu.stop()

``tied=True`` (the benchmark) gives a child its own session and has it terminated when the
process that started it dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from bimfs.emulator.ready import EmulatorStartError, wait_ready

__all__ = [
    "EmulatorProcess",
    "MountProcess",
    "ProcessError",
    "WaitTimeout",
    "child_env",
    "cmdline",
    "fusermount",
    "peak_rss",
    "pid_alive",
    "read_line_until",
    "wait_until",
    "write_token",
]

T = TypeVar("T")

STATUS_XATTR = "user.bimfs.status"


class ProcessError(RuntimeError):
    """A process did not start, or did not stop, as it should."""


class WaitTimeout(TimeoutError):
    """``wait_until`` gave up: what it waited for did not happen in time."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str],
    *,
    interval: float = 0.02,
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Raises ``WaitTimeout`` naming ``message`` (a callable is asked at that moment, so it can
    describe the state it gave up in) once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


def read_line_until(
    stream: IO[bytes], wanted: Callable[[str], bool], timeout: float
) -> tuple[str | None, list[str]]:
    """Read lines from a child's pipe (raw reads: a buffered reader could hold a line while
    ``select`` waits for more) until one is ``wanted``. Returns that line (None at the end of
    the stream or after ``timeout`` seconds) and every line read, the wanted one included."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    buf = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode()
            seen.append(line)
            if wanted(line):
                return line, seen
    return None, seen


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ``base`` (the current one by default) without a token of
    the caller's (``BIMPLUS_TOKEN``) and without proxies (everything is loopback), with
    unbuffered Python."""
    source = os.environ if base is None else base
    env = {
        k: v
        for k, v in source.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.pop("BIMPLUS_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_token(path: Path, token: str) -> Path:
    """A 0600 token file, as a user would keep one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def peak_rss(pid: int) -> int:
    """``VmHWM`` (peak resident set size) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ProcessError(f"no VmHWM in /proc/{pid}/status")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ('' once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def fusermount(path: Path, *, lazy: bool = False) -> None:
    """``fusermount3 -u`` (``-uz`` with ``lazy``) of ``path``; its failure is ignored."""
    flag = "-uz" if lazy else "-u"
    subprocess.run(["fusermount3", flag, str(path)], capture_output=True, check=False)


def _popen(argv: Sequence[str], *, stdout: Any, stderr: Any, tied: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=child_env(),
        start_new_session=tied,
        preexec_fn=_die_with_parent if tied else None,
    )


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the parent is killed (SIGKILL, no chance to
    # clean up), the emulator and the mounts get SIGTERM and shut down cleanly.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path | None, limit: int) -> str:
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return ""


class EmulatorProcess:
    """``python -m bimfs.emulator`` on a free loopback port, serving ``data_dir``; started and
    ready (its ready line read) when the constructor returns.

    ``log``: a file for its stderr (by default stderr is inherited, so pytest shows the
    emulator's warnings next to a failing test). Extra ``args`` go to its command line.
    """

    url: str
    base: str
    port: int
    process: subprocess.Popen[bytes]

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        token: str,
        seed: str = "demo",
        log: Path | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        tied: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.token = token
        self.seed = seed
        self.args = args
        self.log_path = log
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.tied = tied
        self.port = 0
        self._launch(0)

    def command(self, port: int) -> list[str]:
        """The emulator's command line for ``port`` (0: a free one)."""
        return [
            sys.executable, "-m", "bimfs.emulator",
            "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(self.data_dir), "--seed", self.seed, "--token", self.token,
            *self.args,
        ]  # fmt: skip

    def _launch(self, port: int) -> None:
        stderr = open(self.log_path, "ab") if self.log_path is not None else None  # noqa: SIM115
        try:
            self.process = _popen(
                self.command(port), stdout=subprocess.PIPE, stderr=stderr, tied=self.tied
            )
        finally:
            if stderr is not None:
                stderr.close()
        try:
            self.url = wait_ready(self.process, self.start_timeout)
        except EmulatorStartError as exc:
            code = self._kill()
            log = self.log()
            detail = f":\n{log}" if log else ""
            raise ProcessError(f"{exc} (exit status {code}){detail}") from None
        except BaseException:
            self._kill()
            raise
        self.base = self.url.removesuffix("/v2")
        self.port = int(self.base.rsplit(":", 1)[1])

    def _kill(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=self.stop_timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    @property
    def pid(self) -> int:
        """The emulator's process id."""
        return self.process.pid

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (``VmHWM``)."""
        return peak_rss(self.process.pid)

    def log(self) -> str:
        """The tail of the emulator's stderr (empty when it is inherited)."""
        return _tail(self.log_path, 2000)

    def stop(self) -> None:
        """SIGTERM the process, wait for it, kill it if it does not stop in time. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=self.stop_timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def restart(self) -> None:
        """Stop and start again on the same data dir, on the same port when it is still free."""
        port = self.port
        self.stop()
        try:
            self._launch(port)
        except ProcessError:
            self._launch(0)


class MountProcess:
    """``bimfs mount MOUNTPOINT --foreground`` of an API, its output in ``log_path``.

    ``args`` (read at every ``start``) go to the command line after ``--foreground``.
    """

    def __init__(
        self,
        mountpoint: Path,
        *,
        api_url: str,
        token_file: Path,
        cache_dir: Path,
        log_path: Path,
        args: Sequence[str] = (),
        start_timeout: float = 30.0,
        tied: bool = False,
    ) -> None:
        self.path = mountpoint
        self.api_url = api_url
        self.token_file = token_file
        self.cache_dir = cache_dir
        self.log_path = log_path
        self.args = tuple(args)
        self.start_timeout = start_timeout
        self.tied = tied
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The mount's command line."""
        return [
            sys.executable, "-m", "bimfs", "mount", str(self.path),
            "--api-url", self.api_url,
            "--token-file", str(self.token_file),
            "--cache-dir", str(self.cache_dir),
            "--foreground",
            *self.args,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the mount and wait until its mountpoint is mounted. Raises ``ProcessError``
        (with the log) when the process exits first or the mount is not ready in time; the
        process is killed then."""
        with open(self.log_path, "ab") as log:
            self.process = _popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, tied=self.tied
            )
        process = self.process
        try:
            wait_until(
                lambda: os.path.ismount(self.path) or process.poll() is not None,
                self.start_timeout,
                f"the mount at {self.path}",
            )
            if process.poll() is not None and not os.path.ismount(self.path):
                raise ProcessError(f"the mount exited {process.returncode}:\n{self.log()}")
        except WaitTimeout:
            self.kill()
            raise ProcessError(
                f"the mount was not ready in {self.start_timeout:g} s:\n{self.log()}"
            ) from None
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        """The mount process's id."""
        if self.process is None:
            raise ProcessError("the mount is not running")
        return self.process.pid

    def log(self) -> str:
        """What the mount logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def problems(self, allowed: Sequence[str] = ()) -> list[str]:
        """Error lines and tracebacks in the log, but for lines containing an ``allowed`` text."""
        return [
            line
            for line in self.log().splitlines()
            if (" ERROR " in line or "Traceback" in line or " CRITICAL " in line)
            and not any(text in line for text in allowed)
        ]

    def status(self) -> dict[str, Any]:
        """The mount's status document (what ``bimfs status --json`` prints)."""
        status: dict[str, Any] = json.loads(os.getxattr(self.path, STATUS_XATTR))
        return status

    def peak_rss(self) -> int:
        """The mount process's peak RSS since it started."""
        return peak_rss(self.pid)

    def unmount(self, timeout: float = 60.0) -> None:
        """Unmount like a user (``fusermount3 -u``) and wait for the process to finish. A
        process still running after ``timeout`` seconds is killed and ``ProcessError``
        raised. Idempotent."""
        if self.process is None:
            return
        if os.path.ismount(self.path):
            fusermount(self.path)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(f"the mount did not exit after unmount:\n{self.log()}") from None
        self.process = None
        if os.path.ismount(self.path):
            fusermount(self.path, lazy=True)  # the process ended without unmounting

    def kill(self) -> None:
        """``kill -9`` the mount process and clean up the dead mountpoint."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        fusermount(self.path, lazy=True)
