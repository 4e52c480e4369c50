"""The emulator's ASGI application: routing, statistics, faults and authentication around the
handlers of ``api`` (the Bimplus ``/v2`` routes), ``auth`` (legacy and OIDC login) and ``admin``
(``/_emulator`` hooks for tests).

Each request goes through ``EmulatorApp.__call__``:

1. route matching with Starlette ``Route`` objects; the route's path template (for instance
   ``/v2/{slug}/attachments/{id}/download``) names the request in the statistics;
2. for ``/v2``: latency, then the random draw (500/503, 429 with ``Retry-After``, or a connection
   reset handed to the handler, which knows where in the exchange to drop it);
3. for ``/v2`` routes other than login: the token check (401);
4. the handler, which returns a Starlette response or raises ``HttpError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from bimfs.emulator import hostile
from bimfs.emulator.faults import Draw, Faults
from bimfs.emulator.multipart import MultipartError
from bimfs.emulator.storage import NotFound, Store, UserRec

log = logging.getLogger("bimfs.emulator")


class HttpError(Exception):
    """Answer the request with ``status`` and a short text body."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


class ConnectionDropped(Exception):
    """Raised after the connection was dropped on purpose: nothing more may be sent."""


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """A short ``text/plain`` answer (Bimplus error bodies are opaque text)."""
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer."""
    return JSONResponse(data, status_code=status, headers=headers)


MAX_SMALL_BODY = 1024 * 1024


async def read_small_body(request: Request) -> bytes:
    """A JSON or form body, at most 1 MiB (``HttpError(413)`` beyond: never hold a big
    body in memory)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SMALL_BODY:
            raise HttpError(413, "request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    """The request body as JSON; ``HttpError(400)`` if it is not."""
    body = await read_small_body(request)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HttpError(400, "the body is not valid JSON") from exc


class Connection:
    """Access to the client connection beneath ASGI, to drop it on purpose.

    uvicorn's ``send`` is a bound method of its request cycle, which owns the transport; closing
    that transport is the only way for an ASGI app to cut a connection without uvicorn logging an
    application error. Without it (another server) dropping raises ``ConnectionDropped``.
    """

    def __init__(self, send: Send, on_drop: Callable[[], None] | None = None) -> None:
        self._owner = getattr(send, "__self__", None)
        self._transport = getattr(self._owner, "transport", None)
        # Called before the connection is closed, so that whatever the client does next sees
        # this request already counted.
        self._on_drop = on_drop

    @property
    def lost(self) -> bool:
        """True once the connection is gone (either side)."""
        if self._owner is not None and getattr(self._owner, "disconnected", False):
            return True
        return self._transport is not None and self._transport.is_closing()

    async def drop(self) -> None:
        """Close the connection (what was already written is flushed first) and wait until
        the server noticed, so that it does not report an unfinished response."""
        if self._on_drop is not None:
            self._on_drop()
        if self._transport is None:
            raise ConnectionDropped()
        self._transport.close()
        for _ in range(400):
            if getattr(self._owner, "disconnected", True):
                break
            await asyncio.sleep(0.005)
        raise ConnectionDropped()


@dataclass
class Stats:
    """Request counts per route key and status, body bytes in and out."""

    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    def record(self, key: str, status: str) -> None:
        """Count one request."""
        per = self.requests.setdefault(key, {})
        per[status] = per.get(status, 0) + 1

    def reset(self) -> None:
        """Zero everything."""
        self.requests = {}
        self.bytes_in = 0
        self.bytes_out = 0

    def as_json(self) -> dict[str, Any]:
        """The statistics document."""
        return {
            "requests": {k: dict(v) for k, v in sorted(self.requests.items())},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


@dataclass
class Settings:
    """Start-up options that are not faults."""

    token_ttl: float = 3600.0
    refresh_grace: float = 60.0
    refresh_ttl: float = 30 * 24 * 3600.0
    code_ttl: float = 60.0


@dataclass
class State:
    """Everything the handlers share."""

    store: Store
    faults: Faults
    settings: Settings
    stats: Stats = field(default_factory=Stats)


@dataclass
class Ctx:
    """One request as the handlers see it."""

    request: Request
    params: dict[str, Any]
    key: str
    user: UserRec | None
    draw: Draw
    connection: Connection
    state: State

    @property
    def user_id(self) -> str:
        """The authenticated user's id (``/v2`` routes always have one)."""
        assert self.user is not None
        return self.user.id


Handler = Callable[[Ctx], Awaitable[Any]]


@dataclass(frozen=True)
class RouteSpec:
    """A route, its handler and its zone (``v2``, ``oidc`` or ``admin``)."""

    route: Route
    handler: Handler
    zone: str
    auth: bool

    @property
    def template(self) -> str:
        """The path template (``/v2/{slug}/attachments/{id}``)."""
        return self.route.path


async def _unused_endpoint(request: Request) -> Response:  # pragma: no cover - never called
    raise AssertionError("routes are dispatched by EmulatorApp")


def route(path: str, methods: list[str], handler: Handler, *, zone: str, auth: bool) -> RouteSpec:
    """Declare a route."""
    return RouteSpec(Route(path, _unused_endpoint, methods=methods), handler, zone, auth)


Authenticator = Callable[[Request], UserRec | None]


class EmulatorApp:
    """The ASGI application (see the module docstring)."""

    def __init__(self, state: State, routes: list[RouteSpec], authenticate: Authenticator) -> None:
        self.state = state
        self.routes = routes
        self.authenticate = authenticate

    def _match(self, scope: Scope) -> tuple[RouteSpec | None, dict[str, Any], bool]:
        partial = False
        for spec in self.routes:
            match, child = spec.route.matches(scope)
            if match is Match.FULL:
                return spec, child.get("path_params", {}), False
            if match is Match.PARTIAL:
                partial = True
        return None, {}, partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        spec, params, wrong_method = self._match(scope)
        zone = spec.zone if spec else ("v2" if path.startswith("/v2") else "other")
        key = f"{method} {spec.template if spec else path}"
        counted = zone in ("v2", "oidc")
        stats = self.state.stats
        status: list[str] = []
        recorded: list[bool] = []

        def record() -> None:
            if counted and not recorded:
                recorded.append(True)
                stats.record(key, status[0] if status else "reset")

        connection = Connection(send, record)

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                stats.bytes_in += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(str(message["status"]))
            await send(message)
            if message["type"] == "http.response.body" and not connection.lost:
                stats.bytes_out += len(message.get("body", b""))

        inner_receive = counting_receive if counted else receive
        inner_send = counting_send if counted else send
        try:
            await self._handle(
                scope, inner_receive, inner_send, spec, params, wrong_method, key, zone, connection
            )
        except ConnectionDropped:
            pass
        finally:
            record()

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        spec: RouteSpec | None,
        params: dict[str, Any],
        wrong_method: bool,
        key: str,
        zone: str,
        connection: Connection,
    ) -> None:
        faults = self.state.faults
        draw = Draw()
        if zone == "v2":
            latency = faults.settings.latency_ms
            if latency > 0:
                await asyncio.sleep(latency / 1000.0)
            draw = faults.draw(key)
            if draw.fail_status is not None:
                reason = "injected failure" if draw.fail_status == 500 else "service unavailable"
                await text_response(draw.fail_status, reason)(scope, receive, send)
                return
            if draw.throttle:
                headers = {"Retry-After": faults.retry_after_header()}
                await text_response(429, "too many requests", headers)(scope, receive, send)
                return
        request = Request(scope, receive, send)
        user = None
        if zone == "v2" and (spec is None or spec.auth):
            user = self.authenticate(request)
            if user is None:
                headers = {"WWW-Authenticate": "BimPlus"}
                await text_response(401, "missing, invalid or expired token", headers)(
                    scope, receive, send
                )
                return
        if spec is None:
            if wrong_method:
                response = text_response(405, "method not allowed")
            else:
                response = text_response(404, "not found")
            if draw.reset:
                await connection.drop()
            await response(scope, receive, send)
            return
        ctx = Ctx(request, params, key, user, draw, connection, self.state)
        started: list[bool] = []

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(True)
            await send(message)

        try:
            result = await spec.handler(ctx)
            held = faults.hold(key) if zone == "v2" else 0.0
            if held:
                await asyncio.sleep(held)
            if zone == "v2" and self.state.faults.settings.answers:
                result = hostile.rewrite(self.state.faults.settings.answers, key, result)
            if draw.reset and not getattr(result, "handles_reset", False):
                # Requests that are neither transfers nor uploads lose the answer.
                await connection.drop()
            await result(scope, receive, tracking_send)
        except ConnectionDropped:
            raise
        except ClientDisconnect:
            return
        except Exception as exc:
            if started:
                raise
            response = self._error_response(exc)
            await response(scope, receive, send)

    @staticmethod
    def _error_response(exc: Exception) -> Response:
        if isinstance(exc, HttpError):
            return text_response(exc.status, exc.text, exc.headers)
        if isinstance(exc, NotFound):
            return text_response(404, "not found")
        if isinstance(exc, MultipartError):
            return text_response(400, f"bad multipart upload: {exc}")
        log.exception("unexpected error in the emulator")
        return text_response(500, "internal error")
