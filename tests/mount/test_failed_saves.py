"""A save the server refuses for good stays in the journal, visible and readable at its path,
also after a remount, and ``bimfs status`` lists it."""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

import pytest

from tests.support.emulator import Emulator
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

SLUG = "bimfs-demo"


def test_refused_saves_stay_visible_after_a_remount(emulator: Emulator, mount_factory: Any) -> None:
    emu = emulator
    made = emu.admin(
        "POST", f"/teams/{SLUG}/projects", json={"name": "refusing", "hasWriteAccess": True}
    )
    pid = made["id"]
    emu.upload(SLUG, pid, "old.txt", b"old v1\n")
    m = mount_factory(emu, "--write-back-delay", "1.5", "--dir-ttl", "0.5")
    proj = m.p(SLUG, "refusing")
    wait_until(lambda: (proj / "old.txt").exists(), 30, "old.txt to show")
    (proj / "Plans").mkdir()
    (proj / "Plans" / "in-folder.txt").write_bytes(b"in a folder\n")
    (proj / "new.txt").write_bytes(b"new here\n")
    (proj / "old.txt").write_bytes(b"old v2 here\n")
    # The right to write is taken away before the uploads start: both are refused (403).
    emu.admin("PUT", f"/projects/{pid}", json={"hasWriteAccess": False})

    def failed() -> list[Any]:
        return json.loads(os.getxattr(m.path, "user.bimfs.status")).get("failed", [])

    wait_until(lambda: len(failed()) == 3, 60, "the saves to be refused")
    m.allowed_errors.append("403")
    m.allowed_errors.append("refused")
    m.allowed_errors.append("failed")
    m.restart()
    assert sorted(os.listdir(proj)) == ["Plans", "new.txt", "old.txt"]
    assert (proj / "new.txt").read_bytes() == b"new here\n"
    assert (proj / "Plans" / "in-folder.txt").read_bytes() == b"in a folder\n"
    assert (proj / "old.txt").read_bytes() == b"old v2 here\n"
    for name in ("new.txt", "old.txt"):
        state = os.getxattr(proj / name, "user.bimfs.state").decode()
        assert state.startswith("failed"), (name, state)
    assert len(failed()) == 3
    time.sleep(1.0)  # past the directory TTL: listed again from the server, still shown
    assert sorted(os.listdir(proj)) == ["Plans", "new.txt", "old.txt"]
    assert os.listdir(proj / "Plans") == ["in-folder.txt"]
    assert (proj / "new.txt").read_bytes() == b"new here\n"
    # Nothing reached the server.
    docs = emu.attachments(SLUG, pid)
    assert [d["fileName"] for d in docs] == ["old.txt"]
    assert emu.download(SLUG, docs[0]["id"]) == b"old v1\n"
    with pytest.raises(OSError) as refused:
        (proj / "another.txt").write_bytes(b"x")
    assert refused.value.errno in (errno.EACCES, errno.EROFS)
