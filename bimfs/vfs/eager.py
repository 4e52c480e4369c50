"""Streaming a save to the server while it is being written.

A large file written sequentially from empty (``cp``, a download saved in place, an export) can
travel to Bimplus while the program is still writing it, instead of only after ``close()``: the
request body follows the staging file as it grows and is completed when the uploader would have
sent the file anyway (after ``close()`` and the write-back delay). The server stores nothing
until the body is complete, so a stream that is abandoned (a write elsewhere than at the end, a
truncate, a rename, a delete, a long pause) leaves nothing behind, and the journal entry is then
uploaded the ordinary way. The stream is an optimisation only: the journal remains the source of
truth and nothing waits on the stream except the upload of exactly the entry it was made for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bimfs.api.models import Attachment
from bimfs.api.multipart import GrowingSource
from bimfs.vfs.remote import Remote

log = logging.getLogger(__name__)

#: Files smaller than this are not worth a second request path.
EAGER_MIN_SIZE = 8 << 20

#: Meta fields that must not change between starting the stream and uploading the entry.
_IDENTITY = ("op", "slug", "pid", "folder_id", "aid", "file_name", "content_type")


class EagerUpload:
    """One streaming upload of one staging file."""

    def __init__(self, key: str, meta: dict[str, Any], path: Path, idle_limit: float) -> None:
        self.key = key
        self.meta = dict(meta)
        self.source = GrowingSource(path)
        self.idle_limit = idle_limit
        self.result: Attachment | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        self.sent = 0
        self._progress: Callable[[int], None] | None = None
        self._scope = trio.CancelScope()
        self.started = self._last_growth = trio.current_time()
        self._finishing = False

    def matches(self, key: str, meta: dict[str, Any]) -> bool:
        """True when a journal entry is for exactly what this stream is sending."""
        return key == self.key and all(meta.get(k) == self.meta.get(k) for k in _IDENTITY)

    def status(self) -> dict[str, Any] | None:
        """This stream as a ``bimfs status`` transfer while the file is still being written;
        None once it is finishing (the uploader then reports the journal entry itself)."""
        if self._finishing or self.done.is_set():
            return None
        elapsed = trio.current_time() - self.started
        return {
            "id": None,
            "key": self.key,
            "name": self.meta.get("file_name", ""),
            "path": self.meta.get("path", ""),
            "state": "streaming",
            "sent": self.sent,
            "size": self.source.size,
            "rate": self.sent / elapsed if elapsed > 0 else 0.0,
            "reason": None,
            "attempts": 1,
            "next_attempt": None,
        }

    def grew(self, size: int) -> None:
        self._last_growth = trio.current_time()
        self.source.grew(size)

    def abort(self) -> None:
        """Abandon the stream (the server discards the incomplete body)."""
        self._scope.cancel()

    def _on_progress(self, sent: int) -> None:
        self.sent = sent
        if self._progress is not None:
            self._progress(sent)

    async def run(self, client: Remote) -> None:
        """Send until finished, aborted or idle for too long. Never raises."""
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_idle)
                    meta = self.meta
                    self.result = await client.stream_upload(
                        meta["slug"],
                        self.source,
                        file_name=meta["file_name"],
                        content_type=meta.get("content_type") or "application/octet-stream",
                        pid=meta.get("pid") if meta.get("op") == "create" else None,
                        folder_id=meta.get("folder_id") if meta.get("op") == "create" else None,
                        aid=meta.get("aid") if meta.get("op") == "version" else None,
                        known_version=meta.get("base_version"),
                        progress=self._on_progress,
                    )
                    nursery.cancel_scope.cancel()
                    log.debug("streamed upload of %s stored", meta.get("path"))
            except Exception as exc:  # the journal entry is uploaded the ordinary way instead
                self.error = exc
                log.debug("streaming upload of %s given up: %s", self.meta.get("path"), exc)
        self.done.set()

    async def _watch_idle(self) -> None:
        while True:
            await trio.sleep(1.0)
            idle = trio.current_time() - self._last_growth
            if not self._finishing and idle > self.idle_limit:
                log.debug("streaming upload of %s idle for %.0f s", self.meta.get("path"), idle)
                self.abort()
                return

    async def finish(self, size: int, progress: Callable[[int], None]) -> Attachment | None:
        """Complete the body at ``size`` bytes and wait for the server's answer; None when the
        stream failed or was abandoned (the caller then uploads the entry itself)."""
        self._finishing = True
        log.debug(
            "finishing streamed upload of %s at %d bytes (%d sent)",
            self.meta.get("path"),
            size,
            self.sent,
        )
        self._progress = progress
        progress(self.sent)
        if self.source.size > size:
            self.abort()
        else:
            self.source.finish(size)
        await self.done.wait()
        return self.result
