"""The configuration file: defaults for every mount option and named mounts.

``$XDG_CONFIG_HOME/bimfs/config.toml`` (``~/.config/bimfs/config.toml``), or the file given with
``--config``::

    [defaults]
    cache-size = "20G"
    on-conflict = "copy"

    [mount.site]
    env = "prod"
    team = "acme"
    mountpoint = "~/Bimplus/site"
    token-file = "~/.config/bimfs/site.token"

Keys are the long option names of ``bimfs mount``, written with ``-`` or ``_``. The command line
wins over the file, ``[mount.NAME]`` over ``[defaults]``, ``[defaults]`` over the built-in
defaults. Anything wrong (a key, a type, a value, the TOML itself) is one ``ConfigError`` line that
names the file, the line where it can be found, and the key. Tokens are refused: only a
``token-file`` may name one.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bimfs.config import ENV_URLS, ConfigError, check_api_url, parse_size

FILE_NAME = "config.toml"

# Keys that would put a secret in the file.
SECRET_KEYS = frozenset({"token", "access_token", "refresh_token", "password", "bimplus_token"})


class Invalid(ValueError):
    """A value that does not fit its option; the message says what is expected."""


def default_path() -> Path:
    """``$XDG_CONFIG_HOME/bimfs/config.toml``, else ``~/.config/bimfs/config.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bimfs" / FILE_NAME


# ---------------------------------------------------------------------------- value kinds
# Each takes a value as TOML gives it (or as text, from a mount option ``-o key=value``) and
# returns it as the argument parser would have, or raises Invalid.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {_shown(value)}")
    return value


def _number(minimum: float = 0.0, maximum: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise Invalid(f"expected a number of seconds, got {_shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number of seconds, got {_shown(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum:g}" if maximum is not None else ""
            raise Invalid(f"must be at least {minimum:g}{upper}, got {value:g}")
        return float(value)

    return convert


def _whole(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"expected a whole number >= 0, got {_shown(value)}")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_shown(value)}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}, got {_shown(value)}")
        return str(value)

    return convert


def _size(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f'expected a size such as "10G", got {_shown(value)}')
    text = str(value)
    try:
        size = parse_size(text)
    except ConfigError:
        raise Invalid(f'expected a size such as "10G", got {_shown(value)}') from None
    if size < 16 << 20:
        raise Invalid(f"must be at least 16M, got {_shown(value)}")
    return text


def _url(value: Any) -> str:
    try:
        return check_api_url(_text(value))
    except ConfigError as exc:
        raise Invalid(str(exc)) from None


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"expected a list of strings, got {_shown(value)}")
    return list(value)


def _options(value: Any) -> list[str]:
    return [part for item in _patterns(value) for part in item.split(",") if part]


def _path(value: Any) -> Path:
    text = _text(value)
    if not text:
        raise Invalid("expected a path, got an empty string")
    return Path(text).expanduser()


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return "a table" if isinstance(value, dict) else "a list"
    return str(value)


# The options a file (and a mount option) may set: key -> (argument dest, converter). Paths are
# resolved against the file's directory when relative.
OPTIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "api_url": ("api_url", _url),
    "env": ("env", _choice(*sorted(ENV_URLS))),
    "team": ("team", _text),
    "token_file": ("token_file", _path),
    "token_type": ("token_type", _choice("BimPlus", "Bearer")),
    "cache_dir": ("cache_dir", _path),
    "cache_size": ("cache_size", _size),
    "dir_ttl": ("dir_ttl", _number()),
    "pin_refresh": ("pin_refresh", _number()),
    "write_back_delay": ("write_back_delay", _number()),
    "local_only": ("local_only", _patterns),
    "read_only": ("read_only", _flag),
    "offline_after": ("offline_after", _number(0.001, 600)),
    "on_conflict": ("on_conflict", _choice("copy", "newest-wins")),
    "show_versions": ("show_versions", _flag),
    "stream_uploads": ("stream_uploads", _flag),
    "no_stream_uploads": ("stream_uploads", lambda v: not _flag(v)),
    "foreground": ("foreground", _flag),
    "options": ("fuse_options", _options),
    "uid": ("uid", _whole),
    "gid": ("gid", _whole),
    "drain_timeout": ("drain_timeout", _number()),
    "verbose": ("verbose", _flag),
    "debug": ("debug", _flag),
    "log_file": ("log_file", _path),
}
# Written as TOML booleans or numbers in the file (a mount option's text is converted).
FLAGS = frozenset(
    {"read_only", "show_versions", "stream_uploads", "no_stream_uploads", "foreground"}
    | {"verbose", "debug"}
)
NUMBERS = frozenset(
    {"dir_ttl", "pin_refresh", "write_back_delay", "offline_after", "drain_timeout", "uid", "gid"}
)
PATH_OPTIONS = frozenset({"token_file", "cache_dir", "log_file", "mountpoint"})
# Only in a named mount: where it is mounted.
MOUNT_ONLY = {"mountpoint": ("mountpoint", _path)}


def key_name(key: str) -> str:
    """A key as written (``dir-ttl`` or ``dir_ttl``) -> its canonical form (``dir_ttl``)."""
    return key.replace("-", "_")


# ---------------------------------------------------------------------------- the file


@dataclass
class Settings:
    """A configuration file, checked: argument values by dest, per table."""

    path: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    mounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_mount(self, name: str) -> bool:
        """``name`` names a mount of this file (and is not written as a path)."""
        return "/" not in name and name in self.mounts

    def values(self, name: str | None = None) -> dict[str, Any]:
        """Argument values for ``bimfs mount``: ``[defaults]`` under ``[mount.NAME]``. The API
        root is taken whole from the table that names it (``api-url`` or ``env``)."""
        values = dict(self.defaults)
        named = self.mounts.get(name, {}) if name is not None else {}
        if "api_url" in named or "env" in named:
            values.pop("api_url", None)
            values.pop("env", None)
        values.update(named)
        return values


def load(path: Path | None) -> Settings:
    """Read and check the configuration file. Without ``path`` the default file, which may be
    missing (then nothing is configured); a file named explicitly must exist."""
    explicit = path is not None
    path = (path or default_path()).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return Settings(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read configuration file {path}: {reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _check(path, text, data)


def _check(path: Path, text: str, data: dict[str, Any]) -> Settings:
    settings = Settings(path)
    for key, value in data.items():
        if key == "defaults":
            settings.defaults = _table(path, text, ("defaults",), value, named=False)
        elif key == "mount":
            if not isinstance(value, dict):
                raise _error(path, text, (), key, "expected tables [mount.NAME]")
            for name, table in value.items():
                if not name or "/" in name or name.startswith("."):
                    raise _error(path, text, ("mount", name), None, "not a usable mount name")
                settings.mounts[name] = _table(path, text, ("mount", name), table, named=True)
        else:
            raise _error(path, text, (), key, "unknown key (expected [defaults] or [mount.NAME])")
    return settings


def _table(
    path: Path, text: str, where: tuple[str, ...], table: Any, *, named: bool
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _error(path, text, (), where[-1], "expected a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key_name(key)
        if name in SECRET_KEYS:
            raise _error(
                path,
                text,
                where,
                key,
                "tokens are never read from the configuration file; "
                "put the token in a file of its own (mode 0600) and name it with token-file",
            )
        spec = OPTIONS.get(name) or (MOUNT_ONLY.get(name) if named else None)
        if spec is None:
            hint = " (only a [mount.NAME] has one)" if name in MOUNT_ONLY else ""
            raise _error(path, text, where, key, f"unknown key{hint}")
        dest, convert = spec
        try:
            if isinstance(value, str) and name in FLAGS:
                raise Invalid(f"expected true or false, got {_shown(value)}")
            if isinstance(value, str) and name in NUMBERS:
                raise Invalid(f"expected a number, got {_shown(value)}")
            converted = convert(value)
        except Invalid as exc:
            raise _error(path, text, where, key, str(exc)) from None
        if name in PATH_OPTIONS and not converted.is_absolute():
            converted = path.parent / converted
        values[dest] = converted
    if "api_url" in values and "env" in values:
        raise _error(path, text, where, "env", "api-url and env exclude each other")
    return values


def _error(
    path: Path, text: str, where: tuple[str, ...], key: str | None, message: str
) -> ConfigError:
    line = _line_of(text, where, key)
    place = f"{path}, line {line}" if line else str(path)
    table = f"[{'.'.join(where)}] " if where else ""
    return ConfigError(f"{place}: {table}{key + ': ' if key else ''}{message}")


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")


def _line_of(text: str, where: tuple[str, ...], key: str | None) -> int | None:
    """The line where ``key`` of the table ``where`` is written (or the table's header), for
    the error message; None when it cannot be told (keys written as dotted or inline tables)."""
    current: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = tuple(p.strip().strip("\"'") for p in header.group(1).split("."))
            if key is None and current == where:
                return number
            continue
        written = key is not None and re.match(rf"""^\s*["']?{re.escape(key)}["']?\s*=""", line)
        if written and current == where:
            return number
    return None


def mountpoint_of(argument: str, config: Path | None) -> Path:
    """What ``bimfs unmount`` and ``bimfs status`` are given: a mount named in the
    configuration file (a word without ``/``), else a path."""
    if "/" not in argument and argument not in (".", ".."):
        settings = load(config)
        if settings.is_mount(argument):
            where = settings.mounts[argument].get("mountpoint")
            if where is None:
                raise ConfigError(f"{settings.path}: [mount.{argument}] has no mountpoint")
            return Path(where).absolute()
    return Path(argument).absolute()
