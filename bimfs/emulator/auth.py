"""Tokens and logins: the legacy ``/v2/authorize`` and an OIDC provider (authorization code with
PKCE, refresh tokens), as far as a public desktop client uses them.

Tokens live in the store, so they survive a restart. Kinds:

- ``fixed``: given with ``--token``; a token of the demo user that never expires;
- ``access``: issued by ``/v2/authorize`` (32 hex digits) or by the OIDC token endpoint (a
  JWT-shaped string signed with a per-data-dir secret); valid for ``--token-ttl`` seconds;
- ``refresh``: issued by the OIDC token endpoint, valid 30 days. Refresh tokens rotate: each
  refresh answers a new one, and the one just used stays valid for ``--refresh-grace`` seconds
  (default 60) so that a client that lost the answer can try again, then it is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bimfs.emulator.app import Ctx, HttpError, State, json_response, read_json, read_small_body
from bimfs.emulator.storage import UserRec

FIXED_TOKEN_LIFETIME = 10 * 365 * 24 * 3600
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def bearer_token(request: Request) -> str | None:
    """The token of a request: ``Authorization: BimPlus <t>`` or ``Bearer <t>``, else
    ``?api-token=<t>``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() in ("bimplus", "bearer") and value.strip():
            return value.strip()
    return request.query_params.get("api-token") or None


class AuthService:
    """Issues and checks tokens; serves the login endpoints."""

    def __init__(self, state: State) -> None:
        self.state = state
        store = state.store
        secret = store.meta("token_secret")
        if secret is None:
            secret = secrets.token_hex(32)
            store.set_meta("token_secret", secret)
        self._secret = secret.encode()

    # -- tokens ----------------------------------------------------------------------------

    def add_fixed_token(self, token: str, user_id: str) -> None:
        """Make ``token`` a never-expiring access token of ``user_id``."""
        self.state.store.add_token(token, "fixed", user_id, client_id="bimfs-emulator")

    def _valid(self, token: str, kinds: tuple[str, ...]) -> tuple[str, str, str, float | None]:
        """``(user_id, client_id, scope, expires_at)`` of a valid token, else HttpError(401)."""
        row = self.state.store.token(token)
        now = time.time()
        if row is None:
            raise HttpError(401, "unknown token")
        kind, user_id, client_id, scope, expires_at, revoked_at = row
        if kind not in kinds:
            raise HttpError(401, "unknown token")
        if revoked_at is not None and revoked_at <= now:
            raise HttpError(401, "revoked token")
        if expires_at is not None and expires_at <= now:
            raise HttpError(401, "expired token")
        return user_id, client_id, scope, expires_at

    def authenticate(self, request: Request) -> UserRec | None:
        """The user a ``/v2`` request is authorised as, or None (answer 401)."""
        token = bearer_token(request)
        if not token:
            return None
        try:
            user_id, _, _, _ = self._valid(token, ("access", "fixed"))
        except HttpError:
            return None
        return self.state.store.user(user_id)

    def _jwt(self, claims: dict[str, Any]) -> str:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "emulator"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = _b64url(hmac.new(self._secret, signing_input, hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    def _issue_oidc(self, request: Request, user: UserRec, client_id: str, scope: str) -> Response:
        settings = self.state.settings
        store = self.state.store
        now = time.time()
        ttl = settings.token_ttl
        issuer = self.issuer(request)
        claims = {
            "exp": int(now + ttl),
            "iat": int(now),
            "jti": str(uuid.uuid4()),
            "iss": issuer,
            "aud": "account",
            "sub": user.id,
            "typ": "Bearer",
            "azp": client_id,
            "scope": scope,
            "email": user.email,
            "name": f"{user.firstname} {user.lastname}".strip(),
        }
        access = self._jwt(claims)
        store.add_token(
            access, "access", user.id, client_id=client_id, scope=scope, expires_at=now + ttl
        )
        refresh = secrets.token_urlsafe(32)
        store.add_token(
            refresh,
            "refresh",
            user.id,
            client_id=client_id,
            scope=scope,
            expires_at=now + settings.refresh_ttl,
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(ttl),
            "refresh_token": refresh,
            "refresh_expires_in": int(settings.refresh_ttl),
            "scope": scope,
        }
        if "openid" in scope.split():
            body["id_token"] = self._jwt({**claims, "typ": "ID", "aud": client_id})
        return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @staticmethod
    def issuer(request: Request) -> str:
        """The issuer URL, on the host the client used (``127.0.0.1`` or ``localhost``)."""
        return f"{request.url.scheme}://{request.url.netloc}/oidc/"

    # -- legacy ------------------------------------------------------------------------------

    async def legacy_login(self, ctx: Ctx) -> Response:
        """``POST /v2/authorize``."""
        body = await read_json(ctx.request)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        if not body.get("application_id"):
            raise HttpError(400, "application_id is mandatory")
        email, password = body.get("user_id"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise HttpError(400, "user_id and password are mandatory")
        user = self.state.store.check_password(email, password)
        if user is None:
            raise HttpError(401, "invalid user or password")
        client_id = body.get("client_id") or str(uuid.uuid4()).upper()
        token = uuid.uuid4().hex
        ttl = self.state.settings.token_ttl
        self.state.store.add_token(
            token, "access", user.id, client_id=str(client_id), expires_at=time.time() + ttl
        )
        return json_response(
            {
                "access_token": token,
                "expires_in": int(ttl),
                "client_id": client_id,
                "token_type": "BimPlus",
            }
        )

    async def legacy_check(self, ctx: Ctx) -> Response:
        """``GET /v2/authorize``: who the token belongs to and how long it stays valid."""
        token = bearer_token(ctx.request) or ""
        user_id, client_id, _, expires_at = self._valid(token, ("access", "fixed"))
        user = self.state.store.user(user_id)
        remaining = FIXED_TOKEN_LIFETIME if expires_at is None else expires_at - time.time()
        return json_response(
            {
                "user_id": user.email if user else user_id,
                "audience": client_id or "bimfs-emulator",
                "expires_in": max(0, int(remaining)),
            }
        )

    # -- OIDC --------------------------------------------------------------------------------

    async def discovery(self, ctx: Ctx) -> Response:
        """``GET /v2/.well-known/openid-configuration``."""
        issuer = self.issuer(ctx.request)
        return json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": issuer + "auth",
                "token_endpoint": issuer + "token",
                "userinfo_endpoint": issuer + "userinfo",
                "revocation_endpoint": issuer + "revoke",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["HS256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "claims_supported": ["sub", "email", "name"],
            }
        )

    @staticmethod
    def _valid_redirect(uri: str) -> bool:
        try:
            parts = urlsplit(uri)
            _ = parts.port  # raises for a malformed port
        except ValueError:
            return False
        return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS

    @staticmethod
    def _redirect(uri: str, params: dict[str, str]) -> Response:
        sep = "&" if urlsplit(uri).query else "?"
        return RedirectResponse(uri + sep + urlencode(params), status_code=302)

    def _check_auth_request(self, q: dict[str, str]) -> Response | None:
        """None when the authorization request is acceptable, else the answer to give."""
        client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
        if not client_id:
            return _page("Login error", "<p>The request has no client_id.</p>", 400)
        if not redirect_uri or not self._valid_redirect(redirect_uri):
            return _page(
                "Login error",
                "<p>redirect_uri must be a loopback http:// address.</p>",
                400,
            )
        state = q.get("state", "")
        error: tuple[str, str] | None = None
        if q.get("response_type") != "code":
            error = ("unsupported_response_type", "only response_type=code is supported")
        elif not q.get("code_challenge"):
            error = ("invalid_request", "PKCE code_challenge is required")
        elif q.get("code_challenge_method") != "S256":
            error = ("invalid_request", "code_challenge_method must be S256")
        if error is None:
            return None
        params = {"error": error[0], "error_description": error[1]}
        if state:
            params["state"] = state
        return self._redirect(redirect_uri, params)

    async def authorize_page(self, ctx: Ctx) -> Response:
        """``GET /oidc/auth``: the login form."""
        q = dict(ctx.request.query_params)
        problem = self._check_auth_request(q)
        if problem is not None:
            return problem
        return _login_form(q, error=None)

    async def authorize_submit(self, ctx: Ctx) -> Response:
        """``POST /oidc/auth``: the submitted login form."""
        form = await _read_form(ctx.request)
        problem = self._check_auth_request(form)
        if problem is not None:
            return problem
        user = self.state.store.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            return _login_form(form, error="Invalid username or password.")
        code = secrets.token_urlsafe(24)
        self.state.store.add_code(
            code,
            client_id=form["client_id"],
            redirect_uri=form["redirect_uri"],
            challenge=form["code_challenge"],
            user_id=user.id,
            scope=form.get("scope") or "openid profile email",
            expires_at=time.time() + self.state.settings.code_ttl,
        )
        params = {"code": code}
        if form.get("state"):
            params["state"] = form["state"]
        return self._redirect(form["redirect_uri"], params)

    async def token_endpoint(self, ctx: Ctx) -> Response:
        """``POST /oidc/token`` (form-encoded)."""
        form = await _read_form(ctx.request)
        grant = form.get("grant_type", "")
        if grant == "authorization_code":
            return self._grant_code(ctx.request, form)
        if grant == "refresh_token":
            return self._grant_refresh(ctx.request, form)
        return _oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _grant_code(self, request: Request, form: dict[str, str]) -> Response:
        for name in ("code", "redirect_uri", "client_id", "code_verifier"):
            if not form.get(name):
                return _oauth_error("invalid_request", f"{name} is missing")
        taken = self.state.store.take_code(form["code"])
        if taken is None:
            return _oauth_error("invalid_grant", "unknown or already used code")
        client_id, redirect_uri, challenge, user_id, scope, expires_at = taken
        if expires_at <= time.time():
            return _oauth_error("invalid_grant", "code expired")
        if client_id != form["client_id"]:
            return _oauth_error("invalid_grant", "code was issued to another client")
        if redirect_uri != form["redirect_uri"]:
            return _oauth_error("invalid_grant", "redirect_uri does not match")
        verifier = form["code_verifier"]
        if not _VERIFIER_RE.match(verifier) or not hmac.compare_digest(
            pkce_challenge(verifier), challenge
        ):
            return _oauth_error("invalid_grant", "PKCE verification failed")
        user = self.state.store.user(user_id)
        if user is None:
            return _oauth_error("invalid_grant", "unknown user")
        return self._issue_oidc(request, user, client_id, scope)

    def _grant_refresh(self, request: Request, form: dict[str, str]) -> Response:
        old = form.get("refresh_token", "")
        if not old:
            return _oauth_error("invalid_request", "refresh_token is missing")
        try:
            user_id, client_id, scope, _ = self._valid(old, ("refresh",))
        except HttpError as exc:
            return _oauth_error("invalid_grant", exc.text)
        if form.get("client_id") and form["client_id"] != client_id:
            return _oauth_error("invalid_grant", "token was issued to another client")
        user = self.state.store.user(user_id)
        if user is None:
            return _oauth_error("invalid_grant", "unknown user")
        self.state.store.revoke_token(old, time.time() + self.state.settings.refresh_grace)
        return self._issue_oidc(request, user, client_id, scope)

    async def userinfo(self, ctx: Ctx) -> Response:
        """``GET /oidc/userinfo`` with a Bearer access token."""
        token = bearer_token(ctx.request) or ""
        try:
            user_id, _, _, _ = self._valid(token, ("access", "fixed"))
        except HttpError as exc:
            raise HttpError(401, exc.text, {"WWW-Authenticate": "Bearer"}) from exc
        user = self.state.store.user(user_id)
        assert user is not None
        name = f"{user.firstname} {user.lastname}".strip()
        return json_response({"sub": user.id, "email": user.email, "name": name})

    async def revoke(self, ctx: Ctx) -> Response:
        """``POST /oidc/revoke`` (RFC 7009: unknown tokens are not an error)."""
        form = await _read_form(ctx.request)
        token = form.get("token", "")
        if token:
            self.state.store.revoke_token(token, time.time())
        return Response(status_code=200)


async def _read_form(request: Request) -> dict[str, str]:
    body = (await read_small_body(request)).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return json_response(
        {"error": error, "error_description": description},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )
    return HTMLResponse(text, status_code=status)


_HIDDEN = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "nonce",
)


def _login_form(q: dict[str, str], error: str | None) -> Response:
    hidden = "\n".join(
        f"<input type='hidden' name='{name}' value='{html.escape(q[name], quote=True)}'>"
        for name in _HIDDEN
        if name in q
    )
    message = f"<p class='error' role='alert'>{html.escape(error)}</p>\n" if error else ""
    user = html.escape(q.get("username", ""), quote=True)
    body = (
        f"{message}<form method='post' action='/oidc/auth'>\n{hidden}\n"
        "<label>Email <input name='username' type='email' autocomplete='username'"
        f" value='{user}'></label>\n"
        "<label>Password <input name='password' type='password'"
        " autocomplete='current-password'></label>\n"
        "<button type='submit'>Sign in</button>\n</form>"
    )
    return _page("Sign in to Bimplus (emulator)", body)
