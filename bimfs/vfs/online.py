"""Online or offline: no filesystem call waits on the network for long.

Every call the filesystem makes to the server on behalf of a program goes through
``Connectivity.bounded`` (the ``BoundedRemote`` proxy): it may take at most ``bound`` seconds
(about 10). A call that cannot reach the server (refused, reset, no answer within the bound)
switches the mount to **offline**; while offline, such calls fail at once with ``Offline``
(``ENETUNREACH``) instead of trying, and the callers fall back to what they know: listings are
served from the last known state, cached content is read as usual, saves queue in the journal.
A background probe asks the server every few seconds; when it answers, the mount is online
again and the queued uploads are sent at once (each once: see ``Uploads.upload``).

Uploads themselves are not bounded (a large file takes as long as it takes); they are paused
while offline and resumed when the server is back.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import trio

from bimfs.api.errors import ApiError, ApiTimeoutError, TransportError
from bimfs.backoff import backoff
from bimfs.vfs.background import Background
from bimfs.vfs.errors import FsError
from bimfs.vfs.remote import Remote

log = logging.getLogger(__name__)

T = TypeVar("T")

BOUND = 10.0  # seconds a filesystem call may wait for the server
PROBE_FIRST = 2.0
PROBE_CAP = 30.0


class Offline(FsError):
    """The server cannot be reached now (the mount is offline)."""

    def __init__(self, message: str = "the server cannot be reached (working offline)") -> None:
        super().__init__(errno.ENETUNREACH, message)


def unreachable(exc: BaseException) -> bool:
    """Whether an error means the server could not be reached (rather than refused)."""
    return isinstance(exc, (TransportError, ApiTimeoutError, trio.TooSlowError, Offline))


class Connectivity:
    """The mount's view of the server: online, or offline since when."""

    def __init__(
        self,
        remote: Remote,
        background: Background,
        *,
        bound: float = BOUND,
        on_change: Callable[[bool], None] = lambda online: None,
    ) -> None:
        self.remote = remote
        self.background = background
        self.bound = bound
        self.on_change = on_change  # called with True when back online, False when offline
        self.offline_since: float | None = None  # wall clock

    @property
    def online(self) -> bool:
        return self.offline_since is None

    def describe(self) -> str:
        """``online`` or ``offline since <time>`` (for ``bimfs status``)."""
        if self.offline_since is None:
            return "online"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.offline_since))
        return f"offline since {stamp}"

    def went_offline(self, exc: BaseException | str | None = None) -> None:
        if self.offline_since is not None:
            return
        self.offline_since = time.time()
        log.warning(
            "the server cannot be reached (%s): working offline; saves are kept and sent later",
            exc or "no answer",
        )
        self.on_change(False)
        self.background.spawn(self._probe)

    def reached(self) -> None:
        if self.offline_since is None:
            return
        log.warning("the server answers again: back online, sending what was saved meanwhile")
        self.offline_since = None
        self.on_change(True)

    async def bounded(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` within the bound; ``Offline`` when the server cannot
        be reached (at once while offline)."""
        if self.offline_since is not None:
            raise Offline()
        try:
            with trio.fail_after(self.bound):
                result = await fn(*args, **kwargs)
        except (ApiError, trio.TooSlowError) as exc:
            if not unreachable(exc):
                raise
            self.went_offline(exc)
            raise Offline() from exc
        return result

    async def _probe(self) -> None:
        """While offline: ask the server now and then; back online when it answers."""
        attempt = 0
        while self.offline_since is not None:
            await trio.sleep(backoff(attempt, base=PROBE_FIRST, cap=PROBE_CAP))
            attempt += 1
            try:
                with trio.fail_after(self.bound):
                    await self.remote.get_teams()
            except (ApiError, trio.TooSlowError) as exc:
                if not unreachable(exc):
                    self.reached()  # it answered, if only with an error
                continue
            self.reached()


class BoundedRemote:
    """A ``Remote`` whose calls go through ``Connectivity.bounded`` (downloads excepted: their
    reads are bounded where they wait, see ``Reads.read``)."""

    def __init__(self, remote: Remote, connectivity: Connectivity) -> None:
        self._remote = remote
        self._connectivity = connectivity

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._remote, name)
        if name == "open_download" or not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._connectivity.bounded(attr, *args, **kwargs)

        return call


def bounded_remote(remote: Remote, connectivity: Connectivity) -> Remote:
    return cast(Remote, BoundedRemote(remote, connectivity))
