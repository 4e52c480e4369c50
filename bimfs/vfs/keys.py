"""Typed identities: which upload target a file is (``NodeKey``) and what an upload sends
(``UploadTarget``).

The journal (``bimfs.cache``) stores keys as text and targets as JSON objects; this module is
the one place where they are written and read back:

========================  =================================================================
``DocKey(aid)``           a document on the server: its saves become new versions
``NewKey(token)``         a new file not uploaded yet: its first save creates a document
``LocalKey(token)``       a temp or lock file that never leaves this machine
``VersionKey(...)``       a read-only file in ``versions/``
========================  =================================================================
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Self


@dataclass(frozen=True, slots=True)
class DocKey:
    aid: str

    def __str__(self) -> str:
        return f"doc:{self.aid}"


@dataclass(frozen=True, slots=True)
class _TokenKey:
    """A key of a file that has no server identity (yet): a random token."""

    token: str
    prefix: ClassVar[str] = ""

    @classmethod
    def fresh(cls) -> Self:
        return cls(uuid.uuid4().hex)

    def __str__(self) -> str:
        return f"{self.prefix}:{self.token}"


@dataclass(frozen=True, slots=True)
class NewKey(_TokenKey):
    prefix: ClassVar[str] = "new"


@dataclass(frozen=True, slots=True)
class LocalKey(_TokenKey):
    prefix: ClassVar[str] = "local"


@dataclass(frozen=True, slots=True)
class VersionKey:
    slug: str
    aid: str
    version: int

    def __str__(self) -> str:
        return f"ver|{self.slug}|{self.aid}|{self.version}"


NodeKey = DocKey | NewKey | LocalKey | VersionKey


def parse_key(text: str) -> NodeKey:
    """A key written by ``str(key)`` (as the journal keeps it)."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "doc":
        return DocKey(rest)
    if sep and kind == "new":
        return NewKey(rest)
    if sep and kind == "local":
        return LocalKey(rest)
    parts = text.split("|")
    if len(parts) == 4 and parts[0] == "ver" and parts[3].isdigit():
        return VersionKey(parts[1], parts[2], int(parts[3]))
    raise ValueError(f"not a node key: {text!r}")


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where a save goes: a new document (``create``) or the next version of one
    (``version``), with what the request needs. Journal entries carry it as their meta."""

    op: Literal["create", "version"]
    slug: str
    pid: str
    file_name: str
    content_type: str
    path: str  # where the file is shown, for messages and `bimfs status`
    folder_id: str | None = None  # the document folder (None: the project's root)
    aid: str | None = None  # version: the document
    base_version: int | None = None  # version: the newest version the save was based on
    tag: str | None = None  # create: set before the first upload
    classification: str | None = None

    @property
    def creating(self) -> bool:
        return self.op == "create"

    def to_meta(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> UploadTarget:
        """Read back a journal entry's meta (tolerating fields of older records)."""

        def text(name: str) -> str | None:
            value = meta.get(name)
            return value if isinstance(value, str) else None

        base = meta.get("base_version")
        return cls(
            op="version" if meta.get("op") == "version" else "create",
            slug=text("slug") or "",
            pid=text("pid") or "",
            file_name=text("file_name") or "unnamed",
            content_type=text("content_type") or "application/octet-stream",
            path=text("path") or "",
            folder_id=text("folder_id") or None,
            aid=text("aid"),
            base_version=base if isinstance(base, int) else None,
            tag=text("tag"),
            classification=text("classification"),
        )

    def same_request(self, other: UploadTarget) -> bool:
        """Whether two targets send to the same place under the same name and type (what a
        stream started for one may complete for the other)."""
        return (self.op, self.slug, self.pid, self.folder_id, self.aid, self.file_name,
                self.content_type) == (other.op, other.slug, other.pid, other.folder_id,
                                       other.aid, other.file_name, other.content_type)  # fmt: skip
