"""Mount options (``-o``) and the mount helper form used by ``mount`` and ``/etc/fstab``.

An fstab line such as::

    site  /mnt/site  fuse.bimfs  team=acme,token_file=/etc/bimfs/token,allow_other,_netdev  0 0

makes ``mount`` run ``mount.fuse3``, which runs ``bimfs site /mnt/site -o OPTIONS`` through
``/bin/sh`` (the program is the type's part after ``fuse.``; with the older type ``fuse`` the
source ``bimfs#site`` names it). ``bimfs SOURCE MOUNTPOINT -o OPTIONS`` is therefore taken as
``bimfs mount SOURCE MOUNTPOINT -o OPTIONS``.

Each ``-o`` option is one of: a ``bimfs mount`` option as ``key=value`` (or ``key`` for a
true/false one, ``ro`` for ``read_only``), ``config=FILE``, an option that only means something to
``mount`` or systemd (ignored), or a FUSE option, passed on to the kernel (``allow_other``,
``default_permissions``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bimfs.cli.settings import OPTIONS, SECRET_KEYS, Invalid, key_name
from bimfs.config import ConfigError

COMMANDS = frozenset(
    {"mount", "unmount", "status", "demo", "login", "systemd-unit", "pin", "unpin"}
)

# Meaningful to mount(8), mount.fuse3 or systemd only.
IGNORED = frozenset(
    {"_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "owner", "rw", "defaults"}
)
IGNORED_PREFIXES = ("x-", "comment=", "setuid=")
# Flags that stand for a true/false option.
FLAG_ALIASES = {"ro": "read_only"}


def helper_argv(argv: list[str]) -> list[str]:
    """``SOURCE MOUNTPOINT [-o OPTIONS]...`` (how ``mount.fuse3`` runs a filesystem) ->
    ``mount SOURCE MOUNTPOINT -o OPTIONS...``; any other command line as it is."""
    if not argv or argv[0] in COMMANDS or argv[0].startswith("-"):
        return argv
    positionals: list[str] = []
    options: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "-o":
            options.append(next(words, ""))
        elif word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
        elif word in ("-v", "-n", "-s", "-f"):
            continue  # mount(8)'s verbose, no-mtab, sloppy, fake: nothing to do with them here
        else:
            positionals.append(word)
    if len(positionals) < 2 and not options:
        return argv  # a mistyped command rather than a mount: argparse says which exist
    if positionals and positionals[0].startswith("bimfs#"):
        positionals[0] = positionals[0][len("bimfs#") :]
    result = ["mount", *positionals]
    for option in options:
        result += ["-o", option]
    return result


def split_options(values: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Mount options -> (``bimfs mount`` argument values by dest, FUSE options).

    ``config=FILE`` comes back as ``config``. Raises ConfigError (one line, naming the option)
    for a value that does not fit, and for a token."""
    settings: dict[str, Any] = {}
    fuse: list[str] = []
    for value in values:
        for option in value.split(","):
            option = option.strip()
            if not option or option in IGNORED or option.startswith(IGNORED_PREFIXES):
                continue
            key, has_value, text = option.partition("=")
            name = key_name(FLAG_ALIASES.get(key, key))
            if name in SECRET_KEYS:
                raise ConfigError(
                    f"mount option {key}: tokens are never accepted as options; "
                    "name a file holding it with token_file="
                )
            if name == "config":
                if not text:
                    raise ConfigError("mount option config: expected config=FILE")
                settings["config"] = Path(text).expanduser()
                continue
            spec = OPTIONS.get(name)
            if spec is None:
                fuse.append(option)  # the kernel's or libfuse's; they judge it
                continue
            dest, convert = spec
            try:
                converted = convert(text if has_value else True)
            except Invalid as exc:
                reason = exc if has_value else f"expected {key}=VALUE"
                raise ConfigError(f"mount option {key}: {reason}") from None
            if dest in ("api_url", "env"):
                settings.pop("api_url", None)
                settings.pop("env", None)
            if dest in ("local_only", "fuse_options"):
                settings[dest] = [*settings.get(dest, []), *converted]
            else:
                settings[dest] = converted
    return settings, fuse
