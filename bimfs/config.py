"""The mount's configuration: one frozen dataclass, validated with clear one-line errors."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ENV_URLS = {
    "prod": "https://api.bimplus.net/v2",
    "stage": "https://api-stage.bimplus.net/v2",
    "dev": "https://api-dev.bimplus.net/v2",
}

DEFAULT_CACHE_SIZE = 10 << 30


class ConfigError(ValueError):
    """A configuration value is unusable; the message is one line for the user."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5GiB``, ``4096`` -> bytes (binary multiples)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ConfigError(f"not a size: {text!r} (use e.g. 512M or 10G)")
    number = float(match.group(1))
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(number * (1024**power))


def check_api_url(api_url: str) -> str:
    """Validate an API root URL and return it without a trailing slash.

    ``https://`` is required; ``http://`` is accepted only for a loopback host (the emulator),
    because the token would otherwise cross the network in clear text.
    """
    parts = urlsplit(api_url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise ConfigError(f"not an http(s) API URL: {api_url!r}")
    if scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"refusing plain http:// API URL {api_url!r}: tokens would travel unencrypted; "
            "use https:// (plain http is allowed only for 127.0.0.1/localhost)"
        )
    if parts.username or parts.password:
        raise ConfigError("the API URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ConfigError(f"the API URL must not have a query or fragment: {api_url!r}")
    return api_url.strip().rstrip("/")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/bimfs`` or ``~/.cache/bimfs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bimfs"


def default_cache_dir(api_url: str) -> Path:
    """One cache directory per API root, so two accounts never share content or journals."""
    digest = hashlib.sha256(api_url.encode()).hexdigest()[:16]
    return default_cache_root() / digest


@dataclass(frozen=True)
class Config:
    """Everything a mount needs; built by the CLI, read by every layer."""

    mountpoint: Path
    api_url: str
    cache_dir: Path
    team: str | None = None
    token_file: Path | None = None
    token_type: str = "BimPlus"
    cache_size: int = DEFAULT_CACHE_SIZE
    dir_ttl: float = 30.0
    pin_refresh: float = 300.0  # how often pinned directories are checked for new versions
    negative_ttl: float = 2.0
    write_back_delay: float = 2.0
    local_only: tuple[str, ...] = ()
    read_only: bool = False
    foreground: bool = False
    fuse_options: tuple[str, ...] = ()
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    request_timeout: float = 60.0
    read_timeout: float = 120.0
    drain_timeout: float = 30.0
    stream_uploads: bool = True
    show_versions: bool = False
    on_conflict: str = "copy"  # or "newest-wins"
    offline_after: float = 10.0  # a filesystem call waits for the server at most this long

    def __post_init__(self) -> None:
        if self.dir_ttl < 0:
            raise ConfigError("--dir-ttl must be >= 0")
        if self.pin_refresh < 0:
            raise ConfigError("--pin-refresh must be >= 0")
        if self.write_back_delay < 0:
            raise ConfigError("--write-back-delay must be >= 0")
        if self.cache_size < 16 << 20:
            raise ConfigError("--cache-size must be at least 16M")
        if not 0 < self.offline_after <= 600:
            raise ConfigError("--offline-after must be between 0 and 600 seconds")
        if self.on_conflict not in ("copy", "newest-wins"):
            raise ConfigError("--on-conflict must be copy or newest-wins")
        if self.token_type not in ("BimPlus", "Bearer"):
            raise ConfigError("--token-type must be BimPlus or Bearer")
