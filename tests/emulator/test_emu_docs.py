"""docs/emulator.md must describe exactly what is seeded (other test suites rely on it)."""

from __future__ import annotations

from pathlib import Path

from bimfs.emulator.seed import demo_teams, large_team

DOC = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def test_every_seeded_name_is_documented() -> None:
    text = DOC.read_text()
    for team in (*demo_teams(), large_team()):
        assert f"`{team.slug}`" in text
        assert f'"{team.name}"' in text
        if team.slug == "bench-large":
            continue
        for project in team.projects:
            assert f"**{project.name}**" in text, project.name
            for folder in project.folders:
                assert f"`{folder}`" in text, folder
            for doc in project.docs:
                name = doc.file_name.replace("\x07", "\\x07")
                lines = [line for line in text.splitlines() if f"`{name}`" in line]
                assert lines, name
                if project.name == "Naming Edge Cases":
                    continue  # one version each, said once for the table
                n = len(doc.versions)
                patterns = (f"| {n} (", f"`{name}` ({n} version")
                assert any(p in line for p in patterns for line in lines), name


def test_documented_rights_and_quota() -> None:
    text = DOC.read_text()
    for team in demo_teams():
        if team.total_storage:
            assert f"totalStorage {team.total_storage}" in text
        for project in team.projects:
            if not project.has_write_access:
                assert f"**{project.name}** (**read-only" in text
            for doc in project.docs:
                for right, granted in doc.rights.items():
                    assert not granted
                    assert f"no `{right}`" in text
