"""Token providers against the emulator: transparent refresh after expiry, legacy login."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bimfs.api.auth import LegacyLogin, OidcRefresh, load_token_source
from bimfs.api.client import BimplusClient
from bimfs.api.credentials import load_credentials, save_credentials
from bimfs.api.errors import AuthError, UnauthorizedError
from tests.api.oidc_browser import PASSWORD, USER, obtain_tokens
from tests.support.emulator import Emulator


async def test_oidc_refresh_after_expiry_is_transparent(emulator: Emulator) -> None:
    endpoint, tokens = await trio.to_thread.run_sync(obtain_tokens, emulator.url)
    rotated: list[str] = []
    provider = OidcRefresh(
        endpoint,
        "bimfs-test",
        tokens["refresh_token"],
        on_rotate=rotated.append,
    )
    async with BimplusClient(emulator.url, provider, backoff_base=0.0) as client:
        assert await client.get_teams()
        assert emulator.count("POST /oidc/token") == 2  # the code, then one refresh
        emulator.expire_tokens()
        teams = await client.get_teams()  # 401, refresh, repeat: the caller sees nothing
        assert teams
    assert emulator.count("GET /v2/teams", 401) == 1
    assert emulator.count("GET /v2/teams", 200) == 2
    assert emulator.count("POST /oidc/token") == 3
    # Every refresh rotated the refresh token and handed the new one over for saving.
    assert len(rotated) == 2 and len(set(rotated)) == 2
    assert tokens["refresh_token"] not in rotated


async def test_concurrent_401s_refresh_once(emulator: Emulator) -> None:
    endpoint, tokens = await trio.to_thread.run_sync(obtain_tokens, emulator.url)
    provider = OidcRefresh(endpoint, "bimfs-test", tokens["refresh_token"])
    async with BimplusClient(emulator.url, provider) as client:
        await client.get_teams()
        emulator.expire_tokens()
        before = emulator.count("POST /oidc/token")
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(client.get_teams)
    assert emulator.count("POST /oidc/token") == before + 1


async def test_revoked_refresh_token_is_unauthorized(emulator: Emulator) -> None:
    endpoint, tokens = await trio.to_thread.run_sync(obtain_tokens, emulator.url)
    provider = OidcRefresh(endpoint, "bimfs-test", "not-a-refresh-token")
    async with BimplusClient(emulator.url, provider) as client:
        with pytest.raises(AuthError) as info:
            await client.get_teams()
    assert "bimfs login" in str(info.value)
    assert "not-a-refresh-token" not in str(info.value)
    # With a valid access token that later expires and a dead refresh token: a 401 error.
    provider = OidcRefresh(
        endpoint, "bimfs-test", "dead", access_token=tokens["access_token"], expires_at=None
    )
    async with BimplusClient(emulator.url, provider) as client:
        assert await client.get_teams()
        emulator.expire_tokens()
        with pytest.raises(UnauthorizedError) as err:
            await client.get_teams()
    assert isinstance(err.value.__cause__, AuthError)


async def test_legacy_login(emulator: Emulator) -> None:
    provider = LegacyLogin(emulator.url, USER, PASSWORD, "6C12345D9B0C4F3C23ABB5721D098F7B")
    async with BimplusClient(emulator.url, provider) as client:
        assert await client.get_teams()
        first_client_id = provider.client_id
        assert first_client_id
        emulator.expire_tokens()
        assert await client.get_teams()
    assert emulator.count("POST /v2/authorize", 200) == 2
    assert provider.client_id == first_client_id
    assert "password=<hidden>" in repr(provider)


async def test_legacy_login_refused(emulator: Emulator) -> None:
    provider = LegacyLogin(emulator.url, USER, "wrong-password", "app")
    async with BimplusClient(emulator.url, provider) as client:
        with pytest.raises(AuthError) as info:
            await client.get_teams()
    assert "wrong-password" not in str(info.value)
    assert USER in str(info.value)


async def test_two_processes_sharing_a_stored_login(
    emulator_factory: Callable[..., Emulator], tmp_path: Path
) -> None:
    """A second mount whose refresh token was rotated by the first picks up the saved one."""
    emu = emulator_factory("--refresh-grace", "0")
    endpoint, tokens = await trio.to_thread.run_sync(obtain_tokens, emu.url)
    config = tmp_path / "config"
    save_credentials(
        config,
        emu.url,
        {
            "kind": "oidc",
            "client_id": "bimfs-test",
            "token_endpoint": endpoint,
            "refresh_token": tokens["refresh_token"],
        },
    )
    first = load_token_source(token_file=None, env={}, api_url=emu.url, config_dir=config)
    second = load_token_source(token_file=None, env={}, api_url=emu.url, config_dir=config)
    async with BimplusClient(emu.url, first) as one, BimplusClient(emu.url, second) as two:
        assert await one.get_teams()  # rotates and saves; the original token is now dead
        assert await two.get_teams()  # refused with the dead one, retried with the saved one
        assert await one.get_teams()
    stored = load_credentials(config, emu.url)
    assert stored is not None and stored["refresh_token"] != tokens["refresh_token"]


async def test_token_file_is_read_again_after_a_401(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    first = emulator.issue_token()
    token_file.write_text(first + "\n")
    provider = load_token_source(token_file=token_file, env={}, api_url=emulator.url)
    caplog.set_level("DEBUG")
    async with BimplusClient(emulator.url, provider, backoff_base=0.0) as client:
        assert await client.get_teams()
        emulator.expire_tokens()
        # Not rotated yet: the file is read again, holds the same token, the call fails.
        with pytest.raises(UnauthorizedError) as info:
            await client.get_teams()
        assert isinstance(info.value.__cause__, AuthError)
        assert "write a new one" in str(info.value.__cause__)
        second = emulator.issue_token()
        token_file.write_text(f"  {second}  \n")
        assert await client.get_teams()  # 401 with the old token, the file's new one works
        assert await client.get_teams()
        # Unreadable for a moment (being rewritten): an error, then the file works again.
        emulator.expire_tokens()
        token_file.unlink()
        with pytest.raises(UnauthorizedError):
            await client.get_teams()
        token_file.write_text(emulator.issue_token())
        assert await client.get_teams()
    assert emulator.count("GET /v2/teams", 200) == 4
    assert emulator.count("GET /v2/teams", 401) == 4
    logged = caplog.text
    assert first not in logged and second not in logged
