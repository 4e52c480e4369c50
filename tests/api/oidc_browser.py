"""Acting as the user's browser in the emulator's OIDC login (tests only)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

USER = "demo@bimfs.test"
PASSWORD = "demo"


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("type") == "hidden":
            self.fields[values["name"]] = values.get("value", "")


def submit_login(auth_url: str, user: str = USER, password: str = PASSWORD) -> str:
    """Open the login page, fill in the form, return where the server redirects the browser."""
    with httpx.Client(timeout=30.0) as browser:
        page = browser.get(auth_url)
        page.raise_for_status()
        form = _FormParser()
        form.feed(page.text)
        target = httpx.URL(auth_url).join(form.action)
        answer = browser.post(target, data={**form.fields, "username": user, "password": password})
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def obtain_tokens(api_url: str, client_id: str = "bimfs-test") -> tuple[str, dict]:
    """The whole code flow without a listener: returns (token endpoint, token answer)."""
    with httpx.Client(timeout=30.0) as http:
        discovery = http.get(api_url + "/.well-known/openid-configuration").json()
    verifier, challenge = pkce()
    redirect_uri = "http://127.0.0.1:9/callback"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email",
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    location = submit_login(f"{discovery['authorization_endpoint']}?{query}")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["xyz"]
    with httpx.Client(timeout=30.0) as http:
        tokens = http.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
    tokens.raise_for_status()
    return discovery["token_endpoint"], tokens.json()
