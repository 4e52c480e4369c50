"""What every command shares: the one-line error, list limits, sizes for people."""

from __future__ import annotations

# How many pending or failed saves `bimfs status` and `bimfs unmount` name (without --all).
LIST_LIMIT = 10


class CliError(Exception):
    """A one-line error for the user."""


def human(n: float) -> str:
    """A byte count as people read it: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
