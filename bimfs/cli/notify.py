"""The service manager's notification protocol (``sd_notify``), for ``Type=notify`` units.

systemd passes ``NOTIFY_SOCKET``: the path of an AF_UNIX datagram socket, or an abstract one
written with a leading ``@``. Each message is a datagram of ``KEY=value`` lines: ``READY=1`` once
the mount answers, ``STATUS=...`` (shown by ``systemctl status``) with the saves not yet on the
server, ``STOPPING=1`` when shutting down starts. Without ``NOTIFY_SOCKET`` nothing is sent.
Sending never fails the mount: a manager that went away only costs the messages.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from bimfs.cli.common import human

log = logging.getLogger(__name__)


class Notifier:
    """Messages to the service manager at ``address`` (None: nowhere)."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls) -> Notifier:
        """The manager named by ``NOTIFY_SOCKET``, which is removed from the environment so that
        programs this one starts do not talk to the manager in its name."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None) or None)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), address)
        except OSError as exc:
            log.debug("service manager notification not sent: %s", exc)

    def ready(self) -> None:
        self.send("READY=1", "STATUS=mounted")

    def progress(self, status: dict[str, Any]) -> None:
        self.send(f"STATUS={describe(status)}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=unmounting: sending pending saves")


def describe(status: dict[str, Any]) -> str:
    """One line about the saves: ``3 saves pending, 1.2 MiB`` or ``all saved``, and failures."""
    pending = status.get("pending", 0) or 0
    counts = status.get("counts") or {}
    failed = counts.get("failed", 0) or 0
    if pending:
        noun = "save" if pending == 1 else "saves"
        text = f"{pending} {noun} pending, {human(counts.get('pending_bytes', 0) or 0)}"
    else:
        text = "nothing pending" if failed else "all saved"
    if failed:
        text += f"; {failed} failed (bimfs status)"
    if status.get("online") is False:
        text += "; offline"
    return text
