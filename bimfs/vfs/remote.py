"""What the filesystem layer needs from Bimplus, and nothing more.

``bimfs.api.client.BimplusClient`` is the real implementation; tests use in-memory fakes with
the same behaviour (``tests/support/fake_remote.py``). Every method raises only
``bimfs.api.errors.ApiError`` subclasses: ``NotFoundError`` for a missing object,
``ConflictError`` for a refusal of the current state (the only version, a folder not empty),
``ForbiddenError`` for missing rights, errors with ``retryable`` true for what may succeed
later. Uploads are never blindly repeated: an interrupted one is settled through the server's
lists, and ``UploadOutcomeUnknownError`` says that this could not be decided.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from bimfs.api.models import Attachment, FolderNode, Project, Team
from bimfs.api.multipart import GrowingSource
from bimfs.cache.content import Download

__all__ = ["Remote"]


class Remote(Protocol):
    """The Bimplus calls of one account (team calls take the team's ``slug``)."""

    async def check_token(self) -> dict[str, Any]:
        """``GET authorize``: who the token belongs to (``user_id``, ...)."""
        ...

    async def me(self) -> frozenset[str]:
        """The account's own user (ids/emails in lower case; empty when unknown)."""
        ...

    async def get_teams(self) -> list[Team]: ...

    async def get_projects(self, slug: str) -> list[Project]: ...

    async def list_attachments(
        self,
        slug: str,
        pid: str,
        *,
        project_only: bool = True,
        attachment_type: str | None = None,
    ) -> list[Attachment]:
        """Every document of the project (latest versions), folders included."""
        ...

    async def get_folders(self, slug: str, pid: str) -> list[FolderNode]:
        """The project's top-level document folders, each with its subtree."""
        ...

    async def get_attachment(self, slug: str, aid: str) -> Attachment: ...

    async def list_versions(self, slug: str, aid: str) -> list[Attachment]:
        """Every version of a document, oldest first."""
        ...

    def open_download(
        self,
        slug: str,
        aid: str,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> AbstractAsyncContextManager[Download]:
        """Bytes ``[start, end)`` of a document's version (``Download.start`` says where the
        body really starts: a server without ranges answers from 0)."""
        ...

    async def create_attachment(
        self,
        slug: str,
        pid: str,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        folder_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Attachment:
        """Upload ``source`` as a new document (into a folder when ``folder_id`` is given)."""
        ...

    async def create_version(
        self,
        slug: str,
        aid: str,
        source: Path,
        *,
        file_name: str,
        content_type: str,
        classification: str | None = None,
        tag: str | None = None,
        progress: Callable[[int], None] | None = None,
        known_version: int | None = None,
    ) -> Attachment:
        """Upload ``source`` as the next version of ``aid``; ``known_version`` is the newest
        version the caller knew of (what an interrupted upload is settled against)."""
        ...

    async def stream_upload(
        self,
        slug: str,
        source: GrowingSource,
        *,
        file_name: str,
        content_type: str,
        pid: str | None = None,
        folder_id: str | None = None,
        aid: str | None = None,
        known_version: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Attachment:
        """Upload a file while it is still being written (one attempt)."""
        ...

    async def update_attachment(
        self,
        slug: str,
        aid: str,
        *,
        file_name: str | None = None,
        content_type: str | None = None,
        classification: str | None = None,
        tag: str | None = None,
    ) -> Attachment:
        """Change a document's name or metadata."""
        ...

    async def release(self, slug: str, aid: str) -> Attachment:
        """Share the latest version."""
        ...

    async def delete_attachment(self, slug: str, aid: str) -> None: ...

    async def delete_version(self, slug: str, aid: str, version: int) -> None: ...

    async def create_folder(
        self, slug: str, pid: str, name: str, parent_id: str | None
    ) -> FolderNode: ...

    async def delete_folder(self, slug: str, folder_id: str) -> None: ...
