"""What the server holds for one project, read through the emulator's API: its documents by path
(folders included), their versions and bytes, its folder tree, and request counters.

    view = ServerProject(emu, "bimfs-demo", pid)
    view.tree()          # {"plan.pdf": {...}, "Drawings/Details/detail-01.png": {...}}
    view.folders()       # {"Drawings", "Drawings/Details"}
    view.versions("Drawings/ground-floor.pdf")   # [1, 2]
    view.content("plan.pdf", 2)

A path is the document's ``fileName`` below its folders' names, joined with ``/``; two documents
with the same path fail the call (the tests that use this never create such a pair on purpose, so
a duplicate is always a bug worth seeing).
"""

from __future__ import annotations

from typing import Any

from tests.support.emulator import Emulator

#: Route keys of the emulator's statistics (``GET /_emulator/stats``).
CREATE = "POST /v2/{slug}/projects/{pid}/attachments"
CREATE_IN_OBJECT = "POST /v2/{slug}/objects/{pid}/attachments"
NEW_VERSION = "POST /v2/{slug}/attachments/{id}/versions"
DELETE_DOCUMENT = "DELETE /v2/{slug}/attachments/{id}"
DELETE_VERSION = "DELETE /v2/{slug}/attachments/{id}/versions/{n}"
DOWNLOAD_LATEST = "GET /v2/{slug}/attachments/{id}/download"
DOWNLOAD_VERSION = "GET /v2/{slug}/attachments/{id}/versions/{n}/download"
LIST_DOCUMENTS = "GET /v2/{slug}/projects/{pid}/attachments"
LIST_FOLDERS = "GET /v2/{slug}/projects/{pid}/structures"
DELETE_ALL_DOCUMENTS = (
    "DELETE /v2/{slug}/projects/{pid}/attachments",
    "DELETE /v2/{slug}/objects/{pid}/attachments",
)


def requests(emu: Emulator, key: str) -> int:
    """Requests counted under a route key since the last reset, any status."""
    return emu.count(key)


def downloads(emu: Emulator) -> int:
    """Content downloads since the last reset (latest or one version, whole or ranged)."""
    return emu.count(DOWNLOAD_LATEST) + emu.count(DOWNLOAD_VERSION)


def creates(emu: Emulator) -> int:
    """Document creations since the last reset."""
    return emu.count(CREATE) + emu.count(CREATE_IN_OBJECT)


def changes(emu: Emulator) -> dict[str, int]:
    """Every request that changed documents since the last reset, by route key (only the
    non-zero ones): what a test compares against what it expected to send."""
    keys = (CREATE, CREATE_IN_OBJECT, NEW_VERSION, DELETE_DOCUMENT, DELETE_VERSION,
            *DELETE_ALL_DOCUMENTS)  # fmt: skip
    counts = {key: emu.count(key) for key in keys}
    return {key: n for key, n in counts.items() if n}


class ServerProject:
    """One project as the server holds it."""

    def __init__(self, emu: Emulator, slug: str, pid: str) -> None:
        self.emu = emu
        self.slug = slug
        self.pid = pid

    def documents(self) -> list[dict[str, Any]]:
        """Every document of the project (in folders too), latest versions, oldest first."""
        return self.emu.attachments(self.slug, self.pid)

    def structure(self) -> list[dict[str, Any]]:
        """The raw folder tree (``GET .../structures?type=DocumentFolder``)."""
        return self.emu.folders(self.slug, self.pid)

    def _walk(self) -> tuple[dict[str, str], set[str]]:
        """(document id -> folder path, folder paths)."""
        placed: dict[str, str] = {}
        folders: set[str] = set()

        def visit(nodes: list[dict[str, Any]], prefix: str) -> None:
            for node in nodes:
                if node["type"] == "DocumentFolder":
                    path = prefix + node["name"]
                    assert path not in folders, f"two folders {path!r} on the server"
                    folders.add(path)
                    visit(node.get("children") or [], path + "/")
                elif node["type"] == "Attachment":
                    placed[node["id"]] = prefix.rstrip("/")

        visit(self.structure(), "")
        return placed, folders

    def tree(self) -> dict[str, dict[str, Any]]:
        """Every document by path (``"Drawings/plan.pdf"``); fails on two documents with one
        path."""
        placed, _ = self._walk()
        result: dict[str, dict[str, Any]] = {}
        for doc in self.documents():
            folder = placed.get(doc["id"], "")
            path = f"{folder}/{doc['fileName']}" if folder else doc["fileName"]
            assert path not in result, f"two documents {path!r} on the server"
            result[path] = doc
        return result

    def paths(self) -> list[str]:
        """The sorted paths of every document."""
        return sorted(self.tree())

    def folders(self) -> set[str]:
        """The paths of every document folder (``{"Drawings", "Drawings/Details"}``)."""
        return self._walk()[1]

    def document(self, path: str) -> dict[str, Any]:
        """The document at ``path`` (KeyError when there is none)."""
        return self.tree()[path]

    def versions(self, path: str) -> list[int]:
        """The version numbers the server stores for the document at ``path``, oldest first."""
        aid = self.document(path)["id"]
        return [int(v["version"]) for v in self.emu.versions(self.slug, aid)]

    def content(self, path: str, version: int | None = None) -> bytes:
        """The bytes of the document at ``path`` (its latest version, or ``version``)."""
        return self.emu.download(self.slug, self.document(path)["id"], version)

    def contents(self) -> dict[str, bytes]:
        """Every document's latest bytes by path."""
        return {path: self.emu.download(self.slug, doc["id"]) for path, doc in self.tree().items()}

    def upload(self, path: str, data: bytes, *, content_type: str = "application/octet-stream"
               ) -> dict[str, Any]:  # fmt: skip
        """Create a document at the project's root (``path`` without a folder)."""
        assert "/" not in path, "uploads into folders are not needed yet"
        return self.emu.upload(self.slug, self.pid, path, data, content_type=content_type)

    def add_version(self, path: str, data: bytes) -> dict[str, Any]:
        """A new version of the document at ``path``."""
        doc = self.document(path)
        return self.emu.new_version(self.slug, doc["id"], doc["fileName"], data)
