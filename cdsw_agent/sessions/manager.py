"""Sessions from start to end: launch, readiness, timeouts, stop, and re-adoption.

All state lives in the database (workload id, node, port, kernel id); the engine token is
derived (secret.py). So a restarted master simply resumes following running sessions on its
first `sync()`, and one whose engine vanished meanwhile is marked failed with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..orchestrators import (LOST, PENDING, RUNNING, Orchestrator, OrchestratorError,
                             WorkloadNotFound, WorkloadStatus)
from ..orchestrators.base import OOM_REASON
from ..store.db import Database
from ..store.models import EngineImage, EngineProfile, Project, User, utcnow
from ..store.sessions_models import ACTIVE_STATUSES, KERNELS, EngineSession
from ..workloads import EngineError
from . import engine_client, transcript
from .engine_client import Endpoint, EngineUnavailable
from .launch import (SessionLaunchError, base_path, choose_image, kernelspec_for,
                     node_address, session_spec)
from .secret import engine_token

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]  # naive UTC, like the database
START_TIMEOUT = dt.timedelta(minutes=5)  # pulling nothing, an engine answers in seconds
ACTIVITY_WRITE_SECONDS = 30.0  # activity is written at most this often per session
ADDRESS_TTL_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


class SessionError(Exception):
    """A request on a session that cannot be done; `status` is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _minutes(n: int) -> str:
    return "%d minute%s" % (n, "" if n == 1 else "s")


def failure_reason(status: WorkloadStatus, image: str) -> str:
    """Why an engine ended, in the words a user can act on."""
    reason = status.reason or "the engine ended"
    if reason == OOM_REASON:
        return "out of memory: the engine was killed for using more memory than its profile " \
               "allows; choose a larger profile"
    if "no such image" in reason.lower():
        return "engine image %s is missing on node %s; build or distribute it " \
               "(cdsw images build) or choose another image" % (image, status.node or "?")
    if reason.startswith("exit code"):
        return "the engine stopped unexpectedly (%s)" % reason
    return reason


class SessionManager:
    def __init__(self, db: Database, settings: Any,
                 orchestrator: Union[Orchestrator, Callable[[], Orchestrator]],
                 clock: Clock = utcnow):
        self.db, self.settings, self.clock = db, settings, clock
        self._orchestrator = orchestrator if isinstance(orchestrator, Orchestrator) else None
        self._factory = None if isinstance(orchestrator, Orchestrator) else orchestrator
        self.lock = threading.RLock()
        self._activity_lock = threading.Lock()
        self._activity: Dict[int, float] = {}  # session id -> monotonic time last written
        self._addresses: Dict[str, Tuple[str, float]] = {}  # node -> (address, when)

    @property
    def orchestrator(self) -> Orchestrator:
        if self._orchestrator is None:
            assert self._factory is not None
            self._orchestrator = self._factory()
        return self._orchestrator

    def project_dir(self, project_id: int) -> Path:
        return Path(self.settings.data_dir) / "projects" / str(project_id)

    # --- starting
    def start(self, project_id: int, user_id: int, kernel: str, image_id: Optional[int],
              profile_id: Optional[int]) -> int:
        """Records and launches a session; returns its id (status "starting"). Bad input
        raises SessionLaunchError and leaves nothing behind."""
        if kernel not in KERNELS:
            raise SessionLaunchError(422, "invalid request: kernel: use one of %s"
                                     % ", ".join(KERNELS))
        with self.db.session() as s:
            project, user = s.get(Project, project_id), s.get(User, user_id)
            assert project is not None and user is not None
            if image_id is not None and s.get(EngineImage, image_id) is None:
                raise SessionLaunchError(422, "invalid request: engine_image_id: no engine "
                                              "image %d" % image_id)
            if profile_id is not None and s.get(EngineProfile, profile_id) is None:
                raise SessionLaunchError(422, "invalid request: profile_id: no engine profile "
                                              "%d" % profile_id)
            image = choose_image(s, image_id, project)
            kernelspec = kernelspec_for(kernel, image)
            now = self.clock()
            session = EngineSession(
                project_id=project.id, user_id=user.id, name="session-new-" + secrets.token_hex(8),
                kernel=kernel, kernelspec=kernelspec,
                engine_image_id=image.id if image is not None else None,
                image="%s:%s" % (image.repository, image.tag) if image is not None else "",
                profile_id=profile_id, status="starting", reason="", created_at=now,
                last_activity_at=now)
            s.add(session)
            s.flush()
            session.name = "session-%d-%s" % (session.id, secrets.token_hex(4))
            files = self.project_dir(project.id)
            files.mkdir(parents=True, exist_ok=True)
            try:
                spec = session_spec(s, self.settings, self.orchestrator, session, project, user,
                                    engine_token(self.settings.data_dir, session.name), files)
                session.image = spec.image if spec.image != "none" else session.image
                ref = self.orchestrator.launch(spec)
            except EngineError as e:
                s.rollback()
                raise SessionLaunchError(422, "cannot start the session: %s" % e)
            except OrchestratorError as e:
                s.rollback()
                raise SessionLaunchError(503, "cannot start the engine: %s" % e)
            session.workload_id = ref.id
            session_id = session.id
            log.info("session %d (%s, %s) started for %s in project %d as %s", session_id,
                     kernel, session.image or "local", user.username, project.id, ref.id)
        transcript.append(self.settings.data_dir, session_id,
                          {"kind": "event", "event": "starting", "kernel": kernel})
        return session_id

    # --- the engine
    def address(self, node: Optional[str]) -> Optional[str]:
        if self.orchestrator.name == "local":
            return "127.0.0.1"
        cached = self._addresses.get(node or "")
        if cached and time.monotonic() - cached[1] < ADDRESS_TTL_SECONDS:
            return cached[0]
        try:
            address = node_address(self.orchestrator, node)
        except OrchestratorError as e:
            log.warning("cannot list the nodes: %s", e)
            return cached[0] if cached else None
        if address:
            self._addresses[node or ""] = (address, time.monotonic())
        return address

    def endpoint(self, session: EngineSession) -> Endpoint:
        address = self.address(session.node)
        if address is None or session.host_port is None:
            raise SessionError(503, "the node %s of session %d is not reachable"
                               % (session.node or "?", session.id))
        return Endpoint(address, session.host_port, base_path(session.id),
                        engine_token(self.settings.data_dir, session.name))

    def running(self, session_id: int) -> Tuple[EngineSession, Endpoint]:
        """The session, when it can take work now; else SessionError(409) saying why."""
        with self.db.session() as s:
            session = s.get(EngineSession, session_id)
            if session is None:
                raise SessionError(404, "session not found")
            if session.status == "starting":
                raise SessionError(409, "session %d is still starting; try again when its "
                                        "status is running" % session_id)
            if session.status != "running" or session.stop_requested:
                raise SessionError(409, "session %d has ended (%s); start a new session"
                                   % (session_id, session.reason or session.status))
            s.expunge(session)
        return session, self.endpoint(session)

    def activity_due(self, session_id: int) -> bool:
        """True (once per ACTIVITY_WRITE_SECONDS) when activity should be written again."""
        with self._activity_lock:  # not self.lock: the event loop calls this
            if time.monotonic() - self._activity.get(session_id, 0.0) < ACTIVITY_WRITE_SECONDS:
                return False
            self._activity[session_id] = time.monotonic()
            return True

    def touch(self, session_id: int, force: bool = False) -> None:
        """Records activity (executions, proxied traffic), at most every ACTIVITY_WRITE_SECONDS."""
        last = self._activity.get(session_id, 0.0)
        if not force and time.monotonic() - last < ACTIVITY_WRITE_SECONDS:
            return
        self._activity[session_id] = time.monotonic()
        with self.db.session() as s:
            session = s.get(EngineSession, session_id)
            if session is not None and session.status in ACTIVE_STATUSES:
                session.last_activity_at = self.clock()

    # --- stopping
    def stop(self, session_id: int, kind: str = "user", reason: str = "stopped on request") -> None:
        """Asks the engine to stop; the session is "stopped" once the orchestrator says so."""
        with self.lock:
            with self.db.session() as s:
                session = s.get(EngineSession, session_id)
                if session is None:
                    raise SessionError(404, "session not found")
                if session.status not in ACTIVE_STATUSES:
                    raise SessionError(409, "session %d already ended (%s)"
                                       % (session_id, session.status))
                if session.stop_requested is None:
                    session.stop_requested, session.reason = kind, reason
                workload_id = session.workload_id
            if workload_id is not None:
                try:
                    self.orchestrator.stop(workload_id, timeout=STOP_GRACE_SECONDS)
                except WorkloadNotFound:
                    pass  # the next poll records the end
                except OrchestratorError as e:
                    log.warning("cannot stop session %d: %s", session_id, e)
            self.sync_session(session_id)

    def stop_project_sessions(self, project_id: int, who: str) -> List[int]:
        with self.db.session() as s:
            ids = list(s.scalars(select(EngineSession.id).where(
                EngineSession.project_id == project_id,
                EngineSession.status.in_(ACTIVE_STATUSES))))
        for session_id in ids:
            try:
                self.stop(session_id, "user", "stopped by %s" % who)
            except SessionError:
                pass
        return ids

    # --- following
    def sync(self) -> None:
        with self.db.session() as s:
            ids = list(s.scalars(select(EngineSession.id).where(
                EngineSession.status.in_(ACTIVE_STATUSES)).order_by(EngineSession.id)))
        for session_id in ids:
            try:
                self.sync_session(session_id)
            except Exception:  # one broken session must not stop the others
                log.exception("cannot follow session %d", session_id)

    def sync_session(self, session_id: int) -> None:
        with self.lock:
            remove: Optional[str] = None
            stop: Optional[Tuple[str, str]] = None
            ended: Optional[Tuple[str, str]] = None
            with self.db.session() as s:
                session = s.get(EngineSession, session_id)
                if session is None or session.status not in ACTIVE_STATUSES:
                    return
                status = self._status(session)
                if status is None:
                    return
                if status.final:
                    self._finish(session, status)
                    remove, ended = session.workload_id, (session.status, session.reason)
                elif status.state == RUNNING and not session.stop_requested:
                    stop = self._check_running(s, session)
                elif status.state == PENDING and self.clock() - session.created_at > START_TIMEOUT:
                    stop = ("start", "the engine did not start within %d minutes: %s" % (
                        START_TIMEOUT.seconds // 60, status.reason or "no node could run it"))
            if ended:
                transcript.append(self.settings.data_dir, session_id,
                                  {"kind": "event", "event": ended[0], "reason": ended[1]})
            if remove:
                try:
                    self.orchestrator.remove(remove)
                except OrchestratorError as e:
                    log.warning("cannot remove the engine of session %d: %s", session_id, e)
            if stop:
                self.stop(session_id, *stop)

    def _status(self, session: EngineSession) -> Optional[WorkloadStatus]:
        if session.workload_id is None:  # never recorded: the launch did not complete
            return WorkloadStatus(LOST, None, "the engine was never started")
        try:
            return self.orchestrator.status(session.workload_id)
        except WorkloadNotFound:
            return WorkloadStatus(LOST, None, "the engine disappeared (removed outside the "
                                              "workbench, or lost with its node)")
        except OrchestratorError as e:  # unreachable backend: try again next tick
            log.warning("cannot read the status of session %d: %s", session.id, e)
            return None

    def _finish(self, session: EngineSession, status: WorkloadStatus) -> None:
        session.finished_at = self.clock()
        if session.stop_requested in ("user", "idle", "max"):
            session.status = "stopped"
        else:
            session.status = "failed"
            if session.stop_requested != "start":
                session.reason = failure_reason(status, session.image)
        session.node = session.node or status.node
        log.info("session %d %s: %s", session.id, session.status, session.reason)

    def _check_running(self, s: Session, session: EngineSession) -> Optional[Tuple[str, str]]:
        """Readiness of a starting engine; timeouts of a running one. Returns a stop to do."""
        now = self.clock()
        if session.status == "starting":
            try:
                ep = self.endpoint(session)
            except SessionError:
                return None
            if not engine_client.ready(ep):
                if now - session.created_at > START_TIMEOUT:
                    return ("start", "the engine did not answer within %d minutes"
                            % (START_TIMEOUT.seconds // 60))
                return None
            try:
                session.kernel_id = engine_client.create_kernel(ep, session.kernelspec)
            except EngineUnavailable as e:
                return ("start", str(e))
            session.status, session.started_at, session.last_activity_at = "running", now, now
            log.info("session %d runs (kernel %s)", session.id, session.kernelspec)
            return None
        idle = int(self.settings.session_idle_minutes)
        most = int(self.settings.session_max_minutes)
        if now - session.last_activity_at >= dt.timedelta(minutes=idle):
            return ("idle", "stopped after %s without activity" % _minutes(idle))
        if now - (session.started_at or session.created_at) >= dt.timedelta(minutes=most):
            return ("max", "stopped after running its maximum of %s" % _minutes(most))
        return None
