"""Frozen, typed views of Bimplus JSON, parsed tolerantly.

Every documented variant is accepted: ``version`` as an int or a string, ``release`` as a bool or
``"false"``, ``createdAt`` or ``createAt``, dates with and without fractions and zones, any field
missing or null. Unknown fields are ignored. An answer that is not an object where one is
required, lacks a usable ``id`` or has a ``size`` that is no byte count raises ``ProtocolError``
naming the call; never ``KeyError`` (the lists skip such an entry: ``bimfs.api.entries``). Text
with a lone surrogate is repaired with U+FFFD, so that every string can be written as UTF-8.

Times are POSIX timestamps (float seconds, UTC when the server gives no zone) or ``None``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from bimfs.api.entries import (
    MAX_SIZE,
    has_surrogates,
    parse_entries,
    repair_text,
    report_once,
)
from bimfs.api.errors import ProtocolError

JsonObj = dict[str, Any]
T = TypeVar("T")
S = TypeVar("S", str, str | None)


def parse_time(value: Any) -> float | None:
    """Parse a Bimplus date (``2013-12-11T10:47:39``, ``...39.233``, ``...39.067456+01:00``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python accepts at most 6 fraction digits; .NET writes up to 7.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_bool(value: Any, default: bool = False) -> bool:
    """Accept ``true``/``false`` as JSON booleans or strings (``"false"``, ``"True"``), 0/1."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no", ""):
            return False
    return default


def parse_int(value: Any, default: int | None = None) -> int | None:
    """Accept ints, integral floats and digit strings (``"1"``); anything else gives default."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _str(value: Any, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, str):
        return repair_text(value)
    return str(value)


def _name(obj: JsonObj, key: str, call: str) -> str:
    """The text of ``obj[key]``, repaired (and that reported once) when it cannot be encoded."""
    value = obj.get(key)
    if isinstance(value, str) and has_surrogates(value):
        report_once(call, obj, f"has a {key} that is not valid text; shown with U+FFFD")
    return _str(value)


def parse_count(value: Any) -> int | None:
    """A byte count (0 to 2^63-1) as ``parse_int`` reads it, else None."""
    count = parse_int(value)
    if count is None or not 0 <= count <= MAX_SIZE:
        return None
    return count


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _str(value)


def _short(value: Any) -> str:
    """A value as a short, log-safe text."""
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require_object(data: Any, call: str) -> JsonObj:
    """Return ``data`` as a JSON object or raise ``ProtocolError`` naming ``call``."""
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}", call=call)
    return data


def require_list(data: Any, call: str) -> list[Any]:
    """Return ``data`` as a JSON array or raise ``ProtocolError`` naming ``call``."""
    if not isinstance(data, list):
        raise ProtocolError(f"expected a JSON array, got {type(data).__name__}", call=call)
    return data


def _require_id(obj: JsonObj, call: str) -> str:
    ident = obj.get("id")
    if not isinstance(ident, str) or not ident:
        raise ProtocolError("an entry has no id", call=call)
    if has_surrogates(ident) or not ident.isprintable():
        raise ProtocolError("an entry has an id that is not valid text", call=call)
    return ident


_SHARED_MAX = 4096
_shared_values: dict[Any, Any] = {}


def _shared(value: T) -> T:
    """One object for equal small values (the users and rights of thousands of documents in a
    listing are a handful of distinct ones): a listing holds each once."""
    known = _shared_values.get(value)
    if known is not None:
        return cast(T, known)
    if len(_shared_values) >= _SHARED_MAX:
        _shared_values.clear()
    _shared_values[value] = value
    return value


def _own(text: S) -> S:
    """A copy of a string taken from a parsed answer, made while the answer is still whole:
    what a listing keeps is then packed together instead of scattered between the freed
    objects of the answer (which would keep their memory from being given back)."""
    return (
        cast(S, text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass"))
        if text
        else text
    )


@dataclass(frozen=True, slots=True)
class User:
    """A Bimplus user as embedded in attachments (``creator``, ``changedBy``, ``sharedBy``)."""

    id: str
    email: str = ""
    display_name: str = ""

    @classmethod
    def from_json(cls, data: Any) -> User | None:
        if not isinstance(data, dict):
            return None
        name = (
            _str(data.get("displayname"))
            or _str(data.get("fullname"))
            or " ".join(p for p in (_str(data.get("firstname")), _str(data.get("lastname"))) if p)
        )
        user = cls(id=_str(data.get("id")), email=_str(data.get("email")), display_name=name)
        return _shared(user)

    @property
    def label(self) -> str:
        """The best human-readable name: email, else display name, else id."""
        return self.email or self.display_name or self.id


@dataclass(frozen=True, slots=True)
class Rights:
    """The user's rights on a document. Missing rights are taken as granted (the server decides)."""

    update: bool = True
    share: bool = True
    delete: bool = True
    download: bool = True

    @classmethod
    def from_json(cls, data: Any) -> Rights:
        if not isinstance(data, dict):
            return cls()
        return _shared(
            cls(
                update=parse_bool(data.get("update"), True),
                share=parse_bool(data.get("share"), True),
                delete=parse_bool(data.get("delete"), True),
                download=parse_bool(data.get("download"), True),
            )
        )


@dataclass(frozen=True, slots=True)
class Team:
    """A team (tenant). ``total_storage`` is the quota in bytes (0 or None: unknown)."""

    id: str
    slug: str
    name: str
    total_storage: int | None = None
    used_storage: int | None = None
    status: str = ""

    @classmethod
    def from_json(cls, data: Any, call: str = "GET /teams") -> Team:
        obj = require_object(data, call)
        slug = obj.get("slug")
        if not isinstance(slug, str) or not slug:
            raise ProtocolError("a team has no slug", call=call)
        if has_surrogates(slug) or not slug.isprintable():
            raise ProtocolError("a team has a slug that is not valid text", call=call)
        used = None
        stats = obj.get("storageStats")
        if isinstance(stats, dict):
            used = parse_count(stats.get("usedStorage", stats.get("used")))
        return cls(
            id=_require_id(obj, call),
            slug=slug,
            name=_name(obj, "name", call) or slug,
            total_storage=parse_count(obj.get("totalStorage")),
            used_storage=used,
            status=_str(obj.get("status")),
        )


@dataclass(frozen=True, slots=True)
class Project:
    """A project of a team."""

    id: str
    name: str
    team_slug: str = ""
    has_write_access: bool = True
    created: float | None = None
    changed: float | None = None
    size: int | None = None
    attachment_count: int | None = None

    @classmethod
    def from_json(cls, data: Any, call: str = "GET /projects") -> Project:
        obj = require_object(data, call)
        ident = _require_id(obj, call)
        return cls(
            id=ident,
            name=_name(obj, "name", call) or ident,
            team_slug=_str(obj.get("teamSlug")),
            has_write_access=parse_bool(obj.get("hasWriteAccess"), True),
            created=parse_time(obj.get("created") or obj.get("createdAt")),
            changed=parse_time(obj.get("changed")),
            size=parse_count(obj.get("size")),
            attachment_count=parse_count(obj.get("attachmentCount")),
        )


@dataclass(frozen=True, slots=True)
class Attachment:
    """A document (or one version of it, in a version list)."""

    id: str
    file_name: str
    name: str = ""
    type: str = "application/octet-stream"
    size: int = 0
    created_at: float | None = None
    changed: float | None = None
    creator: User | None = None
    changed_by: User | None = None
    attachment_type: str = "Document"
    hash: str = ""
    classification: str = ""
    tag: str = ""
    version: int = 1
    rights: Rights = Rights()
    release: bool = False
    related_id: str | None = None
    shared_date: float | None = None

    @classmethod
    def from_json(cls, data: Any, call: str = "attachment") -> Attachment:
        obj = require_object(data, call)
        ident = _require_id(obj, call)
        file_name = _name(obj, "fileName", call) or _name(obj, "name", call) or ident
        raw_size = obj.get("size")
        size = 0 if raw_size is None else parse_count(raw_size)
        if size is None:
            raise ProtocolError(f"size {_short(raw_size)} is not a byte count", call=call)
        version = parse_int(obj.get("version"), 1) or 1
        if not 0 < version <= MAX_SIZE:
            raise ProtocolError(f"version {_short(version)} is not a version number", call=call)
        return cls(
            id=_own(ident),
            file_name=_own(file_name),
            name=_own(_str(obj.get("name"))),
            type=sys.intern(_str(obj.get("type")) or "application/octet-stream"),
            size=size,
            created_at=parse_time(obj.get("createdAt") or obj.get("createAt")),
            changed=parse_time(obj.get("changed")),
            creator=User.from_json(obj.get("creator")),
            changed_by=User.from_json(obj.get("changedBy")),
            attachment_type=sys.intern(_str(obj.get("attachmentType")) or "Document"),
            hash=_own(_str(obj.get("hash"))),
            classification=sys.intern(_str(obj.get("classification"))),
            tag=sys.intern(_str(obj.get("tag"))),
            version=version,
            rights=Rights.from_json(obj.get("rights")),
            release=parse_bool(obj.get("release"), False),
            related_id=_own(_opt_str(obj.get("relatedId"))),
            shared_date=parse_time(obj.get("sharedDate")),
        )

    @property
    def mtime(self) -> float:
        """The time shown as ``st_mtime``: ``changed``, else ``createdAt``, else 0."""
        return self.changed or self.created_at or 0.0


@dataclass(frozen=True, slots=True)
class FolderNode:
    """A node of a project's document-folder structure (``type`` ``DocumentFolder`` or
    ``Attachment``; an ``Attachment`` node's ``id`` is the attachment id)."""

    id: str
    name: str
    type: str
    parent: str | None = None
    children: tuple[FolderNode, ...] = ()

    @classmethod
    def from_json(
        cls, data: Any, call: str = "GET structures", parent: str | None = None
    ) -> FolderNode:
        obj = require_object(data, call)
        ident = _require_id(obj, call)
        raw_children = obj.get("children") or []
        if not isinstance(raw_children, list):
            raise ProtocolError("children is not a list", call=call)

        def child(data: Any, call: str) -> FolderNode:
            return cls.from_json(data, call, parent=ident)

        children = tuple(parse_entries(raw_children, call, child))
        return cls(
            id=ident,
            name=_name(obj, "name", call),
            type=_str(obj.get("type")) or "DocumentFolder",
            parent=_opt_str(obj.get("parent")) or parent,
            children=children,
        )

    @property
    def is_folder(self) -> bool:
        return self.type.lower() != "attachment"
