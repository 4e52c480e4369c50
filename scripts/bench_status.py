"""How `bimfs status` and `bimfs unmount` scale with the number of pending saves.

For each journal size (default 1 000 as the reference, then 100 000) it writes that many unsent
saves into a fresh cache dir (as a mount stopped with saves pending leaves them), starts the
emulator refusing every upload (so they all stay pending), mounts, and times: the mount (it
loads the journal), `bimfs status`, `bimfs status --json`, `bimfs status --all`, one summary
`getxattr`, and `bimfs unmount --timeout 2` giving up. With `--send` the server then accepts
and `bimfs unmount` sends everything (minutes for 100 000: about what the emulator accepts per
second). Each figure is printed with its ratio to the reference size measured in the same run:
a ratio near the size ratio means linear, near 1 means constant.

    .venv/bin/python scripts/bench_status.py [--sizes 1000,100000] [--tmpdir /dev/shm] [--send]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cli.helpers import CREATE, SLUG, new_project, run_bimfs, write_token  # noqa: E402
from tests.support.emulator import running_emulator  # noqa: E402
from tests.support.journal import write_pending_creates  # noqa: E402


def timed(*args: str | Path, ok: int = 0) -> tuple[float, str]:
    started = time.monotonic()
    result = run_bimfs(*args, timeout=3600)
    took = time.monotonic() - started
    if result.returncode != ok:
        raise SystemExit(
            f"bimfs {' '.join(map(str, args))}: exit {result.returncode}\n{result.stderr}"
        )
    return took, result.stdout


class CpuWatch:
    """The CPU time (user + system) a process uses from now until it ends, sampled by a thread
    (its last sample before the process is gone)."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/stat")
        self.start = self.last = self._sample() or 0.0
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _sample(self) -> float | None:
        try:
            fields = self.path.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _watch(self) -> None:
        while (value := self._sample()) is not None:
            self.last = value
            time.sleep(0.05)

    def used(self) -> float:
        self.thread.join(60)
        return self.last - self.start


def measure(count: int, tmpdir: Path | None, send: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bimfs-bench-status-", dir=tmpdir))
    figures: dict[str, float] = {}
    summary: dict[str, int] = {"pid": 0}
    try:
        with running_emulator(root / "emulator") as emu:
            pid = new_project(emu, "Scale")
            cache, mnt = root / "cache", root / "mnt"
            mnt.mkdir()
            write_pending_creates(cache, slug=SLUG, pid=pid, project_name="Scale", count=count)
            emu.set_faults(fail_rate=1.0, routes=[CREATE])
            token = write_token(root / "token", emu.token)
            figures["mount"], _ = timed(
                "mount", mnt, "--api-url", emu.url, "--token-file", token,
                "--cache-dir", cache, "--drain-timeout", "1",
            )  # fmt: skip
            try:
                started = time.monotonic()
                summary = json.loads(os.getxattr(mnt, "user.bimfs.status"))
                figures["summary getxattr"] = time.monotonic() - started
                figures["status"], _ = timed("status", mnt)
                figures["status --json"], out = timed("status", mnt, "--json")
                figures["--json MB"] = len(out) / 1e6
                figures["status --all"], _ = timed("status", mnt, "--all")
                took, _ = timed("unmount", mnt, "--timeout", "2", ok=1)
                figures["unmount giving up (beyond its 2 s)"] = took - 2
                if send:
                    emu.set_faults(fail_rate=0.0, routes=[])
                    cpu = CpuWatch(summary["pid"])
                    figures["unmount sending all"], _ = timed("unmount", mnt, "--timeout", "3600")
                    figures["saves sent per second"] = count / figures["unmount sending all"]
                    # The mount's own work per save, apart from the server's (the emulator's
                    # create slows down as a project fills up).
                    figures["mount CPU ms per save sent"] = cpu.used() * 1000 / count
            finally:
                if os.path.ismount(mnt):
                    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
                    # The mount process ends after its bounded drain (--drain-timeout 1).
                    deadline = time.monotonic() + 60
                    while Path(f"/proc/{summary['pid']}").exists() and time.monotonic() < deadline:
                        time.sleep(0.1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="reference first")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the cache dir goes")
    parser.add_argument("--send", action="store_true", help="also time unmount sending all")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {size: measure(size, args.tmpdir, args.send) for size in sizes}
    reference = sizes[0]
    print(f"{'figure':40} " + " ".join(f"{n:>12}" for n in sizes) + "   ratio to " + str(reference))
    for name in results[reference]:
        values = [results[n][name] for n in sizes]
        ratios = " ".join(
            f"{v / values[0]:8.1f}x" if values[0] > 0 else "       -" for v in values[1:]
        )
        print(f"{name:40} " + " ".join(f"{v:12.3f}" for v in values) + "   " + ratios)
    print(f"(size ratio: {' '.join(f'{n / reference:g}x' for n in sizes[1:])}; times in seconds)")


if __name__ == "__main__":
    main()
