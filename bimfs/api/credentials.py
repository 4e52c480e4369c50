"""Credentials stored by ``bimfs login``: one JSON file per API URL, mode 0600.

The files live in ``<config dir>/credentials/`` (the directory is 0700). They are written
atomically (a temporary file in the same directory, fsync, rename, fsync of the directory) so a
crash never leaves half a refresh token behind. Contents::

    {"kind": "oidc", "api_url": ..., "client_id": ..., "issuer": ..., "token_endpoint": ...,
     "refresh_token": ..., "scope": ..., "saved_at": ...}
    {"kind": "legacy", "api_url": ..., "access_token": ..., "client_id": ...,
     "application_id": ..., "user": ..., "expires_at": ..., "saved_at": ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bimfs.api.errors import AuthError

log = logging.getLogger("bimfs.api")

FILE_MODE = 0o600
DIR_MODE = 0o700


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/bimfs``, or ``~/.config/bimfs`` when that is unset or relative."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "bimfs"


def normalise_api_url(api_url: str) -> str:
    """The form of an API URL used as the key of its credentials (lower-case scheme and host,
    no trailing slash)."""
    parts = urlsplit(api_url.strip())
    netloc = parts.netloc.lower()
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def credentials_path(config_dir: Path, api_url: str) -> Path:
    """Where the credentials for ``api_url`` are stored."""
    key = normalise_api_url(api_url)
    host = urlsplit(key).hostname or "api"
    safe_host = re.sub(r"[^a-z0-9.-]+", "_", host)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(config_dir) / "credentials" / f"{safe_host}-{digest}.json"


def load_credentials(config_dir: Path, api_url: str) -> dict[str, Any] | None:
    """The stored credentials for ``api_url``, or None when there are none.

    Raises ``AuthError`` when the file exists but cannot be read or is not valid.
    """
    path = credentials_path(config_dir, api_url)
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthError(f"cannot read stored credentials {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("stored credentials %s are accessible to other users; chmod 600 it", path)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AuthError(f"stored credentials {path} are damaged; run `bimfs login` again") from exc
    if not isinstance(data, dict) or data.get("kind") not in ("oidc", "legacy"):
        raise AuthError(f"stored credentials {path} are not usable; run `bimfs login` again")
    return data


def save_credentials(config_dir: Path, api_url: str, data: dict[str, Any]) -> Path:
    """Store credentials for ``api_url`` atomically with mode 0600; return the file's path."""
    path = credentials_path(config_dir, api_url)
    _make_private_dir(Path(config_dir))
    _make_private_dir(path.parent, enforce=True)
    record = dict(data)
    record["api_url"] = normalise_api_url(api_url)
    record["saved_at"] = time.time()
    payload = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        # The mode given to open() is filtered by the umask; make it exact.
        os.fchmod(fd, FILE_MODE)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _make_private_dir(path: Path, *, enforce: bool = False) -> None:
    """Create ``path`` as 0700; with ``enforce`` also tighten an existing one (the directory
    of the credential files themselves)."""
    if path.is_dir() and not enforce:
        return
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
