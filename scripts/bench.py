#!/usr/bin/env python3
"""Measure bimfs against references taken in the same run, on this machine, over loopback.

    scripts/bench [--size 1G] [--only NAME]... [--rounds 3] [--json FILE] [--tmpdir DIR]

Every figure starts its own emulator (``python -m bimfs.emulator``) and its own mounts
(``bimfs mount --foreground``) in a temporary directory, measures, then unmounts, stops the
emulator and deletes what it wrote, also on an error or Ctrl-C. A "cold" read is a fresh cache
directory, a fresh mount and a document never read before (dropping the page cache is not
reliable in a container). Each line printed compares the measured value with its reference
(curl against the same emulator, or the local page cache) and its target:

    cold sequential read 1 GiB: 812 MB/s vs curl 850 MB/s = 0.96x (target >= 0.9x) PASS

The exit status is 0 when every figure could be measured, whether or not it met its target
(this is a measurement, not a test); 1 when a figure could not be measured; 130 on Ctrl-C.
See docs/performance.md for what each figure means and what limits it. The emulator and mount
processes are those of the tests (tests/support/processes.py), tied to this run's life.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bimfs.config import parse_size  # noqa: E402
from tests.support.processes import (  # noqa: E402
    EmulatorProcess,
    MountProcess,
    ProcessError,
    child_env,
    wait_until,
    write_token,
)

MiB = 1 << 20
GiB = 1 << 30
# Seeding `large` writes 5000 documents; a plain start takes a fraction of a second.
EMULATOR_START_TIMEOUT = 180.0
MOUNT_START_TIMEOUT = 60.0
# Upper bound for any single measured command; a hung mount must not hang the benchmark.
COMMAND_TIMEOUT = 600.0
TEAM = "bench"
THROTTLE_RATE = 50_000_000
THROTTLE_LATENCY_MS = 20
LISTING_LATENCY_MS = 20
TTFB_SLACK_MS = 50.0
RSS_LIMIT_MIB = 150.0
COLD_VS_CACHED = 0.8

# ---------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One printed figure: the value, its reference, the comparison and the verdict."""

    figure: str
    title: str
    value: str
    reference: str | None = None
    comparison: str | None = None
    target: str | None = None
    passed: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``title: value vs reference = comparison (target) PASS``."""
        text = f"{self.title}: {self.value}"
        if self.reference is not None:
            text += f" vs {self.reference}"
        if self.comparison is not None:
            text += f" = {self.comparison}"
        if self.target is not None:
            text += f" ({self.target})"
        if self.passed is not None:
            text += " PASS" if self.passed else " FAIL"
        return text


class BenchError(Exception):
    """A figure could not be measured (a process failed, a command failed, a timeout)."""


def mb_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10**6 bytes per second, as curl reports it)."""
    return nbytes / seconds / 1e6


def human_size(n: int) -> str:
    """``1 GiB``, ``256 MiB``, ``1.5 GiB``."""
    if n >= GiB:
        return f"{n / GiB:g} GiB"
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    return f"{n} B"


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the results."""
    print(f"   .. {message}", file=sys.stderr, flush=True)


def timed(argv: list[str], *, stdin: str | None = None) -> tuple[float, str]:
    """Run a command, fail unless it exits 0; (wall seconds, stdout)."""
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return elapsed, proc.stdout


def settle() -> None:
    """Write back every dirty page before a timed step: earlier steps wrote gigabytes (cache
    files, journals, the emulator's blobs), and their writeback would otherwise throttle
    whichever step runs next."""
    os.sync()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: other work on the machine skews every figure."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


_DD_RESULT = re.compile(r"^(\d+) bytes .* copied, ([0-9.e+-]+) s,")


def source_state() -> str:
    """The commit measured, with ``+changes`` when bimfs/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "bimfs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" +changes" if changes else "")


def read_file_timed(path: Path, size: int) -> float:
    """Seconds ``dd if=path of=/dev/null bs=1M`` took (1 MiB reads), as dd itself reports them:
    a warm read of 1 GiB lasts tens of milliseconds, so starting the process must not count.
    Fails unless dd read exactly ``size`` bytes."""
    proc = subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=1M"],
        capture_output=True,
        text=True,
        env={**child_env(), "LC_ALL": "C"},
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    match = _DD_RESULT.match(lines[-1]) if lines else None
    if proc.returncode != 0 or match is None:
        raise BenchError(f"dd {path} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    if int(match.group(1)) != size:
        raise BenchError(f"dd read {match.group(1)} bytes of {path}, expected {size}")
    return float(match.group(2))


def write_local_file(path: Path, size: int) -> None:
    """A local file of ``size`` incompressible bytes, written 1 MiB at a time."""
    block = os.urandom(MiB)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, MiB)
            fh.write(block[:n])
            left -= n


# ---------------------------------------------------------------------------------- processes


class Emulator(EmulatorProcess):
    """A ``python -m bimfs.emulator`` process on a free loopback port (its data and stderr
    under ``root``), tied to the benchmark's life, with urllib helpers for its admin API."""

    def __init__(self, root: Path, token: str, *args: str, seed: str = "none") -> None:
        self.root = root
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        try:
            super().__init__(
                data_dir,
                *args,
                token=token,
                seed=seed,
                log=root / "emulator.log",
                start_timeout=EMULATOR_START_TIMEOUT,
                stop_timeout=30.0,
                tied=True,
            )
        except ProcessError as exc:
            raise BenchError(str(exc)) from None
        # Plain urllib without proxies: admin calls only, nothing timed goes through here.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def admin(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        """A ``/_emulator`` call; the decoded JSON answer."""
        url = self.base + "/_emulator" + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=COMMAND_TIMEOUT) as resp:
                return json.load(resp)
        except OSError as exc:
            raise BenchError(f"{method} /_emulator{path} failed: {exc}") from exc

    def create_project(self, name: str) -> str:
        """Create team ``bench`` if needed and a project in it; the project id."""
        with contextlib.suppress(BenchError):
            self.admin("POST", "/teams", {"slug": TEAM, "name": "Bench", "totalStorage": 0})
        project = self.admin("POST", f"/teams/{TEAM}/projects", {"name": name})
        return str(project["id"])

    def create_document(self, pid: str, file_name: str, size: int, seed: str) -> dict[str, Any]:
        """A new document of ``size`` pseudo-random bytes (written by the emulator itself)."""
        doc: dict[str, Any] = self.admin(
            "POST",
            f"/teams/{TEAM}/projects/{pid}/blob",
            query={"fileName": file_name, "size": size, "seed": seed},
        )
        return doc

    def requests(self) -> dict[str, dict[str, int]]:
        """Requests served per route template and status (``GET /_emulator/stats``)."""
        stats: dict[str, dict[str, int]] = self.admin("GET", "/stats")["requests"]
        return stats

    def reset_stats(self) -> None:
        """Zero the request counters."""
        self.admin("POST", "/stats/reset")

    def curl_config(self) -> str:
        """A curl config (fed on stdin, so the token never shows in ``ps``)."""
        return f'header = "Authorization: BimPlus {self.token}"\nnoproxy = "*"\n'


class Mount(MountProcess):
    """A ``bimfs mount --foreground`` process of team ``bench`` with its own cache dir, tied to
    the benchmark's life; ready when the constructor returns."""

    def __init__(
        self,
        root: Path,
        emulator: Emulator,
        *args: str,
        team: str = TEAM,
        cache_dir: Path | None = None,
    ) -> None:
        self.root = root
        root.mkdir(parents=True)
        path = root / "mnt"
        path.mkdir()
        super().__init__(
            path,
            api_url=emulator.url,
            token_file=write_token(root / "token", emulator.token),
            cache_dir=cache_dir or root / "cache",
            log_path=root / "mount.log",
            args=("--team", team, *args),
            start_timeout=MOUNT_START_TIMEOUT,
            tied=True,
        )
        try:
            self.start()
        except ProcessError as exc:
            raise BenchError(str(exc)) from None

    def wait_uploaded(self, timeout: float = COMMAND_TIMEOUT) -> None:
        """Poll the status until no upload is pending; fail on a failed upload."""

        def uploaded() -> bool:
            status = self.status()
            if status["failed"]:
                raise BenchError(f"upload failed: {status['failed']}")
            return not status["pending"]

        # 5 ms polling: well below the resolution that matters for seconds-long uploads.
        wait_until(uploaded, timeout, "the uploads to finish", interval=0.005)

    def unmount(self, timeout: float = 120.0) -> None:
        """``fusermount3 -u`` and wait for the process (see ``MountProcess.unmount``)."""
        try:
            super().unmount(timeout)
        except ProcessError as exc:
            raise BenchError(str(exc)) from None


class Bench:
    """The run: options, the temp dir, and every process started, stopped in ``close``."""

    def __init__(self, size: int, rounds: int, tmp: Path) -> None:
        self.size = size
        self.rounds = rounds
        self.tmp = tmp
        self.token = secrets.token_hex(20)
        self._mounts: list[Mount] = []
        self._emulators: list[Emulator] = []
        self._seq = 0
        self.mount_problems: list[str] = []

    def _dir(self, name: str) -> Path:
        self._seq += 1
        return self.tmp / f"{self._seq:02d}-{name}"

    @contextlib.contextmanager
    def emulator(self, *args: str, seed: str = "none") -> Iterator[Emulator]:
        """A fresh emulator for one figure; stopped and its data deleted afterwards."""
        root = self._dir("emulator")
        emu = Emulator(root, self.token, *args, seed=seed)
        self._emulators.append(emu)
        try:
            yield emu
        finally:
            emu.stop()
            self._emulators.remove(emu)
            shutil.rmtree(root, ignore_errors=True)

    @contextlib.contextmanager
    def mount(
        self, emulator: Emulator, *args: str, team: str = TEAM, cache_dir: Path | None = None
    ) -> Iterator[Mount]:
        """A fresh mount, with a fresh cache dir unless ``cache_dir`` is given; unmounted and its
        directory deleted afterwards (a given ``cache_dir`` is left alone)."""
        root = self._dir("mount")
        m = Mount(root, emulator, *args, team=team, cache_dir=cache_dir)
        self._mounts.append(m)
        try:
            yield m
        finally:
            try:
                m.unmount()  # a mount that does not exit is killed, then reported
            finally:
                self._mounts.remove(m)
                self.mount_problems.extend(m.problems())
                shutil.rmtree(root, ignore_errors=True)

    def scratch(self, name: str) -> Path:
        """A path in the temp dir for a local file."""
        return self._dir(name)

    def close(self) -> None:
        """Unmount everything, stop every emulator, delete the temp dir."""
        for m in list(self._mounts):
            with contextlib.suppress(Exception):
                m.unmount()
        for emu in list(self._emulators):
            with contextlib.suppress(Exception):
                emu.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def curl_download(
    emu: Emulator, doc: dict[str, Any], *extra: str, dest: str = "/dev/null"
) -> dict[str, float]:
    """Download a document with curl; wall time and curl's own timings."""
    url = f"{emu.url}/{TEAM}/attachments/{doc['id']}/download"
    fmt = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"
    seconds, out = timed(
        ["curl", "-sS", "-K", "-", "-o", dest, "-w", fmt, *extra, url],
        stdin=emu.curl_config(),
    )
    code, size, starttransfer, total = out.split()
    if code not in ("200", "206"):
        raise BenchError(f"curl download answered {code}")
    if int(float(size)) != int(doc["size"]) and not extra:
        raise BenchError(f"curl downloaded {size} bytes of {doc['size']}")
    return {
        "wall": seconds,
        "size": float(size),
        "starttransfer": float(starttransfer),
        "total": float(total),
    }


def ratio_text(ratio: float) -> str:
    """``0.96x``."""
    return f"{ratio:.2f}x"


def info(figure: str, title: str, value: str, **data: Any) -> Result:
    """An information line (no target), indented under its figure."""
    return Result(figure, f"  {title}", value, data=data)


# ---------------------------------------------------------------------------------- figures


def fig_cold_read(b: Bench) -> list[Result]:
    """1. Cold sequential read through the mount vs curl, same document, same emulator.

    Also, for the record: curl writing the document to a file next to the cache (the mount
    must write every byte into its cache), and the same document read again on a fresh mount
    from the complete on-disk cache (the FUSE path alone, no network)."""
    size = b.size
    mount_rates: list[float] = []
    curl_rates: list[float] = []
    curl_file_rates: list[float] = []
    cached_rates: list[float] = []
    cached_downloads = 0
    mount_rss: list[int] = []
    with b.emulator() as emu:
        pid = emu.create_project("Cold")
        for r in range(b.rounds):
            progress(f"round {r + 1}: creating a {human_size(size)} document")
            doc = emu.create_document(pid, f"cold-{r}.bin", size, f"cold-{r}")
            settle()
            curl_rates.append(mb_s(size, curl_download(emu, doc)["total"]))
            dest = b.scratch("curl-out.bin")
            settle()
            c = curl_download(emu, doc, dest=str(dest))
            curl_file_rates.append(mb_s(size, c["total"]))
            dest.unlink()
            cache = b.scratch("cache")
            settle()
            with b.mount(emu, cache_dir=cache) as m:
                path = m.path / "Cold" / doc["fileName"]
                if path.stat().st_size != size:
                    raise BenchError(f"{path} has the wrong size")
                mount_rates.append(mb_s(size, read_file_timed(path, size)))
                mount_rss.append(m.peak_rss())
            settle()
            emu.reset_stats()
            with b.mount(emu, cache_dir=cache) as m:
                path = m.path / "Cold" / doc["fileName"]
                path.stat()
                cached_rates.append(mb_s(size, read_file_timed(path, size)))
            # Should be 0: the first mount completed the cache entry before it exited.
            cached_downloads += sum(
                sum(per_status.values())
                for route, per_status in emu.requests().items()
                if route.endswith("/download")
            )
            shutil.rmtree(cache)
            progress(
                f"round {r + 1}: mount {mount_rates[-1]:.0f} MB/s, curl {curl_rates[-1]:.0f},"
                f" curl to a file {curl_file_rates[-1]:.0f}, from the disk cache"
                f" {cached_rates[-1]:.0f}"
            )
        emu_rss = emu.peak_rss()
    best, ref = max(mount_rates), max(curl_rates)
    ratio = best / ref
    return [
        Result(
            "cold-read",
            f"cold sequential read {human_size(size)}",
            f"{best:.0f} MB/s",
            f"curl {ref:.0f} MB/s",
            ratio_text(ratio),
            "target >= 0.9x",
            ratio >= 0.9,
            {"mount_mb_s": mount_rates, "curl_mb_s": curl_rates},
        ),
        info(
            "cold-read",
            "curl -o FILE (writes every byte to disk, as the mount's cache does)",
            f"{max(curl_file_rates):.0f} MB/s; mount vs it = "
            + ratio_text(best / max(curl_file_rates)),
            curl_file_mb_s=curl_file_rates,
        ),
        info(
            "cold-read",
            "same document from the complete disk cache, fresh mount (FUSE path only)",
            f"{max(cached_rates):.0f} MB/s = {ratio_text(max(cached_rates) / ref)} curl"
            + (f" (but {cached_downloads} downloads were made)" if cached_downloads else ""),
            cached_mb_s=cached_rates,
            cached_downloads=cached_downloads,
        ),
        Result(
            "cold-read",
            "  cold read vs the FUSE path only",
            f"{best:.0f} MB/s",
            f"from the disk cache {max(cached_rates):.0f} MB/s",
            ratio_text(best / max(cached_rates)),
            f"target >= {COLD_VS_CACHED:g}x",
            best / max(cached_rates) >= COLD_VS_CACHED,
        ),
        info(
            "cold-read",
            "peak RSS during the cold reads",
            f"mount {max(mount_rss) / MiB:.0f} MiB, emulator {emu_rss / MiB:.0f} MiB",
            mount_peak_rss=mount_rss,
            emulator_peak_rss=emu_rss,
        ),
    ]


def fig_throttled_read(b: Bench) -> list[Result]:
    """2. Cold read with a slow, far server: parallel range streams vs one curl stream."""
    size = b.size
    mount_rates: list[float] = []
    curl_rates: list[float] = []
    args = ("--stream-rate", str(THROTTLE_RATE), "--latency-ms", str(THROTTLE_LATENCY_MS))
    with b.emulator(*args) as emu:
        pid = emu.create_project("Slow")
        for r in range(b.rounds):
            progress(f"round {r + 1}: creating a {human_size(size)} document")
            doc = emu.create_document(pid, f"slow-{r}.bin", size, f"slow-{r}")
            settle()
            curl_rates.append(mb_s(size, curl_download(emu, doc)["total"]))
            settle()
            with b.mount(emu) as m:
                path = m.path / "Slow" / doc["fileName"]
                path.stat()
                mount_rates.append(mb_s(size, read_file_timed(path, size)))
            progress(f"round {r + 1}: mount {mount_rates[-1]:.0f} MB/s, curl {curl_rates[-1]:.0f}")
    best, ref = max(mount_rates), max(curl_rates)
    ratio = best / ref
    return [
        Result(
            "throttled-read",
            f"cold read {human_size(size)}, server at {THROTTLE_RATE // 1_000_000} MB/s per"
            f" response + {THROTTLE_LATENCY_MS} ms",
            f"{best:.0f} MB/s",
            f"curl {ref:.0f} MB/s",
            ratio_text(ratio),
            "target >= 3x",
            ratio >= 3.0,
            {"mount_mb_s": mount_rates, "curl_mb_s": curl_rates},
        )
    ]


def fig_ttfb(b: Bench) -> list[Result]:
    """3. Time from open() to the first 4 KiB of a cold document vs curl's time_starttransfer."""
    size = b.size
    mount_ms: list[float] = []
    open_ms: list[float] = []
    curl_ms: list[float] = []
    with b.emulator() as emu:
        pid = emu.create_project("First")
        for r in range(b.rounds):
            progress(f"round {r + 1}: creating a {human_size(size)} document")
            doc = emu.create_document(pid, f"first-{r}.bin", size, f"first-{r}")
            settle()
            # curl asks for the same first 4 KiB; its clock starts before it connects.
            curl_ms.append(curl_download(emu, doc, "-r", "0-4095")["starttransfer"] * 1000)
            settle()
            with b.mount(emu) as m:
                path = m.path / "First" / doc["fileName"]
                path.stat()  # the name is known, as curl knows the URL
                start = time.perf_counter()
                fd = os.open(path, os.O_RDONLY)
                opened = time.perf_counter()
                try:
                    data = os.read(fd, 4096)
                    mount_ms.append((time.perf_counter() - start) * 1000)
                    open_ms.append((opened - start) * 1000)
                finally:
                    os.close(fd)
                if len(data) != 4096:
                    raise BenchError(f"short first read: {len(data)} bytes")
            progress(
                f"round {r + 1}: mount {mount_ms[-1]:.1f} ms (open {open_ms[-1]:.1f} ms),"
                f" curl {curl_ms[-1]:.1f} ms"
            )
    best, ref = min(mount_ms), min(curl_ms)
    diff = best - ref
    return [
        Result(
            "ttfb",
            f"time to first 4 KiB, cold {human_size(size)}",
            f"{best:.1f} ms",
            f"curl {ref:.1f} ms",
            f"{diff:+.1f} ms",
            f"target <= curl + {TTFB_SLACK_MS:g} ms",
            best <= ref + TTFB_SLACK_MS,
            {"mount_ms": mount_ms, "open_ms": open_ms, "curl_ms": curl_ms},
        ),
        info(
            "ttfb",
            "of which open()",
            f"best {min(open_ms):.1f} ms; all runs (open+read):"
            f" {', '.join(f'{v:.0f}' for v in mount_ms)} ms",
        ),
    ]


def fig_warm_read(b: Bench) -> list[Result]:
    """4. Re-read on the same mount vs re-reading a local file from the page cache."""
    size = b.size
    local = b.scratch("local.bin")
    progress(f"writing a local {human_size(size)} file")
    write_local_file(local, size)
    settle()
    read_file_timed(local, size)
    local_rates = [mb_s(size, read_file_timed(local, size)) for _ in range(b.rounds)]
    local.unlink()
    mount_rates: list[float] = []
    through: list[int] = []
    with b.emulator() as emu:
        pid = emu.create_project("Warm")
        progress(f"creating a {human_size(size)} document")
        doc = emu.create_document(pid, "warm.bin", size, "warm")
        settle()
        with b.mount(emu) as m:
            path = m.path / "Warm" / doc["fileName"]
            cold = mb_s(size, read_file_timed(path, size))
            progress(f"first (cold) read {cold:.0f} MB/s")
            settle()
            for _ in range(b.rounds):
                served = m.status()["cache"].get("bytes_served", 0)
                mount_rates.append(mb_s(size, read_file_timed(path, size)))
                # What the kernel no longer had in its page cache and asked the mount for.
                through.append(m.status()["cache"].get("bytes_served", 0) - served)
    i = mount_rates.index(max(mount_rates))
    best, ref = mount_rates[i], max(local_rates)
    ratio = best / ref
    return [
        Result(
            "warm-read",
            f"warm re-read {human_size(size)}",
            f"{best:.0f} MB/s",
            f"local page cache {ref:.0f} MB/s",
            ratio_text(ratio),
            "target >= 0.5x",
            ratio >= 0.5,
            {"mount_mb_s": mount_rates, "local_mb_s": local_rates, "first_read_mb_s": cold},
        ),
        info(
            "warm-read",
            "read through the mount in each round (pages the kernel had dropped)",
            ", ".join(
                f"{n / MiB:.0f} MiB at {r:.0f} MB/s"
                for n, r in zip(through, mount_rates, strict=True)
            ),
            bytes_through_mount=through,
        ),
    ]


LIST_ATTACHMENTS = "GET /v2/{slug}/projects/{pid}/attachments"
LIST_STRUCTURES = "GET /v2/{slug}/projects/{pid}/structures"
LIST_VERSIONS = "GET /v2/{slug}/attachments/{id}/versions"


def _count(requests: dict[str, dict[str, int]], key: str) -> int:
    return sum(requests.get(key, {}).values())


def _walk_dirs(root: Path) -> tuple[int, int]:
    """(project directories, versions/<document>/ directories) under a team root."""
    projects = [p for p in root.iterdir() if p.is_dir()]
    doc_dirs = sum(1 for p in projects for d in (p / "versions").iterdir() if d.is_dir())
    return len(projects), doc_dirs


def fig_listing(b: Bench) -> list[Result]:
    """5. ``ls -lR`` of team bench-large (50 projects x 100 documents) at 20 ms latency."""
    progress("starting an emulator with seed `large` (5000 documents)")
    # A TTL far longer than the run, so the second pass is certainly within it.
    with (
        b.emulator("--latency-ms", str(LISTING_LATENCY_MS), seed="large") as emu,
        b.mount(emu, "--dir-ttl", "3600", team="bench-large") as m,
    ):
        emu.reset_stats()
        cold_s, out = timed(["ls", "-lR", str(m.path)])
        cold = emu.requests()
        lines = out.count("\n")
        progress(f"first ls -lR: {cold_s:.1f} s, {lines} lines")
        emu.reset_stats()
        warm_s, _ = timed(["ls", "-lR", str(m.path)])
        warm = emu.requests()
        projects, doc_dirs = _walk_dirs(m.path)
    attachments = _count(cold, LIST_ATTACHMENTS)
    structures = _count(cold, LIST_STRUCTURES)
    versions = _count(cold, LIST_VERSIONS)
    cold_calls = {k: sum(v.values()) for k, v in cold.items()}
    warm_calls = {k: sum(v.values()) for k, v in warm.items()}
    others = sum(cold_calls.values()) - attachments - structures - versions
    return [
        Result(
            "listing",
            f"ls -lR of {projects} projects x {doc_dirs // max(projects, 1)} documents at"
            f" {LISTING_LATENCY_MS} ms latency, first pass",
            f"{cold_s:.1f} s, {sum(cold_calls.values())} calls",
            None,
            f"per project directory {attachments / projects:.2f} attachment +"
            f" {structures / projects:.2f} structure listings, per versions/<doc> directory"
            f" {versions / doc_dirs:.2f} version listings, {others} other",
            "target <= 1 listing per directory",
            attachments <= projects and structures <= projects and versions <= doc_dirs,
            {"seconds": cold_s, "requests": cold_calls, "lines": lines},
        ),
        Result(
            "listing",
            "ls -lR again within the directory TTL",
            f"{warm_s:.2f} s, {sum(warm_calls.values())} calls",
            None,
            None,
            "target 0 calls",
            not warm_calls,
            {"seconds": warm_s, "requests": warm_calls},
        ),
    ]


def fig_read_rss(b: Bench) -> list[Result]:
    """6. Peak RSS of the mount process while reading a document twice the big size."""
    size = 2 * b.size
    with b.emulator() as emu:
        pid = emu.create_project("Big")
        progress(f"creating a {human_size(size)} document")
        doc = emu.create_document(pid, "big.bin", size, "big")
        settle()
        with b.mount(emu) as m:
            before = m.peak_rss()
            path = m.path / "Big" / doc["fileName"]
            seconds = read_file_timed(path, size)
            rss = m.peak_rss()
    return [
        Result(
            "read-rss",
            f"mount peak RSS reading {human_size(size)}",
            f"{rss / MiB:.0f} MiB",
            f"{before / MiB:.0f} MiB after start",
            None,
            f"target <= {RSS_LIMIT_MIB:g} MiB",
            rss <= RSS_LIMIT_MIB * MiB,
            {"peak_rss": rss, "rss_after_start": before, "mb_s": mb_s(size, seconds)},
        )
    ]


def fig_upload(b: Bench) -> list[Result]:
    """7 and 8. ``cp`` into the mount until the upload is confirmed vs a curl multipart upload;
    peak RSS of the mount process meanwhile."""
    size = b.size
    src = b.scratch("upload-src.bin")
    progress(f"writing a local {human_size(size)} file")
    write_local_file(src, size)
    mount_s: list[float] = []
    close_s: list[float] = []
    curl_s: list[float] = []
    local_s: list[float] = []
    rss: list[int] = []
    arrived: set[int] = set()
    with b.emulator() as emu:
        pid = emu.create_project("Uploads")
        url = f"{emu.url}/{TEAM}/projects/{pid}/attachments"
        for r in range(b.rounds):
            argv = [
                "curl", "-sS", "-K", "-", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                "-F", f"file=@{src};type=application/octet-stream;filename=curl-{r}.bin",
                url,
            ]  # fmt: skip
            settle()
            _, out = timed(argv, stdin=emu.curl_config())
            code, total = out.split()
            if code != "201":
                raise BenchError(f"curl upload answered {code}")
            curl_s.append(float(total))
            settle()
            with b.mount(emu, "--write-back-delay", "0") as m:
                dest = m.path / "Uploads" / f"cp-{r}.bin"
                start = time.perf_counter()
                timed(["cp", str(src), str(dest)])
                close_s.append(time.perf_counter() - start)
                m.wait_uploaded()
                mount_s.append(time.perf_counter() - start)
                rss.append(m.peak_rss())
            # Check this round's upload, then delete both uploads: every round starts with the
            # same data on the server (and as much memory free) as the first one.
            for doc in _attachments(emu, pid):
                if doc["fileName"] == f"cp-{r}.bin" and int(doc["size"]) == size:
                    arrived.add(r)
                _delete_attachment(emu, str(doc["id"]))
            progress(
                f"round {r + 1}: cp returned after {close_s[-1]:.2f} s, uploaded after"
                f" {mount_s[-1]:.2f} s; curl {curl_s[-1]:.2f} s"
            )
        emu_rss = emu.peak_rss()
    # The durability floor: the same bytes copied to a local file and fsynced, which is what
    # the mount must do before close() returns. Measured after all rounds: a cloud disk may
    # slow down after a few GiB of writes, and these must not slow the rounds above.
    for _ in range(b.rounds):
        copy = b.scratch("local-copy.bin")
        settle()
        local_s.append(
            timed(["dd", f"if={src}", f"of={copy}", "bs=1M", "conv=fsync", "status=none"])[0]
        )
        copy.unlink()
    src.unlink()
    for r in range(b.rounds):
        if r not in arrived:
            raise BenchError(f"cp-{r}.bin did not arrive on the server whole")
    i = mount_s.index(min(mount_s))
    best, ref = mount_s[i], min(curl_s)
    ratio = best / ref
    return [
        Result(
            "upload",
            f"cp {human_size(size)} into the mount until uploaded",
            f"{best:.2f} s",
            f"curl multipart {ref:.2f} s",
            ratio_text(ratio),
            "target <= 1.2x",
            ratio <= 1.2,
            {"mount_s": mount_s, "cp_returned_s": close_s, "curl_s": curl_s},
        ),
        info(
            "upload",
            "of which cp (write + journal fsync before close returns)",
            f"{close_s[i]:.2f} s; upload confirmed {best - close_s[i]:.2f} s after cp returned",
        ),
        info(
            "upload",
            "local copy + fsync of the same file (what close() must wait for)",
            f"{min(local_s):.2f} s",
            local_copy_fsync_s=local_s,
        ),
        Result(
            "upload-rss",
            f"mount peak RSS during the {human_size(size)} upload",
            f"{max(rss) / MiB:.0f} MiB",
            None,
            None,
            f"target <= {RSS_LIMIT_MIB:g} MiB",
            max(rss) <= RSS_LIMIT_MIB * MiB,
            {"peak_rss": rss},
        ),
        info(
            "upload",
            "emulator peak RSS during the uploads",
            f"{emu_rss / MiB:.0f} MiB",
            emulator_peak_rss=emu_rss,
        ),
    ]


def _delete_attachment(emu: Emulator, aid: str) -> None:
    url = f"{emu.url}/{TEAM}/attachments/{aid}"
    timed(["curl", "-sS", "-f", "-X", "DELETE", "-K", "-", "-o", "/dev/null", url],
          stdin=emu.curl_config())  # fmt: skip


def _attachments(emu: Emulator, pid: str) -> list[dict[str, Any]]:
    url = f"{emu.url}/{TEAM}/projects/{pid}/attachments"
    _, out = timed(["curl", "-sS", "-f", "-K", "-", url], stdin=emu.curl_config())
    docs: list[dict[str, Any]] = json.loads(out)
    return docs


TREE_FILES = 1000
TREE_FOLDERS = 20
TREE_LATENCY_MS = 20
BIG_PROJECT_DOCS = 20_000
CREATE_DOC = "POST /v2/{slug}/projects/{pid}/attachments"
CREATE_IN_FOLDER = "POST /v2/{slug}/objects/{pid}/attachments"
ENTRY_TIMEOUT_S = 1.0  # bimfs.fuse.operations.ENTRY_TIMEOUT


def _make_tree(root: Path) -> list[Path]:
    """TREE_FILES small files in TREE_FOLDERS folders under ``root``; their relative paths."""
    files = []
    for n in range(TREE_FILES):
        rel = Path(f"dir{n % TREE_FOLDERS:02d}") / f"file{n:04d}.txt"
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"file {n}\n".encode() * 8)
        files.append(rel)
    return files


class _KeepAlive:
    """The reference client: the same create and delete calls, one after another, over one
    keep-alive HTTP connection (what a careful script would do)."""

    def __init__(self, emu: Emulator) -> None:
        import http.client

        parts = urllib.parse.urlsplit(emu.url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self.prefix = parts.path + f"/{TEAM}"
        self.auth = {"Authorization": f"BimPlus {emu.token}"}

    def call(self, method: str, path: str, body: bytes = b"", ctype: str = "") -> Any:
        headers = dict(self.auth)
        if ctype:
            headers["Content-Type"] = ctype
        self.conn.request(method, self.prefix + path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise BenchError(f"{method} {path} answered {resp.status}")
        return json.loads(data) if data else None

    def create_folder(self, pid: str, name: str) -> str:
        body = json.dumps({"name": name, "parent": None, "type": "DocumentFolder"}).encode()
        return str(self.call("POST", f"/projects/{pid}/structures", body, "application/json")["id"])

    def upload(self, pid: str, folder: str, name: str, data: bytes) -> str:
        boundary = secrets.token_hex(12)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
                f"\r\nContent-Type: text/plain\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        doc = self.call(
            "POST", f"/projects/{pid}/attachments?DocumentFolderId={folder}", body,
            f"multipart/form-data; boundary={boundary}",
        )  # fmt: skip
        return str(doc["id"])

    def close(self) -> None:
        self.conn.close()


def _total(requests: dict[str, dict[str, int]]) -> int:
    return sum(sum(v.values()) for v in requests.values())


def fig_tree(b: Bench) -> list[Result]:
    """9. ``tar x`` of 1000 files in 20 folders into a project, until uploaded, then ``rm -rf``
    of them, at 20 ms latency: API calls and time against the same create and delete calls made
    one after another over one keep-alive connection."""
    src = b.scratch("tree")
    files = _make_tree(src)
    archive = b.scratch("tree.tar")
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True)
    needed = TREE_FILES + TREE_FOLDERS
    ref_x: list[float] = []
    ref_rm: list[float] = []
    mount_x: list[float] = []
    mount_rm: list[float] = []
    calls_x: list[int] = []
    calls_rm: list[int] = []
    with b.emulator("--latency-ms", str(TREE_LATENCY_MS)) as emu:
        for r in range(b.rounds):
            pid = emu.create_project(f"Reference {r}")
            client = _KeepAlive(emu)
            try:
                settle()
                start = time.perf_counter()
                folders = {f"dir{i:02d}": client.create_folder(pid, f"dir{i:02d}")
                           for i in range(TREE_FOLDERS)}  # fmt: skip
                ids = [
                    client.upload(pid, folders[rel.parent.name], rel.name, (src / rel).read_bytes())
                    for rel in files
                ]
                ref_x.append(time.perf_counter() - start)
                settle()
                start = time.perf_counter()
                for aid in ids:
                    client.call("DELETE", f"/attachments/{aid}")
                for fid in folders.values():
                    client.call("DELETE", f"/structures/{fid}")
                ref_rm.append(time.perf_counter() - start)
            finally:
                client.close()
            name = f"Tree {r}"
            emu.create_project(name)
            with b.mount(emu, "--write-back-delay", "0") as m:
                project = m.path / name
                wait_until(project.exists, 60, "the new project to show")
                os.listdir(project)
                settle()
                emu.reset_stats()
                start = time.perf_counter()
                timed(["tar", "xf", str(archive), "-C", str(project)])
                m.wait_uploaded()
                mount_x.append(time.perf_counter() - start)
                calls_x.append(_total(emu.requests()))
                made = emu.requests()
                created = _count(made, CREATE_DOC) + _count(made, CREATE_IN_FOLDER)
                if created != TREE_FILES:
                    raise BenchError(f"tar x made {created} documents, not {TREE_FILES}")
                settle()
                emu.reset_stats()
                start = time.perf_counter()
                for i in range(TREE_FOLDERS):
                    timed(["rm", "-rf", str(project / f"dir{i:02d}")])
                mount_rm.append(time.perf_counter() - start)
                calls_rm.append(_total(emu.requests()))
    x_ratio = min(mount_x) / min(ref_x)
    rm_ratio = min(mount_rm) / min(ref_rm)
    return [
        Result(
            "tree",
            f"tar x of {TREE_FILES} files in {TREE_FOLDERS} folders until uploaded,"
            f" {TREE_LATENCY_MS} ms latency: API calls",
            f"{min(calls_x)}", f"{needed} creates", f"{min(calls_x) / needed:.2f}x",
            "target <= 1.1x", min(calls_x) <= 1.1 * needed, {"calls": calls_x},
        ),
        Result(
            "tree", "tar x: time",
            f"{min(mount_x):.1f} s", f"{min(ref_x):.1f} s over one keep-alive connection",
            ratio_text(x_ratio), "target <= 1.3x", x_ratio <= 1.3,
            {"mount_s": mount_x, "reference_s": ref_x},
        ),
        Result(
            "tree", "rm -rf of the same tree: API calls",
            f"{min(calls_rm)}", f"{needed} deletes", f"{min(calls_rm) / needed:.2f}x",
            "target <= 1.1x", min(calls_rm) <= 1.1 * needed, {"calls": calls_rm},
        ),
        Result(
            "tree", "rm -rf: time",
            f"{min(mount_rm):.1f} s", f"{min(ref_rm):.1f} s over one keep-alive connection",
            ratio_text(rm_ratio), "target <= 1.3x", rm_ratio <= 1.3,
            {"mount_s": mount_rm, "reference_s": ref_rm},
        ),
    ]  # fmt: skip


_STAT_SCRIPT = """
import os, sys, time
paths = sys.stdin.read().split("\\0")[:-1]
start = time.perf_counter()
for path in paths:
    os.stat(path)
print(time.perf_counter() - start)
"""


def _stat_all(paths: list[Path]) -> float:
    """Seconds one process takes to ``stat`` every path (each looked up for the first time)."""
    out = subprocess.run(
        [sys.executable, "-c", _STAT_SCRIPT], input="".join(f"{p}\0" for p in paths),
        capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    return float(out.stdout)


def fig_versions_stat(b: Bench) -> list[Result]:
    """10. ``stat`` of ``versions/<document>`` in a project of 20 000 documents against ``stat``
    of documents of the same project (the listing is loaded once before)."""
    samples = 500
    with b.emulator() as emu:
        pid = emu.create_project("Big")
        progress(f"making a project of {BIG_PROJECT_DOCS} documents")
        emu.admin("POST", f"/teams/{TEAM}/projects/{pid}/documents", {"count": BIG_PROJECT_DOCS})
        doc_s: list[float] = []
        ver_s: list[float] = []
        for r in range(b.rounds):
            with b.mount(emu, "--dir-ttl", "3600") as m:
                project = m.path / "Big"
                # The lookup of versions/ loads the listing; the kernel has none of the
                # documents' entries (a listing would give it them for as long as the listing
                # is fresh), so each stat below is a lookup answered by the mount.
                _stat_all([project / "versions"])
                step = BIG_PROJECT_DOCS // (2 * samples)
                names = [f"doc-{n:06d}.txt" for n in range(r, BIG_PROJECT_DOCS, step)]
                docs, vers = names[0::2][:samples], names[1::2][:samples]
                settle()
                # Past the kernel's entry and attribute timeouts (1 s): every stat below is a
                # lookup answered by the mount, as the first stat of a name is.
                time.sleep(ENTRY_TIMEOUT_S + 0.5)
                doc_s.append(_stat_all([project / n for n in docs]))
                ver_s.append(_stat_all([project / "versions" / n for n in vers]))
    ratio = min(ver_s) / min(doc_s)
    return [
        Result(
            "versions-stat",
            f"stat of {samples} names in versions/ of a {BIG_PROJECT_DOCS}-document project",
            f"{min(ver_s) / samples * 1e3:.2f} ms each",
            f"stat of a document {min(doc_s) / samples * 1e3:.2f} ms",
            ratio_text(ratio), "target <= 2x", ratio <= 2.0,
            {"versions_s": ver_s, "documents_s": doc_s},
        )
    ]  # fmt: skip


def _rss(pid: int) -> int:
    """``VmRSS`` (resident set size now) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


BIG_PROJECT_KIB_PER_DOC = 2.0
LS_L_WARM_S = 1.0
LS_L_COLD_S = 3.0


def fig_big_project(b: Bench) -> list[Result]:
    """11 and 12. A project of 20 000 documents: the mount's memory per document after listing
    it and ``stat`` of every entry, and ``ls -l`` of it, first (the listing comes from the
    server) and again (within the directory TTL), against plain ``ls`` of it."""
    cold_s: list[float] = []
    warm_s: list[float] = []
    plain_s: list[float] = []
    per_doc: list[float] = []
    with b.emulator() as emu:
        pid = emu.create_project("Big")
        progress(f"making a project of {BIG_PROJECT_DOCS} documents")
        emu.admin("POST", f"/teams/{TEAM}/projects/{pid}/documents", {"count": BIG_PROJECT_DOCS})
        for r in range(b.rounds):
            with b.mount(emu, "--dir-ttl", "3600") as m:
                project = m.path / "Big"
                project.stat()  # the team's listing, not counted
                settle()
                before = _rss(m.pid)
                seconds, out = timed(["ls", "-l", str(project)])
                if out.count("\n") < BIG_PROJECT_DOCS:
                    raise BenchError(f"ls -l listed {out.count(chr(10))} lines")
                cold_s.append(seconds)
                _stat_all([project / n for n in os.listdir(project)])
                per_doc.append((_rss(m.pid) - before) / BIG_PROJECT_DOCS)
                warm_s.append(timed(["ls", "-l", str(project)])[0])
                plain_s.append(timed(["ls", str(project)])[0])
            progress(
                f"round {r + 1}: ls -l {cold_s[-1]:.2f} s first, {warm_s[-1]:.2f} s again,"
                f" ls {plain_s[-1]:.2f} s; {per_doc[-1] / 1024:.1f} KiB per document"
            )
    kib = min(per_doc) / 1024
    plain = min(plain_s)
    return [
        Result(
            "big-project",
            f"mount RSS growth per document, listing and stat of {BIG_PROJECT_DOCS} documents",
            f"{kib:.2f} KiB", None, None,
            f"target <= {BIG_PROJECT_KIB_PER_DOC:g} KiB", kib <= BIG_PROJECT_KIB_PER_DOC,
            {"bytes_per_doc": per_doc},
        ),
        Result(
            "big-project",
            f"ls -l of {BIG_PROJECT_DOCS} documents, first (listing from the server)",
            f"{min(cold_s):.2f} s", f"ls {plain:.2f} s", ratio_text(min(cold_s) / plain),
            f"target <= {LS_L_COLD_S:g} s", min(cold_s) <= LS_L_COLD_S,
            {"seconds": cold_s, "ls_seconds": plain_s},
        ),
        Result(
            "big-project",
            "ls -l of it again (within the directory TTL)",
            f"{min(warm_s):.2f} s", f"ls {plain:.2f} s", ratio_text(min(warm_s) / plain),
            f"target <= {LS_L_WARM_S:g} s", min(warm_s) <= LS_L_WARM_S,
            {"seconds": warm_s},
        ),
    ]  # fmt: skip


HEAD_DOCS = 20
HEAD_DOC_SIZE = 100_000_000
HEAD_BYTES = 64 << 10
HEAD_BUDGET = 2 * MiB


def fig_head_read(b: Bench) -> list[Result]:
    """13. ``head -c 65536`` of each of 20 documents of 100 MB on a fresh mount (as a file
    manager or ``file`` does): bytes the emulator sent per document."""
    with b.emulator() as emu:
        pid = emu.create_project("Heads")
        progress(f"creating {HEAD_DOCS} documents of {HEAD_DOC_SIZE // 10**6} MB")
        docs = [
            emu.create_document(pid, f"head-{n:02d}.bin", HEAD_DOC_SIZE, f"head-{n}")
            for n in range(HEAD_DOCS)
        ]
        settle()
        with b.mount(emu) as m:
            paths = [m.path / "Heads" / d["fileName"] for d in docs]
            for path in paths:
                path.stat()
            emu.reset_stats()
            seconds = 0.0
            for path in paths:
                took, _ = timed(["sh", "-c", f'head -c {HEAD_BYTES} "$0" >/dev/null', str(path)])
                seconds += took
            time.sleep(1.0)  # anything still streaming after the closes shows up meanwhile
            stats = emu.admin("GET", "/stats")
    sent = int(stats["bytes_out"]) / HEAD_DOCS
    return [
        Result(
            "head-read",
            f"head -c {HEAD_BYTES} of {HEAD_DOCS} cold documents of {HEAD_DOC_SIZE // 10**6} MB,"
            " bytes the server sent per document",
            f"{sent / MiB:.2f} MiB", f"{HEAD_BYTES >> 10} KiB read",
            ratio_text(sent / HEAD_BYTES),
            f"target <= {HEAD_BUDGET / MiB:g} MiB", sent <= HEAD_BUDGET,
            {"bytes_out": stats["bytes_out"], "seconds": seconds},
        )
    ]  # fmt: skip


FIGURES: dict[str, Callable[[Bench], list[Result]]] = {
    "cold-read": fig_cold_read,
    "throttled-read": fig_throttled_read,
    "ttfb": fig_ttfb,
    "warm-read": fig_warm_read,
    "listing": fig_listing,
    "read-rss": fig_read_rss,
    "upload": fig_upload,
    "tree": fig_tree,
    "versions-stat": fig_versions_stat,
    "big-project": fig_big_project,
    "head-read": fig_head_read,
}
# Figure numbers from docs/performance.md, and 8 (upload RSS) comes with the upload run.
ALIASES = {
    "1": "cold-read", "2": "throttled-read", "3": "ttfb", "4": "warm-read",
    "5": "listing", "6": "read-rss", "7": "upload", "8": "upload", "upload-rss": "upload",
    "9": "tree", "10": "versions-stat", "11": "big-project", "12": "big-project",
    "13": "head-read",
}  # fmt: skip


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure bimfs against curl and the local page cache, in the same run.",
    )
    parser.add_argument(
        "--size",
        default="1G",
        help="size of the big document (default 1G; the RSS figure reads twice this)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)} (or 1-8)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per timed figure, the best is kept (default 3)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the results here")
    parser.add_argument("--tmpdir", type=Path, help="where to put the temporary directory")
    args = parser.parse_args(argv)
    try:
        args.size_bytes = parse_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.size_bytes < 64 * MiB:
        parser.error("--size must be at least 64M (smaller files never use parallel streams)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    selected: list[str] = []
    for name in args.only:
        for part in name.split(","):
            key = ALIASES.get(part.strip(), part.strip())
            if key not in FIGURES:
                parser.error(f"unknown figure {part!r} (known: {', '.join(FIGURES)})")
            if key not in selected:
                selected.append(key)
    args.figures = selected or list(FIGURES)
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the selected figures, print one line per result and a summary; the exit status."""
    args = parse_args(argv)
    for tool in ("curl", "dd", "cp", "ls", "fusermount3"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found", file=sys.stderr)
            return 1
    # SIGTERM and SIGHUP clean up like Ctrl-C does; SIGINT too when started in the background
    # (where it would be ignored otherwise).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="bimfs-bench-", dir=args.tmpdir))
    free = shutil.disk_usage(tmp).free
    if free < 8 * args.size_bytes:
        print(
            f"bench: warning: only {human_size(free)} free in {tmp}, a full run may need"
            f" {human_size(8 * args.size_bytes)}",
            file=sys.stderr,
        )
    bench = Bench(args.size_bytes, args.rounds, tmp)
    started = time.monotonic()
    results: list[Result] = []
    errors: dict[str, str] = {}
    load_start = load_average()
    source = source_state()
    print(
        f"bimfs benchmark of {source}, {os.cpu_count()} cores, load {load_start},"
        f" size {human_size(args.size_bytes)}, best of {args.rounds} runs per timed figure",
        flush=True,
    )
    try:
        for name in args.figures:
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                figure = FIGURES[name](bench)
            except (BenchError, OSError, subprocess.TimeoutExpired) as exc:
                errors[name] = str(exc)
                print(f"{name}: ERROR " + " | ".join(str(exc).splitlines()), flush=True)
                continue
            for result in figure:
                print(result.line(), flush=True)
            results.extend(figure)
    except KeyboardInterrupt:
        print("bench: interrupted, cleaning up", file=sys.stderr)
        bench.close()
        return 130
    finally:
        bench.close()
    elapsed = time.monotonic() - started
    verdicts = [r.passed for r in results if r.passed is not None]
    failed = [r.title.strip() for r in results if r.passed is False]
    load_end = load_average()
    summary = (
        f"summary: {len(verdicts)} targets, {verdicts.count(True)} PASS, {len(failed)} FAIL"
        f", {len(errors)} not measured, {elapsed:.0f} s, load at the end {load_end}"
    )
    if failed:
        summary += " (FAIL: " + "; ".join(failed) + ")"
    print(summary, flush=True)
    if bench.mount_problems:
        print(f"note: the mounts logged {len(bench.mount_problems)} error lines:", flush=True)
        for line in bench.mount_problems[:10]:
            print(f"  {line}", flush=True)
    if args.json:
        report = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "source": source,
            "machine": {
                "cores": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "load_start": load_start,
                "load_end": load_end,
            },
            "size": args.size_bytes,
            "rounds": args.rounds,
            "seconds": elapsed,
            "results": [asdict(r) for r in results],
            "errors": errors,
            "mount_problems": bench.mount_problems,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
