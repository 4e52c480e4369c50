"""Where access tokens come from, and how a rejected one is replaced.

The client asks its :class:`AuthProvider` for a token before every request and, after a 401,
calls :meth:`AuthProvider.refresh` once with the token that was rejected. Providers:

* :class:`StaticToken`: a token given as is (``BIMPLUS_TOKEN``, a token stored by a legacy
  login). It cannot be refreshed.
* :class:`TokenFile`: the token in ``--token-file``, read again after a 401, so that a token
  rotated in the file is used without remounting.
* :class:`LegacyLogin`: the obsolete ``POST /v2/authorize`` login with user, password and
  application id.
* :class:`OidcRefresh`: an OIDC refresh token (from ``bimfs login``) traded for short-lived
  access tokens at the token endpoint; a rotated refresh token is saved back.

Tokens never appear in logs, reprs or exception messages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import trio

from bimfs.api.credentials import default_config_dir, load_credentials, save_credentials
from bimfs.api.error_map import excerpt
from bimfs.api.errors import ApiTimeoutError, AuthError, ProtocolError, TransportError
from bimfs.api.plain import plain_request
from bimfs.backoff import backoff
from bimfs.config import check_api_url

log = logging.getLogger("bimfs.api")

EXPIRY_MARGIN = 30.0
"""Seconds before its announced expiry an access token is replaced (clock skew, and the time
a request takes to reach the server)."""

_GRANT_ATTEMPTS = 3
_GRANT_BACKOFF = 0.5  # seconds before the second attempt, doubling after

__all__ = [
    "AuthProvider",
    "LegacyLogin",
    "OidcRefresh",
    "StaticToken",
    "TokenFile",
    "default_config_dir",
    "load_token_source",
]


@runtime_checkable
class AuthProvider(Protocol):
    """A source of access tokens for :class:`~bimfs.api.client.BimplusClient`."""

    async def token(self) -> str:
        """The current access token (logging in or refreshing first when needed)."""
        ...

    async def refresh(self, rejected: str) -> str:
        """A new token after ``rejected`` got a 401. Raises ``AuthError`` when impossible.

        When another task already replaced ``rejected``, the replacement is returned without
        asking the server again.
        """
        ...


class StaticToken:
    """A fixed access token. ``source`` says where it came from, for error messages."""

    def __init__(self, token: str, *, source: str = "the given token") -> None:
        token = token.strip()
        if not token:
            raise AuthError(f"{source} is empty")
        if any(ch.isspace() or not ch.isprintable() for ch in token):
            raise AuthError(f"{source} does not look like a token (it contains spaces)")
        self._token = token
        self.source = source

    def __repr__(self) -> str:
        return f"StaticToken(source={self.source!r}, token=<hidden>)"

    async def token(self) -> str:
        return self._token

    async def refresh(self, rejected: str) -> str:
        raise AuthError(
            f"the token from {self.source} was rejected (expired or invalid); "
            "get a new one, or run `bimfs login`"
        )


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AuthError(f"cannot read the token file {path}: {reason}") from exc


class TokenFile:
    """The token held in a file, read at start and again each time the server rejects it: a
    rotated token is picked up by the next request after the first 401."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._current = StaticToken(_read_token_file(path), source=self.source)
        self._lock = trio.Lock()
        self._warned = False

    @property
    def source(self) -> str:
        return f"token file {self.path}"

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, token=<hidden>)"

    async def token(self) -> str:
        return await self._current.token()

    async def refresh(self, rejected: str) -> str:
        async with self._lock:
            current = await self._current.token()
            if current != rejected:
                return current  # another request already read the new token
            text = await trio.to_thread.run_sync(_read_token_file, self.path)
            fresh = StaticToken(text, source=self.source)
            if await fresh.token() == rejected:
                message = (
                    f"the token in {self.source} was rejected (expired or invalid); "
                    "write a new one to the file (it is read again)"
                )
                if not self._warned:
                    self._warned = True  # once per token, not at every refused call
                    log.warning("%s", message)
                raise AuthError(message)
            self._warned = False
            self._current = fresh
            log.info("using the new token of %s", self.source)
            return await fresh.token()


class LegacyLogin:
    """The obsolete Bimplus login: ``POST <api>/authorize`` with user, password, application id.

    The token is fetched on first use and again when it was rejected or is about to expire.
    """

    def __init__(
        self,
        api_url: str,
        user: str,
        password: str,
        application_id: str,
        *,
        client_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.user = user
        self._password = password
        self.application_id = application_id
        self.client_id = client_id
        self.timeout = timeout
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"LegacyLogin({self.api_url!r}, user={self.user!r}, password=<hidden>)"

    @property
    def expires_at(self) -> float | None:
        """When the current token will be replaced (POSIX time, a little before it expires),
        if known."""
        return self._expires_at

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or _expired(self._expires_at):
                await self._login()
            assert self._token is not None
            return self._token

    async def refresh(self, rejected: str) -> str:
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token
            await self._login()
            assert self._token is not None
            return self._token

    async def _login(self) -> None:
        call = "POST /authorize"
        body: dict[str, str] = {
            "user_id": self.user,
            "password": self._password,
            "application_id": self.application_id,
        }
        if self.client_id:
            body["client_id"] = self.client_id
        answer = await plain_request(
            "POST", self.api_url + "/authorize", call=call, json=body, deadline=self.timeout
        )
        if answer.status >= 400:
            text = excerpt(answer.body, hide=(self._password,))
            raise AuthError(
                f"login as {self.user} refused ({answer.status}){': ' + text if text else ''}",
                call=call,
            )
        data = answer.json(call)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ProtocolError("the login answer has no access_token", call=call)
        self._token = token
        self._expires_at = _expiry(data.get("expires_in"))
        client_id = data.get("client_id")
        if isinstance(client_id, str) and client_id:
            # Reusing the client id lets later logins coexist with this one (per the docs).
            self.client_id = client_id
        log.debug("logged in as %s (legacy login)", self.user)


class OidcRefresh:
    """Access tokens from an OIDC refresh token (``grant_type=refresh_token``).

    ``on_rotate`` is called (in a worker thread) with the new refresh token whenever the server
    issues one, so that it can be saved; the old one may already be invalid. ``reload``, when
    given, returns the refresh token saved now (another process may have rotated it); it is
    tried once when the server refuses the one in memory.
    """

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        refresh_token: str,
        *,
        on_rotate: Callable[[str], None] | None = None,
        reload: Callable[[], str | None] | None = None,
        access_token: str | None = None,
        expires_at: float | None = None,
        timeout: float = 30.0,
        describe: str = "the stored login",
    ) -> None:
        self.token_endpoint = check_api_url(token_endpoint)
        self.client_id = client_id
        self._refresh_token = refresh_token
        self._on_rotate = on_rotate
        self._reload = reload
        self._access = access_token
        self._expires_at = expires_at
        self.timeout = timeout
        self.describe = describe
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return (
            f"OidcRefresh({self.token_endpoint!r}, client_id={self.client_id!r}, "
            "refresh_token=<hidden>)"
        )

    async def token(self) -> str:
        async with self._lock:
            if self._access is None or _expired(self._expires_at):
                await self._grant()
            assert self._access is not None
            return self._access

    async def refresh(self, rejected: str) -> str:
        async with self._lock:
            fresh = self._access is not None and not _expired(self._expires_at)
            if fresh and self._access != rejected:
                assert self._access is not None
                return self._access
            await self._grant()
            assert self._access is not None
            return self._access

    async def _grant(self) -> None:
        try:
            await self._grant_once()
        except AuthError:
            # Another process sharing the stored login (a second mount) may have rotated the
            # refresh token since this one read it: try the stored one before giving up.
            if self._reload is None:
                raise
            stored = await trio.to_thread.run_sync(self._reload)
            if not stored or stored == self._refresh_token:
                raise
            self._refresh_token = stored
            await self._grant_once()

    async def _grant_once(self) -> None:
        call = "POST token endpoint"
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": self.client_id,
        }
        for attempt in range(_GRANT_ATTEMPTS):
            try:
                answer = await plain_request(
                    "POST", self.token_endpoint, call=call, form=form, deadline=self.timeout
                )
            except (TransportError, ApiTimeoutError):
                if attempt + 1 >= _GRANT_ATTEMPTS:
                    raise
                await trio.sleep(backoff(attempt, base=_GRANT_BACKOFF))
                continue
            refused = answer.status >= 500 or answer.status == 429
            if refused and attempt + 1 < _GRANT_ATTEMPTS:
                await trio.sleep(backoff(attempt, base=_GRANT_BACKOFF))
                continue
            break
        if answer.status >= 400:
            reason = _oauth_error(answer.body, hide=(self._refresh_token,))
            if answer.status >= 500 or answer.status == 429:
                raise TransportError(
                    f"the login server failed ({answer.status}{reason})", call=call
                )
            raise AuthError(
                f"{self.describe} was refused by the login server ({answer.status}{reason}); "
                "run `bimfs login` again",
                call=call,
            )
        data = answer.json(call)
        access = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(access, str) or not access:
            raise ProtocolError("the token answer has no access_token", call=call)
        assert isinstance(data, dict)
        self._access = access
        self._expires_at = _expiry(data.get("expires_in"))
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._refresh_token = rotated
            if self._on_rotate is not None:
                await trio.to_thread.run_sync(self._on_rotate, rotated)
        log.debug("access token refreshed at the OIDC token endpoint")


def _expiry(expires_in: Any) -> float | None:
    """When a token announced to live ``expires_in`` seconds should be replaced: a margin
    before its end (clock skew, request time), at most ``EXPIRY_MARGIN`` and a quarter of its
    life, so that short-lived tokens are not refreshed on every call."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return None
    try:
        seconds = float(expires_in)
    except ValueError:
        return None
    if not seconds > 0:
        return None
    return time.time() + max(seconds - EXPIRY_MARGIN, seconds * 0.75)


def _expired(expires_at: float | None) -> bool:
    return expires_at is not None and time.time() >= expires_at


def _oauth_error(body: bytes, *, hide: tuple[str, ...]) -> str:
    """``": invalid_grant (Token is not active)"`` from an OAuth error answer, or an excerpt."""
    try:
        data = json.loads(body)
    except ValueError:
        text = excerpt(body, hide=hide)
        return f": {text}" if text else ""
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        desc = data.get("error_description")
        text = data["error"] + (f" ({desc})" if isinstance(desc, str) and desc else "")
        return ": " + excerpt(text, hide=hide)
    return ""


def load_token_source(
    *,
    token_file: Path | None,
    env: Mapping[str, str],
    api_url: str,
    config_dir: Path | None = None,
) -> AuthProvider:
    """Pick the token source, first found: ``token_file`` (surrounding whitespace ignored),
    ``BIMPLUS_TOKEN`` in ``env``, the credentials stored by ``bimfs login`` for ``api_url``.

    Raises ``AuthError`` with a one-line explanation when there is none or it is unusable.
    """
    if token_file is not None:
        return TokenFile(Path(token_file))
    env_token = env.get("BIMPLUS_TOKEN", "")
    if env_token.strip():
        return StaticToken(env_token, source="BIMPLUS_TOKEN")
    directory = Path(config_dir) if config_dir is not None else default_config_dir()
    stored = load_credentials(directory, api_url)
    if stored is None:
        raise AuthError(
            f"no credentials for {api_url}: run `bimfs login`, set BIMPLUS_TOKEN, "
            "or pass --token-file"
        )
    return _provider_from_stored(stored, directory, api_url)


def _provider_from_stored(stored: dict[str, Any], config_dir: Path, api_url: str) -> AuthProvider:
    if stored.get("kind") == "legacy":
        token = stored.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError("the stored legacy login has no token; run `bimfs login` again")
        return StaticToken(token, source="the stored legacy login")
    endpoint = stored.get("token_endpoint")
    client_id = stored.get("client_id")
    refresh = stored.get("refresh_token")
    if not all(isinstance(v, str) and v for v in (endpoint, client_id, refresh)):
        raise AuthError("the stored login is incomplete; run `bimfs login` again")
    assert isinstance(endpoint, str) and isinstance(client_id, str) and isinstance(refresh, str)

    def save_rotated(new_refresh: str) -> None:
        try:
            save_credentials(config_dir, api_url, {**stored, "refresh_token": new_refresh})
        except OSError as exc:
            # The new token still works for this mount; only the next one would need a login.
            log.warning("cannot save the renewed login to %s: %s", config_dir, exc.strerror)

    def reload_stored() -> str | None:
        try:
            current = load_credentials(config_dir, api_url)
        except AuthError:
            return None
        token = current.get("refresh_token") if current else None
        return token if isinstance(token, str) else None

    try:
        return OidcRefresh(
            endpoint, client_id, refresh, on_rotate=save_rotated, reload=reload_stored
        )
    except ValueError as exc:
        raise AuthError(f"the stored login is not usable: {exc}") from exc
