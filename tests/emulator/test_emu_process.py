"""The emulator as a process: ready line, clean exits, persistence, seeding once, temp dirs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.emulator import Emulator, start_emulator


def run_until_ready(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bimfs.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    return proc, line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ready_line_and_clean_exit(tmp_path: Path, sig: signal.Signals) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc, line = run_until_ready(["--port", "0", "--seed", "none"], env)
    try:
        assert re.fullmatch(r"bimfs-emulator listening on http://127\.0\.0\.1:\d+/v2\n", line)
        # Without --data-dir the data lives in a temp dir...
        temp_dirs = [p for p in tmp_path.iterdir() if p.name.startswith("bimfs-emulator-")]
        assert len(temp_dirs) == 1 and (temp_dirs[0] / "emulator.sqlite3").exists()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert out == b""  # exactly one line on stdout
    assert err == b""  # nothing worth a warning happened
    # ... which is removed at exit.
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path: Path) -> None:
    for args in (["--fail-rate", "2"], ["--seed", "other"], ["--token-ttl", "0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "bimfs.emulator", "--data-dir", str(tmp_path), *args],
            capture_output=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert proc.stdout == b""


def test_port_in_use(emulator: Emulator, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bimfs.emulator",
            "--port",
            str(emulator.port),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert b"cannot listen" in proc.stderr and proc.stdout == b""


def test_restart_keeps_everything_and_seeds_once(emulator: Emulator) -> None:
    pid = emulator.project_id("bimfs-demo", "Office Building")
    att = emulator.upload("bimfs-demo", pid, "kept.txt", b"kept across restarts")
    emulator.api(
        "POST",
        f"/bimfs-demo/projects/{pid}/structures",
        json={"name": "Kept", "type": "DocumentFolder"},
    )
    teams_before = emulator.api("GET", "/teams")
    projects_before = emulator.api("GET", "/projects")
    docs_before = emulator.attachments("bimfs-demo", pid)
    port = emulator.port

    emulator.restart()
    assert emulator.port == port
    assert emulator.api("GET", "/teams") == teams_before
    assert emulator.api("GET", "/projects") == projects_before
    assert emulator.attachments("bimfs-demo", pid) == docs_before
    assert emulator.download("bimfs-demo", att["id"]) == b"kept across restarts"
    tree = emulator.api("GET", f"/bimfs-demo/projects/{pid}/structures")
    assert [n["name"] for n in tree] == ["Drawings", "Empty Folder", "Kept"]


def test_fresh_seeds_are_identical(emulator_factory: Callable[..., Emulator]) -> None:
    first = emulator_factory()
    second = emulator_factory()
    pid = first.project_id("bimfs-demo", "Office Building")
    assert pid == second.project_id("bimfs-demo", "Office Building")
    a = first.attachments("bimfs-demo", pid)
    b = second.attachments("bimfs-demo", pid)
    assert a == b
    for doc in a:
        if doc["rights"]["download"]:
            assert first.download("bimfs-demo", doc["id"]) == second.download(
                "bimfs-demo", doc["id"]
            )


def test_seed_none_has_only_the_user(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(seed="none")
    assert emu.api("GET", "/teams") == []
    emu.admin("POST", "/teams", json={"slug": "t1", "name": "T1"})
    project = emu.admin("POST", "/teams/t1/projects", json={"name": "P"})
    att = emu.upload("t1", project["id"], "a.txt", b"a")
    assert att["creator"]["email"] == "demo@bimfs.test"
    # Restarting with --seed demo on a data dir that holds data seeds nothing.
    emu.stop()
    again = start_emulator(emu.data_dir, seed="demo")
    try:
        assert [t["slug"] for t in again.api("GET", "/teams")] == ["t1"]
    finally:
        again.stop()


def test_large_seed(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(seed="large")
    assert [t["slug"] for t in emu.api("GET", "/teams")] == [
        "bimfs-demo",
        "acme-build",
        "bench-large",
    ]
    projects = emu.api("GET", "/bench-large/projects")
    assert len(projects) == 50
    assert [p["name"] for p in projects[:2]] == ["Project 01", "Project 02"]
    assert all(p["attachmentCount"] == 100 for p in projects)
    docs = emu.attachments("bench-large", projects[-1]["id"])
    assert [d["fileName"] for d in docs] == [f"doc-{i:03d}.txt" for i in range(100)]
    assert emu.download("bench-large", docs[3]["id"]).startswith(b"project 50 document 003")
