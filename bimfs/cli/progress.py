"""Progress where people wait: the saves draining during ``bimfs unmount``.

On a terminal a ``rich`` progress bar (saves left, bytes sent of those that were pending, rate,
time left), redrawn in place; otherwise one plain line each time the saves left change::

    waiting for 3 saves, 1.2 MiB left, 410.0 KiB/s
    all saved
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bimfs.cli.common import human


def pending_bytes(status: dict[str, Any]) -> tuple[int, int]:
    """(saves not on the server yet, their bytes not sent yet) from a status summary: the
    journal's bytes less what running uploads have sent already."""
    counts = status.get("counts") or {}
    held = counts.get("bytes", 0) or 0
    sent = sum(
        t.get("sent", 0) or 0 for t in status.get("transfers", []) if t.get("state") == "uploading"
    )
    return int(status.get("pending", 0) or 0), max(0, int(held) - int(sent))


class DrainView:
    """Shows saves draining; ``update(status)`` after each look at the mount, ``close()`` at
    the end. ``stream`` (stdout by default) decides: a terminal gets the bar."""

    def __init__(self, status: dict[str, Any], stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.start = time.monotonic()
        self.count, self.left = pending_bytes(status)
        self.total = self.left
        self.shown: tuple[int, int] | None = None
        self.progress: Progress | None = None
        if self.count and self.stream.isatty():
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self.task = self.progress.add_task(self._label(), total=max(1, self.total))
            self.progress.start()
        self.update(status)

    def _label(self) -> str:
        return f"sending {self.count} save{'' if self.count == 1 else 's'}"

    def update(self, status: dict[str, Any]) -> None:
        self.count, self.left = pending_bytes(status)
        # New saves while waiting make the total grow rather than the bar go backwards.
        self.total = max(self.total, self.left)
        if self.progress is not None:
            self.progress.update(
                self.task,
                description=self._label(),
                total=max(1, self.total),
                completed=self.total - self.left,
            )
            return
        if self.count and (self.count, self.left) != self.shown:
            self.shown = (self.count, self.left)
            noun = "save" if self.count == 1 else "saves"
            elapsed = time.monotonic() - self.start
            rate = (self.total - self.left) / elapsed if elapsed > 0 else 0.0
            print(
                f"waiting for {self.count} {noun}, {human(self.left)} left, {human(rate)}/s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        """Stop drawing; say so when everything that was waiting got saved."""
        if self.progress is not None:
            self.progress.stop()
        waited = self.shown is not None or self.progress is not None
        if waited and not self.count:
            print("all saved", file=self.stream, flush=True)
