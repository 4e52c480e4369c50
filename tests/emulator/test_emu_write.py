"""Routes that change state: uploads, versions, metadata, deletion, release, folders, rights,
quotas. Each test gets a fresh emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.emulator import Emulator, multipart_body

SLUG = "bimfs-demo"


def blob_count(emu: Emulator) -> int:
    return len(list(Path(emu.data_dir, "blobs").iterdir()))


def tmp_count(emu: Emulator) -> int:
    return len(list(Path(emu.data_dir, "tmp").iterdir()))


def upload(
    emu: Emulator, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> httpx.Response:
    return emu.request(method, path, content=body, headers=headers)


def test_create_document_from_documented_multipart(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    body, headers = multipart_body(
        "TestFile.xml",
        b"<xml>\r\n--not a boundary\r\n</xml>",
        name="TestFile",
        content_type="application/xml",
        classification="Report",
        tag="ABCDE",
    )
    resp = upload(emulator, f"/{SLUG}/projects/{pid}/attachments", body, headers)
    assert resp.status_code == 201
    att = resp.json()
    assert att["fileName"] == "TestFile.xml"
    assert att["name"] == "TestFile"
    assert att["type"] == "application/xml"
    assert att["classification"] == "Report" and att["tag"] == "ABCDE"
    assert att["version"] == 1 and att["size"] == len(b"<xml>\r\n--not a boundary\r\n</xml>")
    assert att["creator"]["email"] == "demo@bimfs.test"
    assert att["changedBy"]["email"] == "demo@bimfs.test"
    assert emulator.download(SLUG, att["id"]) == b"<xml>\r\n--not a boundary\r\n</xml>"
    assert emulator.attachment(SLUG, pid, "TestFile.xml")["id"] == att["id"]
    project = emulator.api("GET", f"/{SLUG}/projects/{pid}")
    assert project["attachmentCount"] == 16


def test_create_with_a_generic_encoder_and_odd_names(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Empty Project")
    for name in ("Plan A/B – Übersicht.pdf", "平面図.txt", "a" * 300 + ".txt"):
        att = emulator.upload(SLUG, pid, name, b"content", content_type="text/plain")
        assert att["fileName"] == name
    # filename* (RFC 5987) as some encoders write it.
    body = (
        b"--b0\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''caf%C3%A9.txt\r\n"
        b"Content-Type: text/plain\r\n\r\nx\r\n--b0--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b0"}
    resp = upload(emulator, f"/{SLUG}/projects/{pid}/attachments", body, headers)
    assert resp.status_code == 201 and resp.json()["fileName"] == "café.txt"


def test_only_the_first_part_is_used(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Empty Project")
    files = [
        ("a", ("first.txt", b"first", "text/plain")),
        ("b", ("second.txt", b"second", "text/plain")),
    ]
    att = emulator.api("POST", f"/{SLUG}/projects/{pid}/attachments", files=files)
    assert att["fileName"] == "first.txt"
    assert emulator.download(SLUG, att["id"]) == b"first"
    assert len(emulator.attachments(SLUG, pid)) == 1


def test_bad_uploads_get_400_and_leave_nothing(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Empty Project")
    path = f"/{SLUG}/projects/{pid}/attachments"
    blobs = blob_count(emulator)
    good, headers = multipart_body("x.txt", b"payload")
    cases: list[tuple[bytes, dict[str, str]]] = [
        (good, {"Content-Type": "multipart/form-data"}),  # no boundary
        (good, {"Content-Type": "application/octet-stream"}),
        (b"--bimfs-test-boundary-7d3a--\r\n", headers),  # no part
        (multipart_body("", b"x")[0], headers),  # empty filename
        (multipart_body("x.txt", b"x", content_type=None)[0], headers),
        (good.replace(b'name="file"; ', b""), headers),  # no name
        (good[:-40], headers),  # truncated
        (b"", headers),
    ]
    for body, hdrs in cases:
        resp = upload(emulator, path, body, hdrs)
        assert resp.status_code == 400, body[:80]
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.text.strip()
    assert emulator.attachments(SLUG, pid) == []
    assert blob_count(emulator) == blobs
    assert tmp_count(emulator) == 0


def test_upload_into_a_folder(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    tree = emulator.api(
        "GET", f"/{SLUG}/projects/{pid}/structures", params={"type": "DocumentFolder"}
    )
    details = tree[0]["children"][0]
    body, headers = multipart_body("detail-03.txt", b"three", content_type="text/plain")
    resp = emulator.request(
        "POST",
        f"/{SLUG}/objects/{pid}/attachments",
        params={"DocumentFolderId": details["id"]},
        content=body,
        headers=headers,
    )
    assert resp.status_code == 201
    # The same through projects/<pid>/attachments.
    resp2 = emulator.request(
        "POST",
        f"/{SLUG}/projects/{pid}/attachments",
        params={"DocumentFolderId": tree[1]["id"]},
        content=body,
        headers=headers,
    )
    assert resp2.status_code == 201
    tree = emulator.api("GET", f"/{SLUG}/projects/{pid}/structures")
    assert [c["name"] for c in tree[0]["children"][0]["children"]] == [
        "detail-01.png",
        "detail-02.txt",
        "detail-03.txt",
    ]
    assert [c["name"] for c in tree[1]["children"]] == ["detail-03.txt"]
    names = [a["fileName"] for a in emulator.attachments(SLUG, pid)]
    assert names.count("detail-03.txt") == 2
    bad = emulator.request(
        "POST",
        f"/{SLUG}/projects/{pid}/attachments",
        params={"DocumentFolderId": "no-such-folder"},
        content=body,
        headers=headers,
    )
    assert bad.status_code == 404


def test_versions_lifecycle(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    aid = notes["id"]
    base = f"/{SLUG}/attachments/{aid}"
    body, headers = multipart_body("notes.txt", b"version five", content_type="text/plain")
    resp = upload(emulator, f"{base}/versions", body, headers)
    assert resp.status_code == 201
    v5 = resp.json()
    assert v5["id"] == aid and v5["version"] == 5 and v5["size"] == 12
    assert v5["hash"] != notes["hash"]
    assert v5["changed"] > notes["changed"]
    assert v5["createdAt"] == notes["createdAt"]
    assert emulator.api("GET", base) == v5
    listed = emulator.api("GET", f"{base}/versions")
    assert [v["version"] for v in listed] == [1, 2, 3, 4, 5]
    assert emulator.download(SLUG, aid, 5) == b"version five"
    old4 = emulator.download(SLUG, aid, 4)

    # Deleting the latest makes the previous one current; numbers are never reused.
    assert emulator.request("DELETE", f"{base}/versions/5").status_code == 200
    assert emulator.api("GET", base)["version"] == 4
    assert emulator.download(SLUG, aid) == old4
    assert emulator.request("DELETE", f"{base}/versions/2").status_code == 200
    assert [v["version"] for v in emulator.api("GET", f"{base}/versions")] == [1, 3, 4]
    assert emulator.request("GET", f"{base}/versions/2/download").status_code == 404
    assert emulator.request("DELETE", f"{base}/versions/2").status_code == 404
    assert emulator.request("DELETE", f"{base}/versions/x").status_code == 404
    again = upload(emulator, f"{base}/versions", body, headers).json()
    assert again["version"] == 6

    for n in (1, 3, 4):
        assert emulator.request("DELETE", f"{base}/versions/{n}").status_code == 200
    last = emulator.request("DELETE", f"{base}/versions/6")
    assert last.status_code == 409 and "only version" in last.text
    assert emulator.api("GET", base)["version"] == 6


def test_put_metadata_and_content(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    path = f"/{SLUG}/attachments/{plan['id']}"
    renamed = emulator.api("PUT", path, json={"fileName": "plan-final.pdf", "tag": "B-7"})
    assert renamed["fileName"] == "plan-final.pdf" and renamed["tag"] == "B-7"
    assert renamed["classification"] == "Plan" and renamed["type"] == "application/pdf"
    assert renamed["version"] == 3 and renamed["hash"] == plan["hash"]
    typed = emulator.api("PUT", path, json={"type": "application/x-pdf", "classification": ""})
    assert typed["type"] == "application/x-pdf" and typed["classification"] == ""
    assert typed["fileName"] == "plan-final.pdf"
    for bad in ({"fileName": ""}, {"fileName": 3}, [1]):
        assert emulator.request("PUT", path, json=bad).status_code == 400
    assert (
        emulator.request(
            "PUT", path, content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )

    body, headers = multipart_body(
        "plan-final.pdf", b"%PDF-1.4 replaced", content_type="application/pdf"
    )
    replaced = upload(emulator, path, body, headers, method="PUT")
    assert replaced.status_code == 200
    data = replaced.json()
    assert data["version"] == 3 and data["hash"] != plan["hash"] and data["size"] == 17
    assert emulator.download(SLUG, plan["id"]) == b"%PDF-1.4 replaced"
    assert len(emulator.api("GET", f"{path}/versions")) == 3


def test_delete_document_removes_its_blobs(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    notes = emulator.attachment(SLUG, pid, "notes.txt")
    before = blob_count(emulator)
    assert emulator.request("DELETE", f"/{SLUG}/attachments/{notes['id']}").status_code == 200
    assert blob_count(emulator) == before - 4
    assert emulator.request("GET", f"/{SLUG}/attachments/{notes['id']}").status_code == 404
    assert emulator.request("DELETE", f"/{SLUG}/attachments/{notes['id']}").status_code == 404


def test_release(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    shared = emulator.api("PUT", f"/{SLUG}/attachments/{plan['id']}/release", json={})
    assert shared["release"] is True and shared["sharedDate"]
    assert shared["sharedBy"]["email"] == "demo@bimfs.test"
    emulator.admin("PUT", f"/attachments/{plan['id']}/rights", json={"share": False})
    resp = emulator.request("PUT", f"/{SLUG}/attachments/{plan['id']}/release", json={})
    assert resp.status_code == 403


def test_rights_are_enforced(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    spec = emulator.attachment(SLUG, pid, "approved-spec.pdf")
    base = f"/{SLUG}/attachments/{spec['id']}"
    body, headers = multipart_body("approved-spec.pdf", b"new", content_type="application/pdf")
    assert upload(emulator, f"{base}/versions", body, headers).status_code == 403
    assert upload(emulator, base, body, headers, method="PUT").status_code == 403
    assert emulator.request("PUT", base, json={"tag": "x"}).status_code == 403
    assert emulator.request("DELETE", base).status_code == 403
    assert emulator.request("DELETE", f"{base}/versions/1").status_code == 403
    assert emulator.request("GET", f"{base}/download").status_code == 200
    assert len(emulator.api("GET", f"{base}/versions")) == 1

    # Rights changed at run time take effect at once.
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    emulator.admin(
        "PUT", f"/attachments/{plan['id']}/rights", json={"download": False, "delete": False}
    )
    assert emulator.request("GET", f"/{SLUG}/attachments/{plan['id']}/download").status_code == 403
    assert emulator.request("DELETE", f"/{SLUG}/attachments/{plan['id']}").status_code == 403
    rights = emulator.api("GET", f"/{SLUG}/attachments/{plan['id']}")["rights"]
    assert rights == {"update": True, "share": True, "delete": False, "download": False}


def test_read_only_project(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Archive 2019")
    report = emulator.attachment(SLUG, pid, "final-report.pdf")
    base = f"/{SLUG}/attachments/{report['id']}"
    body, headers = multipart_body("x.pdf", b"x", content_type="application/pdf")
    assert upload(emulator, f"/{SLUG}/projects/{pid}/attachments", body, headers).status_code == 403
    assert upload(emulator, f"/{SLUG}/objects/{pid}/attachments", body, headers).status_code == 403
    assert upload(emulator, f"{base}/versions", body, headers).status_code == 403
    assert upload(emulator, base, body, headers, method="PUT").status_code == 403
    assert emulator.request("PUT", base, json={"fileName": "y.pdf"}).status_code == 403
    assert emulator.request("DELETE", base).status_code == 403
    assert emulator.request("DELETE", f"{base}/versions/1").status_code == 403
    folder = {"name": "New", "parent": None, "type": "DocumentFolder"}
    assert (
        emulator.request("POST", f"/{SLUG}/projects/{pid}/structures", json=folder).status_code
        == 403
    )
    handover = emulator.api("GET", f"/{SLUG}/projects/{pid}/structures")[0]
    assert emulator.request("DELETE", f"/{SLUG}/structures/{handover['id']}").status_code == 403
    assert emulator.download(SLUG, report["id"]).startswith(b"%PDF")
    # Granting write access at run time.
    emulator.admin("PUT", f"/projects/{pid}", json={"hasWriteAccess": True})
    assert upload(emulator, f"{base}/versions", body, headers).status_code == 201


def test_folders(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Empty Project")
    path = f"/{SLUG}/projects/{pid}/structures"
    top = emulator.request(
        "POST", path, json={"name": "Plans", "parent": None, "type": "DocumentFolder"}
    )
    assert top.status_code == 201
    node = top.json()
    assert node["name"] == "Plans" and node["type"] == "DocumentFolder"
    assert node["parent"] is None and node["children"] == []
    sub = emulator.api(
        "POST", path, json={"name": "Old", "parent": node["id"], "type": "DocumentFolder"}
    )
    assert sub["parent"] == node["id"]
    dup = emulator.request(
        "POST", path, json={"name": "Old", "parent": node["id"], "type": "DocumentFolder"}
    )
    assert dup.status_code == 409
    # The same name elsewhere is fine.
    assert (
        emulator.request("POST", path, json={"name": "Old", "type": "DocumentFolder"}).status_code
        == 201
    )
    assert emulator.request("POST", path, json={"name": ""}).status_code == 400
    assert emulator.request("POST", path, json={"name": "x", "parent": "nope"}).status_code == 404
    assert (
        emulator.request("POST", path, json={"name": "x", "type": "Selection"}).status_code == 400
    )
    tree = emulator.api("GET", path, params={"type": "DocumentFolder"})
    assert [n["name"] for n in tree] == ["Plans", "Old"]
    assert [c["name"] for c in tree[0]["children"]] == ["Old"]

    assert emulator.request("DELETE", f"/{SLUG}/structures/{node['id']}").status_code == 409
    emulator.upload(SLUG, pid, "in-sub.txt", b"x", folder_id=sub["id"])
    assert emulator.request("DELETE", f"/{SLUG}/structures/{sub['id']}").status_code == 409
    doc = emulator.attachment(SLUG, pid, "in-sub.txt")
    emulator.api("DELETE", f"/{SLUG}/attachments/{doc['id']}")
    assert emulator.request("DELETE", f"/{SLUG}/structures/{sub['id']}").status_code == 200
    assert emulator.request("DELETE", f"/{SLUG}/structures/{node['id']}").status_code == 200
    assert emulator.request("DELETE", f"/{SLUG}/structures/{node['id']}").status_code == 404
    assert [n["name"] for n in emulator.api("GET", path)] == ["Old"]
    # A folder is reachable only through its own team.
    assert emulator.request("DELETE", f"/acme-build/structures/{tree[1]['id']}").status_code == 404


def _stream(parts: list[bytes]) -> Iterator[bytes]:
    yield from parts


def test_quota(emulator: Emulator) -> None:
    team = next(t for t in emulator.api("GET", "/teams") if t["slug"] == "acme-build")
    used = team["storageStats"]["usedStorage"]
    pid = emulator.project_id("acme-build", "Bridge Renovation")
    path = f"/acme-build/projects/{pid}/attachments"
    blobs = blob_count(emulator)
    big = b"\x00" * (1024 * 1024)

    # Refused from Content-Length up front.
    body, headers = multipart_body("big.bin", big)
    resp = upload(emulator, path, body, headers)
    assert resp.status_code == 403 and "quota" in resp.text

    # Refused on the real size when the length is not announced (chunked).
    head, tail = body[: body.index(b"\r\n\r\n") + 4], body[-30:]
    chunks = [head, *(big[i : i + 65536] for i in range(0, len(big), 65536)), tail]
    resp = emulator.request("POST", path, content=_stream(chunks), headers=headers)
    assert resp.status_code == 403 and "quota" in resp.text
    assert blob_count(emulator) == blobs and tmp_count(emulator) == 0

    # What fits is accepted, up to the byte.
    room = 1024 * 1024 - used
    fit = emulator.upload("acme-build", pid, "fits.bin", b"f" * room)
    assert fit["size"] == room
    after = next(t for t in emulator.api("GET", "/teams") if t["slug"] == "acme-build")
    assert after["storageStats"]["usedStorage"] == 1024 * 1024
    body, headers = multipart_body("one-more.bin", b"1")
    assert upload(emulator, path, body, headers).status_code == 403
    # New versions count too; replacing content frees the old version's size.
    ver_path = f"/acme-build/attachments/{fit['id']}/versions"
    assert upload(emulator, ver_path, body, headers).status_code == 403
    body, headers = multipart_body("fits.bin", b"small")
    assert (
        upload(
            emulator, f"/acme-build/attachments/{fit['id']}", body, headers, method="PUT"
        ).status_code
        == 200
    )

    emulator.admin("PUT", "/teams/acme-build", json={"totalStorage": 0})
    body, headers = multipart_body("big.bin", big)
    assert upload(emulator, path, body, headers).status_code == 201


def test_bulk_delete_route_deletes_everything(emulator: Emulator) -> None:
    """The documented call clients must never send really deletes every document."""
    pid = emulator.project_id(SLUG, "Residential Complex")
    assert emulator.request("DELETE", f"/{SLUG}/projects/{pid}/attachments").status_code == 200
    assert emulator.attachments(SLUG, pid) == []
    assert emulator.count("DELETE /v2/{slug}/projects/{pid}/attachments", 200) == 1


def test_admin_team_project_and_blob(emulator: Emulator) -> None:
    from bimfs.emulator.samples import pseudo_random_range

    team = emulator.admin(
        "POST", "/teams", json={"slug": "bench", "name": "Bench", "totalStorage": 10}
    )
    assert team["slug"] == "bench" and team["totalStorage"] == 10
    assert emulator.request("POST", "/_emulator/teams", json={"slug": "bench"}).status_code == 409
    project = emulator.admin(
        "POST", "/teams/bench/projects", json={"name": "P", "hasWriteAccess": True}
    )
    assert project["teamSlug"] == "bench" and project["hasWriteAccess"] is True
    size = 3 * 1024 * 1024 + 17
    att = emulator.admin(
        "POST",
        f"/teams/bench/projects/{project['id']}/blob",
        params={"fileName": "r.bin", "size": size, "seed": 5},
    )
    assert att["size"] == size and att["version"] == 1
    data = emulator.download("bench", att["id"])
    assert data == pseudo_random_range(5, 0, size)
    assert pseudo_random_range(5, 1024 * 1024 - 3, 10) == data[1024 * 1024 - 3 : 1024 * 1024 + 7]
    v2 = emulator.admin(
        "POST",
        f"/teams/bench/projects/{project['id']}/blob",
        params={"fileName": "r.bin", "size": 10, "seed": 6, "attachmentId": att["id"]},
    )
    assert v2["version"] == 2 and v2["id"] == att["id"]
    team = emulator.admin("PUT", "/teams/bench", json={"totalStorage": 0})
    assert team["storageStats"]["usedStorage"] == size + 10
    assert (
        emulator.request(
            "POST", "/_emulator/teams/bench/projects/x/blob?fileName=a&size=1"
        ).status_code
        == 404
    )
    bad = emulator.request("POST", f"/_emulator/teams/bench/projects/{project['id']}/blob?size=1")
    assert bad.status_code == 400


def test_support_helpers(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    readme = emulator.attachment(SLUG, pid, "README")
    made = emulator.new_version(SLUG, readme["id"], "README", b"third", content_type="text/plain")
    assert made["version"] == 3
    assert [v["version"] for v in emulator.versions(SLUG, readme["id"])] == [1, 2, 3]
    assert [f["name"] for f in emulator.folders(SLUG, pid)] == ["Drawings", "Empty Folder"]


def test_odd_inputs_never_give_500(emulator: Emulator) -> None:
    pid = emulator.project_id(SLUG, "Office Building")
    plan = emulator.attachment(SLUG, pid, "plan.pdf")
    base = f"/{SLUG}/attachments/{plan['id']}"
    assert (
        emulator.request("GET", f"{base}/versions/99999999999999999999/download").status_code == 404
    )
    assert emulator.request("DELETE", f"{base}/versions/-1").status_code == 404
    assert (
        emulator.request(
            "PUT", "/_emulator/teams/acme-build", json={"totalStorage": 2**70}
        ).status_code
        == 400
    )
    assert emulator.request("POST", "/_emulator/teams", json=[]).status_code == 400
    assert emulator.request("PUT", base, content=b"x" * (2 * 1024 * 1024)).status_code == 413
    assert emulator.request("POST", f"{base}/versions", content=b"plain").status_code == 400
    assert emulator.request("PUT", f"{base}/release", content=b"not json").status_code == 200
    assert emulator.count("GET /v2/{slug}/attachments/{id}/versions/{n}/download", 500) == 0
