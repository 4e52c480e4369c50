"""``bimfs demo``: the emulator with sample data, mounted."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bimfs.cli.common import CliError
from bimfs.cli.common import human as _human
from bimfs.emulator.ready import EmulatorStartError, wait_ready

# How long `bimfs demo` waits for the emulator it started (seeding the demo data included).
DEMO_START_TIMEOUT = 120.0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the emulator with sample data, mount it, show the tree."""
    import secrets
    import tempfile

    mountpoint = args.mountpoint.absolute()
    mountpoint.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "bimfs-demo-data"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_file = data_dir / "token"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bimfs.emulator",
            "--seed",
            "demo",
            "--port",
            "0",
            "--data-dir",
            str(data_dir / "server"),
            "--token-ttl",
            "86400",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        try:
            api_url = wait_ready(emulator, DEMO_START_TIMEOUT)
        except EmulatorStartError as exc:
            raise CliError(f"the emulator did not start: {exc}") from None
        print(f"emulator: {api_url}  (user demo@bimfs.test, password demo)")
        _demo_token(api_url, token_file, secrets.token_hex(16))
        mount_cmd = [
            sys.executable,
            "-m",
            "bimfs",
            "mount",
            str(mountpoint),
            "--api-url",
            api_url,
            "--token-file",
            str(token_file),
            "--cache-dir",
            str(data_dir / "cache"),
        ]
        if args.verbose:
            mount_cmd.append("-v")
        subprocess.run(mount_cmd, check=True)
        print(f"mounted at {mountpoint}\n")
        _print_tree(mountpoint)
        interactive = sys.stdin.isatty() and not args.exit
        if interactive:
            print(f"\nexplore {mountpoint} in another terminal; press Ctrl-C here to stop.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                print()
        subprocess.run([sys.executable, "-m", "bimfs", "unmount", str(mountpoint)], check=False)
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()
    return 0


def _demo_token(api_url: str, token_file: Path, client_id: str) -> None:
    """Log the demo user in (legacy login) and keep the token in a 0600 file."""
    import urllib.request

    body = json.dumps(
        {
            "user_id": "demo@bimfs.test",
            "password": "demo",
            "application_id": "bimfs-demo",
            "client_id": client_id,
        }
    ).encode()
    request = urllib.request.Request(
        f"{api_url}/authorize",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        token = json.load(answer)["access_token"]
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)


def _print_tree(root: Path, max_entries: int = 200) -> None:
    shown = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts)
        if rel.parts and rel.parts[-1] == "versions":
            dirnames[:] = []
        indent = "  " * depth
        if rel.parts:
            print(f"{'  ' * (depth - 1)}{rel.parts[-1]}/")
        for name in sorted(filenames):
            try:
                size = os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                size = -1
            print(f"{indent}{name}  ({_human(size)})")
            shown += 1
            if shown >= max_entries:
                print(f"{indent}...")
                return
