"""Legacy login, the OIDC authorization-code + PKCE flow with a fake browser, refresh token
rotation, token expiry (hook and TTL) and persistence."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.emulator import Emulator
from tests.support.processes import wait_until

REDIRECT = "http://127.0.0.1:53682/callback"
CLIENT = "bimfs-desktop"


def legacy_login(emu: Emulator, **overrides: Any) -> httpx.Response:
    body = {"user_id": "demo@bimfs.test", "password": "demo", "application_id": "6C12345D9B0C"}
    body.update(overrides)
    return emu.request("POST", "/authorize", json={k: v for k, v in body.items() if v is not None})


def teams_status(emu: Emulator, token: str, scheme: str = "BimPlus") -> int:
    return emu.request(
        "GET", "/teams", auth=False, headers={"Authorization": f"{scheme} {token}"}
    ).status_code


def test_legacy_login(emulator: Emulator) -> None:
    resp = legacy_login(emulator)
    assert resp.status_code == 200
    data = resp.json()
    assert set(data) == {"access_token", "expires_in", "client_id", "token_type"}
    assert data["token_type"] == "BimPlus" and data["expires_in"] == 3600
    assert re.match(r"^[0-9a-f]{32}$", data["access_token"])
    token = data["access_token"]
    assert teams_status(emulator, token) == 200
    check = emulator.request(
        "GET", "/authorize", auth=False, headers={"Authorization": f"BimPlus {token}"}
    )
    assert check.status_code == 200
    info = check.json()
    assert info["user_id"] == "demo@bimfs.test" and info["audience"] == data["client_id"]
    assert 3590 <= info["expires_in"] <= 3600
    assert legacy_login(emulator, client_id="my-client").json()["client_id"] == "my-client"
    assert legacy_login(emulator, application_id=None).status_code == 400
    assert legacy_login(emulator, password="wrong").status_code == 401
    assert legacy_login(emulator, user_id="nobody@bimfs.test").status_code == 401
    assert emulator.request("POST", "/authorize", content=b"not json").status_code == 400
    assert emulator.request("GET", "/authorize", auth=False).status_code == 401


def test_expire_hook(emulator: Emulator) -> None:
    token = legacy_login(emulator).json()["access_token"]
    assert teams_status(emulator, token) == 200
    assert emulator.admin("POST", "/tokens/expire") == {"expired": 1}
    assert teams_status(emulator, token) == 401
    # The fixed token never expires.
    assert teams_status(emulator, emulator.token) == 200


def test_short_token_ttl(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--token-ttl", "2")
    token = legacy_login(emu).json()["access_token"]
    assert teams_status(emu, token) == 200
    wait_until(lambda: teams_status(emu, token) != 200, 15, "the token to expire", interval=0.2)
    assert teams_status(emu, token) == 401
    assert teams_status(emu, emu.token) == 200


def test_tokens_survive_a_restart(emulator: Emulator) -> None:
    token = legacy_login(emulator).json()["access_token"]
    emulator.restart()
    assert teams_status(emulator, token) == 200
    assert teams_status(emulator, emulator.token) == 200


class Browser:
    """Plays the user's browser: opens the authorization URL, submits the login form."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.verifier = secrets.token_urlsafe(48)
        challenge = hashlib.sha256(self.verifier.encode()).digest()
        self.challenge = base64.urlsafe_b64encode(challenge).rstrip(b"=").decode()
        self.state = secrets.token_urlsafe(8)
        config = emu.api("GET", "/.well-known/openid-configuration")
        self.auth_url = config["authorization_endpoint"]
        self.token_url = config["token_endpoint"]

    def params(self, **overrides: str) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": CLIENT,
            "redirect_uri": REDIRECT,
            "state": self.state,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            "scope": "openid profile email",
        }
        params.update(overrides)
        return params

    def login(self, password: str = "demo", **overrides: str) -> httpx.Response:
        page = self.emu.client.get(self.auth_url, params=self.params(**overrides))
        assert page.status_code == 200 and "<form" in page.text
        fields = {
            m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r"type='hidden' name='([^']+)' value='([^']*)'", page.text)
        }
        action = re.search(r"action='([^']+)'", page.text)
        assert action is not None
        fields.update({"username": "demo@bimfs.test", "password": password})
        return self.emu.client.post(action.group(1), data=fields)

    def code(self) -> str:
        resp = self.login()
        assert resp.status_code == 302
        location = urlsplit(resp.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
        query = parse_qs(location.query)
        assert query["state"] == [self.state]
        return query["code"][0]

    def exchange(self, code: str, **overrides: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": CLIENT,
            "code_verifier": self.verifier,
        }
        data.update(overrides)
        return self.emu.client.post(self.token_url, data=data)

    def refresh(self, refresh_token: str) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT}
        return self.emu.client.post(self.token_url, data=data)


def test_discovery(emulator: Emulator) -> None:
    config = emulator.api("GET", "/.well-known/openid-configuration")
    issuer = config["issuer"]
    assert issuer == f"{emulator.base}/oidc/"
    assert config["authorization_endpoint"].startswith(emulator.base)
    assert config["token_endpoint"].startswith(emulator.base)
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in config["grant_types_supported"]
    assert "refresh_token" in config["grant_types_supported"]
    assert "code" in config["response_types_supported"]
    assert "openid" in config["scopes_supported"]


def test_oidc_code_flow_with_pkce(emulator: Emulator) -> None:
    browser = Browser(emulator)
    wrong = browser.login(password="nope")
    assert wrong.status_code == 200 and "Invalid username or password" in wrong.text
    code = browser.code()
    assert (
        browser.exchange(code, code_verifier=secrets.token_urlsafe(48)).json()["error"]
        == "invalid_grant"
    )
    # The failed attempt consumed the code: codes are single use.
    assert browser.exchange(code).status_code == 400

    code = browser.code()
    assert (
        browser.exchange(code, redirect_uri="http://127.0.0.1:1/other").json()["error"]
        == "invalid_grant"
    )
    code = browser.code()
    resp = browser.exchange(code)
    assert resp.status_code == 200
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "openid profile email"
    assert tokens["access_token"].count(".") == 2 and tokens["refresh_token"]
    again = browser.exchange(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    access = tokens["access_token"]
    assert teams_status(emulator, access, "Bearer") == 200
    assert teams_status(emulator, access, "BimPlus") == 200
    info = emulator.client.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert info.json()["email"] == "demo@bimfs.test"


def test_oidc_bad_requests(emulator: Emulator) -> None:
    browser = Browser(emulator)
    for bad_redirect in ("https://example.com/cb", "http://evil.example:8080/cb", ""):
        page = emulator.client.get(
            browser.auth_url, params=browser.params(redirect_uri=bad_redirect)
        )
        assert page.status_code == 400
    page = emulator.client.get(
        browser.auth_url, params=browser.params(code_challenge_method="plain")
    )
    assert page.status_code == 302
    query = parse_qs(urlsplit(page.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == [browser.state]
    no_pkce = browser.params()
    del no_pkce["code_challenge"]
    assert (
        "error=invalid_request"
        in emulator.client.get(browser.auth_url, params=no_pkce).headers["location"]
    )
    assert browser.exchange("nope").json()["error"] == "invalid_grant"
    missing = emulator.client.post(browser.token_url, data={"grant_type": "authorization_code"})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    other = emulator.client.post(browser.token_url, data={"grant_type": "password"})
    assert other.status_code == 400 and other.json()["error"] == "unsupported_grant_type"
    # localhost is a loopback redirect too.
    resp = browser.login(redirect_uri="http://localhost:40000/cb")
    assert resp.status_code == 302 and resp.headers["location"].startswith(
        "http://localhost:40000/cb?"
    )


def test_refresh_rotation_with_grace(emulator: Emulator) -> None:
    browser = Browser(emulator)
    first = browser.exchange(browser.code()).json()
    emulator.expire_tokens()
    assert teams_status(emulator, first["access_token"]) == 401
    second = browser.refresh(first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert teams_status(emulator, second["access_token"]) == 200
    # Within the grace period the old refresh token still works (a lost answer can be retried).
    assert browser.refresh(first["refresh_token"]).status_code == 200
    assert browser.refresh("unknown").json()["error"] == "invalid_grant"
    # Access tokens are not refresh tokens and vice versa.
    assert browser.refresh(second["access_token"]).status_code == 400
    assert teams_status(emulator, second["refresh_token"]) == 401


def test_refresh_without_grace_revokes_the_old_token(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory("--refresh-grace", "0")
    browser = Browser(emu)
    first = browser.exchange(browser.code()).json()
    second = browser.refresh(first["refresh_token"])
    assert second.status_code == 200
    reused = browser.refresh(first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert browser.refresh(second.json()["refresh_token"]).status_code == 200
    # Refresh tokens survive a restart.
    emu.restart()
    browser = Browser(emu)
    latest = browser.exchange(browser.code()).json()
    emu.restart()
    assert Browser(emu).refresh(latest["refresh_token"]).status_code == 200


def test_revoke(emulator: Emulator) -> None:
    browser = Browser(emulator)
    tokens = browser.exchange(browser.code()).json()
    config = emulator.api("GET", "/.well-known/openid-configuration")
    assert (
        emulator.client.post(
            config["revocation_endpoint"], data={"token": tokens["refresh_token"]}
        ).status_code
        == 200
    )
    assert browser.refresh(tokens["refresh_token"]).status_code == 400
