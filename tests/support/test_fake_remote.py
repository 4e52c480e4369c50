"""The controls of ``FakeRemote`` do what the tests built on it assume."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bimfs.api.errors import (
    ConflictError,
    ServerError,
    TransportError,
    UploadOutcomeUnknownError,
)
from bimfs.vfs.online import unreachable
from tests.support.fake_remote import SLUG, TOM, FakeRemote, as_remote


def source(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "src"
    path.write_bytes(data)
    return path


async def test_fail_next_and_counts(tmp_path: Path) -> None:
    remote = FakeRemote()
    pid = remote.server.add_project("p").id
    remote.fail_next("list_attachments", ServerError(503, "busy"), times=2)
    for _ in range(2):
        with pytest.raises(ServerError):
            await remote.list_attachments(SLUG, pid)
    assert await remote.list_attachments(SLUG, pid) == []
    assert remote.calls["list_attachments"] == 3


async def test_lost_answers(tmp_path: Path) -> None:
    remote = FakeRemote()
    pid = remote.server.add_project("p").id
    doc = remote.server.upload(pid, "a.txt", b"v1")
    remote.lose_answer("create_version")
    with pytest.raises(UploadOutcomeUnknownError) as err:
        await remote.create_version(
            SLUG, doc.id, source(tmp_path, b"v2"), file_name="a.txt", content_type="text/plain",
            known_version=1,
        )  # fmt: skip
    assert err.value.retryable
    assert [v.version for v in remote.server.versions(doc.id)] == [1, 2]  # stored all the same
    remote.lose_answer("create_version", settle=True)
    att = await remote.create_version(
        SLUG, doc.id, source(tmp_path, b"v3"), file_name="a.txt", content_type="text/plain",
        known_version=2,
    )  # fmt: skip
    assert att.version == 3 and remote.server.content(doc.id) == b"v3"
    assert remote.calls["list_versions"] == 1  # what settling read


async def test_offline_is_unreachable() -> None:
    remote = FakeRemote()
    remote.offline = True
    with pytest.raises(TransportError) as err:
        await remote.get_teams()
    assert unreachable(err.value) and err.value.retryable
    with pytest.raises(TransportError):
        async with remote.open_download(SLUG, "any"):
            pass
    remote.offline = False
    assert [t.slug for t in await remote.get_teams()] == [SLUG]


async def test_colleague_and_hold(tmp_path: Path) -> None:
    remote = FakeRemote()
    pid = remote.server.add_project("p").id
    doc = remote.server.upload(pid, "a.txt", b"v1")
    remote.colleague.hold("update_attachment")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: remote.colleague.update_attachment(SLUG, doc.id, file_name="b.txt")
        )
        await trio.sleep(0.01)
        assert remote.server.doc(doc.id).file_name == "a.txt"
        remote.colleague.release_held()
    att = await remote.get_attachment(SLUG, doc.id)
    assert att.file_name == "b.txt"
    assert att.changed_by is not None and att.changed_by.email == TOM.email
    assert att.creator is not None and att.creator.email != TOM.email
    assert await remote.colleague.me() == frozenset({TOM.email})
    with pytest.raises(ConflictError):
        await as_remote(remote).delete_version(SLUG, doc.id, 1)
