"""Hostile answers: JSON answers of ``/v2`` routes rewritten on purpose, so that a client can be
tested against what a broken server or proxy may send (entries of the wrong shape, a name with a
lone surrogate, a size past 2^63, a body that is not JSON at all).

The rules are the ``answers`` fault (``POST /_emulator/faults``), a list of objects:

* ``route`` (mandatory): the route key, as in the statistics
  (``"GET /v2/{slug}/projects/{pid}/attachments"``);
* ``where``: an object; only entries having all these fields with these values are changed
  (absent: every entry);
* ``set``: fields given these values in the chosen entries; ``drop``: fields removed from them;
* ``append``: values added at the end of a list answer (any JSON: ``42``, ``null``, ``[]``);
* ``body``: a text that replaces the whole answer (status 200, ``application/json``): not JSON,
  truncated JSON, another top-level type.

Entries are the items of a list answer, the nodes under their ``children`` (folder trees), or an
object answer itself. Only successful JSON answers are rewritten. A rewritten answer is written
with ASCII escapes, so that a lone surrogate goes out as the JSON text ``"\\udc80"``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

_KEYS = ("route", "where", "set", "drop", "append", "body")


def check_rules(value: Any) -> list[dict[str, Any]]:
    """The ``answers`` setting validated; ``ValueError`` naming what is wrong."""
    if not isinstance(value, list):
        raise ValueError("answers must be a list of rules")
    rules: list[dict[str, Any]] = []
    for rule in value:
        if not isinstance(rule, dict) or not isinstance(rule.get("route"), str):
            raise ValueError("each answers rule must be an object with a route")
        unknown = set(rule) - set(_KEYS)
        if unknown:
            raise ValueError(f"unknown answers key {sorted(unknown)[0]}")
        for key in ("where", "set"):
            if not isinstance(rule.get(key, {}), dict):
                raise ValueError(f"answers {key} must be an object")
        for key in ("drop", "append"):
            if not isinstance(rule.get(key, []), list):
                raise ValueError(f"answers {key} must be a list")
        if not isinstance(rule.get("body", ""), str):
            raise ValueError("answers body must be a string")
        rules.append(dict(rule))
    return rules


def ascii_json(data: Any, status: int = 200) -> Response:
    """A JSON answer written with ASCII escapes (lone surrogates included)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return Response(text.encode("ascii"), status_code=status, media_type="application/json")


def rewrite(rules: list[dict[str, Any]], key: str, response: Any) -> Any:
    """``response`` changed by the rules for route ``key`` (or as it is)."""
    mine = [r for r in rules if r["route"] == key]
    body = getattr(response, "body", None)
    if not mine or not isinstance(body, bytes) or getattr(response, "status_code", 500) >= 300:
        return response
    if not str(getattr(response, "media_type", "")).startswith("application/json"):
        return response
    for rule in mine:
        if "body" in rule:
            raw = rule["body"].encode("utf-8", "surrogatepass")
            return Response(raw, status_code=200, media_type="application/json")
    data = json.loads(body)
    for rule in mine:
        data = _apply(rule, data)
    return ascii_json(data, response.status_code)


def _apply(rule: dict[str, Any], data: Any) -> Any:
    where: dict[str, Any] = rule.get("where", {})
    changes: dict[str, Any] = rule.get("set", {})
    drop: list[Any] = rule.get("drop", [])

    def visit(entry: Any) -> None:
        if not isinstance(entry, dict):
            return
        if all(entry.get(k) == v for k, v in where.items()):
            entry.update(changes)
            for name in drop:
                entry.pop(name, None)
        children = entry.get("children")
        if isinstance(children, list):
            for child in children:
                visit(child)

    if isinstance(data, list):
        for item in data:
            visit(item)
        data.extend(rule.get("append", []))
    else:
        visit(data)
    return data
