"""``bimfs mount``'s arguments with the configuration file and mount options folded in.

Precedence, highest first: the command line (long options and ``-o key=value``), the named
mount's table ``[mount.NAME]``, the file's ``[defaults]``, the built-in defaults. The API root
(``api-url`` or ``env``) is taken whole from the highest level that sets one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bimfs.cli.fstab import split_options
from bimfs.cli.parser import build_parser
from bimfs.cli.settings import Settings, load
from bimfs.config import ENV_URLS, ConfigError, check_api_url

API_DESTS = ("api_url", "env")


def mount_arguments(argv: list[str], args: argparse.Namespace) -> argparse.Namespace:
    """Parse ``bimfs mount`` again with the configuration file's values as defaults; resolve a
    named mount or a source; apply the bimfs options given with ``-o``.

    Raises ConfigError (one line) for a bad file, an unknown source or a bad option."""
    options, _ = split_options(args.fuse_options)
    settings = load(args.config or options.get("config"))
    source: str = args.mountpoint
    target: str | None = args.target
    named: str | None = None
    chosen: dict[str, Any] = {}
    if target is not None:
        if settings.is_mount(source):
            named = source
        else:
            chosen = _source(source, settings)
        mountpoint = Path(target)
    elif settings.is_mount(source):
        named = source
        where = settings.mounts[source].get("mountpoint")
        if where is None:
            raise ConfigError(
                f"{settings.path}: [mount.{source}] has no mountpoint "
                f"(add one, or give it: bimfs mount {source} MOUNTPOINT)"
            )
        mountpoint = Path(where)
    else:
        mountpoint = Path(source)
    values = settings.values(named)
    values.pop("mountpoint", None)
    if chosen:
        for dest in API_DESTS:
            values.pop(dest, None)
        values.update(chosen)
    api = {dest: values.pop(dest) for dest in API_DESTS if dest in values}
    args = build_parser(values).parse_args(argv)
    if args.api_url is None and args.env is None:
        for dest, value in api.items():
            setattr(args, dest, value)
    # The file's FUSE options and the command line's -o, bimfs ones among them taken out.
    options, fuse = split_options(args.fuse_options)
    options.pop("config", None)
    if "api_url" in options or "env" in options:
        args.api_url = args.env = None
    for dest, value in options.items():
        if dest == "local_only":
            args.local_only = [*args.local_only, *value]
        elif dest == "fuse_options":
            fuse.extend(value)
        else:
            setattr(args, dest, value)
    args.fuse_options = fuse
    args.mountpoint = mountpoint
    args.mount_name = named
    return args


def _source(source: str, settings: Settings) -> dict[str, Any]:
    """The first of two arguments when it is not a named mount: an API URL or an environment."""
    if "://" in source:
        return {"api_url": check_api_url(source)}
    if source in ENV_URLS:
        return {"env": source}
    if source in ("bimfs", "none"):
        return {}
    known = ", ".join(sorted(settings.mounts)) or f"none in {settings.path}"
    raise ConfigError(
        f"{source!r} is neither a named mount (configured: {known}), an API URL "
        f"nor one of {', '.join(sorted(ENV_URLS))}"
    )
