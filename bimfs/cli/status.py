"""``bimfs status``: reading a mount's status through its extended attributes, and showing it."""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bimfs.cli.common import LIST_LIMIT, CliError
from bimfs.cli.common import human as _human
from bimfs.cli.settings import mountpoint_of

# The mount's status: a bounded summary, and its detail in pages (see bimfs/vfs/status.py).
STATUS_XATTR = "user.bimfs.status"
STATUS_PAGE_XATTR = "user.bimfs.status.{after}"
SYNC_XATTR = "user.bimfs.sync"
# The largest value an extended attribute may have (XATTR_SIZE_MAX).
XATTR_SIZE_MAX = 65536


def bimfs_mounts() -> list[Path]:
    """Mountpoints of bimfs filesystems, from /proc/self/mounts."""
    result = []
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "fuse.bimfs":
                # The kernel writes space, tab, newline and backslash as octal escapes.
                path = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
                result.append(Path(path))
    return result


def getxattr(path: Path, name: str) -> bytes:
    """An extended attribute's value in one call with a buffer of the largest size allowed
    (``os.getxattr`` first tries 128 bytes, so each status page would be built twice)."""
    libc = _libc()
    if libc is None:
        return os.getxattr(path, name)
    buffer = ctypes.create_string_buffer(XATTR_SIZE_MAX)
    size = libc.getxattr(os.fsencode(path), os.fsencode(name), buffer, XATTR_SIZE_MAX)
    if size < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return buffer.raw[:size]


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.getxattr
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_ssize_t
    return libc


def _read_json(mountpoint: Path, name: str) -> dict[str, Any]:
    try:
        raw = getxattr(mountpoint, name)
    except OSError as exc:
        raise _unreadable(mountpoint, exc) from None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CliError(f"cannot read the status of {mountpoint}: {name} is not a JSON object")
    return data


def _unreadable(mountpoint: Path, exc: OSError) -> CliError:
    """One line saying why the status of ``mountpoint`` cannot be read and what to do."""
    reason = exc.strerror or str(exc)
    if not _is_bimfs_mount(mountpoint):
        return CliError(f"{mountpoint} is not a bimfs mount ({reason})")
    if exc.errno == errno.ENOTCONN:
        return CliError(
            f"{mountpoint}: the bimfs mount is not responding (its process has ended; "
            f"unsent saves stay in its cache dir for the next mount); "
            f"clear it with: bimfs unmount {mountpoint}"
        )
    if exc.errno in (errno.E2BIG, errno.ERANGE):
        return CliError(
            f"cannot read the status of {mountpoint}: it is larger than an extended attribute "
            f"may be ({reason}); the mount runs an older bimfs, remount it with this one"
        )
    return CliError(f"cannot read the status of {mountpoint}: {reason}")


def _is_bimfs_mount(path: Path) -> bool:
    mounts = set(bimfs_mounts())
    return Path(os.path.abspath(path)) in mounts or Path(os.path.realpath(path)) in mounts


def read_status(mountpoint: Path) -> dict[str, Any]:
    """The mount's summary: counts, running transfers, the first saves and failures."""
    return _read_json(mountpoint, STATUS_XATTR)


def iter_uploads(mountpoint: Path) -> Iterator[dict[str, Any]]:
    """Every save of the mount's journal, oldest first, read page by page."""
    after: int | None = 0
    while after is not None:
        page = _read_json(mountpoint, STATUS_PAGE_XATTR.format(after=after))
        uploads = page.get("uploads")
        following = page.get("next")
        if not isinstance(uploads, list) or not (following is None or isinstance(following, int)):
            raise CliError(f"cannot read the status of {mountpoint}: a page is not as expected")
        yield from uploads
        after = following


def read_full_status(mountpoint: Path) -> dict[str, Any]:
    """The summary with nothing left out (``bimfs status --json``): ``uploads`` lists every
    save, ``failed`` every refused one, ``transfers`` every file being sent (streamed while
    being written, or uploading)."""
    status = read_status(mountpoint)
    if not status.get("truncated"):
        return status  # the summary lists everything already (or comes from an older bimfs)
    uploads = list(iter_uploads(mountpoint))
    streams = [t for t in status.get("transfers", []) if t.get("state") == "streaming"]
    return {
        **status,
        "transfers": [*streams, *(u for u in uploads if u.get("state") == "uploading")],
        "uploads": uploads,
        "failed": [u for u in uploads if u.get("state") == "failed"],
        "truncated": False,
    }


def _first_unsent(mountpoint: Path, status: dict[str, Any], n: int, states: set[str]) -> list[str]:
    """Paths of the first ``n`` saves in ``states``, from the summary, else from the pages."""
    found = [_label(u) for u in status.get("uploads", []) if u.get("state") in states][:n]
    if len(found) < n and status.get("truncated"):
        found = []
        for upload in iter_uploads(mountpoint):
            if upload.get("state") in states:
                found.append(_label(upload))
                if len(found) == n:
                    break
    return found


def _label(upload: dict[str, Any]) -> str:
    return str(upload.get("path") or upload.get("file_name") or upload.get("name") or "?")


def _counts(status: dict[str, Any]) -> dict[str, int]:
    counts = status.get("counts")
    if isinstance(counts, dict):
        return counts
    uploads = status.get("uploads", [])  # an older bimfs: its lists are complete
    return {
        state: sum(1 for u in uploads if u.get("state") == state)
        for state in ("pending", "uploading", "failed")
    }


def format_status(
    status: dict[str, Any], waiting: list[str] | None = None, *, every: bool = False
) -> str:
    """The human-readable status: running transfers, the number of pending saves and the first
    ones (``waiting``: paths of saves not being sent yet; by default those the status lists,
    at most ``LIST_LIMIT``), failed saves, cache use. With ``every`` nothing is shortened."""
    if waiting is None:
        pending = [_label(u) for u in status.get("uploads", []) if u.get("state") == "pending"]
        waiting = pending if every else pending[:LIST_LIMIT]
    lines = [f"{status['mountpoint']}  ({status['api_url']})"]
    for t in status.get("transfers", []):
        if t.get("state") in ("pending", "failed"):
            continue  # listed below (a complete status lists every save as a transfer)
        size = t.get("size") or 0
        sent = t.get("sent", t.get("bytes_sent", 0)) or 0
        rate = t.get("rate", t.get("rate_bps", 0)) or 0
        name = t.get("path") or t.get("name") or t.get("file_name") or t.get("key")
        lines.append(
            f"  {t.get('state', '?'):9} {name}  {_human(sent)}/{_human(size)}  {_human(rate)}/s"
        )
    counts = _counts(status)
    lines.append(f"  pending uploads: {status.get('pending', 0)}")
    lines.extend(f"    {path}" for path in waiting)
    more = counts.get("pending", 0) - len(waiting)
    if more > 0 and not every:
        lines.append(f"    ... and {more} more")
    failed = status.get("failed", [])
    shown = failed if every else failed[:LIST_LIMIT]
    for f in shown:
        lines.append(f"  failed: {_label(f)}: {f.get('reason')}")
    more = counts.get("failed", len(failed)) - len(shown)
    if more > 0 and not every:
        lines.append(f"  ... and {more} more failed")
    for u in status.get("unsaved", []):
        lines.append(f"  not saved locally: {u.get('path')}: {u.get('reason')}")
    for c in status.get("conflicts", []):
        lines.append(f"  {c.get('state')}: {c.get('path')}")
    for p in status.get("pins", []):
        state = "complete" if p.get("complete") else f"{p.get('cached_files')}/{p.get('files')}"
        error = f" ({p['error']})" if p.get("error") else ""
        lines.append(f"  pinned: {p.get('path')}  {_human(p.get('bytes', 0))}  {state}{error}")
    cache = status.get("cache", {})
    if cache:
        used = cache.get("bytes_used", 0) or 0
        budget = cache.get("max_bytes", cache.get("budget", 0)) or 0
        lines.append(f"  cache: {_human(used)} of {_human(budget)} in {status.get('cache_dir')}")
    return "\n".join(lines)


def _show(mountpoint: Path, every: bool) -> str:
    if every:
        return format_status(read_full_status(mountpoint), every=True)
    status = read_status(mountpoint)
    return format_status(status, _first_unsent(mountpoint, status, LIST_LIMIT, {"pending"}))


def cmd_status(args: argparse.Namespace) -> int:
    named = args.mountpoint is not None
    mountpoints = [mountpoint_of(args.mountpoint, args.config)] if named else bimfs_mounts()
    shown: list[Any] = []
    broken = 0
    for mountpoint in mountpoints:
        try:
            if args.json:
                shown.append(read_full_status(mountpoint))
            else:
                shown.append(_show(mountpoint, args.all))
        except CliError as exc:
            if named:
                raise
            # A dead mount must not hide the others; the exit status still tells.
            print(f"bimfs: {exc}", file=sys.stderr)
            broken += 1
    if args.json:
        print(json.dumps(shown[0] if named else shown, indent=2))
    elif not shown and not broken:
        print("no bimfs mounts")
    elif shown:
        print("\n".join(shown))
    return 1 if broken else 0
