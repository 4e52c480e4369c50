"""``bimfs systemd-unit``: the systemd unit that mounts a named mount at boot or login.

The units ship in ``bimfs/data/systemd/`` as templates (``bimfs@.service``, instance = the
mount's name); this command fills in this installation's ``bimfs`` program and the
configuration file, and prints the result.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from bimfs.cli.common import CliError
from bimfs.cli.settings import default_path, load

SYSTEM_CONFIG = Path("/etc/bimfs/config.toml")
UNITS = {False: "bimfs@.service", True: "bimfs-user@.service"}


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    config = (args.config or (default_path() if args.user else SYSTEM_CONFIG)).absolute()
    if args.name is not None:
        settings = load(config)
        if not settings.is_mount(args.name):
            known = ", ".join(sorted(settings.mounts)) or "none"
            raise CliError(f"{config} has no [mount.{args.name}] (configured: {known})")
        if "mountpoint" not in settings.mounts[args.name]:
            raise CliError(f"{config}: [mount.{args.name}] has no mountpoint")
    template = resources.files("bimfs").joinpath("data", "systemd", UNITS[args.user])
    text = template.read_text(encoding="utf-8")
    text = text.replace("@BIMFS@", str(program())).replace("@CONFIG@", str(config))
    if args.name is not None:
        text = text.replace("bimfs@NAME", f"bimfs@{args.name}")
    sys.stdout.write(text)
    return 0


def program() -> Path:
    """This installation's ``bimfs`` command, by its absolute path (systemd wants one)."""
    beside = Path(sys.executable).parent / "bimfs"
    if beside.exists():
        return beside
    found = shutil.which("bimfs")
    if found is None:
        raise CliError("cannot find the bimfs command on PATH to name it in the unit")
    return Path(found).absolute()
