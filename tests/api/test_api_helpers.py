"""Pure parts of the client: URL checks, Retry-After, backoff, excerpts, error mapping."""

from __future__ import annotations

import email.utils
import inspect
import logging

import httpcore
import httpx
import pytest

from bimfs.api import error_map
from bimfs.api.error_map import excerpt, map_httpx_error
from bimfs.api.errors import (
    ApiError,
    ApiTimeoutError,
    IncompleteBodyError,
    ProtocolError,
    TransportError,
)
from bimfs.api.retry import RetryPolicy, parse_retry_after
from bimfs.config import check_api_url, is_loopback_host


def httpx_exception_classes() -> list[type[BaseException]]:
    """Every exception class of httpx and httpcore, public or reachable as a subclass."""
    found = set()
    for module in (httpx, httpcore):
        for name in dir(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                found.add(obj)
    stack = list(found)
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith(("httpx", "httpcore")) and sub not in found:
                found.add(sub)
                stack.append(sub)
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


def test_every_httpx_exception_has_its_own_mapping() -> None:
    """Fails when httpx grows an exception class the client does not map explicitly."""
    mapped = {cls for cls, _ in error_map._HTTPX_ERRORS}
    missing = [c.__name__ for c in httpx_exception_classes() if c not in mapped]
    assert not missing, f"httpx exceptions without a mapping: {missing}"
    # Every class is caught by the context manager too.
    for cls in httpx_exception_classes():
        assert issubclass(cls, error_map._HTTPX_BASES), cls


def test_mapping_table_is_most_specific_first() -> None:
    classes = [cls for cls, _ in error_map._HTTPX_ERRORS]
    for i, cls in enumerate(classes):
        for later in classes[i + 1 :]:
            assert not issubclass(later, cls) or later is cls, (cls, later)


def make(cls: type[BaseException]) -> BaseException:
    request = httpx.Request("GET", "https://example.invalid/")
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("x", request=request, response=httpx.Response(500, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    if issubclass(cls, httpx.StreamError):
        return cls() if cls is not httpx.StreamError else cls("x")
    return cls("boom")


def test_httpcore_errors_are_mapped() -> None:
    assert isinstance(map_httpx_error(httpcore.ReadTimeout("t"), "c", body=True), ApiTimeoutError)
    err = map_httpx_error(httpcore.ReadError("reset"), "c", body=True)
    assert isinstance(err, IncompleteBodyError)


@pytest.mark.parametrize(
    "cls", httpx_exception_classes(), ids=lambda c: f"{c.__module__.split('.')[0]}.{c.__name__}"
)
def test_each_exception_maps_to_an_api_error(cls: type[Exception]) -> None:
    exc = make(cls)
    assert isinstance(exc, Exception)
    with pytest.raises(ApiError) as info, error_map.map_transport_errors("GET /v2/teams"):
        raise exc
    assert info.value.__cause__ is exc
    assert info.value.call == "GET /v2/teams"


def test_specific_mappings() -> None:
    req = httpx.Request("GET", "https://x.invalid/")
    assert isinstance(map_httpx_error(httpx.ReadTimeout("t", request=req), "c"), ApiTimeoutError)
    assert isinstance(map_httpx_error(httpx.ConnectTimeout("t", request=req), "c"), ApiTimeoutError)
    err = map_httpx_error(httpx.ConnectError("refused", request=req), "c")
    assert type(err) is TransportError and err.retryable
    err = map_httpx_error(httpx.RemoteProtocolError("cut", request=req), "c", body=True)
    assert isinstance(err, IncompleteBodyError)
    err = map_httpx_error(httpx.ReadError("reset", request=req), "c", body=True)
    assert isinstance(err, IncompleteBodyError)
    # A stalled body is a timeout, not an incomplete body.
    err = map_httpx_error(httpx.ReadTimeout("t", request=req), "c", body=True)
    assert type(err) is ApiTimeoutError
    assert isinstance(map_httpx_error(httpx.DecodingError("bad gzip"), "c"), ProtocolError)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.bimplus.net/v2",
        "https://api.bimplus.net/v2/",
        "http://127.0.0.1:8080/v2",
        "http://127.1.2.3/v2",
        "http://localhost:1234/v2",
        "http://[::1]:9/v2",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert check_api_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://api.bimplus.net/v2",
        "http://10.0.0.1/v2",
        "http://127.0.0.1.example.com/v2",
        "ftp://127.0.0.1/v2",
        "api.bimplus.net/v2",
        "https://user:pw@api.bimplus.net/v2",
        "https://api.bimplus.net/v2?x=1",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ValueError):
        check_api_url(url)


def test_http_refusal_message_is_clear() -> None:
    with pytest.raises(ValueError, match="unencrypted"):
        check_api_url("http://api.bimplus.net/v2")


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("::1")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("128.0.0.1")
    assert not is_loopback_host("example.com")


def test_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(42.0)
    past = email.utils.formatdate(now - 42, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_backoff_full_jitter_bounds() -> None:
    policy = RetryPolicy(retries=5, base=0.5, cap=30.0)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: spread over the whole interval, not clustered at the top.
    delays = [policy.delay(10) for _ in range(500)]
    assert min(delays) < 10.0 and max(delays) > 20.0
    assert policy.delay(3, retry_after=0.0) == 0.0
    assert policy.delay(0, retry_after=12.0) == 12.0


def test_retry_log_level_rises() -> None:
    levels = [RetryPolicy.log_level(n) for n in range(1, 7)]
    assert levels[0] == logging.DEBUG
    assert levels[-1] == logging.WARNING
    assert levels == sorted(levels)


def test_excerpt() -> None:
    page = (
        "<html><head><style>body{}</style><script>var x=1;</script><title>Error</title></head>"
        "<body><h1>503 Service\nUnavailable</h1>\r\n<p>try &amp; again</p></body></html>"
    )
    assert excerpt(page) == "Error 503 Service Unavailable try & again"
    long = excerpt("x" * 1000)
    assert len(long) <= 200 and long.endswith("...")
    assert "\n" not in excerpt("a\nb\x00c\x1b[31m")
    assert excerpt(b"token abc123 refused", hide=("abc123",)) == "token *** refused"
    assert excerpt(b"\xff\xfe broken utf8").endswith("broken utf8")
