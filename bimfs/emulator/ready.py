"""The emulator's ready line, and waiting for it in the process that started the emulator.

Kept free of the server's dependencies: the command line (``bimfs demo``), the test harness and
the benchmark import it without Starlette or uvicorn.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from typing import Any

#: The one line ``python -m bimfs.emulator`` prints on stdout once it serves, then the API URL.
READY_PREFIX = "bimfs-emulator listening on "


class EmulatorStartError(RuntimeError):
    """The emulator exited, stayed silent, or printed something else before it was ready."""


def wait_ready(process: subprocess.Popen[Any], timeout: float) -> str:
    """Read the emulator's ready line from ``process.stdout`` (a pipe) and return the API URL
    it names (``http://HOST:PORT/v2``). Raises ``EmulatorStartError`` after ``timeout``
    seconds, when the process closes its stdout first, or on any other first line."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise EmulatorStartError("the emulator did not report ready in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise EmulatorStartError("the emulator exited before it was ready")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace")
    if not line.startswith(READY_PREFIX):
        raise EmulatorStartError(f"unexpected first line from the emulator: {line!r}")
    return line[len(READY_PREFIX) :].strip()
