"""Seed data: ``--seed demo`` (two teams of realistic projects and documents) and ``--seed large``
(demo plus a team of 50 x 100 small documents for listing benchmarks).

Ids, hashes, contents and times are deterministic, so that two fresh data dirs hold the same
seed. docs/emulator.md lists exactly what is seeded; keep the two in step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bimfs.emulator import samples
from bimfs.emulator.storage import DEMO_USER_ID, Store

BASE_TIME = datetime(2024, 3, 4, 9, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
_NS = uuid.UUID("8d6f3c52-1a43-4c2e-9a59-5f0b8e1f2d70")

ANNA_ID = "0e7b5b8e-3d0c-4b1f-8a41-2f6c9d1e7a02"
TOM_ID = "a41f2c6d-9b7e-4e55-8c13-6d2e0f3b8c03"
USERS = {
    "demo": DEMO_USER_ID,
    "anna": ANNA_ID,
    "tom": TOM_ID,
}

PDF = "application/pdf"
PNG = "image/png"
TXT = "text/plain"
CSV = "text/csv"
IFC = "application/octet-stream"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
GZ = "application/gzip"

LONG_NAME = (
    "Ausführungsplanung Tragwerk Bauabschnitt Nord – Überarbeitung nach Prüfbericht vom"
    " 12. März 2024 – Stahlbetonarbeiten Untergeschoss, Achsen A bis K, einschließlich"
    " Bewehrungsführung und Durchbrüche für Lüftung, Heizung, Sanitär und Elektro"
    " – Freigabestand.pdf"
)
CONTROL_NAME = "Protokoll\x07Besprechung.txt"


@dataclass(frozen=True)
class SeedVersion:
    """One version: its bytes, MIME type, author and day (relative to 2024-03-04 09:00 UTC)."""

    content: bytes
    type: str
    by: str = "demo"
    day: float = 0.0


@dataclass(frozen=True)
class SeedDoc:
    """One document and its versions (oldest first)."""

    file_name: str
    versions: tuple[SeedVersion, ...]
    folder: str | None = None
    attachment_type: str = "Document"
    classification: str = ""
    tag: str = ""
    rights: dict[str, bool] = field(default_factory=dict)
    released_by: str | None = None


@dataclass(frozen=True)
class SeedProject:
    """A project, its folders (paths like ``Drawings/Details``) and documents."""

    name: str
    docs: tuple[SeedDoc, ...] = ()
    folders: tuple[str, ...] = ()
    has_write_access: bool = True
    short_descr: str = ""


@dataclass(frozen=True)
class SeedTeam:
    """A team and its projects."""

    slug: str
    name: str
    projects: tuple[SeedProject, ...]
    total_storage: int = 0


def _v(content: bytes, type: str, by: str = "demo", day: float = 0.0) -> SeedVersion:
    return SeedVersion(content, type, by, day)


def _pdf_versions(
    name: str, count: int, by: tuple[str, ...] = ("anna", "demo")
) -> tuple[SeedVersion, ...]:
    return tuple(
        _v(
            samples.pdf_file(
                f"{name} - revision {n}",
                *(f"Change {i} of revision {n} of {name}." for i in range(1, n + 1)),
                "bimfs demo",
            ),
            PDF,
            by[(n - 1) % len(by)],
            day=2.0 * (n - 1),
        )
        for n in range(1, count + 1)
    )


def _txt_versions(name: str, count: int, by: str = "demo") -> tuple[SeedVersion, ...]:
    return tuple(
        _v(
            samples.text_file(*(f"{name}: line {i} written for version {n}" for i in range(n * 3))),
            TXT,
            by,
            day=1.0 * (n - 1),
        )
        for n in range(1, count + 1)
    )


def _ifc_versions(name: str, project: str, count: int) -> tuple[SeedVersion, ...]:
    return tuple(
        _v(
            samples.ifc_file(name, project, n, f"2024-03-{4 + 3 * (n - 1):02d}T09:00:00"),
            IFC,
            "anna" if n % 2 else "demo",
            day=3.0 * (n - 1),
        )
        for n in range(1, count + 1)
    )


def _xlsx_versions(title: str, count: int) -> tuple[SeedVersion, ...]:
    return tuple(
        _v(
            samples.xlsx_file(
                [_header("Item", "Quantity", "Unit price")]
                + [[f"{title} item {i}", i * n, 12.5 * i] for i in range(1, 4 + n)]
            ),
            XLSX,
            "demo",
            day=1.5 * (n - 1),
        )
        for n in range(1, count + 1)
    )


def _header(*names: str) -> list[str | int | float]:
    return list(names)


def _png(rgb: tuple[int, int, int], size: int = 32, stripe: int = 8) -> bytes:
    return samples.png_file(size, size, rgb, stripe)


def demo_teams() -> tuple[SeedTeam, ...]:
    """The teams of ``--seed demo``."""
    office = SeedProject(
        name="Office Building",
        short_descr="Five-storey office building, design and construction documents",
        folders=("Drawings", "Drawings/Details", "Empty Folder"),
        docs=(
            SeedDoc("plan.pdf", _pdf_versions("plan.pdf", 3), classification="Plan", tag="A-101"),
            SeedDoc(
                "model.ifc",
                _ifc_versions("model.ifc", "Office Building", 2),
                attachment_type="Ifc",
            ),
            SeedDoc("site-photo.png", (_v(_png((40, 120, 200)), PNG, "anna"),)),
            SeedDoc("schedule.xlsx", _xlsx_versions("Schedule", 2)),
            SeedDoc("notes.txt", _txt_versions("notes.txt", 4)),
            SeedDoc(
                "costs.csv",
                (
                    _v(
                        samples.csv_file(
                            [
                                ["Trade", "Budget EUR", "Spent EUR"],
                                ["Structure", 1200000, 850000],
                                ["Facade", 640000, 120000],
                                ['Fit-out, "phase 1"', 310000, 0],
                            ]
                        ),
                        CSV,
                    ),
                ),
                classification="Report",
                tag="Q3",
            ),
            SeedDoc("README", _txt_versions("README", 2)),
            SeedDoc(
                "archive.tar.gz",
                tuple(
                    _v(
                        samples.tar_gz_file(
                            [
                                ("archive/readme.txt", samples.text_file(f"archive revision {n}")),
                                ("archive/data.csv", samples.csv_file([["n"], [n]])),
                            ]
                        ),
                        GZ,
                        day=4.0 * (n - 1),
                    )
                    for n in (1, 2)
                ),
            ),
            SeedDoc(
                "report.docx",
                (
                    _v(
                        samples.docx_file(
                            "Monthly report", "Progress is on schedule.", "Next: facade."
                        ),
                        DOCX,
                        "anna",
                    ),
                ),
                released_by="anna",
            ),
            SeedDoc(
                "confidential.pdf",
                _pdf_versions("confidential.pdf", 1, ("anna",)),
                rights={"download": False},
            ),
            SeedDoc(
                "approved-spec.pdf",
                _pdf_versions("approved-spec.pdf", 1, ("anna",)),
                rights={"update": False, "delete": False},
            ),
            SeedDoc("ground-floor.pdf", _pdf_versions("ground-floor.pdf", 2), folder="Drawings"),
            SeedDoc("first-floor.pdf", _pdf_versions("first-floor.pdf", 1), folder="Drawings"),
            SeedDoc(
                "detail-01.png",
                (_v(_png((200, 60, 30)), PNG, "anna"),),
                folder="Drawings/Details",
            ),
            SeedDoc("detail-02.txt", _txt_versions("detail-02.txt", 2), folder="Drawings/Details"),
        ),
    )
    residential = SeedProject(
        name="Residential Complex",
        short_descr="Three apartment blocks",
        docs=(
            SeedDoc(
                "facade.ifc",
                _ifc_versions("facade.ifc", "Residential Complex", 1),
                attachment_type="Ifc",
            ),
            SeedDoc("budget.xlsx", _xlsx_versions("Budget", 3)),
            SeedDoc(
                "meeting-minutes.docx",
                (_v(samples.docx_file("Meeting minutes", "Attendees: all."), DOCX, "tom"),),
            ),
        ),
    )
    archive = SeedProject(
        name="Archive 2019",
        short_descr="Closed project, read-only",
        has_write_access=False,
        folders=("Handover",),
        docs=(
            SeedDoc("final-report.pdf", _pdf_versions("final-report.pdf", 2)),
            SeedDoc("old-model.ifc", _ifc_versions("old-model.ifc", "Archive 2019", 1)),
            SeedDoc("handover.txt", _txt_versions("handover.txt", 1), folder="Handover"),
        ),
    )
    edge = SeedProject(
        name="Naming Edge Cases",
        short_descr="Documents whose names need care",
        docs=(
            SeedDoc("minutes.txt", (_v(samples.text_file("first minutes.txt"), TXT, day=1.0),)),
            SeedDoc(
                "minutes.txt", (_v(samples.text_file("second minutes.txt"), TXT, "anna", 5.0),)
            ),
            SeedDoc("Section A/B.pdf", _pdf_versions("Section A/B.pdf", 1)),
            SeedDoc(
                "Grundriss Übersicht – Erdgeschoß.txt",
                (_v(samples.text_file("Grundriss Übersicht – Erdgeschoß"), TXT),),
            ),
            SeedDoc("平面図 1F.txt", (_v(samples.text_file("平面図 1F"), TXT),)),
            SeedDoc(LONG_NAME, _pdf_versions("long name", 1)),
            SeedDoc(CONTROL_NAME, (_v(samples.text_file("a name with a BEL character"), TXT),)),
            SeedDoc("versions", (_v(samples.text_file("a document named versions"), TXT),)),
            SeedDoc("..", (_v(samples.text_file("a document named .."), TXT),)),
        ),
    )
    empty = SeedProject(name="Empty Project", short_descr="No documents yet")
    acme = SeedTeam(
        slug="acme-build",
        name="ACME Build GmbH",
        total_storage=1024 * 1024,
        projects=(
            SeedProject(
                name="Bridge Renovation",
                docs=(
                    SeedDoc(
                        "bridge.ifc",
                        _ifc_versions("bridge.ifc", "Bridge Renovation", 2),
                        attachment_type="Ifc",
                    ),
                    SeedDoc(
                        "inspection-report.pdf", _pdf_versions("inspection-report.pdf", 1, ("tom",))
                    ),
                    SeedDoc("photo-001.png", (_v(_png((90, 90, 90)), PNG, "tom"),)),
                    SeedDoc("photo-002.png", (_v(_png((10, 160, 60)), PNG, "tom"),)),
                ),
            ),
            SeedProject(
                name="Tender Documents",
                docs=(
                    SeedDoc(
                        "tender.docx",
                        tuple(
                            _v(samples.docx_file("Tender", f"Issue {n}"), DOCX, "tom", n - 1.0)
                            for n in (1, 2)
                        ),
                    ),
                    SeedDoc("price-list.xlsx", _xlsx_versions("Prices", 1)),
                    SeedDoc("specification.txt", _txt_versions("specification.txt", 1, "tom")),
                ),
            ),
        ),
    )
    demo = SeedTeam(
        slug="bimfs-demo",
        name="bimfs Demo",
        projects=(office, residential, archive, edge, empty),
    )
    return demo, acme


def large_team() -> SeedTeam:
    """The extra team of ``--seed large``: 50 projects of 100 small text documents."""
    projects = []
    for p in range(1, 51):
        docs = tuple(
            SeedDoc(
                f"doc-{d:03d}.txt",
                (_v(samples.text_file(f"project {p:02d} document {d:03d}", "x" * (d * 7)), TXT),),
            )
            for d in range(100)
        )
        projects.append(SeedProject(name=f"Project {p:02d}", docs=docs))
    return SeedTeam(slug="bench-large", name="Bench Large", projects=tuple(projects))


def _id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def _ensure_users(store: Store) -> None:
    store.ensure_user(
        ANNA_ID, "anna.berger@bimfs.test", None, "Anna", "Berger", "Berger Architekten"
    )
    store.ensure_user(TOM_ID, "tom.keller@acme.test", None, "Tom", "Keller", "ACME Build GmbH")


def _seed_team(store: Store, team: SeedTeam, order: int) -> None:
    rec = store.create_team(
        team.slug,
        team.name,
        team.total_storage,
        tid=_id(team.slug),
        created=BASE_TIME - 400 * DAY + order,
    )
    for p_index, project in enumerate(team.projects):
        pkey = (team.slug, project.name)
        created = BASE_TIME - 300 * DAY + p_index * DAY
        prec = store.create_project(
            rec.id,
            project.name,
            has_write_access=project.has_write_access,
            short_descr=project.short_descr,
            pid=_id(*pkey),
            created=created,
        )
        folder_ids: dict[str, str] = {}
        for f_index, path in enumerate(project.folders):
            parent_path, _, name = path.rpartition("/")
            folder = store.create_folder(
                prec.id,
                folder_ids[parent_path] if parent_path else None,
                name,
                fid=_id(*pkey, "folder", path),
                created=created + f_index,
            )
            folder_ids[path] = folder.id
        for d_index, doc in enumerate(project.docs):
            dkey = (*pkey, "doc", str(d_index))
            first = doc.versions[0]
            start = BASE_TIME + d_index * 3600.0
            att = store.create_attachment(
                prec.id,
                file_name=doc.file_name,
                name=doc.file_name,
                type=first.type,
                blob=store.put_blob(first.content),
                size=len(first.content),
                user_id=USERS[first.by],
                folder_id=folder_ids[doc.folder] if doc.folder else None,
                classification=doc.classification,
                tag=doc.tag,
                attachment_type=doc.attachment_type,
                aid=_id(*dkey),
                when=start + first.day * DAY,
                hash=_id(*dkey, "v1"),
            )
            for n, ver in enumerate(doc.versions[1:], start=2):
                store.add_version(
                    att.id,
                    blob=store.put_blob(ver.content),
                    size=len(ver.content),
                    type=ver.type,
                    user_id=USERS[ver.by],
                    when=start + ver.day * DAY,
                    hash=_id(*dkey, f"v{n}"),
                )
            if doc.rights:
                store.set_rights(att.id, doc.rights)
            if doc.released_by:
                last = doc.versions[-1]
                store.set_release(
                    att.id, True, start + (last.day + 1) * DAY, USERS[doc.released_by]
                )
        store.touch_project(prec.id, BASE_TIME + 30 * DAY + p_index)


def seed(store: Store, kind: str) -> bool:
    """Seed ``demo`` or ``large`` (``none``: nothing). Runs only on a store without teams, so
    a restart never seeds twice. Returns whether anything was seeded."""
    if kind == "none" or not store.is_empty():
        return False
    _ensure_users(store)
    teams = list(demo_teams())
    if kind == "large":
        teams.append(large_team())
    elif kind != "demo":
        raise ValueError(f"unknown seed {kind}")
    # One transaction: thousands of small commits would dominate the start-up time.
    with store.transaction():
        for order, team in enumerate(teams):
            _seed_team(store, team, order)
    return True
