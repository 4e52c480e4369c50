"""``bimfs login``: get credentials once and store them for later mounts.

OIDC (default): the authorization-code flow with PKCE (S256) in the user's browser. The
discovery document comes from ``<api>/.well-known/openid-configuration``; the browser is sent
back to a one-shot listener on ``http://127.0.0.1:<random port>/callback``; the code is traded
for tokens and the refresh token is stored (mode 0600) for the API URL.

Legacy (``--legacy``): the obsolete ``POST /v2/authorize`` with user, password and application
id. The password is read from the terminal, or from stdin when stdin is not a terminal, never
from the command line. The access token is stored.

Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import html
import os
import secrets
import sys
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import trio

from bimfs.api.auth import LegacyLogin, StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.credentials import default_config_dir, save_credentials
from bimfs.api.errors import ApiError, ProtocolError
from bimfs.api.plain import plain_request
from bimfs.config import ENV_URLS, check_api_url

DEFAULT_CLIENT_ID = "bimfs"
DEFAULT_SCOPE = "openid profile email"
DEFAULT_TIMEOUT = 300.0
CALLBACK_PATH = "/callback"
_MAX_REQUEST_HEAD = 16 * 1024
_CONNECTION_TIMEOUT = 10.0


__all__ = ["add_login_parser", "configure_parser", "main", "run_login"]


class LoginError(Exception):
    """The login failed; the message is one line for the user."""


def add_login_parser(subparsers: Any) -> None:
    """Add the ``login`` sub-command to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "login",
        help="log in to Bimplus in the browser and store the credentials",
        description=(
            "Log in to Bimplus (OIDC authorization code + PKCE in the browser) and store a "
            "refresh token for later mounts (mode 0600). With --legacy, use the obsolete "
            "user/password login and store the access token."
        ),
    )
    configure_parser(parser)
    parser.set_defaults(func=run_login)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``login`` options to ``parser``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--env", choices=sorted(ENV_URLS), help="Bimplus environment (default: prod)"
    )
    where.add_argument("--api-url", metavar="URL", help="API root, e.g. https://host/v2")
    parser.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        metavar="ID",
        help=f"OIDC client id registered for this application (default: {DEFAULT_CLIENT_ID})",
    )
    parser.add_argument("--scope", default=DEFAULT_SCOPE, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-browser", action="store_true", help="only print the login URL, do not open it"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the browser (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--token-type",
        choices=["BimPlus", "Bearer"],
        default="BimPlus",
        help="authorization scheme used to check the new token (default: BimPlus)",
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where credentials are stored (default: $XDG_CONFIG_HOME/bimfs)",
    )
    parser.add_argument(
        "--legacy", action="store_true", help="use the obsolete user/password login"
    )
    parser.add_argument("--user", metavar="EMAIL", help="user (email) for --legacy")
    parser.add_argument("--application-id", metavar="ID", help="application id for --legacy")


def run_login(args: argparse.Namespace) -> int:
    """Run ``bimfs login`` with parsed arguments; return the exit code."""
    try:
        message = trio.run(_login, args)
    except KeyboardInterrupt:
        _say("bimfs login: interrupted")
        return 130
    except _EXPECTED as exc:
        _say(f"bimfs login: {_one_line(exc)}")
        return 1
    except BaseExceptionGroup as group:
        # Errors raised inside the listener's nursery arrive grouped: report the first one.
        first = _first_leaf(group)
        if not isinstance(first, _EXPECTED):
            raise
        _say(f"bimfs login: {_one_line(first)}")
        return 1
    print(message, flush=True)
    return 0


_EXPECTED = (LoginError, ApiError, ValueError, OSError)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def main(argv: list[str] | None = None) -> int:
    """``python -m bimfs.login``: the same as ``bimfs login``."""
    parser = argparse.ArgumentParser(prog="bimfs login")
    configure_parser(parser)
    return run_login(parser.parse_args(argv))


def _say(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _api_url(args: argparse.Namespace) -> str:
    url = args.api_url or ENV_URLS[args.env or "prod"]
    return check_api_url(url)


def _config_dir(args: argparse.Namespace) -> Path:
    return Path(args.config_dir) if args.config_dir else default_config_dir()


async def _login(args: argparse.Namespace) -> str:
    if args.timeout <= 0:
        raise LoginError("--timeout must be positive")
    api_url = _api_url(args)
    if args.legacy:
        return await _legacy_login(args, api_url)
    if args.user or args.application_id:
        raise LoginError("--user and --application-id only go with --legacy")
    return await _oidc_login(args, api_url)


# -- legacy ------------------------------------------------------------------------------------


def _read_password(user: str) -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        password = getpass.getpass(f"Bimplus password for {user}: ")
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        password = line.rstrip("\r\n")
    if not password:
        raise LoginError("no password given")
    return password


async def _legacy_login(args: argparse.Namespace, api_url: str) -> str:
    if not args.user or not args.application_id:
        raise LoginError("--legacy needs --user EMAIL and --application-id ID")
    password = await trio.to_thread.run_sync(_read_password, args.user)
    provider = LegacyLogin(api_url, args.user, password, args.application_id)
    token = await provider.token()
    teams = await _check_token(api_url, token, args.token_type)
    path = save_credentials(
        _config_dir(args),
        api_url,
        {
            "kind": "legacy",
            "access_token": token,
            "client_id": provider.client_id,
            "application_id": args.application_id,
            "user": args.user,
            "expires_at": provider.expires_at,
        },
    )
    return f"Logged in to {api_url} as {args.user} ({teams} teams); token saved in {path}"


async def _check_token(api_url: str, token: str, token_type: str) -> int:
    """Prove the new token works against the API; return the number of teams."""
    async with BimplusClient(
        api_url, StaticToken(token, source="the new token"), token_type=token_type, retries=2
    ) as client:
        try:
            return len(await client.get_teams())
        except ApiError as exc:
            raise LoginError(f"the API did not accept the new token: {exc}") from exc


# -- OIDC ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    """The parts of an OIDC discovery document a login needs."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str


async def discover(api_url: str) -> Discovery:
    """Read ``<api>/.well-known/openid-configuration``."""
    call = "GET /.well-known/openid-configuration"
    answer = await plain_request("GET", api_url + "/.well-known/openid-configuration", call=call)
    if answer.status != 200:
        raise LoginError(f"OIDC discovery at {api_url} failed with status {answer.status}")
    data = answer.json(call)
    if not isinstance(data, dict):
        raise ProtocolError("the discovery document is not an object", call=call)
    fields = {}
    for key in ("authorization_endpoint", "token_endpoint"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"the discovery document has no {key}", call=call)
        try:
            check_api_url(value)
        except ValueError as exc:
            raise LoginError(f"unsafe {key} in the discovery document: {exc}") from exc
        fields[key] = value
    issuer = data.get("issuer")
    return Discovery(
        issuer=issuer if isinstance(issuer, str) else "",
        authorization_endpoint=fields["authorization_endpoint"],
        token_endpoint=fields["token_endpoint"],
    )


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (86 URL-safe characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def _can_open_browser() -> bool:
    """False where ``webbrowser`` would only find a text browser that takes over the terminal
    (a Linux session without a display)."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _open_browser(url: str) -> bool:
    try:
        return webbrowser.open(url, new=1)
    except webbrowser.Error:
        return False


async def _oidc_login(args: argparse.Namespace, api_url: str) -> str:
    discovery = await discover(api_url)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        query = urlencode(
            {
                "response_type": "code",
                "client_id": args.client_id,
                "redirect_uri": redirect_uri,
                "scope": args.scope,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        sep = "&" if urlsplit(discovery.authorization_endpoint).query else "?"
        url = f"{discovery.authorization_endpoint}{sep}{query}"
        _say("To log in to Bimplus, open this URL in a browser on this machine:")
        _say(f"  {url}")
        if not args.no_browser:
            if _can_open_browser() and await trio.to_thread.run_sync(_open_browser, url):
                _say("(a browser window was opened)")
            else:
                _say("(no browser could be opened: open the URL above yourself)")
        _say(f"Waiting up to {args.timeout:g} s for the login to finish...")
        with trio.move_on_after(args.timeout) as scope:
            code = await _wait_for_code(listeners, state)
        if scope.cancelled_caught:
            raise LoginError(f"no login within {args.timeout:g} s (the browser never came back)")
    finally:
        for listener in listeners:
            await listener.aclose()
    tokens = await _exchange_code(discovery, args.client_id, code, redirect_uri, verifier)
    teams = await _check_token(api_url, tokens["access_token"], args.token_type)
    path = save_credentials(
        _config_dir(args),
        api_url,
        {
            "kind": "oidc",
            "client_id": args.client_id,
            "issuer": discovery.issuer,
            "token_endpoint": discovery.token_endpoint,
            "refresh_token": tokens["refresh_token"],
            "scope": args.scope,
        },
    )
    return f"Logged in to {api_url} ({teams} teams); credentials saved in {path}"


async def _exchange_code(
    discovery: Discovery, client_id: str, code: str, redirect_uri: str, verifier: str
) -> dict[str, str]:
    call = "POST token endpoint"
    answer = await plain_request(
        "POST",
        discovery.token_endpoint,
        call=call,
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    try:
        data = answer.json(call)
    except ProtocolError:
        data = None
    if answer.status != 200 or not isinstance(data, dict):
        reason = ""
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            reason = f": {data['error']}"
            if isinstance(data.get("error_description"), str):
                reason += f" ({data['error_description']})"
        raise LoginError(f"the login server refused the code (status {answer.status}{reason})")
    access, refresh = data.get("access_token"), data.get("refresh_token")
    if not isinstance(access, str) or not access:
        raise LoginError("the login server answered without an access token")
    if not isinstance(refresh, str) or not refresh:
        raise LoginError("the login server gave no refresh token, so the login cannot be kept")
    return {"access_token": access, "refresh_token": refresh}


@dataclass
class _Callback:
    code: str | None = None
    error: str | None = None


async def _wait_for_code(listeners: list[trio.SocketListener], state: str) -> str:
    """Serve the loopback redirect until one request brings a code (or an error)."""
    result = _Callback()
    async with trio.open_nursery() as nursery:

        async def handle(stream: trio.SocketStream) -> None:
            async with stream:
                with trio.move_on_after(_CONNECTION_TIMEOUT):
                    outcome = await _handle_callback(stream, state)
                    if outcome is not None and result.code is None and result.error is None:
                        result.code, result.error = outcome
                        nursery.cancel_scope.cancel()

        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, handle, [listener])
    if result.error is not None:
        raise LoginError(result.error)
    assert result.code is not None
    return result.code


async def _handle_callback(
    stream: trio.SocketStream, state: str
) -> tuple[str | None, str | None] | None:
    """Answer one HTTP request on the listener. Returns ``(code, None)`` or ``(None, error)``
    when the request was the redirect, None for anything else (a favicon, a stray probe)."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        head += data
        if len(head) > _MAX_REQUEST_HEAD:
            await _respond(stream, 431, "Request too large", "The request was too large.")
            return None
    request_line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        await _respond(stream, 405, "Not allowed", "Only the login redirect is served here.")
        return None
    target = urlsplit(parts[1])
    if target.path != CALLBACK_PATH:
        await _respond(stream, 404, "Not found", "Nothing here.")
        return None
    query = {k: v[0] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
    if not secrets.compare_digest(query.get("state", "").encode(), state.encode()):
        await _respond(
            stream, 400, "Login failed", "The answer does not belong to this login (state)."
        )
        return None, "the login answer did not match this login (state mismatch); try again"
    if "error" in query:
        reason = query["error"]
        if query.get("error_description"):
            reason += f" ({query['error_description']})"
        await _respond(stream, 400, "Login failed", f"The login server said: {reason}")
        return None, f"the login server refused: {' '.join(reason.split())}"
    code = query.get("code", "")
    if not code:
        await _respond(stream, 400, "Login failed", "The answer has no code.")
        return None, "the login answer had no code"
    await _respond(stream, 200, "Logged in", "bimfs is logged in. You can close this window.")
    return code, None


async def _respond(stream: trio.SocketStream, status: int, title: str, text: str) -> None:
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    ).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
        status, "Error"
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send_all(head + body)
    except trio.BrokenResourceError:
        pass


if __name__ == "__main__":
    sys.exit(main())
