"""Every client call over real HTTP against the emulator process."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bimfs.api.auth import StaticToken
from bimfs.api.client import BimplusClient
from bimfs.api.errors import (
    ConflictError,
    ForbiddenError,
    IncompleteBodyError,
    NotFoundError,
    StatusError,
    UnauthorizedError,
)
from tests.support.emulator import Emulator

SLUG = "bimfs-demo"
OFFICE = "Office Building"


def connect(emu: Emulator, **kwargs: object) -> BimplusClient:
    options: dict = {"backoff_base": 0.01, "backoff_cap": 0.05, "timeout": 20.0}
    options.update(kwargs)
    return BimplusClient(emu.url, StaticToken(emu.token), **options)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def read_all(client: BimplusClient, aid: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    await client.download_to(SLUG, aid, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


async def test_account_and_projects(emulator: Emulator) -> None:
    async with connect(emulator) as client:
        teams = await client.get_teams()
        assert {t.slug for t in teams} == {"bimfs-demo", "acme-build"}
        acme = next(t for t in teams if t.slug == "acme-build")
        assert acme.total_storage == 1048576 and acme.used_storage

        everything = await client.get_all_projects()
        assert {p.team_slug for p in everything} == {"bimfs-demo", "acme-build"}

        projects = await client.get_projects(SLUG)
        names = {p.name: p for p in projects}
        assert OFFICE in names and not names["Archive 2019"].has_write_access
        one = await client.get_project(SLUG, names[OFFICE].id)
        assert one.id == names[OFFICE].id and one.name == OFFICE

        with pytest.raises(NotFoundError):
            await client.get_project(SLUG, "00000000-0000-0000-0000-000000000000")

        info = await client.check_token()
        assert info.get("user_id")


async def test_attachment_metadata_calls(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    async with connect(emulator) as client:
        docs = await client.list_attachments(SLUG, pid)
        by_name = {d.file_name: d for d in docs}
        plan = by_name["plan.pdf"]
        assert plan.version == 3 and plan.size > 0 and plan.rights.download
        assert not by_name["confidential.pdf"].rights.download
        everything = await client.list_attachments(SLUG, pid, project_only=False)
        assert {d.id for d in docs} <= {d.id for d in everything}
        typed = await client.list_attachments(SLUG, pid, attachment_type="NoSuchType")
        assert typed == []

        got = await client.get_attachment(SLUG, plan.id)
        assert got == plan

        versions = await client.list_versions(SLUG, plan.id)
        assert [v.version for v in versions] == [1, 2, 3]
        assert all(v.id == plan.id for v in versions)

        tagged = await client.update_attachment(SLUG, plan.id, tag="T-1", classification="Plan")
        assert (tagged.tag, tagged.classification) == ("T-1", "Plan")
        assert tagged.file_name == "plan.pdf"
        renamed = await client.update_attachment(SLUG, plan.id, file_name="plan-renamed.pdf")
        # Only the given key changed.
        assert renamed.file_name == "plan-renamed.pdf"
        assert (renamed.tag, renamed.classification) == ("T-1", "Plan")
        assert (
            emulator.api("GET", f"/{SLUG}/attachments/{plan.id}")["fileName"] == "plan-renamed.pdf"
        )

        released = await client.release(SLUG, plan.id)
        assert released.release

        await client.delete_version(SLUG, plan.id, 2)
        assert [v.version for v in await client.list_versions(SLUG, plan.id)] == [1, 3]

        await client.delete_attachment(SLUG, plan.id)
        with pytest.raises(NotFoundError):
            await client.get_attachment(SLUG, plan.id)

        spec = by_name["approved-spec.pdf"]  # no update right
        with pytest.raises(ForbiddenError):
            await client.update_attachment(SLUG, spec.id, tag="x")


async def test_uploads_round_trip(emulator: Emulator, tmp_path: Path) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    content = bytes(range(256)) * 5000 + b"tail"
    name = 'Grundriß – Übersicht "A".dat'
    progress: list[int] = []
    async with connect(emulator) as client:
        created = await client.create_attachment(
            SLUG,
            pid,
            write(tmp_path, "src1", content),
            file_name=name,
            content_type="application/x-test",
            classification="Plan",
            tag="Ä-1",
            progress=progress.append,
        )
        assert created.file_name == name and created.size == len(content)
        assert created.type == "application/x-test"
        assert (created.classification, created.tag) == ("Plan", "Ä-1")
        assert progress[-1] == len(content)
        assert await read_all(client, created.id) == content

        v2_content = content[::-1]
        v2 = await client.create_version(
            SLUG,
            created.id,
            write(tmp_path, "src2", v2_content),
            file_name=name,
            content_type="application/x-test",
            known_version=created.version,
        )
        assert v2.version == created.version + 1 and v2.size == len(v2_content)
        assert await read_all(client, created.id) == v2_content
        assert await read_all(client, created.id, version=created.version) == content

        replaced = await client.replace_content(
            SLUG,
            created.id,
            write(tmp_path, "src3", b"short"),
            file_name=name,
            content_type="text/plain",
        )
        assert replaced.size == 5
        assert await read_all(client, created.id) == b"short"

        empty = await client.create_attachment(
            SLUG,
            pid,
            write(tmp_path, "empty", b""),
            file_name="empty.txt",
            content_type="text/plain",
        )
        assert empty.size == 0
        assert await read_all(client, empty.id) == b""

    stats = emulator.stats()["requests"]
    assert stats["POST /v2/{slug}/projects/{pid}/attachments"] == {"201": 2}
    assert stats["POST /v2/{slug}/attachments/{id}/versions"] == {"201": 1}


async def test_quota_refusal_is_forbidden(emulator: Emulator, tmp_path: Path) -> None:
    pid = emulator.project_id("acme-build", "Bridge Renovation")
    async with connect(emulator) as client:
        with pytest.raises(ForbiddenError) as info:
            await client.create_attachment(
                "acme-build",
                pid,
                write(tmp_path, "big", b"\0" * (2 << 20)),
                file_name="big.bin",
                content_type="application/octet-stream",
            )
    assert "\n" not in info.value.body and 0 < len(info.value.body) <= 200
    assert all(d["fileName"] != "big.bin" for d in emulator.attachments("acme-build", pid))


async def test_folders(emulator: Emulator, tmp_path: Path) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    async with connect(emulator) as client:
        tree = await client.get_folders(SLUG, pid)
        drawings = next(n for n in tree if n.name == "Drawings")
        assert drawings.is_folder and drawings.parent is None
        details = next(n for n in drawings.children if n.name == "Details")
        files = {c.name for c in details.children if not c.is_folder}
        assert files == {"detail-01.png", "detail-02.txt"}

        top = await client.create_folder(SLUG, pid, "Neu Ordner", None)
        assert top.name == "Neu Ordner" and top.is_folder
        sub = await client.create_folder(SLUG, pid, "Sub", top.id)
        assert sub.parent == top.id

        doc = await client.create_attachment(
            SLUG,
            pid,
            write(tmp_path, "f", b"in a folder"),
            file_name="foldered.txt",
            content_type="text/plain",
            folder_id=sub.id,
        )
        tree = await client.get_folders(SLUG, pid)
        new_top = next(n for n in tree if n.id == top.id)
        new_sub = next(n for n in new_top.children if n.id == sub.id)
        assert [c.id for c in new_sub.children] == [doc.id]

        with pytest.raises(ConflictError):
            await client.delete_folder(SLUG, sub.id)
        await client.delete_attachment(SLUG, doc.id)
        await client.delete_folder(SLUG, sub.id)
        await client.delete_folder(SLUG, top.id)
        assert all(n.id != top.id for n in await client.get_folders(SLUG, pid))


async def test_range_downloads(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    att = emulator.attachment(SLUG, pid, "schedule.xlsx")
    whole = emulator.download(SLUG, att["id"])
    async with connect(emulator) as client:
        async with client.open_download(SLUG, att["id"]) as dl:
            assert (dl.start, dl.length, dl.total_size) == (0, len(whole), len(whole))
            assert dl.range_supported and dl.etag
            assert b"".join([c async for c in dl.chunks()]) == whole
        async with client.open_download(SLUG, att["id"], start=100, end=300) as dl:
            assert (dl.start, dl.length, dl.total_size, dl.status) == (100, 200, len(whole), 206)
            assert b"".join([c async for c in dl.chunks()]) == whole[100:300]
        async with client.open_download(SLUG, att["id"], start=len(whole) - 5) as dl:
            assert b"".join([c async for c in dl.chunks()]) == whole[-5:]
        v1 = emulator.download(SLUG, att["id"], version=1)
        async with client.open_download(SLUG, att["id"], version=1, start=3) as dl:
            assert b"".join([c async for c in dl.chunks()]) == v1[3:]
        with pytest.raises(StatusError) as info:
            async with client.open_download(SLUG, att["id"], start=len(whole) + 10):
                pass
        assert info.value.status == 416
        # Leaving the loop early is fine.
        async with client.open_download(SLUG, att["id"]) as dl:
            async for _chunk in dl.chunks():
                break
        with pytest.raises(ValueError):
            client.open_download(SLUG, att["id"], start=10, end=10)
        denied = emulator.attachment(SLUG, pid, "confidential.pdf")
        with pytest.raises(ForbiddenError):
            await read_all(client, denied["id"])


async def test_parallel_range_downloads_use_their_own_connections(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, OFFICE)
    size = 8 << 20
    blob = emulator.admin(
        "POST", f"/teams/{SLUG}/projects/{pid}/blob", params={"fileName": "par.bin", "size": size}
    )
    whole = emulator.download(SLUG, blob["id"])
    parts = 16
    step = size // parts
    results: dict[int, bytes] = {}
    async with connect(emulator) as client:
        opened = trio.Event()
        open_count = 0

        async def fetch(i: int) -> None:
            nonlocal open_count
            async with client.open_download(
                SLUG, blob["id"], start=i * step, end=(i + 1) * step
            ) as dl:
                # Every range holds its connection at the same time as all the others.
                open_count += 1
                if open_count == parts:
                    opened.set()
                await opened.wait()
                results[i] = b"".join([c async for c in dl.chunks()])

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(parts):
                    nursery.start_soon(fetch, i)
    assert b"".join(results[i] for i in range(parts)) == whole


async def test_no_range_server(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--no-range")
    pid = emu.project_id(SLUG, OFFICE)
    att = emu.attachment(SLUG, pid, "schedule.xlsx")
    whole = emu.download(SLUG, att["id"])
    async with connect(emu) as client:
        async with client.open_download(SLUG, att["id"], start=100, end=200) as dl:
            assert dl.start == 0 and dl.status == 200 and not dl.range_supported
            assert dl.total_size == len(whole)
            data = b"".join([c async for c in dl.chunks()])
        assert data == whole  # the client can skip to where it wanted
        assert await read_all(client, att["id"], start=100, end=200) == whole[100:200]
        assert await read_all(client, att["id"], start=1000) == whole[1000:]


async def test_bad_token_is_unauthorized(emulator: Emulator) -> None:
    async with BimplusClient(emulator.url, StaticToken("not-a-valid-token")) as client:
        with pytest.raises(UnauthorizedError) as info:
            await client.get_teams()
    assert info.value.status == 401
    # One try, no refresh possible, no retries.
    assert emulator.count("GET /v2/teams", 401) == 1


async def test_quirks_mode_parses(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--quirks")
    async with connect(emu) as client:
        teams = await client.get_teams()
        assert teams
        seen_versions = 0
        for team in teams:
            for project in await client.get_projects(team.slug):
                await client.get_project(team.slug, project.id)
                await client.get_folders(team.slug, project.id)
                for att in await client.list_attachments(team.slug, project.id):
                    assert att.created_at is not None and att.version >= 1
                    versions = await client.list_versions(team.slug, att.id)
                    assert versions[-1].version == att.version
                    seen_versions += len(versions)
        assert seen_versions > 20
        assert len(await client.get_all_projects()) >= 5


async def test_retries_under_failures(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--fail-rate", "0.3", "--fault-seed", "7")
    async with connect(emu, retries=10) as client:
        # The lookups themselves already go through the failures.
        pid = next(p.id for p in await client.get_projects(SLUG) if p.name == OFFICE)
        docs = await client.list_attachments(SLUG, pid)
        plan = next(d for d in docs if d.file_name == "plan.pdf")
        emu.reset_stats()
        for _ in range(25):
            assert await client.get_attachment(SLUG, plan.id)
            assert len(await client.list_versions(SLUG, plan.id)) == 3
    stats = emu.stats()["requests"]
    gets = stats["GET /v2/{slug}/attachments/{id}"]
    assert gets["200"] == 25
    failures = sum(n for s, n in gets.items() if s.startswith("5"))
    failures += sum(
        n for s, n in stats["GET /v2/{slug}/attachments/{id}/versions"].items() if s.startswith("5")
    )
    assert failures >= 5


async def test_retries_under_throttling(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--throttle-rate", "0.3", "--retry-after", "0", "--fault-seed", "11")
    emu.reset_stats()
    async with connect(emu, retries=10, backoff_base=30.0) as client:
        # backoff_base is huge: only honouring Retry-After: 0 keeps this test fast.
        with trio.fail_after(60):
            for _ in range(50):
                assert await client.get_teams()
    per_status = emu.stats()["requests"]["GET /v2/teams"]
    assert per_status["200"] == 50 and per_status.get("429", 0) >= 5


async def test_reset_mid_download_is_detected(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory("--fault-seed", "3")
    pid = emu.project_id(SLUG, OFFICE)
    blob = emu.admin(
        "POST", f"/teams/{SLUG}/projects/{pid}/blob", params={"fileName": "r.bin", "size": 3 << 20}
    )
    whole = emu.download(SLUG, blob["id"])
    emu.set_faults(reset_rate=1.0, routes=["GET /v2/{slug}/attachments/{id}/download"])
    async with connect(emu) as client:
        for _ in range(5):
            got = bytearray()
            with pytest.raises(IncompleteBodyError):
                async with client.open_download(SLUG, blob["id"]) as dl:
                    async for chunk in dl.chunks():
                        got += chunk
            assert len(got) < len(whole) and bytes(got) == whole[: len(got)]
        # download_to resumes through the resets when they are not every time.
        emu.set_faults(reset_rate=0.5)
        assert await read_all(client, blob["id"]) == whole


async def test_uploads_under_resets_never_duplicate(
    emulator_factory: Callable[..., Emulator], tmp_path: Path
) -> None:
    emu = emulator_factory("--fault-seed", "5")
    pid = emu.project_id(SLUG, "Residential Complex")
    base = emu.attachment(SLUG, pid, "budget.xlsx")
    # Resets only on the uploads, so that the checks below see the server as it is.
    emu.set_faults(
        reset_rate=0.4,
        routes=[
            "POST /v2/{slug}/attachments/{id}/versions",
            "POST /v2/{slug}/projects/{pid}/attachments",
        ],
    )
    emu.reset_stats()
    results = []
    async with connect(emu, retries=12) as client:
        known = int(base["version"])
        for i in range(8):
            data = hashlib.sha256(str(i).encode()).digest() * (1000 + i)
            version = await client.create_version(
                SLUG,
                base["id"],
                write(tmp_path, f"v{i}", data),
                file_name="budget.xlsx",
                content_type="application/vnd.ms-excel",
                known_version=known,
            )
            assert version.version > known and version.size == len(data)
            known = version.version
            results.append((version.version, data))
        created: list[tuple[str, str, bytes]] = []
        for i in range(6):
            data = f"document {i}".encode() * 50
            doc = await client.create_attachment(
                SLUG,
                pid,
                write(tmp_path, f"d{i}", data),
                file_name=f"new-{i}.txt",
                content_type="text/plain",
            )
            created.append((doc.id, f"new-{i}.txt", data))
    emu.set_faults(reset_rate=0.0)
    versions = emu.api("GET", f"/{SLUG}/attachments/{base['id']}/versions")
    # Exactly one new version per call, each with the content of its call.
    assert len(versions) == int(base["version"]) + 8
    for number, data in results:
        assert emu.download(SLUG, base["id"], version=number) == data
    names = [d["fileName"] for d in emu.attachments(SLUG, pid)]
    for aid, name, data in created:
        assert names.count(name) == 1
        assert emu.download(SLUG, aid) == data
    stats = emu.stats()["requests"]
    posted = stats["POST /v2/{slug}/attachments/{id}/versions"]
    # The resets did happen (answers or bodies cut), and were survived.
    assert sum(posted.values()) > 8
    assert stats["POST /v2/{slug}/projects/{pid}/attachments"].get("reset", 0) >= 1
