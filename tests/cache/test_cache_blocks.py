"""Property tests of the filled-block bookkeeping against a plain set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bimfs.cache.blocks import BlockSet

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 199), st.integers(0, 0)),
        st.tuples(st.just("range"), st.integers(-5, 205), st.integers(-5, 205)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 200),
    operations=ops,
    queries=st.lists(st.tuples(st.integers(-3, 210), st.integers(-3, 210)), max_size=10),
)
def test_blockset_matches_a_set(
    n: int, operations: list[tuple[str, int, int]], queries: list[tuple[int, int]]
) -> None:
    bs = BlockSet(n)
    filled: set[int] = set()
    for op, x, y in operations:
        if op == "add":
            if x >= n:
                with pytest.raises(IndexError):
                    bs.add(x)
                continue
            assert bs.add(x) == (x not in filled)
            filled.add(x)
        else:
            lo, hi = max(x, 0), min(y, n)
            new = {i for i in range(lo, hi)} - filled
            assert bs.add_range(x, y) == len(new)
            filled |= new
        assert bs.count == len(filled) == len(bs)
        assert bs.full == (len(filled) == n)
    for i in range(-2, n + 2):
        assert (i in bs) == (i in filled)
    for a, b in [(0, None), *queries]:
        lo = max(a, 0)
        hi = n if b is None else min(b, n)
        missing = [i for i in range(lo, hi) if i not in filled]
        present = [i for i in range(lo, hi) if i in filled]
        assert bs.first_missing(a, b) == (missing[0] if missing else None)
        assert bs.first_present(a, b) == (present[0] if present else None)
    restored = BlockSet(n, bs.to_bytes())
    assert restored.to_bytes() == bs.to_bytes()
    assert restored.count == bs.count


def test_blockset_rejects_bad_maps() -> None:
    with pytest.raises(ValueError):
        BlockSet(3, b"\x00\x01")
    with pytest.raises(ValueError):
        BlockSet(2, b"\x00\x02")
    with pytest.raises(ValueError):
        BlockSet(-1)


def test_empty_blockset_is_full() -> None:
    bs = BlockSet(0)
    assert bs.full
    assert bs.first_missing() is None
