"""LibreOffice (headless, driven over UNO) opens a .docx and a .xlsx on the mount in place, edits
and stores them: one new version each, and neither its lock file nor its temp file ever reaches
the server.

How LibreOffice 7.4 saves on this filesystem (strace of soffice.bin; ``doc`` is the document):

    load:   open(doc, O_RDWR) + fcntl(F_SETLK, F_WRLCK)     kept open while the document is
            open(".~lock.doc#", O_RDWR|O_CREAT|O_EXCL)       open; the lock file is written and
            pwrite(lock), close(lock)                        closed
    store(): open(".~lock.doc#", O_RDONLY), read, close      checks it still owns the lock
            unlink(".~lock.doc#")
            open("luXXXXXX.tmp", O_RDWR|O_CREAT|O_EXCL, 0600)   a temp name in doc's directory,
            close(tmp)                                          closed EMPTY
            open("luXXXXXX.tmp", O_RDWR|O_CREAT)                reopened a few ms later
            open(doc, O_RDWR) + F_SETLK, close
            open(".~lock.doc#", O_RDWR|O_CREAT|O_EXCL), pwrite, close   the lock again
            ... the document is serialised: the temp stays open and UNWRITTEN meanwhile
                (about 1 s for a 25 000-row sheet) ...
            pread(tmp), pwrite(tmp, zip bytes)..., close(tmp)
            rename("luXXXXXX.tmp", doc)
            chown(doc), chmod(doc)
            open(doc, O_RDWR) + F_SETLK, fsync, close
            open(doc, O_RDWR) + F_SETLK                 kept open again, nothing written
    close:  open(".~lock.doc#", O_RDONLY), read, close, unlink(".~lock.doc#"), close(doc)

So a store is write-temp-then-rename (INTERFACES §5): the temp's bytes must become one new
version of ``doc`` and ``luXXXXXX.tmp`` must never exist on the server, also when the
serialisation between the temp's reopening and its first write takes longer than the write-back
delay (the temp is open for writing all that time, so the delay must not run).
"""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bimfs.emulator import samples
from tests.programs.helpers import Project
from tests.support.server import NEW_VERSION, ServerProject, changes

pytestmark = pytest.mark.mount

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-uno is for the system interpreter
UNO_EDIT = Path(__file__).with_name("uno_edit.py")
STEP_TIMEOUT = 120.0
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Office:
    """A headless LibreOffice listening on a UNO pipe, with a profile of its own."""

    def __init__(self, root: Path) -> None:
        soffice = shutil.which("soffice")
        if soffice is None:
            pytest.fail("soffice not found: scripts/_install installs libreoffice-*-nogui")
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import uno"], capture_output=True)
        if probe.returncode != 0:
            pytest.fail(f"{SYSTEM_PYTHON} cannot import uno (python3-uno): {probe.stderr!r}")
        self.pipe = f"bimfs-test-{os.getpid()}-{time.monotonic_ns()}"
        self.log_path = root / "soffice.log"
        profile = root / "profile"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [soffice, "--headless", "--invisible", "--norestore", "--nologo", "--nodefault",
                 f"--accept=pipe,name={self.pipe};urp;",
                 f"-env:UserInstallation={profile.as_uri()}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def edit(self, path: Path, marker: str) -> Edit:
        return Edit(self, path, marker)

    def stop(self) -> None:
        """End the soffice processes (their own session) and wait for them."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(20)
        try:  # soffice.bin may outlive the wrapper it was started by
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Edit:
    """One run of ``uno_edit.py``: load (the document stays open), then store and close."""

    def __init__(self, office: Office, path: Path, marker: str) -> None:
        self.office = office
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(UNO_EDIT), office.pipe, str(path), marker],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def expect(self, word: str) -> None:
        """Wait until the script prints ``word`` (it exited or timed out otherwise: fail)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline().decode().strip()
                if line == word:
                    return
                if line:
                    continue
            if (ready and not line) or self.process.poll() is not None:
                self.fail(f"exited before {word!r}")
            if time.monotonic() > deadline:
                self.process.kill()
                self.fail(f"no {word!r} in {STEP_TIMEOUT} s")

    def store_and_close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"store\n")
        self.process.stdin.flush()
        self.expect("stored")
        self.expect("closed")
        assert self.process.wait(STEP_TIMEOUT) == 0, self.stderr()

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        """End the script if it still runs and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STEP_TIMEOUT)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def fail(self, what: str) -> None:
        self.process.wait(STEP_TIMEOUT)
        soffice = self.office.log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"uno_edit.py {what}:\n{self.stderr()}\nsoffice:\n{soffice}")


class NameWatcher:
    """Polls a project's document list while a program runs and records every path it ever
    showed, so that a temp document that existed only for a moment is still seen."""

    def __init__(self, server: ServerProject) -> None:
        self.server = server
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(d["fileName"] for d in self.server.documents())
            self._stop.wait(0.05)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        self.seen.update(d["fileName"] for d in self.server.documents())
        return self.seen


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    o = Office(tmp_path_factory.mktemp("libreoffice"))
    try:
        yield o
    finally:
        o.stop()


def zip_text(data: bytes) -> str:
    """Every member of a ZIP (an Office Open XML file) as one text."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return "".join(zf.read(n).decode(errors="replace") for n in zf.namelist())


def edit_in_place(office: Office, p: Project, name: str, data: bytes, content_type: str) -> None:
    p.server.upload(name, data, content_type=content_type)
    p.wait_visible(name)
    p.emu.reset_stats()
    marker = f"edited-{time.monotonic_ns()}"
    watcher = NameWatcher(p.server)
    edit = office.edit(p.dir / name, marker)
    try:
        edit.expect("loaded")
        lock = p.dir / f".~lock.{name}#"
        assert lock.exists(), os.listdir(p.dir)  # LibreOffice holds its lock next to the file
        p.sync()  # nothing to send: the lock file stays on this machine
        assert p.server.paths() == [name]
        edit.store_and_close()
        assert not lock.exists()
        p.sync()
    finally:
        edit.close()
        seen = watcher.stop()
    assert seen == {name}, f"documents that appeared on the server: {sorted(seen)}"
    assert p.server.paths() == [name]
    assert p.server.versions(name) == [1, 2]
    stored = p.server.content(name)
    assert marker in zip_text(stored)
    assert p.server.content(name, 1) == data
    assert changes(p.emu) == {NEW_VERSION: 1}  # no temp document created, nothing deleted
    assert (p.dir / name).read_bytes() == stored
    assert sorted(n for n in os.listdir(p.dir) if n != "versions") == [name]


@pytest.mark.parametrize("kind", ["docx", "xlsx"])
def test_libreoffice_stores_in_place_as_one_version(
    office: Office, project: Project, kind: str
) -> None:
    if kind == "docx":
        edit_in_place(office, project, "report.docx", samples.docx_file("Report", "Text"), DOCX)
    else:
        rows: list[list[str | int | float]] = [["item", "count"], ["bolts", 40], ["nuts", 12]]
        edit_in_place(office, project, "schedule.xlsx", samples.xlsx_file(rows), XLSX)


def test_libreoffice_store_slower_than_the_write_back_delay(
    office: Office, project: Project
) -> None:
    # 25 000 rows: LibreOffice serialises for about a second with its temp file open and still
    # empty, five times the shared mount's write-back delay of 0.2 s.
    rows: list[list[str | int | float]] = [
        [f"row {i}", i, i * 1.5, f"text {i * 7}"] for i in range(25_000)
    ]
    edit_in_place(office, project, "big-sheet.xlsx", samples.xlsx_file(rows), XLSX)
