"""Supervision of model deployments: the database says what should run, this makes it so.

Every tick (a background thread; the API also syncs a deployment right after changing it):

- starting replicas are health-checked (GET /health with the replica token): an answer makes
  them ready and routable; a replica that cannot load its function says so (503 + message) and
  is marked failed with that message; one that ends or never answers is failed too;
- a deployment converges on N replicas of its build acting as its deployer (whoever last
  deployed or redeployed it): scaling up launches, scaling down drains; a redeploy to a new
  build, or by another person, is rolling: one new replica at a time, and only once it answers is an
  old one withdrawn from the router, allowed to finish its requests (draining) and stopped;
- a ready replica that dies is replaced; replicas of a build that cannot load are not retried
  (the deployment shows "failed" and the message, the old build keeps serving);
- the router gets the ready replicas and the access-key digests.

All state is in the database (replica rows carry their workload id, address, port and token),
so a restarted master re-adopts running replicas on its first tick. Counts restart from zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from typing import Any, Callable, Dict, List, Optional, Set

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..engine.model_server import TOKEN_HEADER
from ..loops import Loop
from ..orchestrators import (FINAL_STATES, PENDING, WAITING_FOR_RESOURCES, Orchestrator,
                             OrchestratorError, WorkloadNotFound)
from ..orchestrators import reasons, shared_orchestrator
from ..settings import Settings
from ..store.db import Database
from ..store.models import utcnow
from ..store.models_models import (DEPLOYMENT_ACTIVE, REPLICA_LIVE, ModelAccessKey, ModelBuild,
                                   ModelDeployment, ModelReplica)
from ..workloads.engine import EngineError, make_room
from .builds import Builder
from .replicas import choose_port, current, replica_spec
from .router import ModelRouter, Route

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
START_TIMEOUT = dt.timedelta(minutes=5)  # launched but never answering: failed
DRAIN_TIMEOUT = dt.timedelta(seconds=60)  # requests still running after this are cut off
STOP_GRACE_SECONDS = 5.0
HEALTH_TIMEOUT = 2.0
STATUS_EVERY = 8  # ticks between orchestrator status reads of ready replicas
# a new build's image reaches the workers through their image sync (every heartbeat): until it
# is there, a replica placed on a worker is rejected; it is replaced, not counted as a failure
IMAGE_WAIT = dt.timedelta(minutes=10)
IMAGE_RETRY = dt.timedelta(seconds=5)


def image_missing(reason: str) -> bool:
    """The orchestrator's reason says the node does not have the image (yet)."""
    return reasons.image_missing(reason)


class ModelService:
    def __init__(self, db: Database, settings: Settings,
                 orchestrator: Callable[[], Orchestrator]):
        self.db, self.settings = db, settings
        self._factory = orchestrator
        self.router = ModelRouter()
        self.builder = Builder(db, settings, lambda: self.orchestrator)
        self.lock = threading.RLock()
        self._http = httpx.Client(timeout=HEALTH_TIMEOUT)
        self._loop = Loop("cdsw-model-supervisor", lambda: self.sync(), TICK_SECONDS, log=log,
                          what="model supervisor", quiet=(OrchestratorError,))
        self._ticks = 0
        self._draining_since: Dict[int, dt.datetime] = {}
        self._launch_after: Dict[int, dt.datetime] = {}  # deployment id -> no launches before
        self._started_up = False

    @property
    def orchestrator(self) -> Orchestrator:
        return self._factory()

    # --- background loop
    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stops supervising; replicas keep running and are re-adopted by the next master."""
        self._loop.stop(timeout)

    def sync(self) -> None:
        with self.lock:
            if not self._started_up:
                self.builder.fail_interrupted()
                self._started_up = True
            self._ticks += 1
            with self.db.session() as s:
                ids = s.scalars(select(ModelDeployment.id).where(
                    ModelDeployment.status.in_(DEPLOYMENT_ACTIVE)
                    | ModelDeployment.id.in_(select(ModelReplica.deployment_id).where(
                        ModelReplica.state.in_(REPLICA_LIVE))))).all()
            for dep_id in ids:
                try:
                    self.sync_deployment(dep_id, publish=False)
                except OrchestratorError:
                    raise
                except Exception:
                    log.exception("cannot supervise model deployment %d", dep_id)
            self.publish()

    def publish(self) -> None:
        """Hands the router the ready replicas and the live access keys."""
        with self.db.session() as s:
            routes: Dict[int, List[Route]] = {}
            rows = s.execute(select(ModelReplica, ModelDeployment.model_id)
                             .join(ModelDeployment)
                             .where(ModelReplica.state == "ready")
                             .order_by(ModelReplica.id)).all()
            for replica, model_id in rows:
                if replica.address and replica.id not in self._draining_since:
                    routes.setdefault(model_id, []).append(Route(
                        replica.id, "http://%s:%d/" % (replica.address, replica.port),
                        replica.token))
            keys = dict(s.execute(select(ModelAccessKey.key_hash, ModelAccessKey.model_id)
                                  .where(ModelAccessKey.revoked_at.is_(None))).all())
        self.router.publish(routes, keys)

    # --- one deployment
    def sync_deployment(self, dep_id: int, publish: bool = True) -> None:
        with self.lock:
            with self.db.session() as s:
                dep = s.get(ModelDeployment, dep_id)
                if dep is None:
                    return
                replicas = s.scalars(select(ModelReplica).where(
                    ModelReplica.deployment_id == dep_id,
                    ModelReplica.state.in_(REPLICA_LIVE)).order_by(ModelReplica.id)).all()
                nodes = None
                for r in replicas:
                    nodes = self._check(s, r, nodes)
                self._converge(s, dep)
            if publish:
                self.publish()

    def _addresses(self) -> Dict[str, str]:
        return {n.name: n.address for n in self.orchestrator.nodes()}

    def _check(self, s: Session, r: ModelReplica, nodes: Optional[Dict[str, str]]
               ) -> Optional[Dict[str, str]]:
        now = utcnow()
        if r.state == "draining":
            since = self._draining_since.setdefault(r.id, now)
            if self.router.outstanding(r.id) <= 0 or now - since > DRAIN_TIMEOUT:
                self._end(r, "stopped", r.message or "replaced", remove=True)
            return nodes
        if r.workload_id is None:
            self._end(r, "failed", r.message or "the replica never started")
            return nodes
        if r.state == "ready" and self._ticks % STATUS_EVERY and r.address:
            return nodes  # cheap path: the router notices dead replicas; status every few ticks
        try:
            status = self.orchestrator.status(r.workload_id)
        except WorkloadNotFound:
            self._end(r, "failed", "the replica's workload disappeared")
            return nodes
        if status.state in FINAL_STATES:
            if image_missing(status.reason) and now - r.created_at < IMAGE_WAIT:
                self._end(r, "stopped", "the build image is not on %s yet; trying again"
                          % (status.node or "its node"), remove=True)
                self._launch_after[r.deployment_id] = now + IMAGE_RETRY
                return nodes
            self._end(r, "failed", "the replica ended: %s" % (status.reason or status.state),
                      remove=False)
            return nodes
        if r.state == "ready":
            return nodes
        if status.state == PENDING and status.reason == WAITING_FOR_RESOURCES:
            make_room()  # warm engines may hold what the replica needs
        if status.node:
            # looked up again on every tick until the replica answers: an address read while
            # the node was still joining (or a task moved to another node) must not stick
            nodes = nodes if nodes is not None else self._addresses()
            r.node, r.address = status.node, nodes.get(status.node) or r.address
        if r.address:
            answer = self._health(r)
            if answer == "ready":
                r.state, r.ready_at, r.message = "ready", now, ""
                log.info("model replica %s is ready on %s:%d", r.name, r.address, r.port)
                return nodes
            if answer:
                self._end(r, "failed", answer)
                return nodes
        if now - r.created_at > START_TIMEOUT:
            self._end(r, "failed", "the replica did not answer within %d s (%s)"
                      % (START_TIMEOUT.total_seconds(), status.reason or status.state))
        return nodes

    def _health(self, r: ModelReplica) -> str:
        """"ready", a failure message, or "" while it does not answer yet."""
        try:
            resp = self._http.get("http://%s:%d/health" % (r.address, r.port),
                                  headers={TOKEN_HEADER: r.token})
        except httpx.HTTPError:
            return ""
        try:
            body = resp.json()
        except ValueError:
            return ""
        if resp.status_code == 200 and body.get("status") == "ready":
            return "ready"
        if body.get("status") == "failed":
            return str(body.get("error") or "the replica cannot serve")
        return ""

    def _end(self, r: ModelReplica, state: str, message: str, remove: bool = False) -> None:
        """Stops the replica's workload; a failed one is kept (stopped) so its log stays
        readable until the deployment stops."""
        self.router.withdraw(r.id)
        if r.workload_id:
            try:
                if remove:
                    self.orchestrator.remove(r.workload_id)
                else:
                    self.orchestrator.stop(r.workload_id, timeout=STOP_GRACE_SECONDS)
            except WorkloadNotFound:
                pass
            except OrchestratorError as e:
                log.warning("cannot stop model replica %s: %s", r.name, e)
        r.state, r.message, r.stopped_at = state, message, utcnow()
        self._draining_since.pop(r.id, None)
        log.info("model replica %s %s: %s", r.name, state, message)

    def _drain(self, r: ModelReplica, why: str) -> None:
        """No new requests; stopped at once when idle, else once its requests are done."""
        self.router.withdraw(r.id)  # under the router's lock: nothing is picked after this
        if self.router.outstanding(r.id) <= 0:
            self._end(r, "stopped", why, remove=True)
            return
        r.state, r.message = "draining", why
        self._draining_since[r.id] = utcnow()

    def _converge(self, s: Session, dep: ModelDeployment) -> None:
        live = s.scalars(select(ModelReplica).where(
            ModelReplica.deployment_id == dep.id,
            ModelReplica.state.in_(("starting", "ready"))).order_by(ModelReplica.id)).all()
        if dep.status == "stopped":
            for r in live:
                self._drain(r, "the deployment was stopped")
            if not s.scalar(select(ModelReplica.id).where(
                    ModelReplica.deployment_id == dep.id, ModelReplica.state == "draining")):
                self._remove_failed(s, dep)
            return
        target = [r for r in live if current(r, dep)]
        old = [r for r in live if not current(r, dep)]
        cannot_load = s.scalars(select(ModelReplica).where(
            ModelReplica.deployment_id == dep.id, ModelReplica.build_id == dep.build_id,
            ModelReplica.state == "failed", ModelReplica.ready_at.is_(None))
            .order_by(ModelReplica.id.desc())).first()
        ready_new = [r for r in target if r.state == "ready"]
        ready_old = [r for r in old if r.state == "ready"]
        for r in old:
            if r.state == "starting":  # never served: nothing to wait for
                self._drain(r, "replaced by build %d" % dep.build_id)
        if self._launch_after.get(dep.id, dt.datetime.min) > utcnow():
            pass  # waiting for the build image to reach the nodes
        elif cannot_load is None:
            if old:  # rolling: one new replica at a time, each replacing one old
                if len(target) < dep.replicas and all(r.state == "ready" for r in target):
                    self._launch(s, dep)
            else:
                for _ in range(dep.replicas - len(target)):
                    self._launch(s, dep)
        while ready_old and len(ready_new) + len(ready_old) > dep.replicas:
            self._drain(ready_old.pop(0), "replaced by build %d" % dep.build_id)
        if not old:
            extra = sorted(target, key=lambda r: (r.state == "ready", r.id))  # starting first
            for r in extra[:max(0, len(target) - dep.replicas)]:
                self._drain(r, "scaled down to %d" % dep.replicas)
        if cannot_load is not None:
            dep.status = "failed"
            dep.reason = "build %d cannot serve: %s" % (dep.build_id, cannot_load.message)
        elif len(ready_new) >= dep.replicas and not ready_old:
            dep.status, dep.reason = "deployed", ""
        else:
            dep.status = "deploying"
            dep.reason = "%d of %d replicas of build %d ready" % (
                len(ready_new), dep.replicas, dep.build_id)

    def _remove_failed(self, s: Session, dep: ModelDeployment) -> None:
        for r in s.scalars(select(ModelReplica).where(ModelReplica.deployment_id == dep.id,
                                                      ModelReplica.state == "failed",
                                                      ModelReplica.workload_id.is_not(None))):
            try:
                self.orchestrator.remove(r.workload_id)  # type: ignore[arg-type]
            except OrchestratorError:
                pass
            r.workload_id = None

    def _launch(self, s: Session, dep: ModelDeployment) -> None:
        build = s.get(ModelBuild, dep.build_id)
        assert build is not None
        used: Set[int] = set(s.scalars(select(ModelReplica.port).where(
            ModelReplica.state.in_(REPLICA_LIVE))).all())
        orchestrator = self.orchestrator
        replica = ModelReplica(deployment_id=dep.id, build_id=build.id, name="pending",
                               state="starting", message="", token=secrets.token_urlsafe(24),
                               run_as_user_id=dep.deployed_by_id,
                               port=choose_port(used, orchestrator.name == "local"),
                               created_at=utcnow())
        s.add(replica)
        s.flush()
        replica.name = "model-%d-replica-%d" % (dep.model_id, replica.id)
        s.commit()  # the row exists before the workload: a crash in between leaves no orphan
        try:
            spec = replica_spec(s, self.settings, orchestrator, build, dep, replica)
            ref = orchestrator.launch(spec)
        except (EngineError, OrchestratorError) as e:
            replica.state, replica.message = "failed", "cannot start the replica: %s" % e
            replica.stopped_at = utcnow()
            return
        replica.workload_id = ref.id
        s.commit()
        log.info("model %d: replica %s launched (build %d) as %s", dep.model_id, replica.name,
                 build.id, ref.id)

    # --- what the API asks for
    def stop_model(self, model_id: int) -> None:
        """Stops every deployment of a model at once (before it is deleted)."""
        with self.lock:
            with self.db.session() as s:
                for dep in s.scalars(select(ModelDeployment).where(
                        ModelDeployment.model_id == model_id)):
                    if dep.status != "stopped":
                        dep.status, dep.stopped_at = "stopped", utcnow()
                    for r in s.scalars(select(ModelReplica).where(
                            ModelReplica.deployment_id == dep.id)):
                        if r.state in REPLICA_LIVE or r.workload_id:
                            self._end(r, "stopped" if r.state in REPLICA_LIVE else r.state,
                                      r.message or "the model was deleted", remove=True)
                            r.workload_id = None
            self.publish()

    def replica_log(self, workload_id: Optional[str], lines: int) -> List[str]:
        if not workload_id:
            return []
        try:
            return list(self.orchestrator.logs(workload_id))[-lines:]
        except WorkloadNotFound:
            return []

    def close(self) -> None:
        self.stop()
        self._http.close()


# --- one service per server ---------------------------------------------------------------

SERVICE_KEY = "models.service"
_create_lock = threading.Lock()


def service_for(state: Any) -> ModelService:
    """The model service of this server (created on first use, sharing the orchestrator)."""
    with _create_lock:
        service = state.extras.get(SERVICE_KEY)
        if service is None:
            service = state.extras[SERVICE_KEY] = ModelService(
                state.db, state.settings, lambda: shared_orchestrator(state))
            service.publish()  # serve the keys and ready replicas before the first tick
        return service


def start(state: Any) -> ModelService:
    service = service_for(state)
    service.start()
    return service


def stop(state: Any) -> None:
    service = state.extras.get(SERVICE_KEY)
    if service is not None:
        service.stop()
