"""A loopback TCP proxy whose client-to-server direction can be held at a byte count.

Used to catch an upload in the middle: the mount talks to the proxy, the proxy to the emulator;
``hold_after(n)`` lets ``n`` more request bytes through and then stops forwarding (and reading)
until ``release()``. The sender's kernel buffers fill and its upload stalls part-way, for as
long as the test needs, without any timing assumption.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

# Small socket buffers on the proxy's accepting side bound how much a held upload can still
# push into the kernel: without them loopback autotuning lets tens of MiB through.
_RECV_BUFFER = 256 * 1024
_PIECE = 64 * 1024


class GateProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; see the module docstring."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECV_BUFFER)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._upstream = 0  # request bytes forwarded so far, all connections together
        self._cap: int | None = None
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    @property
    def url(self) -> str:
        """The API root to give ``bimfs mount --api-url``."""
        return f"http://127.0.0.1:{self.port}/v2"

    @property
    def upstream_bytes(self) -> int:
        """Request bytes forwarded to the server so far."""
        with self._cond:
            return self._upstream

    def hold_after(self, nbytes: int) -> None:
        """Forward ``nbytes`` more request bytes, then hold everything until ``release``."""
        with self._cond:
            self._cap = self._upstream + nbytes

    def release(self) -> None:
        """Forward freely again."""
        with self._cond:
            self._cap = None
            self._cond.notify_all()

    def close(self) -> None:
        """Stop listening, cut every connection and wait for the forwarding threads."""
        with self._cond:
            self._closed = True
            self._cap = None
            self._cond.notify_all()
            sockets = list(self._sockets)
        for sock in (self._listener, *sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(timeout=10)

    # -- internals ---------------------------------------------------------------------------

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._cond:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            self._start(self._pump, client, server, True)
            self._start(self._pump, server, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(_PIECE)
                if not data:
                    break
                while data:
                    allowed = self._allowance(len(data)) if upstream else len(data)
                    if allowed < 0:
                        return
                    dst.sendall(data[:allowed])
                    data = data[allowed:]
        except OSError:
            pass
        finally:
            # Pass the end of the stream on, so the other side sees the close.
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _allowance(self, wanted: int) -> int:
        """How many of ``wanted`` bytes may go now (waiting while held); -1 once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return -1
                if self._cap is None:
                    self._upstream += wanted
                    return wanted
                room = self._cap - self._upstream
                if room > 0:
                    allowed = min(room, wanted)
                    self._upstream += allowed
                    return allowed
                self._cond.wait()
