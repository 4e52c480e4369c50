"""The large-read transport: httpx over an httpcore pool that runs on a network stream of
our own (:class:`LargeReadStream`, built by :func:`make_transport`).

The stream reads up to ``SOCKET_READ`` bytes at a time, and splits each answer's head off for
h11 so that a long download body can be read straight from the socket (``bimfs.api.download``).
Every byte of a download passes through here: nothing may be added per chunk.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from bimfs import __version__

__all__ = ["DEFAULT_USER_AGENT", "SOCKET_READ", "LargeReadStream", "make_transport"]

DEFAULT_USER_AGENT = f"bimfs/{__version__}"
"""The ``User-Agent`` of every request bimfs sends."""

SOCKET_READ = 1024 * 1024
"""Bytes asked of the socket per read. httpcore asks for 64 KiB, which costs a Python-level
round (cancel scope, h11 event, httpx wrapper) per 64 KiB and caps a download near 1 GB/s;
1 MiB reads let a download run at several GB/s on a fast link."""


class LargeReadStream(httpcore.AsyncNetworkStream):
    """The network stream under httpcore, with two changes.

    * Reads ask for up to ``SOCKET_READ`` bytes whatever httpcore asks for (safe for
      HTTP/1.1: h11 keeps bytes it has not parsed yet).
    * After a request was written, the answer's head is handed to h11 on its own: bytes read
      past the blank line that ends it wait in ``_pushback``. If h11 then receives nothing
      more (``body_untouched``), the body is still entirely here, and a download may read it
      directly with :meth:`read_body` (see ``bimfs.api.download.DIRECT_BODY_MIN``).
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
        return LargeReadStream(inner)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._pushback:
            # Unread bytes on an idle connection: httpcore must not reuse it.
            return True
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend with :class:`LargeReadStream` streams."""

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
        return LargeReadStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return LargeReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def make_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
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
