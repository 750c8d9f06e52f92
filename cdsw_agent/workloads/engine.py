"""One engine container for any kind of work (session, job run, experiment, model replica):
image, profile, project files, environment and Hadoop client configuration, as a WorkloadSpec.

Every kind builds its engine here, so the rules live once:

- the image is the request's, else the project's default, else the site default;
- the profile's CPU/memory/GPUs are both reservation and limit;
- environment, later wins: proxies, site variables, project variables, the kind's own variables,
  then CDSW's (CDSW_PROJECT, CDSW_ENGINE_ID, CDSW_MASTER_IP, CDSW_DOMAIN, HADOOP_USER_NAME, ...),
  which a user cannot override: HADOOP_USER_NAME is the launcher, never the project owner;
- the files (the project folder, or an experiment's snapshot) are mounted at /home/cdsw, the
  working directory, as in CDSW; but $HOME is the launcher's own folder (DATA_DIR/projects/
  .homes/USER_ID, mounted at /home/cdsw-user), so the start-up files that Python, Jupyter,
  IPython, pip and shells read from $HOME are the launcher's, never files a collaborator wrote
  into the project (see user_home);
- the current client-configuration bundle, when one was collected, is mounted read-only with
  HADOOP_CONF_DIR and friends, and the engine is placed on a node first: spark.driver.host must
  be that node's address, and the driver ports are published there;
- the engine runs on its project's home cluster (cdsw_agent/clusters): only on that cluster's
  nodes, with its bundles, krb5.conf and JAVA_HOME, and only for a launcher the cluster grants
  work to.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import clusters
from ..clientconfig import (SparkPorts, bundles_dir, current, engine_mounts_and_env,
                            hadoop_mounts_and_env)
from ..errors import UserError
from ..clientconfig import distributions as cluster_clients
from ..images.recipe import IMAGE_PATH, USER_HOME
from ..orchestrators import Mount, Orchestrator, OrchestratorError, Port, WorkloadSpec
from ..orchestrators.base import RESTART_NEVER, Node
from ..settings import Settings
from ..store.envvars import SITE
from ..store.envvars import effective as stored_env
from ..store.models import EngineImage, EngineProfile, EnvVar, Project, User

log = logging.getLogger(__name__)

PROJECT_MOUNT = "/home/cdsw"  # where engines see the project folder, as in CDSW
USER_HOME_MOUNT = USER_HOME  # $HOME of an engine: its launcher's own folder
HOMES_DIR = ".homes"  # under projects_dir (the storage every node shares)
KIND_LABEL = "io.cdsw.kind"
PROJECT_LABEL = "io.cdsw.project"
USER_LABEL = "io.cdsw.user"
# host ports Spark drivers of engines may publish (two per engine), as CDSW's 20050-32767
SPARK_PORT_RANGE = (20050, 32767)


class EngineError(Exception):
    """The engine cannot be described (no image, bad placement...); str() is one line."""


class NoRoom(EngineError):
    """No node has the CPU and memory the engine reserves (warm engines may give way)."""


@dataclass
class EngineRequest:
    kind: str  # session | job | experiment | model
    name: str  # the workload name: unique, letters, digits, '-', '_', '.'
    project: Project
    launcher: Optional[User]  # whose identity the engine carries (HADOOP_USER_NAME)
    command: List[str]
    files_dir: Path  # mounted at /home/cdsw: the project folder or a snapshot of it
    image_id: Optional[int] = None
    profile_id: Optional[int] = None
    env: Dict[str, str] = field(default_factory=dict)  # the kind's variables
    ports: List[Port] = field(default_factory=list)
    labels: Dict[str, str] = field(default_factory=dict)
    restart: str = RESTART_NEVER
    image_override: Optional[str] = None  # a model build's image instead of an engine image
    spark: bool = True  # may start a Spark driver: placed first, driver ports published
    # where the engine already runs, with the Spark ports it publishes (a warm engine's,
    # sessions/warm_pool.py): no placement; ignored for a project on a cluster of its own
    node: Optional[str] = None
    spark_ports: Optional[SparkPorts] = None


# Variables that make programs run code before anything the user runs: the dynamic loader's
# (every process of the engine, jupyter_server too) and the shells' (BASH_ENV, ENV,
# PROMPT_COMMAND). A project's variables are written by its admins, not only by the launcher,
# and a job's by its contributors: only the site's settings may set these.
LOADER_VARIABLES = ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "BASH_ENV", "ENV",
                    "PROMPT_COMMAND")


def site_env(db: Session) -> Dict[str, str]:
    return {v.name: v.value for v in db.scalars(select(EnvVar).where(EnvVar.scope == SITE))}


def without_loader_variables(env: Dict[str, str], allowed: Dict[str, str],
                             workload: str) -> Dict[str, str]:
    """env without the LOADER_VARIABLES not set to the same value in allowed (the site's)."""
    dropped = [k for k in LOADER_VARIABLES if k in env and allowed.get(k) != env[k]]
    if dropped:
        log.warning("engine %s: ignored %s from the project or the job; only the site's "
                    "environment may set %s", workload, ", ".join(dropped),
                    ", ".join(LOADER_VARIABLES))
    return {k: v for k, v in env.items() if k not in dropped}


def proxies(settings: Settings) -> Dict[str, str]:
    values = {"HTTP_PROXY": settings.http_proxy, "HTTPS_PROXY": settings.https_proxy,
              "NO_PROXY": settings.no_proxy}
    return {k: v for k, v in values.items() if v}


def image_name(db: Session, image_id: Optional[int], project: Project, required: bool) -> str:
    """repository:tag of the request's image, else the project's, else the site default."""
    chosen = image_id or project.default_engine_image_id
    image = db.get(EngineImage, chosen) if chosen else \
        db.scalars(select(EngineImage).where(EngineImage.is_default.is_(True))).first()
    if image is not None:
        return "%s:%s" % (image.repository, image.tag)
    if required:
        raise EngineError("no engine image: choose one, set the project's default, or mark a "
                          "site default image")
    return "none"  # the local backend runs processes and ignores images


def user_home(settings: Settings, user: User) -> Path:
    """The user's home folder on the shared storage, created (mode 0700, given to the engines'
    uid when this process may) on first use. Only engines acting as that user mount it."""
    from ..projects.storage import engine_owner

    home = Path(settings.projects_dir) / HOMES_DIR / str(user.id)
    if not home.is_dir():
        home.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        home.mkdir(mode=0o700, exist_ok=True)
        owner = engine_owner()
        if owner is not None:
            os.chown(home, owner, owner)
    return home


def home_variables(home: str) -> Dict[str, str]:
    """Where everything that reads start-up files from the home folder looks. Also set
    explicitly, so a project variable cannot point Jupyter, IPython, pip or R back into the
    project: JUPYTER_PATH and JUPYTER_CONFIG_PATH are emptied for the same reason."""
    return {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": home + "/.jupyter",
        "JUPYTER_DATA_DIR": home + "/.local/share/jupyter",
        "JUPYTER_PATH": "",
        "JUPYTER_CONFIG_PATH": "",
        "IPYTHONDIR": home + "/.ipython",
        "PYTHONUSERBASE": home + "/.local",
        "XDG_CONFIG_HOME": home + "/.config",
        "XDG_DATA_HOME": home + "/.local/share",
        "XDG_CACHE_HOME": home + "/.cache",
        "MPLCONFIGDIR": home + "/.config/matplotlib",
        # R reads .Rprofile and .Renviron from the working directory, the project, before the
        # home: a collaborator's would run in every Rscript job and experiment
        "R_PROFILE_USER": home + "/.Rprofile",
        "R_ENVIRON_USER": home + "/.Renviron",
    }


def cdsw_variables(settings: Settings, req: EngineRequest, home: str = USER_HOME) -> Dict[str, str]:
    """The variables CDSW defines in every engine."""
    user = req.launcher.username if req.launcher is not None else "cdsw"
    return {
        "CDSW_PROJECT": req.project.slug,
        "CDSW_PROJECT_ID": str(req.project.id),
        "CDSW_ENGINE_ID": req.name,
        "CDSW_MASTER_IP": settings.master_host,
        "CDSW_DOMAIN": settings.domain,
        "CDSW_ENGINE_KIND": req.kind,
        "HADOOP_USER_NAME": user,
        "CDSW_USER": user,
        "PYTHONUNBUFFERED": "1",
        **home_variables(home),
    }


# Engines placed here but maybe not yet seen by the orchestrator: several launched in the same
# instant (a model's replicas) must not all be pinned to the node that looked emptiest.
PLACEMENT_MEMORY_SECONDS = 15.0
_placed: List[Tuple[float, str, float, int]] = []  # (forget at, node, cpu, memory)
_placed_lock = threading.Lock()


class RoomMaker(Protocol):
    def give_way(self) -> bool:
        """Frees CPU or memory it holds for later (warm engines); True when it freed some."""


# what holds CPU or memory only in case it is wanted later: the warm pools of this process
_room_makers: "weakref.WeakSet[Any]" = weakref.WeakSet()


def holds_room(maker: RoomMaker) -> None:
    """`maker` gives way whenever an engine of any kind finds no room (kept weakly)."""
    _room_makers.add(maker)


def make_room() -> bool:
    """An engine could not be placed, or its task waits for a node with room: whatever holds
    CPU or memory only for later gives it up. True when something was freed. Sessions, jobs,
    experiments and replicas all come before a waiting warm engine."""
    freed = False
    for maker in list(_room_makers):
        try:
            freed = maker.give_way() or freed
        except Exception:  # noqa: BLE001 - one pool's trouble must not fail the launch
            log.exception("cannot make room for an engine")
    return freed


def cluster_nodes(orchestrator: Orchestrator,
                  constraints: Sequence[clusters.Constraint] = ()) -> List[Node]:
    """The ready, active nodes meeting the node constraints (its cluster's)."""
    try:
        return [n for n in orchestrator.nodes() if n.state == "ready"
                and n.availability == "active" and clusters.node_matches(n.labels, constraints)]
    except OrchestratorError as e:
        raise EngineError("cannot list the nodes to place the engine: %s" % e)


def no_node_of_cluster(constraints: Sequence[clusters.Constraint]) -> EngineError:
    wanted = [v for _, op, v in constraints if op == "=="]
    if wanted:
        return EngineError("no ready node of cluster %s; start a worker whose "
                           "workbench_cluster setting is %s (its node is labelled %s=%s)"
                           % (wanted[0], wanted[0], clusters.NODE_LABEL, wanted[0]))
    return EngineError("no ready node of the default cluster (nodes labelled %s with no "
                       "other cluster's name); start a worker with an empty workbench_cluster"
                       % clusters.NODE_LABEL)


def place(orchestrator: Orchestrator, cpu: float, memory: int,
          constraints: Sequence[clusters.Constraint] = ()) -> Node:
    """The ready node (of the cluster, with constraints) with the most free memory that fits
    the reservation; when none has room, once more after make_room() freed some."""
    try:
        return _place(orchestrator, cpu, memory, constraints)
    except NoRoom:
        if not make_room():
            raise
        return _place(orchestrator, cpu, memory, constraints)


def _place(orchestrator: Orchestrator, cpu: float, memory: int,
           constraints: Sequence[clusters.Constraint]) -> Node:
    nodes = cluster_nodes(orchestrator, constraints)
    if constraints and not nodes:
        raise no_node_of_cluster(constraints)

    def free(n: Node, pending: Dict[str, Tuple[float, int]]) -> Tuple[float, int]:
        p_cpu, p_mem = pending.get(n.name, (0.0, 0))
        return (n.cpu_capacity - n.cpu_allocated - p_cpu,
                n.memory_capacity - n.memory_allocated - p_mem)

    with _placed_lock:
        now = time.monotonic()
        _placed[:] = [p for p in _placed if p[0] > now]
        pending: Dict[str, Tuple[float, int]] = {}
        for _, name, p_cpu, p_mem in _placed:
            c, m = pending.get(name, (0.0, 0))
            pending[name] = (c + p_cpu, m + p_mem)
        # the orchestrator's numbers decide what fits; the recent placements (which may
        # already be counted there, or be gone) only rank the nodes, so engines spread out
        fits = [n for n in nodes if free(n, {})[0] >= cpu and free(n, {})[1] >= memory]
        if not fits:
            raise NoRoom("no node has %.1f CPU and %d MiB free for this engine; stop a "
                         "session or choose a smaller profile" % (cpu, memory // 2**20))

        def rank(n: Node) -> Tuple[bool, int, float]:
            f_cpu, f_mem = free(n, pending)
            return (f_cpu >= cpu and f_mem >= memory, f_mem, f_cpu)
        best = max(fits, key=rank)
        _placed.append((now + PLACEMENT_MEMORY_SECONDS, best.name, cpu, memory))
    return best


def spark_ports(rng: Optional[random.Random] = None) -> SparkPorts:
    """Two host ports for a Spark driver. Chosen at random in a wide range: a clash with another
    engine on the same node makes the orchestrator refuse the task, and the launch fails clearly."""
    rng = rng or random.SystemRandom()
    low, high = SPARK_PORT_RANGE
    driver = rng.randrange(low, high, 2)
    return SparkPorts(driver=driver, block_manager=driver + 1)


def build_spec(db: Session, settings: Settings, orchestrator: Orchestrator,
               req: EngineRequest) -> WorkloadSpec:
    """The workload for this engine; EngineError when it cannot be described."""
    cluster = clusters.cluster_of(db, req.project)
    if req.launcher is not None and not clusters.has_grant(db, req.launcher, cluster):
        raise EngineError("%s has no grant to run work on cluster %s, the home of project %s; "
                          "ask a site administrator (`cdsw clusters grant %s --user %s`)"
                          % (req.launcher.username, cluster.name, req.project.slug,
                             cluster.name, req.launcher.username))
    constraints = clusters.placement(db, cluster)
    if constraints and not cluster_nodes(orchestrator, constraints):
        raise no_node_of_cluster(constraints)
    settings = cluster_settings(settings, cluster)
    profile: Optional[EngineProfile] = db.get(EngineProfile, req.profile_id) \
        if req.profile_id else None
    if req.profile_id and profile is None:
        raise EngineError("engine profile %d does not exist" % req.profile_id)
    cpu = profile.cpu if profile else 0.0
    memory = int(profile.memory_gb * 2**30) if profile else 0
    image = req.image_override or image_name(db, req.image_id, req.project,
                                             required=orchestrator.name != "local")
    env = proxies(settings)
    env.update(without_loader_variables(stored_env(db, req.project.id), site_env(db), req.name))
    env.update(without_loader_variables({str(k): str(v) for k, v in req.env.items()}, {},
                                        req.name))
    mounts = [Mount(str(req.files_dir), PROJECT_MOUNT)]
    local = orchestrator.name == "local"
    if local:
        env.setdefault("PATH", cluster_clients.local_path())
    if req.kind != "model" and req.launcher is not None:
        host_home = user_home(settings, req.launcher)
        home = str(host_home) if local else USER_HOME_MOUNT
        if not local:
            mounts.append(Mount(str(host_home), USER_HOME_MOUNT))
    else:  # acts as nobody, or a model replica: the image's (the build's) home, or an empty one
        home = str(engine_dir(settings, req.name) / "home") if local else USER_HOME_MOUNT
        if local:
            Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(cdsw_variables(settings, req, home))
    from ..experiments import mlflow_engine  # MLflow's tracking URI and the launcher's token
    env.update(mlflow_engine.variables(db, settings, req.kind, req.name, req.project,
                                       req.launcher))
    labels = dict(req.labels)
    labels.update({KIND_LABEL: req.kind, PROJECT_LABEL: str(req.project.id)})
    if req.launcher is not None:
        labels[USER_LABEL] = str(req.launcher.id)
    spec = WorkloadSpec(
        name=req.name, image=image, command=list(req.command), env=env,
        mounts=mounts, workdir=PROJECT_MOUNT,
        cpu_reservation=cpu, cpu_limit=cpu, memory_reservation=memory, memory_limit=memory,
        gpus=profile.gpus if profile else 0, ports=list(req.ports), labels=labels,
        restart=req.restart, node_constraints=list(constraints))
    attach_client_config(settings, orchestrator, spec, req.spark,
                         clusters.bundles_root(settings, cluster),
                         node=None if constraints else req.node, ports=req.spark_ports)
    if constraints and spec.node is None and not local:
        # under several clusters every engine is placed on a node of its cluster here, so
        # whoever needs its node (sessions publish jupyter_server there) gets one of them
        spec.node = place(orchestrator, cpu, memory, constraints).name
    for note in cluster_clients.attach(settings, spec, local, IMAGE_PATH):
        log.warning("engine %s: %s", spec.name, note)
    from ..kerberos import engine as kerberos_engine  # the acting user's ticket, read-only
    kerberos_engine.attach(db, settings, spec, req.launcher, local)
    return spec


def engine_dir(settings: Settings, name: str) -> Path:
    """Per-engine host files (its Spark conf dir), on the storage every node shares."""
    return Path(settings.projects_dir) / ".engines" / name


def cluster_settings(settings: Settings, cluster: "clusters.Cluster") -> Settings:
    """The settings an engine of this cluster sees: its krb5.conf and JAVA_HOME when it has
    its own."""
    own = {k: v for k, v in (("krb5_conf", cluster.krb5_conf), ("java_home", cluster.java_home))
           if v}
    return settings.with_overrides(**own) if own else settings


def attach_client_config(settings: Settings, orchestrator: Orchestrator,
                         spec: WorkloadSpec, spark: bool = True,
                         root: Optional[Path] = None, node: Optional[str] = None,
                         ports: Optional[SparkPorts] = None) -> None:
    """Mount the current client-configuration bundle of `root` (default: the site's), if one was
    collected. Only an engine that may start a Spark driver is pinned to a node (of its
    cluster: `node` when it runs there already, with its Spark `ports`); the others go where
    the orchestrator finds room."""
    try:
        bundle = current(root if root is not None else bundles_dir(settings))
    except UserError as e:
        log.warning("engine %s gets no Hadoop client configuration: %s", spec.name, e)
        return
    if bundle is None:
        return
    if not spark:
        hadoop_mounts_and_env(bundle, settings).apply(spec)
        return
    # spark-defaults.conf names this node as the driver host: place the engine first
    if node is not None:
        where = next((n for n in cluster_nodes(orchestrator) if n.name == node), None)
        if where is None:
            raise EngineError("node %s is not ready" % node)
    else:
        where = place(orchestrator, spec.cpu_reservation, spec.memory_reservation,
                      spec.node_constraints)
    spec.node = where.name
    try:
        config = engine_mounts_and_env(bundle, settings, where.address, ports or spark_ports(),
                                       engine_dir(settings, spec.name))
    except UserError as e:
        raise EngineError("client configuration %s: %s" % (bundle.version, e))
    for note in config.notes:
        log.warning("engine %s: %s", spec.name, note)
    config.apply(spec)
