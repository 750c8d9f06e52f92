"""The controller of a master with several HTTP workers (setting master_http_workers > 1).

What must happen once stays in one process, the controller (the master process itself): the
control loops (job scheduler, session monitor, model supervisor, ticket keeper, Ambari Metrics),
every launch and stop of an engine (sessions, job and experiment runs, model builds and
replicas), so that the warm pool, recent placements and the per-process launch locks keep
meaning what they mean with one process; and the sum of the model router's counts. The HTTP
workers (server/http_workers.py) answer every request themselves from the database, and ask the
controller for the rest through CALLS, over a Unix socket in DATA_DIR/run that only the master's
user can open, with a token only the workers were given.

Each worker also reports every REPORT_SECONDS what its model router and request metrics counted
since its last report (`worker.report`); the answer is the routing table (replicas, access keys)
and the summed counts, which the worker's monitoring pages show.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Type

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from ..experiments.runner import RunError as ExperimentRunError
from ..jobs.runner import RunError as JobRunError
from ..models import service as model_service
from ..sessions import monitor as session_monitor
from ..sessions.launch import SessionLaunchError
from ..sessions.manager import SessionError
from . import request_metrics
from . import scheduler as job_scheduler
from .state import ServerState

log = logging.getLogger(__name__)
REPORT_SECONDS = 0.25
PUBLISH_WAIT_SECONDS = 5  # longest a key change waits for every worker to take the new table
SOCKET_NAME = "controller.sock"  # under DATA_DIR/run
# the errors a call may end with on purpose, sent to the worker as (kind, status, message); a
# subclass goes as the first kind it is an instance of
ERRORS: Dict[str, Type[Exception]] = {
    "session.launch": SessionLaunchError, "session": SessionError,
    "job.run": JobRunError, "experiment.run": ExperimentRunError}

Call = Callable[..., Any]
CALLS: Dict[str, Call] = {}
INLINE = frozenset(("worker.report", "engine.launch_first_use"))  # run on the event loop


def call(name: str) -> Callable[[Call], Call]:
    def register(fn: Call) -> Call:
        CALLS[name] = fn
        return fn
    return register


# --- sessions, runs, models: what only the controller does
def _delegate(get: Callable[[ServerState], Any], method: str) -> Call:
    return lambda state, **kwargs: getattr(get(state), method)(**kwargs)


for _name, _get, _method in (
        ("session.start", session_monitor.manager_for, "start"),
        ("session.stop", session_monitor.manager_for, "stop"),
        ("session.sync", session_monitor.manager_for, "sync_session"),
        ("session.stop_project", session_monitor.manager_for, "stop_project_sessions"),
        ("job.start_run", job_scheduler.runner_for, "start_run"),
        ("job.stop_run", job_scheduler.runner_for, "stop_run"),
        ("job.stop_project", job_scheduler.runner_for, "stop_project_runs"),
        ("experiment.start_run", job_scheduler.experiments_for, "start_run"),
        ("experiment.stop_run", job_scheduler.experiments_for, "stop_run"),
        ("experiment.stop_project", job_scheduler.experiments_for, "stop_project_runs"),
        ("model.sync_deployment", model_service.service_for, "sync_deployment"),
        ("model.stop", model_service.service_for, "stop_model")):
    CALLS[_name] = _delegate(_get, _method)


@call("model.publish")
def _model_publish(state: ServerState, worker: str = "", wait: bool = False) -> Dict[str, Any]:
    """The table from the database now. `wait` (a key created or revoked): answers once every
    other worker serves from it too, so that a revoked key is refused by all of them when the
    API call returns."""
    service = model_service.service_for(state)
    router = service.router
    service.publish()
    version = router.version
    deadline = time.monotonic() + PUBLISH_WAIT_SECONDS
    while wait and not router.all_hold(version, but=worker):
        if time.monotonic() > deadline:
            log.warning("a worker has not taken routing table %d in %d s", version,
                        PUBLISH_WAIT_SECONDS)
            break
        time.sleep(0.02)
    return table(router)


@call("model.build")
def _model_build(state: ServerState, build_id: int) -> None:
    model_service.service_for(state).builder.start(build_id)


@call("promotion.rebuild")
def _promotion_rebuild(state: ServerState, rebuilds: List[List[int]], actor_id: int) -> None:
    from .routes.promotions import start_rebuilds

    start_rebuilds(state, [(dep, build) for dep, build in rebuilds], actor_id)


@call("engine.launch_first_use")
def _launch_first_use(state: ServerState, nonce: str, expires: int) -> bool:
    from ..sessions.engine_origin import used_launches

    return used_launches.first_use(nonce, expires)


@call("metrics.text")
def _metrics_text(state: ServerState) -> str:
    from .workbench_metrics import exposition

    return exposition(state).render()


# --- the workers' reports
def table(router: Any) -> Dict[str, Any]:
    """The routing table as JSON: model id -> [[replica id, url, token]], key digest -> model,
    and its version."""
    routes, keys, version = router.table()
    return {"routes": {str(m): [[r.replica_id, r.url, r.token] for r in rs]
                       for m, rs in routes.items()}, "keys": keys, "version": version}


class Totals:
    """The summed counts per replica, worked out at most every REPORT_SECONDS (each summary
    sorts a replica's latency window)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: float = float("-inf")
        self._value: Dict[str, Any] = {}

    def get(self, router: Any) -> Dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= REPORT_SECONDS:
                self._value = {str(k): v for k, v in router.summaries().items()}
                self._at = time.monotonic()
            return self._value


_totals = Totals()


@call("worker.report")
def _worker_report(state: ServerState, worker: str, counts: Dict[str, Dict[str, Any]],
                   http: List[List[Any]], holding: int = 0) -> Dict[str, Any]:
    router = model_service.service_for(state).router
    router.add_counts(worker, {int(k): v for k, v in counts.items()}, holding)
    stats = state.extras.get(request_metrics.STATS_KEY)
    if stats is not None and http:
        stats.add(http)
    return dict(table(router), totals=_totals.get(router))


def worker_ended(state: ServerState, worker: str) -> None:
    """A worker process ended: its calls in progress are over."""
    service = state.extras.get(model_service.SERVICE_KEY)
    if service is not None:
        service.router.forget_worker(worker)


# --- the socket's application
class ControlApp:
    """The controller's ASGI application on its Unix socket: POST /call/NAME with the token,
    a JSON object of arguments; answers {"result": ...} or {"error": {kind, status, message}}.
    Lifespan events go to the master's own application, whose start-up starts the loops."""

    def __init__(self, app: ASGIApp, state: ServerState, token: str) -> None:
        self.app, self.state = app, state
        self._expected = ("Bearer " + token).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        path = scope.get("path", "")
        if not hmac.compare_digest(auth, self._expected):
            await _answer(send, 401, {"error": {"message": "not a worker of this master"}})
            return
        fn = CALLS.get(path[len("/call/"):]) if path.startswith("/call/") else None
        if fn is None or scope.get("method") != "POST":
            await _answer(send, 404, {"error": {"message": "no such call: %s" % path}})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            kwargs = json.loads(body or b"{}")
        except ValueError:
            await _answer(send, 400, {"error": {"message": "the arguments are not JSON"}})
            return
        try:
            if path[len("/call/"):] in INLINE:  # memory only: not behind long calls' threads
                result = fn(self.state, **kwargs)
            else:
                result = await anyio.to_thread.run_sync(lambda: fn(self.state, **kwargs))
        except tuple(set(ERRORS.values())) as e:  # type: ignore[misc]
            kind = next(k for k, cls in ERRORS.items() if isinstance(e, cls))
            await _answer(send, 200, {"error": {"kind": kind, "status": getattr(e, "status", 500),
                                                "message": str(e)}})
            return
        except Exception:
            log.exception("controller call %s failed", path)
            await _answer(send, 500, {"error": {"message": "the controller failed (its log has "
                                                           "the details)"}})
            return
        await _answer(send, 200, {"result": result})


async def _answer(send: Send, status: int, body: Dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def socket_path(data_dir: str) -> str:
    return os.path.join(data_dir, "run", SOCKET_NAME)
