"""``bimfs.vfs.online`` on ``FakeRemote``: working offline and coming back."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio

from bimfs.vfs.errors import FsError
from tests.vfs.fake import FakeHarness, open_fake


async def go_offline(fake: FakeHarness) -> None:
    """Cut the connection and let one listing notice it."""
    fake.remote.offline = True
    await fake.names()  # served from the last known state
    assert not fake.fs.connectivity.online


async def test_offline_listings_reads_and_saves(tmp_path: Path) -> None:
    async with open_fake(tmp_path, dir_ttl=0, write_back_delay=0) as fake:
        fake.server.upload(fake.pid, "cached.txt", b"in the cache")
        fake.server.upload(fake.pid, "remote.txt", b"never read")
        assert await fake.read("cached.txt") == b"in the cache"
        await go_offline(fake)
        assert fake.fs.connectivity.describe().startswith("offline since ")
        assert await fake.names() == ["cached.txt", "remote.txt"]  # stale, no error
        assert await fake.read("cached.txt") == b"in the cache"
        with trio.fail_after(1), pytest.raises(FsError) as err:
            await fake.read("remote.txt")
        assert err.value.errno == errno.ENETUNREACH
        # Saves are kept and wait; changes that need the server fail at once.
        await fake.write_file("new.txt", b"written offline")
        assert await fake.xattr("new.txt", "user.bimfs.state") == "pending"
        with pytest.raises(FsError) as err:
            await fake.unlink("cached.txt")
        assert err.value.errno == errno.ENETUNREACH
        with pytest.raises(FsError) as err:
            await fake.mkdir("Plans")
        assert err.value.errno == errno.ENETUNREACH
        await trio.sleep(0.2)
        assert "new.txt" not in fake.docs()
        # Back online: the probe notices, the save is sent once.
        fake.remote.offline = False
        with trio.fail_after(30):
            while not fake.fs.connectivity.online:  # noqa: ASYNC110 (the probe's backoff)
                await trio.sleep(0.05)
        await fake.sync()
        assert fake.content("new.txt") == b"written offline"
        assert fake.remote.calls["create_attachment"] == 1


async def test_an_upload_cut_by_the_outage_is_sent_once(tmp_path: Path) -> None:
    async with open_fake(tmp_path, write_back_delay=0) as fake:
        fake.server.upload(fake.pid, "a.txt", b"v1")
        await fake.names()
        fake.remote.lose_answer("create_version")
        await fake.write_file("a.txt", b"v2")
        with trio.fail_after(10):
            while fake.remote.calls["create_version"] == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await go_offline(fake)
        fake.remote.offline = False
        await fake.sync()
        assert fake.versions("a.txt") == [1, 2]
        assert fake.remote.calls["create_version"] == 1
