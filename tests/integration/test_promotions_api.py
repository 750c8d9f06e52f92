"""Several clusters through the API: registering clusters and grants, a project's home cluster,
and promotion DEV -> PROD as a reviewed request (the attacks: no PROD grant, approving one's own
request), its history, and rollback."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Dict

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdsw_agent.store.jobs_models import Job
from cdsw_agent.store.models import AuditEvent, EnvVar

from ..conftest import Api


def ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json() if r.content else None


@pytest.fixture
def world(api: Api) -> Dict[str, Any]:
    """DEV and PROD clusters; alice works on DEV, carol may run and approve on PROD, bob is a
    contributor everywhere without a PROD grant."""
    admin, alice, bob, carol = (api.user("root", admin=True), api.user("alice"),
                                api.user("bob"), api.user("carol"))
    a, b, c, root = (api.client_for(alice), api.client_for(bob), api.client_for(carol),
                     api.client_for(admin))
    dev = ok(root.post("/api/v1/clusters", json={"name": "DEV", "kind": "dev",
                                                 "requires_grant": False}), 201)
    prod = ok(root.post("/api/v1/clusters", json={"name": "PROD", "kind": "prod"}), 201)
    ok(root.post("/api/v1/clusters/%d/grants" % prod["id"], json={"username": "carol"}), 201)

    src = ok(a.post("/api/v1/projects", json={"name": "churn"}), 201)
    ok(a.put("/api/v1/projects/%d/cluster" % src["id"], json={"cluster": "DEV"}))
    s = "/api/v1/projects/%d" % src["id"]
    ok(a.put(s + "/files/content", json={"path": "job.py", "content": "print('v1')\n"}))
    ok(a.put(s + "/files/content", json={"path": "model.py",
                                         "content": "def predict(x):\n    return x\n"}))
    ok(a.post(s + "/jobs", json={"name": "nightly", "script": "job.py", "schedule": "0 3 * * *",
                                 "env": {"MODE": "full"}}), 201)
    ok(a.post(s + "/models", json={"name": "echo", "file": "model.py", "function": "predict"}),
       201)
    ok(a.put(s + "/env/DB_PASSWORD", json={"value": "dev-secret-value", "secret": True}))

    dst = ok(c.post("/api/v1/projects", json={"name": "churn-prod"}), 201)
    ok(c.put("/api/v1/projects/%d/cluster" % dst["id"], json={"cluster": "PROD"}))
    d = "/api/v1/projects/%d" % dst["id"]
    ok(c.put(d + "/files/content", json={"path": "old.txt", "content": "prod only\n"}))
    ok(c.put(d + "/env/DB_PASSWORD", json={"value": "prod-secret-value", "secret": True}))
    for user in (alice, bob):
        ok(c.put(d + "/collaborators/%d" % user.id, json={"role": "contributor"}))
    ok(a.put(s + "/collaborators/%d" % bob.id, json={"role": "contributor"}))
    return dict(a=a, b=b, c=c, root=root, src=src["id"], dst=dst["id"], s=s, d=d, dev=dev,
                prod=prod, alice=alice, bob=bob, carol=carol)


def test_clusters_are_listed_with_who_may_run_and_only_admins_register(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    names = {c["name"]: c for c in ok(world["a"].get("/api/v1/clusters"))}
    assert sorted(names) == ["DEV", "PROD", "default"]
    assert names["default"]["is_default"] and names["default"]["may_run"]
    assert names["DEV"]["may_run"] and not names["PROD"]["may_run"]
    assert names["PROD"]["node_label"] == "cdsw.cluster=PROD"
    assert [g["grantee"] for g in names["PROD"]["grants"]] == ["user carol"]
    r = world["a"].post("/api/v1/clusters", json={"name": "QA", "kind": "test"})
    assert r.status_code == 403
    assert world["root"].post("/api/v1/clusters", json={"name": "PROD"}).status_code == 409
    # a project moves only to a cluster its admin may run on
    r = world["a"].put("/api/v1/projects/%d/cluster" % world["src"], json={"cluster": "PROD"})
    assert r.status_code == 403 and "no grant on cluster PROD" in r.json()["error"]
    assert ok(world["a"].get("/api/v1/projects/%d/cluster" % world["src"]))["cluster"] == "DEV"


def test_no_prod_grant_requests_but_cannot_approve_or_run(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    a, b, c, s, d = world["a"], world["b"], world["c"], world["s"], world["d"]
    # bob, with no PROD grant, may not run anything on PROD
    r = b.post(d + "/sessions", json={})
    assert r.status_code == 403 and "no grant on cluster PROD" in r.json()["error"]
    ok(c.put(d + "/files/content", json={"path": "probe.py", "content": "print(1)\n"}))
    prod_job = ok(c.post(d + "/jobs", json={"name": "probe", "script": "probe.py"}), 201)
    r = b.post(d + "/jobs/%d/runs" % prod_job["id"])
    assert r.status_code == 403 and "no grant on cluster PROD" in r.json()["error"]

    p = ok(b.post(s + "/promotions", json={"target_project_id": world["dst"],
                                           "note": "first release"}), 201)
    assert p["status"] == "pending" and p["source_cluster"] == "DEV"
    assert p["target_cluster"] == "PROD" and p["requested_by"] == "bob"
    assert p["diff"]["files"] == {"added": ["job.py", "model.py"], "changed": ["README.md"],
                                  "removed": ["old.txt", "probe.py"]}
    assert p["diff"]["jobs"] == {"added": ["nightly"], "changed": {}, "removed": ["probe"]}
    assert p["diff"]["jobs"]["added"] == ["nightly"] and p["diff"]["models"]["added"] == ["echo"]
    assert p["diff"]["env_names"]["source"] == ["DB_PASSWORD"]
    r = b.get(d + "/promotions/%d" % p["id"])
    assert "secret-value" not in r.text  # names only, never values

    one = d + "/promotions/%d" % p["id"]
    for who in ("a", "b"):  # alice: contributor on PROD's project but no grant; bob: requester
        r = world[who].post(one + "/approve", json={})
        assert r.status_code == 403, r.text
    assert "no grant on cluster PROD" in a.post(one + "/approve", json={}).json()["error"]
    # the requester, even once granted PROD, never approves their own request
    ok(world["root"].post("/api/v1/clusters/%d/grants" % world["prod"]["id"],
                          json={"username": "bob"}), 201)
    r = b.post(one + "/approve", json={})
    assert r.status_code == 403 and "you requested promotion" in r.json()["error"]
    # reviewed on its target only
    r = c.post(s + "/promotions/%d/approve" % p["id"], json={})
    assert r.status_code in (403, 404)
    assert ok(c.get(d + "/promotions/%d" % p["id"]))["status"] == "pending"


def test_approve_applies_the_frozen_snapshot_and_rollback_restores(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    a, c, s, d = world["a"], world["c"], world["s"], world["d"]
    settings = api.settings
    first = ok(a.post(s + "/promotions", json={"target_project_id": world["dst"]}), 201)
    # the source changes after the request: the approval still applies what was requested
    ok(a.put(s + "/files/content", json={"path": "job.py", "content": "print('edited')\n"}))

    done = ok(c.post(d + "/promotions/%d/approve" % first["id"], json={"note": "ok"}))
    assert done["status"] == "approved" and done["reviewed_by"] == "carol"
    assert done["result"]["jobs_created"] == ["nightly"]
    prod_dir = Path(settings.projects_dir) / str(world["dst"])
    assert (prod_dir / "job.py").read_text() == "print('v1')\n"
    assert not (prod_dir / "old.txt").exists()
    with api.db.session() as sess:
        [job] = sess.scalars(select(Job).where(Job.project_id == world["dst"])).all()
        assert (job.name, job.cron, job.env) == ("nightly", "0 3 * * *", {"MODE": "full"})
        assert job.run_as_user_id == world["carol"].id  # acts as the approver, never the requester
        prod_secret = sess.scalars(select(EnvVar).where(
            EnvVar.scope == "p:%d" % world["dst"], EnvVar.name == "DB_PASSWORD")).one()
        assert prod_secret.value == "prod-secret-value"  # secrets are never copied
    assert c.post(d + "/promotions/%d/approve" % first["id"], json={}).status_code == 409

    second = ok(a.post(s + "/promotions", json={"target_project_id": world["dst"]}), 201)
    assert second["diff"]["files"]["changed"] == ["job.py"]
    ok(c.post(d + "/promotions/%d/approve" % second["id"], json={}))
    assert (prod_dir / "job.py").read_text() == "print('edited')\n"

    # only the latest applied promotion rolls back
    r = c.post(d + "/promotions/%d/rollback" % first["id"], json={})
    assert r.status_code == 409 and "promotion %d" % second["id"] in r.json()["error"]
    back = ok(c.post(d + "/promotions/%d/rollback" % second["id"], json={}))
    assert back["status"] == "rolled_back" and back["rolled_back_by"] == "carol"
    assert (prod_dir / "job.py").read_text() == "print('v1')\n"
    back = ok(c.post(d + "/promotions/%d/rollback" % first["id"], json={}))
    assert sorted(p.name for p in prod_dir.iterdir()) == ["README.md", "old.txt"]
    assert "churn-prod" in (prod_dir / "README.md").read_text()
    with api.db.session() as sess:
        [job] = sess.scalars(select(Job).where(Job.project_id == world["dst"])).all()
        assert job.enabled is False  # the promoted job is paused, its history kept

    history = ok(a.get(s + "/promotions"))
    assert [(h["id"], h["status"]) for h in history] == [(second["id"], "rolled_back"),
                                                        (first["id"], "rolled_back")]
    with api.db.session() as sess:
        actions = [e.action for e in sess.scalars(select(AuditEvent).where(
            AuditEvent.action.like("promotion.%")).order_by(AuditEvent.id))]
    assert actions == ["promotion.request", "promotion.approve", "promotion.request",
                       "promotion.approve", "promotion.rollback", "promotion.rollback"]


def test_reject_and_same_cluster_refused(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    a, c, s, d = world["a"], world["c"], world["s"], world["d"]
    p = ok(a.post(s + "/promotions", json={"target_project_id": world["dst"]}), 201)
    done = ok(c.post(d + "/promotions/%d/reject" % p["id"], json={"note": "not yet"}))
    assert (done["status"], done["review_note"]) == ("rejected", "not yet")
    assert not (Path(api.settings.projects_dir) / str(world["dst"]) / "job.py").exists()
    other = ok(a.post("/api/v1/projects", json={"name": "scratch"}), 201)
    ok(a.put("/api/v1/projects/%d/cluster" % other["id"], json={"cluster": "DEV"}))
    r = a.post(s + "/promotions", json={"target_project_id": other["id"]})
    assert r.status_code == 422 and "both on cluster DEV" in r.json()["error"]
    # a target the requester cannot see is not revealed
    hidden = ok(c.post("/api/v1/projects", json={"name": "hidden"}), 201)
    assert a.post(s + "/promotions", json={"target_project_id": hidden["id"]}).status_code == 404


def test_pages_show_review_controls_only_to_reviewers(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    a, c, s, d = world["a"], world["c"], world["s"], world["d"]
    page = a.get("/projects/%d/promotions" % world["src"])
    assert page.status_code == 200 and 'id="promotion-request"' in page.text
    assert "churn-prod (PROD)" in page.text and "cluster DEV" in page.text
    p = ok(a.post(s + "/promotions", json={"target_project_id": world["dst"]}), 201)
    mine = a.get("/projects/%d/promotions/%d" % (world["dst"], p["id"]))
    assert mine.status_code == 200 and 'id="approve"' not in mine.text
    assert "Waiting for review" in mine.text and "+ job.py" in mine.text
    theirs = c.get("/projects/%d/promotions/%d" % (world["dst"], p["id"]))
    assert 'id="approve"' in theirs.text and 'id="reject"' in theirs.text
    ok(c.post(d + "/promotions/%d/approve" % p["id"], json={}))
    theirs = c.get("/projects/%d/promotions/%d" % (world["dst"], p["id"]))
    assert 'id="rollback"' in theirs.text and "Approved by carol" in theirs.text
    history = c.get("/projects/%d/promotions" % world["dst"])
    assert 'data-promotion="%d"' % p["id"] in history.text and "approved" in history.text


def test_settings_page_moves_a_project_only_once_there_are_clusters(api: Api) -> None:
    alice = api.user("solo")
    a = api.client_for(alice)
    project = ok(a.post("/api/v1/projects", json={"name": "alone"}), 201)
    page = a.get("/projects/%d/settings" % project["id"])
    assert page.status_code == 200 and 'id="project-cluster"' not in page.text  # as before
    root = api.client_for(api.user("root1", admin=True))
    ok(root.post("/api/v1/clusters", json={"name": "PROD", "kind": "prod"}), 201)
    page = a.get("/projects/%d/settings" % project["id"])
    assert 'id="project-cluster"' in page.text and "PROD (prod, no grant)" in page.text
    assert 'value="default" selected' in page.text


def test_a_failed_approval_or_rollback_leaves_files_jobs_and_models_together(
        api: Api, world, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The disk fills up as the approval commits: the target keeps the files it had (its own
    .git included), no job appears, and the promotion stays pending; the same for a rollback."""
    a, c, s, d = world["a"], world["c"], world["s"], world["d"]
    prod_dir = Path(api.settings.projects_dir) / str(world["dst"])
    (prod_dir / ".git").mkdir()
    (prod_dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = sorted(str(p.relative_to(prod_dir)) for p in prod_dir.rglob("*"))
    first = ok(a.post(s + "/promotions", json={"target_project_id": world["dst"]}), 201)

    real_commit = Session.commit

    def full_disk(self: Session) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Session, "commit", full_disk)
    r = c.post(d + "/promotions/%d/approve" % first["id"], json={})
    monkeypatch.setattr(Session, "commit", real_commit)
    assert r.status_code == 507 and "nothing was saved" in r.text, r.text
    assert sorted(str(p.relative_to(prod_dir)) for p in prod_dir.rglob("*")) == before
    assert (prod_dir / "old.txt").read_text() == "prod only\n"
    with api.db.session() as sess:
        assert sess.scalars(select(Job).where(Job.project_id == world["dst"])).all() == []
    assert ok(c.get(d + "/promotions/%d" % first["id"]))["status"] == "pending"

    # it goes through once there is room; a rollback that fails keeps the promoted state
    ok(c.post(d + "/promotions/%d/approve" % first["id"], json={}))
    assert (prod_dir / "job.py").read_text() == "print('v1')\n"
    assert (prod_dir / ".git" / "HEAD").is_file()  # never part of a promotion
    ok(c.put(d + "/files/content", json={"path": "job.py", "content": "print('prod fix')\n"}))
    monkeypatch.setattr(Session, "commit", full_disk)
    r = c.post(d + "/promotions/%d/rollback" % first["id"], json={})
    monkeypatch.setattr(Session, "commit", real_commit)
    assert r.status_code == 507, r.text
    assert (prod_dir / "job.py").read_text() == "print('prod fix')\n"  # the edit since, kept
    assert ok(c.get(d + "/promotions/%d" % first["id"]))["status"] == "approved"
    ok(c.post(d + "/promotions/%d/rollback" % first["id"], json={}))
    assert sorted(p.name for p in prod_dir.iterdir()) == [".git", "README.md", "old.txt"]
    assert (prod_dir / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_a_project_is_created_on_a_cluster_its_creator_may_run_on(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    """The New Project page's cluster picker and the API's `cluster`: a project made on PROD
    runs there from the start; without a PROD grant, or naming no such cluster, nothing is
    made (no row, no folder), and the page offers PROD to no one without a grant."""
    a, c = world["a"], world["c"]
    folders = lambda: sorted(p.name for p in api.settings.projects_dir.iterdir()  # noqa: E731
                             if not p.name.startswith("."))
    before, listed = folders(), len(ok(a.get("/api/v1/projects")))
    r = a.post("/api/v1/projects", json={"name": "on prod", "cluster": "PROD"})
    assert r.status_code == 403 and "no grant on cluster PROD" in r.json()["error"], r.text
    r = a.post("/api/v1/projects", json={"name": "on qa", "cluster": "QA"})
    assert r.status_code == 422 and "no cluster named QA" in r.json()["error"], r.text
    r = a.post("/api/v1/projects/upload", data={"name": "up", "cluster": "PROD"},
               files={"archive": ("p.zip", _zip({"a.txt": "x"}), "application/zip")})
    assert r.status_code == 403, r.text
    assert folders() == before and len(ok(a.get("/api/v1/projects"))) == listed
    page = a.get("/projects/new").text
    assert '<option value="" >default (default)</option>' in page, page
    assert '<option value="PROD" disabled>PROD (prod, no grant)</option>' in page
    assert '<option value="DEV" >DEV (dev)</option>' in page

    made = ok(c.post("/api/v1/projects", json={"name": "on prod", "cluster": "PROD"}), 201)
    assert ok(c.get("/api/v1/projects/%d/cluster" % made["id"]))["cluster"] == "PROD"
    up = ok(c.post("/api/v1/projects/upload", data={"name": "up", "cluster": "PROD"},
                   files={"archive": ("p.zip", _zip({"a.txt": "x"}), "application/zip")}), 201)
    assert ok(c.get("/api/v1/projects/%d/cluster" % up["id"]))["cluster"] == "PROD"
    blank = ok(a.post("/api/v1/projects", json={"name": "plain"}), 201)
    assert ok(a.get("/api/v1/projects/%d/cluster" % blank["id"]))["cluster"] == "default"
    with api.db.session() as s:
        created = s.scalars(select(AuditEvent).where(AuditEvent.action == "project.create")
                            .order_by(AuditEvent.id.desc())).all()
        assert [e.detail.get("cluster") for e in created[:3]] == [None, "PROD", "PROD"]


def test_project_pages_show_where_the_work_runs(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    a = world["a"]
    for path in ("", "/sessions", "/jobs", "/models", "/experiments", "/files"):
        page = a.get("/projects/%d%s" % (world["src"], path))
        assert page.status_code == 200, (path, page.status_code)
        assert '<span class="badge" id="project-cluster-badge"' in page.text, path
        assert "cluster DEV (dev)</span>" in page.text, path


def test_one_cluster_shows_no_badge(api: Api) -> None:
    a = api.client_for(api.user("single"))
    project = ok(a.post("/api/v1/projects", json={"name": "only one"}), 201)
    page = a.get("/projects/%d" % project["id"])
    assert page.status_code == 200 and "project-cluster-badge" not in page.text


def test_the_admin_clusters_page(api: Api, world) -> None:  # type: ignore[no-untyped-def]
    page = world["root"].get("/admin/clusters")
    assert page.status_code == 200
    assert 'data-cluster="PROD"' in page.text and 'data-grantee="user carol"' in page.text
    assert "cdsw.cluster=PROD" in page.text and 'id="new-cluster"' in page.text
    assert world["a"].get("/admin/clusters").status_code == 403


def _zip(files: Dict[str, str]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()
