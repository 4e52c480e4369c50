"""The streaming multipart encoder: exact framing, quoting, bounded chunks, size checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bimfs.api.multipart import (
    CHUNK_SIZE,
    MultipartUpload,
    SourceChangedError,
    part_name,
    quote_param,
)
from bimfs.emulator.multipart import FirstPartParser, PartHeaders, parse_boundary


async def collect(upload: MultipartUpload) -> list[bytes]:
    return [piece async for piece in upload.stream()]


def parse(upload: MultipartUpload, body: bytes) -> tuple[PartHeaders, bytes]:
    """Read the body back with the emulator's parser (an independent implementation)."""
    parser = FirstPartParser(parse_boundary(upload.content_type))
    headers = None
    content = bytearray()
    for event in parser.feed(body):
        if isinstance(event, PartHeaders):
            headers = event
        else:
            content += event
    parser.finish()
    assert headers is not None
    return headers, bytes(content)


async def test_exact_framing(tmp_path: Path) -> None:
    src = tmp_path / "plan.pdf"
    src.write_bytes(b"%PDF-1.4 data")
    up = MultipartUpload(
        src,
        file_name="plan.pdf",
        content_type="application/pdf",
        classification="Report",
        tag="ABCDE",
        boundary="XyZ",
    )
    body = b"".join(await collect(up))
    assert body == (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="plan"; filename="plan.pdf";'
        b' classification="Report"; tag="ABCDE"\r\n'
        b"Content-Type: application/pdf\r\n"
        b"\r\n"
        b"%PDF-1.4 data"
        b"\r\n--XyZ--\r\n"
    )
    assert up.content_length == len(body)
    assert up.headers() == {
        "Content-Type": "multipart/form-data; boundary=XyZ",
        "Content-Length": str(len(body)),
    }


async def test_optional_params_left_out(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"")
    up = MultipartUpload(src, file_name="README", content_type="text/plain")
    body = b"".join(await collect(up))
    assert b"classification" not in body and b"tag=" not in body
    headers, content = parse(up, body)
    assert (headers.name, headers.filename, headers.content_type) == (
        "README",
        "README",
        "text/plain",
    )
    assert headers.classification is None and headers.tag is None
    assert content == b""
    assert up.content_length == len(body)


@pytest.mark.parametrize(
    "name",
    [
        'quote"d.txt',
        "back\\slash.txt",
        "semi;colon = x.txt",
        "Grundriß Übersicht.pdf",
        "日本語.dwg",
        "emoji 😀.png",
        "line\nbreak.txt",
        "tab\there.txt",
    ],
)
async def test_names_survive_a_real_parser(tmp_path: Path, name: str) -> None:
    src = tmp_path / "content"
    src.write_bytes(b"x" * 10)
    up = MultipartUpload(
        src,
        file_name=name,
        content_type="application/octet-stream",
        classification='Kl"assi;fikation ä',
        tag="t\\ag",
    )
    body = b"".join(await collect(up))
    headers, content = parse(up, body)
    assert headers.filename == name
    assert headers.classification == 'Kl"assi;fikation ä'
    assert headers.tag == "t\\ag"
    assert content == b"x" * 10
    head_line = up.head.split(b"\r\n")[1]
    assert b"\n" not in head_line and b"\r" not in head_line


def test_non_ascii_name_has_utf8_and_extended_form() -> None:
    up = MultipartUpload(
        Path("/dev/null"), file_name="Übersicht.pdf", content_type="application/pdf", size=0
    )
    assert 'filename="Übersicht.pdf"'.encode() in up.head
    assert b"filename*=UTF-8''%C3%9Cbersicht.pdf" in up.head
    ascii_only = MultipartUpload(
        Path("/dev/null"), file_name="plain.pdf", content_type="application/pdf", size=0
    )
    assert b"filename*" not in ascii_only.head


def test_quote_param() -> None:
    assert quote_param("a") == b'"a"'
    assert quote_param('a"b') == b'"a\\"b"'
    assert quote_param("a\\b") == b'"a\\\\b"'
    assert quote_param("a\r\nb") == b'"a%0D%0Ab"'
    assert quote_param("ä") == '"ä"'.encode()


def test_part_name() -> None:
    assert part_name("TestFile.xml") == "TestFile"
    assert part_name("archive.tar.gz") == "archive.tar"
    assert part_name("README") == "README"
    assert part_name(".bashrc") == ".bashrc"


def test_bad_content_type_refused() -> None:
    with pytest.raises(ValueError):
        MultipartUpload(
            Path("/dev/null"), file_name="a", content_type="text/plain\r\nX-Evil: 1", size=0
        )
    with pytest.raises(ValueError):
        MultipartUpload(Path("/dev/null"), file_name="", content_type="text/plain", size=0)


async def test_large_file_is_streamed_in_bounded_chunks(tmp_path: Path) -> None:
    src = tmp_path / "big"
    size = 5 * CHUNK_SIZE + 123
    src.touch()
    os.truncate(src, size)
    seen: list[int] = []
    up = MultipartUpload(src, file_name="big.bin", content_type="x/y", progress=seen.append)
    assert not up.started
    total = 0
    biggest = 0
    async for piece in up.stream():
        assert up.started
        total += len(piece)
        biggest = max(biggest, len(piece))
    assert total == up.content_length == len(up.head) + size + len(up.tail)
    assert biggest <= CHUNK_SIZE
    assert seen[-1] == size
    assert seen == sorted(seen) and len(seen) == 6


async def test_shrinking_source_is_detected(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    up = MultipartUpload(src, file_name="f", content_type="x/y", size=10)
    with pytest.raises(SourceChangedError):
        await collect(up)


async def test_growing_source_is_detected(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"abcdef")
    up = MultipartUpload(src, file_name="f", content_type="x/y", size=3)
    with pytest.raises(SourceChangedError):
        await collect(up)


async def test_missing_source(tmp_path: Path) -> None:
    up = MultipartUpload(tmp_path / "gone", file_name="f", content_type="x/y", size=3)
    with pytest.raises(FileNotFoundError):
        await collect(up)
    assert not up.started
