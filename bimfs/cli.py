"""The ``bimfs`` command: argv -> Config, logging set-up, and the only ``sys.exit``.

Errors reach the user as one line on stderr (what failed, what to do) and a non-zero exit.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bimfs import __version__
from bimfs.config import (
    DEFAULT_CACHE_SIZE,
    ENV_URLS,
    Config,
    ConfigError,
    check_api_url,
    default_cache_dir,
    parse_size,
)
from bimfs.emulator.ready import EmulatorStartError, wait_ready

# The mount's status: a bounded summary, and its detail in pages (see bimfs/vfs/status.py).
STATUS_XATTR = "user.bimfs.status"
STATUS_PAGE_XATTR = "user.bimfs.status.{after}"
SYNC_XATTR = "user.bimfs.sync"
# The largest value an extended attribute may have (XATTR_SIZE_MAX).
XATTR_SIZE_MAX = 65536
# How many pending or failed saves `bimfs status` and `bimfs unmount` name (without --all).
LIST_LIMIT = 10
# How long `bimfs demo` waits for the emulator it started (seeding the demo data included).
DEMO_START_TIMEOUT = 120.0
log = logging.getLogger("bimfs")


class CliError(Exception):
    """A one-line error for the user."""


# ---------------------------------------------------------------------------- parsing


def _api_url(args: argparse.Namespace) -> str:
    if getattr(args, "api_url", None):
        return check_api_url(args.api_url)
    return ENV_URLS[getattr(args, "env", None) or "prod"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bimfs", description="Mount a Bimplus account as a filesystem."
    )
    parser.add_argument("--version", action="version", version=f"bimfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    mount = sub.add_parser("mount", help="mount a Bimplus account")
    mount.add_argument("mountpoint", type=Path)
    _add_api_args(mount)
    mount.add_argument("--team", metavar="SLUG", help="mount one team as the root")
    mount.add_argument("--token-file", type=Path, metavar="FILE")
    mount.add_argument("--token-type", default="BimPlus", choices=["BimPlus", "Bearer"])
    mount.add_argument("--cache-dir", type=Path, metavar="DIR")
    mount.add_argument("--cache-size", default=None, metavar="SIZE", help="e.g. 10G (default)")
    mount.add_argument("--dir-ttl", type=float, default=30.0, metavar="SECONDS")
    mount.add_argument("--write-back-delay", type=float, default=2.0, metavar="SECONDS")
    mount.add_argument("--local-only", action="append", default=[], metavar="PATTERN")
    mount.add_argument("--read-only", action="store_true")
    mount.add_argument(
        "--offline-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a filesystem call waits for the server before the mount works offline",
    )
    mount.add_argument(
        "--on-conflict",
        choices=["copy", "newest-wins"],
        default="copy",
        help="a save based on an older version than the server's newest: keep it as a conflict"
        " copy next to the document (default), or make it the newest version",
    )
    mount.add_argument(
        "--show-versions",
        action="store_true",
        help="list versions/ in directory listings (it is always reachable by name)",
    )
    mount.add_argument(
        "--no-stream-uploads",
        dest="stream_uploads",
        action="store_false",
        help="send large new files only after close, not while they are written",
    )
    mount.add_argument("--foreground", "-f", action="store_true")
    mount.add_argument(
        "-o", dest="fuse_options", action="append", default=[], metavar="FUSE_OPTIONS"
    )
    mount.add_argument("--uid", type=int, default=None)
    mount.add_argument("--gid", type=int, default=None)
    mount.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long SIGTERM/unmount waits for pending uploads",
    )
    _add_log_args(mount)

    unmount = sub.add_parser("unmount", help="send pending uploads, then unmount")
    unmount.add_argument("mountpoint", type=Path)
    unmount.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")

    status = sub.add_parser("status", help="transfers, pending and failed uploads, cache use")
    status.add_argument("mountpoint", type=Path, nargs="?")
    status.add_argument("--json", action="store_true", help="everything, machine-readable")
    status.add_argument(
        "--all",
        action="store_true",
        help=f"list every pending and failed save (default: the first {LIST_LIMIT})",
    )

    demo = sub.add_parser("demo", help="start the emulator with sample data and mount it")
    demo.add_argument("mountpoint", type=Path, nargs="?", default=Path("/tmp/bimfs-demo"))
    demo.add_argument("--data-dir", type=Path, default=None)
    demo.add_argument(
        "--exit",
        action="store_true",
        help="show the tree and stop (default when stdin is not a terminal)",
    )
    _add_log_args(demo)

    from bimfs.pin_cmd import add_pin_parsers

    add_pin_parsers(sub)
    try:
        from bimfs.login import add_login_parser
    except ImportError:  # pragma: no cover - login is part of the package
        pass
    else:
        add_login_parser(sub)
    return parser


def _add_api_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--api-url", metavar="URL")
    group.add_argument("--env", choices=sorted(ENV_URLS))


def _add_log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--log-file", type=Path)


def config_from_args(args: argparse.Namespace) -> Config:
    api_url = _api_url(args)
    mountpoint = args.mountpoint.absolute()
    return Config(
        mountpoint=mountpoint,
        api_url=api_url,
        cache_dir=(args.cache_dir or default_cache_dir(api_url)).absolute(),
        team=args.team,
        token_file=args.token_file.absolute() if args.token_file else None,
        token_type=args.token_type,
        cache_size=parse_size(args.cache_size) if args.cache_size else DEFAULT_CACHE_SIZE,
        dir_ttl=args.dir_ttl,
        write_back_delay=args.write_back_delay,
        local_only=tuple(args.local_only),
        read_only=args.read_only,
        foreground=args.foreground,
        fuse_options=tuple(args.fuse_options),
        uid=args.uid if args.uid is not None else os.getuid(),
        gid=args.gid if args.gid is not None else os.getgid(),
        drain_timeout=args.drain_timeout,
        stream_uploads=args.stream_uploads,
        show_versions=args.show_versions,
        on_conflict=args.on_conflict,
        offline_after=args.offline_after,
    )


def setup_logging(args: argparse.Namespace, *, to_stderr: bool) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handlers: list[logging.Handler] = []
    if args.log_file:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handlers.append(logging.StreamHandler(os.fdopen(fd, "a", buffering=1)))
    elif to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=handlers or [logging.NullHandler()], force=True)
    # pyfuse3 reports a reply to a request the kernel already dropped (a file closed while
    # unmounting) as an error; nothing is lost then, so it is kept for debugging only.
    logging.getLogger("pyfuse3").addFilter(_quiet_vanished_replies)
    # Request lines carry URLs; keep the HTTP libraries quiet unless debugging them.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _quiet_vanished_replies(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if "fuse_reply_" in message and "No such file or directory" in message:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("pyfuse3").isEnabledFor(logging.DEBUG)
    return True


# ---------------------------------------------------------------------------- mount


def cmd_mount(args: argparse.Namespace) -> int:
    from bimfs.fuse.mount import MountError, check_fuse_available, check_mountpoint

    config = config_from_args(args)
    check_fuse_available()
    notice = check_mountpoint(config.mountpoint)
    if notice:
        print(f"bimfs: {notice}", file=sys.stderr)
    if config.foreground:
        setup_logging(args, to_stderr=True)
        return _run_mount(config, ready=lambda note: None)  # the note is logged to stderr
    # Daemon: the child mounts and reports readiness (or one error line) through a pipe.
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setsid()
        _detach_stdio()
        if args.log_file is None:
            args.log_file = config.cache_dir / "bimfs.log"
        setup_logging(args, to_stderr=False)

        def ready(note: str | None) -> None:
            os.write(write_fd, f"ok {note or ''}".strip().encode() + b"\n")
            os.close(write_fd)

        code = 1
        try:
            code = _run_mount(config, ready=ready, error_fd=write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.readline().decode("utf-8", "replace")
    if message.startswith("ok"):
        note = message[2:].strip()
        if note:
            print(f"bimfs: {note}", file=sys.stderr)
        return 0
    _, status = os.waitpid(pid, 0)
    line = message.strip() or f"the mount process exited ({status})"
    raise MountError(line)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _run_mount(config: Config, ready: Any, error_fd: int | None = None) -> int:
    import trio

    from bimfs.fuse.mount import MountError, serve

    try:
        trio.run(serve, config, ready)
    except MountError as exc:
        if error_fd is not None:
            os.write(error_fd, f"bimfs: {exc}\n".encode())
            return 1
        raise
    except KeyboardInterrupt:
        return 130
    return 0


# ---------------------------------------------------------------------------- status / unmount


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


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


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
    mountpoints = [args.mountpoint.absolute()] if named else bimfs_mounts()
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


def cmd_unmount(args: argparse.Namespace) -> int:
    from bimfs.fuse.mount import clear_dead_mount

    mountpoint = args.mountpoint.absolute()
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
    while status.get("pending", 0) and time.monotonic() < deadline:
        # Quick at first; a long wait (thousands of saves) asks about once a second.
        interval = min(1.0, 0.2 * 1.1**polls)
        polls += 1
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        status = read_status(mountpoint)
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


# ---------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the emulator with sample data, mount it, show the tree."""
    import secrets
    import tempfile

    mountpoint = args.mountpoint.absolute()
    mountpoint.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "bimfs-demo-data"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_file = data_dir / "token"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bimfs.emulator",
            "--seed",
            "demo",
            "--port",
            "0",
            "--data-dir",
            str(data_dir / "server"),
            "--token-ttl",
            "86400",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        try:
            api_url = wait_ready(emulator, DEMO_START_TIMEOUT)
        except EmulatorStartError as exc:
            raise CliError(f"the emulator did not start: {exc}") from None
        print(f"emulator: {api_url}  (user demo@bimfs.test, password demo)")
        _demo_token(api_url, token_file, secrets.token_hex(16))
        mount_cmd = [
            sys.executable,
            "-m",
            "bimfs",
            "mount",
            str(mountpoint),
            "--api-url",
            api_url,
            "--token-file",
            str(token_file),
            "--cache-dir",
            str(data_dir / "cache"),
        ]
        if args.verbose:
            mount_cmd.append("-v")
        subprocess.run(mount_cmd, check=True)
        print(f"mounted at {mountpoint}\n")
        _print_tree(mountpoint)
        interactive = sys.stdin.isatty() and not args.exit
        if interactive:
            print(f"\nexplore {mountpoint} in another terminal; press Ctrl-C here to stop.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                print()
        subprocess.run([sys.executable, "-m", "bimfs", "unmount", str(mountpoint)], check=False)
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()
    return 0


def _demo_token(api_url: str, token_file: Path, client_id: str) -> None:
    """Log the demo user in (legacy login) and keep the token in a 0600 file."""
    import urllib.request

    body = json.dumps(
        {
            "user_id": "demo@bimfs.test",
            "password": "demo",
            "application_id": "bimfs-demo",
            "client_id": client_id,
        }
    ).encode()
    request = urllib.request.Request(
        f"{api_url}/authorize",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        token = json.load(answer)["access_token"]
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)


def _print_tree(root: Path, max_entries: int = 200) -> None:
    shown = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts)
        if rel.parts and rel.parts[-1] == "versions":
            dirnames[:] = []
        indent = "  " * depth
        if rel.parts:
            print(f"{'  ' * (depth - 1)}{rel.parts[-1]}/")
        for name in sorted(filenames):
            try:
                size = os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                size = -1
            print(f"{indent}{name}  ({_human(size)})")
            shown += 1
            if shown >= max_entries:
                print(f"{indent}...")
                return


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bimfs.fuse.mount import MountError

    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "unmount":
            return cmd_unmount(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command in ("pin", "unpin"):
            from bimfs.pin_cmd import run_pin

            return run_pin(args)
        if args.command == "login":
            from bimfs.login import run_login

            return run_login(args)
    except (CliError, ConfigError, MountError) as exc:
        message = str(exc)
        print(message if message.startswith("bimfs:") else f"bimfs: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except subprocess.CalledProcessError as exc:
        print(
            f"bimfs: {' '.join(map(str, exc.cmd[:4]))} failed ({exc.returncode})", file=sys.stderr
        )
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
