"""``bimfs status --watch``: the status, refreshed in place until Ctrl-C (which exits 0).

On a terminal a ``rich`` live view (a table of transfers per mount, then the saves waiting and
failed, the cache); otherwise the plain ``bimfs status`` text at every refresh, followed by an
empty line (with ``--json``, one JSON document per line). ``--count N`` stops after N refreshes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bimfs.cli.common import LIST_LIMIT, CliError, human
from bimfs.cli.settings import mountpoint_of
from bimfs.cli.status import _counts, _label, bimfs_mounts, format_status, read_status


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise CliError("--interval must be more than 0 seconds")
    named = mountpoint_of(args.mountpoint, args.config) if args.mountpoint else None
    live = sys.stdout.isatty() and not args.json
    try:
        if live:
            console = Console()
            with Live(console=console, auto_refresh=False, transient=False) as view:
                for snapshot in _snapshots(named, args):
                    view.update(_render(snapshot), refresh=True)
        else:
            for snapshot in _snapshots(named, args):
                if args.json:
                    print(json.dumps([s for s in snapshot if isinstance(s, dict)]), flush=True)
                else:
                    print(_plain(snapshot) + "\n", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def _snapshots(named: Path | None, args: argparse.Namespace) -> Any:
    """Every ``--interval`` seconds: each mount's status summary, or the error reading it."""
    shown = 0
    while args.count is None or shown < args.count:
        if shown:
            time.sleep(args.interval)
        snapshot: list[dict[str, Any] | str] = []
        for mountpoint in [named] if named is not None else bimfs_mounts():
            try:
                snapshot.append(read_status(mountpoint))
            except CliError as exc:
                if named is not None:
                    raise
                snapshot.append(str(exc))
        shown += 1
        yield snapshot


def _plain(snapshot: list[dict[str, Any] | str]) -> str:
    if not snapshot:
        return "no bimfs mounts"
    return "\n".join(format_status(s) if isinstance(s, dict) else f"bimfs: {s}" for s in snapshot)


def _render(snapshot: list[dict[str, Any] | str]) -> Group:
    if not snapshot:
        return Group(Text("no bimfs mounts"))
    parts: list[Any] = []
    for status in snapshot:
        if not isinstance(status, dict):
            parts.append(Text(f"bimfs: {status}", style="red"))
            continue
        online = status.get("online")
        state = "" if online is None else ("  online" if online else "  offline")
        parts.append(Text(f"{status.get('mountpoint')}  ({status.get('api_url')}){state}"))
        table = Table(expand=False)
        for column in ("state", "file"):
            table.add_column(column)
        for column in ("sent", "size", "rate"):
            table.add_column(column, justify="right")
        for t in status.get("transfers", []):
            if t.get("state") in ("pending", "failed"):
                continue
            table.add_row(
                str(t.get("state", "?")),
                _label(t),
                human(t.get("sent", 0) or 0),
                human(t.get("size", 0) or 0),
                f"{human(t.get('rate', 0) or 0)}/s",
            )
        waiting = [u for u in status.get("uploads", []) if u.get("state") == "pending"]
        for u in waiting[:LIST_LIMIT]:
            table.add_row("pending", _label(u), "", human(u.get("size", 0) or 0), "")
        counts = _counts(status)
        lines = [
            f"pending saves: {status.get('pending', 0)}, "
            f"{human((status.get('counts') or {}).get('bytes', 0) or 0)} in the journal"
        ]
        if counts.get("failed"):
            lines.append(f"failed saves: {counts['failed']} (bimfs status --all)")
        cache = status.get("cache") or {}
        if cache:
            lines.append(
                f"cache: {human(cache.get('bytes_used', 0) or 0)} of "
                f"{human(cache.get('budget', 0) or 0)}"
            )
        parts += [table, Text("\n".join(lines)), Text("")]
    return Group(*parts)
