"""``bimfs unmount`` and signals: nothing saved is lost when the mount goes away.

``bimfs unmount`` sends pending saves at once and returns only when they are on the server; with
``--timeout`` it gives up, lists what is pending and leaves the mount alone. SIGTERM and SIGINT
send what is pending (bounded by ``--drain-timeout``), unmount and exit 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import (
    CREATE,
    DEADLINE,
    SLUG,
    Daemon,
    new_project,
    one_error_line,
    read_status,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator
from tests.support.mount import Mount
from tests.support.processes import pid_alive, wait_until

pytestmark = pytest.mark.mount


def test_unmount_sends_the_pending_upload_and_waits_for_it(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    pid = new_project(emulator, "Unmount Wait")
    # Far longer than the unmount may take: unmount must send the save at once.
    d = daemon("--write-back-delay", "600")
    d.p(SLUG, "Unmount Wait", "report.txt").write_bytes(b"saved just before unmount\n")
    status = read_status(d.path)
    assert status["pending"] == 1, status
    assert server_docs(emulator, pid) == {}

    result = run_bimfs("unmount", d.path, "--timeout", "20")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # When it returns: the save is on the server, the mount and its process are gone.
    docs = server_docs(emulator, pid)
    assert list(docs) == ["report.txt"]
    assert emulator.download(SLUG, docs["report.txt"]["id"]) == b"saved just before unmount\n"
    assert not os.path.ismount(d.path)
    assert d.pid is not None and not pid_alive(d.pid)


def test_unmount_timeout_lists_what_cannot_be_sent_and_stays_mounted(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    pid = new_project(emulator, "Unmount Fail")
    d = daemon("--write-back-delay", "0.2")
    emulator.set_faults(fail_rate=1.0, routes=[CREATE])
    project = d.p(SLUG, "Unmount Fail")
    (project / "a.txt").write_bytes(b"cannot be sent yet\n")
    (project / "b.txt").write_bytes(b"neither can this\n")
    wait_until(lambda: emulator.count(CREATE) >= 1, DEADLINE, "a refused upload attempt")

    result = run_bimfs("unmount", d.path, "--timeout", "1")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "bimfs: 2 upload(s) still pending after 1 s; not unmounted:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "/bimfs-demo/Unmount Fail/a.txt",
        "/bimfs-demo/Unmount Fail/b.txt",
    ]
    # The mount stays, with the unsent saves readable.
    assert os.path.ismount(d.path)
    assert d.pid is not None and pid_alive(d.pid)
    assert (project / "a.txt").read_bytes() == b"cannot be sent yet\n"
    assert read_status(d.path)["pending"] == 2
    assert server_docs(emulator, pid) == {}

    # Once the server accepts again, a plain unmount sends them (once each) and unmounts.
    emulator.set_faults(fail_rate=0.0, routes=[])
    result = run_bimfs("unmount", d.path, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = server_docs(emulator, pid)
    assert sorted(docs) == ["a.txt", "b.txt"]
    assert emulator.download(SLUG, docs["a.txt"]["id"]) == b"cannot be sent yet\n"
    assert emulator.download(SLUG, docs["b.txt"]["id"]) == b"neither can this\n"
    assert not os.path.ismount(d.path)


def test_unmount_of_something_else_fails_with_one_line(tmp_path: Path) -> None:
    result = run_bimfs("unmount", tmp_path)
    assert f"{tmp_path} is not a bimfs mount" in one_error_line(result)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_foreground_mount_sends_pending_upload(
    emulator: Emulator,
    mount_factory: Callable[..., Mount],
    signum: signal.Signals,
) -> None:
    pid = new_project(emulator, "Signal")
    m = mount_factory(emulator, "--write-back-delay", "60")
    m.p(SLUG, "Signal", "unsent.txt").write_bytes(b"sent on the way out\n")
    assert read_status(m.path)["pending"] == 1
    assert server_docs(emulator, pid) == {}

    assert m.process is not None
    m.process.send_signal(signum)
    assert m.process.wait(DEADLINE) == 0, m.log()
    m.process = None
    assert not os.path.ismount(m.path)
    docs = server_docs(emulator, pid)
    assert list(docs) == ["unsent.txt"]
    assert emulator.download(SLUG, docs["unsent.txt"]["id"]) == b"sent on the way out\n"


def test_sigterm_to_daemon_sends_pending_upload(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    pid = new_project(emulator, "Daemon Signal")
    d = daemon("--write-back-delay", "60")
    d.p(SLUG, "Daemon Signal", "unsent.txt").write_bytes(b"daemon drain\n")
    assert d.pid is not None
    os.kill(d.pid, signal.SIGTERM)
    d.wait_exit()
    assert not os.path.ismount(d.path)
    docs = server_docs(emulator, pid)
    assert list(docs) == ["unsent.txt"]
    assert emulator.download(SLUG, docs["unsent.txt"]["id"]) == b"daemon drain\n"


def refused_save_then_sigterm(emulator: Emulator, m: Mount, name: str) -> float:
    """Save a file while the server refuses uploads, SIGTERM the mount; seconds to its exit."""
    emulator.set_faults(fail_rate=1.0, routes=[CREATE])
    m.p(SLUG, name, "kept.txt").write_bytes(b"kept for the next mount\n")
    assert m.process is not None
    started = time.monotonic()
    m.process.send_signal(signal.SIGTERM)
    assert m.process.wait(DEADLINE) == 0, m.log()
    took = time.monotonic() - started
    m.process = None
    assert not os.path.ismount(m.path)
    return took


def test_unsent_save_at_exit_resumes_on_the_next_mount(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    pid = new_project(emulator, "Drain Resume")
    m = mount_factory(emulator, "--write-back-delay", "60", "--drain-timeout", "0.5")
    refused_save_then_sigterm(emulator, m, "Drain Resume")
    assert server_docs(emulator, pid) == {}

    emulator.set_faults(fail_rate=0.0, routes=[])
    m.args = ("--write-back-delay", "0.2")
    m.start()
    wait_until(lambda: "kept.txt" in server_docs(emulator, pid), DEADLINE, "the resumed upload")
    docs = server_docs(emulator, pid)
    assert list(docs) == ["kept.txt"]
    assert emulator.download(SLUG, docs["kept.txt"]["id"]) == b"kept for the next mount\n"


def test_sigterm_waits_at_most_the_drain_timeout(
    emulator: Emulator, mount_factory: Callable[..., Mount]
) -> None:
    """docs/configuration.md: ``--drain-timeout`` is how long SIGINT/SIGTERM waits for pending
    uploads before exiting (not twice that)."""
    new_project(emulator, "Drain Bound")
    drain = 3.0
    m = mount_factory(emulator, "--write-back-delay", "60", "--drain-timeout", str(drain))
    took = refused_save_then_sigterm(emulator, m, "Drain Bound")
    # A generous margin for a busy machine, still well below twice the drain timeout.
    assert took < drain + 2.0, f"exit took {took:.1f} s with --drain-timeout {drain:g}\n{m.log()}"
