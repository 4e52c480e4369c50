"""The command line's arguments: one sub-command per verb."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bimfs import __version__
from bimfs.cli.common import LIST_LIMIT
from bimfs.config import ENV_URLS


def build_parser(mount_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``mount_defaults`` (argument values by dest, from the
    configuration file) replace the built-in defaults of ``bimfs mount``."""
    parser = argparse.ArgumentParser(
        prog="bimfs", description="Mount a Bimplus account as a filesystem."
    )
    parser.add_argument("--version", action="version", version=f"bimfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    mount = sub.add_parser(
        "mount",
        help="mount a Bimplus account",
        usage="%(prog)s [-h] (MOUNTPOINT | NAME | SOURCE MOUNTPOINT) [options]",
    )
    mount.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT|NAME",
        help="a directory, or a mount named in the configuration file",
    )
    mount.add_argument(
        "target",
        nargs="?",
        metavar="MOUNTPOINT",
        help="with a first argument naming the source (a named mount, an API URL, prod, stage"
        " or dev): where to mount it",
    )
    _add_config_arg(mount)
    _add_api_args(mount)
    mount.add_argument("--team", metavar="SLUG", help="mount one team as the root")
    mount.add_argument("--token-file", type=Path, metavar="FILE")
    mount.add_argument("--token-type", default="BimPlus", choices=["BimPlus", "Bearer"])
    mount.add_argument("--cache-dir", type=Path, metavar="DIR")
    mount.add_argument("--cache-size", default=None, metavar="SIZE", help="e.g. 10G (default)")
    mount.add_argument("--dir-ttl", type=float, default=30.0, metavar="SECONDS")
    mount.add_argument(
        "--pin-refresh",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how often pinned folders are checked for new versions",
    )
    mount.add_argument("--write-back-delay", type=float, default=2.0, metavar="SECONDS")
    mount.add_argument("--local-only", action="append", default=[], metavar="PATTERN")
    mount.add_argument("--read-only", action=argparse.BooleanOptionalAction, default=False)
    mount.add_argument(
        "--offline-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a filesystem call waits for the server before the mount works offline",
    )
    mount.add_argument(
        "--on-conflict",
        choices=["copy", "newest-wins"],
        default="copy",
        help="a save based on an older version than the server's newest: keep it as a conflict"
        " copy next to the document (default), or make it the newest version",
    )
    mount.add_argument(
        "--show-versions",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="list versions/ in directory listings (it is always reachable by name)",
    )
    mount.add_argument(
        "--stream-uploads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send large new files while they are written (default), or only after close",
    )
    mount.add_argument("--foreground", "-f", action="store_true")
    mount.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="mount options, comma separated: FUSE options (allow_other, ...) or bimfs options"
        " as key=value (team=acme, read_only, ...)",
    )
    mount.add_argument("--uid", type=int, default=None)
    mount.add_argument("--gid", type=int, default=None)
    mount.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long SIGTERM/unmount waits for pending uploads",
    )
    _add_log_args(mount)

    unmount = sub.add_parser("unmount", help="send pending uploads, then unmount")
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT|NAME")
    _add_config_arg(unmount)
    unmount.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")

    status = sub.add_parser("status", help="transfers, pending and failed uploads, cache use")
    status.add_argument("mountpoint", metavar="MOUNTPOINT|NAME", nargs="?")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="with --watch (default 2)"
    )
    status.add_argument(
        "--count", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes"
    )
    _add_config_arg(status)
    status.add_argument("--json", action="store_true", help="everything, machine-readable")
    status.add_argument(
        "--all",
        action="store_true",
        help=f"list every pending and failed save (default: the first {LIST_LIMIT})",
    )

    demo = sub.add_parser("demo", help="start the emulator with sample data and mount it")
    demo.add_argument("mountpoint", type=Path, nargs="?", default=Path("/tmp/bimfs-demo"))
    demo.add_argument("--data-dir", type=Path, default=None)
    demo.add_argument(
        "--exit",
        action="store_true",
        help="show the tree and stop (default when stdin is not a terminal)",
    )
    _add_log_args(demo)

    _add_unit_parser(sub)
    from bimfs.cli.pin import add_pin_parsers

    add_pin_parsers(sub)
    try:
        from bimfs.login import add_login_parser
    except ImportError:  # pragma: no cover - login is part of the package
        pass
    else:
        add_login_parser(sub)
    if mount_defaults:
        mount.set_defaults(**mount_defaults)
    return parser


def _add_unit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    unit = sub.add_parser(
        "systemd-unit",
        help="print a systemd unit that mounts a named mount (Type=notify)",
        description="Print the systemd unit bimfs@.service; `systemctl enable --now bimfs@NAME`"
        " then mounts [mount.NAME] of the configuration file at boot (or, with --user, at"
        " login) and sends pending saves before it unmounts.",
    )
    unit.add_argument("name", nargs="?", metavar="NAME", help="check that this mount is usable")
    unit.add_argument("--user", action="store_true", help="a unit for systemctl --user")
    unit.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the configuration file (default: /etc/bimfs/config.toml, or with --user"
        " $XDG_CONFIG_HOME/bimfs/config.toml)",
    )


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the configuration file (default: $XDG_CONFIG_HOME/bimfs/config.toml)",
    )


def _add_api_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--api-url", metavar="URL")
    group.add_argument("--env", choices=sorted(ENV_URLS))


def _add_log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--log-file", type=Path)
