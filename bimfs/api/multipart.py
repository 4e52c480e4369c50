"""A streaming ``multipart/form-data`` encoder for Bimplus uploads.

Bimplus reads exactly one part and takes the document's metadata from that part's headers::

    Content-Disposition: form-data; name="plan"; filename="plan.pdf"; classification="R"; tag="A"
    Content-Type: application/pdf

``classification`` and ``tag`` are non-standard ``Content-Disposition`` parameters that generic
encoders cannot write, hence this module. The body is produced lazily from the file in ~1 MiB
chunks, so memory stays bounded whatever the file size, and its exact length is known up front
(the request carries ``Content-Length``; Bimplus does not document chunked uploads).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

CHUNK_SIZE = 1024 * 1024
"""Bytes read from the source file per step (and so the largest piece kept in memory)."""

_CRLF = b"\r\n"


class SourceChangedError(OSError):
    """The file being uploaded changed size while it was read (the body would be inconsistent)."""


def _needs_extended(value: str) -> bool:
    """True when ``value`` cannot be carried verbatim in a plain ASCII quoted-string."""
    return any(not (0x20 <= ord(ch) < 0x7F) or ch in '"\\' for ch in value)


def quote_param(value: str) -> bytes:
    """Quote a ``Content-Disposition`` parameter value (quotes included) as header bytes.

    ``"`` and ``\\`` are backslash-escaped (an RFC 7230 quoted-pair). CR, LF and other control
    characters cannot appear in a header at all, so they are percent-encoded the way browsers
    do; the exact name then travels in ``filename*``. Other non-ASCII text is written as UTF-8,
    which is what multipart parsers (and Bimplus' .NET stack) read.
    """
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"%{code:02X}")
        else:
            out.append(ch)
    return b'"' + "".join(out).encode("utf-8", "surrogateescape") + b'"'


def _check_header_value(what: str, value: str) -> None:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{what} must not contain control characters: {value!r}")


def part_name(file_name: str) -> str:
    """The form field ``name`` for a file: its stem, as in the documented example
    (``name="TestFile"; filename="TestFile.xml"``); Bimplus stores it as the document's name."""
    stem, dot, _ext = file_name.rpartition(".")
    return stem if dot and stem else file_name


class MultipartUpload:
    """One upload body: the multipart framing around the bytes of ``source``.

    The size is taken when the object is built; :meth:`stream` raises
    :class:`SourceChangedError` if the file turns out shorter or longer, so a request never
    carries a body that disagrees with its ``Content-Length``. A fresh object is needed per
    attempt (``stream`` may be consumed once).

    ``started`` turns true when the first byte of the body was handed to the transport: before
    that, the server cannot have stored anything, so a failed attempt is safe to repeat.
    ``progress`` is called with the number of file bytes sent so far in this attempt.
    """

    def __init__(
        self,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        field_name: str | None = None,
        progress: Callable[[int], None] | None = None,
        size: int | None = None,
        boundary: str | None = None,
    ) -> None:
        if not file_name:
            raise ValueError("file_name must not be empty")
        _check_header_value("content_type", content_type)
        self.source = Path(source)
        self.size = os.stat(self.source).st_size if size is None else size
        self.boundary = boundary or f"bimfs-{secrets.token_hex(16)}"
        self.progress = progress
        self.started = False
        self.sent = 0

        disposition = [b"form-data; name=", quote_param(field_name or part_name(file_name))]
        disposition += [b"; filename=", quote_param(file_name)]
        if _needs_extended(file_name):
            # RFC 6266 / 5987: parsers that know filename* prefer it and get the exact name.
            encoded = quote(file_name.encode("utf-8", "surrogateescape"), safe="")
            disposition += [b"; filename*=UTF-8''", encoded.encode("ascii")]
        if classification is not None:
            disposition += [b"; classification=", quote_param(classification)]
        if tag is not None:
            disposition += [b"; tag=", quote_param(tag)]
        self.head = b"".join(
            [
                b"--",
                self.boundary.encode("ascii"),
                _CRLF,
                b"Content-Disposition: ",
                *disposition,
                _CRLF,
                b"Content-Type: ",
                content_type.encode("latin-1"),
                _CRLF,
                _CRLF,
            ]
        )
        self.tail = _CRLF + b"--" + self.boundary.encode("ascii") + b"--" + _CRLF

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type`` header value."""
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        """The exact number of body bytes :meth:`stream` yields."""
        return len(self.head) + self.size + len(self.tail)

    def headers(self) -> dict[str, str]:
        """The request headers that describe this body."""
        return {"Content-Type": self.content_type, "Content-Length": str(self.content_length)}

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Yield the body: head, the file in ``CHUNK_SIZE`` pieces, tail.

        Raises :class:`SourceChangedError` when the file is not exactly ``size`` bytes long,
        and ``OSError`` when it cannot be read.
        """
        async with await trio.open_file(self.source, "rb", buffering=0) as f:
            self.started = True
            yield self.head
            remaining = self.size
            while remaining > 0:
                chunk = await f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise SourceChangedError(
                        f"{self.source} shrank to {self.size - remaining} bytes during the upload"
                    )
                remaining -= len(chunk)
                self.sent += len(chunk)
                yield chunk
                if self.progress is not None:
                    self.progress(self.sent)
            if await f.read(1):
                raise SourceChangedError(
                    f"{self.source} grew beyond {self.size} bytes during the upload"
                )
            yield self.tail


class GrowingSource:
    """A file that is still being written: its readers wait for more bytes until ``finish``
    fixes the final size. Lives on the trio thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.size = 0
        self.final: int | None = None
        self._changed = trio.Event()

    def grew(self, size: int) -> None:
        """The file is now at least ``size`` bytes long."""
        if size > self.size:
            self.size = size
            self._wake()

    def finish(self, size: int) -> None:
        """The file is complete at ``size`` bytes."""
        self.size = size
        self.final = size
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_beyond(self, pos: int) -> None:
        """Return once more than ``pos`` bytes exist or the size is final."""
        while self.size <= pos and self.final is None:
            await self._changed.wait()


class GrowingMultipartUpload(MultipartUpload):
    """An upload body for a file still being written, sent as it grows.

    The length is unknown when the request starts, so the request goes out with chunked
    transfer encoding (no ``Content-Length``). The body ends when the source is finished; it
    raises :class:`SourceChangedError` if the file turns out shorter than what was announced.
    """

    def __init__(self, source: GrowingSource, **kwargs: Any) -> None:
        super().__init__(source.path, size=0, **kwargs)
        self.growing = source

    @property
    def content_length(self) -> int:
        raise TypeError("a growing upload has no length until it is finished")

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type}

    async def stream(self) -> AsyncGenerator[bytes, None]:
        fd = os.open(self.growing.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.started = True
            yield self.head
            pos = 0
            while True:
                available = self.growing.size - pos
                if available > 0:
                    # Inline: these bytes were written moments ago by this process and are in
                    # the page cache, where a copy costs less than the hop to a worker thread.
                    chunk = os.pread(fd, min(CHUNK_SIZE, available), pos)
                    await trio.lowlevel.checkpoint()
                    if not chunk:
                        raise SourceChangedError(f"{self.growing.path} shrank during the upload")
                    pos += len(chunk)
                    self.sent = pos
                    yield chunk
                    if self.progress is not None:
                        self.progress(self.sent)
                elif self.growing.final is not None:
                    break
                else:
                    await self.growing.wait_beyond(pos)
            self.size = pos
            yield self.tail
        finally:
            os.close(fd)
