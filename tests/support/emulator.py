"""Run the Bimplus emulator (``python -m bimfs.emulator``) as a real process for tests.

Synchronous on purpose: plain tests and trio tests alike can call it (a call blocks the caller for
a loopback round trip only). Every helper talks real HTTP to the process.

    emu = start_emulator(tmp_path / "emu")
    teams = emu.api("GET", "/teams")
    pid = emu.project_id("bimfs-demo", "Office Building")
    emu.stop()
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import EmulatorProcess


class EmulatorError(RuntimeError):
    """The emulator answered a helper call with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:300]}")
        self.status = status
        self.body = body


class Emulator(EmulatorProcess):
    """A running emulator process (``tests.support.processes``) and helpers to drive it over
    HTTP."""

    _client: httpx.Client | None = None

    def stop(self) -> None:
        """Close the helpers' connections, then stop the process (see ``EmulatorProcess``)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """A keep-alive client for this process (closed by ``stop``)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base, timeout=60.0)
        return self._client

    @property
    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header of the fixed test token."""
        return {"Authorization": f"BimPlus {self.token}"}

    def request(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """A raw request; ``path`` below ``/v2`` when it does not start with ``/_emulator``,
        ``/oidc`` or ``/v2``. Never raises for an error status."""
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith(("/_emulator", "/oidc", "/v2")):
            path = "/v2" + path
        headers = dict(kwargs.pop("headers", None) or {})
        if auth and path.startswith("/v2"):
            headers.setdefault("Authorization", f"BimPlus {self.token}")
        return self.client.request(method, path, headers=headers, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise EmulatorError(method, path, resp.status_code, resp.text)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authorised call to a ``/v2`` path (``"/bimfs-demo/projects"``); the decoded JSON.
        Raises ``EmulatorError`` on an error status."""
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/v2"):
            path = "/v2" + path
        return self._json(method, path, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call below ``/_emulator`` (``"/stats"`` or ``"/_emulator/stats"``); the JSON."""
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/_emulator"):
            path = "/_emulator" + path
        return self._json(method, path, auth=False, **kwargs)

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        result: dict[str, Any] = self.admin("GET", "/stats")
        return result

    def reset_stats(self) -> None:
        """Zero the request and byte counters."""
        self.admin("POST", "/stats/reset")

    def count(self, key: str, status: int | None = None) -> int:
        """Requests counted under ``key`` (``"GET /v2/{slug}/attachments/{id}/download"``),
        of one status or of all."""
        per_status: dict[str, int] = self.stats()["requests"].get(key, {})
        if status is None:
            return sum(per_status.values())
        return per_status.get(str(status), 0)

    def set_faults(self, **faults: Any) -> None:
        """Change faults at run time (``latency_ms``, ``fail_rate``, ``throttle_rate``,
        ``retry_after``, ``reset_rate``, ``stream_rate``, ``range_enabled``, ``quirks``,
        ``hold_ms``, ``routes``, ``fault_seed``)."""
        self.admin("POST", "/faults", json=faults)

    def hostile_answers(self, *rules: dict[str, Any]) -> None:
        """Rewrite JSON answers (the ``answers`` fault, ``bimfs.emulator.hostile``); none
        given: answer normally again. Sent with ASCII escapes, so that a rule may hold a lone
        surrogate."""
        body = json.dumps({"answers": list(rules)}, ensure_ascii=True)
        headers = {"Content-Type": "application/json"}
        self.admin("POST", "/faults", content=body.encode("ascii"), headers=headers)

    def issue_token(self) -> str:
        """A new access token of the demo user (a legacy login), valid ``--token-ttl``
        seconds or until ``expire_tokens``."""
        body = {"user_id": "demo@bimfs.test", "password": "demo", "application_id": "tests"}
        answer = self.api("POST", "/authorize", json=body, auth=False)
        return str(answer["access_token"])

    def expire_tokens(self) -> None:
        """Expire every issued (non-fixed) access token now."""
        self.admin("POST", "/tokens/expire")

    def download(self, slug: str, aid: str, version: int | None = None) -> bytes:
        """The content of a document (its latest version, or ``version``)."""
        if version is None:
            path = f"/{slug}/attachments/{aid}/download"
        else:
            path = f"/{slug}/attachments/{aid}/versions/{version}/download"
        resp = self.request("GET", path)
        if resp.status_code != 200:
            raise EmulatorError("GET", path, resp.status_code, resp.text)
        return resp.content

    # -- lookups by name (the seed is documented by names) -------------------------------

    def project_id(self, slug: str, name: str) -> str:
        """The id of the project ``name`` of team ``slug``."""
        for project in self.api("GET", f"/{slug}/projects"):
            if project["name"] == name:
                return str(project["id"])
        raise KeyError(f"no project {name!r} in {slug}")

    def attachments(self, slug: str, pid: str) -> list[dict[str, Any]]:
        """Every document of a project (folders included), latest versions."""
        result: list[dict[str, Any]] = self.api("GET", f"/{slug}/projects/{pid}/attachments")
        return result

    def attachment(self, slug: str, pid: str, file_name: str) -> dict[str, Any]:
        """The one document of a project named ``file_name`` (KeyError if none or several)."""
        found = [a for a in self.attachments(slug, pid) if a["fileName"] == file_name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} documents named {file_name!r}")
        return found[0]

    def upload(
        self,
        slug: str,
        pid: str,
        file_name: str,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        folder_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a document with a standard multipart upload; its JSON."""
        params = {"DocumentFolderId": folder_id} if folder_id else None
        files = {"file": (file_name, content, content_type)}
        result: dict[str, Any] = self.api(
            "POST", f"/{slug}/projects/{pid}/attachments", files=files, params=params
        )
        return result

    def versions(self, slug: str, aid: str) -> list[dict[str, Any]]:
        """Every stored version of a document, oldest first."""
        result: list[dict[str, Any]] = self.api("GET", f"/{slug}/attachments/{aid}/versions")
        return result

    def new_version(
        self,
        slug: str,
        aid: str,
        file_name: str,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Upload a new version of a document; its JSON."""
        files = {"file": (file_name, content, content_type)}
        result: dict[str, Any] = self.api(
            "POST", f"/{slug}/attachments/{aid}/versions", files=files
        )
        return result

    def folders(self, slug: str, pid: str) -> list[dict[str, Any]]:
        """The document-folder tree of a project (top-level nodes)."""
        result: list[dict[str, Any]] = self.api(
            "GET", f"/{slug}/projects/{pid}/structures", params={"type": "DocumentFolder"}
        )
        return result


def multipart_body(
    filename: str,
    content: bytes,
    *,
    content_type: str | None = "application/octet-stream",
    name: str = "file",
    classification: str | None = None,
    tag: str | None = None,
    boundary: str = "bimfs-test-boundary-7d3a",
) -> tuple[bytes, dict[str, str]]:
    """A Bimplus-style multipart upload body (one part, with the non-standard
    ``classification``/``tag`` parameters when given) and its request headers."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    disposition = f"form-data; name={quoted(name)}; filename={quoted(filename)}"
    if classification is not None:
        disposition += f"; classification={quoted(classification)}"
    if tag is not None:
        disposition += f"; tag={quoted(tag)}"
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    data = head.encode() + b"\r\n" + content + f"\r\n--{boundary}--\r\n".encode()
    return data, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def start_emulator(
    data_dir: Path, *args: str, token: str = "test-token", seed: str = "demo"
) -> Emulator:
    """Start ``python -m bimfs.emulator`` on a free loopback port with ``data_dir`` and wait until
    it is ready. Extra CLI arguments pass through (``"--fail-rate", "0.3"``)."""
    return Emulator(Path(data_dir), *args, token=token, seed=seed)


@contextlib.contextmanager
def running_emulator(data_dir: Path, *args: str, **kwargs: Any) -> Any:
    """``start_emulator`` as a context manager that always stops the process."""
    emu = start_emulator(data_dir, *args, **kwargs)
    try:
        yield emu
    finally:
        emu.stop()
