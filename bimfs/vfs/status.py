"""What a mount tells ``bimfs status`` and ``bimfs unmount``: extended attributes of its root.

::

    user.bimfs.status           the summary: counts, the running transfers, the first saves and
                                failures, cache use; bounded whatever the journal holds
    user.bimfs.status.<after>   one page of the detail: the saves committed after the one
                                numbered <after> (0: from the first) that fit in PAGE_BYTES, and
                                "next", the <after> of the following page (null after the last)
    user.bimfs.sync             (set) send every pending save now; the value may give for how
                                many seconds at most

An extended attribute holds at most 64 KiB, and a journal of 100 000 saves takes about 25 MB to
describe, so the detail comes in pages. A page is named by the position it starts after rather
than by its number: pages stay correct while saves are sent and added between two reads (each
save that exists throughout is listed exactly once), and no snapshot has to be kept for readers
that never come back. Building a page reads only its own entries (``Journal.after``).

Every value is JSON. An upload record (in the summary's ``uploads``, ``failed`` and
``transfers``, and in pages) has the keys of ``Uploader.record`` plus ``path`` and ``file_name``;
texts longer than ``TEXT_LIMIT`` characters are shortened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import trio

from bimfs.cache.journal import FAILED, PENDING, UPLOADING, Journal, JournalEntry
from bimfs.cache.uploader import Uploader

PAGE_PREFIX = "user.bimfs.status."
# Under the 64 KiB limit with room to spare (the envelope, a reader's own additions).
PAGE_BYTES = 56 * 1024
# How many saves and failures the summary names; each of its lists also gets at most this many
# bytes, so the summary stays below PAGE_BYTES whatever the names.
SUMMARY_ITEMS = 20
SUMMARY_LIST_BYTES = 8 * 1024
TEXT_LIMIT = 1024
# Entries read from the journal at a time while filling a page.
_BATCH = 128


def page_after(name: str) -> int | None:
    """The position a page attribute name asks for (``user.bimfs.status.<after>``), else None."""
    if not name.startswith(PAGE_PREFIX):
        return None
    digits = name[len(PAGE_PREFIX) :]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return int(digits)


def sync_duration(value: bytes, default: float) -> float:
    """For how long a sync request sends everything at once: the number of seconds written
    (what ``bimfs unmount --timeout`` waits), else ``default``."""
    try:
        seconds = float(value.decode("ascii").strip("\x00 \n"))
    except (UnicodeDecodeError, ValueError):
        return default
    return seconds if math.isfinite(seconds) and seconds > 0 else default


def encode(doc: dict[str, Any]) -> bytes:
    """A status document as the attribute's value (ASCII JSON: names the kernel gave us as
    undecodable bytes survive as escapes)."""
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def upload_record(
    entry: JournalEntry, uploader: Uploader, now: float | None = None
) -> dict[str, Any]:
    """One save as ``bimfs status`` lists it."""
    record = uploader.record(entry, now)
    record["path"] = entry.meta.get("path") or ""
    record["file_name"] = entry.meta.get("file_name") or ""
    return _shortened(record)


def summary(
    *,
    about: dict[str, Any],
    journal: Journal,
    uploader: Uploader,
    streams: Iterable[dict[str, Any]],
    cache: dict[str, Any],
) -> dict[str, Any]:
    """The bounded summary (``user.bimfs.status``).

    ``pending`` counts the saves not yet on the server (pending and uploading), ``counts`` the
    entries per state and their bytes; ``transfers`` lists what is being sent (streams of files
    still being written, then uploads), ``uploads`` the first saves in commit order, ``failed``
    the first refused ones. ``truncated`` says that a list leaves some out: the pages have all.
    """
    now = trio.current_time()
    usage = journal.usage()
    running = [
        *(_shortened(s) for s in streams),
        *(upload_record(e, uploader, now) for e in uploader.running()),
    ]
    transfers = _fit(running, SUMMARY_LIST_BYTES)
    uploads = _fit(
        (upload_record(e, uploader, now) for e in journal.after(0, SUMMARY_ITEMS)),
        SUMMARY_LIST_BYTES,
    )
    failed = _fit(
        (upload_record(e, uploader, now) for e in journal.with_state(FAILED, SUMMARY_ITEMS)),
        SUMMARY_LIST_BYTES,
    )
    if isinstance(cache.get("streams"), list):
        cache = {**cache, "streams": _fit(cache["streams"], SUMMARY_LIST_BYTES)}
    return {
        **about,
        "pending": usage[PENDING] + usage[UPLOADING],
        "counts": usage,
        "transfers": transfers,
        "uploads": uploads,
        "failed": failed,
        "truncated": (
            len(uploads) < usage["entries"]
            or len(failed) < usage[FAILED]
            or len(transfers) < len(running)
        ),
        "cache": cache,
    }


def page(journal: Journal, uploader: Uploader, after: int) -> bytes:
    """The encoded page ``user.bimfs.status.<after>``: ``{"uploads": [...], "next": n|null}``,
    at most ``PAGE_BYTES`` long (and never without an entry while one follows ``after``)."""
    now = trio.current_time()
    parts: list[bytes] = []
    size = len(_page(b"", 10**18))
    cursor = after
    while batch := journal.after(cursor, _BATCH):
        for entry in batch:
            part = encode(upload_record(entry, uploader, now))
            if parts and size + len(part) + 1 > PAGE_BYTES:
                return _page(b",".join(parts), cursor)
            parts.append(part)
            size += len(part) + 1
            cursor = entry.seq
    return _page(b",".join(parts), None)


def _page(uploads: bytes, next_after: int | None) -> bytes:
    tail = b"null" if next_after is None else str(next_after).encode()
    return b'{"uploads":[' + uploads + b'],"next":' + tail + b"}"


def _fit(items: Iterable[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The leading ``items`` whose encodings together take at most ``budget`` bytes."""
    kept = []
    for item in items:
        budget -= len(encode(item)) + 1
        if budget < 0:
            break
        kept.append(item)
    return kept


def _shortened(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v[: TEXT_LIMIT - 1] + "…" if isinstance(v, str) and len(v) > TEXT_LIMIT else v
        for k, v in record.items()
    }
