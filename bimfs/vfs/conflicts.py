"""Conflict copies made by this mount: which documents they are and why, kept across remounts.

When a save was based on version N of a document and the server's newest version is another
one at upload time (someone else saved meanwhile), the save is uploaded as a new document next
to it (``<stem> (conflict <YYYY-MM-DD HHMM> <user>)<ext>``) instead of burying their version.
Each such copy is recorded here (``<cache-dir>/conflicts.json``) so that its
``user.bimfs.state`` says ``conflict: based on v<N>, server had v<M> by <who>`` and
``bimfs status`` lists it until the copy is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bimfs.vfs.names import fit_name, split_ext

log = logging.getLogger(__name__)


def conflict_name(file_name: str, user: str, when: float | None = None) -> str:
    """``plan.pdf`` -> ``plan (conflict 2026-12-04 1830 demo).pdf`` (local time)."""
    stamp = time.strftime("%Y-%m-%d %H%M", time.localtime(when))
    stem, ext = split_ext(file_name)
    return fit_name(stem, f" (conflict {stamp} {user})", ext)


class Conflicts:
    """The conflict copies of one cache dir, by document id."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "conflicts.json"
        self._records: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self._records = {k: v for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass  # no conflict copy made yet
        except (OSError, ValueError) as exc:
            log.warning("conflict list %s unreadable (%s); starting anew", self.path, exc)

    def add(self, aid: str, path: str, message: str) -> None:
        self._records[aid] = {"path": path, "message": message, "time": time.time()}
        self._save()

    def message(self, aid: str) -> str | None:
        record = self._records.get(aid)
        return None if record is None else str(record.get("message", "conflict"))

    def drop(self, aid: str) -> None:
        if self._records.pop(aid, None) is not None:
            self._save()

    def moved(self, aid: str, path: str) -> None:
        if aid in self._records:
            self._records[aid]["path"] = path
            self._save()

    def listing(self) -> list[dict[str, Any]]:
        """Every conflict copy: ``{"id", "path", "state"}``, oldest first."""
        ordered = sorted(self._records.items(), key=lambda kv: kv[1].get("time", 0.0))
        return [
            {"id": aid, "path": rec.get("path", ""), "state": rec.get("message", "conflict")}
            for aid, rec in ordered
        ]

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self._records), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot record conflict copies in %s: %s", self.path, exc)
