"""Warm engines: a small pool of session engines started ahead of the sessions that take them.

A session's start is mostly the container (about 0.4 s through the swarm) and jupyter_server's
imports (0.4 s). A warm engine has both behind it: a container of the default engine image,
with the warm profile's resources, running engine/warm.py, which has imported jupyter_server and
waits. It is nobody's: the pool starts it with no project folder, no home, no credential, none
of a user's or project's variables and none of their labels; only the digest of a secret the
pool keeps in memory, and a host port of its own on the master's node.

A session is described for a waiting engine's node and Spark driver ports (published by the
warm engine from the start, so a session's Spark driver reaches its executors as a cold one's
does); if the description is exactly such an engine (the same image, CPU, memory and GPUs, no
other user, no port but those, no cluster of its own), the session claims it, in this order:
1. the workload is relabelled as the session's (kind, name, project, user, session): from then
   on it is the session's engine for the orphan sweep and a restarted master's adoption, and
   no longer the pool's;
2. the session's mounts (project folder, the launcher's home, client configuration, Kerberos
   ticket) are bind-mounted into the running container (orchestrators/mount_inject.py);
3. the session's variables and working directory are sent with the engine's secret; the engine
   takes them as a cold engine's container would have had them, and starts the session's kernel
   and jupyter_server, which answers the session's token only.
A claim that fails at any step removes the engine, and the session starts cold. An engine is
claimed once: it ends with its session and is never returned to the pool.

The pool is kept by the session monitor's tick (and right after each claim): engines that ended
or no longer match the settings (session_warm_engines, session_warm_profile, the default image)
are removed; missing ones are started, on the master's node only, since only there can the
master reach a container's mounts; at most session_warm_engines wait at any time. On the first
tick, warm engines a previous master left (their secrets are gone with it) are removed.

The pool lives in the memory of the process that runs the control loops. With several HTTP
workers (master_http_workers) that is the controller, and every session start goes through it,
so one pool serves them all.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import httpx
from sqlalchemy import select

from ..clientconfig import SparkPorts
from ..engine.entrypoint import token_digest
from ..engine.warm import CLAIM_PATH, READY_PATH, WARM_VARIABLE
from ..orchestrators import (MountUnsupported, Orchestrator, OrchestratorError, Port,
                             WorkloadNotFound, WorkloadSpec)
from ..orchestrators.base import FAILED, RUNNING, RESTART_NEVER, SUCCEEDED, LOST
from ..store.db import Database
from ..store.models import EngineImage, EngineProfile
from ..workloads import KIND_LABEL
from ..workloads.engine import PROJECT_MOUNT, holds_room, spark_ports
from .launch import ENGINE_COMMAND, ENGINE_PORT

log = logging.getLogger(__name__)
WARM_LABEL = "io.cdsw.warm"
CLAIM_TIMEOUT = 10.0
PROBE_TIMEOUT = 1.0
START_SECONDS = 120  # a warm engine not ready by then is removed (and another started)
# after a session last waited for CPU or memory, warm engines that reserve some are not started
# again for this long (give_way)
GIVE_WAY_SECONDS = 60.0

# (image reference, cpu cores, memory bytes, gpus): what a warm engine is, and what a session
# must ask for exactly to take it
Shape = Tuple[str, float, int, int]


@dataclass
class WarmEngine:
    workload_id: str
    name: str
    shape: Shape
    node: str
    host_port: int
    spark_ports: SparkPorts  # published from the start, for a session's Spark driver
    secret: str = field(repr=False)
    started: float = field(default_factory=time.monotonic)
    ready: bool = False

    def fits(self, spec: WorkloadSpec) -> bool:
        """Whether the spec is this engine with a session's mounts, variables and labels: the
        same image and resources, no other user, on its node or none, publishing no port but
        its Spark ports (engine port not added yet), and on no cluster of its own."""
        published = {self.spark_ports.driver, self.spark_ports.block_manager}
        return shape_of(spec) == self.shape and list(spec.command) == list(ENGINE_COMMAND) \
            and not spec.user and not spec.node_constraints \
            and spec.node in (None, self.node) \
            and all(p.host == p.container and p.host in published and p.protocol == "tcp"
                    for p in spec.ports)


def reserves(shape: Shape) -> bool:
    """Whether engines of this shape reserve CPU, memory or GPUs (a profile's)."""
    _, cpu, memory, gpus = shape
    return bool(cpu or memory or gpus)


def shape_of(spec: WorkloadSpec) -> Optional[Shape]:
    """The image and resources a spec asks for (reservation and limit alike, as profiles do)."""
    if spec.cpu_reservation != spec.cpu_limit or spec.memory_reservation != spec.memory_limit:
        return None
    return (spec.image, float(spec.cpu_limit), int(spec.memory_limit), int(spec.gpus))


class WarmPool:
    def __init__(self, db: Database, settings: Any, orchestrator: Callable[[], Orchestrator],
                 address: Callable[[Optional[str]], Optional[str]],
                 free_port: Callable[[str, Set[int]], int]):
        self.db, self.settings = db, settings
        self._orchestrator, self._address, self._free_port = orchestrator, address, free_port
        self._lock = threading.Lock()  # the engines
        self._tick_lock = threading.Lock()  # one tick at a time
        self._engines: Dict[str, WarmEngine] = {}  # workload id -> engine
        self._swept = False
        self._disabled = ""  # why warm engines are off in this process, after a failed mount
        self._held_until = 0.0  # no reserving engine is started before (give_way)
        self._said: Set[str] = set()  # warnings logged once
        holds_room(self)  # engines of every kind that find no room make these give way

    # --- what the pool holds
    def size(self) -> int:
        return int(getattr(self.settings, "session_warm_engines", 0) or 0)

    def engines(self) -> List[WarmEngine]:
        with self._lock:
            return list(self._engines.values())

    def ports(self, node: Optional[str]) -> Set[int]:
        """Host ports warm engines hold on a node (sessions must not take them)."""
        return {e.host_port for e in self.engines() if e.node == node}

    def target(self) -> Optional[Shape]:
        """The shape warm engines have now: the default image with the warm profile."""
        with self.db.session() as s:
            image = s.scalars(select(EngineImage).where(EngineImage.is_default.is_(True))).first()
            if image is None:
                return None
            name = str(getattr(self.settings, "session_warm_profile", "") or "")
            cpu, memory, gpus = 0.0, 0, 0
            if name:
                profile = s.scalars(select(EngineProfile).where(EngineProfile.name == name)).first()
                if profile is None:
                    self._say("session_warm_profile names no engine profile (%s); no engine is "
                              "kept warm" % name)
                    return None
                cpu, memory, gpus = profile.cpu, int(profile.memory_gb * 2**30), profile.gpus
            return ("%s:%s" % (image.repository, image.tag), float(cpu), memory, int(gpus))

    # --- claiming
    def candidate(self) -> Optional[WarmEngine]:
        """A ready engine a session may be described for (its node and Spark ports), not taken
        yet: claim() takes it if the description fits."""
        if self.size() <= 0:  # turned off: what still waits is removed by the next tick
            return None
        engines = self.engines()
        ready = next((e for e in engines if e.ready), None)
        for engine in engines if ready is None else ():
            # started since the last tick, perhaps ready already: ask it (a refused
            # connection answers at once)
            engine.ready = self._probe(engine)
            if engine.ready:
                return engine
        return ready

    def claim(self, spec: WorkloadSpec, engine: WarmEngine) -> bool:
        """Takes the engine out of the pool for this spec (never to be given back), when it
        fits and is still waiting."""
        if not engine.fits(spec):
            return False
        with self._lock:
            return self._engines.pop(engine.workload_id, None) is not None

    def hand_over(self, engine: WarmEngine, spec: WorkloadSpec) -> None:
        """Makes a claimed engine the spec's (see the module's docstring); OrchestratorError
        when it could not, after removing the engine."""
        orchestrator = self._orchestrator()
        # refilled only now: the session's row, which holds the engine's port, is committed
        self.refill_soon()
        try:
            orchestrator.relabel(engine.workload_id, spec.all_labels())
            if spec.mounts:
                orchestrator.inject_mounts(engine.workload_id, spec.mounts)
            self._send_claim(engine, spec)
        except (OrchestratorError, httpx.HTTPError) as e:
            log.warning("warm engine %s could not be handed over (%s); the session starts "
                        "a new engine", engine.workload_id, e)
            if isinstance(e, MountUnsupported):  # not one session's refused path: any
                self._disabled = "warm engines are off: %s" % e
                self._say(self._disabled)
            self._remove(orchestrator, engine.workload_id)
            raise OrchestratorError(str(e))

    def _send_claim(self, engine: WarmEngine, spec: WorkloadSpec) -> None:
        address = self._address(engine.node)
        if address is None:
            raise OrchestratorError("node %s has no address" % engine.node)
        r = httpx.post("http://%s:%d%s" % (address, engine.host_port, CLAIM_PATH),
                       json={"env": dict(spec.env), "workdir": spec.workdir or PROJECT_MOUNT},
                       headers={"Authorization": "token " + engine.secret},
                       timeout=CLAIM_TIMEOUT)
        if r.status_code != 200:
            raise OrchestratorError("the warm engine refused its claim (HTTP %d: %s)"
                                    % (r.status_code, r.text.strip()[:200]))

    # --- keeping the pool
    def refill_soon(self) -> None:
        threading.Thread(target=self.tick, name="cdsw-warm-refill", daemon=True).start()

    def tick(self) -> None:
        """Sweeps, probes, trims and refills; a tick already under way makes this one a no-op."""
        if not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._tick()
        finally:
            self._tick_lock.release()

    def _tick(self) -> None:
        orchestrator = self._orchestrator()
        if not self._swept:
            self._sweep(orchestrator)
        wanted = self.target() if self.size() > 0 and not self._disabled else None
        node = orchestrator.local_node() if wanted is not None else None
        if wanted is not None and (node is None or os.geteuid() != 0):
            self._say("warm engines need the Docker Swarm backend and the master running as "
                      "root on a manager's node (it mounts a session's folders into its "
                      "engine); none is kept")
            wanted = None
        for engine in self.engines():
            try:
                status = orchestrator.status(engine.workload_id)
            except WorkloadNotFound:
                status = None
            except OrchestratorError as e:
                log.warning("cannot read warm engine %s: %s", engine.workload_id, e)
                continue
            stuck = not engine.ready and time.monotonic() - engine.started > START_SECONDS
            if status is None or status.state in (SUCCEEDED, FAILED, LOST) or stuck \
                    or engine.shape != wanted or engine.node != node:
                if stuck:  # e.g. a Spark port another engine took meanwhile
                    log.warning("warm engine %s did not start within %d s (%s); removing it",
                                engine.workload_id, START_SECONDS,
                                status.reason if status is not None else "gone")
                self._remove(orchestrator, engine.workload_id)
            elif status.state == RUNNING and not engine.ready:
                engine.ready = self._probe(engine)
        if wanted is None or node is None or self._holding(wanted):
            return
        excess = len(self.engines()) - self.size()
        for engine in self.engines()[:max(excess, 0)]:
            self._remove(orchestrator, engine.workload_id)
        for _ in range(self.size() - len(self.engines())):
            if not self._start(orchestrator, wanted, node):
                break

    def give_way(self) -> bool:
        """An engine (a session, job, experiment or replica) waits, or could not be placed,
        for lack of CPU or memory (workloads.engine.make_room): waiting engines that reserve
        some are removed, and none is started again until no engine has needed that for
        GIVE_WAY_SECONDS (work comes before a warm engine). True when an engine was removed."""
        self._held_until = time.monotonic() + GIVE_WAY_SECONDS
        orchestrator = self._orchestrator()
        removed = False
        for engine in self.engines():
            if reserves(engine.shape):
                log.info("warm engine %s gives way to a session that needs its CPU or memory",
                         engine.workload_id)
                self._remove(orchestrator, engine.workload_id)
                removed = True
        return removed

    def _holding(self, shape: Shape) -> bool:
        return reserves(shape) and time.monotonic() < self._held_until

    def _start(self, orchestrator: Orchestrator, shape: Shape, node: str) -> bool:
        image, cpu, memory, gpus = shape
        secret = secrets.token_urlsafe(32)
        name = "cdsw-warm-" + secrets.token_hex(6)
        spark = spark_ports()
        try:
            port = self._free_port(node, self.ports(node))
            ref = orchestrator.launch(WorkloadSpec(
                name=name, image=image, command=list(ENGINE_COMMAND),
                env={WARM_VARIABLE: token_digest(secret), "CDSW_ENGINE_PORT": str(ENGINE_PORT)},
                workdir=PROJECT_MOUNT, cpu_reservation=cpu, cpu_limit=cpu,
                memory_reservation=memory, memory_limit=memory, gpus=gpus,
                ports=[Port(ENGINE_PORT, port), Port(spark.driver, spark.driver),
                       Port(spark.block_manager, spark.block_manager)],
                labels={WARM_LABEL: "1", KIND_LABEL: "warm"},
                restart=RESTART_NEVER, node=node))
        except Exception as e:  # noqa: BLE001 - the next tick tries again
            log.warning("cannot start a warm engine: %s", e)
            return False
        with self._lock:
            self._engines[ref.id] = WarmEngine(ref.id, name, shape, node, port, spark, secret)
        log.info("warm engine %s started on %s (port %d)", ref.id, node, port)
        return True

    def _probe(self, engine: WarmEngine) -> bool:
        address = self._address(engine.node)
        try:
            r = httpx.get("http://%s:%d%s" % (address, engine.host_port, READY_PATH),
                          headers={"Authorization": "token " + engine.secret},
                          timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def _sweep(self, orchestrator: Orchestrator) -> None:
        """Warm engines no pool of this process started (a previous master's) are removed."""
        try:
            refs = orchestrator.list({WARM_LABEL: "1"})
        except OrchestratorError as e:
            log.warning("cannot list warm engines: %s", e)
            return
        known = {e.workload_id for e in self.engines()}
        for ref in refs:
            if ref.id not in known:
                log.info("removing warm engine %s, left by an earlier master", ref.id)
                self._remove(orchestrator, ref.id)
        self._swept = True

    def _remove(self, orchestrator: Orchestrator, workload_id: str) -> None:
        with self._lock:
            self._engines.pop(workload_id, None)
        try:
            orchestrator.remove(workload_id)
        except WorkloadNotFound:
            pass
        except OrchestratorError as e:
            log.warning("cannot remove warm engine %s: %s", workload_id, e)

    def clear(self) -> None:
        """Removes every waiting engine (the master stops)."""
        orchestrator = self._orchestrator()
        for engine in self.engines():
            self._remove(orchestrator, engine.workload_id)

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning("%s", message)
