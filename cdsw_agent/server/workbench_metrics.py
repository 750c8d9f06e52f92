"""The workbench's own state for /metrics: sessions, jobs, models, storage, database and the
model router's counts. Read with a handful of GROUP BY queries per scrape (no per-row work
except cron jobs' lateness, at most MAX_CRON_JOBS of them).

Every state of a kind is exported, 0 included, so dashboards and alerts find the series before
the first failure happens. Rows counted by status include finished ones: cdsw_job_runs
{status="failed"} grows with every failed run (it falls only when runs are deleted), so
`increase(...[1h])` is the failures of the last hour.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import statistics
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from sqlalchemy import func, select

from ..health import REGISTRY, CheckResult, prometheus
from ..health.prometheus import Exposition, Sample
from ..jobs import schedule
from ..models import service as model_service
from ..store.jobs_models import RUN_STATUSES, SCHEDULE_KINDS, Job, JobRun
from ..store.models import Project, User, utcnow
from ..store.models_models import (DEPLOYMENT_STATUSES, REPLICA_STATES, Model, ModelDeployment,
                                   ModelReplica)
from ..store.sessions_models import ACTIVE_STATUSES as SESSION_ACTIVE
from ..store.sessions_models import FINAL_STATUSES as SESSION_FINAL
from ..store.sessions_models import EngineSession
from .request_metrics import STATS_KEY
from .state import ServerState

log = logging.getLogger(__name__)

SESSION_STATUSES = SESSION_ACTIVE + SESSION_FINAL
MAX_CRON_JOBS = 5000
LATE_GRACE = dt.timedelta(seconds=60)  # a fire time older than this without a run is late


def _by(rows: Iterable[Tuple[Any, int]], known: Iterable[str], label: str) -> List[Sample]:
    counts: Dict[str, int] = {k: 0 for k in known}
    for key, n in rows:
        counts[str(key)] = counts.get(str(key), 0) + int(n)
    return [({label: k}, v) for k, v in sorted(counts.items())]


def store_metrics(exp: Exposition, state: ServerState) -> None:
    started = time.perf_counter()
    try:
        with state.db.session() as s:
            def grouped(column: Any) -> List[Tuple[Any, int]]:
                return [(k, n) for k, n in s.execute(select(column, func.count()).group_by(column))]

            sessions = grouped(EngineSession.status)
            runs = grouped(JobRun.status)
            jobs = grouped(Job.schedule_kind)
            deployments = grouped(ModelDeployment.status)
            replicas = grouped(ModelReplica.state)
            models = s.scalar(select(func.count()).select_from(Model)) or 0
            users = s.scalar(select(func.count()).select_from(User)) or 0
            projects = s.scalar(select(func.count()).select_from(Project)) or 0
            cron = s.execute(select(Job.cron, Job.timezone, Job.last_scheduled_at)
                             .where(Job.schedule_kind == "cron", Job.enabled.is_(True))
                             .limit(MAX_CRON_JOBS)).all()
            per_model = s.execute(
                select(ModelDeployment.model_id, ModelDeployment.replicas,
                       ModelDeployment.status)).all()
            ready = dict(s.execute(
                select(ModelDeployment.model_id, func.count())
                .join(ModelReplica, ModelReplica.deployment_id == ModelDeployment.id)
                .where(ModelReplica.state == "ready").group_by(ModelDeployment.model_id)).all())
    except Exception as e:  # the database is down: say so, keep the rest of the scrape
        log.warning("metrics: the database did not answer: %s", e)
        exp.gauge("cdsw_database_up", "1 when the database answered this scrape.", [({}, 0)])
        return
    exp.gauge("cdsw_database_up", "1 when the database answered this scrape.", [({}, 1)])
    exp.gauge("cdsw_database_query_seconds", "Time the database took for this scrape's "
              "queries.", [({}, round(time.perf_counter() - started, 6))])
    exp.gauge("cdsw_sessions", "Sessions by status (finished ones included).",
              _by(sessions, SESSION_STATUSES, "status"))
    exp.gauge("cdsw_job_runs", "Job runs by status (finished ones included).",
              _by(runs, RUN_STATUSES, "status"))
    exp.gauge("cdsw_jobs", "Jobs by schedule kind.",
              _by(jobs, SCHEDULE_KINDS, "schedule"))
    now = utcnow()
    late: List[float] = []
    for expr, tz, last in cron:
        if last is None:
            continue
        try:
            due = schedule.next_fire(expr, tz, last)
        except Exception:  # a broken schedule is the scheduler's to report
            continue
        if now - due > LATE_GRACE:
            late.append((now - due).total_seconds())
    exp.gauge("cdsw_jobs_late", "Enabled cron jobs whose fire time passed more than 60 s ago "
              "without a run (the scheduler is behind or stopped).", [({}, len(late))])
    exp.gauge("cdsw_jobs_max_lateness_seconds", "How long ago the oldest missed fire time of "
              "an enabled cron job was (0: none late).", [({}, round(max(late), 3) if late
                                                            else 0)])
    exp.gauge("cdsw_models", "Models defined.", [({}, models)])
    exp.gauge("cdsw_model_deployments", "Model deployments by status.",
              _by(deployments, DEPLOYMENT_STATUSES, "status"))
    exp.gauge("cdsw_model_replicas", "Model replicas by state.",
              _by(replicas, REPLICA_STATES, "state"))
    active = [(m, n) for m, n, status in per_model if status != "stopped"]
    exp.gauge("cdsw_model_replicas_desired", "Replicas a deployed model asks for.",
              (({"model": str(m)}, n) for m, n in sorted(active)))
    exp.gauge("cdsw_model_replicas_ready", "Replicas of a deployed model that answer and get "
              "traffic.", (({"model": str(m)}, ready.get(m, 0)) for m, _ in sorted(active)))
    exp.gauge("cdsw_users", "User accounts.", [({}, users)])
    exp.gauge("cdsw_projects", "Projects.", [({}, projects)])
    router_metrics(exp, state)


def router_metrics(exp: Exposition, state: ServerState) -> None:
    """The model router's per-replica counts summed per model (the replica's model from the
    database); latency percentiles over the replicas' latest calls."""
    service = state.extras.get(model_service.SERVICE_KEY)
    stats = dict(service.router.stats) if service is not None else {}
    if stats:
        with state.db.session() as s:
            owner = dict(s.execute(
                select(ModelReplica.id, ModelDeployment.model_id)
                .join(ModelDeployment, ModelReplica.deployment_id == ModelDeployment.id)
                .where(ModelReplica.id.in_(list(stats)))).all())
    else:
        owner = {}
    per_model: Dict[int, Dict[str, Any]] = {}
    for replica_id, st in stats.items():
        model_id = owner.get(replica_id)
        if model_id is None:
            continue
        row = per_model.setdefault(model_id, {"requests": 0, "failures": 0, "outstanding": 0,
                                              "latencies": []})
        row["requests"] += st.requests
        row["failures"] += st.failures
        row["outstanding"] += st.outstanding
        row["latencies"].extend(st.latencies_ms)
    models = sorted(per_model.items())
    exp.counter("cdsw_model_requests_total", "Calls to a model through the master's router.",
                (({"model": str(m)}, r["requests"]) for m, r in models))
    exp.counter("cdsw_model_request_failures_total", "Calls to a model that failed (the "
                "replica answered an error or could not be reached).",
                (({"model": str(m)}, r["failures"]) for m, r in models))
    exp.gauge("cdsw_model_requests_in_flight", "Calls to a model being answered now.",
              (({"model": str(m)}, r["outstanding"]) for m, r in models))
    quantiles = []
    for m, r in models:
        lat = sorted(r["latencies"])
        if not lat:
            continue
        for q in (0.5, 0.95, 0.99):
            quantiles.append(({"model": str(m), "quantile": str(q)},
                              round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0, 6)))
        quantiles.append(({"model": str(m), "quantile": "mean"},
                          round(statistics.fmean(lat) / 1000.0, 6)))
    exp.gauge("cdsw_model_request_latency_seconds", "Latency of a model's latest calls "
              "(up to 4096 per replica) through the router, by quantile.", quantiles)


def storage_metrics(exp: Exposition, state: ServerState) -> None:
    try:
        usage = shutil.disk_usage(str(state.settings.data_dir))
    except OSError as e:
        log.warning("metrics: cannot read the data directory's file system: %s", e)
        return
    exp.gauge("cdsw_storage_capacity_bytes", "Size of the file system holding the data "
              "directory (projects, database, backups).", [({}, usage.total)])
    exp.gauge("cdsw_storage_free_bytes", "Free space there.", [({}, usage.free)])


CACHE_SECONDS = 10.0  # scrapes closer together than this reuse the last health run
# these would make the master call itself; /metrics being answered says the same
SELF_CHECKS = ("master_api", "clock_skew")
_CACHE_KEY = "metrics.health"
_lock = threading.Lock()


def master_health(state: ServerState) -> List[CheckResult]:
    """The master's health checks, run at most every CACHE_SECONDS (/metrics, /admin/health)."""
    with _lock:
        cached: Optional[Tuple[float, List[CheckResult]]] = state.extras.get(_CACHE_KEY)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        names = [c.name for c in REGISTRY.select(role="master") if c.name not in SELF_CHECKS]
        results = REGISTRY.run(state.settings, names=names)
        state.extras[_CACHE_KEY] = (time.monotonic(), results)
        return results


def exposition(state: ServerState) -> Exposition:
    """Everything /metrics answers (and the Ambari Metrics sender sends)."""
    exp = prometheus.collect(master_health(state), state.extras.get("orchestrator"))
    collect(exp, state)
    return exp


def collect(exp: Exposition, state: ServerState) -> None:
    store_metrics(exp, state)
    storage_metrics(exp, state)
    http: Optional[Any] = state.extras.get(STATS_KEY)
    if http is not None:
        http.export(exp)
