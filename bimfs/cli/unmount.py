"""``bimfs unmount``: send every pending save, then unmount."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bimfs.cli.common import LIST_LIMIT, CliError
from bimfs.cli.progress import DrainView
from bimfs.cli.settings import mountpoint_of
from bimfs.cli.status import SYNC_XATTR, _counts, _first_unsent, _label, read_status


def cmd_unmount(args: argparse.Namespace) -> int:
    from bimfs.fuse.mount import clear_dead_mount

    mountpoint = mountpoint_of(args.mountpoint, args.config)
    cleared = clear_dead_mount(mountpoint)
    if cleared:
        print(f"bimfs: {cleared}", file=sys.stderr)
        return 0
    status = read_status(mountpoint)
    deadline = time.monotonic() + args.timeout
    if status.get("pending", 0):
        # Everything now, for as long as this command waits.
        try:
            os.setxattr(mountpoint, SYNC_XATTR, f"{args.timeout:g}".encode())
        except OSError as exc:
            raise CliError(f"cannot ask {mountpoint} to send its uploads: {exc.strerror}") from None
    polls = 0
    view = DrainView(status)
    try:
        while status.get("pending", 0) and time.monotonic() < deadline:
            # Quick at first; a long wait (thousands of saves) asks about once a second.
            interval = min(1.0, 0.2 * 1.1**polls)
            polls += 1
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            status = read_status(mountpoint)
            view.update(status)
    finally:
        view.close()
    pending = status.get("pending", 0)
    if pending:
        first = _first_unsent(mountpoint, status, LIST_LIMIT, {"pending", "uploading"})
        print(
            f"bimfs: {pending} upload(s) still pending after {args.timeout:g} s; not unmounted:",
            file=sys.stderr,
        )
        for path in first:
            print(f"  {path}", file=sys.stderr)
        if pending > len(first):
            print(
                f"  ... and {pending - len(first)} more (bimfs status --all {mountpoint})",
                file=sys.stderr,
            )
        return 1
    failed = status.get("failed", [])
    for f in failed[:LIST_LIMIT]:
        print(
            f"bimfs: kept in the journal (failed): {_label(f)}: {f.get('reason')}",
            file=sys.stderr,
        )
    more = _counts(status).get("failed", len(failed)) - min(len(failed), LIST_LIMIT)
    if more > 0:
        print(f"bimfs: and {more} more failed saves kept in the journal", file=sys.stderr)
    pid = status.get("pid")
    result = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CliError(f"fusermount3 -u failed: {result.stderr.strip()}")
    if isinstance(pid, int):
        _wait_exit(pid, timeout=max(5.0, deadline - time.monotonic()))
    return 0


def _wait_exit(pid: int, timeout: float) -> None:
    """Wait until the mount process has exited (or is a zombie waiting for its parent)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                state = fh.read().rsplit(")", 1)[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
