"""Read-ahead through a real mount: a head read costs the server about one block (and nothing
more once the file is closed), a sequential read still gets every byte, each once."""

from __future__ import annotations

import hashlib
import subprocess
import time
from typing import Any

import pytest

from bimfs.vfs.names import safe_name
from tests.support.emulator import Emulator

pytestmark = pytest.mark.mount

SIZE = 100 << 20
HEAD = 64 << 10
# One cache block (1 MiB) and the HTTP headers: what a head read may make the server send.
HEAD_BUDGET = (1 << 20) + (64 << 10)


def _big_document(emulator: Emulator, name: str, seed: str) -> tuple[str, dict[str, Any]]:
    project = next(p for p in emulator.api("GET", "/bimfs-demo/projects") if p["hasWriteAccess"])
    doc = emulator.admin(
        "POST", f"/teams/bimfs-demo/projects/{project['id']}/blob",
        params={"fileName": name, "size": str(SIZE), "seed": seed},
    )  # fmt: skip
    return safe_name(project["name"]), doc


def test_head_read_bytes_sent_are_bounded(emulator: Emulator, mount_factory: Any) -> None:
    project, doc = _big_document(emulator, "bounded.bin", "b")
    m = mount_factory(emulator)
    path = m.p("bimfs-demo", project, doc["fileName"])
    assert path.stat().st_size == SIZE
    emulator.reset_stats()
    head = subprocess.run(
        ["head", "-c", str(HEAD), str(path)], capture_output=True, check=True, timeout=60
    ).stdout
    assert head == emulator.download("bimfs-demo", doc["id"])[:HEAD]
    # The check's own download is counted too: the mount's share is what is left.
    own = emulator.stats()["bytes_out"] - SIZE
    time.sleep(0.5)  # a stream left running after the close would go on sending meanwhile
    sent = emulator.stats()["bytes_out"] - SIZE
    assert 0 < own <= HEAD_BUDGET
    assert sent == own


def test_sequential_read_after_a_head_read_is_byte_exact(
    emulator: Emulator, mount_factory: Any
) -> None:
    project, doc = _big_document(emulator, "sequential.bin", "s")
    expected = hashlib.sha256(emulator.download("bimfs-demo", doc["id"])).hexdigest()
    m = mount_factory(emulator)
    path = m.p("bimfs-demo", project, doc["fileName"])
    with open(path, "rb") as fh:
        assert len(fh.read(HEAD)) == HEAD
    emulator.reset_stats()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == expected
    # Each byte came once: the first block from the head read, the rest in growing windows.
    assert emulator.stats()["bytes_out"] <= SIZE + (1 << 20)
