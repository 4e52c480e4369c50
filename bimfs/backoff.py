"""Exponential backoff: how long to wait before trying again something that failed.

One computation for every retry loop (the API client's requests and token grants, the content
cache's download streams, the background uploader), each with its own base, cap and jitter. This
module sits in the bottom layer with ``bimfs.config``: every other layer may import it.
"""

from __future__ import annotations

import math
import random

__all__ = ["FULL_JITTER", "backoff"]

FULL_JITTER = (0.0, 1.0)
"""The ``jitter`` of "full jitter": any delay from zero up to the exponential ceiling."""

_MAX_DOUBLINGS = 30  # 2**30 times any sensible base is past every cap: stop doubling there


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float = math.inf,
    jitter: tuple[float, float] | None = None,
) -> float:
    """Seconds to wait after failure number ``attempt + 1`` (``attempt`` counts from 0).

    The ceiling is ``base * 2**attempt``, at most ``cap``. With ``jitter=(low, high)`` the
    ceiling is multiplied by a uniform random factor from ``low`` to ``high``, so that clients
    that failed together do not all come back at once (``FULL_JITTER`` spreads them over the
    whole interval up to the ceiling); without it the delay is the ceiling itself.
    """
    ceiling = min(cap, base * 2 ** min(attempt, _MAX_DOUBLINGS))
    if jitter is None:
        return ceiling
    low, high = jitter
    return ceiling * random.uniform(low, high)
