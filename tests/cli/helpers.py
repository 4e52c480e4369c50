"""Helpers for the command-line tests: running ``bimfs``, daemon mounts, processes, the server.

``run_bimfs`` runs one command (``python -m bimfs ...``) to completion. ``Daemon`` is a
``bimfs mount`` without ``--foreground``: the command returns once the mount is ready and a
detached process serves it (foreground mounts are ``tests.support.mount.Mount``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.emulator import Emulator
from tests.support.processes import WaitTimeout, cmdline, fusermount, pid_alive, wait_until

SLUG = "bimfs-demo"
DEADLINE = 30.0
CREATE = "POST /v2/{slug}/projects/{pid}/attachments"

# An OIDC access token of the emulator (a JWT: base64url of '{"' starts every part).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# -- small helpers -----------------------------------------------------------------------------


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no token and config/cache homes of their own."""
    env = {k: v for k, v in os.environ.items() if k not in ("BIMPLUS_TOKEN", "DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_bimfs(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """``python -m bimfs ARGS`` to completion, stdin not a terminal, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bimfs", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=stdin,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Check that a command failed with exactly one ``bimfs: ...`` line on stderr; return it."""
    assert result.returncode != 0, f"expected a failure: {result}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    assert lines[0].startswith("bimfs: "), lines[0]
    return lines[0]


def all_cmdlines() -> dict[int, str]:
    """The command line of every process on the machine (what ``ps`` shows)."""
    result = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = cmdline(int(entry))
            if text:
                result[int(entry)] = text
    return result


def processes_mentioning(text: str) -> dict[int, str]:
    """Running processes whose command line contains ``text``."""
    return {
        pid: line
        for pid, line in all_cmdlines().items()
        if text in line and pid != os.getpid() and pid_alive(pid)
    }


def read_status(mountpoint: Path) -> dict[str, Any]:
    """The mount's status document (what ``bimfs status --json`` prints)."""
    data: dict[str, Any] = json.loads(os.getxattr(mountpoint, "user.bimfs.status"))
    return data


def new_project(emu: Emulator, name: str, slug: str = SLUG) -> str:
    """A fresh, empty, writable project; its id."""
    project = emu.admin("POST", f"/teams/{slug}/projects", json={"name": name})
    return str(project["id"])


def server_docs(emu: Emulator, pid: str, slug: str = SLUG) -> dict[str, dict[str, Any]]:
    """The documents of a project on the server, by file name."""
    return {d["fileName"]: d for d in emu.attachments(slug, pid)}


def server_sha256(emu: Emulator, slug: str, aid: str) -> tuple[int, str]:
    """Size and SHA-256 of a document's latest version, streamed from the server."""
    digest = hashlib.sha256()
    size = 0
    with emu.client.stream(
        "GET", f"/v2/{slug}/attachments/{aid}/download", headers=emu.auth_headers
    ) as resp:
        assert resp.status_code == 200, resp.status_code
        for chunk in resp.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_random(path: Path, size: int, seed: int = 1) -> str:
    """Write ``size`` pseudo-random bytes to ``path`` in 1 MiB pieces; their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            piece = rng.randbytes(min(left, 1 << 20))
            fh.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def issued_token(emu: Emulator) -> str:
    """A token the emulator issues at a legacy login: it is on no process's command line
    (unlike the emulator's fixed ``--token``)."""
    answer = emu.api(
        "POST",
        "/authorize",
        json={"user_id": "demo@bimfs.test", "password": "demo", "application_id": "cli-test"},
    )
    token: str = answer["access_token"]
    return token


# -- daemon mounts ---------------------------------------------------------------------------------


class Daemon:
    """``bimfs mount MOUNTPOINT`` without ``--foreground``, as a user runs it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "mnt"
        self.path.mkdir(exist_ok=True)
        self.cache_dir = root / "cache"
        self.env = env
        self.pid: int | None = None
        self.result: subprocess.CompletedProcess[str] | None = None

    def mount(self, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bimfs mount``; with ``ok`` require success and note the serving process."""
        result = run_bimfs("mount", self.path, *args, env=self.env)
        self.result = result
        if result.returncode == 0:
            self.pid = int(read_status(self.path)["pid"])
        if ok:
            assert result.returncode == 0, f"bimfs mount failed: {result.stderr}"
        return result

    def p(self, *parts: str) -> Path:
        """A path inside the mount."""
        return self.path.joinpath(*parts)

    def log(self, log_file: Path | None = None) -> str:
        """The daemon's log (``<cache-dir>/bimfs.log`` unless another file is named)."""
        try:
            return (log_file or self.cache_dir / "bimfs.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_exit(self, timeout: float = DEADLINE) -> None:
        """Wait until the serving process has ended."""
        pid = self.pid
        if pid is not None:
            wait_until(lambda: not pid_alive(pid), timeout, f"the mount process {pid} to exit")

    def stop(self) -> None:
        """Unmount if still mounted, wait for the process, kill it if it hangs. Idempotent."""
        if os.path.ismount(self.path):
            fusermount(self.path)
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(WaitTimeout):
            self.wait_exit()
        # Only ever our own process: the pid could have been reused by then.
        if pid_alive(pid) and str(self.path) in cmdline(pid):
            os.kill(pid, signal.SIGKILL)
            fusermount(self.path, lazy=True)
            raise AssertionError(f"the mount process {pid} did not exit after unmount")
