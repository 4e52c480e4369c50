"""``bimfs mount``: arguments -> Config, logging, daemonising, serving."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from bimfs.cli.notify import Notifier
from bimfs.config import (
    DEFAULT_CACHE_SIZE,
    ENV_URLS,
    Config,
    check_api_url,
    default_cache_dir,
    parse_size,
)


def _api_url(args: argparse.Namespace) -> str:
    if getattr(args, "api_url", None):
        return check_api_url(args.api_url)
    return ENV_URLS[getattr(args, "env", None) or "prod"]


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
        pin_refresh=args.pin_refresh,
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


def cmd_mount(args: argparse.Namespace) -> int:
    from bimfs.fuse.mount import MountError, check_fuse_available, check_mountpoint

    config = config_from_args(args)
    check_fuse_available()
    notice = check_mountpoint(config.mountpoint)
    if notice:
        print(f"bimfs: {notice}", file=sys.stderr)
    notifier = Notifier.from_environment()
    if config.foreground:
        setup_logging(args, to_stderr=True)
        # The note (e.g. started offline) is logged to stderr by the mount itself.
        return _run_mount(config, lambda note: notifier.ready(), notifier)
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
            notifier.ready()

        code = 1
        try:
            code = _run_mount(config, ready, notifier, error_fd=write_fd)
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


def _run_mount(config: Config, ready: Any, notifier: Notifier, error_fd: int | None = None) -> int:
    import trio

    from bimfs.fuse.mount import MountError, Watchers, serve

    watchers = Watchers(progress=notifier.progress, stopping=notifier.stopping)
    try:
        trio.run(serve, config, ready, watchers)
    except MountError as exc:
        if error_fd is not None:
            os.write(error_fd, f"bimfs: {exc}\n".encode())
            return 1
        raise
    except KeyboardInterrupt:
        return 130
    return 0
