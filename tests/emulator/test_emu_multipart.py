"""The streaming multipart parser, driven directly (any chunking) and through real uploads."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bimfs.emulator.multipart import (
    FirstPartParser,
    MultipartError,
    PartHeaders,
    parse_boundary,
    parse_header_params,
)

BOUNDARY = b"----MyFormBoundarytlTJWL8i2mvYwGPW"


def body(
    content: bytes,
    *,
    boundary: bytes = BOUNDARY,
    disposition: bytes = b'form-data; name="TestFile"; filename="TestFile.xml"',
    content_type: bytes | None = b"application/xml",
    preamble: bytes = b"",
    extra_parts: int = 0,
) -> bytes:
    out = preamble + b"--" + boundary + b"\r\n"
    out += b"Content-Disposition: " + disposition + b"\r\n"
    if content_type is not None:
        out += b"Content-Type: " + content_type + b"\r\n"
    out += b"\r\n" + content + b"\r\n"
    for i in range(extra_parts):
        out += b"--" + boundary + b"\r\n"
        out += b'Content-Disposition: form-data; name="x%d"; filename="x"\r\n' % i
        out += b"Content-Type: text/plain\r\n\r\nignored part\r\n"
    return out + b"--" + boundary + b"--\r\n"


def run(data: bytes, cuts: list[int], boundary: bytes = BOUNDARY) -> tuple[PartHeaders, bytes]:
    """Feed ``data`` split at ``cuts``; the headers and the reassembled content."""
    parser = FirstPartParser(boundary)
    headers: list[PartHeaders] = []
    content = bytearray()
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        for event in parser.feed(data[start:cut]):
            if isinstance(event, PartHeaders):
                headers.append(event)
            else:
                assert headers, "content before headers"
                content += event
        start = max(start, cut)
    parser.finish()
    assert len(headers) == 1
    return headers[0], bytes(content)


# Content that stresses the delimiter search: CR/LF runs and boundary prefixes.
tricky_bytes = st.lists(
    st.sampled_from(
        [
            b"\r",
            b"\n",
            b"\r\n",
            b"-",
            b"--",
            b"\r\n--",
            b"\r\n-" + BOUNDARY[:10],
            b"\r\n--" + BOUNDARY[:-1],
            b"--" + BOUNDARY,
            BOUNDARY,
            b"x",
            b"\x00\xff",
        ]
    )
    | st.binary(max_size=40),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(content=tricky_bytes, data=st.data())
def test_any_chunking_gives_the_same_content(content: bytes, data: st.DataObject) -> None:
    # A sender picks a boundary that does not occur in the content (RFC 2046).
    assume(b"\r\n--" + BOUNDARY not in content)
    raw = body(content, extra_parts=1)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    headers, got = run(raw, cuts)
    assert got == content
    assert headers.name == "TestFile"
    assert headers.filename == "TestFile.xml"
    assert headers.content_type == "application/xml"


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=3000), step=st.integers(1, 50))
def test_byte_by_byte_and_fixed_steps(content: bytes, step: int) -> None:
    assume(b"\r\n--" + BOUNDARY not in content)
    raw = body(content)
    assert run(raw, list(range(0, len(raw), step)))[1] == content


def test_content_holding_a_near_boundary_is_kept() -> None:
    content = b"abc\r\n--" + BOUNDARY[:-1] + b"X\r\n--\r\n" + BOUNDARY + b"\r\n"
    assert run(body(content), [len(content) // 2])[1] == content


def test_classification_tag_and_escapes() -> None:
    disposition = (
        b'form-data; name="TestFile"; filename="Test \\"quoted\\" ;name.xml";'
        b' classification="Report"; tag="ABCDE"'
    )
    headers, content = run(body(b"data", disposition=disposition), [])
    assert headers.filename == 'Test "quoted" ;name.xml'
    assert headers.classification == "Report"
    assert headers.tag == "ABCDE"
    assert content == b"data"


def test_rfc5987_filename_wins_and_unicode_names() -> None:
    disposition = (
        b'form-data; name="f"; filename="fallback.txt"; filename*=UTF-8\'\'Gr%C3%BC%C3%9Fe%2F'
        b"%E2%98%95.txt"
    )
    headers, _ = run(body(b"", disposition=disposition), [])
    assert headers.filename == "Grüße/☕.txt"
    raw_utf8 = 'form-data; name="f"; filename="平面図 A/B.txt"'.encode()
    headers, _ = run(body(b"x", disposition=raw_utf8), [])
    assert headers.filename == "平面図 A/B.txt"


def test_empty_content_and_preamble() -> None:
    headers, content = run(body(b"", preamble=b"This is a preamble\r\n"), [3])
    assert content == b""
    assert headers.filename == "TestFile.xml"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (body(b"x", disposition=b'form-data; filename="a.txt"'), "no name"),
        (body(b"x", disposition=b'form-data; name="a"'), "no filename"),
        (body(b"x", content_type=None), "no Content-Type"),
        (b"--" + BOUNDARY + b"--\r\n", "no part"),
        (b"garbage without any boundary", "no complete part"),
        (body(b"truncated content")[:-30], "truncated"),
        (
            b"--" + BOUNDARY + b"\r\nContent-Type: a/b\r\n\r\nx\r\n--" + BOUNDARY + b"--",
            "no Content-Disp",
        ),
        (b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx", "malformed"),
    ],
)
def test_bad_bodies_raise(raw: bytes, reason: str) -> None:
    parser = FirstPartParser(BOUNDARY)
    with pytest.raises(MultipartError, match=reason):
        parser.feed(raw)
        parser.finish()


def test_unterminated_headers_are_bounded() -> None:
    parser = FirstPartParser(BOUNDARY)
    parser.feed(b"--" + BOUNDARY + b"\r\nX-Long: ")
    with pytest.raises(MultipartError, match="too large"):
        for _ in range(100):
            parser.feed(b"a" * 1024)


def test_boundary_parsing() -> None:
    assert parse_boundary('multipart/form-data; boundary="a b"') == b"a b"
    assert parse_boundary("Multipart/Form-Data;boundary=xyz") == b"xyz"
    for bad in (None, "", "application/json", "multipart/form-data", "multipart/form-data; x=1"):
        with pytest.raises(MultipartError):
            parse_boundary(bad)


def test_header_params() -> None:
    main, params = parse_header_params('Form-Data; NAME="a;b"; flag; filename=plain.txt ')
    assert main == "form-data"
    assert params == {"name": "a;b", "filename": "plain.txt"}
    with pytest.raises(MultipartError):
        parse_header_params("form-data; filename*=nonsense")
    with pytest.raises(MultipartError):
        parse_header_params("form-data; filename*=no-such-charset''%41bc")
    with pytest.raises(MultipartError):
        parse_header_params("form-data; filename*=UTF-8''%FF.txt")


def test_rest_after_first_part_is_ignored() -> None:
    raw = body(b"first", extra_parts=2) + b"trailing garbage"
    parser = FirstPartParser(BOUNDARY)
    events = parser.feed(raw)
    assert parser.done
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"first"
    assert parser.feed(b"more garbage") == []
    parser.finish()
