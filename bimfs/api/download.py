"""Downloads: an answered download request whose body is handed out in ~1 MiB pieces.

A body of at least ``DIRECT_BODY_MIN`` bytes, framed by ``Content-Length``, whose head h11 got
on its own (see ``bimfs.api.transport``), is read straight from the socket; any other body goes
through httpx. Either way a body that ends short of its announced length raises
``IncompleteBodyError`` after everything received was handed out, so the caller can resume.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import BinaryIO

import httpx
import trio

from bimfs.api.error_map import map_transport_errors
from bimfs.api.errors import ApiError, IncompleteBodyError, ProtocolError
from bimfs.api.transport import SOCKET_READ, LargeReadStream

__all__ = ["DIRECT_BODY_MIN", "DOWNLOAD_CHUNK", "Download", "finish_body", "write_all"]

DOWNLOAD_CHUNK = 1024 * 1024
"""Download bodies are handed out in pieces of about this size."""

DIRECT_BODY_MIN = 32 * 1024 * 1024
"""Download bodies at least this long are read straight from the socket instead of through
h11, which copies every byte three times (about half the speed of a fast link). The price is
the connection: h11 never sees the body end, so the connection is closed afterwards rather
than reused, which is negligible next to a transfer this size."""


class Download:
    """An answered download request (status checked), with its body still to be read.

    ``start`` is the offset the body really starts at (0 when the server ignored the Range
    header), ``length`` the body length (``Content-Length``) or None, ``total_size`` the size of
    the whole file when the server said, ``range_supported`` whether a later ranged request can
    be expected to work, ``received`` how many body bytes were handed out so far, ``call`` the
    request as errors name it.
    """

    def __init__(self, response: httpx.Response, call: str, *, timeout: float = 30.0) -> None:
        self._response = response
        self.call = call
        self._timeout = timeout
        self.status = response.status_code
        self.etag: str | None = response.headers.get("etag")
        self.length: int | None = content_length(response)
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
            parsed = parse_content_range(response.headers.get("content-range"))
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
        framed = content_length(response)
        self._direct: LargeReadStream | None = None
        self._direct_left = 0
        if (
            isinstance(stream, LargeReadStream)
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
            with map_transport_errors(self.call, body=True):
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
                f"the body ended after {self.received} of {self.length} bytes", call=self.call
            )

    async def aclose(self) -> None:
        """End the body and every iterator of it (the download's context manager does this)."""
        for iterator in self._iterators:
            await iterator.aclose()
        self._iterators.clear()
        source, self._source = self._source, None
        if source is not None:
            with map_transport_errors(self.call, body=True):
                await finish_body(self._response, source)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` (total may be ``*``) -> (a, b, total)."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value, re.IGNORECASE)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def finish_body(response: httpx.Response, iterator: AsyncIterator[bytes]) -> None:
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


def write_all(dest: BinaryIO, data: memoryview) -> None:
    """Write all of ``data`` (a raw file may take less than offered per call)."""
    while data:
        count = dest.write(data)
        if count is None:  # a non-blocking raw file that cannot take anything now
            raise BlockingIOError("the destination does not accept data")
        data = data[count:]
