"""Tools that walk or replace whole trees: rsync (with --delete), tar and unzip then rm -rf,
mv of a folder across folders and projects, cp -r, find, du and git add -A.

``versions/`` is hidden from readdir (INTERFACES §1), so none of them may download, copy or
delete history: the tests check the server's version lists and the emulator's download and
delete counters, and the programs' exit status (a walk into ``versions/`` shows as an error of
the program: ``rm`` cannot remove it, ``rsync --delete`` cannot delete it).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.programs.helpers import Project, local_dirs, local_files, ok, run, write_tree
from tests.support.mount import Mount
from tests.support.server import (
    DELETE_DOCUMENT,
    DELETE_VERSION,
    LIST_DOCUMENTS,
    LIST_FOLDERS,
    changes,
    creates,
    downloads,
)

pytestmark = pytest.mark.mount

LISTINGS = (LIST_DOCUMENTS, LIST_FOLDERS)


def test_rsync_then_rsync_delete_keeps_history(project: Project, tmp_path: Path) -> None:
    src = tmp_path / "site"
    files = {
        "index.html": b"<h1>v1</h1>\n",
        "logo.bin": os.urandom(3000),
        "docs/a.txt": b"a1\n",
        "docs/deeper/b.txt": b"b1\n",
        "docs/deeper/gone.txt": b"to be deleted\n",
    }
    write_tree(src, files)
    dest = project.dir / "site"
    ok(["rsync", "-a", f"{src}/", f"{dest}/"])
    project.sync()
    assert project.server.contents() == {f"site/{k}": v for k, v in files.items()}
    assert project.server.folders() == {"site", "site/docs", "site/docs/deeper"}
    # A second sync gives index.html a history of two versions (each content of its own size:
    # rsync -a skips a file of the same size and the same mtime second)
    (src / "index.html").write_bytes(b"<h1>v2, a longer title</h1>\n")
    ok(["rsync", "-a", f"{src}/", f"{dest}/"])
    project.sync()
    assert project.server.versions("site/index.html") == [1, 2]

    # A third sync with changes, a new file, a deleted one, and an extra file in the target
    (dest / "extra.txt").write_bytes(b"only in the target\n")
    (src / "index.html").write_bytes(b"<h1>v3, the longest title of all</h1>\n")
    (src / "docs/deeper/b.txt").write_bytes(b"b2, longer\n")
    (src / "docs/new.txt").write_bytes(b"new\n")
    os.remove(src / "docs/deeper/gone.txt")
    project.sync()
    project.emu.reset_stats()
    rsync = run(["rsync", "-a", "--delete", f"{src}/", f"{dest}/"])
    project.sync()
    sent, read_back = changes(project.emu), downloads(project.emu)  # before the checks read

    expected = local_files(src)
    versions = {path: project.server.versions(path) for path in project.server.paths()}
    assert versions == {
        "site/index.html": [1, 2, 3],
        "site/logo.bin": [1],
        "site/docs/a.txt": [1],
        "site/docs/new.txt": [1],
        "site/docs/deeper/b.txt": [1, 2],
    }
    assert project.server.contents() == {f"site/{k}": v for k, v in expected.items()}
    assert local_files(dest) == expected
    # Only the deleted and the extra file were deleted, no version; nothing was read back.
    assert DELETE_VERSION not in sent, sent
    assert sent.get(DELETE_DOCUMENT) == 2, sent
    assert read_back == 0
    # and rsync had nothing to complain about ("cannot delete ..." is exit 23)
    assert rsync.returncode == 0, rsync.stdout.decode() + rsync.stderr.decode()
    # The history is still reachable by name
    history = dest / "versions" / "index.html"
    assert sorted(os.listdir(history)) == ["index.v1.html", "index.v2.html", "index.v3.html"]
    assert (history / "index.v1.html").read_bytes() == b"<h1>v1</h1>\n"


def nested_tree(top: str) -> dict[str, bytes]:
    files = {}
    for depth, parts in enumerate([[top], [top, "a"], [top, "a", "b"], [top, "a", "b", "c"]]):
        for i in range(2):
            files["/".join([*parts, f"file{depth}{i}.txt"])] = f"{top} {depth} {i}\n".encode()
    files[f"{top}/a/data.bin"] = os.urandom(5000)
    return files


def test_tar_and_unzip_then_rm_rf_leave_the_server_clean(project: Project, tmp_path: Path) -> None:
    tarred, zipped = nested_tree("unpacked"), nested_tree("unzipped")
    write_tree(tmp_path / "t", tarred)
    ok(["tar", "-C", tmp_path / "t", "-cf", tmp_path / "tree.tar", "unpacked"])
    with zipfile.ZipFile(tmp_path / "tree.zip", "w") as zf:
        for rel, data in zipped.items():
            zf.writestr(rel, data)

    ok(["tar", "-C", project.dir, "-xf", tmp_path / "tree.tar"])
    ok(["unzip", "-q", tmp_path / "tree.zip", "-d", project.dir])
    project.sync()
    assert project.server.contents() == {**tarred, **zipped}
    assert project.server.folders() == {
        f"{top}{sub}" for top in ("unpacked", "unzipped") for sub in ("", "/a", "/a/b", "/a/b/c")
    }
    assert creates(project.emu) == len(tarred) + len(zipped)

    project.emu.reset_stats()
    rm = run(["rm", "-rf", project.dir / "unpacked", project.dir / "unzipped"])
    project.sync()
    assert project.server.documents() == []
    assert project.server.folders() == set()
    assert rm.returncode == 0, rm.stderr.decode()
    assert DELETE_VERSION not in changes(project.emu)
    assert downloads(project.emu) == 0
    assert sorted(n for n in os.listdir(project.dir) if n != "versions") == []


def test_tar_x_does_not_refetch_the_project_listing_per_file(
    mount_factory: Callable[..., Mount], new_project: Callable[..., Project], tmp_path: Path
) -> None:
    # The default directory TTL (30 s): every listing fetched during the test is one that a
    # change of this mount caused. bimfs knows what it created from the server's answers, so
    # unpacking N files must not fetch the whole project listing N times (quadratic in N).
    m = mount_factory("--write-back-delay", "0.2")
    p = new_project(m)
    files = nested_tree("unpacked")
    write_tree(tmp_path / "t", files)
    ok(["tar", "-C", tmp_path / "t", "-cf", tmp_path / "tree.tar", "unpacked"])
    os.listdir(p.dir)
    p.emu.reset_stats()
    ok(["tar", "-C", p.dir, "-xf", tmp_path / "tree.tar"])
    p.sync()
    created = p.emu.stats()
    p.emu.reset_stats()
    ok(["rm", *[p.dir / rel for rel in files]])
    deleted = p.emu.stats()
    assert p.server.paths() == []
    on_create = sum(created["requests"].get(k, {}).get("200", 0) for k in LISTINGS)
    on_delete = sum(deleted["requests"].get(k, {}).get("200", 0) for k in LISTINGS)
    assert (on_create <= 4, on_delete <= 2) == (True, True), (
        f"{on_create} listings fetched while creating {len(files)} files in 4 new folders, "
        f"{on_delete} while deleting them\n{created}\n{deleted}"
    )


@pytest.mark.parametrize("target", ["other-project", "other-folder"])
def test_mv_of_a_folder_leaves_exactly_one_copy(
    project: Project, new_project: Callable[..., Project], target: str
) -> None:
    files = {
        "bundle/a.txt": b"alpha\n",
        "bundle/b.bin": os.urandom(4000),
        "bundle/inner/c.txt": b"gamma\n",
    }
    write_tree(project.dir, files)
    project.sync()
    (project.dir / "bundle" / "a.txt").write_bytes(b"alpha, second save\n")
    files["bundle/a.txt"] = b"alpha, second save\n"
    project.sync()
    assert project.server.contents() == files
    assert project.server.versions("bundle/a.txt") == [1, 2]  # the copy gets only the latest
    if target == "other-project":
        dest = new_project(project.mount)
        dest_dir, prefix = dest.dir, ""
    else:
        dest = project
        (project.dir / "archive").mkdir()
        dest_dir, prefix = project.dir / "archive", "archive/"
    project.emu.reset_stats()

    mv = run(["mv", project.dir / "bundle", dest_dir])  # EXDEV: mv copies, then deletes
    project.sync()

    moved = {f"{prefix}{k}": v for k, v in files.items()}
    assert dest.server.contents() == moved
    assert dest.server.folders() == {f"{prefix}bundle", f"{prefix}bundle/inner"} | (
        {"archive"} if prefix else set()
    )
    for path in moved:
        assert dest.server.versions(path) == [1]  # a copy: one document each, one version
    if target == "other-project":
        assert project.server.documents() == []
        assert project.server.folders() == set()
    assert creates(project.emu) == len(files)
    assert DELETE_VERSION not in changes(project.emu)
    assert local_files(dest_dir / "bundle") == {k[len("bundle/") :]: v for k, v in files.items()}
    assert not (project.dir / "bundle").exists()
    assert mv.returncode == 0, mv.stderr.decode()[-3000:]


def test_cp_r_find_du_and_git_add_do_not_descend_into_versions(
    project: Project, tmp_path: Path
) -> None:
    # Old versions are large and the latest small: one old version read shows in bytes_out.
    old = os.urandom(1 << 20)
    project.seed("plan.txt", old, old[:1000], b"plan, latest\n")
    project.seed("model.ifc", old, b"ISO-10303-21; latest\n")
    (project.dir / "sub").mkdir()
    (project.dir / "sub" / "note.txt").write_bytes(b"note 1\n")
    project.sync()
    (project.dir / "sub" / "note.txt").write_bytes(b"note 2\n")
    project.sync()
    expected = {
        "plan.txt": b"plan, latest\n",
        "model.ifc": b"ISO-10303-21; latest\n",
        "sub/note.txt": b"note 2\n",
    }
    project.wait_visible("plan.txt", "model.ifc")
    project.emu.reset_stats()

    found = ok(["find", project.dir]).stdout.decode().splitlines()
    rel = sorted(os.path.relpath(f, project.dir) for f in found)
    assert rel == [".", "model.ifc", "plan.txt", "sub", "sub/note.txt"]
    du = ok(["du", "-a", "-b", project.dir]).stdout.decode()
    assert "versions" not in du
    total = int(du.splitlines()[-1].split()[0])
    assert total == sum(len(v) for v in expected.values())  # du counts the latest bytes only
    assert downloads(project.emu) == 0  # walking reads no content

    ok(["cp", "-r", project.dir, tmp_path / "copy"])
    assert local_files(tmp_path / "copy") == expected
    assert local_dirs(tmp_path / "copy") == {"sub"}  # no versions/ copied
    # Copies that carry ACLs and extended attributes along ask the mount for them: it has no
    # ACL or security namespace (ENOTSUP), which they take as "none", and they succeed.
    ok(["cp", "-a", project.dir, tmp_path / "archive"])
    assert local_files(tmp_path / "archive") == expected
    ok(["rsync", "-aAX", f"{project.dir}/", f"{tmp_path / 'rsynced'}/"])
    assert local_files(tmp_path / "rsynced") == expected
    ok(["ls", "-lR", project.dir])

    ok(["git", "-c", "init.defaultBranch=main", "init", "-q", tmp_path / "repo"])
    git = ["git", f"--git-dir={tmp_path / 'repo' / '.git'}", f"--work-tree={project.dir}"]
    ok([*git, "add", "-A"])
    listed = ok([*git, "ls-files", "-s"]).stdout.decode().split("\n")
    assert sorted(line.split("\t")[1] for line in listed if line) == sorted(expected)

    stats = project.emu.stats()
    assert stats["bytes_out"] < len(old) // 2, stats  # no old version was downloaded
    assert changes(project.emu) == {}
    assert {p: project.server.versions(p) for p in expected} == {
        "plan.txt": [1, 2, 3],
        "model.ifc": [1, 2],
        "sub/note.txt": [1, 2],
    }
