"""Safe, stable file names for Bimplus entries (INTERFACES §1).

Bimplus names may hold anything: ``/``, control characters, nothing at all, thousands of bytes.
``safe_name`` turns one name into something a POSIX directory can hold; ``assign_names`` makes a
directory's names unique in a way that does not depend on listing order, so the same entry keeps
the same name from one listing to the next.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAME_MAX = 255
SLASH_STAND_IN = "\u2215"  # DIVISION SLASH
EMPTY_STAND_IN = "(unnamed)"
DOT_STAND_IN = "\u2024"  # ONE DOT LEADER
DOTDOT_STAND_IN = "\u2025"  # TWO DOT LEADER
VERSIONS_DIR = "versions"

#: Editor and system temp/lock files that stay on this machine only (INTERFACES §5), matched
#: with case.
DEFAULT_LOCAL_ONLY = (
    ".*.swp",
    ".*.swx",
    ".*.swo",
    "4913",
    "*~",
    ".~lock.*#",
    "~$*",  # Microsoft Office owner (lock) files: ~$report.docx
    ".goutputstream-*",
    "lu*.tmp",  # LibreOffice writes a save here, then renames it over the document
    ".DS_Store",
)

_HEX8 = "[0-9a-f]" * 8
#: Windows programs' temp and lock files, matched whatever their case (Windows names are
#: case-insensitive, and the same program writes ``.tmp`` or ``.TMP``).
DEFAULT_LOCAL_ONLY_ANY_CASE = (
    "~wr*.tmp",  # Word: ~WRD0000.tmp (the save being written), ~WRL0001.tmp (the original)
    "~rf*.tmp",  # Office (shared) temp files
    _HEX8 + ".tmp",  # Excel renames the original to 8 hex digits + .tmp while saving
    "ppt*.tmp",  # PowerPoint writes its save here, then renames it over the presentation
    "*.dwl",  # AutoCAD drawing locks, next to the open drawing
    "*.dwl2",
    "thumbs.db",
    "desktop.ini",
)


def split_ext(name: str) -> tuple[str, str]:
    """Split off the last extension: ``archive.tar.gz`` -> (``archive.tar``, ``.gz``);
    ``README`` and ``.bashrc`` have none."""
    stem, ext = os.path.splitext(name)
    if not stem or len(ext) <= 1:
        return name, ""
    return stem, ext


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def fit_name(stem: str, suffix: str, ext: str) -> str:
    """``stem + suffix + ext``, shortened in the stem (at a character boundary) to NAME_MAX
    bytes."""
    tail = suffix + ext
    tail_bytes = len(tail.encode("utf-8"))
    if tail_bytes >= NAME_MAX:
        # A pathological extension: keep what fits of the whole name.
        return _truncate_utf8(stem + tail, NAME_MAX)
    return _truncate_utf8(stem, NAME_MAX - tail_bytes) + tail


def safe_name(raw: str) -> str:
    """Make one server name usable as a POSIX file name (no dedupe)."""
    name = raw.replace("/", SLASH_STAND_IN)
    name = "".join(ch for ch in name if ord(ch) >= 32 and ord(ch) != 127)
    if name == "":
        return EMPTY_STAND_IN
    if name == ".":
        return DOT_STAND_IN
    if name == "..":
        return DOTDOT_STAND_IN
    if len(name.encode("utf-8")) > NAME_MAX:
        stem, ext = split_ext(name)
        name = fit_name(stem, "", ext)
    return name


def version_file_name(doc_name: str, version: int) -> str:
    """``plan.pdf``, 3 -> ``plan.v3.pdf``; ``README``, 2 -> ``README.v2``."""
    stem, ext = split_ext(doc_name)
    return fit_name(stem, f".v{version}", ext)


@dataclass(frozen=True, slots=True)
class NameRequest:
    """One entry of a directory asking for a name."""

    key: str  # unique within the directory (an id)
    raw: str  # the server's name
    created: float  # for "oldest keeps the name"
    ident: str  # the id whose first 8 characters disambiguate


def assign_names(entries: Iterable[NameRequest], reserved: Sequence[str] = ()) -> dict[str, str]:
    """Give every entry a unique safe name, the oldest (created, then id) keeping the plain one.

    ``reserved`` names (``versions`` in a directory holding documents, names of folders) are never
    given to an entry as is. Returns ``{key: name}``.
    """
    ordered = sorted(entries, key=lambda e: (e.created, e.ident, e.key))
    taken: set[str] = set(reserved)
    result: dict[str, str] = {}
    for entry in ordered:
        name = safe_name(entry.raw)
        if name in taken:
            stem, ext = split_ext(name)
            base_suffix = f" ({entry.ident[:8]})"
            name = fit_name(stem, base_suffix, ext)
            n = 2
            while name in taken:
                name = fit_name(stem, f" ({entry.ident[:8]}-{n})", ext)
                n += 1
        taken.add(name)
        result[entry.key] = name
    return result


class LocalOnlyMatcher:
    """Tells whether a file name is an editor/system temp or lock file kept only locally."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(DEFAULT_LOCAL_ONLY) + tuple(extra_patterns)
        self.any_case = DEFAULT_LOCAL_ONLY_ANY_CASE

    def __call__(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns):
            return True
        folded = name.lower()
        return any(fnmatch.fnmatchcase(folded, pattern) for pattern in self.any_case)


def is_backup_name(name: str, new: str) -> bool:
    """Whether ``new`` is a save's backup of ``name``: what a program renames a document to
    before it writes the new content under the document's name. AutoCAD (``Model.dwg`` ->
    ``Model.bak``, the extension in any case), ``Model.dwg.bak``, SketchUp-style
    ``Model~.dwg`` and Revit-style numbered backups (``Model.0001.rvt``). (``Model.dwg~``,
    vim's and Emacs's, is a local-only name anyway.)"""
    if new == name:
        return False
    stem, ext = split_ext(name)
    if new[-4:].lower() == ".bak":
        return new[:-4] in (stem, name)
    if not ext or not new.endswith(ext):
        return False
    middle = new[: -len(ext)]
    if middle == stem + "~":
        return True
    number = middle[-4:]
    return middle[:-5] == stem and middle[-5:-4] == "." and number.isascii() and number.isdigit()
