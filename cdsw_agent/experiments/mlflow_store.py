"""The MLflow tracking store over the workbench's experiments: what the MLflow REST API
(server/routes/mlflow.py) reads and writes, in MLflow's JSON shapes.

Mapping, decided once here:
- an MLflow experiment belongs to one project and is named after it: ``OWNER/PROJECT`` (the
  project's own experiment; engines set MLFLOW_EXPERIMENT_NAME to it) or ``OWNER/PROJECT/NAME``
  for more, where OWNER is the owning user's name or team's name and PROJECT the project's slug
  as in its URL. A name that names no project is refused;
- an MLflow run is a workbench experiment run (experiment_runs, tracker "mlflow"), so it is
  listed on the project's experiments page beside the script runs; the run id is that run's
  number. Params, tags and each metric value with its step live in store/mlflow_models.py; the
  last value of each metric is also kept on the run, as for `cdsw.track_metric`;
- artifacts are the run's tracked files (DATA_DIR's experiment artifacts folder), listed on
  the page and downloadable there too.

Permission checks are the caller's (the route's): this module only finds and changes things.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.experiments_models import ACTIVE_STATUSES, ExperimentRun
from ..store.mlflow_models import MlflowExperiment, MlflowMetric, MlflowRun
from ..store.models import Project, Team, User, utcnow

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_BATCH = 1000
MAX_RESULTS = 50000
TO_MLFLOW = {"queued": "SCHEDULED", "running": "RUNNING", "succeeded": "FINISHED",
             "failed": "FAILED", "timed_out": "FAILED", "lost": "FAILED", "stopped": "KILLED"}
FROM_MLFLOW = {"SCHEDULED": "queued", "RUNNING": "running", "FINISHED": "succeeded",
               "FAILED": "failed", "KILLED": "stopped"}
ERROR_STATUS = {"INVALID_PARAMETER_VALUE": 400, "RESOURCE_ALREADY_EXISTS": 400,
                "RESOURCE_DOES_NOT_EXIST": 404, "PERMISSION_DENIED": 403,
                "UNAUTHENTICATED": 401, "INTERNAL_ERROR": 500}


class MlflowError(Exception):
    """An answer in MLflow's error shape: {"error_code": code, "message": message}."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message, self.status = code, message, ERROR_STATUS.get(code, 400)


def invalid(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message)


def missing(message: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message)


def ms(when: Optional[dt.datetime]) -> Optional[int]:
    return None if when is None else int(when.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def from_ms(value: Optional[int]) -> Optional[dt.datetime]:
    return None if value is None else dt.datetime.utcfromtimestamp(value / 1000.0)


def now_ms() -> int:
    return ms(utcnow()) or 0


# --- experiments --------------------------------------------------------------------------

def project_named(db: Session, name: str) -> Optional[Project]:
    """The project an experiment name belongs to (OWNER/PROJECT[/NAME]), or None."""
    parts = name.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    namespaces = []
    user = db.scalar(select(User).where(User.username == parts[0]))
    if user is not None:
        namespaces.append("u:%d" % user.id)
    team = db.scalar(select(Team).where(Team.name == parts[0]))
    if team is not None:
        namespaces.append("t:%d" % team.id)
    if not namespaces:
        return None
    return db.scalar(select(Project).where(Project.namespace.in_(namespaces),
                                           Project.slug == parts[1]))


def project_experiment_name(project: Project) -> str:
    return "%s/%s" % (project.owner_name, project.slug)


def _tags(raw: Any, limit: int = MAX_TAG_VALUE) -> Dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise invalid("tags must be a list of {key, value}")
    out = {}
    for t in raw:
        if not isinstance(t, dict):
            raise invalid("tags must be a list of {key, value}")
        out[_key(t.get("key"), "tag")] = _text(t.get("value", ""), "tag value", limit)
    return out


def _key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or "\x00" in key:
        raise invalid("%s key must be a string of 1 to %d characters" % (what, MAX_KEY))
    return key


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit:
        raise invalid("%s is longer than %d characters" % (what, limit))
    return value


def experiment_json(exp: MlflowExperiment) -> Dict[str, Any]:
    return {"experiment_id": str(exp.id), "name": exp.name,
            "artifact_location": "mlflow-artifacts:/%d" % exp.id,
            "lifecycle_stage": exp.lifecycle_stage,
            "creation_time": ms(exp.created_at), "last_update_time": ms(exp.updated_at),
            "tags": [{"key": k, "value": v} for k, v in sorted((exp.tags or {}).items())]}


def create_experiment(db: Session, project: Project, name: str, tags: Any) -> MlflowExperiment:
    if db.scalar(select(MlflowExperiment.id).where(MlflowExperiment.name == name)) is not None:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", "an experiment named %s already exists"
                          % name)
    exp = MlflowExperiment(project_id=project.id, name=name, lifecycle_stage="active",
                           tags=_tags(tags), created_at=utcnow(), updated_at=utcnow())
    db.add(exp)
    db.flush()
    return exp


def experiment(db: Session, experiment_id: Any) -> Optional[MlflowExperiment]:
    number = _number(experiment_id)
    return db.get(MlflowExperiment, number) if number else None


def experiment_by_name(db: Session, name: str) -> Optional[MlflowExperiment]:
    return db.scalar(select(MlflowExperiment).where(MlflowExperiment.name == name))


def _number(raw: Any) -> Optional[int]:
    text = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    return int(text) if text.isdigit() and 0 < int(text) < 2**62 else None


def _view_ok(stage: str, view: Any) -> bool:
    view = view or "ACTIVE_ONLY"
    return view == "ALL" or (view == "ACTIVE_ONLY") == (stage == "active")


def search_experiments(db: Session, project_ids: Sequence[int], body: Dict[str, Any]
                       ) -> Dict[str, Any]:
    exps = db.scalars(select(MlflowExperiment).where(
        MlflowExperiment.project_id.in_(list(project_ids))).order_by(MlflowExperiment.id)).all()
    clauses = parse_filter(body.get("filter") or "")
    rows = [e for e in exps if _view_ok(e.lifecycle_stage, body.get("view_type"))
            and all(_match(_experiment_value(e, c[0], c[1]), c[2], c[3]) for c in clauses)]
    rows = _ordered(rows, body.get("order_by") or ["last_update_time DESC"],
                    lambda e, kind, key: _experiment_value(e, kind, key))
    page, token = _page(rows, body)
    out: Dict[str, Any] = {"experiments": [experiment_json(e) for e in page]}
    if token:
        out["next_page_token"] = token
    return out


def _experiment_value(e: MlflowExperiment, kind: str, key: str) -> Any:
    if kind == "tags":
        return (e.tags or {}).get(key)
    return {"name": e.name, "experiment_id": str(e.id), "creation_time": ms(e.created_at),
            "last_update_time": ms(e.updated_at)}.get(key)


# --- runs ---------------------------------------------------------------------------------

def run(db: Session, run_id: Any) -> Optional[MlflowRun]:
    number = _number(run_id)
    return db.get(MlflowRun, number) if number else None


def run_json(db: Session, r: MlflowRun) -> Dict[str, Any]:
    base = r.run
    latest: Dict[str, MlflowMetric] = {}
    for m in db.scalars(select(MlflowMetric).where(MlflowMetric.run_id == r.run_id)):
        cur = latest.get(m.key)
        if cur is None or (m.step, m.timestamp) >= (cur.step, cur.timestamp):
            latest[m.key] = m
    tags = dict(r.tags or {})
    tags.setdefault("mlflow.runName", r.name)
    info = {"run_id": str(r.run_id), "run_uuid": str(r.run_id), "run_name": r.name,
            "experiment_id": str(r.experiment_id),
            "user_id": base.launched_by.username if base.launched_by else "",
            "status": TO_MLFLOW.get(base.status, "FAILED"), "start_time": r.start_time,
            "artifact_uri": "mlflow-artifacts:/%d/%d/artifacts" % (r.experiment_id, r.run_id),
            "lifecycle_stage": r.lifecycle_stage}
    if r.end_time is not None:
        info["end_time"] = r.end_time
    return {"info": info, "data": {
        "metrics": [_metric_json(m) for _, m in sorted(latest.items())],
        "params": [{"key": k, "value": v} for k, v in sorted((r.params or {}).items())],
        "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]}, "inputs": {}}


def _metric_json(m: MlflowMetric) -> Dict[str, Any]:
    value: Any = m.value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = "NaN"
    return {"key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step}


def create_run(db: Session, exp: MlflowExperiment, user: User, body: Dict[str, Any]
               ) -> MlflowRun:
    if exp.lifecycle_stage != "active":
        raise invalid("experiment %d is deleted; restore it first" % exp.id)
    tags = _tags(body.get("tags"))
    name = _text(body.get("run_name") or tags.get("mlflow.runName") or "", "run_name", 250)
    start = _int(body.get("start_time"), "start_time") or now_ms()
    base = ExperimentRun(project_id=exp.project_id, tracker="mlflow",
                         script=tags.get("mlflow.source.name", "mlflow")[:1024] or "mlflow",
                         arguments="", comment=name, status="running", reason="",
                         finalized=True, metrics={}, files=[], snapshot={},
                         launched_by_id=user.id, created_at=utcnow(), started_at=from_ms(start))
    db.add(base)
    db.flush()
    if not name:
        name = "run-%d" % base.id
        base.comment = name
    tags["mlflow.runName"] = name
    tags.setdefault("mlflow.user", user.username)
    r = MlflowRun(run_id=base.id, experiment_id=exp.id, name=name, lifecycle_stage="active",
                  params={}, tags=tags, start_time=start, end_time=None)
    db.add(r)
    db.flush()
    return r


def _int(raw: Any, what: str) -> Optional[int]:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise invalid("%s must be an integer" % what)


def update_run(r: MlflowRun, body: Dict[str, Any]) -> None:
    status = body.get("status")
    if status is not None:
        if status not in FROM_MLFLOW:
            raise invalid("status must be one of %s" % ", ".join(FROM_MLFLOW))
        r.run.status = FROM_MLFLOW[status]
        if r.run.status not in ACTIVE_STATUSES:
            r.end_time = _int(body.get("end_time"), "end_time") or now_ms()
            r.run.finished_at = from_ms(r.end_time)
            r.run.exit_code = 0 if status == "FINISHED" else 1
            r.run.reason = "" if status == "FINISHED" else "ended %s by the MLflow client" % status
        else:
            r.end_time, r.run.finished_at = None, None
    name = body.get("run_name")
    if name:
        r.name = r.run.comment = _text(name, "run_name", 250)
        r.tags = dict(r.tags or {}, **{"mlflow.runName": r.name})


def _writable(r: MlflowRun) -> None:
    if r.lifecycle_stage != "active":
        raise invalid("run %d is deleted; restore it before logging to it" % r.run_id)


def log_params(r: MlflowRun, params: Iterable[Dict[str, Any]]) -> None:
    _writable(r)
    current = dict(r.params or {})
    for p in params:
        if not isinstance(p, dict):
            raise invalid("params must be a list of {key, value}")
        key = _key(p.get("key"), "param")
        value = _text(p.get("value", ""), "param value", MAX_PARAM_VALUE)
        if key in current and current[key] != value:
            raise invalid("param %s was already logged with value %r for run %d; params "
                          "cannot change" % (key, current[key], r.run_id))
        current[key] = value
    r.params = current


def set_tags(r: MlflowRun, tags: Iterable[Dict[str, Any]]) -> None:
    _writable(r)
    current = dict(r.tags or {})
    for t in tags:
        if not isinstance(t, dict):
            raise invalid("tags must be a list of {key, value}")
        current[_key(t.get("key"), "tag")] = _text(t.get("value", ""), "tag value",
                                                  MAX_TAG_VALUE)
    r.tags = current
    if current.get("mlflow.runName"):
        r.name = r.run.comment = current["mlflow.runName"][:250]


def delete_tag(r: MlflowRun, key: Any) -> None:
    current = dict(r.tags or {})
    if key not in current:
        raise missing("run %d has no tag %s" % (r.run_id, key))
    del current[key]
    r.tags = current


def _value(raw: Any) -> float:
    if isinstance(raw, str) and raw in ("NaN", "Infinity", "-Infinity"):
        return float(raw.replace("Infinity", "inf"))
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise invalid("a metric value must be a number")
    return float(raw)


def log_metrics(db: Session, r: MlflowRun, metrics: Iterable[Dict[str, Any]]) -> None:
    _writable(r)
    last = dict(r.run.metrics or {})
    steps: Dict[str, Tuple[int, int]] = {}
    for m in metrics:
        if not isinstance(m, dict):
            raise invalid("metrics must be a list of {key, value, timestamp, step}")
        key = _key(m.get("key"), "metric")
        value = _value(m.get("value"))
        stamp = _int(m.get("timestamp"), "timestamp") or now_ms()
        step = _int(m.get("step"), "step") or 0
        db.add(MlflowMetric(run_id=r.run_id, key=key, value=value, timestamp=stamp, step=step))
        if key not in steps:
            prev = db.execute(select(MlflowMetric.step, MlflowMetric.timestamp).where(
                MlflowMetric.run_id == r.run_id, MlflowMetric.key == key).order_by(
                MlflowMetric.step.desc(), MlflowMetric.timestamp.desc()).limit(1)).first()
            steps[key] = (prev[0], prev[1]) if prev else (-2**62, 0)
        if (step, stamp) >= steps[key]:
            steps[key] = (step, stamp)
            last[key] = value if math.isfinite(value) else str(value)
    r.run.metrics = last


def metric_history(db: Session, r: MlflowRun, key: str) -> List[Dict[str, Any]]:
    rows = db.scalars(select(MlflowMetric).where(
        MlflowMetric.run_id == r.run_id, MlflowMetric.key == key).order_by(
        MlflowMetric.step, MlflowMetric.timestamp, MlflowMetric.id)).all()
    return [_metric_json(m) for m in rows]


def histories(db: Session, run_id: int) -> Dict[str, List[List[float]]]:
    """Every metric of a run as [[step, value], ...] by step (for the experiments page)."""
    out: Dict[str, List[List[float]]] = {}
    for m in db.scalars(select(MlflowMetric).where(MlflowMetric.run_id == run_id).order_by(
            MlflowMetric.key, MlflowMetric.step, MlflowMetric.timestamp, MlflowMetric.id)):
        if m.value is not None and math.isfinite(m.value):
            out.setdefault(m.key, []).append([m.step, m.value])
    return out


def search_runs(db: Session, experiments: Sequence[MlflowExperiment], body: Dict[str, Any]
                ) -> Dict[str, Any]:
    ids = [e.id for e in experiments]
    runs = db.scalars(select(MlflowRun).where(MlflowRun.experiment_id.in_(ids))).all() \
        if ids else []
    clauses = parse_filter(body.get("filter") or "")
    view = body.get("run_view_type")
    shaped = [(r, run_json(db, r)) for r in runs if _view_ok(r.lifecycle_stage, view)]
    rows = [(r, j) for r, j in shaped
            if all(_match(_run_value(j, c[0], c[1]), c[2], c[3]) for c in clauses)]
    rows = _ordered(rows, body.get("order_by") or [],
                    lambda rj, kind, key: _run_value(rj[1], kind, key), default_desc="start_time")
    page, token = _page(rows, body)
    out: Dict[str, Any] = {"runs": [j for _, j in page]}
    if token:
        out["next_page_token"] = token
    return out


def _run_value(j: Dict[str, Any], kind: str, key: str) -> Any:
    data = j["data"]
    if kind in ("metrics", "params", "tags"):
        for item in data[kind]:
            if item["key"] == key:
                return item["value"]
        return None
    info = j["info"]
    key = {"run_name": "run_name", "status": "status", "start_time": "start_time",
           "end_time": "end_time", "run_id": "run_id", "user_id": "user_id"}.get(key, key)
    return info.get(key)


# --- filters, ordering, pages -------------------------------------------------------------

_KINDS = {"metric": "metrics", "metrics": "metrics", "param": "params", "params": "params",
          "parameter": "params", "parameters": "params", "tag": "tags", "tags": "tags",
          "attribute": "attributes", "attributes": "attributes", "attr": "attributes",
          "run": "attributes"}
_CLAUSE = re.compile(r"""^\s*(?:(\w+)\.)?(`[^`]+`|"[^"]+"|[\w.\-:/]+)\s*
                         (<=|>=|!=|=|<|>|(?:NOT\s+)?I?LIKE|IN)\s*
                         ('(?:[^']|'')*'|"[^"]*"|\([^)]*\)|[-+\w.]+)\s*$""",
                     re.IGNORECASE | re.VERBOSE)


def parse_filter(text: str) -> List[Tuple[str, str, str, Any]]:
    """MLflow's search filter (clauses joined by AND) as (kind, key, op, value) tuples."""
    if not isinstance(text, str):
        raise invalid("filter must be a string")
    out = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        m = _CLAUSE.match(part)
        if not m:
            raise invalid("cannot parse the filter clause %r; write e.g. "
                          "metrics.acc > 0.9 AND params.lr = '0.1'" % part)
        kind = _KINDS.get((m.group(1) or "attributes").lower())
        if kind is None:
            raise invalid("unknown filter entity %s; use metrics, params, tags or attributes"
                          % m.group(1))
        key = m.group(2).strip('`"')
        op = re.sub(r"\s+", " ", m.group(3).upper())
        raw = m.group(4)
        value: Any
        if raw.startswith("("):
            value = [v.strip().strip("'\"") for v in raw[1:-1].split(",") if v.strip()]
        elif raw[0] in "'\"":
            value = raw[1:-1].replace("''", "'")
        else:
            try:
                value = float(raw)
            except ValueError:
                value = raw
        out.append((kind, key, op, value))
    return out


def _like(pattern: str, value: str, fold: bool) -> bool:
    regex = "^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                          for c in pattern) + "$"
    return re.match(regex, value, re.IGNORECASE if fold else 0) is not None


def _match(actual: Any, op: str, wanted: Any) -> bool:
    if actual is None:
        return False
    if op == "IN":
        return str(actual) in wanted
    if op.endswith("LIKE"):
        hit = _like(str(wanted), str(actual), op.endswith("ILIKE"))
        return not hit if op.startswith("NOT") else hit
    if isinstance(wanted, float):
        try:
            a: Any = float(actual)
        except (TypeError, ValueError):
            return False
        w: Any = wanted
    else:
        a, w = str(actual), str(wanted)
    return {"=": a == w, "!=": a != w, "<": a < w, "<=": a <= w, ">": a > w,
            ">=": a >= w}[op]


def _ordered(rows: List[Any], order_by: Any, value: Callable[[Any, str, str], Any],
             default_desc: str = "") -> List[Any]:
    if not isinstance(order_by, list):
        raise invalid("order_by must be a list")
    keys = []
    for clause in order_by:
        m = re.match(r"^\s*(?:(\w+)\.)?(`[^`]+`|[\w.\-]+)\s*(ASC|DESC)?\s*$", str(clause),
                     re.IGNORECASE)
        if not m:
            raise invalid("cannot parse order_by %r" % clause)
        keys.append((_KINDS.get((m.group(1) or "attributes").lower(), "attributes"),
                     m.group(2).strip("`"), (m.group(3) or "ASC").upper() == "DESC"))
    if default_desc and not keys:
        keys.append(("attributes", default_desc, True))
    for kind, key, desc in reversed(keys):
        present = [r for r in rows if value(r, kind, key) is not None]
        absent = [r for r in rows if value(r, kind, key) is None]
        present.sort(key=lambda r: _sort_key(value(r, kind, key)), reverse=desc)
        rows = present + absent  # MLflow puts the runs without the value last
    return rows


def _sort_key(v: Any) -> Tuple[int, Any]:
    return (0, float(v)) if isinstance(v, (int, float)) else (1, str(v))


def _page(rows: List[Any], body: Dict[str, Any]) -> Tuple[List[Any], Optional[str]]:
    size = _int(body.get("max_results"), "max_results") or 1000
    if size < 1 or size > MAX_RESULTS:
        raise invalid("max_results must be between 1 and %d" % MAX_RESULTS)
    token = body.get("page_token") or "0"
    if not str(token).isdigit():
        raise invalid("page_token is not one this server gave")
    start = int(token)
    page = rows[start:start + size]
    return page, (str(start + size) if start + size < len(rows) else None)
