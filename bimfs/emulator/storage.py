"""Persistent state of the emulator: metadata in SQLite, content as files.

Layout of a data dir::

    emulator.sqlite3      teams, projects, folders, attachments, versions, users, tokens (WAL)
    blobs/<uuid>          the bytes of one version (never rewritten: a new version is a new blob)
    tmp/                  uploads being received; emptied at start-up

An upload streams into ``tmp/`` and is renamed into ``blobs/`` only when complete and accepted,
so a refused or interrupted upload never leaves a partial blob. Blobs that no row references
(left by a crash between rename and commit) are removed at start-up.

All calls are synchronous: the emulator runs one event loop in one thread and SQLite answers
these small queries in microseconds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL, password TEXT,
    firstname TEXT NOT NULL DEFAULT '', lastname TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS teams (
    id TEXT PRIMARY KEY, slug TEXT UNIQUE NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL,
    total_storage INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, team_id TEXT NOT NULL, name TEXT NOT NULL,
    short_descr TEXT NOT NULL DEFAULT '', created REAL NOT NULL, changed REAL NOT NULL,
    has_write_access INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS projects_team ON projects(team_id);
CREATE TABLE IF NOT EXISTS folders (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, parent_id TEXT, name TEXT NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS folders_project ON folders(project_id);
CREATE TABLE IF NOT EXISTS attachments (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, folder_id TEXT, name TEXT NOT NULL,
    file_name TEXT NOT NULL, attachment_type TEXT NOT NULL DEFAULT 'Document',
    classification TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, creator_id TEXT NOT NULL, next_version INTEGER NOT NULL,
    release INTEGER NOT NULL DEFAULT 0, shared_date REAL, shared_by TEXT,
    r_update INTEGER NOT NULL DEFAULT 1, r_share INTEGER NOT NULL DEFAULT 1,
    r_delete INTEGER NOT NULL DEFAULT 1, r_download INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS attachments_project ON attachments(project_id);
CREATE TABLE IF NOT EXISTS versions (
    attachment_id TEXT NOT NULL, number INTEGER NOT NULL, hash TEXT NOT NULL,
    size INTEGER NOT NULL, type TEXT NOT NULL, changed REAL NOT NULL, changed_by TEXT NOT NULL,
    blob TEXT NOT NULL, PRIMARY KEY (attachment_id, number));
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, user_id TEXT NOT NULL,
    client_id TEXT NOT NULL DEFAULT '', scope TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    expires_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS codes (
    code TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    challenge TEXT NOT NULL, user_id TEXT NOT NULL, scope TEXT NOT NULL,
    expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
"""

DEMO_USER_ID = "5b0c3f1e-6f0a-4c36-9d1e-0d3c2a7e9b01"
DEMO_EMAIL = "demo@bimfs.test"
DEMO_PASSWORD = "demo"


class NotFound(LookupError):
    """A looked-up object does not exist."""


@dataclass(frozen=True, slots=True)
class UserRec:
    """A user (creator, changedBy, sharedBy, the token's owner)."""

    id: str
    email: str
    firstname: str
    lastname: str
    company: str


@dataclass(frozen=True, slots=True)
class TeamRec:
    """A team row."""

    id: str
    slug: str
    name: str
    owner: str
    total_storage: int
    created: float


@dataclass(frozen=True, slots=True)
class ProjectRec:
    """A project row with its computed size (all stored versions) and document count."""

    id: str
    team_id: str
    team_slug: str
    name: str
    short_descr: str
    created: float
    changed: float
    has_write_access: bool
    size: int = 0
    attachment_count: int = 0


@dataclass(frozen=True, slots=True)
class FolderRec:
    """A document folder."""

    id: str
    project_id: str
    parent_id: str | None
    name: str
    created: float


@dataclass(frozen=True, slots=True)
class VersionRec:
    """One stored version of a document."""

    attachment_id: str
    number: int
    hash: str
    size: int
    type: str
    changed: float
    changed_by: str
    blob: str


@dataclass(frozen=True, slots=True)
class AttachmentRec:
    """A document with one of its versions (the latest, unless listing versions)."""

    id: str
    project_id: str
    folder_id: str | None
    name: str
    file_name: str
    attachment_type: str
    classification: str
    tag: str
    created_at: float
    creator_id: str
    release: bool
    shared_date: float | None
    shared_by: str | None
    r_update: bool
    r_share: bool
    r_delete: bool
    r_download: bool
    version: VersionRec


_ATT_COLS = (
    "a.id, a.project_id, a.folder_id, a.name, a.file_name, a.attachment_type, a.classification,"
    " a.tag, a.created_at, a.creator_id, a.release, a.shared_date, a.shared_by, a.r_update,"
    " a.r_share, a.r_delete, a.r_download, v.attachment_id, v.number, v.hash, v.size, v.type,"
    " v.changed, v.changed_by, v.blob"
)
_LATEST = "v.number = (SELECT MAX(number) FROM versions WHERE attachment_id = a.id)"


def _attachment(row: tuple[Any, ...]) -> AttachmentRec:
    return AttachmentRec(
        id=row[0],
        project_id=row[1],
        folder_id=row[2],
        name=row[3],
        file_name=row[4],
        attachment_type=row[5],
        classification=row[6],
        tag=row[7],
        created_at=row[8],
        creator_id=row[9],
        release=bool(row[10]),
        shared_date=row[11],
        shared_by=row[12],
        r_update=bool(row[13]),
        r_share=bool(row[14]),
        r_delete=bool(row[15]),
        r_download=bool(row[16]),
        version=VersionRec(*row[17:25]),
    )


def new_id() -> str:
    """A fresh GUID string, as Bimplus uses for ids and hashes."""
    return str(uuid.uuid4())


class BlobWriter:
    """Receives one upload into ``tmp/``; ``commit`` moves it into ``blobs/``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.name = new_id()
        self.tmp_path = store.tmp_dir / self.name
        self._file: IO[bytes] | None = open(self.tmp_path, "wb")  # noqa: SIM115 (closed below)
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append content."""
        assert self._file is not None
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> str:
        """Close and move into ``blobs/``; returns the blob name."""
        if self._file is not None:
            self._file.close()
            self._file = None
        os.replace(self.tmp_path, self._store.blob_path(self.name))
        return self.name

    def abort(self) -> None:
        """Close and delete the partial file. Idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class Store:
    """The emulator's persistent state (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.tmp_dir = self.data_dir / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        self.db = sqlite3.connect(self.data_dir / "emulator.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._remove_orphan_blobs()
        self.ensure_user(DEMO_USER_ID, DEMO_EMAIL, DEMO_PASSWORD, "Demo", "User", "bimfs")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic SQLite transaction (nested calls join the outer one)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _remove_orphan_blobs(self) -> None:
        known = {row[0] for row in self.db.execute("SELECT blob FROM versions")}
        for path in self.blob_dir.iterdir():
            if path.name not in known:
                with contextlib.suppress(OSError):
                    path.unlink()

    def blob_path(self, name: str) -> Path:
        """Where a blob lives."""
        return self.blob_dir / name

    def blob_writer(self) -> BlobWriter:
        """Start receiving an upload."""
        return BlobWriter(self)

    def put_blob(self, data: bytes) -> str:
        """Store small content in one go (seeding); returns the blob name."""
        writer = self.blob_writer()
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def _drop_blobs(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.blob_path(name).unlink()

    # -- meta ------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A stored setting (the token-signing secret, seed markers)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def is_empty(self) -> bool:
        """True when no team exists (seeding only runs then)."""
        return self.db.execute("SELECT 1 FROM teams LIMIT 1").fetchone() is None

    # -- users -----------------------------------------------------------------------------

    def ensure_user(
        self,
        uid: str,
        email: str,
        password: str | None,
        firstname: str,
        lastname: str,
        company: str,
    ) -> None:
        """Create a user unless one with this id exists."""
        self.db.execute(
            "INSERT OR IGNORE INTO users (id, email, password, firstname, lastname, company)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (uid, email, password, firstname, lastname, company),
        )

    def user(self, uid: str | None) -> UserRec | None:
        """A user by id (None for None)."""
        if uid is None:
            return None
        row = self.db.execute(
            "SELECT id, email, firstname, lastname, company FROM users WHERE id = ?", (uid,)
        ).fetchone()
        return None if row is None else UserRec(*row)

    def check_password(self, email: str, password: str) -> UserRec | None:
        """The user with these credentials (email case-insensitive), else None."""
        row = self.db.execute(
            "SELECT id, email, firstname, lastname, company, password FROM users"
            " WHERE lower(email) = lower(?)",
            (email.strip(),),
        ).fetchone()
        if row is None or row[5] is None or row[5] != password:
            return None
        return UserRec(*row[:5])

    # -- teams -----------------------------------------------------------------------------

    def teams(self) -> list[TeamRec]:
        """All teams, oldest first."""
        rows = self.db.execute(
            "SELECT id, slug, name, owner, total_storage, created FROM teams ORDER BY created, slug"
        )
        return [TeamRec(*row) for row in rows]

    def team(self, slug: str) -> TeamRec:
        """A team by slug; ``NotFound`` otherwise."""
        row = self.db.execute(
            "SELECT id, slug, name, owner, total_storage, created FROM teams WHERE slug = ?",
            (slug,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no team {slug}")
        return TeamRec(*row)

    def create_team(
        self,
        slug: str,
        name: str,
        total_storage: int = 0,
        *,
        tid: str | None = None,
        created: float | None = None,
    ) -> TeamRec:
        """Create a team owned by the demo user. ``ValueError`` if the slug is taken."""
        try:
            self.db.execute(
                "INSERT INTO teams (id, slug, name, owner, total_storage, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (tid or new_id(), slug, name, DEMO_USER_ID, total_storage, created or time.time()),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"team {slug} exists") from exc
        return self.team(slug)

    def set_team_storage(self, slug: str, total_storage: int) -> TeamRec:
        """Change a team's quota (0 = unlimited)."""
        team = self.team(slug)
        self.db.execute("UPDATE teams SET total_storage = ? WHERE id = ?", (total_storage, team.id))
        return self.team(slug)

    def used_storage(self, team_id: str) -> int:
        """The sum of the sizes of every stored version of every document of the team."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(v.size), 0) FROM versions v"
            " JOIN attachments a ON a.id = v.attachment_id"
            " JOIN projects p ON p.id = a.project_id WHERE p.team_id = ?",
            (team_id,),
        ).fetchone()
        return int(row[0])

    # -- projects --------------------------------------------------------------------------

    def projects(self, team_id: str | None = None) -> list[ProjectRec]:
        """The projects of a team (or of all teams), in creation order."""
        where = "WHERE p.team_id = ?" if team_id else ""
        args: tuple[Any, ...] = (team_id,) if team_id else ()
        rows = self.db.execute(
            "SELECT p.id, p.team_id, t.slug, p.name, p.short_descr, p.created, p.changed,"
            " p.has_write_access,"
            " (SELECT COALESCE(SUM(v.size), 0) FROM versions v JOIN attachments a"
            "   ON a.id = v.attachment_id WHERE a.project_id = p.id),"
            " (SELECT COUNT(*) FROM attachments a WHERE a.project_id = p.id)"
            f" FROM projects p JOIN teams t ON t.id = p.team_id {where}"
            " ORDER BY t.created, t.slug, p.created, p.id",
            args,
        )
        return [self._project(row) for row in rows]

    @staticmethod
    def _project(row: tuple[Any, ...]) -> ProjectRec:
        return ProjectRec(
            id=row[0],
            team_id=row[1],
            team_slug=row[2],
            name=row[3],
            short_descr=row[4],
            created=row[5],
            changed=row[6],
            has_write_access=bool(row[7]),
            size=int(row[8]),
            attachment_count=int(row[9]),
        )

    def project(self, team_id: str, pid: str) -> ProjectRec:
        """A project of a team; ``NotFound`` otherwise."""
        for project in self._projects_where("p.id = ? AND p.team_id = ?", (pid, team_id)):
            return project
        raise NotFound(f"no project {pid}")

    def project_by_id(self, pid: str) -> ProjectRec:
        """A project of any team; ``NotFound`` otherwise."""
        for project in self._projects_where("p.id = ?", (pid,)):
            return project
        raise NotFound(f"no project {pid}")

    def _projects_where(self, cond: str, args: tuple[Any, ...]) -> list[ProjectRec]:
        rows = self.db.execute(
            "SELECT p.id, p.team_id, t.slug, p.name, p.short_descr, p.created, p.changed,"
            " p.has_write_access,"
            " (SELECT COALESCE(SUM(v.size), 0) FROM versions v JOIN attachments a"
            "   ON a.id = v.attachment_id WHERE a.project_id = p.id),"
            " (SELECT COUNT(*) FROM attachments a WHERE a.project_id = p.id)"
            f" FROM projects p JOIN teams t ON t.id = p.team_id WHERE {cond}",
            args,
        )
        return [self._project(row) for row in rows]

    def create_project(
        self,
        team_id: str,
        name: str,
        *,
        has_write_access: bool = True,
        short_descr: str = "",
        pid: str | None = None,
        created: float | None = None,
    ) -> ProjectRec:
        """Create a project."""
        pid = pid or new_id()
        when = created or time.time()
        self.db.execute(
            "INSERT INTO projects (id, team_id, name, short_descr, created, changed,"
            " has_write_access) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pid, team_id, name, short_descr, when, when, int(has_write_access)),
        )
        return self.project(team_id, pid)

    def set_project_write_access(self, pid: str, has_write_access: bool) -> ProjectRec:
        """Grant or revoke write access to a project."""
        project = self.project_by_id(pid)
        self.db.execute(
            "UPDATE projects SET has_write_access = ? WHERE id = ?", (int(has_write_access), pid)
        )
        return self.project(project.team_id, pid)

    def touch_project(self, pid: str, when: float | None = None) -> None:
        """Record a change in a project."""
        self.db.execute("UPDATE projects SET changed = ? WHERE id = ?", (when or time.time(), pid))

    # -- folders ---------------------------------------------------------------------------

    def folders(self, pid: str) -> list[FolderRec]:
        """Every document folder of a project."""
        rows = self.db.execute(
            "SELECT id, project_id, parent_id, name, created FROM folders WHERE project_id = ?"
            " ORDER BY created, id",
            (pid,),
        )
        return [FolderRec(*row) for row in rows]

    def folder(self, fid: str) -> FolderRec:
        """A folder by id; ``NotFound`` otherwise."""
        row = self.db.execute(
            "SELECT id, project_id, parent_id, name, created FROM folders WHERE id = ?", (fid,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no folder {fid}")
        return FolderRec(*row)

    def create_folder(
        self,
        pid: str,
        parent_id: str | None,
        name: str,
        *,
        fid: str | None = None,
        created: float | None = None,
    ) -> FolderRec:
        """Create a folder; ``ValueError`` if the parent already has a folder of that name."""
        clash = self.db.execute(
            "SELECT 1 FROM folders WHERE project_id = ? AND parent_id IS ? AND name = ?",
            (pid, parent_id, name),
        ).fetchone()
        if clash:
            raise ValueError(f"a folder named {name} exists there")
        fid = fid or new_id()
        self.db.execute(
            "INSERT INTO folders (id, project_id, parent_id, name, created) VALUES (?, ?, ?, ?, ?)",
            (fid, pid, parent_id, name, created or time.time()),
        )
        return self.folder(fid)

    def folder_is_empty(self, fid: str) -> bool:
        """True when a folder holds neither folders nor documents."""
        sub = self.db.execute("SELECT 1 FROM folders WHERE parent_id = ? LIMIT 1", (fid,))
        doc = self.db.execute("SELECT 1 FROM attachments WHERE folder_id = ? LIMIT 1", (fid,))
        return sub.fetchone() is None and doc.fetchone() is None

    def delete_folder(self, fid: str) -> None:
        """Delete a folder (the caller checked it is empty)."""
        self.db.execute("DELETE FROM folders WHERE id = ?", (fid,))

    # -- attachments -----------------------------------------------------------------------

    def attachments(self, pid: str) -> list[AttachmentRec]:
        """Every document of a project with its latest version, oldest document first."""
        rows = self.db.execute(
            f"SELECT {_ATT_COLS} FROM attachments a JOIN versions v ON v.attachment_id = a.id"
            f" AND {_LATEST} WHERE a.project_id = ? ORDER BY a.created_at, a.id",
            (pid,),
        )
        return [_attachment(row) for row in rows]

    def attachment(self, aid: str) -> AttachmentRec:
        """A document with its latest version; ``NotFound`` otherwise."""
        row = self.db.execute(
            f"SELECT {_ATT_COLS} FROM attachments a JOIN versions v ON v.attachment_id = a.id"
            f" AND {_LATEST} WHERE a.id = ?",
            (aid,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no attachment {aid}")
        return _attachment(row)

    def attachment_versions(self, aid: str) -> list[AttachmentRec]:
        """A document once per stored version, oldest first."""
        rows = self.db.execute(
            f"SELECT {_ATT_COLS} FROM attachments a JOIN versions v ON v.attachment_id = a.id"
            " WHERE a.id = ? ORDER BY v.number",
            (aid,),
        )
        return [_attachment(row) for row in rows]

    def attachment_version(self, aid: str, number: int) -> AttachmentRec:
        """A document with one given version; ``NotFound`` otherwise."""
        row = self.db.execute(
            f"SELECT {_ATT_COLS} FROM attachments a JOIN versions v ON v.attachment_id = a.id"
            " WHERE a.id = ? AND v.number = ?",
            (aid, number),
        ).fetchone()
        if row is None:
            raise NotFound(f"no version {number} of {aid}")
        return _attachment(row)

    def create_attachment(
        self,
        pid: str,
        *,
        file_name: str,
        name: str,
        type: str,
        blob: str,
        size: int,
        user_id: str,
        folder_id: str | None = None,
        classification: str = "",
        tag: str = "",
        attachment_type: str = "Document",
        aid: str | None = None,
        when: float | None = None,
        hash: str | None = None,
    ) -> AttachmentRec:
        """Create a document with its first version from a committed blob."""
        aid = aid or new_id()
        when = when or time.time()
        with self.transaction():
            self.db.execute(
                "INSERT INTO attachments (id, project_id, folder_id, name, file_name,"
                " attachment_type, classification, tag, created_at, creator_id, next_version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 2)",
                (
                    aid,
                    pid,
                    folder_id,
                    name,
                    file_name,
                    attachment_type,
                    classification,
                    tag,
                    when,
                    user_id,
                ),
            )
            self.db.execute(
                "INSERT INTO versions (attachment_id, number, hash, size, type, changed,"
                " changed_by, blob) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
                (aid, hash or new_id(), size, type, when, user_id, blob),
            )
            self.touch_project(pid, when)
        return self.attachment(aid)

    def add_version(
        self,
        aid: str,
        *,
        blob: str,
        size: int,
        type: str,
        user_id: str,
        file_name: str | None = None,
        name: str | None = None,
        classification: str | None = None,
        tag: str | None = None,
        when: float | None = None,
        hash: str | None = None,
    ) -> AttachmentRec:
        """Append a version (numbers are never reused, even after the latest was deleted)."""
        when = when or time.time()
        with self.transaction():
            row = self.db.execute(
                "SELECT next_version, project_id FROM attachments WHERE id = ?", (aid,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no attachment {aid}")
            number, pid = int(row[0]), row[1]
            self.db.execute(
                "INSERT INTO versions (attachment_id, number, hash, size, type, changed,"
                " changed_by, blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (aid, number, hash or new_id(), size, type, when, user_id, blob),
            )
            self.db.execute(
                "UPDATE attachments SET next_version = ? WHERE id = ?", (number + 1, aid)
            )
            self._update_fields(aid, file_name, name, classification, tag)
            self.touch_project(pid, when)
        return self.attachment(aid)

    def replace_latest(
        self,
        aid: str,
        *,
        blob: str,
        size: int,
        type: str,
        user_id: str,
        file_name: str | None = None,
        name: str | None = None,
        classification: str | None = None,
        tag: str | None = None,
    ) -> AttachmentRec:
        """Replace the latest version's content in place (same number, new hash)."""
        when = time.time()
        current = self.attachment(aid)
        with self.transaction():
            self.db.execute(
                "UPDATE versions SET hash = ?, size = ?, type = ?, changed = ?, changed_by = ?,"
                " blob = ? WHERE attachment_id = ? AND number = ?",
                (new_id(), size, type, when, user_id, blob, aid, current.version.number),
            )
            self._update_fields(aid, file_name, name, classification, tag)
            self.touch_project(current.project_id, when)
        self._drop_blobs([current.version.blob])
        return self.attachment(aid)

    def _update_fields(
        self,
        aid: str,
        file_name: str | None,
        name: str | None,
        classification: str | None,
        tag: str | None,
    ) -> None:
        for column, value in (
            ("file_name", file_name),
            ("name", name),
            ("classification", classification),
            ("tag", tag),
        ):
            if value is not None:
                self.db.execute(f"UPDATE attachments SET {column} = ? WHERE id = ?", (value, aid))

    def update_metadata(
        self,
        aid: str,
        *,
        file_name: str | None = None,
        type: str | None = None,
        classification: str | None = None,
        tag: str | None = None,
        user_id: str,
    ) -> AttachmentRec:
        """Change metadata; ``type`` is that of the latest version. Records who changed it."""
        current = self.attachment(aid)
        when = time.time()
        with self.transaction():
            self._update_fields(aid, file_name, None, classification, tag)
            if type is not None:
                self.db.execute(
                    "UPDATE versions SET type = ? WHERE attachment_id = ? AND number = ?",
                    (type, aid, current.version.number),
                )
            self.db.execute(
                "UPDATE versions SET changed = ?, changed_by = ? WHERE attachment_id = ?"
                " AND number = ?",
                (when, user_id, aid, current.version.number),
            )
            self.touch_project(current.project_id, when)
        return self.attachment(aid)

    def release(self, aid: str, user_id: str) -> AttachmentRec:
        """Mark a document as shared."""
        self.db.execute(
            "UPDATE attachments SET release = 1, shared_date = ?, shared_by = ? WHERE id = ?",
            (time.time(), user_id, aid),
        )
        return self.attachment(aid)

    def set_rights(self, aid: str, rights: dict[str, bool]) -> AttachmentRec:
        """Change a document's rights (keys update, share, delete, download)."""
        self.attachment(aid)
        for key in ("update", "share", "delete", "download"):
            if key in rights:
                self.db.execute(
                    f"UPDATE attachments SET r_{key} = ? WHERE id = ?", (int(rights[key]), aid)
                )
        return self.attachment(aid)

    def set_release(
        self, aid: str, release: bool, shared_date: float | None, shared_by: str | None
    ) -> None:
        """Set the shared state directly (seeding)."""
        self.db.execute(
            "UPDATE attachments SET release = ?, shared_date = ?, shared_by = ? WHERE id = ?",
            (int(release), shared_date, shared_by, aid),
        )

    def delete_attachment(self, aid: str) -> None:
        """Delete a document, its versions and their blobs."""
        current = self.attachment(aid)
        blobs = [v.version.blob for v in self.attachment_versions(aid)]
        with self.transaction():
            self.db.execute("DELETE FROM versions WHERE attachment_id = ?", (aid,))
            self.db.execute("DELETE FROM attachments WHERE id = ?", (aid,))
            self.touch_project(current.project_id)
        self._drop_blobs(blobs)

    def delete_project_attachments(self, pid: str) -> int:
        """Delete every document of a project (the documented, dangerous bulk call)."""
        ids = [a.id for a in self.attachments(pid)]
        for aid in ids:
            self.delete_attachment(aid)
        return len(ids)

    def delete_version(self, aid: str, number: int) -> None:
        """Delete one version (the caller checked it is not the only one)."""
        target = self.attachment_version(aid, number)
        with self.transaction():
            self.db.execute(
                "DELETE FROM versions WHERE attachment_id = ? AND number = ?", (aid, number)
            )
            self.touch_project(target.project_id)
        self._drop_blobs([target.version.blob])

    def version_count(self, aid: str) -> int:
        """How many versions a document has."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM versions WHERE attachment_id = ?", (aid,)
        ).fetchone()
        return int(row[0])

    # -- tokens ----------------------------------------------------------------------------

    def add_token(
        self,
        token: str,
        kind: str,
        user_id: str,
        *,
        client_id: str = "",
        scope: str = "",
        expires_at: float | None = None,
    ) -> None:
        """Store a token (kind ``access``, ``fixed`` or ``refresh``); replaces one with that
        value."""
        self.db.execute(
            "INSERT OR REPLACE INTO tokens (token, kind, user_id, client_id, scope, created,"
            " expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (token, kind, user_id, client_id, scope, time.time(), expires_at),
        )

    def token(self, token: str) -> tuple[str, str, str, str, float | None, float | None] | None:
        """``(kind, user_id, client_id, scope, expires_at, revoked_at)`` of a token."""
        row = self.db.execute(
            "SELECT kind, user_id, client_id, scope, expires_at, revoked_at FROM tokens"
            " WHERE token = ?",
            (token,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5])

    def revoke_token(self, token: str, when: float) -> None:
        """Make a token invalid from ``when`` on (an earlier revocation stays)."""
        self.db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE token = ? AND (revoked_at IS NULL"
            " OR revoked_at > ?)",
            (when, token, when),
        )

    def expire_access_tokens(self) -> int:
        """Expire every issued access token (fixed ones stay valid)."""
        now = time.time()
        cur = self.db.execute(
            "UPDATE tokens SET expires_at = ? WHERE kind = 'access' AND (expires_at IS NULL"
            " OR expires_at > ?)",
            (now - 1, now),
        )
        return cur.rowcount

    def add_code(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str,
        challenge: str,
        user_id: str,
        scope: str,
        expires_at: float,
    ) -> None:
        """Store an authorization code."""
        self.db.execute(
            "INSERT INTO codes (code, client_id, redirect_uri, challenge, user_id, scope,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (code, client_id, redirect_uri, challenge, user_id, scope, expires_at),
        )

    def take_code(self, code: str) -> tuple[str, str, str, str, str, float] | None:
        """Consume an authorization code: ``(client_id, redirect_uri, challenge, user_id, scope,
        expires_at)``, or None when unknown or already used (codes are single use)."""
        row = self.db.execute(
            "SELECT client_id, redirect_uri, challenge, user_id, scope, expires_at, used"
            " FROM codes WHERE code = ?",
            (code,),
        ).fetchone()
        if row is None or row[6]:
            return None
        self.db.execute("UPDATE codes SET used = 1 WHERE code = ?", (code,))
        return (row[0], row[1], row[2], row[3], row[4], row[5])
