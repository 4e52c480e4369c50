"""The state of the in-memory Bimplus account behind ``FakeRemote`` (see
``tests/support/fake_remote.py``): teams, projects, documents with their versions, folders and
users, the server's rules (rights, version numbers, folders), and synchronous helpers for tests
to set up and check (``upload``, ``new_version``, ``content``, ``docs``, ``versions``)."""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field, replace

from bimfs.api.errors import ForbiddenError, NotFoundError
from bimfs.api.models import Attachment, FolderNode, Project, Rights, User

__all__ = ["DEMO", "SLUG", "TOM", "FakeServer", "FakeUser", "FolderRecord", "server_now"]

SLUG = "bimfs-demo"


@dataclass(frozen=True)
class FakeUser:
    id: str
    email: str
    name: str

    @property
    def user(self) -> User:
        return User(id=self.id, email=self.email, display_name=self.name)


DEMO = FakeUser("5b0c3f1e-6f0a-4c36-9d1e-0d3c2a7e9b01", "demo@bimfs.test", "Demo User")
TOM = FakeUser("a41f2c6d-9b7e-4e55-8c13-6d2e0f3b8c03", "tom.keller@acme.test", "Tom Keller")


def server_now() -> float:
    """The server's clock, to the millisecond the emulator's answers carry."""
    return int(time.time() * 1000) / 1000


@dataclass
class _Version:
    number: int
    data: bytes
    type: str
    changed: float
    changed_by: FakeUser
    hash: str


@dataclass
class _Doc:
    id: str
    project_id: str
    file_name: str
    name: str
    created_at: float
    creator: FakeUser
    folder_id: str | None
    classification: str = ""
    tag: str = ""
    versions: list[_Version] = field(default_factory=list)
    next_version: int = 1
    rights: Rights = field(default_factory=Rights)
    release: bool = False
    shared_date: float | None = None
    attachment_type: str = "Document"


@dataclass
class FolderRecord:
    id: str
    project_id: str
    parent_id: str | None
    name: str


@dataclass
class _Project:
    id: str
    slug: str
    name: str
    created: float
    changed: float
    has_write_access: bool = True


class FakeServer:
    """The account's data, shared by every ``FakeRemote`` made from it."""

    def __init__(self, slug: str = SLUG) -> None:
        self.slug = slug
        self.team_id = "t-" + slug
        self.projects: dict[str, _Project] = {}
        self.docs_by_id: dict[str, _Doc] = {}  # insertion order is creation order
        self.folders: dict[str, FolderRecord] = {}
        self._ids = itertools.count(1)

    def new_id(self, kind: str) -> str:
        return f"{kind}{next(self._ids):06d}-0000-4000-8000-000000000000"

    # ---- set-up and checks (synchronous, as the acting user given) --------------------------

    def add_project(self, name: str, *, has_write_access: bool = True) -> Project:
        now = server_now()
        proj = _Project(self.new_id("p"), self.slug, name, now, now, has_write_access)
        self.projects[proj.id] = proj
        return self.project_model(proj)

    def upload(
        self,
        pid: str,
        file_name: str,
        data: bytes,
        *,
        user: FakeUser = DEMO,
        folder_id: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> Attachment:
        return self.create(pid, file_name, data, user, content_type, folder_id)

    def new_version(
        self,
        aid: str,
        data: bytes,
        *,
        user: FakeUser = DEMO,
        file_name: str | None = None,
        content_type: str | None = None,
    ) -> Attachment:
        doc = self.doc(aid)
        return self.add_version(doc, data, user, file_name or doc.file_name, content_type)

    def content(self, aid: str, version: int | None = None) -> bytes:
        return self.version_of(self.doc(aid), version).data

    def docs(self, pid: str) -> dict[str, Attachment]:
        """The project's documents by name (names are unique in what tests check)."""
        return {d.file_name: self.model(d) for d in self.docs_by_id.values() if d.project_id == pid}

    def versions(self, aid: str) -> list[Attachment]:
        doc = self.doc(aid)
        return [self.model(doc, v) for v in doc.versions]

    def set_rights(self, aid: str, **rights: bool) -> None:
        doc = self.doc(aid)
        doc.rights = replace(doc.rights, **rights)

    def set_write_access(self, pid: str, allowed: bool) -> None:
        self.project(pid).has_write_access = allowed

    # ---- the state ---------------------------------------------------------------------------

    def team(self, slug: str) -> None:
        if slug != self.slug:
            raise NotFoundError(404, f"no team {slug}")

    def project(self, pid: str) -> _Project:
        try:
            return self.projects[pid]
        except KeyError:
            raise NotFoundError(404, f"no project {pid}") from None

    def doc(self, aid: str) -> _Doc:
        try:
            return self.docs_by_id[aid]
        except KeyError:
            raise NotFoundError(404, f"no attachment {aid}") from None

    def version_of(self, doc: _Doc, number: int | None) -> _Version:
        if number is None:
            return doc.versions[-1]
        for v in doc.versions:
            if v.number == number:
                return v
        raise NotFoundError(404, f"no version {number} of {doc.id}")

    def touch(self, pid: str, when: float) -> None:
        self.project(pid).changed = when

    def need_write(self, pid: str) -> None:
        if not self.project(pid).has_write_access:
            raise ForbiddenError(403, "no write access to this project")

    @staticmethod
    def need(doc: _Doc, right: str) -> None:
        if not getattr(doc.rights, right):
            raise ForbiddenError(403, f"the {right} right on this document is missing")

    def _version(self, doc: _Doc, data: bytes, user: FakeUser, ctype: str, when: float) -> None:
        digest = hashlib.sha1(f"{doc.id}/{doc.next_version}/{when}".encode()).hexdigest()
        doc.versions.append(_Version(doc.next_version, data, ctype, when, user, digest))
        doc.next_version += 1

    def create(
        self,
        pid: str,
        file_name: str,
        data: bytes,
        user: FakeUser,
        content_type: str,
        folder_id: str | None,
        classification: str | None = None,
        tag: str | None = None,
    ) -> Attachment:
        self.need_write(pid)
        if folder_id is not None:
            folder = self.folders.get(folder_id)
            if folder is None or folder.project_id != pid:
                raise NotFoundError(404, "no such document folder in this project")
        when = server_now()
        doc = _Doc(self.new_id("a"), pid, file_name, file_name, when, user, folder_id,
                   classification or "", tag or "")  # fmt: skip
        self._version(doc, data, user, content_type, when)
        self.docs_by_id[doc.id] = doc
        self.touch(pid, when)
        return self.model(doc)

    def add_version(
        self,
        doc: _Doc,
        data: bytes,
        user: FakeUser,
        file_name: str,
        content_type: str | None,
        classification: str | None = None,
        tag: str | None = None,
    ) -> Attachment:
        self.need_write(doc.project_id)
        self.need(doc, "update")
        when = server_now()
        self._version(doc, data, user, content_type or "application/octet-stream", when)
        doc.file_name = doc.name = file_name
        if classification is not None:
            doc.classification = classification
        if tag is not None:
            doc.tag = tag
        self.touch(doc.project_id, when)
        return self.model(doc)

    def model(self, doc: _Doc, version: _Version | None = None) -> Attachment:
        """A document (its newest version, or ``version``) as the client parses it."""
        ver = version or doc.versions[-1]
        writable = self.project(doc.project_id).has_write_access
        rights = Rights(
            update=doc.rights.update and writable,
            share=doc.rights.share,
            delete=doc.rights.delete and writable,
            download=doc.rights.download,
        )
        return Attachment(
            id=doc.id, file_name=doc.file_name, name=doc.name, type=ver.type,
            size=len(ver.data), created_at=doc.created_at, changed=ver.changed,
            creator=doc.creator.user, changed_by=ver.changed_by.user,
            attachment_type=doc.attachment_type, hash=ver.hash,
            classification=doc.classification, tag=doc.tag, version=ver.number, rights=rights,
            release=doc.release, related_id=doc.project_id, shared_date=doc.shared_date,
        )  # fmt: skip

    def project_model(self, proj: _Project) -> Project:
        docs = [d for d in self.docs_by_id.values() if d.project_id == proj.id]
        return Project(
            id=proj.id, name=proj.name, team_slug=proj.slug,
            has_write_access=proj.has_write_access, created=proj.created, changed=proj.changed,
            size=sum(len(v.data) for d in docs for v in d.versions), attachment_count=len(docs),
        )  # fmt: skip

    def folder_nodes(self, pid: str) -> list[FolderNode]:
        def node(folder: FolderRecord) -> FolderNode:
            subs = [node(f) for f in self.folders.values() if f.parent_id == folder.id]
            docs = [
                FolderNode(d.id, d.file_name, "Attachment", folder.id)
                for d in self.docs_by_id.values()
                if d.folder_id == folder.id
            ]
            return FolderNode(folder.id, folder.name, "DocumentFolder", folder.parent_id,
                              tuple(subs + docs))  # fmt: skip

        return [
            node(f)
            for f in self.folders.values()
            if f.project_id == pid and (f.parent_id is None or f.parent_id not in self.folders)
        ]
