"""From foreign failures to ``ApiError``: the one place that translates them.

* :func:`map_transport_errors` turns every httpx (and httpcore) exception raised inside its
  block into the ``ApiError`` that describes it, most specific class first, ``raise ... from``;
  ``_HTTPX_ERRORS`` is the table (a test fails when httpx grows a class it does not name).
* :func:`deadline` bounds a block in time: ``ApiTimeoutError`` when it runs longer.
* :func:`excerpt` makes the one-line, secret-free text an error body is shown as.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpcore
import httpx
import trio

from bimfs.api.errors import (
    ApiError,
    ApiTimeoutError,
    IncompleteBodyError,
    ProtocolError,
    TransportError,
)

__all__ = ["deadline", "excerpt", "map_httpx_error", "map_transport_errors"]

_EXCERPT_LIMIT = 200


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
def map_transport_errors(call: str, *, body: bool = False) -> Iterator[None]:
    """Turn every httpx (and httpcore) exception raised inside the block into an ``ApiError``."""
    try:
        yield
    except _HTTPX_BASES as exc:
        raise map_httpx_error(exc, call, body=body) from exc


@contextmanager
def deadline(call: str, seconds: float) -> Iterator[None]:
    """Fail the block with ``ApiTimeoutError`` when it runs longer than ``seconds``."""
    try:
        with trio.fail_after(seconds), map_transport_errors(call):
            yield
    except trio.TooSlowError as exc:
        raise ApiTimeoutError(f"no complete answer within {seconds:g} s", call=call) from exc


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
