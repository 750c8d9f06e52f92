"""Sessions from start to end: launch, readiness, timeouts, stop, and re-adoption.

All state lives in the database (workload id, node, port, kernel id); the engine token is
derived (secret.py). So a restarted master simply resumes following running sessions on its
first `sync()`, and one whose engine vanished meanwhile is marked failed with the reason.

A session's row is committed ("starting") before its engine is launched, outside any open
transaction, and the workload id is recorded after: a master that dies in between leaves a row
that the next `sync()` adopts (the engine carries the session's name) or fails. The orphan sweep
(at the first sync, then every ORPHAN_CHECK_SECONDS) removes session engines no live session
row owns, and the folders (DATA_DIR/sessions/ID) of sessions that no longer exist.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..orchestrators import (LOST, PENDING, RUNNING, WAITING_FOR_RESOURCES, Orchestrator,
                             OrchestratorError, WorkloadNotFound, WorkloadRef, WorkloadSpec,
                             WorkloadStatus)
from ..orchestrators.reasons import signal_of
from ..store.db import Database
from ..store.models import EngineImage, EngineProfile, Project, User, utcnow
from ..store.sessions_models import ACTIVE_STATUSES, KERNELS, EngineSession
from ..workloads import KIND_LABEL, EngineError
from ..workloads.engine import make_room
from . import engine_client, transcript
from .engine_client import Endpoint, EngineUnavailable
from .launch import (SessionLaunchError, base_path, choose_image, kernelspec_for, local_kernels,
                     node_address, node_port, session_spec)
from .secret import engine_token
from .transcript import session_dir
from .warm_pool import WarmEngine, WarmPool

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]  # naive UTC, like the database
START_TIMEOUT = dt.timedelta(minutes=5)  # pulling nothing, an engine answers in seconds
ACTIVITY_WRITE_SECONDS = 30.0  # activity is written at most this often per session
ADDRESS_TTL_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
ORPHAN_CHECK_SECONDS = 30.0
# a "starting" row without engine is failed only after this long (its launch may be under way
# in another master process)
LAUNCH_GRACE = dt.timedelta(minutes=2)
NAME_PATTERN = re.compile(r"^session-(\d+)-[0-9a-f]+$")
NEVER_STARTED = "the engine was never started (the master stopped while starting it); start " \
                "a new session"


class SessionError(Exception):
    """A request on a session that cannot be done; `status` is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _minutes(n: int) -> str:
    return "%d minute%s" % (n, "" if n == 1 else "s")


def failure_reason(status: WorkloadStatus, image: str) -> str:
    """Why an engine ended, in the words a user can act on (the backend's reason comes from
    orchestrators/reasons.py: "exit code 1", "killed by SIGKILL (out of memory: ...)", ...)."""
    reason = status.reason or "the engine ended"
    if reason.startswith("exit code"):
        return "the engine stopped unexpectedly (%s)" % reason
    if signal_of(status.exit_code) is not None and reason.startswith(
            ("killed by SIG", "terminated by SIG", "interrupted by SIG", "hung up by SIG")):
        return "the engine was " + reason
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
        self._launching: Set[int] = set()  # sessions whose engine is being launched here
        self._launching_lock = threading.Lock()  # not self.lock, which a tick holds for long
        self._orphans_checked = float("-inf")  # time.monotonic() of the last sweep
        self.warm = WarmPool(db, settings, lambda: self.orchestrator, self.address,
                             self._free_port)

    @property
    def orchestrator(self) -> Orchestrator:
        if self._orchestrator is None:
            assert self._factory is not None
            self._orchestrator = self._factory()
        return self._orchestrator

    def project_dir(self, project_id: int) -> Path:
        return Path(self.settings.data_dir) / "projects" / str(project_id)

    def engine_dir(self, session_id: int) -> Path:
        """The engine's own files on the local backend (history.sqlite, cookie secret,
        runtime dir): of no use once the engine ended."""
        return session_dir(self.settings.data_dir, session_id) / "engine"

    # --- starting
    def start(self, project_id: int, user_id: int, kernel: str, image_id: Optional[int],
              profile_id: Optional[int]) -> int:
        """Records and launches a session; returns its id (status "starting"). Bad input
        raises SessionLaunchError and leaves nothing behind; an engine the orchestrator cannot
        start leaves a failed session saying why, and raises SessionLaunchError(503)."""
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
            kernelspec = kernelspec_for(kernel, image, local_kernels(self.settings)
                                        if self.orchestrator.name == "local" else ("python3",))
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
            session_id, username = session.id, user.username
            session.name = "session-%d-%s" % (session_id, secrets.token_hex(4))
            with self._launching_lock:  # the sweep and sync() leave it alone until recorded
                self._launching.add(session_id)
            try:
                spec, warm = self._describe(s, session, project, user)
            except BaseException:
                with self._launching_lock:
                    self._launching.discard(session_id)
                raise
        # committed: the engine is launched with no transaction open (nothing locked while
        # the orchestrator works), and a crash from here on leaves a row sync() sorts out
        try:
            try:
                if warm is not None:
                    try:
                        self.warm.hand_over(warm, spec)
                        ref = WorkloadRef(warm.workload_id, spec.name)
                    except OrchestratorError:  # said in the log; a new engine instead
                        spec = self._describe_again(session_id)
                        warm = None
                if warm is None:
                    ref = self.orchestrator.launch(spec)
            except OrchestratorError as e:
                reason = "cannot start the engine: %s" % e
                self._fail_launch(session_id, reason)
                raise SessionLaunchError(503, reason)
            except SessionLaunchError as e:  # described again after a failed warm hand-over
                self._fail_launch(session_id, str(e))
                raise
            except Exception:
                log.exception("cannot launch the engine of session %d", session_id)
                self._fail_launch(session_id, "cannot start the engine because of an internal "
                                              "error (the master's log has the details)")
                raise
            self._record_launch(session_id, ref.id)
        finally:
            with self._launching_lock:
                self._launching.discard(session_id)
        log.info("session %d (%s, %s) started for %s in project %d as %s", session_id,
                 kernel, spec.image if spec.image != "none" else "local", username, project_id,
                 ref.id)
        transcript.append(self.settings.data_dir, session_id,
                          {"kind": "event", "event": "starting", "kernel": kernel})
        if spec.env.get("CDSW_KERBEROS_NOTICE"):  # no Kerberos credential: say so in the console
            transcript.append(self.settings.data_dir, session_id,
                              {"kind": "event", "event": "kerberos",
                               "reason": spec.env["CDSW_KERBEROS_NOTICE"]})
        return session_id

    def _free_port(self, node: str, reserved: Set[int]) -> int:
        with self.db.session() as s:
            return node_port(s, node, reserved=reserved)

    def _describe_again(self, session_id: int) -> WorkloadSpec:
        """A new engine for a session whose warm engine could not be handed over: another
        node or port may be chosen, so the row is updated."""
        with self.db.session() as s:
            session = s.get(EngineSession, session_id)
            assert session is not None
            project, user = s.get(Project, session.project_id), s.get(User, session.user_id)
            assert project is not None and user is not None
            spec, _ = self._describe(s, session, project, user, claim=False)
            return spec

    def _describe(self, s: Session, session: EngineSession, project: Project,
                  user: User, claim: bool = True) -> Tuple[WorkloadSpec, Optional[WarmEngine]]:
        """The engine of a session being recorded, and the warm engine it takes, if any;
        SessionLaunchError rolls the row back."""
        # a fresh id may be the id of a deleted session (SQLite reuses the highest one): what
        # that session left must never show up in this one
        shutil.rmtree(session_dir(self.settings.data_dir, session.id), ignore_errors=True)
        files = self.project_dir(project.id)
        files.mkdir(parents=True, exist_ok=True)
        def describe() -> Tuple[WorkloadSpec, Optional[WarmEngine]]:
            return session_spec(s, self.settings, self.orchestrator, session, project, user,
                                engine_token(self.settings.data_dir, session.name), files,
                                self.warm, claim)

        try:
            spec, warm = describe()  # warm engines holding what it needs give way (place)
        except EngineError as e:
            s.rollback()
            raise SessionLaunchError(422, "cannot start the session: %s" % e)
        except OrchestratorError as e:  # the orchestrator could not be reached
            s.rollback()
            raise SessionLaunchError(503, "cannot start the engine: %s" % e)
        session.image = spec.image if spec.image != "none" else session.image
        return spec, warm

    def _fail_launch(self, session_id: int, reason: str) -> None:
        with self.db.session() as s:
            session = s.get(EngineSession, session_id)
            if session is not None and session.status in ACTIVE_STATUSES:
                session.status, session.reason = "failed", reason
                session.finished_at = self.clock()
        log.info("session %d failed: %s", session_id, reason)

    def _record_launch(self, session_id: int, workload_id: str) -> None:
        """Records the launched engine; one whose session was stopped or deleted meanwhile
        is stopped (the next sync records the end) or removed."""
        with self.lock:
            with self.db.session() as s:
                session = s.get(EngineSession, session_id)
                if session is not None:
                    session.workload_id = workload_id
                    stop = session.stop_requested is not None
            if session is None:
                log.info("session %d was deleted while its engine started; removing %s",
                         session_id, workload_id)
                self._remove_workload(workload_id, session_id)
            elif stop:
                try:
                    self.orchestrator.stop(workload_id, timeout=STOP_GRACE_SECONDS)
                except OrchestratorError as e:
                    log.warning("cannot stop session %d: %s", session_id, e)

    def _remove_workload(self, workload_id: str, session_id: int) -> None:
        try:
            self.orchestrator.remove(workload_id)
        except WorkloadNotFound:
            pass
        except OrchestratorError as e:
            log.warning("cannot remove the engine of session %d: %s", session_id, e)

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
        starved = False
        for session_id in ids:
            try:
                starved = self.sync_session(session_id) or starved
            except Exception:  # one broken session must not stop the others
                log.exception("cannot follow session %d", session_id)
        if starved:  # warm engines may hold CPU or memory a waiting session needs
            make_room()
        if time.monotonic() - self._orphans_checked >= ORPHAN_CHECK_SECONDS:
            self.remove_orphans()
        self.warm.tick()

    def remove_orphans(self) -> List[str]:
        """Removes session engines that no live session row owns (their session ended or was
        deleted with its project), and the folders of sessions that no longer exist; returns
        the removed workload ids."""
        self._orphans_checked = time.monotonic()
        removed: List[str] = []
        try:
            refs = self.orchestrator.list({KIND_LABEL: "session"})
        except OrchestratorError as e:
            log.warning("cannot list session engines: %s", e)
            refs = None
        with self._launching_lock:
            launching = set(self._launching)
        if refs:
            by_session: Dict[int, List[str]] = {}
            for ref in refs:
                match = NAME_PATTERN.match(ref.name)
                if match:
                    by_session.setdefault(int(match.group(1)), []).append(ref.id)
            with self.db.session() as s:
                rows = {r.id: (r.status, r.workload_id) for r in s.scalars(
                    select(EngineSession).where(EngineSession.id.in_(list(by_session))))}
            for session_id, workload_ids in sorted(by_session.items()):
                if session_id in launching:
                    continue
                status, owned = rows.get(session_id, (None, None))
                for workload_id in workload_ids:
                    live = status in ACTIVE_STATUSES and owned in (None, workload_id)
                    if not live:
                        log.info("session %d is %s; removing its engine %s", session_id,
                                 status or "gone", workload_id)
                        self._remove_workload(workload_id, session_id)
                        removed.append(workload_id)
        self._remove_stale_folders()
        return removed

    def _remove_stale_folders(self) -> None:
        root = Path(self.settings.data_dir) / "sessions"
        try:
            names = [p.name for p in root.iterdir() if p.name.isdigit()]
        except FileNotFoundError:
            return
        if not names:
            return
        # after the listing: a session whose folder was listed before its row is committed
        # is in this set (start() adds it before it makes the folder)
        with self._launching_lock:
            launching = set(self._launching)
        with self.db.session() as s:
            known = set(s.scalars(select(EngineSession.id).where(
                EngineSession.id.in_([int(n) for n in names]))))
        for name in names:
            if int(name) not in known and int(name) not in launching:
                log.info("session %s no longer exists; removing its folder", name)
                shutil.rmtree(root / name, ignore_errors=True)

    def sync_session(self, session_id: int) -> bool:
        """Follows one session's engine; True when it waits for a node with the CPU and memory
        its profile reserves."""
        with self.lock:
            with self._launching_lock:
                if session_id in self._launching:
                    return False  # start() records the engine, then it is followed
            remove: Optional[str] = None
            stop: Optional[Tuple[str, str]] = None
            ended: Optional[Tuple[str, str]] = None
            starved = False
            with self.db.session() as s:
                session = s.get(EngineSession, session_id)
                if session is None or session.status not in ACTIVE_STATUSES:
                    return False
                if session.workload_id is None and not self._adopt(session):
                    return False
                status = self._status(session)
                if status is None:
                    return False
                starved = status.state == PENDING and status.reason == WAITING_FOR_RESOURCES
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
                self._remove_workload(remove, session_id)
            if ended:
                shutil.rmtree(self.engine_dir(session_id), ignore_errors=True)
            if stop:
                self.stop(session_id, *stop)
            return starved and stop is None

    def _adopt(self, session: EngineSession) -> bool:
        """A row whose launch was never recorded (the master died in between): adopts the
        engine that carries its name; True when the session is to be followed now (adopted,
        or to be failed as never started)."""
        try:
            refs = [r for r in self.orchestrator.list({KIND_LABEL: "session"})
                    if r.name == session.name]
        except OrchestratorError as e:
            log.warning("cannot list the engines for session %d: %s", session.id, e)
            return False
        if refs:
            session.workload_id = refs[0].id
            log.info("session %d: adopted its engine %s", session.id, refs[0].id)
            return True
        return self.clock() - session.created_at > LAUNCH_GRACE

    def _status(self, session: EngineSession) -> Optional[WorkloadStatus]:
        if session.workload_id is None:  # never recorded: the launch did not complete
            return WorkloadStatus(LOST, None, NEVER_STARTED)
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
            try:  # the engine starts the kernel before it listens (engine/server.py)
                session.kernel_id = engine_client.started_kernel(ep, session.kernelspec) \
                    or engine_client.create_kernel(ep, session.kernelspec)
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
