"""Permission-matrix rows and seed data for the MLflow tracking API; see test_permissions_matrix.py.

Every /mlflow route needs a signed-in caller; what it reaches is decided per object (an
experiment or run of a project: viewers read, contributors write, others get 404), which the
bogus bodies and empty queries of the matrix do not reach (they answer 400), except the artifact
routes, whose path names a real run: those rows show the project rule itself. MLflow's searches
are POSTs that only read: read-scoped keys may make them (a forged cookie may not: no CSRF)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

A = "/mlflow/api/2.0/mlflow"
F = "/mlflow/api/2.0/mlflow-artifacts/artifacts"
READ = "401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok\n"
SEARCH = "401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403\n"
WRITE = "401    ok     ok     ok     ok     ok     ok     ok     ok     ok     403    403\n"

ROWS = "# --- MLflow tracking API: signed in; the project rule per experiment or run\n" + "".join(
    "%-6s %-53s %s" % (method, path, cells) for method, path, cells in (
        ("POST", A + "/experiments/create", WRITE),
        ("GET", A + "/experiments/get", READ),
        ("GET", A + "/experiments/get-by-name", READ),
        ("POST", A + "/experiments/search", SEARCH),
        ("POST", A + "/experiments/delete", WRITE),
        ("POST", A + "/experiments/restore", WRITE),
        ("POST", A + "/experiments/update", WRITE),
        ("POST", A + "/experiments/set-experiment-tag", WRITE),
        ("POST", A + "/runs/create", WRITE),
        ("GET", A + "/runs/get", READ),
        ("POST", A + "/runs/update", WRITE),
        ("POST", A + "/runs/delete", WRITE),
        ("POST", A + "/runs/restore", WRITE),
        ("POST", A + "/runs/log-parameter", WRITE),
        ("POST", A + "/runs/log-metric", WRITE),
        ("POST", A + "/runs/set-tag", WRITE),
        ("POST", A + "/runs/delete-tag", WRITE),
        ("POST", A + "/runs/log-batch", WRITE),
        ("GET", A + "/metrics/get-history", READ),
        ("POST", A + "/runs/search", SEARCH),
        ("POST", A + "/logged-models/search", SEARCH),
        ("GET", F, READ),
        # a real run's artifact: viewers download, contributors upload
        ("GET", F + "/{artifact_path}",
         "401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok\n"),
        ("PUT", F + "/{artifact_path}",
         "401    404    403    403    ok     ok     ok     ok     ok     ok     403    403\n"),
    ))

DESTRUCTIVE: Set[str] = {"PUT " + F + "/{artifact_path}"}


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """An MLflow experiment, run and artifact in P and in TP."""
    for key, owner in (("P", "padmin"), ("TP", "tadmin")):
        c = as_(owner)
        project = c.get("/api/v1/projects/%d" % ids[key]).json()
        r = c.post(A + "/experiments/create",
                   json={"name": "%s/%s" % (project["owner"]["name"], project["slug"])})
        assert r.status_code == 200, r.text
        exp_id = int(r.json()["experiment_id"])
        r = c.post(A + "/runs/create", json={"experiment_id": str(exp_id)})
        assert r.status_code == 200, r.text
        run_id = int(r.json()["run"]["info"]["run_id"])
        path = "%d/%d/artifacts/model.txt" % (exp_id, run_id)
        r = c.put(F + "/" + path, content=b"weights")
        assert r.status_code == 200, r.text
        ids["mlflow_artifact:" + key] = path  # type: ignore[assignment]


def path_values(caller: str, ids: Dict[str, Any], project: str) -> Dict[str, Any]:
    return {"artifact_path": ids["mlflow_artifact:" + project]}
