"""A real Samba server for tests: ``smbd`` on 127.0.0.1 and a free port, sharing one directory
with the share section documented in ``docs/samba-share.conf``, everything it keeps under its
own directory.

    smb = SambaServer(tmp_path / "samba", mount.path)     # ready when it returns
    smb.smbclient("put local.pdf plan.pdf")               # the smbclient program
    smb.unc("team", "project", "plan.pdf")                # a path for the smbprotocol client
    smb.stop()

The share is reached as user ``root`` with a password of the server's own user database; the
share's ``force user`` is the user running the tests (who made the mount).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SHARE_CONF = Path(__file__).resolve().parents[2] / "docs" / "samba-share.conf"
SHARE = "bimplus"
USER = "root"
PASSWORD = "samba-test-password"
START_TIMEOUT = 30.0


def missing() -> str | None:
    """Why Samba cannot run here (its programs are not installed), else None."""
    for program in ("smbd", "smbpasswd", "smbclient"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian packages samba and smbclient)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def share_section(path: Path) -> str:
    """The documented share section with ``path`` and the current user filled in."""
    text = SHARE_CONF.read_text()
    user = pwd.getpwuid(os.getuid()).pw_name
    text = re.sub(r"(?m)^(\s*path\s*=).*$", rf"\1 {path}", text)
    return re.sub(r"(?m)^(\s*force user\s*=).*$", rf"\1 {user}", text)


class SambaServer:
    """``smbd --foreground`` sharing ``path`` as ``[bimplus]`` on ``127.0.0.1:port``."""

    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.path = path
        self.port = free_port()
        for sub in ("private", "lock", "state", "cache", "pid", "log", "ncalrpc"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf = root / "smb.conf"
        self.conf.write_text(self._global_section() + "\n" + share_section(path))
        self.log_path = root / "smbd.out"
        self._add_user()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def _global_section(self) -> str:
        r = self.root
        return f"""[global]
   server role = standalone server
   smb ports = {self.port}
   interfaces = 127.0.0.1
   bind interfaces only = yes
   disable netbios = yes
   private dir = {r}/private
   passdb backend = tdbsam:{r}/private/passdb.tdb
   lock directory = {r}/lock
   state directory = {r}/state
   cache directory = {r}/cache
   pid directory = {r}/pid
   ncalrpc dir = {r}/ncalrpc
   log file = {r}/log/log.%m
   log level = 1
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   unix extensions = no
"""

    def _add_user(self) -> None:
        subprocess.run(
            ["smbpasswd", "-c", str(self.conf), "-s", "-a", USER],
            input=f"{PASSWORD}\n{PASSWORD}\n".encode(), capture_output=True, check=True,
            timeout=30,
        )  # fmt: skip

    def start(self) -> None:
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "--debug-stdout",
             f"--configfile={self.conf}"],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"smbd exited {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"smbd not listening after {START_TIMEOUT}s") from None
                time.sleep(0.05)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        for path in sorted((self.root / "log").glob("log.*")):
            text += f"\n--- {path.name}\n" + path.read_text(errors="replace")
        return text[-6000:]

    def stop(self) -> None:
        """Stop smbd and the processes it forked for connections (its own process group)."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        # Connection processes may outlive the parent for a moment: they hold the mount busy.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.log_file.close()

    def smbclient(self, *commands: str, cwd: Path | None = None) -> str:
        """Run the ``smbclient`` program with ``commands`` (``;``-joined) on the share; fails
        with its output unless every command succeeded."""
        result = subprocess.run(
            ["smbclient", f"//127.0.0.1/{SHARE}", "-p", str(self.port), "-U",
             f"{USER}%{PASSWORD}", "-E", "-c", "; ".join(commands)],
            cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "NT_STATUS_" not in output, (
            f"smbclient {commands} exited {result.returncode}:\n{output}\n{self.log()}"
        )
        return output

    def unc(self, *parts: str) -> str:
        """``\\\\127.0.0.1\\bimplus\\a\\b`` for the smbprotocol client."""
        return "\\".join(["\\\\127.0.0.1", SHARE, *parts])
