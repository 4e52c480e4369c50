"""The network stream under httpcore: the answer's head is split off for h11, nothing is lost."""

from __future__ import annotations

import httpcore

from bimfs.api.transport import LargeReadStream


class FakeStream(httpcore.AsyncNetworkStream):
    """Gives scripted pieces to reads; records writes."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.written: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return self.pieces.pop(0) if self.pieces else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.written.append(buffer)

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> object:
        return False


async def drain(stream: LargeReadStream) -> list[bytes]:
    out = []
    while data := await stream.read(65536):
        out.append(data)
    return out


HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"


async def test_head_split_in_one_read() -> None:
    stream = LargeReadStream(FakeStream([HEAD + b"BODY"]))
    await stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await stream.read(65536) == HEAD
    assert stream.body_untouched
    assert stream.get_extra_info("is_readable")  # unread bytes are waiting
    assert await stream.read_body(2, 1.0) == b"BO"
    assert await stream.read_body(10, 1.0) == b"DY"
    assert not stream.get_extra_info("is_readable")


async def test_blank_line_straddling_reads() -> None:
    for cut in range(len(HEAD) - 4, len(HEAD) + 1):
        pieces = [HEAD[:cut], HEAD[cut:] + b"BODY"]
        stream = LargeReadStream(FakeStream([p for p in pieces if p]))
        await stream.write(b"request")
        got = await drain(stream)
        assert b"".join(got) == HEAD + b"BODY", cut
        # Some read ended exactly where the head ends.
        ends = {sum(len(g) for g in got[: i + 1]) for i in range(len(got))}
        assert len(HEAD) in ends, cut


async def test_h11_reading_on_marks_the_body_touched() -> None:
    stream = LargeReadStream(FakeStream([HEAD + b"BODY"]))
    await stream.write(b"request")
    await stream.read(65536)
    assert await stream.read(65536) == b"BODY"
    assert not stream.body_untouched


async def test_informational_answer_is_not_taken_for_the_head() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    stream = LargeReadStream(FakeStream([interim + HEAD + b"BODY"]))
    await stream.write(b"request")
    assert await stream.read(65536) == interim
    assert await stream.read(65536) == HEAD + b"BODY"
    # h11 has seen bytes after the first head: the body must not be read directly.
    assert not stream.body_untouched


async def test_no_split_without_a_request() -> None:
    data = b"x\r\n\r\ny"
    stream = LargeReadStream(FakeStream([data]))
    assert await stream.read(65536) == data
