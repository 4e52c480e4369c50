"""``bimfs login`` end to end: a real subprocess, the emulator as login server, and the test
acting as the browser."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import trio

from bimfs.api.auth import OidcRefresh, StaticToken, load_token_source
from bimfs.api.client import BimplusClient
from tests.api.oidc_browser import PASSWORD, USER, submit_login
from tests.support.emulator import Emulator
from tests.support.processes import read_line_until

ROOT = Path(__file__).resolve().parents[2]


def start_login(tmp_path: Path, *args: str, stdin: bytes | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("BIMPLUS_TOKEN", "DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["PYTHONPATH"] = str(ROOT)
    source = tmp_path / "stdin"
    source.write_bytes(stdin or b"")
    with open(source, "rb") as stdin_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bimfs.login", *args],
            stdin=stdin_file,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )


def read_login_url(proc: subprocess.Popen[bytes], seen: list[str]) -> str:
    """Read stderr lines until the printed login URL."""
    assert proc.stderr is not None
    url, lines = read_line_until(proc.stderr, lambda line: line.strip().startswith("http"), 30)
    seen.extend(lines)
    if url is None:
        raise AssertionError(f"no login URL printed: {seen}")
    return url.strip()


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode()


def credential_files(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "config" / "bimfs" / "credentials"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def teams_with(provider: object, url: str) -> int:
    async def run() -> int:
        async with BimplusClient(url, provider) as client:  # type: ignore[arg-type]
            return len(await client.get_teams())

    return trio.run(run)


def test_oidc_login_end_to_end(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--api-url", emulator.url, "--no-browser", "--client-id", "cli")
    try:
        lines: list[str] = []
        url = read_login_url(proc, lines)
        query = parse_qs(urlsplit(url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["client_id"] == ["cli"]
        redirect = urlsplit(query["redirect_uri"][0])
        assert redirect.hostname == "127.0.0.1" and redirect.path == "/callback"

        callback = submit_login(url)
        with httpx.Client(timeout=30) as browser:
            # A stray request (a favicon) does not disturb the listener.
            stray = browser.get(f"http://127.0.0.1:{redirect.port}/favicon.ico")
            assert stray.status_code == 404
            page = browser.get(callback)
        assert page.status_code == 200 and "logged in" in page.text
    finally:
        code, out, err = finish(proc)
    assert code == 0, err
    assert "Logged in" in out

    files = credential_files(tmp_path)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    stored = json.loads(files[0].read_text())
    assert stored["kind"] == "oidc" and stored["client_id"] == "cli"
    assert stored["token_endpoint"].endswith("/oidc/token")
    assert stored["refresh_token"] and stored["refresh_token"] not in err + out

    # The stored refresh token gets a working access token, and the rotated refresh token is
    # written back (still 0600).
    provider = load_token_source(
        token_file=None, env={}, api_url=emulator.url, config_dir=tmp_path / "config" / "bimfs"
    )
    assert isinstance(provider, OidcRefresh)
    assert teams_with(provider, emulator.url) == 2
    again = json.loads(files[0].read_text())
    assert again["refresh_token"] != stored["refresh_token"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_oidc_state_mismatch_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--api-url", emulator.url, "--no-browser")
    try:
        url = read_login_url(proc, [])
        callback = with_query(submit_login(url), state="forged")
        with httpx.Client(timeout=30) as browser:
            assert browser.get(callback).status_code == 400
    finally:
        code, _out, err = finish(proc)
    assert code != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("bimfs login: ") and "state" in last
    assert credential_files(tmp_path) == []


def test_oidc_error_from_the_server(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--api-url", emulator.url, "--no-browser")
    try:
        url = read_login_url(proc, [])
        query = parse_qs(urlsplit(url).query)
        denied = f"{query['redirect_uri'][0]}?" + urlencode(
            {"error": "access_denied", "state": query["state"][0]}
        )
        with httpx.Client(timeout=30) as browser:
            assert browser.get(denied).status_code == 400
    finally:
        code, _out, err = finish(proc)
    assert code != 0
    assert "access_denied" in err.strip().splitlines()[-1]


def test_oidc_login_times_out(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--api-url", emulator.url, "--no-browser", "--timeout", "0.5")
    code, _out, err = finish(proc)
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("bimfs login: no login within")


def test_legacy_login_with_password_on_stdin(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(
        tmp_path,
        "--api-url",
        emulator.url,
        "--legacy",
        "--user",
        USER,
        "--application-id",
        "6C12345D9B0C4F3C23ABB5721D098F7B",
        stdin=f"{PASSWORD}\n".encode(),
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert USER in out
    files = credential_files(tmp_path)
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    stored = json.loads(files[0].read_text())
    assert stored["kind"] == "legacy" and stored["access_token"]
    assert PASSWORD not in stored.values() and "password" not in stored
    provider = load_token_source(
        token_file=None, env={}, api_url=emulator.url, config_dir=tmp_path / "config" / "bimfs"
    )
    assert isinstance(provider, StaticToken)
    assert teams_with(provider, emulator.url) == 2


def test_legacy_login_wrong_password(emulator: Emulator, tmp_path: Path) -> None:
    proc = start_login(
        tmp_path,
        "--api-url",
        emulator.url,
        "--legacy",
        "--user",
        USER,
        "--application-id",
        "app",
        stdin=b"not-the-password\n",
    )
    code, _out, err = finish(proc)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bimfs login: ")
    assert "not-the-password" not in err
    assert credential_files(tmp_path) == []


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--api-url", "http://api.example.com/v2", "--no-browser")
    code, _out, err = finish(proc)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "http://" in lines[0]


def test_legacy_needs_user_and_application(tmp_path: Path) -> None:
    proc = start_login(tmp_path, "--legacy", "--user", USER)
    code, _out, err = finish(proc)
    assert code == 1 and "--application-id" in err
