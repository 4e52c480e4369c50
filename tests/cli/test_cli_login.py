"""Where a mount's token comes from, and where it must never show up.

``bimfs login`` runs through the real command line with the test acting as the browser; the
mount that follows uses the stored login. Tokens from ``--token-file``, ``BIMPLUS_TOKEN`` or the
stored login never appear on a command line (``/proc/*/cmdline``, what ``ps`` shows) or in the
mount's log, even with ``--debug``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.oidc_browser import submit_login
from tests.cli.helpers import (
    DEADLINE,
    JWT,
    SLUG,
    Daemon,
    all_cmdlines,
    base_env,
    issued_token,
    new_project,
    read_status,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.processes import read_line_until, wait_until, write_token

pytestmark = pytest.mark.mount


def read_login_url(proc: subprocess.Popen[bytes], seen: list[str]) -> str:
    """Read the login's stderr until it prints the URL to open (raw reads: a buffered reader
    could hold the line while ``select`` waits for more)."""
    assert proc.stderr is not None
    url, lines = read_line_until(
        proc.stderr, lambda line: line.strip().startswith("http"), DEADLINE
    )
    seen.extend(line + "\n" for line in lines)
    if url is None:
        raise AssertionError(f"no login URL printed: {seen}")
    return url.strip()


def bimfs_login(emulator: Emulator, env: dict[str, str]) -> tuple[str, str]:
    """``bimfs login --no-browser`` with the test as the browser; (stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bimfs", "login", "--api-url", emulator.url, "--no-browser",
         "--timeout", "60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    seen: list[str] = []
    try:
        url = read_login_url(proc, seen)
        # The browser: log in on the emulator's page, follow the redirect to bimfs' listener.
        callback = submit_login(url)
        assert callback.startswith("http://127.0.0.1:"), callback
        page = httpx.get(callback, timeout=DEADLINE)
        assert page.status_code == 200, page.text
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = "".join(seen) + err.decode()
    assert proc.returncode == 0, stderr
    return out.decode(), stderr


def stored_credentials(config_home: Path) -> list[Path]:
    return sorted((config_home / "bimfs").rglob("*.json"))


def secrets_on_command_lines(*secrets: str) -> dict[int, str]:
    """Processes whose command line holds one of ``secrets`` or any JWT."""
    return {
        pid: line
        for pid, line in all_cmdlines().items()
        if JWT.search(line) or any(s in line for s in secrets)
    }


def exercise(emulator: Emulator, d: Daemon, project: str) -> None:
    """Reads, a write and its upload through the mount: the code paths that log."""
    pid = emulator.project_id(SLUG, "Office Building")
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    assert d.p(SLUG, "Office Building", "plan.pdf").read_bytes() == emulator.download(
        SLUG, plan["id"]
    )
    project_id = emulator.project_id(SLUG, project)
    d.p(SLUG, project, "saved.txt").write_bytes(b"saved through the mount\n")
    wait_until(lambda: "saved.txt" in server_docs(emulator, project_id), DEADLINE, "the upload")
    wait_until(lambda: read_status(d.path)["pending"] == 0, DEADLINE, "no pending upload")
    doc = server_docs(emulator, project_id)["saved.txt"]
    assert emulator.download(SLUG, doc["id"]) == b"saved through the mount\n"


def test_login_then_mount_with_the_stored_credentials(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    config_home = tmp_path / "config-home"
    env = base_env(tmp_path, XDG_CONFIG_HOME=str(config_home))
    out, err = bimfs_login(emulator, env)
    assert "Logged in to" in out

    [creds] = stored_credentials(config_home)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    first_refresh = json.loads(creds.read_text())["refresh_token"]
    assert first_refresh not in out + err

    # No --token-file, no BIMPLUS_TOKEN: the mount finds the stored login.
    new_project(emulator, "After Login")
    d = daemon_factory(env)
    log_file = tmp_path / "mount.log"
    d.mount(
        "--api-url", emulator.url, "--cache-dir", d.cache_dir, "--write-back-delay", "0.2",
        "--debug", "--log-file", log_file,
    )  # fmt: skip
    assert "BIMPLUS_TOKEN" not in d.env
    assert sorted(os.listdir(d.path)) == ["acme-build", "bimfs-demo"]
    exercise(emulator, d, "After Login")
    # The login traded its code, the mount its stored refresh token.
    assert emulator.count("POST /oidc/token", 200) >= 2

    current_refresh = json.loads(creds.read_text())["refresh_token"]
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert secrets_on_command_lines(first_refresh, current_refresh) == {}
    d.stop()
    log = d.log(log_file)
    assert " DEBUG " in log  # the log did run at debug level
    assert first_refresh not in log and current_refresh not in log
    assert not JWT.search(log), "an access token is in the log"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_token_from_bimfs_token_variable(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    token = issued_token(emulator)
    new_project(emulator, "From Env")
    d = daemon_factory(base_env(tmp_path, BIMPLUS_TOKEN=token))
    d.mount("--api-url", emulator.url, "--cache-dir", d.cache_dir, "--write-back-delay", "0.2",
            "--debug")  # fmt: skip
    assert sorted(os.listdir(d.path)) == ["acme-build", "bimfs-demo"]
    exercise(emulator, d, "From Env")
    assert secrets_on_command_lines(token) == {}
    d.stop()
    log = d.log()
    assert " DEBUG " in log
    assert token not in log


def test_token_file_never_on_a_command_line_or_in_the_log(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    token = issued_token(emulator)
    token_file = write_token(tmp_path / "token", token)
    new_project(emulator, "From File")
    d = daemon_factory()
    d.mount("--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir,
            "--write-back-delay", "0.2", "--debug")  # fmt: skip
    exercise(emulator, d, "From File")
    assert secrets_on_command_lines(token) == {}
    status = run_status_json(d)
    assert token not in status
    # A refused request (the token expires) is logged too, still without the token.
    emulator.expire_tokens()
    with pytest.raises(OSError):
        (d.p(SLUG, "Residential Complex", "budget.xlsx")).read_bytes()
    d.stop()
    log = d.log()
    assert " DEBUG " in log
    assert token not in log


def test_expired_token_gives_eacces(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """docs/semantics.md: 401 (after one token refresh) -> EACCES, also where a project's
    listing makes two calls at once (documents and folders)."""
    token_file = write_token(tmp_path / "token", issued_token(emulator))
    d = daemon_factory()
    d.mount("--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir)
    assert d.p(SLUG, "Office Building", "plan.pdf").read_bytes()
    emulator.expire_tokens()
    with pytest.raises(PermissionError):
        os.listdir(d.p(SLUG, "Residential Complex"))
    with pytest.raises(PermissionError):
        d.p(SLUG, "Residential Complex", "budget.xlsx").read_bytes()
    d.stop()
    assert "Traceback" not in d.log()


def test_rejected_token_is_not_echoed(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    secret = "rejected-secret-7f3c9a"
    d = daemon_factory(base_env(tmp_path, BIMPLUS_TOKEN=secret))
    log_file = tmp_path / "mount.log"
    result = d.mount(
        "--api-url", emulator.url, "--cache-dir", d.cache_dir, "--debug", "--log-file", log_file,
        ok=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "rejected" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert secret not in d.log(log_file)


def run_status_json(d: Daemon) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bimfs", "status", str(d.path), "--json"],
        capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout
