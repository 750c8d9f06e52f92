"""Project files through the API: every operation, and every way out of the project refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ..conftest import Api


@pytest.fixture
def proj(any_api: Api):  # type: ignore[no-untyped-def]
    c = any_api.client_for(any_api.user())
    pid = c.post("/api/v1/projects", json={"name": "files"}).json()["id"]
    return c, "/api/v1/projects/%d/files" % pid, any_api.settings.projects_dir / str(pid)


def test_write_read_list_move_delete(proj) -> None:  # type: ignore[no-untyped-def]
    c, base, root = proj
    assert c.post(base + "/mkdir", json={"path": "src"}).status_code == 201
    r = c.put(base + "/content", json={"path": "src/main.py", "content": "print('é')\n"})
    assert r.status_code == 200 and r.json()["size"] == len("print('é')\n".encode())
    got = c.get(base + "/content", params={"path": "src/main.py"}).json()
    assert got["content"] == "print('é')\n"
    stale = got["modified"] - 10
    r = c.put(base + "/content", json={"path": "src/main.py", "content": "x", "expected_modified": stale})
    assert r.status_code == 409 and "changed since" in r.json()["error"]
    r = c.put(base + "/content", json={"path": "src/main.py", "content": "x = 2\n",
                                       "expected_modified": got["modified"]})
    assert r.status_code == 200
    entries = c.get(base, params={"path": "src"}).json()["entries"]
    assert [(e["name"], e["type"]) for e in entries] == [("main.py", "file")]
    assert c.post(base + "/move", json={"source": "src/main.py", "destination": "main.py"}).status_code == 200
    assert (root / "main.py").read_text() == "x = 2\n"
    assert c.delete(base, params={"path": "src"}).status_code == 204
    assert not (root / "src").exists()
    assert c.get(base + "/content", params={"path": "src/main.py"}).status_code == 404


def test_upload_and_download(proj) -> None:  # type: ignore[no-untyped-def]
    c, base, root = proj
    c.post(base + "/mkdir", json={"path": "data"})
    files = [("files", ("a.csv", b"x,y\n1,2\n")), ("files", ("b.bin", bytes(range(256))))]
    r = c.post(base + "/upload", params={"path": "data"}, files=files)
    assert r.status_code == 201, r.text
    assert sorted(f["path"] for f in r.json()["files"]) == ["data/a.csv", "data/b.bin"]
    assert (root / "data" / "b.bin").read_bytes() == bytes(range(256))
    d = c.get(base + "/download", params={"path": "data/b.bin"})
    assert d.status_code == 200 and d.content == bytes(range(256))
    assert "attachment" in d.headers["content-disposition"]
    folder = c.get(base + "/download", params={"path": "data"})
    with tarfile.open(fileobj=io.BytesIO(folder.content), mode="r:gz") as t:
        assert sorted(t.getnames()) == ["a.csv", "b.bin"]
    r = c.get(base + "/content", params={"path": "data/b.bin"})
    assert r.status_code == 415 and "not UTF-8" in r.json()["error"]
    # a sneaky file name cannot leave the folder
    r = c.post(base + "/upload", params={"path": "data"}, files=[("files", ("../../evil.txt", b"x"))])
    assert r.status_code == 201 and r.json()["files"][0]["path"] == "data/evil.txt"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x"])
def test_traversal_refused_everywhere(proj, path: str) -> None:  # type: ignore[no-untyped-def]
    c, base, root = proj
    assert c.get(base + "/content", params={"path": path}).status_code == 400
    assert c.get(base, params={"path": path}).status_code == 400
    assert c.get(base + "/download", params={"path": path}).status_code == 400
    assert c.put(base + "/content", json={"path": path, "content": "x"}).status_code == 400
    assert c.post(base + "/mkdir", json={"path": path}).status_code == 400
    assert c.post(base + "/move", json={"source": "README.md", "destination": path}).status_code == 400
    assert c.delete(base, params={"path": path}).status_code == 400
    assert c.post(base + "/upload", params={"path": path}, files=[("files", ("a", b"x"))]).status_code == 400
    assert (root / "README.md").exists()


def test_symlink_escape_refused(proj, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c, base, root = proj
    secret = tmp_path / "outside.txt"
    secret.write_text("top secret")
    os.symlink(secret, root / "leak")
    os.symlink(tmp_path, root / "leakdir")
    for r in (c.get(base + "/content", params={"path": "leak"}),
              c.get(base + "/download", params={"path": "leak"}),
              c.get(base + "/download", params={"path": "leakdir"}),
              c.get(base, params={"path": "leakdir"}),
              c.put(base + "/content", json={"path": "leakdir/new", "content": "x"}),
              c.put(base + "/content", json={"path": "leak", "content": "x"}),
              c.post(base + "/mkdir", json={"path": "leakdir/sub"}),
              c.post(base + "/upload", params={"path": "leakdir"}, files=[("files", ("a", b"x"))])):
        assert r.status_code == 409 and "symbolic link" in r.json()["error"], r.text
    assert secret.read_text() == "top secret"
    assert sorted(os.listdir(tmp_path)) == sorted(["outside.txt", "data"])
    folder = c.get(base + "/download", params={"path": ""})
    with tarfile.open(fileobj=io.BytesIO(folder.content), mode="r:gz") as t:
        assert "leak" not in t.getnames()
        assert all(b"top secret" not in t.extractfile(m).read() for m in t.getmembers() if m.isfile())
    listed = {e["name"]: e["type"] for e in c.get(base).json()["entries"]}
    assert listed["leak"] == "symlink"


def test_errors_are_clear(proj) -> None:  # type: ignore[no-untyped-def]
    c, base, _ = proj
    r = c.put(base + "/content", json={"path": "nope/deeper/a.py", "content": "x"})
    assert r.status_code == 404 and "create it first" in r.json()["error"]
    assert c.post(base + "/mkdir", json={"path": "README.md"}).status_code == 409
    assert c.delete(base, params={"path": ""}).status_code == 422  # path is required, not empty
    r = c.get(base + "/content", params={"path": ""})
    assert r.status_code == 400 and "folder" in r.json()["error"]


def test_engines_own_project_files_when_master_runs_as_root(proj) -> None:  # type: ignore[no-untyped-def]
    """Engines run as uid 8536: everything the API creates in a project belongs to it."""
    if os.geteuid() != 0:
        pytest.skip("only root can give files to the engines' uid")
    c, base, root = proj
    c.post(base + "/mkdir", json={"path": "out"})
    c.put(base + "/content", json={"path": "out/a.txt", "content": "x"})
    c.post(base + "/upload", params={"path": "out"}, files=[("files", ("b.bin", b"y"))])
    for p in (root, root / "README.md", root / "out", root / "out" / "a.txt", root / "out" / "b.bin"):
        assert p.stat().st_uid == 8536, p
