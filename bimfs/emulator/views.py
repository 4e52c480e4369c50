"""JSON shapes of the emulator's answers, with the documented variants in quirks mode.

Normal answers use one consistent style (dates ``2024-03-04T09:00:00.123`` in UTC without a
zone, ``version`` an int, ``release`` a bool, every field present). Quirks mode mixes the variants
the documentation shows, chosen deterministically per object (a hash of its id) so that answers
are stable from one listing to the next: ``version`` as a string, ``release`` as ``"false"``,
``createAt`` instead of ``createdAt`` on some documents, dates with and without fractions and
zones, some optional fields missing or null.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bimfs.emulator.storage import AttachmentRec, FolderRec, ProjectRec, TeamRec, UserRec

JsonObj = dict[str, Any]
UserLookup = Callable[[str | None], UserRec | None]


def _pick(key: str, n: int) -> int:
    """A stable small number for an object id (quirk selection)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % n


def format_time(ts: float | None, *, quirks: bool = False, key: str = "") -> str | None:
    """A Bimplus date string; quirks mode picks one of the documented styles by ``key``."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, UTC)
    naive = dt.replace(tzinfo=None)
    if not quirks:
        return naive.isoformat(timespec="milliseconds")
    style = _pick(key, 4)
    if style == 0:
        return naive.isoformat(timespec="seconds")
    if style == 1:
        # .NET writes seven fraction digits.
        return naive.isoformat(timespec="microseconds") + "0"
    if style == 2:
        local = dt.astimezone(timezone(timedelta(hours=1)))
        return local.isoformat(timespec="microseconds")
    return naive.isoformat(timespec="milliseconds") + "Z"


def size_mb(size: int) -> str:
    """The localised ``sizeMB`` string (``"0,21"``)."""
    return f"{size / 1048576:.2f}".replace(".", ",")


def user_json(user: UserRec | None) -> JsonObj | None:
    """A user as embedded in attachments."""
    if user is None:
        return None
    full = f"{user.firstname} {user.lastname}".strip()
    return {
        "id": user.id,
        "email": user.email,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "company": user.company,
        "fullname": full,
        "displayname": f"{full} [{user.company}]" if user.company else full,
        "shortdisplayname": full,
    }


def attachment_json(
    att: AttachmentRec,
    project: ProjectRec,
    users: UserLookup,
    *,
    quirks: bool = False,
) -> JsonObj:
    """An attachment (one version of a document) as Bimplus answers it."""
    ver = att.version
    writable = project.has_write_access
    rights = {
        "update": att.r_update and writable,
        "share": att.r_share,
        "delete": att.r_delete and writable,
        "download": att.r_download,
    }
    data: JsonObj = {
        "id": att.id,
        "objectIds": [att.project_id],
        "relatedId": att.project_id,
        "name": att.name,
        "fileName": att.file_name,
        "type": ver.type,
        "size": ver.size,
        "sizeMB": size_mb(ver.size),
        "createdAt": format_time(att.created_at, quirks=quirks, key=att.id + "c"),
        "creator": user_json(users(att.creator_id)),
        "changed": format_time(ver.changed, quirks=quirks, key=f"{att.id}{ver.number}"),
        "changedBy": user_json(users(ver.changed_by)),
        "attachmentType": att.attachment_type,
        "hash": ver.hash,
        "classification": att.classification,
        "tag": att.tag,
        "version": ver.number,
        "rights": rights,
        "release": att.release,
        "sharedDate": format_time(att.shared_date, quirks=quirks, key=att.id + "s"),
        "sharedBy": user_json(users(att.shared_by)),
    }
    if quirks:
        data["version"] = str(ver.number)
        data["release"] = "true" if att.release else "false"
        if _pick(att.id, 2) == 0:
            data["createAt"] = data.pop("createdAt")
        variant = _pick(att.id + "omit", 3)
        if variant == 0:
            data["classification"] = None
            del data["tag"]
            del data["name"]
        elif variant == 1:
            del data["sharedDate"]
            del data["sharedBy"]
            del data["objectIds"]
            data["relatedId"] = None
        else:
            del data["sizeMB"]
            data["creator"] = None
    return data


def project_json(project: ProjectRec, *, quirks: bool = False) -> JsonObj:
    """A project."""
    w = project.has_write_access
    data: JsonObj = {
        "id": project.id,
        "name": project.name,
        "shortDescr": project.short_descr,
        "created": format_time(project.created, quirks=quirks, key=project.id + "c"),
        "changed": format_time(project.changed, quirks=quirks, key=project.id + "m"),
        "hasWriteAccess": w,
        "teamSlug": project.team_slug,
        "teamId": project.team_id,
        "rights": {"read": True, "create": w, "update": w, "delete": w, "share": True},
        "size": project.size,
        "attachmentCount": project.attachment_count,
    }
    if quirks and _pick(project.id, 2) == 0:
        data["shortDescr"] = None
        del data["size"]
    return data


def team_json(team: TeamRec, used: int, *, quirks: bool = False) -> JsonObj:
    """A team, with ``storageStats.usedStorage`` in bytes."""
    data: JsonObj = {
        "id": team.id,
        "slug": team.slug,
        "name": team.name,
        "owner": team.owner,
        "totalStorage": team.total_storage,
        "storageStats": {"usedStorage": used},
        "status": "Active",
        "dataStorageStatus": "Online",
    }
    if quirks and _pick(team.id, 2) == 0:
        data["storageStats"] = None
    return data


def folder_tree(folders: list[FolderRec], attachments: list[AttachmentRec]) -> list[JsonObj]:
    """The document-folder structure of a project: top-level folder nodes with their sub-folders
    and ``Attachment`` nodes for the documents they hold (documents at the project root are not
    part of the structure)."""
    nodes: dict[str, JsonObj] = {
        f.id: {
            "id": f.id,
            "parent": f.parent_id,
            "name": f.name,
            "type": "DocumentFolder",
            "children": [],
        }
        for f in folders
    }
    roots: list[JsonObj] = []
    for f in folders:
        node = nodes[f.id]
        parent = nodes.get(f.parent_id) if f.parent_id else None
        if parent is None:
            roots.append(node)
        else:
            parent["children"].append(node)
    for att in attachments:
        if att.folder_id and att.folder_id in nodes:
            nodes[att.folder_id]["children"].append(
                {
                    "id": att.id,
                    "parent": att.folder_id,
                    "name": att.file_name,
                    "type": "Attachment",
                    "children": [],
                }
            )
    return roots


def folder_json(folder: FolderRec) -> JsonObj:
    """A single, new folder node."""
    return {
        "id": folder.id,
        "parent": folder.parent_id,
        "name": folder.name,
        "type": "DocumentFolder",
        "children": [],
    }
