"""Projects through the API: creation from every source, visibility, roles, transfer, deletion."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

from sqlalchemy import func, select

from cdsw_agent.store.models import Project

from ..conftest import Api


def project_count(api: Api) -> int:
    with api.db.session() as s:
        return s.scalar(select(func.count()).select_from(Project))


def folders(api: Api) -> list:
    d = api.settings.projects_dir
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_create_blank_and_from_template(any_api: Api) -> None:
    c = any_api.client_for(any_api.user())
    r = c.post("/api/v1/projects", json={"name": "My Analysis", "description": "first"})
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["slug"] == "my-analysis" and p["visibility"] == "private" and p["your_role"] == "admin"
    listing = c.get("/api/v1/projects/%d/files" % p["id"]).json()
    assert [e["name"] for e in listing["entries"]] == ["README.md"]
    assert c.post("/api/v1/projects", json={"name": "my analysis"}).status_code == 409
    t = c.post("/api/v1/projects", json={"name": "py", "template": "python"}).json()
    names = {e["name"] for e in c.get("/api/v1/projects/%d/files" % t["id"]).json()["entries"]}
    assert {"README.md", "analysis.py", "fit.py", "predict.py"} <= names
    templates = {t["name"] for t in c.get("/api/v1/projects/templates").json()}
    assert templates == {"python", "r", "scala", "pyspark"}
    r = c.post("/api/v1/projects", json={"name": "x", "template": "cobol"})
    assert r.status_code == 422 and "unknown template" in r.json()["error"]


def test_create_from_git_file_url(api: Api, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print('hi')\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    c = api.client_for(api.user())
    r = c.post("/api/v1/projects", json={"name": "cloned", "git_url": "file://%s" % repo})
    assert r.status_code == 201, r.text
    body = c.get("/api/v1/projects/%d/files/content" % r.json()["id"], params={"path": "train.py"})
    assert body.json()["content"] == "print('hi')\n"
    before = (project_count(api), folders(api))
    r = c.post("/api/v1/projects", json={"name": "broken", "git_url": "file://%s/missing" % tmp_path})
    assert r.status_code == 422 and "could not clone" in r.json()["error"]
    r = c.post("/api/v1/projects", json={"name": "ext", "git_url": "ext::sh -c touch% /tmp/pwned"})
    assert r.status_code == 422 and "not allowed" in r.json()["error"]
    assert (project_count(api), folders(api)) == before


def test_git_file_scheme_off_by_default(tmp_path: Path) -> None:
    from ..conftest import build_api, make_settings

    api = build_api(make_settings(tmp_path / "d", allowed_git_schemes=["https"]))
    c = api.client_for(api.user())
    r = c.post("/api/v1/projects", json={"name": "local", "git_url": "file:///etc"})
    assert r.status_code == 422 and "scheme 'file'" in r.json()["error"]


def _upload(c, name: str, data: bytes, filename: str = "p.zip", **fields):  # type: ignore[no-untyped-def]
    form = {"name": name}
    form.update({k: str(v) for k, v in fields.items()})
    return c.post("/api/v1/projects/upload", data=form, files={"archive": (filename, data)})


def test_create_from_uploaded_archives(any_api: Api) -> None:
    c = any_api.client_for(any_api.user())
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("proj/analysis.py", "x = 1\n")
        z.writestr("proj/data/values.csv", "a,b\n1,2\n")
    r = _upload(c, "zipped", zbuf.getvalue(), visibility="public")
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.json()["visibility"] == "public"
    top = {e["name"] for e in c.get("/api/v1/projects/%d/files" % pid).json()["entries"]}
    assert top == {"analysis.py", "data"}  # the single top folder is unwrapped
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as t:
        info = tarfile.TarInfo("notes.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    assert _upload(c, "tarred", tbuf.getvalue(), filename="p.tgz").status_code == 201


def test_bad_uploads_leave_nothing_behind(api: Api) -> None:
    c = api.client_for(api.user())
    before = (project_count(api), folders(api))
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("ok.txt", "fine")
        z.writestr("../../escape.txt", "evil")
    r = _upload(c, "evil", evil.getvalue())
    assert r.status_code == 422 and "refused" in r.json()["error"]
    r = _upload(c, "garbage", b"definitely not an archive")
    assert r.status_code == 422 and "not a zip or tar" in r.json()["error"]
    truncated = evil.getvalue()[: len(evil.getvalue()) // 2]
    assert _upload(c, "truncated", truncated).status_code == 422
    r = c.post("/api/v1/projects/upload", data={"name": "nofile"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    r = c.post("/api/v1/projects/upload", data={"name": "nofile"}, files={"other": ("a", b"x")})
    assert r.status_code == 422 and "archive" in r.json()["error"]
    r = _upload(c, "", b"x")
    assert r.status_code == 422 and "name" in r.json()["error"]
    assert (project_count(api), folders(api)) == before
    assert not (Path(api.settings.data_dir) / "escape.txt").exists()


def test_upload_size_limit(tmp_path: Path) -> None:
    from ..conftest import build_api, make_settings

    api = build_api(make_settings(tmp_path / "d", max_upload_mb=1))
    c = api.client_for(api.user())
    r = _upload(c, "big", b"\0" * (3 * 1024 * 1024))
    assert r.status_code == 413


def test_private_project_is_404_to_strangers_and_403_to_viewers(any_api: Api) -> None:
    owner, viewer, stranger = any_api.user(), any_api.user(), any_api.user()
    c = any_api.client_for(owner)
    pid = c.post("/api/v1/projects", json={"name": "secret"}).json()["id"]
    assert c.put("/api/v1/projects/%d/collaborators/%d" % (pid, viewer.id), json={"role": "viewer"}).status_code == 200
    s = any_api.client_for(stranger)
    assert s.get("/api/v1/projects/%d" % pid).status_code == 404
    assert s.patch("/api/v1/projects/%d" % pid, json={"name": "x"}).status_code == 404
    assert s.get("/api/v1/projects/%d" % (pid + 1000)).status_code == 404
    assert [p["id"] for p in s.get("/api/v1/projects").json()] == []
    v = any_api.client_for(viewer)
    assert v.get("/api/v1/projects/%d" % pid).json()["your_role"] == "viewer"
    r = v.patch("/api/v1/projects/%d" % pid, json={"name": "x"})
    assert r.status_code == 403 and "admin role" in r.json()["error"]
    r = v.put("/api/v1/projects/%d/files/content" % pid, json={"path": "a.txt", "content": "x"})
    assert r.status_code == 403
    # public: every signed-in user sees it read-only; anonymous still 401
    assert c.patch("/api/v1/projects/%d" % pid, json={"visibility": "public"}).status_code == 200
    assert s.get("/api/v1/projects/%d" % pid).json()["your_role"] == "viewer"
    assert any_api.client_for(None).get("/api/v1/projects/%d" % pid).status_code == 401


def test_team_projects_and_visibility(any_api: Api) -> None:
    lead, member, outsider = any_api.user(), any_api.user(), any_api.user()
    c = any_api.client_for(lead)
    team = c.post("/api/v1/teams", json={"name": "analytics"}).json()
    assert c.put("/api/v1/teams/%d/members/%d" % (team["id"], member.id), json={"role": "member"}).status_code == 200
    r = c.post("/api/v1/projects", json={"name": "shared", "owner_team_id": team["id"], "visibility": "team"})
    assert r.status_code == 201 and r.json()["owner"] == {"type": "team", "id": team["id"], "name": "analytics"}
    pid = r.json()["id"]
    m = any_api.client_for(member)
    assert m.get("/api/v1/projects/%d" % pid).json()["your_role"] == "contributor"
    assert m.put("/api/v1/projects/%d/files/content" % pid, json={"path": "m.py", "content": "1"}).status_code == 200
    assert m.delete("/api/v1/projects/%d" % pid).status_code == 403
    o = any_api.client_for(outsider)
    assert o.get("/api/v1/projects/%d" % pid).status_code == 404
    r = o.post("/api/v1/projects", json={"name": "sneaky", "owner_team_id": team["id"]})
    assert r.status_code == 403
    r = c.post("/api/v1/projects", json={"name": "mine", "visibility": "team"})
    assert r.status_code == 422 and "team" in r.json()["error"]
    # the team cannot be deleted while it owns projects
    assert c.delete("/api/v1/teams/%d" % team["id"]).status_code == 409
    # the last team admin cannot leave
    assert c.delete("/api/v1/teams/%d/members/%d" % (team["id"], lead.id)).status_code == 409
    assert c.post("/api/v1/teams", json={"name": lead.username}).status_code == 409  # shared namespace


def test_rename_transfer_delete(any_api: Api) -> None:
    owner, other = any_api.user(), any_api.user()
    c = any_api.client_for(owner)
    pid = c.post("/api/v1/projects", json={"name": "draft"}).json()["id"]
    c.post("/api/v1/projects", json={"name": "taken"})
    assert c.patch("/api/v1/projects/%d" % pid, json={"name": "taken"}).status_code == 409
    r = c.patch("/api/v1/projects/%d" % pid, json={"name": "Final Version"})
    assert r.json()["slug"] == "final-version"
    folder = any_api.settings.projects_dir / str(pid)
    assert folder.is_dir()  # renaming never moves files
    r = c.post("/api/v1/projects/%d/transfer" % pid, json={"owner_user_id": other.id})
    assert r.status_code == 200 and r.json()["owner"]["name"] == other.username
    # the old owner stays an Admin collaborator, and as such may not transfer it back
    assert c.get("/api/v1/projects/%d" % pid).json()["your_role"] == "admin"
    o = any_api.client_for(other)
    assert [(x["username"], x["role"]) for x in o.get(
        "/api/v1/projects/%d/collaborators" % pid).json()] == [(owner.username, "admin")]
    r = c.post("/api/v1/projects/%d/transfer" % pid, json={"owner_user_id": owner.id})
    assert r.status_code == 403 and "owner or a site administrator" in r.json()["error"]
    assert o.delete("/api/v1/projects/%d" % pid).status_code == 204
    assert not folder.exists()
    assert o.get("/api/v1/projects/%d" % pid).status_code == 404
    assert [n for n in folders(any_api) if n.startswith(".deleted")] == []


def test_collaborator_roles_and_env(any_api: Api) -> None:
    owner, contrib, op = any_api.user(), any_api.user(), any_api.user()
    c = any_api.client_for(owner)
    pid = c.post("/api/v1/projects", json={"name": "env"}).json()["id"]
    for u, role in ((contrib, "contributor"), (op, "operator")):
        assert c.put("/api/v1/projects/%d/collaborators/%d" % (pid, u.id), json={"role": role}).status_code == 200
    assert c.put("/api/v1/projects/%d/collaborators/%d" % (pid, owner.id), json={"role": "viewer"}).status_code == 409
    r = c.put("/api/v1/projects/%d/collaborators/%d" % (pid, op.id), json={"role": "king"})
    assert r.status_code == 422
    assert c.put("/api/v1/projects/%d/env/DB_PASSWORD" % pid, json={"value": "pa55", "secret": True}).status_code == 200
    assert c.put("/api/v1/projects/%d/env/MODE" % pid, json={"value": "dev"}).status_code == 200
    assert c.put("/api/v1/projects/%d/env/1BAD" % pid, json={"value": "x"}).status_code == 422
    env = any_api.client_for(contrib).get("/api/v1/projects/%d/env" % pid).json()
    assert {e["name"]: e["value"] for e in env} == {"DB_PASSWORD": "****", "MODE": "dev"}
    assert any_api.client_for(op).get("/api/v1/projects/%d/env" % pid).status_code == 403
    assert c.delete("/api/v1/projects/%d/collaborators/%d" % (pid, op.id)).status_code == 200
    assert any_api.client_for(op).get("/api/v1/projects/%d" % pid).status_code == 404


def test_list_search_and_filters(api: Api) -> None:
    u = api.user()
    c = api.client_for(u)
    for name in ("Churn model", "churn data", "Forecast"):
        c.post("/api/v1/projects", json={"name": name, "visibility": "public" if "data" in name else "private"})
    names = [p["name"] for p in c.get("/api/v1/projects", params={"q": "churn"}).json()]
    assert sorted(names) == ["Churn model", "churn data"]
    pub = [p["name"] for p in c.get("/api/v1/projects", params={"visibility": "public"}).json()]
    assert pub == ["churn data"]
    assert len(c.get("/api/v1/projects", params={"owner": u.username}).json()) == 3
    assert c.get("/api/v1/projects", params={"q": "%"}).json() == []
