"""The one exponential backoff computation."""

from __future__ import annotations

import random

import pytest

from bimfs.backoff import FULL_JITTER, backoff


def test_doubles_from_base_up_to_the_cap() -> None:
    assert [backoff(n, base=0.5) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff(n, base=1.0, cap=5.0) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_huge_attempt_numbers_stay_finite() -> None:
    assert backoff(10_000, base=0.5, cap=30.0) == 30.0
    assert backoff(10_000, base=0.5) == 0.5 * 2**30


@pytest.mark.parametrize("jitter", [FULL_JITTER, (0.75, 1.25), (0.8, 1.2)])
def test_jitter_multiplies_the_ceiling_by_a_uniform_factor(jitter: tuple[float, float]) -> None:
    low, high = jitter
    delays = [backoff(3, base=1.0, cap=6.0, jitter=jitter) for _ in range(500)]
    assert all(6.0 * low <= d <= 6.0 * high for d in delays)
    assert min(delays) < 6.0 * (low + (high - low) / 4)
    assert max(delays) > 6.0 * (high - (high - low) / 4)


def test_jitter_draws_like_random_uniform() -> None:
    """Same random state, same delay as ``random.uniform`` over the capped ceiling."""
    state = random.getstate()
    expected = [random.uniform(0.0, 4.0), 4.0 * random.uniform(0.75, 1.25)]
    random.setstate(state)
    got = [
        backoff(3, base=0.5, cap=30.0, jitter=FULL_JITTER),
        backoff(3, base=0.5, cap=30.0, jitter=(0.75, 1.25)),
    ]
    assert got == expected
