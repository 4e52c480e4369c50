"""Bookkeeping of which blocks of a cache file are filled.

One byte per block (0 = missing, 1 = filled) in a ``bytearray``: a 2 GiB file in 1 MiB blocks
needs 2 KiB, and every search (``first_missing``, ``first_present``) is a single
``bytearray.find`` running in C, so no operation is worse than linear in the number of blocks
and none is quadratic.
"""

from __future__ import annotations


class BlockSet:
    """The set of filled blocks ``0 <= i < n`` of one file."""

    __slots__ = ("_bits", "_count", "n")

    def __init__(self, n: int, data: bytes | None = None) -> None:
        if n < 0:
            raise ValueError("block count must not be negative")
        self.n = n
        if data is None:
            self._bits = bytearray(n)
            self._count = 0
        else:
            if len(data) != n or data.strip(b"\x00\x01"):
                raise ValueError("block map does not match the block count")
            self._bits = bytearray(data)
            self._count = self._bits.count(1)

    @property
    def count(self) -> int:
        """Number of filled blocks."""
        return self._count

    @property
    def full(self) -> bool:
        """True when every block is filled (also for an empty file)."""
        return self._count == self.n

    def __contains__(self, i: object) -> bool:
        return isinstance(i, int) and 0 <= i < self.n and self._bits[i] == 1

    def __len__(self) -> int:
        return self._count

    def add(self, i: int) -> bool:
        """Mark block ``i`` filled; True if it was missing."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self._bits[i]:
            return False
        self._bits[i] = 1
        self._count += 1
        return True

    def add_range(self, a: int, b: int) -> int:
        """Mark blocks ``[a, b)`` filled; returns how many were missing."""
        a, b = self._clip(a, b)
        if a >= b:
            return 0
        added = (b - a) - self._bits.count(1, a, b)
        self._bits[a:b] = b"\x01" * (b - a)
        self._count += added
        return added

    def first_missing(self, a: int = 0, b: int | None = None) -> int | None:
        """The lowest missing block in ``[a, b)``, or None when all are filled."""
        a, b = self._clip(a, b)
        i = self._bits.find(0, a, b) if a < b else -1
        return None if i < 0 else i

    def first_present(self, a: int = 0, b: int | None = None) -> int | None:
        """The lowest filled block in ``[a, b)``, or None when none is."""
        a, b = self._clip(a, b)
        i = self._bits.find(1, a, b) if a < b else -1
        return None if i < 0 else i

    def to_bytes(self) -> bytes:
        """The map as bytes, for ``BlockSet(n, data)`` to restore."""
        return bytes(self._bits)

    def _clip(self, a: int, b: int | None) -> tuple[int, int]:
        if b is None or b > self.n:
            b = self.n
        return max(a, 0), b
