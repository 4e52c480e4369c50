"""A streaming ``multipart/form-data`` parser for Bimplus uploads.

Bimplus uses only the first part of an upload and ignores the rest, and it reads the
non-standard ``classification`` and ``tag`` parameters of that part's ``Content-Disposition``.
Generic form parsers drop unknown parameters, hence this one. It is a push parser: ``feed`` takes
network chunks of any size (a boundary may be split across chunks, content may hold CR, LF and
partial boundaries) and returns the first part's headers once, then its content in pieces; memory
stays bounded by the chunk size plus the boundary length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_HEADER_BYTES = 64 * 1024
# Preamble and padding after a boundary are bounded so that garbage cannot grow the buffer.
MAX_PADDING_BYTES = 1024


class MultipartError(ValueError):
    """The body is not an acceptable Bimplus upload; ``str()`` is a short reason for a 400."""


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """What the first part declares about the uploaded file."""

    name: str
    filename: str
    content_type: str
    classification: str | None = None
    tag: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a header value such as ``form-data; name="a"; filename="b \\"c\\".txt"`` into its
    main value (lower-cased) and its parameters (names lower-cased).

    Quoted strings may contain ``;`` and backslash escapes. An extended parameter
    (``filename*=UTF-8''na%C3%AFve.txt``, RFC 5987) is decoded and wins over the plain one.
    Raises ``MultipartError`` for an undecodable extended value.
    """
    i = 0
    n = len(value)
    while i < n and value[i] != ";":
        i += 1
    main = value[:i].strip().lower()
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    while i < n:
        # Skip the separator and whitespace before the next parameter name.
        while i < n and value[i] in "; \t":
            i += 1
        start = i
        while i < n and value[i] not in "=;":
            i += 1
        key = value[start:i].strip().lower()
        if i >= n or value[i] == ";":
            continue  # a parameter without a value carries nothing we use
        i += 1  # '='
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1  # closing quote (tolerated when missing)
            val = "".join(chars)
        else:
            start = i
            while i < n and value[i] != ";":
                i += 1
            val = value[start:i].strip()
        if not key:
            continue
        if key.endswith("*"):
            extended[key[:-1]] = _decode_extended(val)
        else:
            params[key] = val
    params.update(extended)
    return main, params


def _decode_extended(val: str) -> str:
    """Decode an RFC 5987 ``charset'language'percent-encoded`` value."""
    parts = val.split("'", 2)
    if len(parts) != 3:
        raise MultipartError("malformed extended parameter")
    charset = parts[0].strip() or "utf-8"
    try:
        return unquote(parts[2], encoding=charset, errors="strict")
    except (LookupError, UnicodeDecodeError) as exc:
        raise MultipartError("undecodable extended parameter") from exc


def parse_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; ``MultipartError`` otherwise."""
    if not content_type:
        raise MultipartError("missing Content-Type")
    main, params = parse_header_params(content_type)
    if main != "multipart/form-data":
        raise MultipartError("Content-Type is not multipart/form-data")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise MultipartError("missing or invalid multipart boundary")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError as exc:
        raise MultipartError("non-ASCII multipart boundary") from exc


def _decode_header_bytes(raw: bytes) -> str:
    # Browsers and most clients put raw UTF-8 file names in the header; fall back to Latin-1
    # (every byte string decodes) rather than refuse an old client's upload.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_part_headers(block: bytes) -> PartHeaders:
    """Validate the first part's header block (without the blank line)."""
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line:
            continue
        raw_name, sep, raw_value = line.partition(b":")
        if not sep:
            raise MultipartError("malformed part header")
        key = raw_name.strip().lower().decode("latin-1")
        headers[key] = _decode_header_bytes(raw_value.strip())
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise MultipartError("the part has no Content-Disposition")
    _, params = parse_header_params(disposition)
    field_name = params.get("name")
    if not field_name:
        raise MultipartError("the part's Content-Disposition has no name")
    filename = params.get("filename")
    if not filename:
        raise MultipartError("the part's Content-Disposition has no filename")
    content_type = headers.get("content-type", "").strip()
    if not content_type:
        raise MultipartError("the part has no Content-Type")
    return PartHeaders(
        name=field_name,
        filename=filename,
        content_type=content_type,
        classification=params.get("classification"),
        tag=params.get("tag"),
        params=params,
    )


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


class FirstPartParser:
    """Push parser for the first part of a multipart body.

    ``feed(chunk)`` returns a list of events: one ``PartHeaders`` when the part's headers are
    complete, then ``bytes`` pieces of its content. ``done`` turns true at the delimiter that ends
    the first part; later input is ignored. ``finish()`` at the end of the body raises
    ``MultipartError`` if the first part never ended (truncated body, no part at all).
    ``consumed`` counts the input bytes fed so far.
    """

    def __init__(self, boundary: bytes) -> None:
        # Searching for CRLF + "--" + boundary; the stream starts with a virtual CRLF so that a
        # boundary on the very first line matches too.
        self._delimiter = b"\r\n--" + boundary
        self._keep = len(self._delimiter) - 1
        self._buf = b"\r\n"
        self._state = _PREAMBLE
        self._preamble_seen = 0
        self.headers: PartHeaders | None = None
        self.consumed = 0
        # Input bytes fed up to the start of the content (so a caller can bound the content size).
        self.content_offset: int | None = None

    @property
    def done(self) -> bool:
        """True once the first part's closing delimiter has been seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[PartHeaders | bytes]:
        """Parse more input; see the class docstring for the events returned."""
        if self._state == _DONE:
            self.consumed += len(data)
            return []
        self.consumed += len(data)
        buf = self._buf + data if self._buf else data
        self._buf = b""
        events: list[PartHeaders | bytes] = []
        while True:
            if self._state == _PREAMBLE:
                idx = buf.find(self._delimiter)
                if idx < 0:
                    self._preamble_seen += max(0, len(buf) - self._keep)
                    if self._preamble_seen > MAX_HEADER_BYTES:
                        raise MultipartError("no multipart boundary found")
                    self._buf = buf[-self._keep :] if len(buf) > self._keep else buf
                    return events
                buf = buf[idx + len(self._delimiter) :]
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if len(buf) < 2:
                    self._buf = buf
                    return events
                if buf.startswith(b"--"):
                    raise MultipartError("the body has no part")
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > MAX_PADDING_BYTES:
                        raise MultipartError("malformed multipart boundary line")
                    self._buf = buf
                    return events
                if buf[:eol].strip(b" \t"):
                    raise MultipartError("malformed multipart boundary line")
                buf = buf[eol + 2 :]
                self._state = _HEADERS
            elif self._state == _HEADERS:
                if buf.startswith(b"\r\n"):
                    raise MultipartError("the part has no Content-Disposition")
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise MultipartError("part headers too large")
                    self._buf = buf
                    return events
                self.headers = parse_part_headers(buf[:end])
                events.append(self.headers)
                buf = buf[end + 4 :]
                self.content_offset = self.consumed - len(buf)
                self._state = _BODY
            elif self._state == _BODY:
                idx = buf.find(self._delimiter)
                if idx >= 0:
                    if idx:
                        events.append(buf[:idx])
                    self._state = _DONE
                    return events
                # Hold back a tail that could be the start of a delimiter split across chunks.
                cut = len(buf) - self._keep
                if cut > 0:
                    events.append(buf[:cut])
                    self._buf = buf[cut:]
                else:
                    self._buf = buf
                return events
            else:
                return events

    def finish(self) -> None:
        """Declare the end of the body; ``MultipartError`` unless the first part was complete."""
        if self._state == _DONE:
            return
        if self._state in (_PREAMBLE, _AFTER_DELIMITER) and self.headers is None:
            raise MultipartError("the body has no complete part")
        raise MultipartError("truncated multipart body")
