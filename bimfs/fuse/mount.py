"""Running a mount: pre-flight checks, pyfuse3 set-up, background services, clean shutdown."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from bimfs.api.auth import load_token_source
from bimfs.api.client import BimplusClient
from bimfs.api.errors import ApiError, AuthError, StatusError, TransportError, UnauthorizedError
from bimfs.api.models import Team
from bimfs.cache.content import ContentStore
from bimfs.cache.journal import Journal
from bimfs.config import Config
from bimfs.fuse.dead import ClearError, DeadMount, clear, dead_mount_type
from bimfs.fuse.operations import Operations
from bimfs.vfs.filesystem import Filesystem
from bimfs.vfs.known import KnownTree
from bimfs.vfs.online import unreachable

log = logging.getLogger(__name__)


class MountError(Exception):
    """A mount could not be started; the message is one line for the user."""


def check_fuse_available() -> None:
    """Fail early, with what to install, when FUSE cannot work on this machine."""
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is unavailable: /dev/fuse is missing (load the fuse module)")
    if shutil.which("fusermount3") is None:
        raise MountError("FUSE is unavailable: fusermount3 not found (apt-get install fuse3)")


def check_mountpoint(path: Path) -> str | None:
    """The mountpoint must be an existing, empty directory that is not mounted yet.

    A dead bimfs mount there (its process ended) is cleared first; the line saying so is
    returned. A dead mount of another filesystem is refused with what to run.
    """
    notice = None
    dead = dead_mount_type(path)
    if dead is not None:
        if not dead.is_bimfs:
            raise MountError(_dead_elsewhere(path, dead))
        notice = f"cleared the dead bimfs mount at {path} ({dead.reason}){_clear(path)}"
    try:
        exists = path.exists()
    except OSError as exc:
        raise MountError(f"cannot use mountpoint {path}: {exc.strerror or exc}") from None
    if not exists:
        raise MountError(f"mountpoint {path} does not exist (create it with mkdir)")
    if not path.is_dir():
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mountpoint")
    try:
        if any(path.iterdir()):
            raise MountError(f"mountpoint {path} is not empty")
    except PermissionError as exc:
        raise MountError(f"cannot read mountpoint {path}: {exc.strerror}") from exc
    return notice


def clear_dead_mount(path: Path) -> str | None:
    """For ``bimfs unmount``: clear a dead bimfs mount at ``path`` and return the line saying
    so; None when ``path`` is not a dead mount. ``MountError`` when it is a dead mount of
    another filesystem, or cannot be cleared."""
    dead = dead_mount_type(path)
    if dead is None:
        return None
    if not dead.is_bimfs:
        raise MountError(_dead_elsewhere(path, dead))
    how = _clear(path)
    return (
        f"cleared the dead bimfs mount at {path} (its process had ended){how}; saves it had "
        f"not sent yet are sent by the next mount with the same cache dir"
    )


def _clear(path: Path) -> str:
    try:
        lazy = clear(path)
    except ClearError as exc:
        raise MountError(f"{exc}; try: fusermount3 -u -z {path}") from None
    return " lazily, as something still uses it" if lazy else ""


def _dead_elsewhere(path: Path, dead: DeadMount) -> str:
    if dead.fstype == "unknown":
        return (
            f"{path} is inside a dead mount ({dead.reason}); unmount that one first "
            f"(fusermount3 -u on its mountpoint)"
        )
    return (
        f"{path} is a dead {dead.fstype} mount, not bimfs ({dead.reason}); "
        f"clear it with: fusermount3 -u {path}"
    )


def describe_preflight(exc: ApiError, api_url: str) -> str:
    """One line telling the user why the first API call failed and what to do."""
    if isinstance(exc, UnauthorizedError):
        return "the token was rejected by the API (expired? run `bimfs login` or renew it)"
    if isinstance(exc, AuthError):
        return str(exc)
    if isinstance(exc, TransportError):
        return f"cannot reach the API at {api_url}: {exc.message}"
    if isinstance(exc, StatusError):
        return f"the API at {api_url} answered {exc.message}"
    return f"the API at {api_url} failed: {exc}"


def fuse_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)
    options.update({"fsname=bimfs", "subtype=bimfs", "noatime"})
    if config.read_only:
        options.add("ro")
    for opt in config.fuse_options:
        for part in opt.split(","):
            if part:
                options.add(part)
    return options


Ready = Callable[[str | None], None]


@dataclass
class Watchers:
    """Who hears how the mount is doing (a service manager): ``progress`` gets the status
    summary once mounted and whenever its pending or failed saves change, ``stopping`` is called
    once shutting down starts (before pending saves are sent)."""

    progress: Callable[[dict[str, Any]], None] | None = None
    stopping: Callable[[], None] | None = None

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping()
            self.stopping = None


# How often the summary is looked at for ``Watchers.progress``.
PROGRESS_INTERVAL = 1.0


async def serve(config: Config, ready: Ready, watchers: Watchers | None = None) -> None:
    """Mount and serve until unmounted or signalled. Calls ``ready(note)`` once mounted
    (``note``: one line for the user, e.g. that the mount started offline, or None).

    Raises ``MountError`` (one line) when the mount cannot start.
    """
    keep_freed_memory()
    config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.cache_dir, 0o700)
    with _lock_cache_dir(config.cache_dir):
        await _serve(config, ready, watchers or Watchers())


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Have glibc's allocator keep freed memory for reuse rather than give it back at once.

    Reads pass through buffers of 128 KiB to 1 MiB (socket reads, cache file reads), allocated
    and freed thousands of times a second. With glibc's defaults such buffers are often mmap'd
    or the heap is trimmed below them, so each new one is fresh memory that the kernel faults
    in page by page (on a virtual machine that returns freed memory to its host, each fault also
    goes to the host): a cold 1 GiB read took 30 000 to 200 000 page faults, and up to 1.6
    times as long. With these thresholds the same few MiB are reused: about 3 000 faults. The
    cost is that the heap keeps its peak (the live buffers, a few tens of MiB). No-op without
    glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


@contextlib.contextmanager
def _lock_cache_dir(cache_dir: Path) -> Iterator[None]:
    """One mount per cache directory: two would upload the same journal twice."""
    fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MountError(
                f"cache directory {cache_dir} is in use by another mount (use --cache-dir)"
            ) from None
        yield
    finally:
        os.close(fd)


async def _first_listing(client: BimplusClient, config: Config) -> tuple[list[Team], str | None]:
    """The account's teams, from the server; when it cannot be reached and this cache dir
    has seen the account, the last known ones and one line saying the mount starts offline.
    Without a known tree the mount waits a little longer (three bounds) before giving up."""
    known: list[Team] | None = KnownTree(config.cache_dir, config.api_url).load(("teams",))
    bound = config.offline_after * (1 if known is not None else 3)
    try:
        with trio.fail_after(bound):
            return await client.get_teams(), None
    except (ApiError, trio.TooSlowError) as exc:
        if isinstance(exc, ApiError) and not unreachable(exc):
            raise MountError(describe_preflight(exc, config.api_url)) from None
        reason = exc.message if isinstance(exc, ApiError) else f"no answer within {bound:g} s"
        if known is None:
            raise MountError(f"cannot reach the API at {config.api_url}: {reason}") from None
        return known, (
            f"cannot reach the API at {config.api_url} ({reason}): mounted offline with "
            f"the last known listings; saves are kept and sent when it answers again"
        )


async def _serve(config: Config, ready: Ready, watchers: Watchers) -> None:
    try:
        auth = load_token_source(
            token_file=config.token_file,
            env=os.environ,
            api_url=config.api_url,
            config_dir=_config_dir(),
        )
    except AuthError as exc:
        raise MountError(str(exc)) from None
    async with BimplusClient(
        config.api_url, auth, token_type=config.token_type, timeout=config.request_timeout
    ) as client:
        teams, offline = await _first_listing(client, config)
        if config.team and config.team not in {t.slug for t in teams}:
            known = ", ".join(sorted(t.slug for t in teams)) or "none"
            raise MountError(f"no team with slug {config.team!r} (teams: {known})")
        content = ContentStore(
            config.cache_dir, config.cache_size, read_timeout=config.read_timeout
        )
        journal = Journal(config.cache_dir)
        fs = Filesystem(config, client, content, journal)
        ops = Operations(fs)
        check_fuse_available()
        try:
            pyfuse3.init(ops, str(config.mountpoint), fuse_options(config))
        except RuntimeError as exc:
            raise MountError(f"cannot mount {config.mountpoint}: {exc}") from None
        stop = _Stop()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(fs.run)
                if offline is not None:
                    fs.start_offline(offline)
                nursery.start_soon(ops.run_invalidator)
                nursery.start_soon(_watch_signals, fs, config, stop, watchers)
                ready(offline)
                log.info("mounted %s at %s", config.api_url, config.mountpoint)
                nursery.start_soon(_raise_readahead, config.mountpoint)
                if watchers.progress is not None:
                    nursery.start_soon(_report_progress, fs, watchers.progress)
                await pyfuse3.main()
                watchers.stop()
                # Unmounted by fusermount3 -u: send what is pending, bounded. After a signal the
                # drain already ran (bounded) before the unmount.
                if not stop.terminated and not await fs.drain(config.drain_timeout):
                    log.warning(
                        "uploads still pending at exit stay in %s and resume on the next mount",
                        config.cache_dir,
                    )
                fs.keep_unsaved()
                nursery.cancel_scope.cancel()
        finally:
            # After `fusermount3 -u` the kernel has already let go; after a signal we unmount.
            pyfuse3.close(unmount=stop.terminated)


READ_AHEAD_KB = 1024


async def _raise_readahead(mountpoint: Path) -> None:
    """Let the kernel read ahead 1 MiB at a time (128 KiB by default): eight times fewer read
    requests for a sequential reader. Needs root; silently skipped otherwise."""

    def tune() -> None:
        st = os.stat(mountpoint)  # answered by this process's FUSE loop, hence the thread
        knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
        if int(knob.read_text()) < READ_AHEAD_KB:
            knob.write_text(str(READ_AHEAD_KB))

    try:
        await trio.to_thread.run_sync(tune)
    except (OSError, ValueError) as exc:
        log.debug("kernel read-ahead left as it is: %s", exc)


class _Stop:
    terminated = False


async def _report_progress(fs: Filesystem, progress: Callable[[dict[str, Any]], None]) -> None:
    """Hand the summary to ``progress`` now and whenever the saves not on the server change."""
    last: tuple[Any, ...] | None = None
    while True:
        try:
            status = fs.status()
            counts = status.get("counts", {})
            now = (status.get("pending"), counts.get("bytes"), counts.get("failed"))
            if now != last:
                progress(status)
                last = now
        except Exception:  # reporting must never take the mount down
            log.warning("progress reports stopped", exc_info=True)
            return
        await trio.sleep(PROGRESS_INTERVAL)


async def _watch_signals(fs: Filesystem, config: Config, stop: _Stop, watchers: Watchers) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info(
                "received %s: sending pending uploads, then unmounting", signal.Signals(signum).name
            )
            watchers.stop()
            await fs.drain(config.drain_timeout)
            stop.terminated = True
            pyfuse3.terminate()
            return


def _config_dir() -> Path:
    from bimfs.api.auth import default_config_dir

    return default_config_dir()
