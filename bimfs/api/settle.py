"""After an interrupted upload or creation: did the server store it?

An upload whose connection broke after the body started (or whose answer was unreadable) may
or may not have landed. Before anything is sent again, the server is asked, through the lists
it keeps: the version list (a new version of the same size, newer than the baseline), the
project's documents (a document of the same name and size, created since the upload started),
the document itself (replaced content), the folder tree (a folder of that name). Each function
returns what it found, or None for "not stored".
"""

from __future__ import annotations

from typing import Protocol

from bimfs.api.models import Attachment, FolderNode, User

__all__ = [
    "UPLOAD_SETTLE_SLACK",
    "Lookups",
    "created_since",
    "folder_made",
    "made_by",
    "newest_version",
    "replaced_since",
    "settle_since",
    "version_since",
]

UPLOAD_SETTLE_SLACK = 120.0
"""Seconds of clock disagreement tolerated when deciding whether a document found after an
interrupted upload was created by that upload."""


class Lookups(Protocol):
    """The reads of the server settling needs (``BimplusClient`` has them)."""

    async def list_versions(self, slug: str, aid: str) -> list[Attachment]: ...

    async def list_attachments(
        self, slug: str, pid: str, *, project_only: bool = ..., attachment_type: str | None = ...
    ) -> list[Attachment]: ...

    async def get_attachment(self, slug: str, aid: str) -> Attachment: ...

    async def get_folders(self, slug: str, pid: str) -> list[FolderNode]: ...


def made_by(user: User | None, me: frozenset[str]) -> bool:
    """Whether ``user`` (a ``creator`` or ``changedBy``) is the account itself: its id or email
    is one of ``me`` (lower case). Never true when the account is not known: an upload is only
    taken for ours when it certainly is (somebody else's version must never be mistaken for
    it)."""
    if user is None or not me:
        return False
    return user.id.lower() in me or (bool(user.email) and user.email.lower() in me)


def settle_since(started: float, clock_offset: float) -> float:
    """The earliest server time a document made by an upload started at ``started`` (our
    clock) can carry: the server's clock is ``clock_offset`` ahead of ours, give or take
    ``UPLOAD_SETTLE_SLACK``."""
    return started + clock_offset - UPLOAD_SETTLE_SLACK


async def newest_version(server: Lookups, slug: str, aid: str, known_version: int | None) -> int:
    """``known_version``, or when None the newest version on the server now: the baseline an
    interrupted new version is recognised against."""
    if known_version is not None:
        return known_version
    versions = await server.list_versions(slug, aid)
    return max((v.version for v in versions), default=0)


async def version_since(
    server: Lookups, slug: str, aid: str, baseline: int, size: int, me: frozenset[str]
) -> Attachment | None:
    """The version an interrupted upload stored, if any: newer than ``baseline``, of the
    same size, made by the account ``me``."""
    versions = await server.list_versions(slug, aid)
    found = [
        v
        for v in versions
        if v.version > baseline and v.size == size and made_by(v.changed_by or v.creator, me)
    ]
    return found[-1] if found else None


async def created_since(
    server: Lookups,
    slug: str,
    pid: str,
    folder_id: str | None,
    file_name: str,
    size: int,
    since: float,
    me: frozenset[str],
) -> Attachment | None:
    """The document an interrupted create stored, if any: same name and size, created at
    ``since`` or later (see :func:`settle_since`) by the account ``me``."""
    docs = await server.list_attachments(slug, pid, project_only=True)
    if folder_id is not None and not any(d.file_name == file_name for d in docs):
        docs = await server.list_attachments(slug, pid, project_only=False)
    found = [
        d
        for d in docs
        if d.file_name == file_name
        and d.size == size
        and d.created_at is not None
        and d.created_at >= since
        and made_by(d.creator or d.changed_by, me)
    ]
    return max(found, key=lambda d: (d.created_at or 0.0, d.id)) if found else None


async def replaced_since(
    server: Lookups, slug: str, aid: str, file_name: str, size: int, since: float
) -> Attachment | None:
    """The document, if an interrupted replacement of its content landed: its size and name
    are the ones sent and it changed at ``since`` or later."""
    doc = await server.get_attachment(slug, aid)
    stamp = doc.changed or doc.created_at
    if doc.size == size and doc.file_name == file_name and stamp and stamp >= since:
        return doc
    return None


async def folder_made(
    server: Lookups, slug: str, pid: str, parent_id: str | None, name: str
) -> FolderNode | None:
    """The folder an interrupted creation made, if any: a folder named ``name`` under
    ``parent_id`` (the top level when None)."""
    nodes = await server.get_folders(slug, pid)
    siblings = nodes if parent_id is None else _children_of(nodes, parent_id)
    found = [n for n in siblings if n.is_folder and n.name == name]
    return found[-1] if found else None


def _children_of(nodes: list[FolderNode], parent_id: str) -> list[FolderNode]:
    """The children of the folder ``parent_id`` anywhere in a folder tree."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.id == parent_id:
            return list(node.children)
        stack.extend(node.children)
    return []
