"""Progress where people wait: ``bimfs unmount`` shows the saves draining, ``bimfs status
--watch`` refreshes until it is stopped. Output is not a terminal here: the plain form."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.cli.helpers import (
    DEADLINE,
    SLUG,
    Daemon,
    new_project,
    read_status,
    run_bimfs,
    server_docs,
)
from tests.support.emulator import Emulator

pytestmark = pytest.mark.mount

SIZE = r"[\d.]+ (?:B|KiB|MiB)"
WAITING = re.compile(rf"^waiting for (\d+) saves?, ({SIZE}) left, {SIZE}/s$")


def test_unmount_shows_the_saves_draining(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    pid = new_project(emulator, "Draining")
    d = daemon("--write-back-delay", "600")
    for n in range(3):
        d.p(SLUG, "Draining", f"f{n}.bin").write_bytes(bytes(512 * 1024))
    assert read_status(d.path)["pending"] == 3

    result = run_bimfs("unmount", d.path, "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1] == "all saved", lines
    waiting = [WAITING.match(line) for line in lines[:-1]]
    assert waiting and all(waiting), lines
    # It starts from what was pending and only goes down.
    assert waiting[0] is not None and waiting[0].group(1, 2) == ("3", "1.5 MiB")
    counts = [int(m.group(1)) for m in waiting if m]
    assert counts == sorted(counts, reverse=True)
    assert sorted(server_docs(emulator, pid)) == ["f0.bin", "f1.bin", "f2.bin"]
    assert not os.path.ismount(d.path)


def test_unmount_with_nothing_pending_says_nothing(daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    result = run_bimfs("unmount", d.path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_status_watch_refreshes_count_times(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    d = daemon()
    result = run_bimfs("status", "--watch", "--count", "3", "--interval", "0.1", d.path)
    assert result.returncode == 0, result.stderr
    header = f"{d.path}  ({emulator.url})"
    assert result.stdout.splitlines().count(header) == 3, result.stdout
    assert result.stdout.endswith("\n\n")

    as_json = run_bimfs("status", "--watch", "--json", "--count", "2", "--interval", "0.1", d.path)
    assert as_json.returncode == 0, as_json.stderr
    docs = [line for line in as_json.stdout.splitlines()]
    assert len(docs) == 2 and all(f'"mountpoint": "{d.path}"' in doc for doc in docs)


def test_status_watch_ends_with_ctrl_c_exit_0(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    d = daemon()
    watch = subprocess.Popen(
        [sys.executable, "-m", "bimfs", "status", "--watch", "--interval", "0.2", str(d.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=d.env,
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith(str(d.path))
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=DEADLINE)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert err == ""


def test_unmount_on_a_terminal_draws_a_bar(
    emulator: Emulator, daemon: Callable[..., Daemon]
) -> None:
    new_project(emulator, "On A Terminal")
    d = daemon("--write-back-delay", "600")
    d.p(SLUG, "On A Terminal", "t.bin").write_bytes(bytes(256 * 1024))
    main, terminal = os.openpty()
    try:
        unmount = subprocess.Popen(
            [sys.executable, "-m", "bimfs", "unmount", str(d.path)],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env={**d.env, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                piece = os.read(main, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not piece:
                break
            shown += piece
        _, err = unmount.communicate(timeout=DEADLINE)
        assert unmount.returncode == 0, err
        assert err == b""
    finally:
        os.close(main)
        if terminal >= 0:
            os.close(terminal)
    text = shown.decode(errors="replace")
    assert "sending 1 save" in text, text
    assert "256.0 KiB" in text  # the bar's bytes: the file's size
    assert "\x1b[" in text  # drawn, not printed line by line
    assert text.rstrip().endswith("all saved")
    assert not os.path.ismount(d.path)
