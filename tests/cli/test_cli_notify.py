"""``bimfs mount --foreground`` under a service manager (``Type=notify``): ``READY=1`` once the
mount answers, ``STATUS=`` with the saves not yet on the server, ``STOPPING=1`` at shutdown.

The test plays the manager: it binds the AF_UNIX datagram socket that ``NOTIFY_SOCKET`` names
(a path, or an abstract name written ``@name``) and reads what the mount sends.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import pytest

from bimfs.cli.notify import describe
from tests.cli.helpers import SLUG, new_project, server_docs
from tests.cli.proxy import GateProxy
from tests.support.emulator import Emulator
from tests.support.processes import MountProcess, wait_until, write_token

pytestmark = pytest.mark.mount

DEADLINE = 30.0


class Manager:
    """A stand-in for systemd's notification socket."""

    def __init__(self, tmp_path: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"bimfs-test-{secrets.token_hex(8)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = tmp_path / "notify"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(DEADLINE)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.messages.append(message)
        return message

    def receive_until(self, wanted: str) -> dict[str, str]:
        """Messages until one whose STATUS contains ``wanted`` (or with the key ``wanted``)."""
        while True:
            message = self.receive()
            if wanted in message or wanted in message.get("STATUS", ""):
                return message


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_status_and_stopping_reach_the_service_manager(
    emulator: Emulator,
    proxy: GateProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    abstract: bool,
) -> None:
    manager = Manager(tmp_path, abstract)
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    pid = new_project(emulator, "Notified")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    mount = MountProcess(
        mountpoint,
        api_url=proxy.url,
        token_file=write_token(tmp_path / "token", emulator.token),
        cache_dir=tmp_path / "cache",
        log_path=tmp_path / "mount.log",
        args=("--write-back-delay", "0"),
    )
    try:
        mount.start()
        # The first message is READY=1, and by then the mount answers.
        first = manager.receive()
        assert first.get("READY") == "1", manager.messages
        assert os.path.ismount(mountpoint)
        assert "Notified" in os.listdir(mountpoint / SLUG)
        manager.receive_until("all saved")

        # A save held on its way to the server is reported pending, then saved.
        assert os.listdir(mountpoint / SLUG / "Notified") == []
        proxy.hold_after(0)
        (mountpoint / SLUG / "Notified" / "a.txt").write_bytes(b"x" * 3000)
        pending = manager.receive_until("pending")
        assert pending["STATUS"] == "1 save pending, 2.9 KiB", pending
        proxy.release()
        manager.receive_until("all saved")
        assert "a.txt" in server_docs(emulator, pid)

        assert mount.process is not None
        mount.process.terminate()  # what systemctl stop does
        stopping = manager.receive_until("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert mount.process.wait(DEADLINE) == 0
        wait_until(lambda: not os.path.ismount(mountpoint), DEADLINE, "the unmount")
    finally:
        mount.unmount()
        manager.sock.close()
    assert all("READY" not in m for m in manager.messages[1:]), manager.messages
    assert mount.problems() == []


def test_the_status_line_counts_the_bytes_still_to_send() -> None:
    """A failed save is counted as failed, not in the bytes still to send."""
    counts = {"pending": 1, "uploading": 1, "failed": 1, "bytes": 3 << 20, "pending_bytes": 3072}
    status = {"pending": 2, "counts": counts, "online": True}
    assert describe(status) == "2 saves pending, 3.0 KiB; 1 failed (bimfs status)"
    counts = {"pending": 0, "uploading": 0, "failed": 1, "bytes": 3 << 20, "pending_bytes": 0}
    status = {"pending": 0, "counts": counts, "online": False}
    assert describe(status) == "nothing pending; 1 failed (bimfs status); offline"
