"""Write an upload journal straight to disk, as a mount that was stopped with saves pending
leaves it (the record format of ``bimfs.cache.journal``).

Committing 100 000 saves through a mount takes minutes of fsyncs; written here without them it
takes seconds, and the next mount of that cache dir resumes them like any other journal.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, _FLAGS, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def content_of(index: int) -> bytes:
    """The bytes of save number ``index`` (what the server must receive for it)."""
    return b"pending save %d\n" % index


def write_pending_creates(
    cache_dir: Path, *, slug: str, pid: str, project_name: str, count: int
) -> list[str]:
    """``count`` pending saves of new files ``file-000001.txt``... in the project ``pid`` of
    team ``slug``, each with its own journal entry; returns their paths in the mount, oldest
    first."""
    journal = Path(cache_dir) / "journal"
    journal.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o700)
    now = time.time()
    paths = []
    for seq in range(1, count + 1):
        entry_id = f"{seq:010d}-{secrets.token_hex(6)}"
        name = f"file-{seq:06d}.txt"
        path = f"/{slug}/{project_name}/{name}"
        data = content_of(seq)
        record = {
            "format": 1,
            "id": entry_id,
            "seq": seq,
            "key": f"new:{uuid.uuid4()}",
            "meta": {
                "op": "create",
                "slug": slug,
                "pid": pid,
                "folder_id": None,
                "file_name": name,
                "content_type": "text/plain",
                "path": path,
            },
            "data": f"{entry_id}.data",
            "size": len(data),
            "state": "pending",
            "reason": "",
            "attempts": 0,
            "created": now,
            "updated": now,
            "not_before": 0.0,
        }
        _write(f"{journal}/{entry_id}.data", data)
        _write(f"{journal}/{entry_id}.json", json.dumps(record).encode())
        paths.append(path)
    return paths
