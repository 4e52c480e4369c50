"""``bimfs mount`` as a daemon: ready when it returns, one clear line when it cannot mount, and the
mount options a user reaches for (``--read-only``, ``--team``, ``--local-only``)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import (
    CREATE,
    DEADLINE,
    SLUG,
    Daemon,
    new_project,
    one_error_line,
    processes_mentioning,
    read_status,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.processes import pid_alive, wait_until, write_token

pytestmark = pytest.mark.mount

MountFn = Callable[..., Daemon]


@pytest.fixture
def mount(emulator: Emulator, token_file: Path, daemon_factory: Callable[..., Daemon]) -> MountFn:
    """``mount(*extra_args)`` -> a mounted daemon on the test's emulator."""

    def start(*args: str) -> Daemon:
        d = daemon_factory()
        d.mount(
            "--api-url", emulator.url, "--token-file", token_file,
            "--cache-dir", d.cache_dir, *args,
        )  # fmt: skip
        return d

    return start


def test_daemon_returns_once_ready_and_fusermount_ends_it(
    emulator: Emulator, mount: MountFn
) -> None:
    d = mount()
    # Checked right after the command returned, with no polling: the mount must already work.
    assert os.path.ismount(d.path)
    assert sorted(os.listdir(d.path)) == ["acme-build", "bimfs-demo"]
    assert d.result is not None
    assert d.result.stdout == "" and d.result.stderr == ""
    assert d.pid is not None and pid_alive(d.pid)

    pid = emulator.project_id(SLUG, "Office Building")
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    assert d.p(SLUG, "Office Building", "plan.pdf").read_bytes() == emulator.download(
        SLUG, plan["id"]
    )
    # The daemon logs to <cache-dir>/bimfs.log, private to the user.
    assert stat.S_IMODE((d.cache_dir / "bimfs.log").stat().st_mode) == 0o600

    subprocess.run(["fusermount3", "-u", str(d.path)], check=True)
    d.wait_exit()
    assert not os.path.ismount(d.path)
    assert processes_mentioning(str(d.path)) == {}


def test_daemon_on_a_slow_api_returns_only_when_ready(
    emulator_factory: Callable[..., Emulator],
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    slow = emulator_factory("--latency-ms", "400")
    token = write_token(tmp_path / "slow-token", slow.token)
    d = daemon_factory()
    d.mount("--api-url", slow.url, "--token-file", token, "--cache-dir", d.cache_dir)
    assert os.path.ismount(d.path)
    assert sorted(os.listdir(d.path)) == ["acme-build", "bimfs-demo"]


def test_daemon_drains_pending_upload_on_fusermount(emulator: Emulator, mount: MountFn) -> None:
    pid = new_project(emulator, "fusermount drain")
    d = mount("--write-back-delay", "60")
    d.p(SLUG, "fusermount drain", "late.txt").write_bytes(b"sent at unmount\n")
    assert server_docs(emulator, pid) == {}

    subprocess.run(["fusermount3", "-u", str(d.path)], check=True)
    d.wait_exit()
    docs = server_docs(emulator, pid)
    assert list(docs) == ["late.txt"]
    assert emulator.download(SLUG, docs["late.txt"]["id"]) == b"sent at unmount\n"


# -- failures: one line on stderr, non-zero, nothing mounted, nothing left running ----------------


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def assert_failed_cleanly(d: Daemon, result: subprocess.CompletedProcess[str], *words: str) -> str:
    line = one_error_line(result)
    for word in words:
        assert word in line, line
    assert result.stdout == ""
    assert not os.path.ismount(d.path)
    # The daemon child reported the error and exited before the command returned.
    wait_until(
        lambda: not processes_mentioning(str(d.path)), DEADLINE, "no process for the mountpoint"
    )
    return line


def test_missing_token(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory()
    result = d.mount("--api-url", emulator.url, "--cache-dir", d.cache_dir, ok=False)
    assert_failed_cleanly(d, result, "no credentials", "bimfs login", "BIMPLUS_TOKEN")


def test_unreadable_token_file(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory()
    missing = tmp_path / "no-such-token"
    result = d.mount(
        "--api-url", emulator.url, "--token-file", missing, "--cache-dir", d.cache_dir, ok=False
    )
    assert_failed_cleanly(d, result, str(missing))


def test_rejected_token(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory()
    bad = write_token(tmp_path / "bad-token", "not-a-valid-token-4b1d")
    result = d.mount(
        "--api-url", emulator.url, "--token-file", bad, "--cache-dir", d.cache_dir, ok=False
    )
    line = assert_failed_cleanly(d, result, "rejected")
    assert "not-a-valid-token-4b1d" not in line


def test_unreachable_api(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, refused_port: int
) -> None:
    d = daemon_factory()
    token = write_token(tmp_path / "token", "some-token")
    url = f"http://127.0.0.1:{refused_port}/v2"
    result = d.mount("--api-url", url, "--token-file", token, "--cache-dir", d.cache_dir, ok=False)
    assert_failed_cleanly(d, result, "cannot reach", url)


def test_mountpoint_missing(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], token_file: Path
) -> None:
    d = daemon_factory()
    d.path.rmdir()
    result = d.mount(
        "--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir,
        ok=False,
    )  # fmt: skip
    assert_failed_cleanly(d, result, str(d.path), "does not exist")


def test_mountpoint_not_empty(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], token_file: Path
) -> None:
    d = daemon_factory()
    (d.path / "something").write_text("x")
    result = d.mount(
        "--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir,
        ok=False,
    )  # fmt: skip
    assert_failed_cleanly(d, result, str(d.path), "not empty")


def test_unknown_team(
    emulator: Emulator, daemon_factory: Callable[..., Daemon], token_file: Path
) -> None:
    d = daemon_factory()
    result = d.mount(
        "--api-url", emulator.url, "--token-file", token_file, "--cache-dir", d.cache_dir,
        "--team", "no-such-team", ok=False,
    )  # fmt: skip
    assert_failed_cleanly(d, result, "no-such-team", "acme-build", "bimfs-demo")


def test_second_mount_on_same_cache_dir_or_mountpoint(
    emulator: Emulator,
    mount: MountFn,
    daemon_factory: Callable[..., Daemon],
    token_file: Path,
) -> None:
    first = mount()
    second = daemon_factory()
    result = second.mount(
        "--api-url", emulator.url, "--token-file", token_file, "--cache-dir", first.cache_dir,
        ok=False,
    )  # fmt: skip
    assert_failed_cleanly(second, result, str(first.cache_dir), "in use")

    # The same mountpoint twice: refused too, and the first mount is untouched.
    again = run_bimfs(
        "mount", first.path, "--api-url", emulator.url, "--token-file", token_file,
        "--cache-dir", second.cache_dir, env=second.env,
    )  # fmt: skip
    assert "already a mountpoint" in one_error_line(again)
    assert os.path.ismount(first.path)
    assert first.pid is not None and pid_alive(first.pid)
    assert sorted(os.listdir(first.path)) == ["acme-build", "bimfs-demo"]


# -- options --------------------------------------------------------------------------------


def test_read_only_refuses_every_change_with_erofs(emulator: Emulator, mount: MountFn) -> None:
    d = mount("--read-only")
    project = d.p(SLUG, "Office Building")
    notes = project / "notes.txt"
    before = notes.read_bytes()
    assert before  # reading works
    emulator.reset_stats()

    attempts: dict[str, Callable[[], object]] = {
        "create": lambda: open(project / "new.txt", "wb"),  # noqa: SIM115
        "open for writing": lambda: open(notes, "r+b"),  # noqa: SIM115
        "truncate": lambda: os.truncate(notes, 0),
        "unlink": lambda: os.unlink(notes),
        "rename": lambda: os.rename(notes, project / "renamed.txt"),
        "mkdir": lambda: os.mkdir(project / "New Folder"),
        "rmdir": lambda: os.rmdir(project / "Empty Folder"),
        "set tag": lambda: os.setxattr(notes, "user.bimplus.tag", b"T"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, f"{what}: {info.value}"

    assert notes.read_bytes() == before
    assert not (project / "new.txt").exists()
    changes = [
        key for key in emulator.stats()["requests"]
        if key.split()[0] in ("POST", "PUT", "DELETE")
    ]  # fmt: skip
    assert changes == []


def test_team_roots_the_mount_at_that_team(emulator: Emulator, mount: MountFn) -> None:
    d = mount("--team", "acme-build", "--write-back-delay", "0.2")
    names = {p["name"] for p in emulator.api("GET", "/acme-build/projects")}
    assert set(os.listdir(d.path)) == names == {"Bridge Renovation", "Tender Documents"}

    pid = emulator.project_id("acme-build", "Bridge Renovation")
    bridge = emulator.attachment("acme-build", pid, "bridge.ifc")
    assert d.p("Bridge Renovation", "bridge.ifc").read_bytes() == emulator.download(
        "acme-build", bridge["id"]
    )
    # A save lands in that team's project.
    d.p("Bridge Renovation", "from-team-root.txt").write_bytes(b"team root\n")
    wait_until(
        lambda: "from-team-root.txt" in server_docs(emulator, pid, "acme-build"), DEADLINE, "upload"
    )
    doc = server_docs(emulator, pid, "acme-build")["from-team-root.txt"]
    assert emulator.download("acme-build", doc["id"]) == b"team root\n"


def test_local_only_patterns_keep_files_off_the_server(
    emulator: Emulator, mount: MountFn, token_file: Path
) -> None:
    pid = new_project(emulator, "Local Only")
    d = mount("--local-only", "*.bak", "--local-only", "scratch-*", "--write-back-delay", "0.2")
    project = d.p(SLUG, "Local Only")
    files = {
        "kept.txt": b"goes to the server\n",
        "draft.bak": b"stays here\n",
        "scratch-1.dat": b"scratch\n",
    }
    for name, data in files.items():
        (project / name).write_bytes(data)
    wait_until(lambda: "kept.txt" in server_docs(emulator, pid), DEADLINE, "the upload of kept.txt")
    wait_until(lambda: read_status(d.path)["pending"] == 0, DEADLINE, "no pending upload")

    assert list(server_docs(emulator, pid)) == ["kept.txt"]
    assert emulator.count(CREATE) == 1
    # The local-only files work like local files meanwhile.
    for name, data in files.items():
        assert (project / name).read_bytes() == data
    (project / "draft.bak").write_bytes(b"changed\n")
    os.rename(project / "scratch-1.dat", project / "scratch-2.dat")
    assert (project / "scratch-2.dat").read_bytes() == b"scratch\n"
    assert sorted(os.listdir(project)) == ["draft.bak", "kept.txt", "scratch-2.dat"]

    # They vanish at unmount and never reach the server.
    d.stop()
    assert list(server_docs(emulator, pid)) == ["kept.txt"]
    d.mount(
        "--api-url", emulator.url, "--token-file", token_file,
        "--cache-dir", d.cache_dir, "--local-only", "*.bak", "--local-only", "scratch-*",
    )  # fmt: skip
    assert sorted(os.listdir(project)) == ["kept.txt"]


@pytest.mark.parametrize("name", ["draft.bak", ".draft.txt.swp"], ids=["option", "built-in"])
def test_local_only_file_shows_state_local(emulator: Emulator, mount: MountFn, name: str) -> None:
    new_project(emulator, "Local State")
    d = mount("--local-only", "*.bak", "--write-back-delay", "0.2")
    path = d.p(SLUG, "Local State", name)
    path.write_bytes(b"stays here\n")
    # docs/semantics.md: `local` (a temp file that never leaves the machine).
    assert os.getxattr(path, "user.bimfs.state") == b"local"
    assert read_status(d.path)["pending"] == 0
