"""A scripted HTTP/1.1 server for answers the emulator never gives (malformed JSON, cut bodies,
dropped uploads), served by trio on 127.0.0.1 (the ``scripted`` fixture)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio


@dataclass
class Request:
    """One request the scripted server received."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Reply:
    """What the server does with a request.

    ``drop``: close the connection without answering. ``send_only``: write only this many bytes
    of the body (after a full header announcing all of it), then close. ``hang``: never answer.
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    send_only: int | None = None
    hang: bool = False


Handler = Callable[[Request], Reply | Awaitable[Reply]]

_REASONS = {200: "OK", 201: "Created", 206: "Partial Content", 401: "Unauthorized"}


class ScriptedServer:
    """An HTTP/1.1 server whose answers the test scripts per (method, path)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        self.port = 0
        self.keep_body = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def on(self, method: str, path: str, handler: Handler | Reply) -> None:
        """Answer ``method path`` (path below /v2, query ignored) with ``handler``."""
        if isinstance(handler, Reply):
            reply = handler
            self.routes[(method, "/v2" + path)] = lambda _req: reply
        else:
            self.routes[(method, "/v2" + path)] = handler

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == "/v2" + path)

    async def serve(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = bytearray()
                while len(body) + len(buf) < length:
                    body += buf
                    buf = b""
                    try:
                        data = await stream.receive_some(1 << 20)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    buf = data
                need = length - len(body)
                body += buf[:need]
                buf = buf[need:]
                request = Request(method, target, headers, bytes(body) if self.keep_body else b"")
                self.requests.append(request)
                handler = self.routes.get((method, request.path))
                if handler is None:
                    reply = Reply(404, b"no route")
                else:
                    result = handler(request)
                    reply = await result if not isinstance(result, Reply) else result
                if reply.hang:
                    await trio.sleep_forever()
                if reply.drop:
                    return
                head_lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'X')}"]
                hdrs = {"Content-Length": str(len(reply.body)), **reply.headers}
                head_lines += [f"{k}: {v}" for k, v in hdrs.items()]
                out = ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1")
                try:
                    if reply.send_only is not None:
                        await stream.send_all(out + reply.body[: reply.send_only])
                        return
                    await stream.send_all(out + reply.body)
                except trio.BrokenResourceError:
                    return
