"""The async (trio) Bimplus REST client.

One shared ``httpx.AsyncClient`` (HTTP/1.1, TLS verification always on, a connection pool large
enough for parallel range downloads) carries every request. The rules every call follows:

* **Deadlines.** A call that answers JSON must finish within ``timeout`` seconds per attempt
  (``trio.fail_after`` around sending and reading). Downloads and uploads, which may take long,
  have the same limit for the answer's headers and for every single socket read or write, so a
  stalled body fails with ``ApiTimeoutError`` instead of hanging.
* **Retries.** Idempotent calls (GET, PUT JSON, DELETE) are retried on transport errors,
  timeouts, 5xx and 429, with exponential backoff and full jitter, honouring ``Retry-After``.
  A 404 on a retried DELETE counts as success (the first attempt did the work).
* **Authentication.** A 401 asks the :class:`~bimfs.api.auth.AuthProvider` for a fresh token
  once, then the call is repeated; a second 401 (or a provider that cannot refresh) raises
  ``UnauthorizedError``.
* **Uploads** are never blindly repeated. A failure before the body started is retried like any
  other; after it started the outcome is unknown, so the server is asked (the version list, the
  project's documents) whether the upload landed. An upload is reported done only when the
  server confirmed it; when the check itself fails, ``UploadOutcomeUnknownError``.
* **Errors.** Nothing from httpx leaves this package: :func:`_map_transport_errors` is the one
  place that translates httpx (and httpcore) exceptions. Error bodies are kept as a short
  one-line excerpt.
* **Speed.** httpcore's connection pool runs on a network stream of our own that reads 1 MiB
  at a time, and a long download body is read straight from the socket rather than through
  h11 (see ``DIRECT_BODY_MIN``): a download then runs as fast as curl from the same server.
"""

from __future__ import annotations

import email.utils
import html
import json as json_module
import logging
import math
import os
import re
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpcore
import httpx
import trio

from bimfs import __version__
from bimfs.api.errors import (
    ApiError,
    ApiTimeoutError,
    AuthError,
    IncompleteBodyError,
    ProtocolError,
    StatusError,
    TransportError,
    UnauthorizedError,
    UploadOutcomeUnknownError,
    status_error,
)
from bimfs.api.models import (
    Attachment,
    FolderNode,
    Project,
    Team,
    require_list,
    require_object,
)
from bimfs.api.multipart import GrowingMultipartUpload, GrowingSource, MultipartUpload
from bimfs.backoff import FULL_JITTER, backoff
from bimfs.config import check_api_url, is_loopback_host

if TYPE_CHECKING:
    from bimfs.api.auth import AuthProvider

__all__ = [
    "DOWNLOAD_CHUNK",
    "BimplusClient",
    "Download",
    "PlainAnswer",
    "RetryPolicy",
    "check_api_url",
    "excerpt",
    "is_loopback_host",
    "map_httpx_error",
    "parse_retry_after",
    "plain_request",
]

log = logging.getLogger("bimfs.api")

T = TypeVar("T")

DOWNLOAD_CHUNK = 1024 * 1024
"""Download bodies are handed out in pieces of about this size."""

DEFAULT_USER_AGENT = f"bimfs/{__version__}"
TOKEN_TYPES = ("BimPlus", "Bearer")
MAX_RETRY_AFTER = 120.0
"""A ``Retry-After`` longer than this is not waited out inside a call: the error is raised with
``retry_after`` set, so the caller (the background uploader) can schedule the next try itself."""

UPLOAD_SETTLE_SLACK = 120.0
"""Seconds of clock disagreement tolerated when deciding whether a document found after an
interrupted upload was created by that upload."""

_EXCERPT_LIMIT = 200
_ERROR_BODY_READ = 4096


# --------------------------------------------------------------------------------------------
# Exception mapping: the one place where httpx exceptions become ApiErrors.


def _timeout(exc: Exception, call: str) -> ApiError:
    return ApiTimeoutError(f"timed out ({type(exc).__name__})", call=call)


def _detail(exc: BaseException) -> str:
    """The first non-empty message along the exception's causes: httpcore often re-raises
    with an empty message (a TLS verification failure arrives as a bare ``ConnectError``)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        text = " ".join(str(seen).split())
        if text:
            return text if seen is exc else f"{type(seen).__name__}: {text}"
        seen = seen.__cause__ or seen.__context__
    return "no details"


def _transport(exc: Exception, call: str) -> ApiError:
    return TransportError(f"{type(exc).__name__}: {_detail(exc)}", call=call)


def _protocol(exc: Exception, call: str) -> ApiError:
    return ProtocolError(f"{type(exc).__name__}: {_detail(exc)}", call=call)


def _programming(exc: Exception, call: str) -> ApiError:
    # Misuse of httpx inside this package (a bug here, not a network condition): still an
    # ApiError so it cannot escape as a foreign type, but never retryable.
    return ApiError(f"internal client error: {type(exc).__name__}: {exc}", call=call)


_HTTPX_ERRORS: tuple[tuple[type[Exception], Callable[[Exception, str], ApiError]], ...] = (
    # Most specific first: the first isinstance match wins. httpx's own classes, then those of
    # httpcore (met only where the body is read from httpcore's stream directly).
    (httpx.ConnectTimeout, _timeout),
    (httpx.ReadTimeout, _timeout),
    (httpx.WriteTimeout, _timeout),
    (httpx.PoolTimeout, _timeout),
    (httpx.TimeoutException, _timeout),
    (httpx.ConnectError, _transport),
    (httpx.ReadError, _transport),
    (httpx.WriteError, _transport),
    (httpx.CloseError, _transport),
    (httpx.NetworkError, _transport),
    (httpx.RemoteProtocolError, _transport),
    (httpx.LocalProtocolError, _programming),
    (httpx.ProtocolError, _transport),
    (httpx.ProxyError, _transport),
    (httpx.UnsupportedProtocol, _programming),
    (httpx.TransportError, _transport),
    (httpx.DecodingError, _protocol),
    (httpx.TooManyRedirects, _protocol),
    (httpx.RequestError, _transport),
    (httpx.HTTPStatusError, _programming),
    (httpx.HTTPError, _transport),
    (httpx.InvalidURL, _programming),
    (httpx.CookieConflict, _programming),
    (httpx.StreamConsumed, _programming),
    (httpx.StreamClosed, _programming),
    (httpx.ResponseNotRead, _programming),
    (httpx.RequestNotRead, _programming),
    (httpx.StreamError, _programming),
    (httpcore.ConnectTimeout, _timeout),
    (httpcore.ReadTimeout, _timeout),
    (httpcore.WriteTimeout, _timeout),
    (httpcore.PoolTimeout, _timeout),
    (httpcore.TimeoutException, _timeout),
    (httpcore.ConnectError, _transport),
    (httpcore.ReadError, _transport),
    (httpcore.WriteError, _transport),
    (httpcore.NetworkError, _transport),
    (httpcore.RemoteProtocolError, _transport),
    (httpcore.LocalProtocolError, _programming),
    (httpcore.ProtocolError, _transport),
    (httpcore.ProxyError, _transport),
    (httpcore.UnsupportedProtocol, _programming),
    (httpcore.ConnectionNotAvailable, _transport),
)

_HTTPX_BASES: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
)


def map_httpx_error(exc: Exception, call: str, *, body: bool = False) -> ApiError:
    """Translate one httpx (or httpcore) exception into the ``ApiError`` that describes it.

    With ``body`` (the error happened while a response body was being read) a broken
    connection becomes ``IncompleteBodyError``: the body ended short of its length.
    """
    for cls, make in _HTTPX_ERRORS:
        if isinstance(exc, cls):
            err = make(exc, call)
            if body and type(err) is TransportError:
                return IncompleteBodyError(f"the body ended early: {err.message}", call=call)
            return err
    return _programming(exc, call)  # unreachable while the table covers every httpx base


@contextmanager
def _map_transport_errors(call: str, *, body: bool = False) -> Iterator[None]:
    """Turn every httpx (and httpcore) exception raised inside the block into an ``ApiError``."""
    try:
        yield
    except _HTTPX_BASES as exc:
        raise map_httpx_error(exc, call, body=body) from exc


@contextmanager
def _deadline(call: str, seconds: float) -> Iterator[None]:
    """Fail the block with ``ApiTimeoutError`` when it runs longer than ``seconds``."""
    try:
        with trio.fail_after(seconds), _map_transport_errors(call):
            yield
    except trio.TooSlowError as exc:
        raise ApiTimeoutError(f"no complete answer within {seconds:g} s", call=call) from exc


# --------------------------------------------------------------------------------------------
# Small pure helpers (unit tested on their own).


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def excerpt(raw: bytes | str, *, hide: tuple[str, ...] = ()) -> str:
    """A short, single-line, printable excerpt of an error body (HTML tags removed)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for secret in hide:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    text = re.sub(r"(?s)<[^>]*>", " ", text)
    text = html.unescape(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > _EXCERPT_LIMIT:
        text = text[: _EXCERPT_LIMIT - 3].rstrip() + "..."
    return text


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits ``uniform(0, min(cap, base*2**n))``.

    ``retries`` is the number of repetitions after the first attempt.
    """

    retries: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before repetition number ``attempt + 1`` (``attempt`` from 0)."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return backoff(attempt, base=self.base, cap=self.cap, jitter=FULL_JITTER)

    @staticmethod
    def log_level(attempt: int) -> int:
        """Quiet for the first repetitions; a warning once they pile up."""
        if attempt <= 1:
            return logging.DEBUG
        if attempt <= 3:
            return logging.INFO
        return logging.WARNING


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` (total may be ``*``) -> (a, b, total)."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value, re.IGNORECASE)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _server_time(response: httpx.Response) -> float | None:
    value = response.headers.get("date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# Transport: httpx over httpcore, with large socket reads.

SOCKET_READ = 1024 * 1024
"""Bytes asked of the socket per read. httpcore asks for 64 KiB, which costs a Python-level
round (cancel scope, h11 event, httpx wrapper) per 64 KiB and caps a download near 1 GB/s;
1 MiB reads let a download run at several GB/s on a fast link."""

DIRECT_BODY_MIN = 32 * 1024 * 1024
"""Download bodies at least this long are read straight from the socket instead of through
h11, which copies every byte three times (about half the speed of a fast link). The price is
the connection: h11 never sees the body end, so the connection is closed afterwards rather
than reused, which is negligible next to a transfer this size."""


class _LargeReadStream(httpcore.AsyncNetworkStream):
    """The network stream under httpcore, with two changes.

    * Reads ask for up to ``SOCKET_READ`` bytes whatever httpcore asks for (safe for
      HTTP/1.1: h11 keeps bytes it has not parsed yet).
    * After a request was written, the answer's head is handed to h11 on its own: bytes read
      past the blank line that ends it wait in ``_pushback``. If h11 then receives nothing
      more (``body_untouched``), the body is still entirely here, and a download may read it
      directly with :meth:`read_body` (see ``DIRECT_BODY_MIN``).
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._pushback = b""
        self._expect_head = False
        self._carry = b""  # the last bytes of the head so far (the blank line may straddle reads)
        self._head_size = 0
        self._head_split = False
        self._given_after_head = 0

    @property
    def body_untouched(self) -> bool:
        """True when the last answer's head was split off and h11 got nothing after it."""
        return self._head_split and self._given_after_head == 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self._pushback:
            data, self._pushback = self._pushback, b""
        else:
            data = await self._inner.read(max(max_bytes, SOCKET_READ), timeout)
        if self._expect_head and data:
            return self._split_head(data)
        self._given_after_head += len(data)
        return data

    def _split_head(self, data: bytes) -> bytes:
        carry = self._carry
        joint = (carry + data[:3]).find(b"\r\n\r\n")
        if joint >= 0:
            end = joint + 4 - len(carry)
        else:
            found = data.find(b"\r\n\r\n")
            end = found + 4 if found >= 0 else -1
        if end < 0:
            self._head_size += len(data)
            self._carry = (carry + data[-3:])[-3:]
            if self._head_size > 1024 * 1024:
                self._expect_head = False  # not an HTTP head: stop looking
            return data
        self._expect_head = False
        self._head_split = True
        self._given_after_head = 0
        if end < len(data):
            self._pushback = data[end:]
            return data[:end]
        return data

    async def read_body(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        """Read body bytes directly (only while ``body_untouched``); b"" at end of stream."""
        if self._pushback:
            data = self._pushback[:max_bytes]
            self._pushback = self._pushback[len(data) :]
            return data
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        # A request goes out: what comes back next starts with a response head.
        self._expect_head = True
        self._head_split = False
        self._carry = b""
        self._head_size = 0
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        self._pushback = b""
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _LargeReadStream(inner)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._pushback:
            # Unread bytes on an idle connection: httpcore must not reuse it.
            return True
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend with :class:`_LargeReadStream` streams."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LargeReadStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _LargeReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _make_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connection pool rebuilt with the large-read backend.

    httpx does not let a caller choose httpcore's network backend, so the pool it built is
    replaced by an equivalent one. Should a future httpx lay out its transport differently,
    its own pool is kept (correct, only slower).
    """
    # Certificates are always verified (certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set).
    ssl_context = httpx.create_ssl_context(verify=True)
    transport = httpx.AsyncHTTPTransport(http1=True, http2=False, verify=ssl_context, limits=limits)
    if isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_LargeReadBackend(),
        )
    return transport


# --------------------------------------------------------------------------------------------
# Downloads.


class Download:
    """An answered download request (status checked), with its body still to be read.

    ``start`` is the offset the body really starts at (0 when the server ignored the Range
    header), ``length`` the body length (``Content-Length``) or None, ``total_size`` the size of
    the whole file when the server said, ``range_supported`` whether a later ranged request can
    be expected to work, ``received`` how many body bytes were handed out so far.
    """

    def __init__(self, response: httpx.Response, call: str, *, timeout: float = 30.0) -> None:
        self._response = response
        self._call = call
        self._timeout = timeout
        self.status = response.status_code
        self.etag: str | None = response.headers.get("etag")
        self.length: int | None = _content_length(response)
        self.received = 0
        self._iterators: list[AsyncGenerator[bytes, None]] = []
        self._source: AsyncIterator[bytes] | None = None
        accept = response.headers.get("accept-ranges", "").lower()
        self.range_supported = response.status_code == 206 or "bytes" in accept
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        # We ask for identity; should a server compress anyway, decode it (the announced length
        # then counts encoded bytes and cannot be checked against what we hand out).
        self._encoded = encoding not in ("", "identity")
        if self._encoded:
            self.length = None
        self.start = 0
        self.total_size: int | None = None
        if response.status_code == 206:
            parsed = _parse_content_range(response.headers.get("content-range"))
            if parsed is None:
                raise ProtocolError("206 answer without a usable Content-Range", call=call)
            first, last, total = parsed
            self.start = first
            self.total_size = total
            if self.length is None and not self._encoded:
                self.length = last - first + 1
        elif not self._encoded:
            self.total_size = self.length
        # A long body framed by Content-Length, whose head h11 got on its own, is read
        # straight from the socket (see DIRECT_BODY_MIN).
        stream = response.extensions.get("network_stream")
        framed = _content_length(response)
        self._direct: _LargeReadStream | None = None
        self._direct_left = 0
        if (
            isinstance(stream, _LargeReadStream)
            and stream.body_untouched
            and not self._encoded
            and "transfer-encoding" not in response.headers
            and framed is not None
            and framed >= DIRECT_BODY_MIN
        ):
            self._direct = stream
            self._direct_left = framed

    def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces of about 1 MiB (the first one as soon as it arrives).

        Raises ``IncompleteBodyError`` when the body ends (or the connection drops) before the
        announced length; everything received until then has been yielded first, so a caller
        can resume from ``start + received``. A stalled read raises ``ApiTimeoutError``.
        Leaving the loop early is fine: the download's context closes the iterator.
        """
        iterator = self._chunks()
        self._iterators.append(iterator)
        return iterator

    async def _next_piece(self) -> bytes:
        """The next piece of the body as it comes; b"" at its end."""
        if self._direct is not None:
            if self._direct_left <= 0:
                return b""
            data = await self._direct.read_body(min(SOCKET_READ, self._direct_left), self._timeout)
            self._direct_left -= len(data)
            return data
        if self._source is None:
            response = self._response
            self._source = response.aiter_bytes() if self._encoded else response.aiter_raw()
        try:
            return await anext(self._source)
        except StopAsyncIteration:
            return b""

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        pending: list[bytes] = []
        pending_size = 0
        failure: ApiError | None = None
        try:
            with _map_transport_errors(self._call, body=True):
                while piece := await self._next_piece():
                    if not pending and (len(piece) >= DOWNLOAD_CHUNK // 2 or not self.received):
                        # Big enough already: hand it out without another copy. The first
                        # piece goes out at once too: someone may be waiting for the first byte.
                        self.received += len(piece)
                        yield piece
                        continue
                    pending.append(piece)
                    pending_size += len(piece)
                    if pending_size >= DOWNLOAD_CHUNK:
                        data = b"".join(pending)
                        pending.clear()
                        pending_size = 0
                        self.received += len(data)
                        yield data
        except ApiError as err:
            failure = err
        if pending:
            data = b"".join(pending)
            pending.clear()
            self.received += len(data)
            yield data
        if failure is not None:
            raise failure
        if self.length is not None and self.received < self.length:
            raise IncompleteBodyError(
                f"the body ended after {self.received} of {self.length} bytes", call=self._call
            )

    async def _aclose(self) -> None:
        for iterator in self._iterators:
            await iterator.aclose()
        self._iterators.clear()
        source, self._source = self._source, None
        if source is not None:
            with _map_transport_errors(self._call, body=True):
                await _finish_body(self._response, source)


# --------------------------------------------------------------------------------------------
# The client.


class BimplusClient:
    """An async Bimplus API client bound to one API root (``https://api.bimplus.net/v2``).

    Use it as ``async with BimplusClient(url, auth) as client:`` or call :meth:`aclose`.
    ``retries`` is the number of repetitions of a failed idempotent call (and of an upload that
    provably did not land); ``timeout`` the per-attempt deadline in seconds.
    """

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
            transport=_make_transport(limits),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"BimplusClient({self.api_url!r}, auth={self._auth!r})"

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._http.aclose()

    async def __aenter__(self) -> BimplusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---- plumbing -------------------------------------------------------------------------

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
            with _deadline(call, self.timeout):
                pieces = response.aiter_bytes()
                try:
                    async for piece in pieces:
                        raw += piece
                        if len(raw) >= _ERROR_BODY_READ:
                            break
                finally:
                    await _finish_body(response, pieces)
        except ApiError:
            pass  # the status says enough; a body we cannot read adds nothing
        finally:
            await self._close(response, call)
        return excerpt(bytes(raw[:_ERROR_BODY_READ]), hide=(self._last_token,))

    async def _close(self, response: httpx.Response, call: str) -> None:
        with trio.CancelScope(shield=True), _map_transport_errors(call):
            await response.aclose()

    def _note_date(self, response: httpx.Response) -> None:
        server = _server_time(response)
        if server is not None:
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

    async def _status_failure(
        self, response: httpx.Response, call: str, *, body: str | None = None
    ) -> StatusError:
        if body is None:
            body = await self._error_body(response, call)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return status_error(response.status_code, body, call=call, retry_after=retry_after)

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
                with _deadline(call, self.timeout):
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
            failure = await self._status_failure(response, call)
            if status == 429 or status >= 500:
                retry_after = getattr(failure, "retry_after", None)
                if retry_after is None:
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                if attempt >= self.policy.retries or (
                    retry_after is not None and retry_after > MAX_RETRY_AFTER
                ):
                    raise failure
                await self._retry_wait(call, attempt, f"{status}", retry_after)
                attempt += 1
                continue
            raise failure

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
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ProtocolError(
                f"the answer is not JSON: {excerpt(response.content[:200])!r}", call=call
            ) from exc

    async def _delete(self, template: str, args: Mapping[str, str | int]) -> None:
        response = await self._request("DELETE", template, args, missing_ok_on_retry=True)
        if response is not None:
            await self._close(response, self._call("DELETE", template))

    # ---- account ---------------------------------------------------------------------------

    async def check_token(self) -> dict[str, Any]:
        """``GET /authorize``: the token's user id, audience and remaining lifetime."""
        call = self._call("GET", "/authorize")
        return dict(require_object(await self._json("GET", "/authorize"), call))

    async def get_teams(self) -> list[Team]:
        """``GET /teams``: every team the user belongs to."""
        call = self._call("GET", "/teams")
        data = require_list(await self._json("GET", "/teams"), call)
        return [Team.from_json(item, call) for item in data]

    async def get_all_projects(self) -> list[Project]:
        """``GET /projects``: the projects of all teams (each with ``team_slug``)."""
        call = self._call("GET", "/projects")
        data = require_list(await self._json("GET", "/projects"), call)
        return [Project.from_json(item, call) for item in data]

    # ---- projects --------------------------------------------------------------------------

    async def get_projects(self, slug: str) -> list[Project]:
        """``GET /<slug>/projects``."""
        template = "/{slug}/projects"
        call = self._call("GET", template)
        data = require_list(await self._json("GET", template, {"slug": slug}), call)
        return [Project.from_json(item, call) for item in data]

    async def get_project(self, slug: str, pid: str) -> Project:
        """``GET /<slug>/projects/<pid>``."""
        template = "/{slug}/projects/{pid}"
        call = self._call("GET", template)
        return Project.from_json(
            await self._json("GET", template, {"slug": slug, "pid": pid}), call
        )

    # ---- attachments -----------------------------------------------------------------------

    async def list_attachments(
        self,
        slug: str,
        pid: str,
        *,
        project_only: bool = True,
        attachment_type: str | None = None,
    ) -> list[Attachment]:
        """``GET /<slug>/projects/<pid>/attachments``: the project's documents (latest versions).

        ``project_only`` leaves out attachments of the project's objects; ``attachment_type``
        (``Document``, ``NonModel``, ...) filters on the server.
        """
        template = "/{slug}/projects/{pid}/attachments"
        call = self._call("GET", template)
        params: dict[str, str] = {}
        if project_only:
            params["projectOnly"] = "true"
        if attachment_type:
            params["attachmentType"] = attachment_type
        data = await self._json("GET", template, {"slug": slug, "pid": pid}, params=params)
        return [Attachment.from_json(item, call) for item in require_list(data, call)]

    async def get_attachment(self, slug: str, aid: str) -> Attachment:
        """``GET /<slug>/attachments/<aid>``."""
        template = "/{slug}/attachments/{aid}"
        call = self._call("GET", template)
        data = await self._json("GET", template, {"slug": slug, "aid": aid})
        return Attachment.from_json(data, call)

    async def update_attachment(
        self,
        slug: str,
        aid: str,
        *,
        file_name: str | None = None,
        content_type: str | None = None,
        classification: str | None = None,
        tag: str | None = None,
    ) -> Attachment:
        """``PUT /<slug>/attachments/<aid>`` with JSON metadata; only the given keys are sent
        (``fileName`` renames the document)."""
        body: dict[str, str] = {}
        if file_name is not None:
            body["fileName"] = file_name
        if content_type is not None:
            body["type"] = content_type
        if classification is not None:
            body["classification"] = classification
        if tag is not None:
            body["tag"] = tag
        template = "/{slug}/attachments/{aid}"
        call = self._call("PUT", template)
        data = await self._json("PUT", template, {"slug": slug, "aid": aid}, json=body)
        return Attachment.from_json(data, call)

    async def delete_attachment(self, slug: str, aid: str) -> None:
        """``DELETE /<slug>/attachments/<aid>``: the document and all its versions."""
        await self._delete("/{slug}/attachments/{aid}", {"slug": slug, "aid": aid})

    async def release(self, slug: str, aid: str) -> Attachment:
        """``PUT /<slug>/attachments/<aid>/release``: share the latest version."""
        template = "/{slug}/attachments/{aid}/release"
        call = self._call("PUT", template)
        data = await self._json("PUT", template, {"slug": slug, "aid": aid}, json={})
        return Attachment.from_json(data, call)

    async def list_versions(self, slug: str, aid: str) -> list[Attachment]:
        """``GET /<slug>/attachments/<aid>/versions``, sorted by version number ascending."""
        template = "/{slug}/attachments/{aid}/versions"
        call = self._call("GET", template)
        data = require_list(await self._json("GET", template, {"slug": slug, "aid": aid}), call)
        versions = [Attachment.from_json(item, call) for item in data]
        versions.sort(key=lambda a: a.version)
        return versions

    async def delete_version(self, slug: str, aid: str, version: int) -> None:
        """``DELETE /<slug>/attachments/<aid>/versions/<n>``."""
        await self._delete(
            "/{slug}/attachments/{aid}/versions/{n}", {"slug": slug, "aid": aid, "n": version}
        )

    # ---- document folders ------------------------------------------------------------------

    async def get_folders(self, slug: str, pid: str) -> list[FolderNode]:
        """The project's document-folder tree (``structures?type=DocumentFolder``).

        Returns the top-level nodes. An answer that is a single object is read as the project's
        root node, and its children are returned.
        """
        template = "/{slug}/projects/{pid}/structures"
        call = self._call("GET", template)
        data = await self._json(
            "GET", template, {"slug": slug, "pid": pid}, params={"type": "DocumentFolder"}
        )
        if isinstance(data, dict):
            return list(FolderNode.from_json(data, call).children)
        return [FolderNode.from_json(item, call) for item in require_list(data, call)]

    async def create_folder(
        self, slug: str, pid: str, name: str, parent_id: str | None
    ) -> FolderNode:
        """Create a document folder (top level when ``parent_id`` is None) and return it.

        Like an upload, the POST is not blindly repeated: after an interrupted attempt the
        folder tree is read to see whether the folder was made.
        """
        template = "/{slug}/projects/{pid}/structures"
        call = self._call("POST", template)
        payload = json_module.dumps(
            {"name": name, "parent": parent_id, "type": "DocumentFolder"}
        ).encode()

        def parse(data: Any) -> FolderNode:
            return FolderNode.from_json(data, call, parent=parent_id)

        async def landed() -> FolderNode | None:
            nodes = await self.get_folders(slug, pid)
            siblings = nodes if parent_id is None else _children_of(nodes, parent_id)
            found = [n for n in siblings if n.is_folder and n.name == name]
            return found[-1] if found else None

        return await self._send_new(
            "POST",
            template,
            {"slug": slug, "pid": pid},
            {},
            lambda: _JsonBody(payload),
            parse,
            landed,
        )

    async def delete_folder(self, slug: str, folder_id: str) -> None:
        """``DELETE /<slug>/structures/<fid>`` (``ConflictError`` when it is not empty)."""
        await self._delete("/{slug}/structures/{fid}", {"slug": slug, "fid": folder_id})

    # ---- downloads -------------------------------------------------------------------------

    def open_download(
        self,
        slug: str,
        aid: str,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> AbstractAsyncContextManager[Download]:
        """Request the bytes ``[start, end)`` of a document (or of one version of it).

        The context manager yields a :class:`Download` once the server answered with a success
        status (retrying like any GET until then); the body is read with ``chunks()``. A server
        that ignores ranges answers from byte 0: check ``Download.start``.
        """
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad byte range [{start}, {end})")
        return self._open_download(slug, aid, version, start, end)

    @asynccontextmanager
    async def _open_download(
        self, slug: str, aid: str, version: int | None, start: int, end: int | None
    ) -> AsyncIterator[Download]:
        if version is None:
            template = "/{slug}/attachments/{aid}/download"
            args: dict[str, str | int] = {"slug": slug, "aid": aid}
        else:
            template = "/{slug}/attachments/{aid}/versions/{n}/download"
            args = {"slug": slug, "aid": aid, "n": version}
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        call = self._call("GET", template)
        response = await self._request("GET", template, args, stream=True, headers=headers)
        assert response is not None
        try:
            download = Download(response, call, timeout=self.timeout)
            try:
                yield download
            finally:
                with trio.CancelScope(shield=True):
                    await download._aclose()
        finally:
            await self._close(response, call)

    async def download_to(
        self,
        slug: str,
        aid: str,
        dest: BinaryIO,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the bytes ``[start, end)`` of a document to ``dest``; return how many.

        A body that breaks off is resumed where it stopped (with a Range request, or by
        skipping again when the server ignores ranges), up to ``retries`` times. ``progress``
        gets the number of bytes written so far.
        """
        if end is not None and end <= start:
            return 0
        written = 0
        failures = 0
        while True:
            position = start + written
            reading = False
            try:
                async with self.open_download(
                    slug, aid, version=version, start=position, end=end
                ) as download:
                    reading = True
                    if download.start > position:
                        raise ProtocolError(
                            f"asked for bytes from {position}, got from {download.start}",
                            call=download._call,
                        )
                    skip = position - download.start
                    async for chunk in download.chunks():
                        view = memoryview(chunk)
                        if skip:
                            if skip >= len(view):
                                skip -= len(view)
                                continue
                            view = view[skip:]
                            skip = 0
                        if end is not None:
                            view = view[: end - (start + written)]
                        if view:
                            # In a worker thread: a slow disk must not stall the event loop.
                            await trio.to_thread.run_sync(_write_all, dest, view)
                            written += len(view)
                            if progress is not None:
                                progress(written)
                        if end is not None and start + written >= end:
                            break
                    return written
            except (IncompleteBodyError, ApiTimeoutError) as err:
                # Only a body that broke off is resumed here; getting an answer at all was
                # already retried by open_download.
                if not reading or failures >= self.policy.retries:
                    raise
                await self._retry_wait(err.call or "download", failures, err.message)
                failures += 1

    # ---- uploads ---------------------------------------------------------------------------

    async def create_attachment(
        self,
        slug: str,
        pid: str,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        folder_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Attachment:
        """Upload ``source`` as a new document of the project (into a document folder when
        ``folder_id`` is given) and return it as the server stored it."""
        template, params = self._create_target(folder_id)
        size = await trio.to_thread.run_sync(os.path.getsize, source)
        started = time.time()

        async def landed() -> Attachment | None:
            return await self._created_since(slug, pid, folder_id, file_name, size, started)

        return await self._upload(
            "POST",
            template,
            {"slug": slug, "pid": pid},
            params,
            source,
            size,
            file_name=file_name,
            content_type=content_type,
            classification=classification,
            tag=tag,
            progress=progress,
            landed=landed,
        )

    @staticmethod
    def _create_target(folder_id: str | None) -> tuple[str, dict[str, str]]:
        """Where a new document is posted (template, query): its project, or a folder."""
        if folder_id is None:
            return "/{slug}/projects/{pid}/attachments", {}
        return "/{slug}/objects/{pid}/attachments", {"DocumentFolderId": folder_id}

    async def _newest_version(self, slug: str, aid: str, known_version: int | None) -> int:
        """``known_version``, or when None the newest version on the server now."""
        if known_version is not None:
            return known_version
        versions = await self.list_versions(slug, aid)
        return max((v.version for v in versions), default=0)

    async def _version_since(
        self, slug: str, aid: str, baseline: int, size: int
    ) -> Attachment | None:
        """The version an interrupted upload stored, if any: newer than ``baseline``, of the
        same size."""
        versions = await self.list_versions(slug, aid)
        found = [v for v in versions if v.version > baseline and v.size == size]
        return found[-1] if found else None

    async def _created_since(
        self,
        slug: str,
        pid: str,
        folder_id: str | None,
        file_name: str,
        size: int,
        started: float,
    ) -> Attachment | None:
        """The document an interrupted create stored, if any: same name and size, created
        since the upload started (with the server's clock offset and some slack)."""
        since = started + self._clock_offset - UPLOAD_SETTLE_SLACK
        docs = await self.list_attachments(slug, pid, project_only=True)
        if folder_id is not None and not any(d.file_name == file_name for d in docs):
            docs = await self.list_attachments(slug, pid, project_only=False)
        found = [
            d
            for d in docs
            if d.file_name == file_name
            and d.size == size
            and d.created_at is not None
            and d.created_at >= since
        ]
        return max(found, key=lambda d: (d.created_at or 0.0, d.id)) if found else None

    async def create_version(
        self,
        slug: str,
        aid: str,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        progress: Callable[[int], None] | None = None,
        known_version: int | None = None,
    ) -> Attachment:
        """Upload ``source`` as a new version of a document and return that version.

        ``known_version`` is the newest version the caller knows of; it lets an interrupted
        upload be recognised in the version list. When None, the list is read first.
        """
        size = await trio.to_thread.run_sync(os.path.getsize, source)
        baseline = await self._newest_version(slug, aid, known_version)

        async def landed() -> Attachment | None:
            return await self._version_since(slug, aid, baseline, size)

        return await self._upload(
            "POST",
            "/{slug}/attachments/{aid}/versions",
            {"slug": slug, "aid": aid},
            {},
            source,
            size,
            file_name=file_name,
            content_type=content_type,
            classification=classification,
            tag=tag,
            progress=progress,
            landed=landed,
        )

    async def stream_upload(
        self,
        slug: str,
        source: GrowingSource,
        *,
        file_name: str,
        content_type: str,
        pid: str | None = None,
        folder_id: str | None = None,
        aid: str | None = None,
        known_version: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Attachment:
        """Upload a file while it is still being written: a new document of project ``pid``
        (or a new version of ``aid``), sent with chunked encoding as ``source`` grows and
        completed when ``source.finish`` is called.

        One attempt only: the caller keeps the content and falls back to a plain upload when
        this raises. An answer lost after the body was complete is settled through the server's
        lists like any other upload, so the file is never stored twice.
        """
        started = time.time()
        params: dict[str, str] = {}
        if aid is not None:
            baseline = await self._newest_version(slug, aid, known_version)
            template, args = "/{slug}/attachments/{aid}/versions", {"slug": slug, "aid": aid}

            async def landed() -> Attachment | None:
                if source.final is None:
                    return None
                return await self._version_since(slug, aid, baseline, source.final)

        else:
            assert pid is not None
            args = {"slug": slug, "pid": pid}
            template, params = self._create_target(folder_id)

            async def landed() -> Attachment | None:
                if source.final is None:
                    return None
                return await self._created_since(
                    slug, pid, folder_id, file_name, source.final, started
                )

        call = self._call("POST", template)

        def body() -> GrowingMultipartUpload:
            return GrowingMultipartUpload(
                source, file_name=file_name, content_type=content_type, progress=progress
            )

        def parse(data: Any) -> Attachment:
            return Attachment.from_json(data, call)

        return await self._send_new("POST", template, args, params, body, parse, landed, 0)

    async def replace_content(
        self,
        slug: str,
        aid: str,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Attachment:
        """``PUT /<slug>/attachments/<aid>`` with a multipart body: replace the content."""
        size = await trio.to_thread.run_sync(os.path.getsize, source)
        started = time.time()

        async def landed() -> Attachment | None:
            since = started + self._clock_offset - UPLOAD_SETTLE_SLACK
            doc = await self.get_attachment(slug, aid)
            stamp = doc.changed or doc.created_at
            if doc.size == size and doc.file_name == file_name and stamp and stamp >= since:
                return doc
            return None

        return await self._upload(
            "PUT",
            "/{slug}/attachments/{aid}",
            {"slug": slug, "aid": aid},
            {},
            source,
            size,
            file_name=file_name,
            content_type=content_type,
            classification=classification,
            tag=tag,
            progress=progress,
            landed=landed,
        )

    async def _upload(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int],
        params: Mapping[str, str],
        source: Path,
        size: int,
        *,
        file_name: str,
        content_type: str,
        classification: str | None,
        tag: str | None,
        progress: Callable[[int], None] | None,
        landed: Callable[[], Awaitable[Attachment | None]],
    ) -> Attachment:
        call = self._call(method, template)

        def body() -> MultipartUpload:
            return MultipartUpload(
                source,
                file_name=file_name,
                content_type=content_type,
                classification=classification,
                tag=tag,
                progress=progress,
                size=size,
            )

        def parse(data: Any) -> Attachment:
            return Attachment.from_json(data, call)

        return await self._send_new(method, template, args, params, body, parse, landed)

    async def _send_new(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int],
        params: Mapping[str, str],
        make_body: Callable[[], _Body],
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
            token = await self._token()
            headers = self._auth_header(token)
            headers.update(body.headers())
            headers["Accept"] = "application/json"
            request = self._http.build_request(
                method, url, params=params, content=body.stream(), headers=headers, timeout=timeout
            )
            response: httpx.Response | None = None
            unknown: ApiError | None = None
            try:
                with _map_transport_errors(call):
                    response = await self._http.send(request, stream=True)
                if response.status_code < 300:
                    with _deadline(call, self.timeout):
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
                    failure = await self._status_failure(response, call)
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    if (
                        (status == 429 or status >= 500)
                        and attempt < limit
                        and (retry_after is None or retry_after <= MAX_RETRY_AFTER)
                    ):
                        # The server refused the request: nothing was stored, send it again.
                        await self._retry_wait(call, attempt, str(status), retry_after)
                        attempt += 1
                        continue
                    raise failure
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
                log.info("%s: the interrupted request had been stored (%s)", call, unknown.message)
                return found
            if attempt >= limit:
                raise unknown
            await self._retry_wait(call, attempt, f"{unknown.message} (not stored)")
            attempt += 1


class _Body(Protocol):
    """A request body that can tell whether sending it has begun."""

    started: bool

    def headers(self) -> dict[str, str]: ...

    def stream(self) -> AsyncIterator[bytes]: ...


class _JsonBody:
    """A small JSON body with the ``started`` flag uploads have."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.started = False

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Content-Length": str(len(self.payload))}

    async def stream(self) -> AsyncIterator[bytes]:
        self.started = True
        yield self.payload


async def _finish_body(response: httpx.Response, iterator: AsyncIterator[bytes]) -> None:
    """End a body iterator left part-way, together with every generator nested under it.

    httpx and httpcore iterate each other's async generators with ``async for``, which does not
    close the inner one when the outer one is closed: closing only the outermost leaves the
    others to the garbage collector (and trio warns about each). Closing the response first
    (which drops the connection unless the body was complete), then running the iterator to
    its end, makes all of them finish now: the innermost read fails and the error passes up
    through every one. Bounded, in case a layer does not behave like that.
    """
    await response.aclose()
    with trio.move_on_after(_FINISH_BODY_TIMEOUT):
        try:
            async for _ in iterator:
                pass
        except Exception:
            pass  # the body is abandoned: how it ends does not matter
    await _aclose_iterator(iterator)


_FINISH_BODY_TIMEOUT = 1.0


async def _aclose_iterator(iterator: AsyncIterator[bytes]) -> None:
    """Close an async generator left part-way (httpx's body iterators are generators), so it
    is not finalised later by the garbage collector at an arbitrary point."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _write_all(dest: BinaryIO, data: memoryview) -> None:
    """Write all of ``data`` (a raw file may take less than offered per call)."""
    while data:
        count = dest.write(data)
        if count is None:  # a non-blocking raw file that cannot take anything now
            raise BlockingIOError("the destination does not accept data")
        data = data[count:]


def _children_of(nodes: list[FolderNode], parent_id: str) -> list[FolderNode]:
    """The children of the folder ``parent_id`` anywhere in a folder tree."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.id == parent_id:
            return list(node.children)
        stack.extend(node.children)
    return []


# --------------------------------------------------------------------------------------------
# One-off requests for logins and token refreshes (no API token, no shared pool).


@dataclass(frozen=True)
class PlainAnswer:
    """The answer to :func:`plain_request`: status, body (bounded) and headers."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self, call: str) -> Any:
        """The body as JSON, or ``ProtocolError`` naming ``call``."""
        try:
            return json_module.loads(self.body)
        except ValueError as exc:
            raise ProtocolError(
                f"the answer is not JSON (status {self.status}): {excerpt(self.body)!r}",
                call=call,
            ) from exc


async def plain_request(
    method: str,
    url: str,
    *,
    call: str,
    json: Any = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    deadline: float = 30.0,
    max_body: int = 1024 * 1024,
) -> PlainAnswer:
    """Send one request outside any client (OIDC discovery, token grants, legacy login).

    TLS is verified; ``url`` must be https or loopback http. The whole exchange must finish
    within ``deadline`` seconds. Raises ``TransportError`` / ``ApiTimeoutError``; any status is
    returned, not raised.
    """
    check_api_url(url.split("?", 1)[0])
    async with httpx.AsyncClient(
        http1=True, verify=True, timeout=httpx.Timeout(deadline), follow_redirects=False
    ) as http:
        with _deadline(call, deadline):
            async with http.stream(
                method,
                url,
                json=json,
                data=dict(form) if form is not None else None,
                headers={"User-Agent": DEFAULT_USER_AGENT, **(headers or {})},
            ) as response:
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > max_body:
                        raise ProtocolError(f"answer larger than {max_body} bytes", call=call)
                return PlainAnswer(response.status_code, bytes(body), dict(response.headers))
