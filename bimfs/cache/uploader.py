"""The background uploader: sends journal entries once their file has been quiet for a while.

Scheduling (all times on the trio clock)
    An entry becomes due ``delay`` seconds after the uploader first saw it (``notify`` after a
    commit) and after the last ``touch`` of its key, whichever is later, and never while
    ``busy(key)`` says its file is still open for writing (even ``drain`` waits for that: the
    last close touches the key); a failed attempt pushes it back by an exponential backoff with
    jitter (at least the server's ``retry_after``, when the error carries one). Entries already
    in the journal when ``run`` starts are due at once: they waited long enough in the previous
    process. ``drain`` ignores the quiet period and any backoff that was running when it was
    called.

Order and limits
    At most ``max_parallel`` uploads run at once; entries of one key go strictly one at a time in
    commit order (the oldest unfinished, not failed, entry of a key is its only candidate), so a
    document's versions reach the server in the order they were saved. Among candidates that are
    due, the one due longest goes first (then the oldest save).

Cost
    The journal may hold 100 000 entries, and the scheduler wakes up after every commit and every
    finished upload, so a wake-up must not look at every entry. The uploader keeps each key's
    candidate (``_heads``) and a heap of (due time, seq, key) (``_queue``); a wake-up reads only
    the keys the journal reports as changed (``Journal.take_changes``) and pops what is due. Due
    times only ever move later on their own (a ``touch``, a backoff), so a heap item is checked
    when it comes up and pushed back when it is early; what makes entries due sooner (``drain``,
    ``retry``) re-queues them explicitly. ``run`` reads every key once at start.

Outcomes
    Success removes the entry (``journal.complete``). An error whose ``retryable`` is true puts
    it back to pending; the retries are logged at debug level and rise to warnings as they pile
    up. Any other error marks it failed with ``describe(exc)`` as reason, logs one warning, and
    keeps its content. ``trio.Cancelled`` (shutdown) leaves the entry pending for the next run and
    propagates. An entry found ``uploading`` at start (the process died mid-upload) goes back to
    pending; its ``attempts`` above 1 tell the upload callable to check whether it landed.

Journal trouble (a full or failing cache disk)
    An upload starts only once its attempt is recorded (``mark_uploading``); if the record
    cannot be written the entry waits, with a backoff of its own. An outcome that cannot be
    recorded leaves the entry ``uploading`` in the journal although no upload runs: such an entry
    is a candidate like a pending one (after the backoff), so it is sent again (and settled by
    the upload callable, its attempts say so) instead of being stuck until the next run. The
    first failure of a streak is logged (a full disk as a warning), and the recovery.

The uploader never reads the content itself: the upload callable streams ``entry.data_path``.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import trio

from bimfs.backoff import backoff
from bimfs.cache.errors import JournalEntryNotFoundError
from bimfs.cache.files import no_space
from bimfs.cache.journal import FAILED, PENDING, UPLOADING, Journal, JournalEntry

log = logging.getLogger(__name__)

UploadFn = Callable[[JournalEntry, Callable[[int], None]], Awaitable[Callable[[Path], bool] | None]]
"""``upload(entry, progress)``: send ``entry.data_path``; call ``progress(bytes_sent_so_far)``.
It may return ``take(data_path)`` for ``Journal.complete``: what to do with the sent content
instead of deleting it."""

# Retries are logged at debug level until this many attempts, then as warnings (and after that
# on every tenth attempt only, so a long outage does not flood the log).
_WARN_AFTER_ATTEMPTS = 3


@dataclass
class _Transfer:
    entry: JournalEntry
    started: float
    sent: int = 0

    def progress(self, sent: int) -> None:
        self.sent = sent


class _Head(NamedTuple):
    """A key's candidate: its oldest entry that is not failed, when that one is pending."""

    id: str
    seq: int
    queued: float  # the due time of its newest item in the queue


def is_retryable(exc: BaseException) -> bool:
    """True if trying again later can help: ``exc.retryable``, for a group all of its parts."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_retryable(e) for e in exc.exceptions)
    return bool(getattr(exc, "retryable", False))


class Uploader:
    """Sends the journal's pending entries in the background while ``run`` runs.

    ``notify``, ``touch`` and the other methods must be called from the trio thread.
    """

    def __init__(
        self,
        journal: Journal,
        upload: UploadFn,
        *,
        delay: float = 2.0,
        max_parallel: int = 2,
        describe: Callable[[BaseException], str] = str,
        max_backoff: float = 60.0,
        base_backoff: float = 1.0,
        busy: Callable[[str], bool] = lambda key: False,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.journal = journal
        self.upload = upload
        self.delay = delay
        self.max_parallel = max_parallel
        self.describe = describe
        self.max_backoff = max_backoff
        self.base_backoff = base_backoff
        self.busy = busy
        self._held: set[str] = set()  # due keys whose file is open for writing
        self._seen: dict[str, float] = {}  # entry id -> when this uploader first saw it
        self._touched: dict[str, float] = {}  # key -> last activity
        self._retry_at: dict[str, float] = {}  # entry id -> earliest next attempt
        self._active: dict[str, _Transfer] = {}
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._draining = 0
        # Scheduling state (see "Cost" above).
        self._heads: dict[str, _Head] = {}
        self._queue: list[tuple[float, int, str]] = []
        self._stale: set[str] = set()  # keys to look at again at the next wake-up
        self._requeue = False  # due times moved earlier: rebuild the queue
        self._paused = False
        self._resumed_seq = 0  # entries up to this seq were saved by an earlier process
        self._journal_failures = 0  # journal writes that failed in a row
        self._next_prune = -math.inf

    # -------------------------------------------------------------------------- interface

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Upload until cancelled. Cancelling leaves running uploads pending for next time."""
        self.journal.take_changes()  # from now on; every key is looked at below anyway
        for entry in self.journal.with_state(UPLOADING):
            log.info("resuming the interrupted upload of %s", entry.name)
            self._journal_call(self.journal.mark_pending, entry.id, 0.0)
        # Saved by an earlier process: the quiet period is long over.
        self._resumed_seq = self.journal.last_seq()
        self._stale.update(self.journal.keys())
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                wake = self._wake
                next_at = self._schedule(nursery)
                with trio.move_on_at(next_at):
                    await wake.wait()
                if self._wake.is_set():
                    self._wake = trio.Event()

    def notify(self) -> None:
        """Something was committed (or changed) in the journal: look again."""
        self._wakeup()

    def touch(self, key: str) -> None:
        """Activity on ``key`` (a write, an open for writing): restart its quiet period."""
        # No wake-up: a later due time never needs the scheduler to run earlier.
        self._touched[key] = trio.current_time()
        if key in self._held:
            # Held while open for writing: look at it again (the last close also notifies).
            self._held.discard(key)
            self._stale.add(key)

    async def wait_changed(self) -> None:
        """Wait until something changes: an upload starts or ends, something is committed."""
        await self._changed.wait()

    def retry(self, entry_id: str) -> None:
        """Try a failed entry again now (a user's request)."""
        self.journal.retry_failed(entry_id)
        self._retry_at.pop(entry_id, None)
        entry = self.journal.get(entry_id)
        if entry is not None:
            self._stale.add(entry.key)  # due sooner: queue it again
        self._wakeup()

    # A timeout argument rather than a cancel scope: callers (unmount, status) want a yes/no
    # answer when time is up, not an exception.
    async def wait_idle(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait until nothing is pending or uploading (failed entries do not count).

        Returns False if that did not happen within ``timeout`` seconds.
        """
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while not self._idle():
                await self._changed.wait()
        return self._idle()

    def pause(self) -> None:
        """Start no upload until ``resume`` (the server cannot be reached)."""
        self._paused = True

    def resume(self) -> None:
        """Start uploads again, what waited for a retry at once (the server is back)."""
        self._paused = False
        self._retry_at.clear()
        self._requeue = True
        self._wakeup()

    @property
    def paused(self) -> bool:
        return self._paused

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Send everything pending now, ignoring the quiet period; True if all got done."""
        self._draining += 1
        self._retry_at.clear()
        self._requeue = True
        self._wakeup()
        try:
            return await self.wait_idle(timeout)
        finally:
            self._draining -= 1

    def transfers(self) -> list[dict[str, Any]]:
        """Every journal entry with its upload state (see ``record``), oldest first.

        Reads the whole journal: ``bimfs status`` pages through it with ``record`` instead.
        """
        now = trio.current_time()
        return [self.record(entry, now) for entry in self.journal.entries()]

    def running(self) -> list[JournalEntry]:
        """The entries being uploaded now (``record`` tells their progress), oldest first."""
        return sorted((t.entry for t in self._active.values()), key=lambda e: e.seq)

    def record(self, entry: JournalEntry, now: float | None = None) -> dict[str, Any]:
        """One journal entry as ``bimfs status`` shows it.

        Keys: id, key, name, state (``pending``/``uploading``/``failed``), sent, size,
        rate (bytes/s), reason, attempts, next_attempt (seconds from now, pending only).
        """
        if now is None:
            now = trio.current_time()
        t = self._active.get(entry.id)
        sent = t.sent if t is not None else 0
        elapsed = now - t.started if t is not None else 0.0
        state = UPLOADING if t is not None and entry.state == PENDING else entry.state
        next_attempt = None
        if state == PENDING:
            due = self._due(entry.id, entry.key, entry.seq, now)
            next_attempt = max(0.0, due - now)
        return {
            "id": entry.id,
            "key": entry.key,
            "name": entry.name,
            "state": state,
            "sent": sent,
            "size": entry.size,
            "rate": sent / elapsed if elapsed > 0 else 0.0,
            "reason": entry.reason,
            "attempts": entry.attempts,
            "next_attempt": next_attempt,
        }

    # -------------------------------------------------------------------------- internals

    def _wakeup(self) -> None:
        self._wake.set()
        self._changed.set()
        self._changed = trio.Event()

    def _idle(self) -> bool:
        return not self._active and not self.journal.count(PENDING, UPLOADING)

    def _due(self, entry_id: str, key: str, seq: int, now: float) -> float:
        """When the entry may go (without side effects: ``_refresh`` records ``_seen``)."""
        retry = self._retry_at.get(entry_id, -math.inf)
        if self._draining:
            return retry
        seen = self._seen.get(entry_id)
        if seen is None:
            seen = -math.inf if seq <= self._resumed_seq else now
        quiet = max(seen, self._touched.get(key, -math.inf)) + self.delay
        return max(quiet, retry)

    def _schedule(self, nursery: trio.Nursery) -> float:
        """Start every upload that is due and allowed; return when to look again."""
        now = trio.current_time()
        keys, removed = self.journal.take_changes()
        for gone in removed:
            self._seen.pop(gone, None)
            self._retry_at.pop(gone, None)
        keys |= self._stale
        self._stale = set()
        for key in keys:
            self._refresh(key, now)
        if self._requeue or len(self._queue) > 2 * len(self._heads) + 64:
            self._rebuild_queue(now)
        if now >= self._next_prune:
            # Only memory: a key quiet for longer than the delay no longer postpones anything.
            for key in [k for k, t in self._touched.items() if t + self.delay < now]:
                del self._touched[key]
            self._next_prune = now + max(self.delay, 1.0)
        if self._paused:
            return math.inf  # offline: resume() wakes the scheduler
        queue = self._queue
        while queue:
            due, seq, key = queue[0]
            head = self._heads.get(key)
            if head is None or head.seq != seq:
                heapq.heappop(queue)  # that entry went, or is no longer the key's candidate
                continue
            real = self._due(head.id, key, seq, now)
            if real > due:
                # Touched or backed off since it was queued: put it where it belongs now.
                heapq.heapreplace(queue, (real, seq, key))
                self._heads[key] = head._replace(queued=real)
                continue
            if due > now:
                return due
            if len(self._active) >= self.max_parallel:
                return math.inf  # due but no free slot; a finishing upload wakes the scheduler
            heapq.heappop(queue)
            del self._heads[key]
            if self.busy(key):
                # Still open for writing: its last close touches the key and wakes us.
                self._held.add(key)
                continue
            entry = self.journal.get(head.id)
            if entry is None or entry.state == FAILED:
                self._stale.add(key)
                continue
            self._active[entry.id] = _Transfer(entry, now)
            nursery.start_soon(self._upload_one, entry.id)
        return math.inf

    def _refresh(self, key: str, now: float) -> None:
        """Look at ``key`` again: note when its entries were first seen, find its candidate."""
        head = None
        for entry_id, seq, state in self.journal.queue_of(key):
            if seq > self._resumed_seq:
                self._seen.setdefault(entry_id, now)
            if head is None and state != FAILED:
                head = (entry_id, seq, state)  # only the oldest unfinished entry of a key may go
        # The head may be "uploading" without being sent: its outcome could not be recorded.
        if head is None or head[0] in self._active:
            self._heads.pop(key, None)
            return
        entry_id, seq, _ = head
        due = self._due(entry_id, key, seq, now)
        known = self._heads.get(key)
        if known is not None and known.id == entry_id and known.queued <= due:
            return  # its item in the queue comes up in time; it is checked then
        self._heads[key] = _Head(entry_id, seq, due)
        heapq.heappush(self._queue, (due, seq, key))

    def _rebuild_queue(self, now: float) -> None:
        self._requeue = False
        queue = []
        for key, head in self._heads.items():
            due = self._due(head.id, key, head.seq, now)
            self._heads[key] = head._replace(queued=due)
            queue.append((due, head.seq, key))
        heapq.heapify(queue)
        self._queue = queue

    async def _upload_one(self, entry_id: str) -> None:
        transfer = self._active[entry_id]
        key = transfer.entry.key
        try:
            try:
                entry = self.journal.mark_uploading(entry_id)
            except JournalEntryNotFoundError:
                return  # superseded or discarded since it was scheduled
            except OSError as exc:
                self._journal_failed(entry_id, exc)
                return
            self._journal_written()
            transfer.entry = entry
            try:
                take = await self.upload(entry, transfer.progress)
            except Exception as exc:
                self._failed(entry, exc)
            except BaseException:
                # Shutdown (trio.Cancelled, possibly inside a group): resume next run.
                self._journal_call(self.journal.mark_pending, entry_id, 0.0)
                raise
            else:
                if self._journal_call(self.journal.complete, entry_id, take):
                    self._retry_at.pop(entry_id, None)
                    log.debug("uploaded %s (%d bytes)", entry.name, entry.size)
        finally:
            del self._active[entry_id]
            # Whatever happened (even nothing the journal recorded), the key's next candidate
            # is looked for at the next wake-up.
            self._stale.add(key)
            self._stale.add(transfer.entry.key)
            self._wakeup()

    def _failed(self, entry: JournalEntry, exc: Exception) -> None:
        if not is_retryable(exc):
            reason = self._describe(exc)
            if not self._journal_call(self.journal.mark_failed, entry.id, reason):
                return  # not recorded: tried again (after a backoff), and refused again
            log.warning(
                "upload of %s refused: %s (the content stays in %s until retried or discarded)",
                entry.name, reason, self.journal.dir,
            )  # fmt: skip
            return
        attempts = entry.attempts
        delay = backoff(
            attempts - 1, base=self.base_backoff, cap=self.max_backoff, jitter=(0.8, 1.2)
        )
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > delay:
            delay = float(retry_after)
        self._retry_at[entry.id] = trio.current_time() + delay
        self._journal_call(self.journal.mark_pending, entry.id, time.time() + delay)
        warn = attempts == _WARN_AFTER_ATTEMPTS or (
            attempts > _WARN_AFTER_ATTEMPTS and attempts % 10 == 0
        )
        log.log(
            logging.WARNING if warn else logging.DEBUG,
            "upload of %s failed (attempt %d): %s; retrying in %.0f s",
            entry.name, attempts, self._describe(exc), delay,
        )  # fmt: skip

    def _describe(self, exc: BaseException) -> str:
        try:
            return self.describe(exc)
        except Exception:
            # A faulty description must not lose the entry's failure: fall back to the raw text.
            return f"{type(exc).__name__}: {exc}"

    def _journal_call(self, fn: Callable[..., Any], entry_id: str, *args: Any) -> bool:
        """Journal bookkeeping of one entry that must not kill the uploader; False when it
        could not be written (the entry is tried again after a backoff)."""
        try:
            fn(entry_id, *args)
        except JournalEntryNotFoundError:
            pass  # discarded meanwhile: nothing left to record
        except OSError as exc:
            self._journal_failed(entry_id, exc)
            return False
        else:
            self._journal_written()
        return True

    def _journal_failed(self, entry_id: str, exc: OSError) -> None:
        """Writing the journal failed for an entry: report it at the first failure of a streak
        (a full disk as a warning), and try the entry again after a backoff."""
        self._journal_failures += 1
        failures = self._journal_failures
        if failures == 1:
            log.log(
                logging.WARNING if no_space(exc) else logging.ERROR,
                "could not update the upload journal in %s: %s (uploads wait until it can be"
                " written)",
                self.journal.dir, exc,
            )  # fmt: skip
        delay = backoff(
            min(failures, 30) - 1, base=self.base_backoff, cap=self.max_backoff, jitter=(0.8, 1.2)
        )
        self._retry_at[entry_id] = max(
            self._retry_at.get(entry_id, -math.inf), trio.current_time() + delay
        )

    def _journal_written(self) -> None:
        if self._journal_failures:
            self._journal_failures = 0
            log.info("the upload journal in %s can be written again", self.journal.dir)
