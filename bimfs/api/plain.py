"""One-off requests outside any client: OIDC discovery, token grants, the legacy login.

No API token, no shared connection pool, no retries: each call opens its own connection, must
finish within its deadline, and returns whatever status the server answered.
"""

from __future__ import annotations

import json as json_module
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bimfs.api import error_map
from bimfs.api.error_map import excerpt
from bimfs.api.errors import ProtocolError
from bimfs.api.transport import DEFAULT_USER_AGENT
from bimfs.config import check_api_url

__all__ = ["PlainAnswer", "plain_request"]


@dataclass(frozen=True)
class PlainAnswer:
    """The answer to :func:`plain_request`: status, body (bounded) and headers."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self, call: str) -> Any:
        """The body as JSON, or ``ProtocolError`` naming ``call``."""
        try:
            return json_module.loads(self.body)
        except ValueError as exc:
            raise ProtocolError(
                f"the answer is not JSON (status {self.status}): {excerpt(self.body)!r}",
                call=call,
            ) from exc


async def plain_request(
    method: str,
    url: str,
    *,
    call: str,
    json: Any = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    deadline: float = 30.0,
    max_body: int = 1024 * 1024,
) -> PlainAnswer:
    """Send one request outside any client (OIDC discovery, token grants, legacy login).

    TLS is verified; ``url`` must be https or loopback http. The whole exchange must finish
    within ``deadline`` seconds. Raises ``TransportError`` / ``ApiTimeoutError``; any status is
    returned, not raised.
    """
    check_api_url(url.split("?", 1)[0])
    async with httpx.AsyncClient(
        http1=True, verify=True, timeout=httpx.Timeout(deadline), follow_redirects=False
    ) as http:
        with error_map.deadline(call, deadline):
            async with http.stream(
                method,
                url,
                json=json,
                data=dict(form) if form is not None else None,
                headers={"User-Agent": DEFAULT_USER_AGENT, **(headers or {})},
            ) as response:
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > max_body:
                        raise ProtocolError(f"answer larger than {max_body} bytes", call=call)
                return PlainAnswer(response.status_code, bytes(body), dict(response.headers))
