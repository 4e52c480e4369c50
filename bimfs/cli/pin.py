"""``bimfs pin PATH...`` and ``bimfs unpin PATH...``: keep documents downloaded for offline work.

The commands talk to the mount through extended attributes of the paths themselves: writing
``user.bimfs.pinned`` pins (``1``) or unpins (``0``), and ``user.bimfs.pin`` is the progress of
the pin covering a path (JSON: documents and bytes, how much is cached, whether it is complete,
the last error). ``pin`` then shows the downloads with a progress bar (documents, bytes, rate,
time left) on a terminal, or plain lines otherwise, until every document is cached.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bimfs.cli.common import human as _human

PINNED_XATTR = "user.bimfs.pinned"
PIN_XATTR = "user.bimfs.pin"
STATUS_XATTR = "user.bimfs.status"
# How often the progress is read, and how often a line is printed when not on a terminal.
POLL_INTERVAL = 0.2
PLAIN_INTERVAL = 5.0
# ``pin`` gives up waiting (the pin stays) when an error lasts this long with no progress.
STALL_TIMEOUT = 30.0


class PinError(Exception):
    """A one-line error for the user."""


def add_pin_parsers(sub: Any) -> None:
    """Register ``pin`` and ``unpin`` on the command line's subparsers."""
    pin = sub.add_parser("pin", help="keep documents under PATH downloaded and current")
    pin.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    pin.add_argument(
        "--no-wait", action="store_true", help="return once pinned, without waiting for downloads"
    )
    unpin = sub.add_parser("unpin", help="let pinned documents be evicted from the cache again")
    unpin.add_argument("paths", nargs="+", type=Path, metavar="PATH")


def run_pin(args: argparse.Namespace) -> int:
    """``bimfs pin`` / ``bimfs unpin``: exit status 0 when every path was done."""
    try:
        if args.command == "unpin":
            for path in args.paths:
                unpin(path)
            return 0
        paths = [p.absolute() for p in args.paths]
        for path in paths:
            pin(path)
        if args.no_wait:
            return 0
        return 0 if wait_complete(paths) else 1
    except PinError as exc:
        print(f"bimfs {args.command}: {exc}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------ pin, unpin


def _mountpoint(path: Path) -> Path:
    p = path.absolute()
    while not os.path.ismount(p) and p.parent != p:
        p = p.parent
    return p


def _set(path: Path, value: bytes) -> None:
    if not path.exists():
        raise PinError(f"{path}: no such file or directory")
    if not _in_bimfs(path):
        raise PinError(f"{path} is not in a bimfs mount")
    os.setxattr(path, PINNED_XATTR, value)


def _in_bimfs(path: Path) -> bool:
    try:
        os.getxattr(_mountpoint(path), STATUS_XATTR)
    except OSError:
        return False
    return True


def pin(path: Path) -> None:
    """Pin ``path``; one clear line when it does not fit the cache budget."""
    try:
        _set(path, b"1")
    except PinError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise PinError(_over_budget(path)) from None
        if exc.errno == errno.EINVAL:
            raise PinError(f"{path}: only documents and their folders can be pinned") from None
        raise PinError(f"{path}: {exc.strerror}") from None


def _over_budget(path: Path) -> str:
    size = _tree_size(path)
    pinned, budget = 0, 0
    try:
        status = json.loads(os.getxattr(_mountpoint(path), STATUS_XATTR))
        pinned = sum(p.get("bytes", 0) for p in status.get("pins", []))
        budget = status.get("cache", {}).get("budget", 0)
    except (OSError, ValueError, AttributeError):
        pass
    return (
        f"{path} holds {_human(size)}; with the {_human(pinned)} pinned already that is more "
        f"than the cache budget of {_human(budget)}: unpin something, or mount with a larger "
        f"--cache-size"
    )


def _tree_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != "versions"]
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def unpin(path: Path) -> None:
    """Unpin ``path``; says which pin covers it when it is pinned only through a folder."""
    path = path.absolute()
    try:
        _set(path, b"0")
    except PinError:
        raise
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            through = progress(path).get("path", "a folder above it")
            raise PinError(f"{path} is pinned through {through}: unpin that") from None
        raise PinError(f"{path}: {exc.strerror}") from None
    print(f"unpinned {path}")


def progress(path: Path) -> dict[str, Any]:
    """The progress of the pin covering ``path`` (empty when there is none)."""
    try:
        data = json.loads(os.getxattr(path, PIN_XATTR))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return {}
        raise PinError(f"{path}: cannot read its pin ({exc.strerror})") from None
    except ValueError:
        raise PinError(f"{path}: the mount answered no pin progress") from None
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------ waiting


def _line(path: Path, p: dict[str, Any]) -> str:
    state = "complete" if p.get("complete") else "downloading"
    text = (
        f"{path}: {p.get('cached_files', 0)}/{p.get('files', 0)} documents, "
        f"{_human(p.get('cached_bytes', 0))} of {_human(p.get('bytes', 0))}, {state}"
    )
    if p.get("error") and not p.get("complete"):
        text += f" ({p['error']})"
    return text


def wait_complete(paths: list[Path]) -> bool:
    """Show the downloads of ``paths`` until each pin is complete; False (with one line per
    path) when one stopped making progress on an error (the pin stays and keeps trying)."""
    if sys.stdout.isatty():
        return _wait_rich(paths)
    return _wait_plain(paths)


def _stalled(p: dict[str, Any], last: tuple[int, float], now: float) -> bool:
    return bool(p.get("error")) and not p.get("complete") and now - last[1] > STALL_TIMEOUT


def _track(paths: list[Path], report: Any) -> bool:
    """Poll each path's progress and call ``report(i, progress)``; True once all complete."""
    last = {i: (-1, time.monotonic()) for i in range(len(paths))}
    pending = set(range(len(paths)))
    ok = True
    while pending:
        now = time.monotonic()
        for i in sorted(pending):
            p = progress(paths[i])
            report(i, p)
            got = int(p.get("cached_bytes", 0))
            if got != last[i][0]:
                last[i] = (got, now)
            if p.get("complete"):
                pending.discard(i)
            elif not p or _stalled(p, last[i], now):
                print(
                    f"bimfs pin: {paths[i]}: pinned, not all downloaded yet: "
                    f"{p.get('error') or 'the mount dropped the pin'} (the mount keeps trying)",
                    file=sys.stderr,
                )
                pending.discard(i)
                ok = False
        if pending:
            time.sleep(POLL_INTERVAL)
    return ok


def _wait_plain(paths: list[Path]) -> bool:
    printed: dict[int, float] = {}

    def report(i: int, p: dict[str, Any]) -> None:
        now = time.monotonic()
        if p.get("complete") or now - printed.get(i, -PLAIN_INTERVAL) >= PLAIN_INTERVAL:
            print(_line(paths[i], p), flush=True)
            printed[i] = now

    return _track(paths, report)


def _wait_rich(paths: list[Path]) -> bool:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        tasks = [bar.add_task(p.name or str(p), total=None, files="") for p in paths]

        def report(i: int, p: dict[str, Any]) -> None:
            files = f"{p.get('cached_files', 0)}/{p.get('files', 0)} docs"
            bar.update(
                tasks[i], total=p.get("bytes") or None, completed=p.get("cached_bytes", 0),
                files=files,
            )  # fmt: skip

        ok = _track(paths, report)
    for path in paths:
        p = progress(path)
        if p.get("complete"):
            print(_line(path, p))
    return ok
