"""Attributes of a listed project through a real mount: the kernel keeps them while the
listing is fresh, and a change on the server still shows once the directory TTL is over."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from typing import Any

import pytest

from bimfs.api.models import parse_time
from bimfs.vfs.names import safe_name
from tests.support.emulator import Emulator
from tests.support.processes import wait_until

pytestmark = pytest.mark.mount

DIR_TTL = 4.0


def _writable(emulator: Emulator) -> dict[str, Any]:
    return next(p for p in emulator.api("GET", "/bimfs-demo/projects") if p["hasWriteAccess"])


def test_ls_l_of_many_documents_matches_the_api(emulator: Emulator, mount_factory: Any) -> None:
    project = _writable(emulator)
    emulator.admin(
        "POST", f"/teams/bimfs-demo/projects/{project['id']}/documents",
        json={"count": 3000, "prefix": "many-", "size": 10},
    )  # fmt: skip
    docs = {d["fileName"]: d for d in emulator.attachments("bimfs-demo", project["id"])}
    m = mount_factory(emulator, "--dir-ttl", "3600")
    out = subprocess.run(
        ["ls", "-l", "--time-style=+%s", str(m.p("bimfs-demo", safe_name(project["name"])))],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    shown = {}
    for line in out.splitlines()[1:]:
        fields = line.split(None, 6)
        shown[fields[6]] = int(fields[4])
    many = {name: size for name, size in shown.items() if name.startswith("many-")}
    assert len(many) == 3000
    assert all(size == docs[name]["size"] for name, size in many.items())
    # No SELinux label or ACL namespace: ENOTSUP, after which `ls` stops asking for the
    # device's other entries (ENODATA would cost two requests per entry).
    first = m.p("bimfs-demo", safe_name(project["name"]), "many-000001.txt")
    for name in ("security.selinux", "system.posix_acl_access", "security.capability"):
        with pytest.raises(OSError) as info:
            os.getxattr(first, name)
        assert info.value.errno == errno.ENOTSUP, name
    with pytest.raises(OSError) as info:
        os.getxattr(first, "user.bimplus.none")
    assert info.value.errno == errno.ENODATA
    # A second pass, from what the kernel kept, shows the same.
    again = subprocess.run(
        ["ls", "-l", "--time-style=+%s", str(m.p("bimfs-demo", safe_name(project["name"])))],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert again == out


def test_server_change_shows_after_the_directory_ttl(
    emulator: Emulator, mount_factory: Any
) -> None:
    project = _writable(emulator)
    m = mount_factory(emulator, "--dir-ttl", str(DIR_TTL))
    directory = m.p("bimfs-demo", safe_name(project["name"]))
    (directory / "kept.txt").write_bytes(b"first\n")
    m.wait_synced()
    doc = emulator.attachment("bimfs-demo", project["id"], "kept.txt")
    os.listdir(directory)  # the listing's attributes go to the kernel with it
    assert (directory / "kept.txt").stat().st_size == len(b"first\n")
    new = b"changed on the server\n" * 10
    emulator.api(
        "POST",
        f"/bimfs-demo/attachments/{doc['id']}/versions",
        files={"file": ("kept.txt", new, "application/octet-stream")},
    )
    start = time.monotonic()
    wait_until(
        lambda: (directory / "kept.txt").stat().st_size == len(new),
        DIR_TTL + 10, "the new size after the directory TTL", interval=0.2,
    )  # fmt: skip
    # Not later than the TTL, the refresh it starts and the 1 s default timeout allow.
    assert time.monotonic() - start < DIR_TTL + 5
    assert (directory / "kept.txt").read_bytes() == new


def test_metadata_set_here_shows_its_new_time_at_once(
    emulator: Emulator, mount_factory: Any
) -> None:
    project = _writable(emulator)
    emulator.upload("bimfs-demo", project["id"], "tagged.txt", b"content\n")
    m = mount_factory(emulator, "--dir-ttl", "3600")
    directory = m.p("bimfs-demo", safe_name(project["name"]))
    os.listdir(directory)  # attributes the kernel may keep for as long as the listing is fresh
    before = (directory / "tagged.txt").stat().st_mtime
    time.sleep(1.1)  # the server's time of the change differs from the save's
    os.setxattr(directory / "tagged.txt", "user.bimplus.tag", b"checked")
    doc = emulator.attachment("bimfs-demo", project["id"], "tagged.txt")
    changed = parse_time(doc["changed"])
    assert changed is not None and changed > before + 1
    wait_until(
        lambda: abs((directory / "tagged.txt").stat().st_mtime - changed) < 0.01,
        5, "the server's time of the tag change", interval=0.1,
    )  # fmt: skip
