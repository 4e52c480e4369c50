"""Fixtures of the API client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.api.scripted_server import ScriptedServer


@pytest.fixture
async def scripted(nursery: trio.Nursery) -> AsyncIterator[ScriptedServer]:
    """A scripted server running for the duration of the test."""
    server = ScriptedServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.serve, listeners)
    yield server
