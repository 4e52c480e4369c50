"""Downloads: HTTP ranges and a streaming file response with injected faults.

The response reads the blob in 1 MiB chunks and hands each to the server, which waits for the
socket to drain before the next (uvicorn's flow control), so memory stays bounded whatever the
size. ``--stream-rate`` paces the chunks; a drawn reset sends part of the body (the full
``Content-Length`` having been announced) and then closes the connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

from starlette.types import Receive, Scope, Send

from bimfs.emulator.app import Connection

CHUNK = 1024 * 1024


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the content."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``(first, last)`` (inclusive) a ``Range`` header asks for.

    None means "answer the whole content": no header, a unit other than bytes, a malformed or a
    multi-range header (which HTTP lets a server ignore). ``RangeNotSatisfiable`` for a range
    that starts at or after the end (every range of an empty content, ``bytes=-0``).
    """
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s:
        last = int(last_s)
        if last < first:
            return None
        if first >= size:
            raise RangeNotSatisfiable()
        return first, min(last, size - 1)
    if first >= size:
        raise RangeNotSatisfiable()
    return first, size - 1


class BlobResponse:
    """An ASGI response streaming ``length`` bytes of ``path`` from ``offset``."""

    # The dispatcher leaves a drawn reset to this response (it cuts mid-body).
    handles_reset = True

    def __init__(
        self,
        path: Path,
        *,
        status: int,
        headers: dict[str, str],
        offset: int,
        length: int,
        connection: Connection,
        stream_rate: int = 0,
        cut_at: int | None = None,
    ) -> None:
        self.path = path
        self.status = status
        self.headers = headers
        self.offset = offset
        self.length = length
        self.connection = connection
        self.stream_rate = stream_rate
        self.cut_at = cut_at

    @staticmethod
    def choose_cut(length: int, rng: random.Random) -> int:
        """Where a drawn reset cuts a body of ``length`` bytes (at least one byte short)."""
        return rng.randrange(length) if length > 0 else 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-length", str(self.length).encode())]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        limit = self.length if self.cut_at is None else min(self.cut_at, self.length)
        chunk = CHUNK
        if self.stream_rate > 0:
            # Small chunks keep the pace smooth (about 20 per second).
            chunk = max(1024, min(CHUNK, self.stream_rate // 20))
        sent = 0
        started = time.monotonic()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while sent < limit:
                data = os.pread(fd, min(chunk, limit - sent), self.offset + sent)
                if not data:
                    break  # the blob shrank under us: cannot happen, blobs are immutable
                sent += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if self.connection.lost:
                    return
                if self.stream_rate > 0:
                    due = sent / self.stream_rate - (time.monotonic() - started)
                    if due > 0:
                        await asyncio.sleep(due)
        finally:
            os.close(fd)
        if self.cut_at is not None:
            await self.connection.drop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
