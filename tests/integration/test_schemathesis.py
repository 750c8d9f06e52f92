"""Schemathesis over the whole OpenAPI document, in process: no request may meet a 5xx.

The fuzzer signs in as a site administrator with an API key (Bearer header), so it reaches
every handler past the permission check. A few objects are seeded (a project with files, a
collaborator and a variable; a team with a member; an engine image and profile; a site
variable; a spare API key) and about half of the generated cases get the ids, names and file
paths of seeded objects, so handlers also run on things that exist, not only on 404s. Site
settings get one of their real keys (the document types `values` as a free-form object, which
the fuzzer alone would fill with unknown keys only).

Checks: no status >= 500 (schemathesis' not_a_server_error, plus the exception the in-process
transport raises for an unhandled error), and every JSON 4xx answer is {"error": <str>,
"detail": ...}.

Nothing is excluded. Cases that could end the run's own access are undone instead: before each
case the fuzzer's key is un-revoked and its user re-enabled as an administrator, seeded objects
a DELETE removed are recreated, and site settings go back to their defaults. Signing out is
harmless here (an API-key caller has no browser session to end). The cluster routes get the
cluster secret only for heartbeats (see the test).

test_text_that_is_not_unicode_is_refused sends every JSON-body operation strings that cannot
be encoded as UTF-8 (lone surrogates, which JSON allows as \\ud800 escapes): the fuzzer's own
strategies leave surrogates out (only the site-setting values given to it, JSON_VALUES, have
some), and such a string that gets stored breaks every later answer that shows it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from sqlalchemy import delete, select, update

from cdsw_agent.security import tokens
from cdsw_agent.server.routes.site_settings import SITE_SETTINGS
from cdsw_agent.store.jobs_models import Job, JobRun
from cdsw_agent.store.models_models import Model
from cdsw_agent.store.sessions_models import EngineSession
from cdsw_agent.store.models import (ApiKey, Cluster, ClusterGrant, Collaborator, EngineImage,
                                     EngineProfile, EnvVar, Project, SiteSetting, Team, TeamMember,
                                     User, utcnow)
from cdsw_agent.store.promotions_models import Promotion

from ..conftest import build_api, make_settings

OPENAPI = "/api/v1/openapi.json"
# Examples per operation (Hypothesis' max_examples); CDSW_FUZZ_EXAMPLES=500 for a deeper run.
MAX_EXAMPLES = int(os.environ.get("CDSW_FUZZ_EXAMPLES", "25"))
SETTING_KEYS = sorted(SITE_SETTINGS)
CLUSTER_SECRET = "fuzz-cluster-secret"
FILE_PATHS = ("", "README.md", "data", "data/x.csv", "data/", "missing")
_numbers = itertools.count(1)
# (operation, status) -> count: printed at the end (run with -s) to show what the fuzzer reached
STATS: Counter = Counter()

# any JSON value, strings sometimes with a lone surrogate
JSON_TEXT = st.text(max_size=20) | st.builds(lambda a, b: a + "\ud800" + b, st.text(max_size=3),
                                             st.text(max_size=3))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=5)


def _ok(r: Any, *codes: int) -> Any:
    assert r.status_code in codes, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                        r.status_code, r.text)
    return r.json() if r.content else None


@dataclass
class Target:
    """An app, an administrator's API key, and seeded objects (name -> id)."""
    app: Any
    db: Any
    headers: Dict[str, str]
    admin_key_id: int
    client: TestClient
    projects_dir: Path
    seeds: Dict[str, int] = field(default_factory=dict)

    def ensure_seeds(self) -> None:
        """Put back what earlier cases removed or broke; cheap when nothing did."""
        c, ids = self.client, self.seeds
        with self.db.session() as s:
            # the fuzzer may revoke its own key, disable or demote users: undo that first;
            # and site settings go back to their defaults (sign-up on, from the settings file)
            s.execute(delete(SiteSetting))
            s.execute(update(ApiKey).where(ApiKey.id == self.admin_key_id)
                      .values(revoked_at=None, expires_at=utcnow() + dt.timedelta(days=1)))
            s.execute(update(User).where(User.id == ids["user:admin"])
                      .values(is_active=True, is_admin=True))
            s.execute(update(User).where(User.id.in_([ids["user:member"],
                                                      ids["user:collaborator"]]))
                      .values(is_active=True))
            pid = ids.get("project", 0)
            have = dict(
                team=s.get(Team, ids.get("team", 0)) is not None,
                member=s.get(TeamMember, (ids.get("team", 0), ids["user:member"])) is not None,
                project=s.get(Project, pid) is not None,
                collaborator=s.get(Collaborator, (pid, ids["user:collaborator"])) is not None,
                project_env=s.scalar(select(EnvVar.id).where(
                    EnvVar.scope == "p:%d" % pid, EnvVar.name == "EXISTING")) is not None,
                image=s.get(EngineImage, ids.get("image", 0)) is not None,
                profile=s.get(EngineProfile, ids.get("profile", 0)) is not None,
                site_env=s.scalar(select(EnvVar.id).where(
                    EnvVar.scope == "site", EnvVar.name == "EXISTING")) is not None,
                spare_key=s.scalar(select(ApiKey.id).where(
                    ApiKey.id == ids.get("spare_key", 0), ApiKey.revoked_at.is_(None))) is not None,
                job=s.scalar(select(Job.id).where(Job.id == ids.get("job", 0),
                                                  Job.project_id == pid)) is not None,
                run=s.scalar(select(JobRun.id).where(JobRun.id == ids.get("run", 0),
                                                     JobRun.job_id == ids.get("job", 0))) is not None,
                model=s.scalar(select(Model.id).where(Model.id == ids.get("model", 0),
                                                      Model.project_id == pid)) is not None,
                session=s.scalar(select(EngineSession.id).where(
                    EngineSession.id == ids.get("session", 0),
                    EngineSession.project_id == pid)) is not None,
                cluster=s.get(Cluster, ids.get("cluster", 0)) is not None,
                grant=s.scalar(select(ClusterGrant.id).where(
                    ClusterGrant.id == ids.get("grant", 0),
                    ClusterGrant.cluster_id == ids.get("cluster", 0))) is not None,
                promotion=s.scalar(select(Promotion.id).where(
                    Promotion.id == ids.get("promotion", 0),
                    Promotion.target_project_id == pid)) is not None,
            )
        n = next(_numbers)  # fresh names: the fuzzer may have taken the old ones
        if not have["team"]:
            ids["team"] = _ok(c.post("/api/v1/teams", json={"name": "seed-team-%d" % n}), 201)["id"]
            have["member"] = False
        if not have["member"]:
            _ok(c.put("/api/v1/teams/%d/members/%d" % (ids["team"], ids["user:member"]),
                      json={"role": "member"}), 200)
        if not have["project"]:
            ids["project"] = _ok(c.post("/api/v1/projects", json={"name": "Seed %d" % n}), 201)["id"]
            have.update(collaborator=False, project_env=False)
        base = "/api/v1/projects/%d" % ids["project"]
        if not have["collaborator"]:
            _ok(c.put(base + "/collaborators/%d" % ids["user:collaborator"],
                      json={"role": "viewer"}), 200)
        if not have["project_env"]:
            _ok(c.put(base + "/env/EXISTING", json={"value": "1"}), 200)
        root = self.projects_dir / str(ids["project"])
        if not (root / "data").is_dir() or (root / "data").is_symlink():
            _ok(c.post(base + "/files/mkdir", json={"path": "data"}), 201)
        if not (root / "data" / "x.csv").is_file():
            _ok(c.put(base + "/files/content", json={"path": "data/x.csv",
                                                     "content": "a,b\n1,2\n"}), 200)
        if not (root / "README.md").is_file():
            _ok(c.put(base + "/files/content", json={"path": "README.md", "content": "# x\n"}), 200)
        if not (root / "job.py").is_file():
            _ok(c.put(base + "/files/content", json={"path": "job.py", "content": "print(1)\n"}), 200)
        if not have["job"]:
            ids["job"] = _ok(c.post(base + "/jobs", json={"name": "seed-job-%d" % n,
                                                          "script": "job.py"}), 201)["id"]
            have["run"] = False
        if not have["run"]:
            ids["run"] = _ok(c.post(base + "/jobs/%d/runs" % ids["job"]), 201, 409)
            ids["run"] = (ids["run"] or {}).get("id") or s_last_run(self.db, ids["job"])
        if not have["model"]:
            ids["model"] = _ok(c.post(base + "/models", json={
                "name": "seed-model-%d" % n, "file": "job.py", "function": "main"}), 201)["id"]
        if not have["session"]:
            # a finished session of the fuzzer's own user, made directly: starting a real engine
            # is not what this test is about, and its routes must handle a stopped one anyway
            with self.db.session() as s:
                row = EngineSession(project_id=ids["project"], user_id=ids["user:admin"],
                                    name="seed-session-%d" % n, kernel="python3",
                                    kernelspec="python3", status="stopped", reason="seeded",
                                    finished_at=utcnow())
                s.add(row)
                s.flush()
                ids["session"] = row.id
        if not have["image"]:
            ids["image"] = _ok(c.post("/api/v1/engine-images", json={
                "repository": "docker.repository.cloudera.com/cdsw/engine",
                "tag": "seed-%d" % n}), 201)["id"]
        if not have["profile"]:
            ids["profile"] = _ok(c.post("/api/v1/engine-profiles", json={
                "name": "seed %d" % n, "cpu": 1, "memory_gb": 2}), 201)["id"]
        if not have["site_env"]:
            _ok(c.put("/api/v1/admin/env/EXISTING", json={"value": "1"}), 200)
        if not have["spare_key"]:
            ids["spare_key"] = _ok(c.post("/api/v1/account/api-keys",
                                          json={"name": "spare-%d" % n}), 201)["id"]
        if not have["cluster"]:  # a second cluster, open to all
            ids["cluster"] = _ok(c.post("/api/v1/clusters", json={
                "name": "SEED%d" % n, "requires_grant": False}), 201)["id"]
            have.update(grant=False, promotion=False)
        if not have["grant"]:
            grants = _ok(c.post("/api/v1/clusters/%d/grants" % ids["cluster"],
                                json={"username": "seed-member"}), 201)["grants"]
            ids["grant"] = next(g["id"] for g in grants if g["grantee"] == "user seed-member")
        if not have["promotion"]:  # from a project on that cluster to the seeded project
            cluster = _ok(c.get("/api/v1/clusters/%d" % ids["cluster"]), 200)["name"]
            source = _ok(c.post("/api/v1/projects", json={"name": "Seed source %d" % n}), 201)
            _ok(c.put("/api/v1/projects/%d/cluster" % source["id"], json={"cluster": cluster}),
                200)
            ids["promotion"] = _ok(c.post("/api/v1/projects/%d/promotions" % source["id"], json={
                "target_project_id": ids["project"]}), 201)["id"]

    def existing(self, name: str, pick: int) -> Any:
        """The value of a seeded object for a path parameter, by parameter name."""
        ids = self.seeds
        return {
            "project_id": ids["project"],
            "team_id": ids["team"],
            "user_id": (ids["user:member"], ids["user:collaborator"], ids["user:admin"])[pick % 3],
            "image_id": ids["image"],
            "profile_id": ids["profile"],
            "key_id": ids["spare_key"],
            "job_id": ids["job"],
            "run_id": ids["run"],
            "model_id": ids["model"],
            "session_id": ids["session"],
            "cluster_id": ids["cluster"],
            "grant_id": ids["grant"],
            "promotion_id": ids["promotion"],
            "name": "EXISTING",
        }.get(name)


def s_last_run(db: Any, job_id: int) -> int:
    with db.session() as s:
        return s.scalar(select(JobRun.id).where(JobRun.job_id == job_id).order_by(JobRun.id.desc()))


def _make_target(data: Path) -> Target:
    # signup on, so the fuzzer gets past the "sign-up is off" answer into account creation;
    # git only from file:// URLs, so no generated URL reaches the network; a cluster secret, as
    # a started master always has (without one the cluster routes answer 503 by design); and a
    # Docker socket that does not exist, so nothing here can reach the host's Docker
    settings_ = make_settings(data, signup_enabled=True, allowed_git_schemes=["file"],
                              cluster_secret=CLUSTER_SECRET,
                              docker_host="unix://" + str(data.parent / "no-docker.sock"))
    api = build_api(settings_)
    admin = api.user(username="fuzz-admin", admin=True)
    member = api.user(username="seed-member")
    collaborator = api.user(username="seed-collaborator")
    key = tokens.new_token(tokens.API_KEY_PREFIX)
    with api.db.session() as s:
        row = ApiKey(user_id=admin.id, name="fuzzer", prefix=key[:12], key_hash=tokens.digest(key),
                     scope="write", expires_at=utcnow() + dt.timedelta(days=1))
        s.add(row)
        s.flush()
        key_id = row.id
    headers = {"Authorization": "Bearer " + key}
    # raise_server_exceptions=False: an unhandled error is the 500 a real client would see
    client = TestClient(api.client.app, headers=headers, raise_server_exceptions=False)
    target = Target(app=api.client.app, db=api.db, headers=headers, admin_key_id=key_id,
                    client=client, projects_dir=settings_.projects_dir,
                    seeds={"user:admin": admin.id, "user:member": member.id,
                           "user:collaborator": collaborator.id})
    target.ensure_seeds()
    return target


def _end_engines(data: Path) -> None:
    """The engines the fuzzer's calls started (sessions, runs) on the local backend: a master
    leaves them running for the next one to adopt; a test must not."""
    from cdsw_agent.orchestrators.local import LocalOrchestrator

    state = data / "orchestrator" / "local"
    if state.is_dir():
        orchestrator = LocalOrchestrator(state)
        for ref in orchestrator.list():
            orchestrator.remove(ref.id)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("schemathesis") / "data"
    target = _make_target(data)
    yield target
    _end_engines(data)
    if STATS:
        print("\nschemathesis: %d requests" % sum(STATS.values()))
        for label in sorted({op for op, _ in STATS}):
            print("  %-62s %s" % (label, " ".join("%d:%d" % (code, n) for (op, code), n
                                                   in sorted(STATS.items()) if op == label)))
    target.client.close()
    target.db.engine.dispose()


def _openapi_document() -> dict:
    """The OpenAPI document of the app as create_app builds it (no database is touched).

    The schema is loaded when the module is collected, so each operation is its own test
    item; the requests go to the fuzz_target app (`case.call(app=...)`). (Schemathesis'
    from_fixture() loader would be the other way, but it fails on pytest 9: it sets
    `request.node._nodeid`, which pytest 9 no longer has.)"""
    from cdsw_agent.server.app import create_app
    from cdsw_agent.store.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        db = Database("sqlite://")
        try:
            return create_app(make_settings(Path(tmp) / "data"), db).openapi()
        finally:
            db.engine.dispose()


DOCUMENT = _openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(max_examples=MAX_EXAMPLES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Schemathesis' pytest plugin names each operation's item test_no_server_errors[METHOD path]
    # but, on pytest 9, gives them all the same node id (it passes no callspec, and pytest 9
    # builds ids from callspecs). Parametrizing one more argument makes it pass a callspec, so
    # every item gets its own id: test_no_server_errors[GET /api/v1/users][sqlite].
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite"])


def _check_error_shape(label: str, status: int, content_type: str, text: str) -> None:
    if status >= 400 and content_type.startswith("application/json"):
        body = json.loads(text)
        if label.endswith((" /model", "/call-model")):  # refused calls add CDSW's `success: false` to the shape
            assert isinstance(body, dict) and set(body) - {"success"} == {"error", "detail"} \
                and body.get("success", False) is False \
                and isinstance(body.get("error"), str) and body["error"], \
                "%s answered %d with a body not in CDSW's model shape: %s" % (label, status,
                                                                              text[:300])
            return
        if " /mlflow/" in label:  # the MLflow API's own refusals add MLflow's shape to ours (its
            # client reads error_code); the app's (sign-in, JSON decoding) keep ours alone
            assert isinstance(body, dict) \
                and set(body) - {"error_code", "message"} == {"error", "detail"} \
                and isinstance(body["error"], str) and body["error"] \
                and isinstance(body.get("error_code", ""), str), \
                "%s answered %d with a body not in MLflow's and our shape: %s" % (label, status,
                                                                                 text[:300])
            return
        assert isinstance(body, dict) and set(body) == {"error", "detail"} \
            and isinstance(body["error"], str) and body["error"], \
            "%s answered %d with a body not shaped {error, detail}: %s" % (label, status, text[:300])


@schema.parametrize()
@schema.given(use_existing=st.booleans(), pick=st.integers(min_value=0, max_value=5),
              value=JSON_VALUES)
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, use_existing: bool, pick: int, value: Any,
                          fuzz_target: Target, backend: str) -> None:
    fuzz_target.ensure_seeds()
    if use_existing:
        for name in list(case.path_parameters or {}):
            existing = fuzz_target.existing(name, pick)
            if existing is not None:
                case.path_parameters[name] = existing
        if any(p["name"] == "path" and p["in"] == "query"
               for p in case.operation.definition.raw.get("parameters", [])):
            case.query = dict(case.query or {}, path=FILE_PATHS[pick])
        if isinstance(case.body, dict):
            for key in ("path", "source"):
                if key in case.body:
                    case.body[key] = FILE_PATHS[pick]
        if case.operation.label == "PATCH /api/v1/admin/settings":
            case.body = {"values": {SETTING_KEYS[pick % len(SETTING_KEYS)]: value}}
        # The right secret only for heartbeats: past the secret, join and leave drive the
        # master's Docker swarm (here an absent socket: a deliberate 503), so they are fuzzed
        # up to the secret check only.
        if case.operation.label == "POST /api/v1/cluster/heartbeat" and isinstance(case.body, dict):
            case.body["secret"] = CLUSTER_SECRET
    response = case.call(app=fuzz_target.app, headers=fuzz_target.headers)
    STATS[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=[not_a_server_error])
    _check_error_shape(case.operation.label, response.status_code,
                       (response.headers.get("content-type") or [""])[0],  # list values
                       response.content.decode("utf-8", "replace"))


# --- strings that are not Unicode text -------------------------------------------------------

def _resolve(node: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = DOCUMENT["components"]["schemas"][name]
    return node


def _sample(node: Dict[str, Any], text: str, free_key: str) -> Any:
    """A body of the schema's shape with `text` in every string slot; a free-form object
    (SettingsPatch.values) gets {free_key: text}."""
    node = _resolve(node)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node[key] if _resolve(o).get("type") != "null"]
            return _sample(options[0], text, free_key)
    kind = node.get("type")
    if kind == "object":
        if not node.get("properties") and node.get("additionalProperties") not in (None, False):
            return {free_key: text}
        return {k: _sample(v, text, free_key) for k, v in node.get("properties", {}).items()}
    if kind == "array":
        return [_sample(node.get("items", {}), text, free_key)]
    if "enum" in node:
        return node["enum"][0]
    return {"integer": 1, "number": 1.5, "boolean": False}.get(kind or "", text)


JSON_BODY_OPERATIONS = sorted(
    "%s %s" % (method.upper(), path)
    for path, item in DOCUMENT["paths"].items() for method, op in item.items()
    if "application/json" in op.get("requestBody", {}).get("content", {}))

# things every page reads: none of them may break after a write of bad text
READ_BACK = ("/api/v1/auth/me", "/api/v1/account", "/api/v1/admin/settings", "/api/v1/teams",
             "/api/v1/projects", "/api/v1/engine-images", "/api/v1/engine-profiles",
             "/api/v1/admin/env", "/api/v1/users", "/api/v1/account/api-keys")


@pytest.fixture(scope="module")
def probe_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("unicode") / "data"
    target = _make_target(data)
    yield target
    _end_engines(data)
    target.client.close()
    target.db.engine.dispose()


@pytest.mark.parametrize("operation", JSON_BODY_OPERATIONS)
def test_text_that_is_not_unicode_is_refused(operation: str, probe_target: Target) -> None:
    probe_target.ensure_seeds()
    method, path = operation.split(" ", 1)
    op = DOCUMENT["paths"][path][method.lower()]
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = probe_target.existing(param["name"], 0)
            assert value is not None, "no seeded value for {%s}" % param["name"]
            path = path.replace("{%s}" % param["name"], str(value))
    body_schema = op["requestBody"]["content"]["application/json"]["schema"]
    # one body; or, when it holds a free-form object, one per site setting key
    bodies = [_sample(body_schema, "bad\ud800text", key) for key in SETTING_KEYS]
    if len({json.dumps(b) for b in bodies}) == 1:
        bodies = bodies[:1]
    problems: List[str] = []
    for body in bodies:
        raw = json.dumps(body).encode("ascii")  # "\ud800" travels as a JSON escape, as JSON allows
        r = probe_target.client.request(method, path, content=raw,
                                        headers={"Content-Type": "application/json"})
        if r.status_code >= 500:
            problems.append("%s %s with %s answered %d: %s"
                            % (method, path, raw.decode()[:200], r.status_code, r.text[:200]))
        else:
            _check_error_shape(operation, r.status_code, r.headers.get("content-type", ""), r.text)
        for url in READ_BACK:
            after = probe_target.client.get(url)
            if after.status_code >= 500:
                problems.append("  then GET %s answered %d" % (url, after.status_code))
        probe_target.ensure_seeds()  # (settings back to defaults) before the next body
    assert not problems, "\n".join(problems)
