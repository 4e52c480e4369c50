"""``bimfs systemd-unit``: the unit it prints is valid for systemd, and its ExecStart and ExecStop
lines, run as systemd runs them, mount the named mount (telling the manager it is ready) and
unmount it once every save is on the server."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import SLUG, Daemon, new_project, one_error_line, run_bimfs, server_docs
from tests.cli.test_cli_notify import Manager
from tests.support.emulator import Emulator
from tests.support.processes import write_token

pytestmark = pytest.mark.mount


def unit_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_the_printed_unit_mounts_and_unmounts_a_named_mount(
    emulator: Emulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory()
    token = write_token(tmp_path / "token", emulator.token)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[defaults]\nwrite-back-delay = 30\n\n[mount.site]\napi-url = "{emulator.url}"\n'
        f'token-file = "{token}"\nmountpoint = "{d.path}"\ncache-dir = "{d.cache_dir}"\n'
    )
    result = run_bimfs("systemd-unit", "site", "--config", config, env=d.env)
    assert result.returncode == 0, result.stderr
    unit = unit_lines(result.stdout)
    assert unit["Type"] == "notify"
    assert "systemctl enable --now bimfs@site" in result.stdout

    if shutil.which("systemd-analyze"):
        units = tmp_path / "units"
        units.mkdir()
        (units / "bimfs@.service").write_text(result.stdout)
        check = subprocess.run(
            ["systemd-analyze", "verify", "bimfs@site.service"],
            cwd=units,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and check.stderr == "", check.stderr

    start = [w.replace("%i", "site") for w in shlex.split(unit["ExecStart"])]
    stop = [w.replace("%i", "site") for w in shlex.split(unit["ExecStop"])]
    assert Path(start[0]).is_absolute() and os.access(start[0], os.X_OK)
    manager = Manager(tmp_path, abstract=False)
    pid = new_project(emulator, "Unit Project")
    service = subprocess.Popen(start, env={**d.env, "NOTIFY_SOCKET": manager.address})
    try:
        d.pid = service.pid
        assert manager.receive().get("READY") == "1"
        project = d.p(SLUG, "Unit Project")
        (project / "plan.txt").write_bytes(b"held for 30 s by write-back-delay\n")
        # ExecStop sends the pending save at once, then unmounts; the service then ends.
        stopped = subprocess.run(stop, env=d.env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert service.wait(30) == 0
        assert not os.path.ismount(d.path)
        assert "plan.txt" in server_docs(emulator, pid)
        assert manager.receive_until("STOPPING")["STOPPING"] == "1"
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        manager.sock.close()


def test_an_unknown_name_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[mount.site]\nenv = 'prod'\nmountpoint = '/mnt/site'\n")
    line = one_error_line(run_bimfs("systemd-unit", "other", "--config", config))
    assert f"{config} has no [mount.other] (configured: site)" in line
    line = one_error_line(run_bimfs("systemd-unit", "--config", tmp_path / "x.toml", "a"))
    assert "does not exist" in line
