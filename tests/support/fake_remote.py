"""An in-memory Bimplus account that behaves like ``BimplusClient`` against the emulator.

``FakeServer`` holds the state (teams, projects, documents with their versions, folders,
users); ``FakeRemote`` is one user's view of it and implements ``bimfs.vfs.remote.Remote``:
the same model objects, the same errors (``NotFoundError``, ``ConflictError`` for the only
version or a folder not empty, ``ForbiddenError`` for missing rights, ``BadRequestError``),
versions numbered from 1 and never reused, ``creator``/``changedBy`` set to the acting user,
interrupted uploads settled through the server's lists exactly as the client does (with
``bimfs.api.settle``). Its conformance with the client is checked by
``tests/support/test_fake_conformance.py``.

Controls for tests, on a ``FakeRemote``::

    remote.colleague                 another user of the same account (Tom), its own controls
    remote.fail_next("create_version", ServerError(503), times=2)
    remote.lose_answer("create_attachment")          stored, then UploadOutcomeUnknownError
    remote.lose_answer("create_version", settle=True)  stored, answer lost, settled as the
                                                       client does (the call returns it)
    remote.offline = True            every call raises TransportError (connection refused)
    remote.calls["list_attachments"] how often each method was called
    remote.hold("create_version")    calls wait in the method until ``release_held()``

Server-side helpers (synchronous, no controls, for setting up and checking): ``upload``,
``new_version``, ``content``, ``docs``, ``versions`` on ``FakeServer``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bimfs.api import settle
from bimfs.api.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    StatusError,
    TransportError,
    UploadOutcomeUnknownError,
)
from bimfs.api.models import Attachment, FolderNode, Project, Team
from bimfs.api.multipart import GrowingSource
from bimfs.vfs.remote import Remote
from tests.support.fake_server import (
    DEMO,
    SLUG,
    TOM,
    FakeServer,
    FakeUser,
    FolderRecord,
    server_now,
)

__all__ = ["DEMO", "SLUG", "TOM", "FakeRemote", "FakeServer", "FakeUser", "as_remote"]

CHUNK = 64 * 1024


@dataclass
class _Download:
    """What ``open_download`` yields: the shape of ``bimfs.api.download.Download``."""

    data: bytes
    start: int
    length: int | None
    total_size: int | None
    range_supported: bool = True
    call: str = "GET download"

    async def chunks(self) -> AsyncIterator[bytes]:
        for pos in range(0, len(self.data), CHUNK):
            await trio.lowlevel.checkpoint()
            yield self.data[pos : pos + CHUNK]


class FakeRemote:
    """One user's client of a ``FakeServer`` (a new server when none is given)."""

    def __init__(self, server: FakeServer | None = None, user: FakeUser = DEMO) -> None:
        self.server = server or FakeServer()
        self.user = user
        self.calls: Counter[str] = Counter()
        self.offline = False
        self._failures: dict[str, list[BaseException]] = {}
        self._lost: dict[str, list[bool]] = {}
        self._held: set[str] = set()
        self._release = trio.Event()
        self._colleague: FakeRemote | None = None

    # ---- controls ----------------------------------------------------------------------------

    @property
    def colleague(self) -> FakeRemote:
        """Tom, another user of the same account, working on the same server."""
        if self._colleague is None:
            self._colleague = FakeRemote(self.server, TOM)
        return self._colleague

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` before doing anything."""
        self._failures.setdefault(method, []).extend([error] * times)

    def lose_answer(self, method: str, *, times: int = 1, settle: bool = False) -> None:
        """The next ``times`` uploads by ``method`` are stored, and then the connection breaks.
        ``settle``: the client finds the upload in the server's lists and returns it (what
        ``BimplusClient`` does); otherwise the lookup fails too: ``UploadOutcomeUnknownError``."""
        self._lost.setdefault(method, []).extend([settle] * times)

    def hold(self, method: str) -> None:
        """Calls of ``method`` wait (before doing anything) until ``release_held``."""
        self._held.add(method)

    def release_held(self) -> None:
        self._held.clear()
        self._release.set()
        self._release = trio.Event()

    def clear_faults(self) -> None:
        """Forget the failures and lost answers not used up yet."""
        self._failures.clear()
        self._lost.clear()

    def reset_calls(self) -> None:
        self.calls.clear()

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        await trio.lowlevel.checkpoint()
        while method in self._held:
            await self._release.wait()
        if self.offline:
            raise TransportError("connection refused (the server is unreachable)", call=method)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _answer_lost(self, method: str) -> bool | None:
        """Whether this upload's answer is lost (and then: whether settling finds it)."""
        pending = self._lost.get(method)
        return pending.pop(0) if pending else None

    async def _settled(self, method: str, lost: bool, find: Callable[[], Any]) -> Attachment:
        if not lost:
            raise UploadOutcomeUnknownError(
                "the connection broke after the upload was sent; the server's lists could not"
                " be read to settle it",
                call=method,
            )
        found: Attachment | None = await find()
        if found is None:  # pragma: no cover - the upload was stored: settling finds it
            raise AssertionError("a stored upload was not found by settling")
        return found

    # ---- Remote ------------------------------------------------------------------------------

    async def check_token(self) -> dict[str, Any]:
        await self._enter("check_token")
        return {"user_id": self.user.email, "audience": "bimfs-fake", "expires_in": 3600}

    async def me(self) -> frozenset[str]:
        try:
            info = await self.check_token()
        except ApiError:
            return frozenset()
        return frozenset({str(info["user_id"]).lower()})

    async def get_teams(self) -> list[Team]:
        await self._enter("get_teams")
        srv = self.server
        used = sum(len(v.data) for d in srv.docs_by_id.values() for v in d.versions)
        return [Team(srv.team_id, srv.slug, srv.slug, None, used, "Active")]

    async def get_projects(self, slug: str) -> list[Project]:
        await self._enter("get_projects")
        self.server.team(slug)
        return [self.server.project_model(p) for p in self.server.projects.values()]

    async def list_attachments(
        self,
        slug: str,
        pid: str,
        *,
        project_only: bool = True,
        attachment_type: str | None = None,
    ) -> list[Attachment]:
        await self._enter("list_attachments")
        srv = self.server
        srv.team(slug)
        srv.project(pid)
        return [
            srv.model(d)
            for d in srv.docs_by_id.values()
            if d.project_id == pid
            and (not attachment_type or d.attachment_type.lower() == attachment_type.lower())
        ]

    async def get_folders(self, slug: str, pid: str) -> list[FolderNode]:
        await self._enter("get_folders")
        self.server.team(slug)
        self.server.project(pid)
        return self.server.folder_nodes(pid)

    async def get_attachment(self, slug: str, aid: str) -> Attachment:
        await self._enter("get_attachment")
        self.server.team(slug)
        return self.server.model(self.server.doc(aid))

    async def list_versions(self, slug: str, aid: str) -> list[Attachment]:
        await self._enter("list_versions")
        self.server.team(slug)
        return self.server.versions(aid)

    def open_download(
        self,
        slug: str,
        aid: str,
        *,
        version: int | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> AbstractAsyncContextManager[_Download]:
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad byte range [{start}, {end})")
        return self._open_download(slug, aid, version, start, end)

    @asynccontextmanager
    async def _open_download(
        self, slug: str, aid: str, version: int | None, start: int, end: int | None
    ) -> AsyncIterator[_Download]:
        await self._enter("open_download")
        self.server.team(slug)
        doc = self.server.doc(aid)
        ver = self.server.version_of(doc, version)
        self.server.need(doc, "download")
        data = ver.data
        size = len(data)
        if start == 0 and end is None:
            yield _Download(data, 0, size, size)
            return
        if start >= size:
            raise StatusError(416, "range not satisfiable", call="GET download")
        stop = size if end is None else min(end, size)
        yield _Download(data[start:stop], start, stop - start, size)

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
        size = await trio.to_thread.run_sync(lambda: source.stat().st_size)
        started = time.time()
        await self._enter("create_attachment")
        self.server.team(slug)
        self.server.project(pid)
        data = await trio.to_thread.run_sync(source.read_bytes)
        if progress is not None:
            progress(len(data))
        att = self.server.create(
            pid, file_name, data, self.user, content_type, folder_id, classification, tag
        )
        lost = self._answer_lost("create_attachment")
        if lost is None:
            return att

        async def find() -> Attachment | None:
            since = settle.settle_since(started, 0.0)
            return await settle.created_since(
                self, slug, pid, folder_id, file_name, size, since, await self.me()
            )

        return await self._settled("create_attachment", lost, find)

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
        size = await trio.to_thread.run_sync(lambda: source.stat().st_size)
        baseline = await settle.newest_version(self, slug, aid, known_version)
        await self._enter("create_version")
        self.server.team(slug)
        doc = self.server.doc(aid)
        data = await trio.to_thread.run_sync(source.read_bytes)
        if progress is not None:
            progress(len(data))
        att = self.server.add_version(
            doc, data, self.user, file_name, content_type, classification, tag
        )
        lost = self._answer_lost("create_version")
        if lost is None:
            return att

        async def find() -> Attachment | None:
            return await settle.version_since(self, slug, aid, baseline, size, await self.me())

        return await self._settled("create_version", lost, find)

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
        started = time.time()
        baseline = await settle.newest_version(self, slug, aid, known_version) if aid else 0
        await self._enter("stream_upload")
        self.server.team(slug)
        if aid is not None:
            self.server.doc(aid)
        else:
            assert pid is not None
            self.server.project(pid)
        # Opened once at the start, as the client's body does: the file may be renamed (into
        # the journal) while it is sent.
        with source.path.open("rb") as body:
            sent = 0
            while source.final is None or sent < source.final:
                await source.wait_beyond(sent)
                sent = source.size
                if progress is not None:
                    progress(sent)
            final = source.final
            data = await trio.to_thread.run_sync(body.read, final)
        if aid is not None:
            att = self.server.add_version(
                self.server.doc(aid), data, self.user, file_name, content_type
            )
        else:
            assert pid is not None
            att = self.server.create(pid, file_name, data, self.user, content_type, folder_id)
        lost = self._answer_lost("stream_upload")
        if lost is None:
            return att

        async def find() -> Attachment | None:
            me = await self.me()
            if aid is not None:
                return await settle.version_since(self, slug, aid, baseline, final, me)
            assert pid is not None
            since = settle.settle_since(started, 0.0)
            return await settle.created_since(
                self, slug, pid, folder_id, file_name, final, since, me
            )

        return await self._settled("stream_upload", lost, find)

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
        await self._enter("update_attachment")
        self.server.team(slug)
        doc = self.server.doc(aid)
        self.server.need_write(doc.project_id)
        self.server.need(doc, "update")
        if file_name is not None and not file_name:
            raise BadRequestError(400, "fileName must not be empty")
        if content_type is not None and not content_type:
            raise BadRequestError(400, "type must not be empty")
        when = server_now()
        if file_name is not None:
            doc.file_name = file_name
        if classification is not None:
            doc.classification = classification
        if tag is not None:
            doc.tag = tag
        latest = doc.versions[-1]
        if content_type is not None:
            latest.type = content_type
        latest.changed, latest.changed_by = when, self.user
        self.server.touch(doc.project_id, when)
        return self.server.model(doc)

    async def release(self, slug: str, aid: str) -> Attachment:
        await self._enter("release")
        self.server.team(slug)
        doc = self.server.doc(aid)
        self.server.need(doc, "share")
        doc.release, doc.shared_date = True, server_now()
        return self.server.model(doc)

    async def delete_attachment(self, slug: str, aid: str) -> None:
        await self._enter("delete_attachment")
        self.server.team(slug)
        doc = self.server.doc(aid)
        self.server.need_write(doc.project_id)
        self.server.need(doc, "delete")
        del self.server.docs_by_id[aid]
        self.server.touch(doc.project_id, server_now())

    async def delete_version(self, slug: str, aid: str, version: int) -> None:
        await self._enter("delete_version")
        self.server.team(slug)
        doc = self.server.doc(aid)
        target = self.server.version_of(doc, version)
        self.server.need_write(doc.project_id)
        self.server.need(doc, "delete")
        if len(doc.versions) <= 1:
            raise ConflictError(409, "cannot delete the only version of a document")
        doc.versions.remove(target)
        self.server.touch(doc.project_id, server_now())

    async def create_folder(
        self, slug: str, pid: str, name: str, parent_id: str | None
    ) -> FolderNode:
        await self._enter("create_folder")
        srv = self.server
        srv.team(slug)
        srv.project(pid)
        srv.need_write(pid)
        if not name.strip():
            raise BadRequestError(400, "name is mandatory")
        if parent_id is not None:
            parent = srv.folders.get(parent_id)
            if parent is None or parent.project_id != pid:
                raise NotFoundError(404, "no such parent folder in this project")
        if any(
            f.project_id == pid and f.parent_id == parent_id and f.name == name
            for f in srv.folders.values()
        ):
            raise ConflictError(409, "a folder of that name exists in the parent")
        folder = FolderRecord(srv.new_id("f"), pid, parent_id, name)
        srv.folders[folder.id] = folder
        return FolderNode(folder.id, name, "DocumentFolder", parent_id)

    async def delete_folder(self, slug: str, folder_id: str) -> None:
        await self._enter("delete_folder")
        srv = self.server
        srv.team(slug)
        folder = srv.folders.get(folder_id)
        if folder is None:
            raise NotFoundError(404, f"no folder {folder_id}")
        srv.need_write(folder.project_id)
        if any(f.parent_id == folder_id for f in srv.folders.values()) or any(
            d.folder_id == folder_id for d in srv.docs_by_id.values()
        ):
            raise ConflictError(409, "the folder is not empty")
        del srv.folders[folder_id]


def as_remote(remote: FakeRemote) -> Remote:
    """``remote`` typed as the Protocol (mypy checks that it fits)."""
    return remote
