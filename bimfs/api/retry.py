"""When a failed request is tried again: the retry policy and the server's ``Retry-After``.

Idempotent calls are repeated on transport errors, timeouts, 5xx and 429; a request that must
not be duplicated (an upload) only when the server provably stored nothing. How long to wait
comes from :class:`RetryPolicy` (exponential backoff with full jitter), or from the server's
``Retry-After`` when it sent one, unless that is longer than ``MAX_RETRY_AFTER``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass

from bimfs.backoff import FULL_JITTER, backoff

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "parse_retry_after", "refused"]

MAX_RETRY_AFTER = 120.0
"""A ``Retry-After`` longer than this is not waited out inside a call: the error is raised with
``retry_after`` set, so the caller (the background uploader) can schedule the next try itself."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def refused(status: int) -> bool:
    """True for the statuses that mean "not now" (429, 5xx): the server stored nothing and the
    same request may succeed later."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits ``uniform(0, min(cap, base*2**n))``.

    ``retries`` is the number of repetitions after the first attempt.
    """

    retries: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before repetition number ``attempt + 1`` (``attempt`` from 0)."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return backoff(attempt, base=self.base, cap=self.cap, jitter=FULL_JITTER)

    @staticmethod
    def log_level(attempt: int) -> int:
        """Quiet for the first repetitions; a warning once they pile up."""
        if attempt <= 1:
            return logging.DEBUG
        if attempt <= 3:
            return logging.INFO
        return logging.WARNING

    def may_repeat(self, attempt: int, retry_after: float | None, limit: int | None = None) -> bool:
        """Whether a refused attempt (number ``attempt``, from 0) may be repeated within the
        call: repetitions are left (``limit``, by default ``retries``) and a ``Retry-After``, if
        any, is short enough to be waited out here."""
        left = (self.retries if limit is None else limit) > attempt
        return left and (retry_after is None or retry_after <= MAX_RETRY_AFTER)
