"""The session manager, runners and model service as an HTTP worker has them: what reads the
database or the engines works here as in one process; what launches, stops or builds asks the
controller (server/controller.py), which alone does it. `install` puts them where
`manager_for`, `runner_for`, `experiments_for` and `service_for` find them, so the routes are
the same in both kinds of process.

The worker's model router serves calls from the table the controller hands it with every
report (`Reporter`, every REPORT_SECONDS), and its monitoring figures are the controller's sums.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import anyio

from ..experiments.runner import ExperimentRunner
from ..jobs.runner import JobRunner
from ..loops import Loop
from ..models import service as model_service
from ..models.builds import Builder
from ..models.router import Route
from ..orchestrators import shared_orchestrator
from ..sessions import monitor as session_monitor
from ..sessions.manager import SessionManager
from ..store.models import utcnow
from ..store.models_models import BUILD_ACTIVE, ModelBuild
from . import request_metrics, scheduler
from .controller import REPORT_SECONDS
from .controller_client import REPORT_TIMEOUT_SECONDS, ControllerClient
from .state import ServerState

log = logging.getLogger(__name__)
BUILD_POLL_SECONDS = 0.5


class WorkerSessionManager(SessionManager):
    def __init__(self, state: ServerState, controller: ControllerClient) -> None:
        super().__init__(state.db, state.settings, lambda: shared_orchestrator(state))
        self.controller = controller

    def start(self, project_id: int, user_id: int, kernel: str, image_id: Optional[int],
              profile_id: Optional[int]) -> int:
        return self.controller.call("session.start", project_id=project_id, user_id=user_id,
                                    kernel=kernel, image_id=image_id, profile_id=profile_id)

    def stop(self, session_id: int, kind: str = "user", reason: str = "stopped on request") -> None:
        self.controller.call("session.stop", session_id=session_id, kind=kind, reason=reason)

    def sync_session(self, session_id: int) -> bool:
        return self.controller.call("session.sync", session_id=session_id)

    def stop_project_sessions(self, project_id: int, who: str) -> List[int]:
        return self.controller.call("session.stop_project", project_id=project_id, who=who)


class WorkerJobRunner(JobRunner):
    def __init__(self, state: ServerState, controller: ControllerClient) -> None:
        super().__init__(state.db, state.settings, lambda: shared_orchestrator(state), utcnow)
        self.controller = controller

    def start_run(self, job_id: int, trigger: str, user_id: Optional[int] = None,  # type: ignore[override]
                  parent_run_id: Optional[int] = None) -> int:
        return self.controller.call("job.start_run", job_id=job_id, trigger=trigger,
                                    user_id=user_id, parent_run_id=parent_run_id)

    def stop_run(self, run_id: int, who: str = "") -> None:
        self.controller.call("job.stop_run", run_id=run_id, who=who)

    def stop_project_runs(self, project_id: int, who: str = "") -> List[int]:
        return self.controller.call("job.stop_project", project_id=project_id, who=who)


class WorkerExperimentRunner(ExperimentRunner):
    def __init__(self, state: ServerState, controller: ControllerClient) -> None:
        super().__init__(state.db, state.settings, lambda: shared_orchestrator(state))
        self.controller = controller

    def start_run(self, project_id: int, script: str, arguments: str = "", comment: str = "",
                  engine_image_id: Optional[int] = None, profile_id: Optional[int] = None,
                  timeout_minutes: Optional[int] = None, user_id: Optional[int] = None) -> int:
        return self.controller.call(
            "experiment.start_run", project_id=project_id, script=script, arguments=arguments,
            comment=comment, engine_image_id=engine_image_id, profile_id=profile_id,
            timeout_minutes=timeout_minutes, user_id=user_id)

    def stop_run(self, run_id: int, who: str = "") -> None:
        self.controller.call("experiment.stop_run", run_id=run_id, who=who)

    def stop_project_runs(self, project_id: int, who: str = "") -> List[int]:
        return self.controller.call("experiment.stop_project", project_id=project_id, who=who)


class WorkerBuilder(Builder):
    """Builds run in the controller; waiting for one watches its row."""

    def __init__(self, service: "WorkerModelService") -> None:
        super().__init__(service.db, service.settings, lambda: service.orchestrator)
        self.controller = service.controller

    def start(self, build_id: int) -> None:
        self.controller.call("model.build", build_id=build_id)

    def wait(self, build_id: int, timeout: Optional[float] = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self.db.session() as s:
                build = s.get(ModelBuild, build_id)
                if build is None or build.status not in BUILD_ACTIVE:
                    return
            time.sleep(BUILD_POLL_SECONDS)

    def fail_interrupted(self) -> None:  # the controller's, at its start
        return None


class WorkerModelService(model_service.ModelService):
    def __init__(self, state: ServerState, controller: ControllerClient) -> None:
        super().__init__(state.db, state.settings, lambda: shared_orchestrator(state))
        self.controller = controller
        self.builder = WorkerBuilder(self)
        self.router.refresh = self._refresh
        self._refreshed = float("-inf")

    async def _refresh(self) -> bool:
        """The table again, at most every REPORT_SECONDS (a model with no replica at all must
        not make every call ask)."""
        if time.monotonic() - self._refreshed < REPORT_SECONDS:
            return False
        self._refreshed = time.monotonic()
        try:
            await anyio.to_thread.run_sync(lambda: self.publish(wait=False))
        except Exception as e:
            log.info("routing table not refreshed: %s", e)
            return False
        return True

    def start(self) -> None:  # the supervisor runs in the controller
        return None

    def publish(self, wait: bool = True) -> None:
        """The controller publishes from the database; this worker takes its table at once,
        and (`wait`: a key created or revoked) every other worker has it too."""
        self.apply(self.controller.call("model.publish", worker=str(os.getpid()), wait=wait))

    def apply(self, answer: Dict[str, Any]) -> None:
        version = int(answer.get("version", 0))
        if version >= self.router.version:  # not an older table answered late
            routes = {int(m): [Route(int(r), url, token) for r, url, token in rs]
                      for m, rs in answer.get("routes", {}).items()}
            self.router.publish(routes, answer.get("keys", {}), version)
        if "totals" in answer:
            self.router.totals = {int(k): v for k, v in answer["totals"].items()}

    def sync_deployment(self, dep_id: int, publish: bool = True) -> None:
        self.controller.call("model.sync_deployment", dep_id=dep_id)

    def stop_model(self, model_id: int) -> None:
        self.controller.call("model.stop", model_id=model_id)


class Reporter:
    """Sends this worker's counts to the controller and takes its table and totals."""

    def __init__(self, state: ServerState, controller: ControllerClient) -> None:
        self.state, self.controller = state, controller
        self.worker = str(os.getpid())  # how the controller knows this worker
        self._loop = Loop("cdsw-worker-report", self.report, REPORT_SECONDS, log=log,
                          what="report to the controller")

    def report(self) -> None:
        service: WorkerModelService = model_service.service_for(self.state)  # type: ignore
        stats = self.state.extras.get(request_metrics.STATS_KEY)
        holding = service.router.version
        counts = service.router.take_counts()
        http = stats.take() if stats is not None else []
        try:
            answer = self.controller.call("worker.report", timeout=REPORT_TIMEOUT_SECONDS,
                                          worker=self.worker, holding=holding,
                                          counts={str(k): v for k, v in counts.items()},
                                          http=http)
        except Exception:
            service.router.return_counts(counts)
            if stats is not None:
                stats.add(http)
            raise
        service.apply(answer)

    def first(self, timeout: float = 60.0) -> None:
        """The first report, before serving: the controller may still be starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.report()
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    raise RuntimeError("the master's controller did not answer in %d s: %s"
                                       % (timeout, e))
                time.sleep(0.1)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop(5.0)
        try:
            self.report()  # what was counted last
        except Exception as e:
            log.info("last report to the controller not sent: %s", e)


REPORTER_KEY = "worker.reporter"
_FLAVOURS: Dict[str, Callable[[ServerState, ControllerClient], Any]] = {
    session_monitor.MANAGER_KEY: WorkerSessionManager,
    scheduler.RUNNER_KEY: WorkerJobRunner,
    scheduler.EXPERIMENTS_KEY: WorkerExperimentRunner,
    model_service.SERVICE_KEY: WorkerModelService,
}


def install(state: ServerState, controller: ControllerClient) -> None:
    """Makes `state` an HTTP worker's: the worker flavours, and the reporter (started by the
    app's lifespan)."""
    state.controller = controller
    for key, flavour in _FLAVOURS.items():
        state.extras[key] = flavour(state, controller)
    state.extras[REPORTER_KEY] = Reporter(state, controller)
