"""The entries of a server's list, taken one at a time: one hostile entry never fails the list.

An entry that cannot be used (not an object, no usable ``id``, a ``size`` that is not a byte
count) is skipped; text that cannot be encoded (a lone UTF-16 surrogate, which JSON allows as
``"\\udc80"``) is repaired with U+FFFD. Either is logged once per entry and call, not at every
listing: a bounded memory of what was reported keeps the log readable.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from bimfs.api.errors import ProtocolError

__all__ = ["MAX_SIZE", "has_surrogates", "parse_entries", "repair_text", "report_once"]

log = logging.getLogger("bimfs.api")

T = TypeVar("T")

MAX_SIZE = 2**63 - 1
"""The largest byte count a file can have (``off_t``)."""

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_REMEMBERED = 10_000


def has_surrogates(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (it cannot be written as UTF-8)."""
    return _SURROGATE.search(text) is not None


def repair_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (JSON decoding joins valid pairs,
    so any surrogate left in a ``str`` is a lone one)."""
    return _SURROGATE.sub(REPLACEMENT, text)


class _Reported:
    """What was already logged, the oldest forgotten first beyond ``_REMEMBERED``."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def first_time(self, key: tuple[str, str, str]) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return True


_reported = _Reported()


def describe(entry: Any) -> str:
    """A short, log-safe (ASCII) name of an entry: its id, else its JSON type."""
    if isinstance(entry, dict):
        ident = entry.get("id")
        if isinstance(ident, str) and ident:
            return "id " + ascii(ident[:80])
        for key in ("fileName", "name", "slug"):
            label = entry.get(key)
            if isinstance(label, str) and label:
                return f"an object without a usable id, {key} {label[:80]!a}"
        return "an object without a usable id"
    if entry is None:
        return "null"
    if isinstance(entry, bool):
        return "a boolean"
    if isinstance(entry, (int, float)):
        return "a number"
    if isinstance(entry, str):
        return "a string"
    if isinstance(entry, list):
        return "a list"
    return type(entry).__name__


def report_once(call: str, entry: Any, what: str) -> None:
    """Log ``what`` about ``entry`` of ``call``'s answer, unless it was logged before."""
    name = describe(entry)
    if _reported.first_time((call, name, what)):
        log.warning("%s: an entry (%s) %s", call, name, what)


def parse_entries(items: list[Any], call: str, parse: Callable[[Any, str], T]) -> list[T]:
    """``parse`` applied to every item; an item it refuses (``ProtocolError``) is left out and
    reported once."""
    result: list[T] = []
    for item in items:
        try:
            result.append(parse(item, call))
        except ProtocolError as exc:
            report_once(call, item, f"is skipped: {exc.message}")
    return result
