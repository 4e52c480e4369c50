"""Handlers of the Bimplus ``/v2`` routes (teams, projects, attachments, versions, folders)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from bimfs.emulator.app import (
    Ctx,
    HttpError,
    RouteSpec,
    State,
    json_response,
    read_json,
    read_small_body,
    route,
)
from bimfs.emulator.multipart import FirstPartParser, PartHeaders, parse_boundary
from bimfs.emulator.storage import (
    AttachmentRec,
    BlobWriter,
    FolderRec,
    NotFound,
    ProjectRec,
    TeamRec,
    UserRec,
)
from bimfs.emulator.transfer import BlobResponse, RangeNotSatisfiable, parse_range
from bimfs.emulator.views import (
    attachment_json,
    folder_json,
    folder_tree,
    project_json,
    team_json,
)

QUOTA_MESSAGE = "storage quota exceeded"


class BimplusApi:
    """The ``/v2`` handlers; ``routes()`` declares them."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.store = state.store
        self._users: dict[str, UserRec | None] = {}

    # -- helpers ---------------------------------------------------------------------------

    @property
    def quirks(self) -> bool:
        """Whether answers use the documented variants."""
        return self.state.faults.settings.quirks

    def _user(self, uid: str | None) -> UserRec | None:
        if uid is None:
            return None
        if uid not in self._users:
            self._users[uid] = self.store.user(uid)
        return self._users[uid]

    def _team(self, ctx: Ctx) -> TeamRec:
        return self.store.team(ctx.params["slug"])

    def _project(self, ctx: Ctx, team: TeamRec) -> ProjectRec:
        return self.store.project(team.id, ctx.params["pid"])

    def _attachment(self, ctx: Ctx) -> tuple[AttachmentRec, ProjectRec, TeamRec]:
        team = self._team(ctx)
        att = self.store.attachment(ctx.params["id"])
        project = self.store.project_by_id(att.project_id)
        if project.team_id != team.id:
            raise NotFound("attachment of another team")
        return att, project, team

    def _att_json(self, att: AttachmentRec, project: ProjectRec) -> dict[str, Any]:
        return attachment_json(att, project, self._user, quirks=self.quirks)

    @staticmethod
    def _need_write(project: ProjectRec) -> None:
        if not project.has_write_access:
            raise HttpError(403, "no write access to this project")

    @staticmethod
    def _need(att: AttachmentRec, right: str) -> None:
        if not getattr(att, f"r_{right}"):
            raise HttpError(403, f"the {right} right on this document is missing")

    def _version_number(self, ctx: Ctx) -> int:
        raw = str(ctx.params["n"])
        if not raw.isdigit() or len(raw) > 9:
            raise NotFound("no such version")
        return int(raw)

    # -- uploads ---------------------------------------------------------------------------

    def _keep_upload(
        self, writer: BlobWriter, record: Callable[[str], AttachmentRec]
    ) -> AttachmentRec:
        """Commit a received blob and ``record(blob_name)`` it; the blob file is removed again
        when recording fails, so no unreferenced blob is left behind."""
        blob = writer.commit()
        try:
            return record(blob)
        except BaseException:
            self.store.blob_path(blob).unlink(missing_ok=True)
            raise

    async def _receive_upload(
        self, ctx: Ctx, team: TeamRec, freed: int = 0
    ) -> tuple[PartHeaders, BlobWriter]:
        """Stream the first part of a multipart body into a new blob file.

        Enforces the team quota twice: from ``Content-Length`` as soon as the part's headers are
        known (exact for a one-part body), and on the real size while receiving. A
        drawn reset may cut the connection half way through the body. The caller commits or
        aborts the returned writer.
        """
        request = ctx.request
        boundary = parse_boundary(request.headers.get("content-type"))
        total = team.total_storage
        used = self.store.used_storage(team.id) - freed if total else 0
        length_header = request.headers.get("content-length", "")
        content_length = int(length_header) if length_header.isdigit() else None
        # What follows the content in a one-part body: the close delimiter and its CRLF.
        closing = len(b"\r\n--" + boundary + b"--\r\n")
        cut_at: int | None = None
        if ctx.draw.reset and self.state.faults.rng.random() < 0.5:
            cut_at = (content_length or 2) // 2
        parser = FirstPartParser(boundary)
        writer = self.store.blob_writer()
        headers: PartHeaders | None = None
        received = 0
        try:
            more = True
            while more and not parser.done:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                received += len(chunk)
                for event in parser.feed(chunk):
                    if isinstance(event, PartHeaders):
                        headers = event
                        if total and content_length is not None:
                            assert parser.content_offset is not None
                            least = content_length - parser.content_offset - closing
                            if used + least > total:
                                raise HttpError(403, self._quota_text(team, used))
                    else:
                        writer.write(event)
                        if total and used + writer.size > total:
                            raise HttpError(403, self._quota_text(team, used))
                if cut_at is not None and received >= cut_at:
                    await ctx.connection.drop()
            parser.finish()
            assert headers is not None
        except BaseException:
            writer.abort()
            raise
        return headers, writer

    @staticmethod
    def _quota_text(team: TeamRec, used: int) -> str:
        return (
            f"{QUOTA_MESSAGE}: team {team.slug} uses {used} of {team.total_storage} bytes"
            " and the upload does not fit"
        )

    @staticmethod
    async def _answer_upload(ctx: Ctx, data: dict[str, Any], status: int) -> Response:
        # A drawn reset that did not cut the body (see _receive_upload) cuts the answer: the
        # upload is stored but the client cannot know it.
        if ctx.draw.reset:
            await ctx.connection.drop()
        return json_response(data, status)

    # -- account ---------------------------------------------------------------------------

    async def teams(self, ctx: Ctx) -> Response:
        """``GET /v2/teams``."""
        return json_response(
            [
                team_json(t, self.store.used_storage(t.id), quirks=self.quirks)
                for t in self.store.teams()
            ]
        )

    async def all_projects(self, ctx: Ctx) -> Response:
        """``GET /v2/projects``: the projects of every team."""
        return json_response([project_json(p, quirks=self.quirks) for p in self.store.projects()])

    # -- team ------------------------------------------------------------------------------

    async def projects(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/projects``."""
        team = self._team(ctx)
        return json_response(
            [project_json(p, quirks=self.quirks) for p in self.store.projects(team.id)]
        )

    async def project(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/projects/{pid}``."""
        team = self._team(ctx)
        return json_response(project_json(self._project(ctx, team), quirks=self.quirks))

    async def project_attachments(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/projects/{pid}/attachments`` (``projectOnly``, ``attachmentType``)."""
        team = self._team(ctx)
        project = self._project(ctx, team)
        wanted = ctx.request.query_params.get("attachmentType")
        result = [
            self._att_json(att, project)
            for att in self.store.attachments(project.id)
            if not wanted or att.attachment_type.lower() == wanted.lower()
        ]
        return json_response(result)

    async def create_attachment(self, ctx: Ctx) -> Response:
        """``POST /v2/{slug}/projects/{pid}/attachments`` and ``.../objects/{pid}/attachments``,
        optionally ``?DocumentFolderId=<fid>``."""
        team = self._team(ctx)
        project = self._project(ctx, team)
        self._need_write(project)
        folder_id = None
        for name, value in ctx.request.query_params.items():
            if name.lower() == "documentfolderid" and value:
                folder_id = value
        if folder_id is not None:
            try:
                folder = self.store.folder(folder_id)
            except NotFound as exc:
                raise HttpError(404, "no such document folder") from exc
            if folder.project_id != project.id:
                raise HttpError(404, "no such document folder in this project")
        headers, writer = await self._receive_upload(ctx, team)
        att = self._keep_upload(
            writer,
            lambda blob: self.store.create_attachment(
                project.id,
                file_name=headers.filename,
                name=headers.name,
                type=headers.content_type,
                blob=blob,
                size=writer.size,
                user_id=ctx.user_id,
                folder_id=folder_id,
                classification=headers.classification or "",
                tag=headers.tag or "",
            ),
        )
        project = self.store.project_by_id(project.id)
        return await self._answer_upload(ctx, self._att_json(att, project), 201)

    async def delete_all_attachments(self, ctx: Ctx) -> Response:
        """``DELETE /v2/{slug}/projects/{pid}/attachments``: deletes EVERY document of the
        project, as the real call does (clients must never send it)."""
        team = self._team(ctx)
        project = self._project(ctx, team)
        self._need_write(project)
        self.store.delete_project_attachments(project.id)
        return Response(status_code=200)

    # -- attachments -----------------------------------------------------------------------

    async def get_attachment(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/attachments/{id}``: the latest version."""
        att, project, _ = self._attachment(ctx)
        return json_response(self._att_json(att, project))

    async def put_attachment(self, ctx: Ctx) -> Response:
        """``PUT /v2/{slug}/attachments/{id}``: JSON changes metadata, multipart replaces the
        latest version's content."""
        att, project, team = self._attachment(ctx)
        self._need_write(project)
        self._need(att, "update")
        content_type = ctx.request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/"):
            headers, writer = await self._receive_upload(ctx, team, freed=att.version.size)
            aid = att.id
            att = self._keep_upload(
                writer,
                lambda blob: self.store.replace_latest(
                    aid,
                    blob=blob,
                    size=writer.size,
                    type=headers.content_type,
                    user_id=ctx.user_id,
                    file_name=headers.filename,
                    name=headers.name,
                    classification=headers.classification,
                    tag=headers.tag,
                ),
            )
            return await self._answer_upload(ctx, self._att_json(att, project), 200)
        body = await read_json(ctx.request)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        changes: dict[str, str] = {}
        for key in ("fileName", "type", "classification", "tag"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise HttpError(400, f"{key} must be a string")
            changes[key] = value
        if "fileName" in changes and not changes["fileName"]:
            raise HttpError(400, "fileName must not be empty")
        if "type" in changes and not changes["type"]:
            raise HttpError(400, "type must not be empty")
        att = self.store.update_metadata(
            att.id,
            file_name=changes.get("fileName"),
            type=changes.get("type"),
            classification=changes.get("classification"),
            tag=changes.get("tag"),
            user_id=ctx.user_id,
        )
        return json_response(self._att_json(att, project))

    async def delete_attachment(self, ctx: Ctx) -> Response:
        """``DELETE /v2/{slug}/attachments/{id}``."""
        att, project, _ = self._attachment(ctx)
        self._need_write(project)
        self._need(att, "delete")
        self.store.delete_attachment(att.id)
        return Response(status_code=200)

    async def release(self, ctx: Ctx) -> Response:
        """``PUT /v2/{slug}/attachments/{id}/release``: share the latest version."""
        att, project, _ = self._attachment(ctx)
        await read_small_body(ctx.request)  # the documented JSON body carries nothing we use
        self._need(att, "share")
        att = self.store.release(att.id, ctx.user_id)
        return json_response(self._att_json(att, project))

    def _download(self, ctx: Ctx, att: AttachmentRec) -> Response | BlobResponse:
        self._need(att, "download")
        ver = att.version
        settings = self.state.faults.settings
        etag = f'"{ver.hash}"'
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": etag,
            "Cache-Control": "private, no-cache",
        }
        if settings.range_enabled:
            headers["Accept-Ranges"] = "bytes"
        if_none_match = ctx.request.headers.get("if-none-match")
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=304, headers={"ETag": etag})
        status, offset, length = 200, 0, ver.size
        if settings.range_enabled:
            try:
                wanted = parse_range(ctx.request.headers.get("range"), ver.size)
            except RangeNotSatisfiable as exc:
                raise HttpError(
                    416, "range not satisfiable", {"Content-Range": f"bytes */{ver.size}"}
                ) from exc
            if wanted is not None:
                first, last = wanted
                status, offset, length = 206, first, last - first + 1
                headers["Content-Range"] = f"bytes {first}-{last}/{ver.size}"
        cut_at = None
        if ctx.draw.reset:
            cut_at = BlobResponse.choose_cut(length, self.state.faults.rng)
        return BlobResponse(
            self.store.blob_path(ver.blob),
            status=status,
            headers=headers,
            offset=offset,
            length=length,
            connection=ctx.connection,
            stream_rate=settings.stream_rate,
            cut_at=cut_at,
        )

    async def download(self, ctx: Ctx) -> Response | BlobResponse:
        """``GET /v2/{slug}/attachments/{id}/download``: the latest version's bytes."""
        att, _, _ = self._attachment(ctx)
        return self._download(ctx, att)

    # -- versions --------------------------------------------------------------------------

    async def versions(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/attachments/{id}/versions``: oldest first."""
        att, project, _ = self._attachment(ctx)
        return json_response(
            [self._att_json(v, project) for v in self.store.attachment_versions(att.id)]
        )

    async def new_version(self, ctx: Ctx) -> Response:
        """``POST /v2/{slug}/attachments/{id}/versions``: 201 with the new version."""
        att, project, team = self._attachment(ctx)
        self._need_write(project)
        self._need(att, "update")
        headers, writer = await self._receive_upload(ctx, team)
        aid = att.id
        att = self._keep_upload(
            writer,
            lambda blob: self.store.add_version(
                aid,
                blob=blob,
                size=writer.size,
                type=headers.content_type,
                user_id=ctx.user_id,
                file_name=headers.filename,
                name=headers.name,
                classification=headers.classification,
                tag=headers.tag,
            ),
        )
        return await self._answer_upload(ctx, self._att_json(att, project), 201)

    async def version_download(self, ctx: Ctx) -> Response | BlobResponse:
        """``GET /v2/{slug}/attachments/{id}/versions/{n}/download``."""
        att, _, _ = self._attachment(ctx)
        return self._download(ctx, self.store.attachment_version(att.id, self._version_number(ctx)))

    async def delete_version(self, ctx: Ctx) -> Response:
        """``DELETE /v2/{slug}/attachments/{id}/versions/{n}`` (409 for the only version)."""
        att, project, _ = self._attachment(ctx)
        number = self._version_number(ctx)
        self.store.attachment_version(att.id, number)
        self._need_write(project)
        self._need(att, "delete")
        if self.store.version_count(att.id) <= 1:
            raise HttpError(409, "cannot delete the only version of a document")
        self.store.delete_version(att.id, number)
        return Response(status_code=200)

    # -- document folders ------------------------------------------------------------------

    async def structures(self, ctx: Ctx) -> Response:
        """``GET /v2/{slug}/projects/{pid}/structures?type=DocumentFolder``."""
        team = self._team(ctx)
        project = self._project(ctx, team)
        kind = ctx.request.query_params.get("type")
        if kind and kind.lower() != "documentfolder":
            return json_response([])
        tree = folder_tree(self.store.folders(project.id), self.store.attachments(project.id))
        return json_response(tree)

    async def create_structure(self, ctx: Ctx) -> Response:
        """``POST /v2/{slug}/projects/{pid}/structures``: a new document folder."""
        team = self._team(ctx)
        project = self._project(ctx, team)
        body = await read_json(ctx.request)
        self._need_write(project)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HttpError(400, "name is mandatory")
        kind = body.get("type", "DocumentFolder")
        if not isinstance(kind, str) or kind.lower() != "documentfolder":
            raise HttpError(400, "only DocumentFolder structures can be created")
        parent = body.get("parent") or None
        if parent is not None:
            if not isinstance(parent, str):
                raise HttpError(400, "parent must be a folder id or null")
            try:
                parent_folder = self.store.folder(parent)
            except NotFound as exc:
                raise HttpError(404, "no such parent folder") from exc
            if parent_folder.project_id != project.id:
                raise HttpError(404, "no such parent folder in this project")
        try:
            folder = self.store.create_folder(project.id, parent, name)
        except ValueError as exc:
            raise HttpError(409, "a folder of that name exists in the parent") from exc
        return json_response(folder_json(folder), 201)

    def _folder(self, ctx: Ctx) -> tuple[FolderRec, ProjectRec]:
        team = self._team(ctx)
        folder = self.store.folder(ctx.params["fid"])
        project = self.store.project_by_id(folder.project_id)
        if project.team_id != team.id:
            raise NotFound("folder of another team")
        return folder, project

    async def delete_structure(self, ctx: Ctx) -> Response:
        """``DELETE /v2/{slug}/structures/{fid}`` (409 unless empty)."""
        folder, project = self._folder(ctx)
        self._need_write(project)
        if not self.store.folder_is_empty(folder.id):
            raise HttpError(409, "the folder is not empty")
        self.store.delete_folder(folder.id)
        return Response(status_code=200)

    # -- routing ---------------------------------------------------------------------------

    def routes(self) -> list[RouteSpec]:
        """The ``/v2`` routes of this API (login routes are declared by ``auth``)."""

        def v2(path: str, methods: list[str], handler: Any) -> RouteSpec:
            return route("/v2" + path, methods, handler, zone="v2", auth=True)

        return [
            v2("/teams", ["GET"], self.teams),
            v2("/projects", ["GET"], self.all_projects),
            v2("/{slug}/projects", ["GET"], self.projects),
            v2("/{slug}/projects/{pid}", ["GET"], self.project),
            v2("/{slug}/projects/{pid}/attachments", ["GET"], self.project_attachments),
            v2("/{slug}/projects/{pid}/attachments", ["POST"], self.create_attachment),
            v2("/{slug}/projects/{pid}/attachments", ["DELETE"], self.delete_all_attachments),
            v2("/{slug}/objects/{pid}/attachments", ["POST"], self.create_attachment),
            v2("/{slug}/objects/{pid}/attachments", ["DELETE"], self.delete_all_attachments),
            v2("/{slug}/projects/{pid}/structures", ["GET"], self.structures),
            v2("/{slug}/projects/{pid}/structures", ["POST"], self.create_structure),
            v2("/{slug}/structures/{fid}", ["DELETE"], self.delete_structure),
            v2("/{slug}/attachments/{id}", ["GET"], self.get_attachment),
            v2("/{slug}/attachments/{id}", ["PUT"], self.put_attachment),
            v2("/{slug}/attachments/{id}", ["DELETE"], self.delete_attachment),
            v2("/{slug}/attachments/{id}/download", ["GET"], self.download),
            v2("/{slug}/attachments/{id}/release", ["PUT"], self.release),
            v2("/{slug}/attachments/{id}/versions", ["GET"], self.versions),
            v2("/{slug}/attachments/{id}/versions", ["POST"], self.new_version),
            v2("/{slug}/attachments/{id}/versions/{n}/download", ["GET"], self.version_download),
            v2("/{slug}/attachments/{id}/versions/{n}", ["DELETE"], self.delete_version),
        ]
