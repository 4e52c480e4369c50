"""The configuration file: ``bimfs mount NAME`` from ``[mount.NAME]``, ``[defaults]`` under it,
the command line over both, and one clear line for anything wrong in the file."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import (
    SLUG,
    Daemon,
    base_env,
    new_project,
    one_error_line,
    read_status,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.processes import wait_until, write_token

pytestmark = pytest.mark.mount


def write_config(tmp_path: Path, text: str) -> Path:
    """The user's default configuration file ($XDG_CONFIG_HOME of ``base_env``)."""
    path = tmp_path / "xdg-config" / "bimfs" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def site_config(emulator: Emulator, d: Daemon, token: Path, defaults: str = "") -> str:
    return f"""
[defaults]
cache-size = "64M"
read-only = true
cache-dir = "{d.root / "not-this-one"}"
env = "stage"
{defaults}

[mount.site]
api-url = "{emulator.url}"
team = "{SLUG}"
mountpoint = "{d.path}"
token_file = "{token}"
cache-dir = "{d.cache_dir}"
"""


def mount_named(d: Daemon, *args: str) -> None:
    result = run_bimfs("mount", *args, env=d.env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    d.pid = int(read_status(d.path)["pid"])


def test_a_named_mount_takes_its_table_and_the_defaults(
    emulator: Emulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory()
    token = write_token(tmp_path / "token", emulator.token)
    write_config(tmp_path, site_config(emulator, d, token))

    mount_named(d, "site")

    # [mount.site]: the team is the root, the API and cache dir are the table's (not those of
    # [defaults]).
    projects = set(os.listdir(d.path))
    assert "Office Building" in projects and SLUG not in projects
    status = read_status(d.path)
    assert status["api_url"] == emulator.url
    assert status["cache_dir"] == str(d.cache_dir)
    assert not (d.root / "not-this-one").exists()
    # [defaults]: the cache budget and read-only.
    assert status["cache"]["budget"] == 64 << 20
    with pytest.raises(OSError) as err:
        (d.path / "Office Building" / "new.txt").write_bytes(b"x")
    assert err.value.errno == errno.EROFS

    # The name works for status and unmount too.
    shown = run_bimfs("status", "site", env=d.env)
    assert shown.returncode == 0, shown.stderr
    assert str(d.path) in shown.stdout
    done = run_bimfs("unmount", "site", env=d.env)
    assert done.returncode == 0, done.stderr
    d.wait_exit()
    assert not os.path.ismount(d.path)


def test_the_command_line_overrides_the_file(
    emulator: Emulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory()
    token = write_token(tmp_path / "token", emulator.token)
    # Another file than the default one, chosen with --config.
    config = tmp_path / "elsewhere.toml"
    config.write_text(site_config(emulator, d, token, defaults="write-back-delay = 0"))
    pid = new_project(emulator, "Config Override")

    mount_named(d, "site", "--config", str(config), "--no-read-only", "--cache-size", "32M")

    status = read_status(d.path)
    assert status["cache"]["budget"] == 32 << 20
    (d.path / "Config Override" / "note.txt").write_bytes(b"from the command line\n")
    wait_until(lambda: "note.txt" in server_docs(emulator, pid), 30, "the save to reach the server")
    assert emulator.download(SLUG, server_docs(emulator, pid)["note.txt"]["id"]) == (
        b"from the command line\n"
    )


def test_a_named_mount_at_another_mountpoint_and_a_source_url(
    emulator: Emulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    """``bimfs mount NAME MOUNTPOINT`` and ``bimfs mount URL MOUNTPOINT`` (the fstab form)."""
    first, second = daemon_factory(), daemon_factory()
    token = write_token(tmp_path / "token", emulator.token)
    write_config(tmp_path, site_config(emulator, first, token))

    mount_named(second, "site", str(second.path), "--cache-dir", str(second.cache_dir))
    assert "Office Building" in os.listdir(second.path)

    mount_named(first, emulator.url, str(first.path), "-o", f"token_file={token},team=acme-build")
    assert read_status(first.path)["api_url"] == emulator.url
    assert SLUG not in os.listdir(first.path)  # the team given as a mount option
    assert os.listdir(first.path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[defaults]\ndir-ttl = "30s"\n', ", line 2: [defaults] dir-ttl: expected a number"),
        ("[defaults]\npin-refresh = '5m'\n", ", line 2: [defaults] pin-refresh: expected a numb"),
        ("[defaults]\non_conflict = 'last'\n", ", line 2: [defaults] on_conflict: expected one of"),
        ("[defaults]\ncache-size = 1024\n", "[defaults] cache-size: must be at least 16M"),
        ("\n[mount.site]\nteam = 'a'\nmountpoit = '/x'\n", ", line 4: [mount.site] mountpoit:"),
        ("[defaults]\nmountpoint = '/x'\n", "[defaults] mountpoint: unknown key (only a [mount"),
        ("[mount.site]\ntoken = 'eyJabc'\n", "[mount.site] token: tokens are never read"),
        ("[mount.site]\nread-only = 'yes'\n", "[mount.site] read-only: expected true or false"),
        ("[mounts.site]\nteam = 'a'\n", ": mounts: unknown key"),
        ("[defaults]\nteam = \n", ": not valid TOML: Invalid value (at line 2, column 8)"),
    ],
)  # fmt: skip
def test_a_wrong_file_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write_config(tmp_path, text)
    (tmp_path / "mnt").mkdir()
    line = one_error_line(run_bimfs("mount", tmp_path / "mnt", env=base_env(tmp_path)))
    assert line.startswith(f"bimfs: {path}")
    assert expected in line
    assert "eyJabc" not in line


def test_an_unknown_source_or_a_named_mount_without_mountpoint(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[mount.site]\nenv = 'stage'\n")
    env = base_env(tmp_path)
    line = one_error_line(run_bimfs("mount", "nowhere", tmp_path, env=env))
    assert "'nowhere' is neither a named mount (configured: site)" in line
    line = one_error_line(run_bimfs("mount", "site", env=env))
    assert f"{path}: [mount.site] has no mountpoint" in line
    line = one_error_line(run_bimfs("mount", tmp_path, "--config", tmp_path / "none.toml", env=env))
    assert f"configuration file {tmp_path / 'none.toml'} does not exist" in line


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("dir_ttl=soon", 'mount option dir_ttl: expected a number of seconds, got "soon"'),
        ("team", "mount option team: expected team=VALUE"),
        ("token=eyJabc", "mount option token: tokens are never accepted as options"),
        ("on_conflict=last", "mount option on_conflict: expected one of copy, newest-wins"),
    ],
)
def test_a_wrong_mount_option_is_one_line(tmp_path: Path, option: str, expected: str) -> None:
    (tmp_path / "mnt").mkdir()
    result = run_bimfs(
        "mount", tmp_path / "mnt", "-o", f"allow_other,{option}", env=base_env(tmp_path)
    )
    line = one_error_line(result)
    assert expected in line
    assert "eyJabc" not in line
