"""The last known tree, kept on disk: what a mount shows when it starts without the server.

Every listing fetched from the server (the teams, a team's projects, a project's documents and
folders) is written to ``<cache-dir>/known/`` a few seconds later, and again after the mount's
own changes to it. A mount that starts while the server cannot be reached serves these
listings (stale, read-only as far as the server is concerned, see ``docs/semantics.md``) and
queues its saves; a running mount that goes offline uses them for directories it has not
listed since it started. Each file names the API it came from; listings of another API are
ignored. Version lists are not kept (``versions/`` needs the server).

Files are written whole to a temporary name and renamed, so a crash leaves the previous one;
an unreadable file is ignored (logged once). A full disk only costs the copy: the mount goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from bimfs.api.models import Attachment, FolderNode, Project, Rights, Team, User
from bimfs.vfs.memory import LARGE_LISTING, give_back_memory

log = logging.getLogger(__name__)

FORMAT = 1
FLUSH_DELAY = 3.0  # seconds between a change and its copy on disk

Key = tuple[str, ...]


@dataclass
class ProjectListing:
    """One project's documents and folder tree, fetched together (two calls, in parallel)."""

    docs: dict[str, Attachment]
    folders: dict[str, FolderNode]  # every folder node by id
    doc_folder: dict[str, str]  # attachment id -> folder id (absent: project root)
    fetched_at: float


# ---------------------------------------------------------------------------- encoding


def _user(user: User | None) -> list[str] | None:
    return None if user is None else [user.id, user.email, user.display_name]


def _user_from(data: Any) -> User | None:
    if not isinstance(data, list) or len(data) != 3:
        return None
    return User(id=str(data[0]), email=str(data[1]), display_name=str(data[2]))


def encode_attachment(a: Attachment) -> dict[str, Any]:
    r = a.rights
    return {
        "id": a.id, "file_name": a.file_name, "name": a.name, "type": a.type, "size": a.size,
        "created_at": a.created_at, "changed": a.changed, "creator": _user(a.creator),
        "changed_by": _user(a.changed_by), "attachment_type": a.attachment_type,
        "hash": a.hash, "classification": a.classification, "tag": a.tag,
        "version": a.version, "rights": [r.update, r.share, r.delete, r.download],
        "release": a.release, "related_id": a.related_id, "shared_date": a.shared_date,
    }  # fmt: skip


def decode_attachment(data: dict[str, Any]) -> Attachment:
    rights = data.get("rights") or [True] * 4
    return Attachment(
        **{k: v for k, v in data.items() if k not in ("creator", "changed_by", "rights")},
        creator=_user_from(data.get("creator")),
        changed_by=_user_from(data.get("changed_by")),
        rights=Rights(*(bool(x) for x in rights)),
    )


def encode_folder(f: FolderNode) -> dict[str, Any]:
    # Children are kept by id only: every folder is stored in the listing's flat map.
    return {"id": f.id, "name": f.name, "type": f.type, "parent": f.parent}


def decode_folder(data: dict[str, Any]) -> FolderNode:
    return FolderNode(
        id=str(data["id"]), name=str(data["name"]), type=str(data["type"]),
        parent=data.get("parent"),
    )  # fmt: skip


def encode(key: Key, value: Any) -> Any:
    if key[0] == "teams":
        return [[t.id, t.slug, t.name, t.total_storage, t.used_storage, t.status] for t in value]
    if key[0] == "projects":
        return [
            [p.id, p.name, p.team_slug, p.has_write_access, p.created, p.changed, p.size,
             p.attachment_count]
            for p in value
        ]  # fmt: skip
    return {
        "docs": [encode_attachment(a) for a in value.docs.values()],
        "folders": [encode_folder(f) for f in value.folders.values()],
        "doc_folder": value.doc_folder,
    }


def decode(key: Key, data: Any, saved: float) -> Any:
    if key[0] == "teams":
        return [Team(*row) for row in data]
    if key[0] == "projects":
        return [Project(*row) for row in data]
    docs = (decode_attachment(d) for d in data["docs"])
    folders = (decode_folder(f) for f in data["folders"])
    return ProjectListing(
        docs={a.id: a for a in docs},
        folders={f.id: f for f in folders},
        doc_folder={str(k): str(v) for k, v in data["doc_folder"].items()},
        fetched_at=saved,
    )


def _snapshot(key: Key, value: Any) -> Any:
    """A copy of ``value`` that later changes to it cannot disturb (taken in the trio thread,
    encoded in a worker thread)."""
    if key[0] == "listing":
        return ProjectListing(
            dict(value.docs), dict(value.folders), dict(value.doc_folder), value.fetched_at
        )
    return list(value)


# ---------------------------------------------------------------------------- the store


class KnownTree:
    """The listings of one cache dir for one API, on disk."""

    KEPT = ("teams", "projects", "listing")

    def __init__(self, cache_dir: Path, api_url: str) -> None:
        self.dir = cache_dir / "known"
        self.api_url = api_url
        self._dirty: dict[Key, Any] = {}
        self._wake = trio.Event()
        self._warned: set[Path] = set()

    def _path(self, key: Key) -> Path:
        digest = hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).hexdigest()
        return self.dir / f"{digest[:32]}.json"

    # ---------------------------------------------------------------- reading

    def load(self, key: Key) -> Any | None:
        """The value last kept for ``key`` (None: none, another API's, or unreadable)."""
        if key[0] not in self.KEPT:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if (
                data.get("format") != FORMAT
                or data.get("api_url") != self.api_url
                or data.get("key") != list(key)
            ):
                return None
            saved = data.get("saved")
            return decode(key, data["value"], float(saved) if saved else 0.0)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("ignoring the last known listing %s: %s", path, exc)
            return None

    # ---------------------------------------------------------------- writing

    def changed(self, key: Key, value: Any) -> None:
        """``value`` is what ``key`` now holds: keep it on disk soon."""
        if key[0] in self.KEPT:
            self._dirty[key] = value
            self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write what changed, a few seconds after it changed, until cancelled."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await trio.sleep(FLUSH_DELAY)
                await self._write(self._take())
        finally:
            with trio.CancelScope(shield=True):
                await self._write(self._take())

    def _take(self) -> list[tuple[Key, Any]]:
        taken = [(key, _snapshot(key, value)) for key, value in self._dirty.items()]
        self._dirty.clear()
        return taken

    async def _write(self, items: list[tuple[Key, Any]]) -> None:
        if items:
            await trio.to_thread.run_sync(self.write, items)

    def _dump(self, f: TextIO, key: Key, value: Any) -> None:
        """Write the file of ``key``: one JSON object, a project's documents one at a time (so
        encoding a large listing never holds all of it encoded, see ``vfs/memory.py``)."""
        head = {"format": FORMAT, "api_url": self.api_url, "key": list(key), "saved": time.time()}
        f.write(json.dumps(head, ensure_ascii=True)[:-1] + ', "value": ')
        if key[0] != "listing":
            f.write(json.dumps(encode(key, value), ensure_ascii=True) + "}")
            return
        f.write('{"docs": [')
        for n, doc in enumerate(value.docs.values()):
            f.write((", " if n else "") + json.dumps(encode_attachment(doc), ensure_ascii=True))
        folders = [encode_folder(folder) for folder in value.folders.values()]
        f.write('], "folders": ' + json.dumps(folders, ensure_ascii=True))
        f.write(', "doc_folder": ' + json.dumps(value.doc_folder, ensure_ascii=True) + "}}")

    def write(self, items: Iterable[tuple[Key, Any]]) -> None:
        large = False
        for key, value in items:
            if key[0] not in self.KEPT:
                continue
            large = large or (key[0] == "listing" and len(value.docs) >= LARGE_LISTING)
            path = self._path(key)
            tmp = path.with_suffix(".tmp")
            try:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                with open(tmp, "w", encoding="utf-8") as f:
                    self._dump(f, key, value)
                os.replace(tmp, path)
            except (OSError, ValueError) as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                log.warning("could not keep the listing of %s on disk: %s", "/".join(key), exc)
        if large:
            give_back_memory()  # what encoding a large listing took for a moment
