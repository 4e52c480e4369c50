"""The session under every API call: one connection pool, one token source, and the rules.

:class:`Session` carries every request of a :class:`~bimfs.api.client.BimplusClient` (which adds
the endpoints) over one shared ``httpx.AsyncClient``: HTTP/1.1, TLS verification always on, a
pool large enough for parallel range downloads, on the large-read transport.

* **Deadlines.** A call that answers JSON must finish within ``timeout`` seconds per attempt.
  Downloads and uploads, which may take long, have the same limit for the answer's headers and
  for every single socket read or write, so a stalled body fails with ``ApiTimeoutError``
  instead of hanging.
* **Retries.** Idempotent calls (GET, PUT JSON, DELETE) are retried on transport errors,
  timeouts, 5xx and 429 (see ``bimfs.api.retry``). A 404 on a retried DELETE counts as success
  (the first attempt did the work).
* **Authentication.** A 401 asks the :class:`~bimfs.api.auth.AuthProvider` for a fresh token
  once, then the call is repeated; a second 401 (or a provider that cannot refresh) raises
  ``UnauthorizedError``.
* **Requests that must not be duplicated** (uploads, creations) are never blindly repeated. A
  failure before the body started is retried like any other; after it started the outcome is
  unknown, so the server is asked whether it landed (see ``bimfs.api.settle``). Such a request
  is reported done only when the server confirmed it; when the check itself fails,
  ``UploadOutcomeUnknownError``.
* **Errors.** Nothing from httpx leaves: every httpx call runs inside
  ``bimfs.api.error_map``. Error bodies are kept as a short one-line excerpt.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import trio

from bimfs.api.auth import AuthProvider
from bimfs.api.download import finish_body
from bimfs.api.error_map import deadline, excerpt, map_transport_errors
from bimfs.api.errors import (
    ApiError,
    ApiTimeoutError,
    AuthError,
    ProtocolError,
    StatusError,
    TransportError,
    UnauthorizedError,
    UploadOutcomeUnknownError,
    status_error,
)
from bimfs.api.retry import RetryPolicy, parse_retry_after, refused
from bimfs.api.transport import DEFAULT_USER_AGENT, make_transport
from bimfs.config import check_api_url

__all__ = ["TOKEN_TYPES", "Body", "JsonBody", "Session"]

log = logging.getLogger("bimfs.api")

T = TypeVar("T")

TOKEN_TYPES = ("BimPlus", "Bearer")

_ERROR_BODY_READ = 4096


class Session:
    """Requests to one API root with deadlines, retries and one token refresh (the rules in
    the module docstring); the base of :class:`~bimfs.api.client.BimplusClient`, which
    documents the arguments."""

    def __init__(
        self,
        api_url: str,
        auth: AuthProvider,
        *,
        token_type: str = "BimPlus",
        timeout: float = 30.0,
        retries: int = 5,
        user_agent: str = DEFAULT_USER_AGENT,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        self.api_url = check_api_url(api_url)
        matches = [t for t in TOKEN_TYPES if t.lower() == token_type.strip().lower()]
        if not matches:
            raise ValueError(f"token type must be one of {', '.join(TOKEN_TYPES)}: {token_type!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.token_type = matches[0]
        self.timeout = float(timeout)
        self.policy = RetryPolicy(retries=retries, base=backoff_base, cap=backoff_cap)
        self._auth = auth
        self._base_path = urlsplit(self.api_url).path.rstrip("/")
        self._clock_offset = 0.0  # server clock minus ours, from the last Date header seen
        # The account's own user, as ids/emails in lower case (see BimplusClient.me).
        self._me: frozenset[str] | None = None
        self._last_token = ""
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        )
        self._http = httpx.AsyncClient(
            http1=True,
            http2=False,
            verify=True,  # never configurable: a token must not go to an unverified host
            timeout=httpx.Timeout(self.timeout),
            limits=limits,
            transport=make_transport(limits),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_url!r}, auth={self._auth!r})"

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _url(self, template: str, args: Mapping[str, str | int]) -> str:
        quoted = {k: quote(str(v), safe="") for k, v in args.items()}
        return self.api_url + template.format(**quoted)

    def _call(self, method: str, template: str) -> str:
        return f"{method} {self._base_path}{template}"

    def _auth_header(self, token: str) -> dict[str, str]:
        return {"Authorization": f"{self.token_type} {token}"}

    async def _token(self) -> str:
        token = await self._auth.token()
        self._last_token = token
        return token

    async def _error_body(self, response: httpx.Response, call: str) -> str:
        """Read at most a few KiB of an error answer and return the sanitised excerpt."""
        raw = bytearray()
        try:
            with deadline(call, self.timeout):
                pieces = response.aiter_bytes()
                try:
                    async for piece in pieces:
                        raw += piece
                        if len(raw) >= _ERROR_BODY_READ:
                            break
                finally:
                    await finish_body(response, pieces)
        except ApiError:
            pass  # the status says enough; a body we cannot read adds nothing
        finally:
            await self._close(response, call)
        return excerpt(bytes(raw[:_ERROR_BODY_READ]), hide=(self._last_token,))

    async def _close(self, response: httpx.Response, call: str) -> None:
        with trio.CancelScope(shield=True), map_transport_errors(call):
            await response.aclose()

    def _note_date(self, response: httpx.Response) -> None:
        value = response.headers.get("date")
        if not value:
            return
        try:
            server = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        self._clock_offset = server - time.time()

    async def _retry_wait(
        self, call: str, attempt: int, reason: str, retry_after: float | None = None
    ) -> None:
        delay = self.policy.delay(attempt, retry_after)
        log.log(
            self.policy.log_level(attempt + 1),
            "%s: %s; retry %d/%d in %.1f s",
            call,
            reason,
            attempt + 1,
            self.policy.retries,
            delay,
        )
        await trio.sleep(delay)

    async def _refusal(
        self, response: httpx.Response, call: str, attempt: int, limit: int | None = None
    ) -> StatusError | None:
        """Read an error answer (and close it). None, after waiting, when the same request is
        to be sent again: the server refused it for now (429, 5xx) and the policy allows
        another repetition; otherwise the error to raise."""
        status = response.status_code
        body = await self._error_body(response, call)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if refused(status) and self.policy.may_repeat(attempt, retry_after, limit):
            await self._retry_wait(call, attempt, str(status), retry_after)
            return None
        return status_error(status, body, call=call, retry_after=retry_after)

    async def _request(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        missing_ok_on_retry: bool = False,
    ) -> httpx.Response | None:
        """Send an idempotent request with deadline, retries and one token refresh.

        Returns the response (body read unless ``stream``; the caller closes a streamed one),
        or None when ``missing_ok_on_retry`` and a repeated attempt found the object gone.
        """
        call = self._call(method, template)
        url = self._url(template, args or {})
        refreshed = False
        attempt = 0
        while True:
            token = await self._token()
            req_headers = self._auth_header(token)
            if headers:
                req_headers.update(headers)
            request = self._http.build_request(
                method,
                url,
                params=params,
                json=json,
                headers=req_headers,
            )
            response: httpx.Response | None = None
            try:
                with deadline(call, self.timeout):
                    # Downloads may be redirected to a storage host; httpx drops the
                    # Authorization header when a redirect leaves the API's origin.
                    response = await self._http.send(
                        request, stream=True, follow_redirects=method == "GET"
                    )
                    if not stream and response.status_code < 300:
                        await response.aread()
            except (TransportError, ApiTimeoutError) as err:
                if response is not None:
                    await self._close(response, call)
                if attempt >= self.policy.retries:
                    raise
                await self._retry_wait(call, attempt, str(err.message))
                attempt += 1
                continue

            status = response.status_code
            if status < 300:
                self._note_date(response)
                return response
            if status == 401 and not refreshed:
                body = await self._error_body(response, call)
                await self._refresh(token, call, body)
                refreshed = True
                continue
            if status == 404 and missing_ok_on_retry and attempt > 0:
                await self._close(response, call)
                return None
            failure = await self._refusal(response, call, attempt)
            if failure is not None:
                raise failure
            attempt += 1

    async def _refresh(self, rejected: str, call: str, body: str) -> None:
        """After a 401: get a new token from the provider or raise ``UnauthorizedError``."""
        try:
            await self._auth.refresh(rejected)
        except AuthError as exc:
            log.debug("%s: token refresh not possible: %s", call, exc)
            raise UnauthorizedError(401, body, call=call) from exc

    async def _json(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        call = self._call(method, template)
        response = await self._request(method, template, args, params=params, json=json)
        assert response is not None
        return self._decode(response, call)

    @staticmethod
    def _decode(response: httpx.Response, call: str) -> Any:
        if not response.content.strip():
            raise ProtocolError(f"empty answer (status {response.status_code})", call=call)
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise ProtocolError(
                f"the answer is not JSON: {excerpt(response.content[:200])!r}", call=call
            ) from exc

    async def _delete(self, template: str, args: Mapping[str, str | int]) -> None:
        response = await self._request("DELETE", template, args, missing_ok_on_retry=True)
        if response is not None:
            await self._close(response, self._call("DELETE", template))

    async def _send_new(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int],
        params: Mapping[str, str],
        make_body: Callable[[], Body],
        parse: Callable[[Any], T],
        landed: Callable[[], Awaitable[T | None]],
        retries: int | None = None,
    ) -> T:
        """Send a request that must not be duplicated (an upload, a creation).

        Repeated only when the server provably stored nothing: the body never started, or the
        answer was 5xx/429 (refused) or 401 (refreshed once). When the outcome is unknown (the
        connection broke after the body started, the answer was unreadable), ``landed`` asks
        the server; its find is returned, "not landed" means the request is sent again, and a
        failing check raises ``UploadOutcomeUnknownError``.
        """
        call = self._call(method, template)
        url = self._url(template, args)
        # Waiting for the answer may take a while after a big body (the server stores it).
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 120.0))
        refreshed = False
        attempt = 0
        limit = self.policy.retries if retries is None else retries
        while True:
            body = make_body()
            content = body.stream()
            try:
                token = await self._token()
                headers = self._auth_header(token)
                headers.update(body.headers())
                headers["Accept"] = "application/json"
                request = self._http.build_request(
                    method, url, params=params, content=content, headers=headers, timeout=timeout
                )
                response: httpx.Response | None = None
                unknown: ApiError | None = None
                try:
                    with map_transport_errors(call):
                        response = await self._http.send(request, stream=True)
                    if response.status_code < 300:
                        with deadline(call, self.timeout):
                            await response.aread()
                except (TransportError, ApiTimeoutError) as err:
                    if response is not None:
                        await self._close(response, call)
                    if not body.started:
                        # Nothing of the body left this machine: the server cannot have stored it.
                        if attempt >= limit:
                            raise
                        await self._retry_wait(call, attempt, err.message)
                        attempt += 1
                        continue
                    unknown = err
                if response is not None and unknown is None:
                    status = response.status_code
                    if status < 300:
                        try:
                            result = parse(self._decode(response, call))
                        except ProtocolError as err:
                            # Stored (2xx) but unreadable: look the result up instead.
                            unknown = err
                        else:
                            self._note_date(response)
                            return result
                    elif status == 401 and not refreshed:
                        await self._refresh(token, call, await self._error_body(response, call))
                        refreshed = True
                        continue
                    else:
                        # A refusal (429, 5xx) means nothing was stored: it may be sent again.
                        failure = await self._refusal(response, call, attempt, limit)
                        if failure is not None:
                            raise failure
                        attempt += 1
                        continue
                assert unknown is not None
                try:
                    found = await landed()
                except ApiError as exc:
                    raise UploadOutcomeUnknownError(
                        f"interrupted ({unknown.message}) and checking whether it was stored "
                        f"failed ({exc})",
                        call=call,
                    ) from exc
                if found is not None:
                    log.info(
                        "%s: the interrupted request had been stored (%s)", call, unknown.message
                    )
                    return found
                if attempt >= limit:
                    raise unknown
                await self._retry_wait(call, attempt, f"{unknown.message} (not stored)")
                attempt += 1
            finally:
                # A body httpx stopped reading (a cut upload) is closed here, its file with it.
                with trio.CancelScope(shield=True):
                    await content.aclose()


class Body(Protocol):
    """A request body that can tell whether sending it has begun."""

    started: bool

    def headers(self) -> dict[str, str]: ...

    def stream(self) -> AsyncGenerator[bytes, None]: ...


class JsonBody:
    """A small JSON body with the ``started`` flag uploads have."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.started = False

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Content-Length": str(len(self.payload))}

    async def stream(self) -> AsyncGenerator[bytes, None]:
        self.started = True
        yield self.payload
