"""The async (trio) Bimplus REST client: :class:`BimplusClient`, one method per endpoint.

The rules every call follows (deadlines, retries, one token refresh after a 401, uploads that
are never blindly repeated, nothing from httpx leaking out) live in its base class,
:class:`~bimfs.api.session.Session`. The pieces under it, each in its own module:

* ``error_map``: httpx and httpcore exceptions -> ``ApiError`` (one table), deadlines;
* ``retry``: the retry policy (exponential backoff, full jitter) and ``Retry-After``;
* ``transport``: httpcore's pool on a network stream of our own that reads 1 MiB at a time;
* ``download``: an answered download, a long body read straight from the socket (as fast as
  curl from the same server);
* ``settle``: after an interrupted upload, finding what the server stored;
* ``plain``: one-off requests outside any client (logins, token grants).
"""

from __future__ import annotations

import json as json_module
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import trio

from bimfs.api import settle
from bimfs.api.download import Download, write_all
from bimfs.api.entries import parse_entries
from bimfs.api.errors import ApiError, ApiTimeoutError, IncompleteBodyError, ProtocolError
from bimfs.api.models import (
    Attachment,
    FolderNode,
    Project,
    Team,
    User,
    require_list,
    require_object,
)
from bimfs.api.multipart import GrowingMultipartUpload, GrowingSource, MultipartUpload
from bimfs.api.session import JsonBody, Session

__all__ = ["BimplusClient"]


class BimplusClient(Session):
    """An async Bimplus API client bound to one API root (``https://api.bimplus.net/v2``).

    Use it as ``async with BimplusClient(url, auth) as client:`` or call :meth:`aclose`.
    ``retries`` is the number of repetitions of a failed idempotent call (and of an upload that
    provably did not land); ``timeout`` the per-attempt deadline in seconds.
    """

    # ---- account ---------------------------------------------------------------------------

    async def check_token(self) -> dict[str, Any]:
        """``GET /authorize``: the token's user id, audience and remaining lifetime."""
        call = self._call("GET", "/authorize")
        return dict(require_object(await self._json("GET", "/authorize"), call))

    async def me(self) -> frozenset[str]:
        """The account's own user: its id and email in lower case, as ``creator`` and
        ``changedBy`` name it (from ``GET /authorize``, once). Empty when it cannot be learnt;
        then no upload found on the server is ever taken for one of ours."""
        if self._me is None:
            try:
                info = await self.check_token()
            except ApiError:
                return frozenset()
            names = {str(info.get(k) or "").strip().lower() for k in ("user_id", "email", "id")}
            self._me = frozenset(n for n in names if n)
        return self._me

    def learn_me(self, user: User | None) -> None:
        """Another name of the account (the ``changedBy`` of an upload it just made)."""
        if user is not None and self._me is not None:
            self._me = self._me | {n.lower() for n in (user.id, user.email) if n}

    async def get_teams(self) -> list[Team]:
        """``GET /teams``: every team the user belongs to."""
        call = self._call("GET", "/teams")
        data = require_list(await self._json("GET", "/teams"), call)
        return parse_entries(data, call, Team.from_json)

    async def get_all_projects(self) -> list[Project]:
        """``GET /projects``: the projects of all teams (each with ``team_slug``)."""
        call = self._call("GET", "/projects")
        data = require_list(await self._json("GET", "/projects"), call)
        return parse_entries(data, call, Project.from_json)

    # ---- projects --------------------------------------------------------------------------

    async def get_projects(self, slug: str) -> list[Project]:
        """``GET /<slug>/projects``."""
        template = "/{slug}/projects"
        call = self._call("GET", template)
        data = require_list(await self._json("GET", template, {"slug": slug}), call)
        return parse_entries(data, call, Project.from_json)

    async def get_project(self, slug: str, pid: str) -> Project:
        """``GET /<slug>/projects/<pid>``."""
        template = "/{slug}/projects/{pid}"
        call = self._call("GET", template)
        return Project.from_json(
            await self._json("GET", template, {"slug": slug, "pid": pid}), call
        )

    # ---- attachments -----------------------------------------------------------------------

    async def list_attachments(
        self,
        slug: str,
        pid: str,
        *,
        project_only: bool = True,
        attachment_type: str | None = None,
    ) -> list[Attachment]:
        """``GET /<slug>/projects/<pid>/attachments``: the project's documents (latest versions).

        ``project_only`` leaves out attachments of the project's objects; ``attachment_type``
        (``Document``, ``NonModel``, ...) filters on the server.
        """
        template = "/{slug}/projects/{pid}/attachments"
        call = self._call("GET", template)
        params: dict[str, str] = {}
        if project_only:
            params["projectOnly"] = "true"
        if attachment_type:
            params["attachmentType"] = attachment_type
        data = await self._json("GET", template, {"slug": slug, "pid": pid}, params=params)
        return parse_entries(require_list(data, call), call, Attachment.from_json)

    async def get_attachment(self, slug: str, aid: str) -> Attachment:
        """``GET /<slug>/attachments/<aid>``."""
        template = "/{slug}/attachments/{aid}"
        call = self._call("GET", template)
        data = await self._json("GET", template, {"slug": slug, "aid": aid})
        return Attachment.from_json(data, call)

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
        """``PUT /<slug>/attachments/<aid>`` with JSON metadata; only the given keys are sent
        (``fileName`` renames the document)."""
        body: dict[str, str] = {}
        if file_name is not None:
            body["fileName"] = file_name
        if content_type is not None:
            body["type"] = content_type
        if classification is not None:
            body["classification"] = classification
        if tag is not None:
            body["tag"] = tag
        template = "/{slug}/attachments/{aid}"
        call = self._call("PUT", template)
        data = await self._json("PUT", template, {"slug": slug, "aid": aid}, json=body)
        return Attachment.from_json(data, call)

    async def delete_attachment(self, slug: str, aid: str) -> None:
        """``DELETE /<slug>/attachments/<aid>``: the document and all its versions."""
        await self._delete("/{slug}/attachments/{aid}", {"slug": slug, "aid": aid})

    async def release(self, slug: str, aid: str) -> Attachment:
        """``PUT /<slug>/attachments/<aid>/release``: share the latest version."""
        template = "/{slug}/attachments/{aid}/release"
        call = self._call("PUT", template)
        data = await self._json("PUT", template, {"slug": slug, "aid": aid}, json={})
        return Attachment.from_json(data, call)

    async def list_versions(self, slug: str, aid: str) -> list[Attachment]:
        """``GET /<slug>/attachments/<aid>/versions``, sorted by version number ascending."""
        template = "/{slug}/attachments/{aid}/versions"
        call = self._call("GET", template)
        data = require_list(await self._json("GET", template, {"slug": slug, "aid": aid}), call)
        versions = parse_entries(data, call, Attachment.from_json)
        versions.sort(key=lambda a: a.version)
        return versions

    async def delete_version(self, slug: str, aid: str, version: int) -> None:
        """``DELETE /<slug>/attachments/<aid>/versions/<n>``."""
        await self._delete(
            "/{slug}/attachments/{aid}/versions/{n}", {"slug": slug, "aid": aid, "n": version}
        )

    # ---- document folders ------------------------------------------------------------------

    async def get_folders(self, slug: str, pid: str) -> list[FolderNode]:
        """The project's document-folder tree (``structures?type=DocumentFolder``).

        Returns the top-level nodes. An answer that is a single object is read as the project's
        root node, and its children are returned.
        """
        template = "/{slug}/projects/{pid}/structures"
        call = self._call("GET", template)
        data = await self._json(
            "GET", template, {"slug": slug, "pid": pid}, params={"type": "DocumentFolder"}
        )
        if isinstance(data, dict):
            return list(FolderNode.from_json(data, call).children)
        return parse_entries(require_list(data, call), call, FolderNode.from_json)

    async def create_folder(
        self, slug: str, pid: str, name: str, parent_id: str | None
    ) -> FolderNode:
        """Create a document folder (top level when ``parent_id`` is None) and return it.

        Like an upload, the POST is not blindly repeated: after an interrupted attempt the
        folder tree is read to see whether the folder was made.
        """
        template = "/{slug}/projects/{pid}/structures"
        call = self._call("POST", template)
        payload = json_module.dumps(
            {"name": name, "parent": parent_id, "type": "DocumentFolder"}
        ).encode()

        def parse(data: Any) -> FolderNode:
            return FolderNode.from_json(data, call, parent=parent_id)

        async def landed() -> FolderNode | None:
            return await settle.folder_made(self, slug, pid, parent_id, name)

        return await self._send_new(
            "POST",
            template,
            {"slug": slug, "pid": pid},
            {},
            lambda: JsonBody(payload),
            parse,
            landed,
        )

    async def delete_folder(self, slug: str, folder_id: str) -> None:
        """``DELETE /<slug>/structures/<fid>`` (``ConflictError`` when it is not empty)."""
        await self._delete("/{slug}/structures/{fid}", {"slug": slug, "fid": folder_id})

    # ---- downloads -------------------------------------------------------------------------

    def open_download(
        self,
        slug: str,
        aid: str,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> AbstractAsyncContextManager[Download]:
        """Request the bytes ``[start, end)`` of a document (or of one version of it).

        The context manager yields a :class:`Download` once the server answered with a success
        status (retrying like any GET until then); the body is read with ``chunks()``. A server
        that ignores ranges answers from byte 0: check ``Download.start``.
        """
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad byte range [{start}, {end})")
        return self._open_download(slug, aid, version, start, end)

    @asynccontextmanager
    async def _open_download(
        self, slug: str, aid: str, version: int | None, start: int, end: int | None
    ) -> AsyncIterator[Download]:
        if version is None:
            template = "/{slug}/attachments/{aid}/download"
            args: dict[str, str | int] = {"slug": slug, "aid": aid}
        else:
            template = "/{slug}/attachments/{aid}/versions/{n}/download"
            args = {"slug": slug, "aid": aid, "n": version}
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        call = self._call("GET", template)
        response = await self._request("GET", template, args, stream=True, headers=headers)
        assert response is not None
        try:
            download = Download(response, call, timeout=self.timeout)
            try:
                yield download
            finally:
                with trio.CancelScope(shield=True):
                    await download.aclose()
        finally:
            await self._close(response, call)

    async def download_to(
        self,
        slug: str,
        aid: str,
        dest: BinaryIO,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the bytes ``[start, end)`` of a document to ``dest``; return how many.

        A body that breaks off is resumed where it stopped (with a Range request, or by
        skipping again when the server ignores ranges), up to ``retries`` times. ``progress``
        gets the number of bytes written so far.
        """
        if end is not None and end <= start:
            return 0
        written = 0
        failures = 0
        while True:
            position = start + written
            reading = False
            try:
                async with self.open_download(
                    slug, aid, version=version, start=position, end=end
                ) as download:
                    reading = True
                    if download.start > position:
                        raise ProtocolError(
                            f"asked for bytes from {position}, got from {download.start}",
                            call=download.call,
                        )
                    skip = position - download.start
                    async for chunk in download.chunks():
                        view = memoryview(chunk)
                        if skip:
                            if skip >= len(view):
                                skip -= len(view)
                                continue
                            view = view[skip:]
                            skip = 0
                        if end is not None:
                            view = view[: end - (start + written)]
                        if view:
                            # In a worker thread: a slow disk must not stall the event loop.
                            await trio.to_thread.run_sync(write_all, dest, view)
                            written += len(view)
                            if progress is not None:
                                progress(written)
                        if end is not None and start + written >= end:
                            break
                    return written
            except (IncompleteBodyError, ApiTimeoutError) as err:
                # Only a body that broke off is resumed here; getting an answer at all was
                # already retried by open_download.
                if not reading or failures >= self.policy.retries:
                    raise
                await self._retry_wait(err.call or "download", failures, err.message)
                failures += 1

    # ---- uploads ---------------------------------------------------------------------------

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
        """Upload ``source`` as a new document of the project (into a document folder when
        ``folder_id`` is given) and return it as the server stored it."""
        template, params = self._create_target(folder_id)
        upload = await _FileUpload.of(
            source, file_name, content_type, classification, tag, progress
        )

        async def landed() -> Attachment | None:
            since = settle.settle_since(upload.started, self._clock_offset)
            return await settle.created_since(
                self, slug, pid, folder_id, file_name, upload.size, since, await self.me()
            )

        return await self._upload(
            "POST", template, {"slug": slug, "pid": pid}, params, upload, landed
        )

    @staticmethod
    def _create_target(folder_id: str | None) -> tuple[str, dict[str, str]]:
        """Where a new document is posted (template, query): its project, or a folder."""
        if folder_id is None:
            return "/{slug}/projects/{pid}/attachments", {}
        return "/{slug}/objects/{pid}/attachments", {"DocumentFolderId": folder_id}

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
        """Upload ``source`` as a new version of a document and return that version.

        ``known_version`` is the newest version the caller knows of; it lets an interrupted
        upload be recognised in the version list. When None, the list is read first.
        """
        upload = await _FileUpload.of(
            source, file_name, content_type, classification, tag, progress
        )
        baseline = await settle.newest_version(self, slug, aid, known_version)

        async def landed() -> Attachment | None:
            return await settle.version_since(
                self, slug, aid, baseline, upload.size, await self.me()
            )

        template = "/{slug}/attachments/{aid}/versions"
        return await self._upload("POST", template, {"slug": slug, "aid": aid}, {}, upload, landed)

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
        """Upload a file while it is still being written: a new document of project ``pid``
        (or a new version of ``aid``), sent with chunked encoding as ``source`` grows and
        completed when ``source.finish`` is called.

        One attempt only: the caller keeps the content and falls back to a plain upload when
        this raises. An answer lost after the body was complete is settled through the server's
        lists like any other upload, so the file is never stored twice.
        """
        started = time.time()
        params: dict[str, str] = {}
        if aid is not None:
            baseline = await settle.newest_version(self, slug, aid, known_version)
            template, args = "/{slug}/attachments/{aid}/versions", {"slug": slug, "aid": aid}

            async def landed() -> Attachment | None:
                if source.final is None:
                    return None
                return await settle.version_since(
                    self, slug, aid, baseline, source.final, await self.me()
                )

        else:
            assert pid is not None
            args = {"slug": slug, "pid": pid}
            template, params = self._create_target(folder_id)

            async def landed() -> Attachment | None:
                if source.final is None:
                    return None
                since = settle.settle_since(started, self._clock_offset)
                return await settle.created_since(
                    self, slug, pid, folder_id, file_name, source.final, since, await self.me()
                )

        def body() -> GrowingMultipartUpload:
            return GrowingMultipartUpload(
                source, file_name=file_name, content_type=content_type, progress=progress
            )

        parse = self._attachment_parser("POST", template)
        return await self._send_new("POST", template, args, params, body, parse, landed, 0)

    async def replace_content(
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
    ) -> Attachment:
        """``PUT /<slug>/attachments/<aid>`` with a multipart body: replace the content."""
        upload = await _FileUpload.of(
            source, file_name, content_type, classification, tag, progress
        )

        async def landed() -> Attachment | None:
            since = settle.settle_since(upload.started, self._clock_offset)
            return await settle.replaced_since(self, slug, aid, file_name, upload.size, since)

        template = "/{slug}/attachments/{aid}"
        return await self._upload("PUT", template, {"slug": slug, "aid": aid}, {}, upload, landed)

    async def _upload(
        self,
        method: str,
        template: str,
        args: Mapping[str, str | int],
        params: Mapping[str, str],
        upload: _FileUpload,
        landed: Callable[[], Awaitable[Attachment | None]],
    ) -> Attachment:
        parse = self._attachment_parser(method, template)
        return await self._send_new(method, template, args, params, upload.body, parse, landed)

    def _attachment_parser(self, method: str, template: str) -> Callable[[Any], Attachment]:
        """The parser of an upload's answer: the attachment the server stored."""
        call = self._call(method, template)

        def parse(data: Any) -> Attachment:
            return Attachment.from_json(data, call)

        return parse


@dataclass(frozen=True)
class _FileUpload:
    """A file to send as a multipart body: its size, and when sending it started."""

    source: Path
    size: int
    started: float
    file_name: str
    content_type: str
    classification: str | None
    tag: str | None
    progress: Callable[[int], None] | None

    @classmethod
    async def of(
        cls,
        source: Path,
        file_name: str,
        content_type: str,
        classification: str | None,
        tag: str | None,
        progress: Callable[[int], None] | None,
    ) -> _FileUpload:
        size = await trio.to_thread.run_sync(os.path.getsize, source)
        started = time.time()
        return cls(source, size, started, file_name, content_type, classification, tag, progress)

    def body(self) -> MultipartUpload:
        """A fresh body for one attempt."""
        return MultipartUpload(
            self.source,
            file_name=self.file_name,
            content_type=self.content_type,
            classification=self.classification,
            tag=self.tag,
            progress=self.progress,
            size=self.size,
        )
