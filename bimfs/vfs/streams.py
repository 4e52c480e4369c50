"""Streaming a large save to the server while it is still being written.

A large file written sequentially from empty (``cp``, an export) can travel to Bimplus while the
program is still writing it: the request body follows the staging file as it grows and is
completed only when the uploader takes the entry it was made for, so the server stores exactly
one version, of the final content, after the close. A write elsewhere than at the end, a
truncate, a rename, a delete or a long pause abandons the stream (the server discards an
incomplete body) and the entry is uploaded the ordinary way: the journal stays the single source
of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bimfs.api.models import Attachment
from bimfs.api.multipart import GrowingSource
from bimfs.cache.journal import JournalEntry
from bimfs.vfs.keys import UploadTarget
from bimfs.vfs.remote import Remote

log = logging.getLogger(__name__)

#: Files smaller than this are not worth a second request path.
EAGER_MIN_SIZE = 8 << 20
#: A stream whose file has not grown for the write-back delay plus this long is given up.
EAGER_IDLE_SLACK = 30.0


class EagerUpload:
    """One streaming upload of one staging file."""

    def __init__(self, key: str, target: UploadTarget, path: Path, idle_limit: float) -> None:
        self.key = key
        self.target = target
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

    def matches(self, entry: JournalEntry) -> bool:
        """True when a journal entry is for exactly what this stream is sending."""
        return entry.key == self.key and self.target.same_request(
            UploadTarget.from_meta(entry.meta)
        )

    def status(self) -> dict[str, Any] | None:
        """This stream as a ``bimfs status`` transfer while the file is still being written;
        None once it is finishing (the uploader then reports the journal entry itself)."""
        if self._finishing or self.done.is_set():
            return None
        elapsed = trio.current_time() - self.started
        return {
            "id": None,
            "key": self.key,
            "name": self.target.file_name,
            "path": self.target.path,
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

    async def run(self, remote: Remote) -> None:
        """Send until finished, aborted or idle for too long. Never raises."""
        t = self.target
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_idle)
                    self.result = await remote.stream_upload(
                        t.slug,
                        self.source,
                        file_name=t.file_name,
                        content_type=t.content_type,
                        pid=t.pid if t.creating else None,
                        folder_id=t.folder_id if t.creating else None,
                        aid=None if t.creating else t.aid,
                        known_version=t.base_version,
                        progress=self._on_progress,
                    )
                    nursery.cancel_scope.cancel()
                    log.debug("streamed upload of %s stored", t.path)
            except Exception as exc:  # the journal entry is uploaded the ordinary way instead
                self.error = exc
                log.debug("streaming upload of %s given up: %s", t.path, exc)
        self.done.set()

    async def _watch_idle(self) -> None:
        while True:
            await trio.sleep(1.0)
            idle = trio.current_time() - self._last_growth
            if not self._finishing and idle > self.idle_limit:
                log.debug("streaming upload of %s idle for %.0f s", self.target.path, idle)
                self.abort()
                return

    async def finish(self, size: int, progress: Callable[[int], None]) -> Attachment | None:
        """Complete the body at ``size`` bytes and wait for the server's answer; None when the
        stream failed or was abandoned (the caller then uploads the entry itself)."""
        self._finishing = True
        log.debug("finishing streamed upload of %s at %d bytes", self.target.path, size)
        self._progress = progress
        progress(self.sent)
        if self.source.size > size:
            self.abort()
        else:
            self.source.finish(size)
        await self.done.wait()
        return self.result
