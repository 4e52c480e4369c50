"""Command line and process of the emulator: ``python -m bimfs.emulator``.

One process, one uvicorn worker (httptools parser, uvloop). The listening socket is bound here,
before the server starts, so ``--port 0`` works and the port is known; exactly one line is
printed on stdout when the server accepts connections. SIGINT and SIGTERM stop it cleanly (exit
status 0); a temporary data dir (no ``--data-dir``) is removed then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from bimfs.emulator.admin import AdminApi
from bimfs.emulator.api import BimplusApi
from bimfs.emulator.app import EmulatorApp, RouteSpec, Settings, State, route
from bimfs.emulator.auth import AuthService
from bimfs.emulator.faults import Faults, FaultSettings
from bimfs.emulator.ready import READY_PREFIX
from bimfs.emulator.seed import seed
from bimfs.emulator.storage import DEMO_USER_ID, Store

log = logging.getLogger("bimfs.emulator")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bimfs.emulator",
        description="A local emulator of the Bimplus REST API (documents, versions, folders, "
        "login) for tests, benchmarks and demos.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (0: a free one; the default)")
    p.add_argument("--data-dir", type=Path, help="where to keep data (default: a temp dir)")
    p.add_argument(
        "--seed",
        choices=("demo", "none", "large"),
        default="demo",
        help="sample data for an empty data dir (default demo)",
    )
    p.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a never-expiring access token of the demo user (repeatable)",
    )
    p.add_argument("--token-ttl", type=float, default=3600.0, metavar="SECONDS")
    p.add_argument(
        "--refresh-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a rotated refresh token stays valid (default 60)",
    )
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="MS")
    p.add_argument("--fail-rate", type=float, default=0.0, metavar="P")
    p.add_argument("--throttle-rate", type=float, default=0.0, metavar="P")
    p.add_argument("--retry-after", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--reset-rate", type=float, default=0.0, metavar="P")
    p.add_argument("--stream-rate", type=int, default=0, metavar="BYTES_PER_S")
    p.add_argument("--no-range", action="store_true", help="ignore Range headers")
    p.add_argument("--quirks", action="store_true", help="answer with documented variants")
    p.add_argument("--fault-seed", type=int, default=None, metavar="N")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="stderr log level (default warning)",
    )
    return p


def build_faults(args: argparse.Namespace) -> Faults:
    """The fault configuration of the command line; ``ValueError`` for a bad value."""
    faults = Faults(FaultSettings(), seed=args.fault_seed)
    faults.update(
        {
            "latency_ms": args.latency_ms,
            "fail_rate": args.fail_rate,
            "throttle_rate": args.throttle_rate,
            "retry_after": args.retry_after,
            "reset_rate": args.reset_rate,
            "stream_rate": args.stream_rate,
            "range_enabled": not args.no_range,
            "quirks": args.quirks,
        }
    )
    return faults


def build_app(state: State, auth: AuthService) -> EmulatorApp:
    """The ASGI application with every route."""

    def v2(path: str, methods: list[str], handler: Any, *, needs_token: bool) -> RouteSpec:
        return route("/v2" + path, methods, handler, zone="v2", auth=needs_token)

    def oidc(path: str, methods: list[str], handler: Any) -> RouteSpec:
        return route("/oidc" + path, methods, handler, zone="oidc", auth=False)

    routes = [
        v2("/authorize", ["POST"], auth.legacy_login, needs_token=False),
        v2("/authorize", ["GET"], auth.legacy_check, needs_token=True),
        v2("/.well-known/openid-configuration", ["GET"], auth.discovery, needs_token=False),
        oidc("/.well-known/openid-configuration", ["GET"], auth.discovery),
        oidc("/auth", ["GET"], auth.authorize_page),
        oidc("/auth", ["POST"], auth.authorize_submit),
        oidc("/token", ["POST"], auth.token_endpoint),
        oidc("/userinfo", ["GET"], auth.userinfo),
        oidc("/revoke", ["POST"], auth.revoke),
        *BimplusApi(state).routes(),
        *AdminApi(state).routes(),
    ]
    return EmulatorApp(state, routes, auth.authenticate)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen (address reuse on, so a restart can take the same port at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server with our own signal handling and a hook when it accepts connections.

    uvicorn re-raises a captured SIGTERM after shutting down, which would make the exit status
    that of a killed process; the emulator must exit 0, so it installs its own handlers.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


async def _serve(app: EmulatorApp, sock: socket.socket, url: str) -> None:
    config = uvicorn.Config(
        app,
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        # Longer than any client pool's keep-alive, so the server never closes a connection a
        # client is about to reuse.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )

    def ready() -> None:
        sys.stdout.write(READY_PREFIX + url + "\n")
        sys.stdout.flush()

    server = _Server(config, ready)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await server.serve(sockets=[sock])


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bimfs-emulator: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # uvicorn's own info lines (start, stop) are noise for tests and scripts.
    logging.getLogger("uvicorn").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = build_faults(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.token_ttl <= 0:
        parser.error("--token-ttl must be positive")
    _setup_logging(args.log_level)
    temp_dir = None
    if args.data_dir is None:
        temp_dir = Path(tempfile.mkdtemp(prefix="bimfs-emulator-"))
    data_dir = args.data_dir or temp_dir
    assert data_dir is not None
    try:
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as exc:
            print(
                f"bimfs-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
            )
            return 1
        store = Store(data_dir)
        try:
            seed(store, args.seed)
            settings = Settings(token_ttl=args.token_ttl, refresh_grace=args.refresh_grace)
            state = State(store=store, faults=faults, settings=settings)
            auth = AuthService(state)
            for token in args.token:
                auth.add_fixed_token(token, DEMO_USER_ID)
            app = build_app(state, auth)
            port = sock.getsockname()[1]
            host = f"[{args.host}]" if ":" in args.host else args.host
            url = f"http://{host}:{port}/v2"
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_serve(app, sock, url))
        finally:
            store.close()
            sock.close()
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0
