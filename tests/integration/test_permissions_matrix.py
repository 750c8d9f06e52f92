"""Every route, every kind of caller: the allowed/denied answer, table-driven.

The table below (MATRIX) is written by hand from the product rules, not derived from
cdsw_agent.server.permissions.RULES, so a wrong rule (or a route wired to the wrong action)
makes it fail. One row per OpenAPI operation; a route added without a row fails
test_matrix_covers_every_route, and a route without a declared permission fails
test_every_route_declares_a_permission.

The callers (columns):
  anon      nobody signed in
  stranger  signed in, no relation to anything
  viewer    collaborator of P with the viewer role
  operator  collaborator of P with the operator role
  contrib   collaborator of P with the contributor role
  padmin    owner of P (the owning user is the project's admin)
  tmember   plain member of team T; acts on T's private project TP (team members are its
            contributors). On P a team member is just a stranger, which `stranger` covers.
  tadmin    administrator of team T; acts on TP (team admins are its project admins)
  sadmin    site administrator; acts on P
  key_w     a write-scoped API key of P's owner: must behave exactly like padmin
  key_r     a read-scoped API key of P's owner: like padmin on GET; 403 on other methods,
            except on public routes (sign-in, sign-up, sign-out, cluster membership)
  forged    padmin's session cookie without the X-CSRF-Token header (a cross-site request):
            like padmin on GET, 403 on anything else, public routes included

One more caller has its own small table (ADMIN_COLLABORATOR) instead of a column: `acollab`, a
collaborator of P with the admin role, who is a project admin in every way but one: only the
owner or a site administrator may transfer the project.

Cells: `ok` = allowed (any answer but 401/403/404, and no 5xx: every id in the request
exists), `401` = must sign in, `403` = may see the object but not do this, `404` = may not
even see it (private projects are never revealed to strangers, so never 403 there).

Allowed calls send a deliberately invalid body (`{"__bogus__": 1}`) to body routes, so they
stop at 422 after the permission check instead of changing anything; DELETE routes (and
sign-out) run against a fresh copy of the world. The world (users, sessions, keys, P, TP, T,
an engine image and profile, variables, files) is built once through the API into a template
data dir (SQLite + project folders); copies of it are cheap.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
from fastapi.routing import APIWebSocketRoute
from fastapi.testclient import TestClient

from cdsw_agent.orchestrators import shared_orchestrator
from cdsw_agent.security import tokens
from cdsw_agent.server import permissions
from cdsw_agent.server.state import ServerState
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import ApiKey, utcnow

from ..conftest import build_api, make_settings
from . import (matrix_clusters, matrix_experiments, matrix_inference_v2, matrix_mlflow,
               matrix_models, matrix_sessions)

# features whose rows, seed data and path values live in their own module (matrix_*.py)
EXTENSIONS = (matrix_sessions, matrix_experiments, matrix_models, matrix_mlflow,
              matrix_inference_v2, matrix_clusters)

CALLERS = ("anon", "stranger", "viewer", "operator", "contrib", "padmin", "tmember", "tadmin",
           "sadmin", "key_w", "key_r", "forged")

# fmt: off
MATRIX = """
#                                                            anon   strngr viewer operat contrb padmin tmembr tadmin sadmin key_w  key_r  forged
GET    /healthz                                              ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
# --- auth: public (sign-in and sign-up refuse the bogus body with 422; sign-out always 204)
POST   /api/v1/auth/signin                                   ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/auth/signout                                  ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
GET    /api/v1/auth/me                                       ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/auth/signup                                   ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
# --- one's own account
GET    /api/v1/account                                       401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/account                                       401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
PUT    /api/v1/account/password                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/account/api-keys                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/account/api-keys                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
DELETE /api/v1/account/api-keys/{key_id}                     401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/account/ssh-key                               401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/account/ssh-key/rotate                        401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/account/kerberos                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PUT    /api/v1/account/kerberos                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
DELETE /api/v1/account/kerberos                              401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
# --- users: a directory for everyone, administration for site admins
GET    /api/v1/users                                         401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/users                                         401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/users/{user_id}                               401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/users/{user_id}                               401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/users/{user_id}/details                       401    403    403    403    403    403    403    403    ok     403    403    403
# --- teams: anyone signed in may see and create teams; team admins (and site admins) change them
GET    /api/v1/teams                                         401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/teams                                         401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/teams/{team_id}                               401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/teams/{team_id}                               401    403    403    403    403    403    403    ok     ok     403    403    403
DELETE /api/v1/teams/{team_id}                               401    403    403    403    403    403    403    ok     ok     403    403    403
PUT    /api/v1/teams/{team_id}/members/{user_id}             401    403    403    403    403    403    403    ok     ok     403    403    403
DELETE /api/v1/teams/{team_id}/members/{user_id}             401    403    403    403    403    403    403    ok     ok     403    403    403
# --- projects
GET    /api/v1/projects                                      401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects                                      401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/templates                            401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/upload                               401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}                         401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/projects/{project_id}                         401    404    403    403    403    ok     403    ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}                         401    404    403    403    403    ok     403    ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/transfer                401    404    403    403    403    ok     403    ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/collaborators           401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PUT    /api/v1/projects/{project_id}/collaborators/{user_id} 401    404    403    403    403    ok     403    ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}/collaborators/{user_id} 401    404    403    403    403    ok     403    ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/env                     401    404    403    403    ok     ok     ok     ok     ok     ok     ok     ok
PUT    /api/v1/projects/{project_id}/env/{name}              401    404    403    403    403    ok     403    ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}/env/{name}              401    404    403    403    403    ok     403    ok     ok     ok     403    403
# --- project files: viewers read, contributors write
GET    /api/v1/projects/{project_id}/files                   401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
DELETE /api/v1/projects/{project_id}/files                   401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/files/content           401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PUT    /api/v1/projects/{project_id}/files/content           401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/files/upload            401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/files/download          401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/files/mkdir             401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/files/move              401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
# --- site administration: everyone may list images and profiles (to start sessions)
GET    /api/v1/engine-images                                 401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/engine-images                                 401    403    403    403    403    403    403    403    ok     403    403    403
PATCH  /api/v1/engine-images/{image_id}                      401    403    403    403    403    403    403    403    ok     403    403    403
DELETE /api/v1/engine-images/{image_id}                      401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/engine-profiles                               401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/engine-profiles                               401    403    403    403    403    403    403    403    ok     403    403    403
PUT    /api/v1/engine-profiles/{profile_id}                  401    403    403    403    403    403    403    403    ok     403    403    403
DELETE /api/v1/engine-profiles/{profile_id}                  401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/admin/env                                     401    403    403    403    403    403    403    403    ok     403    403    403
PUT    /api/v1/admin/env/{name}                              401    403    403    403    403    403    403    403    ok     403    403    403
DELETE /api/v1/admin/env/{name}                              401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/admin/settings                                401    403    403    403    403    403    403    403    ok     403    403    403
PATCH  /api/v1/admin/settings                                401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/admin/audit                                   401    403    403    403    403    403    403    403    ok     403    403    403
# --- Prometheus metrics: anonymous only from loopback, else site admins; TestClient's peer is
# "testclient", i.e. not loopback (the permission is `public`; the route checks the rest itself)
GET    /metrics                                              401    403    403    403    403    403    403    403    ok     403    403    403
# --- jobs and pipelines: read viewer, run/stop operator, create/edit/delete contributor
GET    /api/v1/projects/{project_id}/jobs                    401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/jobs                    401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/jobs/{job_id}           401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/projects/{project_id}/jobs/{job_id}           401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}/jobs/{job_id}           401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/jobs/{job_id}/runs      401    404    403    ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/jobs/{job_id}/runs      401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/jobs/{job_id}/runs/{run_id} 401 404 ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/jobs/{job_id}/runs/{run_id}/log 401 404 ok ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/jobs/{job_id}/runs/{run_id}/outputs 401 404 ok ok ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/jobs/{job_id}/runs/{run_id}/stop 401 404 403 ok   ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/pipeline                401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok

# --- cluster membership: public at the permission layer (workers prove themselves with the
# cluster secret in the body, checked after body validation: the bogus body gets 422); a browser
# session without its CSRF token is still refused
POST   /api/v1/cluster/join                                  ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/heartbeat                             ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/engine-nodes                          ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/leave                                 ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/storage                               ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/images                                ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/v1/cluster/images/export                         ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
GET    /api/v1/cluster/nodes                                 401    403    403    403    403    403    403    403    ok     403    403    403
"""
# fmt: on

def _parse(text: str) -> Dict[str, Dict[str, str]]:
    table: Dict[str, Dict[str, str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        method, path, *cells = line.split()
        key = "%s %s" % (method, path)
        assert len(cells) == len(CALLERS), "%s: %d cells, expected %d" % (key, len(cells), len(CALLERS))
        assert all(c in ("ok", "401", "403", "404") for c in cells), key
        assert key not in table, "duplicate row " + key
        table[key] = dict(zip(CALLERS, cells, strict=True))
    return table


EXPECTED = _parse(MATRIX + "".join(ext.ROWS for ext in EXTENSIONS))

# An Admin collaborator of P (not its owner), on the routes of project administrators
# fmt: off
ADMIN_COLLABORATOR = """
PATCH  /api/v1/projects/{project_id}                         ok
DELETE /api/v1/projects/{project_id}                         ok
POST   /api/v1/projects/{project_id}/transfer                403
PUT    /api/v1/projects/{project_id}/collaborators/{user_id} ok
DELETE /api/v1/projects/{project_id}/collaborators/{user_id} ok
PUT    /api/v1/projects/{project_id}/env/{name}              ok
DELETE /api/v1/projects/{project_id}/env/{name}              ok
PATCH  /api/v1/projects/{project_id}/jobs/{job_id}           ok
"""
# fmt: on
ACOLLAB_EXPECTED = {"%s %s" % tuple(line.split()[:2]): line.split()[2]
                    for line in ADMIN_COLLABORATOR.strip().splitlines()}


# --- the world ------------------------------------------------------------------------------

@dataclass
class Template:
    """A world built once: a data dir (SQLite database + project folders) and who is who."""
    root: Path
    ids: Dict[str, int] = field(default_factory=dict)
    # caller -> request headers that authenticate it
    headers: Dict[str, Dict[str, str]] = field(default_factory=dict)
    # caller -> id of a spare API key of its user (for DELETE /account/api-keys/{key_id})
    spare_key: Dict[str, int] = field(default_factory=dict)


def _ok(r: Any, *codes: int) -> Any:
    assert r.status_code in codes, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                        r.status_code, r.text)
    return r.json() if r.content and r.headers.get("content-type", "").startswith(
        "application/json") else None


def _build_template(root: Path) -> Template:
    data = root / "data"
    settings = make_settings(data)
    api = build_api(settings)
    t = Template(root=data)
    users = {name: api.user(username=name, admin=(name == "sadmin"))
             for name in ("padmin", "viewer", "operator", "contrib", "stranger", "tmember",
                          "tadmin", "sadmin", "victim", "acollab")}
    for name, u in users.items():
        t.ids["user:" + name] = u.id

    def as_(name: str) -> TestClient:
        return api.key_client(users[name])

    # team T (tadmin is its admin), with tmember and victim as plain members
    team = _ok(as_("tadmin").post("/api/v1/teams", json={"name": "team-t"}), 201)
    t.ids["team"] = team["id"]
    for member in ("tmember", "victim"):
        _ok(as_("tadmin").put("/api/v1/teams/%d/members/%d" % (team["id"], users[member].id),
                              json={"role": "member"}), 200)
    # P: private, owned by padmin; TP: private, owned by T
    p = _ok(as_("padmin").post("/api/v1/projects", json={"name": "Project P"}), 201)
    tp = _ok(as_("tadmin").post("/api/v1/projects", json={"name": "Project TP",
                                                          "owner_team_id": team["id"]}), 201)
    assert p["visibility"] == tp["visibility"] == "private"
    t.ids["P"], t.ids["TP"] = p["id"], tp["id"]
    for role in ("viewer", "operator", "contrib", "acollab"):
        _ok(as_("padmin").put("/api/v1/projects/%d/collaborators/%d" % (p["id"], users[role].id),
                              json={"role": {"contrib": "contributor",
                                             "acollab": "admin"}.get(role, role)}), 200)
    for pid, owner in ((p["id"], "padmin"), (tp["id"], "tadmin")):
        c = as_(owner)
        _ok(c.put("/api/v1/projects/%d/collaborators/%d" % (pid, users["victim"].id),
                  json={"role": "viewer"}), 200)
        _ok(c.put("/api/v1/projects/%d/env/EXISTING" % pid, json={"value": "1"}), 200)
        _ok(c.post("/api/v1/projects/%d/files/mkdir" % pid, json={"path": "notes"}), 201)
        _ok(c.put("/api/v1/projects/%d/files/content" % pid,
                  json={"path": "notes/doomed.txt", "content": "bye\n"}), 200)
    # a job with one run in P and in TP
    for key, pid, owner in (("P", p["id"], "padmin"), ("TP", tp["id"], "tadmin")):
        c = as_(owner)
        _ok(c.put("/api/v1/projects/%d/files/content" % pid,
                  json={"path": "job.py", "content": "print('ran')\n"}), 200)
        job = _ok(c.post("/api/v1/projects/%d/jobs" % pid, json={"name": "nightly", "script": "job.py"}),
                  201)
        run = _ok(c.post("/api/v1/projects/%d/jobs/%d/runs" % (pid, job["id"])), 201)
        t.ids["job:" + key], t.ids["run:" + key] = job["id"], run["id"]
    for ext in EXTENSIONS:
        ext.seed(as_, t.ids)
    admin = as_("sadmin")
    t.ids["image"] = _ok(admin.post("/api/v1/engine-images", json={
        "repository": "docker.repository.cloudera.com/cdsw/engine", "tag": "8"}), 201)["id"]
    t.ids["profile"] = _ok(admin.post("/api/v1/engine-profiles", json={
        "name": "small", "cpu": 1, "memory_gb": 2}), 201)["id"]
    _ok(admin.put("/api/v1/admin/env/EXISTING", json={"value": "1"}), 200)

    # how each caller authenticates: browser sessions (cookie + CSRF header) or API keys
    t.headers["anon"] = {}
    for name in ("stranger", "viewer", "operator", "contrib", "padmin", "tmember", "tadmin",
                 "sadmin", "acollab"):
        c = api.client_for(users[name])
        t.headers[name] = {"Cookie": "cdsw_session=" + c.cookies["cdsw_session"],
                           "X-CSRF-Token": c.headers["X-CSRF-Token"]}
    # a cross-site request: padmin's browser sends the session cookie but not the CSRF token
    t.headers["forged"] = {"Cookie": t.headers["padmin"]["Cookie"]}
    t.headers["key_w"] = {"Authorization": "Bearer " + api.api_key(users["padmin"], "write")}
    t.headers["key_r"] = {"Authorization": "Bearer " + api.api_key(users["padmin"], "read")}

    # a spare API key per user, for revoking
    with api.db.session() as s:
        for name, u in users.items():
            key = tokens.new_token(tokens.API_KEY_PREFIX)
            row = ApiKey(user_id=u.id, name="spare", prefix=key[:12], key_hash=tokens.digest(key),
                         scope="write", expires_at=utcnow() + dt.timedelta(days=1))
            s.add(row)
            s.flush()
            t.ids["key:" + name] = row.id
    for caller in CALLERS:
        user = {"anon": "padmin", "key_w": "padmin", "key_r": "padmin",
                "forged": "padmin"}.get(caller, caller)
        t.spare_key[caller] = t.ids["key:" + user]
    t.spare_key["acollab"] = t.ids["key:acollab"]
    _stop_engines(api)
    api.db.engine.dispose()  # closes SQLite, folding the WAL into the database file
    return t


def _stop_engines(api: Any) -> None:
    """Stops every engine the seeding started (job and experiment runs, the stopped sessions'
    kernels) and waits for each to end: the template is copied for every destructive call, and
    an engine still writing into it (IPython's history.sqlite-journal) makes the copy fail."""
    orch = shared_orchestrator(api.client.app.state.server)
    for ref in orch.list():
        orch.stop(ref.id, timeout=5.0)
    deadline = time.monotonic() + 30
    for ref in orch.list():
        while not orch.status(ref.id).final:
            assert time.monotonic() < deadline, "engine %s did not end" % ref.id
            time.sleep(0.05)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return _build_template(tmp_path_factory.mktemp("matrix-template"))


_copies = itertools.count(1)


class World:
    """A private copy of the template, served by an app.

    Building an app costs a few hundred milliseconds (FastAPI prepares every route on its first
    request), so `reset` keeps the app and swaps in a fresh copy of the data dir and database."""

    def __init__(self, template: Template, base: Path):
        from cdsw_agent.server.app import create_app

        self.template, self.base = template, base
        self.settings, self.db = self._copy()
        self.app = create_app(self.settings, self.db)
        self.client = TestClient(self.app)

    def _copy(self) -> Tuple[Any, Database]:
        data = self.base / ("world-%d" % next(_copies))
        shutil.copytree(self.template.root, data)
        settings = make_settings(data)
        return settings, Database(settings.database_url)

    def reset(self) -> None:
        self.db.engine.dispose()
        shutil.rmtree(self.settings.data_dir, ignore_errors=True)
        self.settings, self.db = self._copy()
        self.app.state.server = ServerState.create(self.settings, self.db)

    def close(self) -> None:
        self.client.close()
        self.db.engine.dispose()


@pytest.fixture(scope="module")
def shared_world(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One copy for the calls that change nothing (reads, and writes refused with 422)."""
    w = World(template, tmp_path_factory.mktemp("matrix-shared"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def fresh_world(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """For destructive calls: reset to a fresh copy before each one."""
    w = World(template, tmp_path_factory.mktemp("matrix-fresh"))
    yield w
    w.close()


# --- requests ---------------------------------------------------------------------------------

def _openapi_operations(app: Any) -> Dict[str, dict]:
    ops = {}
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "patch", "delete", "head", "options", "trace"):
                ops["%s %s" % (method.upper(), path)] = op
    return ops


def _target_project(caller: str) -> str:
    return "TP" if caller in ("tmember", "tadmin") else "P"


def _request_for(key: str, op: dict, caller: str, t: Template) -> Tuple[str, str, Dict[str, Any]]:
    method, template_path = key.split(" ", 1)
    values = {
        "project_id": t.ids[_target_project(caller)],
        "job_id": t.ids["job:" + _target_project(caller)],
        "run_id": t.ids["run:" + _target_project(caller)],
        "team_id": t.ids["team"],
        "image_id": t.ids["image"],
        "profile_id": t.ids["profile"],
        "key_id": t.spare_key[caller],
        "name": "EXISTING",
        # a collaborator of P and TP, a member of T, and an ordinary user
        "user_id": t.ids["user:victim"],
    }
    for ext in EXTENSIONS:
        values.update(ext.path_values(caller, t.ids, _target_project(caller)))
    path = template_path
    for name, value in values.items():
        path = path.replace("{%s}" % name, str(value))
    assert "{" not in path, "no value for a path parameter of %s; add one to _request_for" % key
    kwargs: Dict[str, Any] = {}
    params = {p["name"]: p for p in op.get("parameters", []) if p.get("in") == "query"}
    if "path" in params:  # files routes: a file that exists (the folder root for listings)
        kwargs["params"] = {"path": "notes/doomed.txt" if method == "DELETE" or
                            template_path.endswith(("/content", "/download")) else ""}
    if "requestBody" in op:
        kwargs["json"] = {"__bogus__": 1}
    return method, path, kwargs


def _destructive(key: str) -> bool:
    return key.startswith("DELETE ") or any(key in ext.DESTRUCTIVE for ext in EXTENSIONS) or key in (
        "POST /api/v1/auth/signout",
        "POST /api/v1/projects/{project_id}/jobs/{job_id}/runs",  # starts a real run
        "POST /api/v1/projects/{project_id}/jobs/{job_id}/runs/{run_id}/stop")


CASES = [(key, caller) for key in EXPECTED for caller in CALLERS]


@pytest.fixture(scope="module")
def operations(shared_world: World) -> Dict[str, dict]:
    return _openapi_operations(shared_world.app)


@pytest.mark.parametrize("key,caller", CASES, ids=["%s|%s" % c for c in CASES])
def test_matrix(key: str, caller: str, template: Template, shared_world: World,
                fresh_world: World, operations: Dict[str, dict]) -> None:
    assert key in operations, "%s is in the matrix but is not a route" % key
    expected = EXPECTED[key][caller]
    method, path, kwargs = _request_for(key, operations[key], caller, template)
    world = shared_world
    if _destructive(key):
        world = fresh_world
        world.reset()
    r = world.client.request(method, path, headers=template.headers[caller], **kwargs)
    what = "%s as %s (%s %s) answered %d: %s" % (key, caller, method, path, r.status_code,
                                                r.text[:300])
    assert r.status_code < 500, what
    if expected == "ok":
        assert r.status_code not in (401, 403, 404), "expected allowed: " + what
    else:
        assert r.status_code == int(expected), "expected %s: %s" % (expected, what)
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body, what


@pytest.mark.parametrize("key", sorted(ACOLLAB_EXPECTED))
def test_admin_collaborator(key: str, template: Template, shared_world: World,
                            fresh_world: World, operations: Dict[str, dict]) -> None:
    assert key in operations, "%s is in ADMIN_COLLABORATOR but is not a route" % key
    expected = ACOLLAB_EXPECTED[key]
    method, path, kwargs = _request_for(key, operations[key], "acollab", template)
    world = shared_world
    if _destructive(key):
        world = fresh_world
        world.reset()
    r = world.client.request(method, path, headers=template.headers["acollab"], **kwargs)
    what = "%s as acollab answered %d: %s" % (key, r.status_code, r.text[:300])
    assert r.status_code < 500, what
    if expected == "ok":
        assert r.status_code not in (401, 403, 404), "expected allowed: " + what
    else:
        assert r.status_code == int(expected), "expected %s: %s" % (expected, what)


# --- the table and the app agree -------------------------------------------------------------

def test_matrix_covers_every_route(shared_world: World) -> None:
    ops = set(_openapi_operations(shared_world.app))
    missing = sorted(ops - set(EXPECTED))
    assert not missing, "routes without a row in MATRIX (add one, by hand): %s" % missing
    stale = sorted(set(EXPECTED) - ops)
    assert not stale, "rows in MATRIX for routes that do not exist: %s" % stale


def _route_contexts(app: Any) -> Iterator[Any]:
    """Every mounted route, through FastAPI's included-router wrappers."""
    def walk(routes: List[Any]) -> Iterator[Any]:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # fastapi _IncludedRouter
                yield from route.effective_route_contexts()
            elif hasattr(route, "original_router"):
                yield from walk(route.original_router.routes)
            else:
                yield route
    yield from walk(app.router.routes)


def _actions(dependant: Any) -> Iterator[str]:
    for dep in getattr(dependant, "dependencies", []) or []:
        action = getattr(dep.call, "permission_action", None)
        if action is not None:
            yield action
        yield from _actions(dep)


def test_every_route_declares_a_permission(shared_world: World) -> None:
    app = shared_world.app
    docs = {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url}
    # The web UI's static files (our CSS/JS and the npm libraries) are public by nature: the
    # same bytes for everyone, no user data. Only these two mounts, and only as StaticFiles.
    from starlette.staticfiles import StaticFiles
    static_mounts = {"/static", "/vendor"}
    seen: Set[str] = set()
    undeclared, unknown, unexplained = [], [], []
    for route in _route_contexts(app):
        # WebSocket routes come through FastAPI's wrapper without path or dependant
        if getattr(route, "dependant", None) is None \
                and getattr(route, "starlette_route", None) is not None:
            route = route.starlette_route
        path = re.sub(r":\w+}", "}", getattr(route, "path", ""))  # {path:path} as in OpenAPI
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            if path in static_mounts and isinstance(getattr(route, "app", None), StaticFiles):
                continue
            if path not in docs:
                unexplained.append("%s %s" % (type(route).__name__, path))
            continue
        actions = list(_actions(dependant))
        # a WebSocket route has no HTTP methods, but must declare its permission all the same
        methods = getattr(route, "methods", None) or (
            ["WEBSOCKET"] if isinstance(route, APIWebSocketRoute) else [])
        for method in sorted(methods):
            key = "%s %s" % (method, path)
            seen.add(key)
            if not actions:
                undeclared.append(key)
            elif len(set(actions)) > 1:
                unknown.append("%s declares several actions %s" % (key, sorted(set(actions))))
            for a in actions:
                if a not in permissions.RULES:
                    unknown.append("%s: action %r has no rule" % (key, a))
    assert not undeclared, "routes without `access: Access = require(...)`: %s" % undeclared
    assert not unknown, unknown
    assert not unexplained, "routes outside FastAPI's API routes (no permission check): %s" \
        % unexplained
    # the walk found the same routes as the OpenAPI document (a check on the walk itself)
    assert set(_openapi_operations(app)) <= seen, sorted(set(_openapi_operations(app)) - seen)
