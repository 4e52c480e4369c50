"""Read-only routes against the documented demo seed: shapes, status codes, contents."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import Emulator, start_emulator

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")

OFFICE_FILES = {
    "plan.pdf": 3,
    "model.ifc": 2,
    "site-photo.png": 1,
    "schedule.xlsx": 2,
    "notes.txt": 4,
    "costs.csv": 1,
    "README": 2,
    "archive.tar.gz": 2,
    "report.docx": 1,
    "confidential.pdf": 1,
    "approved-spec.pdf": 1,
    "ground-floor.pdf": 2,
    "first-floor.pdf": 1,
    "detail-01.png": 1,
    "detail-02.txt": 2,
}
USER_KEYS = {"id", "email", "firstname", "lastname", "company", "fullname", "displayname"}
ATTACHMENT_KEYS = {
    "id",
    "objectIds",
    "relatedId",
    "name",
    "fileName",
    "type",
    "size",
    "sizeMB",
    "createdAt",
    "creator",
    "changed",
    "changedBy",
    "attachmentType",
    "hash",
    "classification",
    "tag",
    "version",
    "rights",
    "release",
    "sharedDate",
    "sharedBy",
}


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator for the whole module: these tests do not change anything."""
    emulator = start_emulator(tmp_path_factory.mktemp("read") / "data")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def office(emu: Emulator) -> dict[str, dict[str, Any]]:
    pid = emu.project_id("bimfs-demo", "Office Building")
    return {a["fileName"]: a for a in emu.attachments("bimfs-demo", pid)}


def test_teams(emu: Emulator) -> None:
    teams = emu.api("GET", "/teams")
    assert [t["slug"] for t in teams] == ["bimfs-demo", "acme-build"]
    for team in teams:
        assert set(team) >= {"id", "slug", "name", "owner", "totalStorage", "storageStats"}
        assert team["status"] == "Active"
        assert team["dataStorageStatus"] == "Online"
        assert GUID.match(team["id"])
    demo, acme = teams
    assert demo["totalStorage"] == 0
    assert acme["totalStorage"] == 1048576
    # usedStorage is the sum of every stored version of every document of the team.
    total = 0
    for project in emu.api("GET", "/acme-build/projects"):
        for att in emu.attachments("acme-build", project["id"]):
            versions = emu.api("GET", f"/acme-build/attachments/{att['id']}/versions")
            total += sum(v["size"] for v in versions)
    assert acme["storageStats"] == {"usedStorage": total}
    assert 0 < total < 100_000


def test_projects(emu: Emulator) -> None:
    projects = emu.api("GET", "/bimfs-demo/projects")
    assert [p["name"] for p in projects] == [
        "Office Building",
        "Residential Complex",
        "Archive 2019",
        "Naming Edge Cases",
        "Empty Project",
    ]
    by_name = {p["name"]: p for p in projects}
    assert by_name["Archive 2019"]["hasWriteAccess"] is False
    assert by_name["Office Building"]["hasWriteAccess"] is True
    assert by_name["Office Building"]["attachmentCount"] == len(OFFICE_FILES)
    assert by_name["Empty Project"]["attachmentCount"] == 0
    for project in projects:
        assert project["teamSlug"] == "bimfs-demo"
        assert DATE.match(project["created"]) and DATE.match(project["changed"])
        assert set(project) >= {"id", "shortDescr", "rights", "size", "attachmentCount"}
    one = emu.api("GET", f"/bimfs-demo/projects/{by_name['Archive 2019']['id']}")
    assert one == by_name["Archive 2019"]
    everything = emu.api("GET", "/projects")
    assert {p["teamSlug"] for p in everything} == {"bimfs-demo", "acme-build"}
    assert len(everything) == len(projects) + 2


def test_not_found(emu: Emulator) -> None:
    pid = emu.project_id("acme-build", "Bridge Renovation")
    assert emu.request("GET", "/no-such-team/projects").status_code == 404
    assert emu.request("GET", f"/bimfs-demo/projects/{pid}").status_code == 404  # other team
    assert emu.request("GET", "/bimfs-demo/attachments/nope").status_code == 404
    assert emu.request("GET", "/bimfs-demo/attachments/nope/download").status_code == 404
    resp = emu.request("GET", "/bimfs-demo/no/such/route")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/plain")
    assert emu.request("PATCH", "/teams").status_code == 405


def test_attachment_list_shape(emu: Emulator, office: dict[str, dict[str, Any]]) -> None:
    assert set(office) == set(OFFICE_FILES)
    pid = emu.project_id("bimfs-demo", "Office Building")
    for name, att in office.items():
        assert set(att) == ATTACHMENT_KEYS, name
        assert att["version"] == OFFICE_FILES[name]
        assert isinstance(att["release"], bool)
        assert GUID.match(att["id"]) and GUID.match(att["hash"])
        assert re.match(r"^\d+,\d\d$", att["sizeMB"])
        assert DATE.match(att["createdAt"]) and DATE.match(att["changed"])
        assert set(att["creator"]) >= USER_KEYS
        assert set(att["rights"]) == {"update", "share", "delete", "download"}
        assert att["relatedId"] == pid and att["objectIds"] == [pid]
    assert office["plan.pdf"]["classification"] == "Plan"
    assert office["plan.pdf"]["tag"] == "A-101"
    assert office["plan.pdf"]["type"] == "application/pdf"
    assert office["model.ifc"]["attachmentType"] == "Ifc"
    assert office["plan.pdf"]["attachmentType"] == "Document"
    assert office["costs.csv"]["classification"] == "Report"
    assert office["confidential.pdf"]["rights"]["download"] is False
    assert office["approved-spec.pdf"]["rights"]["update"] is False
    assert office["approved-spec.pdf"]["rights"]["delete"] is False
    report = office["report.docx"]
    assert report["release"] is True and report["sharedDate"]
    assert report["sharedBy"]["email"] == "anna.berger@bimfs.test"
    assert office["plan.pdf"]["release"] is False and office["plan.pdf"]["sharedBy"] is None


def test_attachment_filters(emu: Emulator, office: dict[str, dict[str, Any]]) -> None:
    pid = emu.project_id("bimfs-demo", "Office Building")
    base = f"/bimfs-demo/projects/{pid}/attachments"
    only = emu.api("GET", base, params={"projectOnly": "true"})
    assert {a["fileName"] for a in only} == set(OFFICE_FILES)
    ifc = emu.api("GET", base, params={"attachmentType": "Ifc"})
    assert [a["fileName"] for a in ifc] == ["model.ifc"]
    docs = emu.api("GET", base, params={"attachmentType": "Document", "projectOnly": "true"})
    assert len(docs) == len(OFFICE_FILES) - 1


def test_single_attachment_and_versions(emu: Emulator, office: dict[str, dict[str, Any]]) -> None:
    plan = office["plan.pdf"]
    assert emu.api("GET", f"/bimfs-demo/attachments/{plan['id']}") == plan
    versions = emu.api("GET", f"/bimfs-demo/attachments/{plan['id']}/versions")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert {v["id"] for v in versions} == {plan["id"]}
    assert len({v["hash"] for v in versions}) == 3
    assert versions[-1] == plan
    assert [v["changedBy"]["email"] for v in versions] == [
        "anna.berger@bimfs.test",
        "demo@bimfs.test",
        "anna.berger@bimfs.test",
    ]
    assert versions[0]["changed"] < versions[1]["changed"] < versions[2]["changed"]
    contents = [emu.download("bimfs-demo", plan["id"], v["version"]) for v in versions]
    assert [len(c) for c in contents] == [v["size"] for v in versions]
    assert len(set(contents)) == 3
    assert emu.download("bimfs-demo", plan["id"]) == contents[-1]
    missing = emu.request("GET", f"/bimfs-demo/attachments/{plan['id']}/versions/9/download")
    assert missing.status_code == 404


def test_seeded_files_are_valid(emu: Emulator, office: dict[str, dict[str, Any]]) -> None:
    def get(name: str) -> bytes:
        return emu.download("bimfs-demo", office[name]["id"])

    pdf = get("plan.pdf")
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split()[0])
    assert pdf[xref:].startswith(b"xref")
    assert get("site-photo.png").startswith(b"\x89PNG\r\n\x1a\n")
    for name in ("schedule.xlsx", "report.docx"):
        with zipfile.ZipFile(io.BytesIO(get(name))) as zf:
            assert zf.testzip() is None
            assert "[Content_Types].xml" in zf.namelist()
    with tarfile.open(fileobj=io.BytesIO(get("archive.tar.gz")), mode="r:gz") as tar:
        assert tar.getnames() == ["archive/readme.txt", "archive/data.csv"]
    ifc = get("model.ifc")
    assert ifc.startswith(b"ISO-10303-21;") and b"IFCPROJECT" in ifc
    assert get("costs.csv").startswith(b"Trade,Budget EUR")
    assert get("notes.txt").decode().count("\n") == 12


def test_document_folders(emu: Emulator) -> None:
    pid = emu.project_id("bimfs-demo", "Office Building")
    tree = emu.api(
        "GET", f"/bimfs-demo/projects/{pid}/structures", params={"type": "DocumentFolder"}
    )
    assert [n["name"] for n in tree] == ["Drawings", "Empty Folder"]
    drawings, empty = tree
    assert drawings["type"] == "DocumentFolder" and drawings["parent"] is None
    assert empty["children"] == []
    kinds = [(c["type"], c["name"]) for c in drawings["children"]]
    assert kinds == [
        ("DocumentFolder", "Details"),
        ("Attachment", "ground-floor.pdf"),
        ("Attachment", "first-floor.pdf"),
    ]
    details = drawings["children"][0]
    assert details["parent"] == drawings["id"]
    assert [c["name"] for c in details["children"]] == ["detail-01.png", "detail-02.txt"]
    attachment_node = details["children"][0]
    assert attachment_node["parent"] == details["id"] and attachment_node["children"] == []
    detail = emu.api("GET", f"/bimfs-demo/attachments/{attachment_node['id']}")
    assert detail["fileName"] == "detail-01.png"
    assert emu.api("GET", f"/bimfs-demo/projects/{pid}/structures", params={"type": "Other"}) == []
    other = emu.project_id("bimfs-demo", "Empty Project")
    assert emu.api("GET", f"/bimfs-demo/projects/{other}/structures") == []


def test_naming_edge_cases(emu: Emulator) -> None:
    pid = emu.project_id("bimfs-demo", "Naming Edge Cases")
    docs = emu.attachments("bimfs-demo", pid)
    names = [d["fileName"] for d in docs]
    assert names.count("minutes.txt") == 2
    first, second = (d for d in docs if d["fileName"] == "minutes.txt")
    assert first["createdAt"] < second["createdAt"]
    assert emu.download("bimfs-demo", first["id"]) == b"first minutes.txt\n"
    for expected in (
        "Section A/B.pdf",
        "平面図 1F.txt",
        "versions",
        "..",
        "Protokoll\x07Besprechung.txt",
    ):
        assert expected in names
    assert any(len(n.encode()) > 255 for n in names)
    assert "Grundriss Übersicht – Erdgeschoß.txt" in names


def test_read_only_project_and_other_team(emu: Emulator) -> None:
    pid = emu.project_id("bimfs-demo", "Archive 2019")
    for att in emu.attachments("bimfs-demo", pid):
        assert att["rights"] == {"update": False, "share": True, "delete": False, "download": True}
    bridge = emu.project_id("acme-build", "Bridge Renovation")
    names = {a["fileName"] for a in emu.attachments("acme-build", bridge)}
    assert names == {"bridge.ifc", "inspection-report.pdf", "photo-001.png", "photo-002.png"}
    att = emu.attachment("acme-build", bridge, "bridge.ifc")
    # A document is only reachable through its own team's slug.
    assert emu.request("GET", f"/bimfs-demo/attachments/{att['id']}").status_code == 404


def test_no_download_right(emu: Emulator, office: dict[str, dict[str, Any]]) -> None:
    aid = office["confidential.pdf"]["id"]
    resp = emu.request("GET", f"/bimfs-demo/attachments/{aid}/download")
    assert resp.status_code == 403 and resp.text.strip()
    assert (
        emu.request("GET", f"/bimfs-demo/attachments/{aid}/versions/1/download").status_code == 403
    )
    # Metadata stays readable.
    assert emu.request("GET", f"/bimfs-demo/attachments/{aid}/versions").status_code == 200


def test_token_sources(emu: Emulator) -> None:
    assert emu.request("GET", "/teams", auth=False).status_code == 401
    bad = emu.request("GET", "/teams", auth=False, headers={"Authorization": "BimPlus wrong"})
    assert bad.status_code == 401 and bad.headers["content-type"].startswith("text/plain")
    for header in (f"Bearer {emu.token}", f"bimplus {emu.token}"):
        assert (
            emu.request("GET", "/teams", auth=False, headers={"Authorization": header}).status_code
            == 200
        )
    ok = emu.request("GET", "/teams", auth=False, params={"api-token": emu.token})
    assert ok.status_code == 200
    # Every /v2 route needs a token, even unknown ones.
    assert emu.request("GET", "/bimfs-demo/nothing", auth=False).status_code == 401
    assert emu.request("GET", "/v2/.well-known/openid-configuration", auth=False).status_code == 200


def test_blob_files_match_versions(emu: Emulator) -> None:
    """Every stored version has exactly one blob file; nothing else is in blobs/."""
    count = 0
    for team in emu.api("GET", "/teams"):
        for project in emu.api("GET", f"/{team['slug']}/projects"):
            for att in emu.attachments(team["slug"], project["id"]):
                count += att["version"]
    assert len(list(Path(emu.data_dir, "blobs").iterdir())) == count
