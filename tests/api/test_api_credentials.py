"""Token sources and stored credentials (no network)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from bimfs.api.auth import (
    LegacyLogin,
    OidcRefresh,
    StaticToken,
    TokenFile,
    load_token_source,
)
from bimfs.api.credentials import (
    credentials_path,
    default_config_dir,
    load_credentials,
    save_credentials,
)
from bimfs.api.errors import AuthError

API = "https://api.bimplus.net/v2"
SECRET = "s3cr3t-T0KEN-value"


def test_reprs_hide_secrets() -> None:
    providers = [
        StaticToken(SECRET, source="BIMPLUS_TOKEN"),
        LegacyLogin(API, "me@example.com", SECRET, "app"),
        OidcRefresh("https://login.example.com/token", "bimfs", SECRET, access_token=SECRET),
    ]
    for provider in providers:
        assert SECRET not in repr(provider)
        assert SECRET not in str(provider)
        assert "hidden" in repr(provider)


async def test_static_token_cannot_refresh() -> None:
    provider = StaticToken(f"  {SECRET}\n", source="token file t")
    assert await provider.token() == SECRET
    with pytest.raises(AuthError) as info:
        await provider.refresh(SECRET)
    assert SECRET not in str(info.value)
    assert "token file t" in str(info.value)


def test_static_token_validation() -> None:
    with pytest.raises(AuthError, match="empty"):
        StaticToken("  \n")
    with pytest.raises(AuthError):
        StaticToken("two words")


def test_token_file_wins_and_is_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {SECRET}  \n")
    provider = load_token_source(
        token_file=token_file, env={"BIMPLUS_TOKEN": "other"}, api_url=API, config_dir=tmp_path
    )
    assert isinstance(provider, TokenFile)
    assert trio.run(provider.token) == SECRET
    assert SECRET not in repr(provider)


def test_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="cannot read the token file"):
        load_token_source(token_file=tmp_path / "missing", env={}, api_url=API, config_dir=tmp_path)


def test_env_token_next(tmp_path: Path) -> None:
    save_credentials(tmp_path, API, {"kind": "legacy", "access_token": "stored"})
    provider = load_token_source(
        token_file=None, env={"BIMPLUS_TOKEN": SECRET}, api_url=API, config_dir=tmp_path
    )
    assert isinstance(provider, StaticToken) and provider._token == SECRET
    assert provider.source == "BIMPLUS_TOKEN"


def test_stored_credentials_last(tmp_path: Path) -> None:
    save_credentials(tmp_path, API, {"kind": "legacy", "access_token": "stored"})
    provider = load_token_source(token_file=None, env={}, api_url=API, config_dir=tmp_path)
    assert isinstance(provider, StaticToken) and provider._token == "stored"
    save_credentials(
        tmp_path,
        API + "/",
        {
            "kind": "oidc",
            "refresh_token": SECRET,
            "client_id": "bimfs",
            "token_endpoint": "https://login.example.com/token",
        },
    )
    provider = load_token_source(token_file=None, env={}, api_url=API, config_dir=tmp_path)
    assert isinstance(provider, OidcRefresh)
    assert provider.client_id == "bimfs"


def test_no_credentials_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as info:
        load_token_source(token_file=None, env={}, api_url=API, config_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "bimfs login" in message and "BIMPLUS_TOKEN" in message


def test_credentials_are_per_api_url(tmp_path: Path) -> None:
    save_credentials(tmp_path, API, {"kind": "legacy", "access_token": "prod"})
    other = "https://api-stage.bimplus.net/v2"
    assert credentials_path(tmp_path, API) != credentials_path(tmp_path, other)
    assert credentials_path(tmp_path, API) == credentials_path(
        tmp_path, "HTTPS://API.bimplus.net/v2/"
    )
    assert load_credentials(tmp_path, other) is None
    with pytest.raises(AuthError):
        load_token_source(token_file=None, env={}, api_url=other, config_dir=tmp_path)


def test_files_are_private_and_atomic(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        config = tmp_path / "cfg"
        path = save_credentials(config, API, {"kind": "oidc", "refresh_token": "one"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(config.stat().st_mode) == 0o700
        save_credentials(config, API, {"kind": "oidc", "refresh_token": "two"})
        assert json.loads(path.read_text())["refresh_token"] == "two"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # No temporary files are left behind.
        assert [p.name for p in path.parent.iterdir()] == [path.name]
    finally:
        os.umask(old_umask)


def test_damaged_file(tmp_path: Path) -> None:
    path = save_credentials(tmp_path, API, {"kind": "oidc", "refresh_token": "x"})
    path.write_text("{not json")
    with pytest.raises(AuthError, match="damaged"):
        load_token_source(token_file=None, env={}, api_url=API, config_dir=tmp_path)
    path.write_text(json.dumps({"kind": "oidc"}))
    with pytest.raises(AuthError, match="incomplete"):
        load_token_source(token_file=None, env={}, api_url=API, config_dir=tmp_path)


def test_default_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_dir() == tmp_path / "bimfs"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert default_config_dir() == Path.home() / ".config" / "bimfs"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_config_dir() == Path.home() / ".config" / "bimfs"
