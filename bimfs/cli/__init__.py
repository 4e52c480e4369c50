"""The ``bimfs`` command: the only ``sys.exit``.

Each command lives in a module of its own (``mount``, ``unmount``, ``status``, ``demo``; ``login``
in ``bimfs.login``); this one parses the arguments and turns errors into one line on stderr
(what failed, what to do) and a non-zero exit.
"""

from __future__ import annotations

import subprocess
import sys

from bimfs.cli.arguments import mount_arguments
from bimfs.cli.common import CliError
from bimfs.cli.demo import cmd_demo
from bimfs.cli.fstab import helper_argv
from bimfs.cli.mount import cmd_mount
from bimfs.cli.parser import build_parser
from bimfs.cli.status import cmd_status, format_status, read_status
from bimfs.cli.units import cmd_systemd_unit
from bimfs.cli.unmount import cmd_unmount
from bimfs.cli.watch import cmd_watch
from bimfs.config import ConfigError

__all__ = ["CliError", "build_parser", "format_status", "main", "read_status"]


def main(argv: list[str] | None = None) -> int:
    # `bimfs SOURCE MOUNTPOINT -o OPTIONS` is how mount(8) runs a FUSE filesystem (fstab).
    argv = helper_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    from bimfs.fuse.mount import MountError

    try:
        if args.command == "mount":
            return cmd_mount(mount_arguments(argv, args))
        if args.command == "unmount":
            return cmd_unmount(args)
        if args.command == "status":
            return cmd_watch(args) if args.watch else cmd_status(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "systemd-unit":
            return cmd_systemd_unit(args)
        if args.command in ("pin", "unpin"):
            from bimfs.cli.pin import run_pin

            return run_pin(args)
        if args.command == "login":
            from bimfs.login import run_login

            return run_login(args)
    except (CliError, ConfigError, MountError) as exc:
        message = str(exc)
        print(message if message.startswith("bimfs:") else f"bimfs: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except subprocess.CalledProcessError as exc:
        print(
            f"bimfs: {' '.join(map(str, exc.cmd[:4]))} failed ({exc.returncode})", file=sys.stderr
        )
        return 1
    parser.error(f"unknown command {args.command}")
    return 2
