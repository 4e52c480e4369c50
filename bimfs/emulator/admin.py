"""``/_emulator`` hooks for tests and benchmarks: statistics, faults, token expiry and shortcuts
to create teams, projects, rights and large documents. No authentication, never faulted."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response

from bimfs.emulator.app import Ctx, HttpError, RouteSpec, State, json_response, read_json, route
from bimfs.emulator.hostile import ascii_json
from bimfs.emulator.samples import pseudo_random_chunks
from bimfs.emulator.storage import NotFound
from bimfs.emulator.views import attachment_json, project_json, team_json

MAX_BLOB_SIZE = 64 * 1024**3


class AdminApi:
    """The ``/_emulator`` handlers."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.store = state.store

    async def _object(self, ctx: Ctx) -> dict[str, Any]:
        body = await read_json(ctx.request)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        return body

    async def stats(self, ctx: Ctx) -> Response:
        """``GET /_emulator/stats``."""
        return json_response(self.state.stats.as_json())

    async def reset_stats(self, ctx: Ctx) -> Response:
        """``POST /_emulator/stats/reset``."""
        self.state.stats.reset()
        return json_response(self.state.stats.as_json())

    async def get_faults(self, ctx: Ctx) -> Response:
        """``GET /_emulator/faults``."""
        return ascii_json(self.state.faults.as_json())

    async def set_faults(self, ctx: Ctx) -> Response:
        """``POST /_emulator/faults``: a partial update; 400 names a bad key or value."""
        body = await self._object(ctx)
        try:
            self.state.faults.update(body)
        except (TypeError, ValueError) as exc:
            raise HttpError(400, str(exc)) from exc
        return ascii_json(self.state.faults.as_json())

    async def expire_tokens(self, ctx: Ctx) -> Response:
        """``POST /_emulator/tokens/expire``: every issued access token expires now."""
        return json_response({"expired": self.store.expire_access_tokens()})

    def _team_json(self, slug: str) -> dict[str, Any]:
        team = self.store.team(slug)
        return team_json(team, self.store.used_storage(team.id))

    @staticmethod
    def _storage(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
            raise HttpError(400, "totalStorage must be a non-negative integer (0 = unlimited)")
        return value

    async def create_team(self, ctx: Ctx) -> Response:
        """``POST /_emulator/teams`` ``{"slug", "name", "totalStorage"}``."""
        body = await self._object(ctx)
        slug = body.get("slug")
        if not isinstance(slug, str) or not slug or "/" in slug:
            raise HttpError(400, "slug is mandatory")
        name = body.get("name") or slug
        if not isinstance(name, str):
            raise HttpError(400, "name must be a string")
        try:
            self.store.create_team(slug, name, self._storage(body.get("totalStorage", 0)))
        except ValueError as exc:
            raise HttpError(409, str(exc)) from exc
        return json_response(self._team_json(slug), 201)

    async def update_team(self, ctx: Ctx) -> Response:
        """``PUT /_emulator/teams/{slug}`` ``{"totalStorage"}``."""
        body = await self._object(ctx)
        slug = ctx.params["slug"]
        if "totalStorage" in body:
            self.store.set_team_storage(slug, self._storage(body["totalStorage"]))
        return json_response(self._team_json(slug))

    async def create_project(self, ctx: Ctx) -> Response:
        """``POST /_emulator/teams/{slug}/projects`` ``{"name", "hasWriteAccess"}``."""
        body = await self._object(ctx)
        team = self.store.team(ctx.params["slug"])
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "name is mandatory")
        write = body.get("hasWriteAccess", True)
        if not isinstance(write, bool):
            raise HttpError(400, "hasWriteAccess must be true or false")
        descr = body.get("shortDescr", "")
        project = self.store.create_project(
            team.id, name, has_write_access=write, short_descr=str(descr or "")
        )
        return json_response(project_json(project), 201)

    async def update_project(self, ctx: Ctx) -> Response:
        """``PUT /_emulator/projects/{pid}`` ``{"hasWriteAccess"}``."""
        body = await self._object(ctx)
        write = body.get("hasWriteAccess")
        if not isinstance(write, bool):
            raise HttpError(400, "hasWriteAccess must be true or false")
        project = self.store.set_project_write_access(ctx.params["pid"], write)
        return json_response(project_json(project))

    async def set_rights(self, ctx: Ctx) -> Response:
        """``PUT /_emulator/attachments/{id}/rights`` ``{"update", "share", "delete",
        "download"}`` (absent keys unchanged)."""
        body = await self._object(ctx)
        rights: dict[str, bool] = {}
        for key in ("update", "share", "delete", "download"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise HttpError(400, f"{key} must be true or false")
                rights[key] = body[key]
        att = self.store.set_rights(ctx.params["id"], rights)
        project = self.store.project_by_id(att.project_id)
        return json_response(attachment_json(att, project, self.store.user))

    async def create_blob(self, ctx: Ctx) -> Response:
        """``POST /_emulator/teams/{slug}/projects/{pid}/blob?fileName=&size=&seed=``: a document
        of ``size`` pseudo-random bytes (``samples.pseudo_random_chunks(seed, size)``), written
        streaming. Optional ``type``, ``folderId``; ``attachmentId`` adds a version to that
        document instead. Ignores the quota."""
        q = ctx.request.query_params
        team = self.store.team(ctx.params["slug"])
        project = self.store.project(team.id, ctx.params["pid"])
        file_name = q.get("fileName", "")
        size_text = q.get("size", "")
        if not file_name or not size_text.isdigit() or int(size_text) > MAX_BLOB_SIZE:
            raise HttpError(400, "fileName and size (bytes) are mandatory")
        size = int(size_text)
        seed = q.get("seed", "0")
        content_type = q.get("type", "application/octet-stream")
        folder_id = q.get("folderId") or None
        target = q.get("attachmentId") or None
        if folder_id is not None:
            try:
                if self.store.folder(folder_id).project_id != project.id:
                    raise NotFound(folder_id)
            except NotFound as exc:
                raise HttpError(404, "no such folder in this project") from exc
        if target is not None and self.store.attachment(target).project_id != project.id:
            raise HttpError(404, "no such attachment in this project")
        writer = self.store.blob_writer()

        def fill() -> None:
            for chunk in pseudo_random_chunks(seed, size):
                writer.write(chunk)

        try:
            # Generating gigabytes takes seconds: keep the event loop serving meanwhile.
            await asyncio.to_thread(fill)
            blob = writer.commit()
        except BaseException:
            writer.abort()
            raise
        user = self.store.team(team.slug).owner
        if target is None:
            att = self.store.create_attachment(
                project.id,
                file_name=file_name,
                name=file_name,
                type=content_type,
                blob=blob,
                size=size,
                user_id=user,
                folder_id=folder_id,
            )
        else:
            att = self.store.add_version(
                target, blob=blob, size=size, type=content_type, user_id=user, file_name=file_name
            )
        project = self.store.project_by_id(project.id)
        return json_response(attachment_json(att, project, self.store.user), 201)

    async def create_documents(self, ctx: Ctx) -> Response:
        """``POST /_emulator/teams/{slug}/projects/{pid}/documents`` ``{"count", "prefix",
        "extension", "size", "folderId"}``: ``count`` (at most 200 000) small documents named
        ``<prefix><n><extension>`` (n from 0, zero-padded to 6 digits), each holding its own
        name padded to ``size`` bytes (default 64), in one transaction: a large project in a
        second or two. Answers ``{"created": count}``."""
        body = await self._object(ctx)
        team = self.store.team(ctx.params["slug"])
        project = self.store.project(team.id, ctx.params["pid"])
        count, size = body.get("count"), body.get("size", 64)
        prefix, extension = body.get("prefix", "doc-"), body.get("extension", ".txt")
        folder_id = body.get("folderId") or None
        if not isinstance(count, int) or not 0 < count <= 200_000:
            raise HttpError(400, "count must be a whole number from 1 to 200000")
        if not isinstance(size, int) or not 0 <= size <= 1 << 20:
            raise HttpError(400, "size must be a whole number of bytes up to 1 MiB")
        if not isinstance(prefix, str) or not isinstance(extension, str):
            raise HttpError(400, "prefix and extension must be strings")
        if folder_id is not None:
            try:
                if self.store.folder(folder_id).project_id != project.id:
                    raise NotFound(folder_id)
            except NotFound as exc:
                raise HttpError(404, "no such folder in this project") from exc
        user = self.store.team(team.slug).owner

        def make() -> None:
            with self.store.transaction():
                for n in range(count):
                    name = f"{prefix}{n:06d}{extension}"
                    data = (name + "\n").encode().ljust(size, b".")[:size]
                    self.store.create_attachment(
                        project.id, file_name=name, name=name, type="text/plain",
                        blob=self.store.put_blob(data), size=size, user_id=user,
                        folder_id=folder_id,
                    )  # fmt: skip

        make()  # the database belongs to the event loop's thread; a second or two
        return json_response({"created": count}, 201)

    def routes(self) -> list[RouteSpec]:
        """The ``/_emulator`` routes."""

        def a(path: str, methods: list[str], handler: Any) -> RouteSpec:
            return route("/_emulator" + path, methods, handler, zone="admin", auth=False)

        return [
            a("/stats", ["GET"], self.stats),
            a("/stats/reset", ["POST"], self.reset_stats),
            a("/faults", ["GET"], self.get_faults),
            a("/faults", ["POST"], self.set_faults),
            a("/tokens/expire", ["POST"], self.expire_tokens),
            a("/teams", ["POST"], self.create_team),
            a("/teams/{slug}", ["PUT"], self.update_team),
            a("/teams/{slug}/projects", ["POST"], self.create_project),
            a("/teams/{slug}/projects/{pid}/blob", ["POST"], self.create_blob),
            a("/teams/{slug}/projects/{pid}/documents", ["POST"], self.create_documents),
            a("/projects/{pid}", ["PUT"], self.update_project),
            a("/attachments/{id}/rights", ["PUT"], self.set_rights),
        ]
