"""A session as an engine workload: kernel choice, jupyter_server settings, port and node."""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..engine.entrypoint import DIGEST_VARIABLE, PRESTART_VARIABLE, token_digest
from ..images.recipe import VENV
from ..orchestrators import Orchestrator, Port, WorkloadSpec
from ..settings import Settings
from ..store.models import EngineImage, Project, User
from ..store.sessions_models import ACTIVE_STATUSES, EngineSession
from ..workloads import EngineRequest, build_spec, place

if TYPE_CHECKING:
    from .warm_pool import WarmEngine, WarmPool

ENGINE_PORT = 8888  # jupyter_server's port inside the container (the image EXPOSEs it)
# where a session's web app listens (CDSW_APP_PORT); each engine container has its own network,
# so every session may use it (on the local backend sessions share the host's ports)
APP_PORT = 8100
# an image engine's command (-I: nothing from the project: working directory, PYTHON* variables,
# user site); warm engines run it too (warm_pool.py)
ENGINE_COMMAND = (VENV + "/bin/python", "-I", "-m", "cdsw_agent.engine")
# host ports sessions publish on their node; below Spark's 20050-32767 driver range
SESSION_PORT_RANGE = (15000, 19999)
SESSION_LABEL = "io.cdsw.session"
# kernel asked for -> the image kernelspec names that provide it, preferred first
KERNELSPECS: Dict[str, Tuple[str, ...]] = {
    "python3": ("python3",),
    "r": ("ir",),
    "scala": ("scala", "apache_toree_scala", "almond"),
}
KERNEL_TITLES = {"python3": "Python 3", "r": "R", "scala": "Scala"}


class SessionLaunchError(Exception):
    """The session cannot be started as asked; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def base_path(session_id: int) -> str:
    """Where the master's router serves the engine; jupyter_server runs under the same prefix
    so its links and redirects stay valid through the proxy."""
    return "/api/v1/sessions/%d/engine/" % session_id


def app_path(session_id: int, port: int = APP_PORT) -> str:
    """Where a web app listening on port in the session's engine is served (jupyter-server-proxy
    under the engine's base path; the app sees the path below it)."""
    return "%sproxy/%d/" % (base_path(session_id), port)


def local_has_jupyterlab() -> bool:
    """The local backend's engine runs the master's own Python: JupyterLab is there when that
    environment has it."""
    import importlib.util
    return importlib.util.find_spec("jupyterlab") is not None


def choose_image(db: Session, image_id: Optional[int], project: Project) -> Optional[EngineImage]:
    chosen = image_id or project.default_engine_image_id
    if chosen:
        return db.get(EngineImage, chosen)
    return db.scalars(select(EngineImage).where(EngineImage.is_default.is_(True))).first()


def local_kernels(settings: Settings) -> List[str]:
    """The kernels of the local backend's engine (the master's own Python): Python 3, R when
    the host has IRkernel, and Scala when the cluster clients give a Spark with Scala and there
    is a Java (engine/scala_kernel)."""
    from ..clientconfig.distributions import cluster_clients
    from ..engine import scala_repl

    found = cluster_clients(settings).distribution
    env = {"SPARK_HOME": found.spark_home if found is not None else "",
           "JAVA_HOME": settings.java_home or "", "PATH": os.environ.get("PATH", "")}
    return ["python3"] + (["ir"] if local_r_kernel() else []) \
        + (["scala"] if scala_repl.available(env) else [])


def local_r_kernel() -> bool:
    """Whether this host has IRkernel's kernelspec (Debian's r-cran-irkernel installs it in
    /usr/share/jupyter/kernels/ir), which the local engine's jupyter_server finds."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "ir" in KernelSpecManager().find_kernel_specs()


def kernelspec_for(kernel: str, image: Optional[EngineImage],
                   local: Sequence[str] = ("python3",)) -> str:
    """The kernelspec to start, or SessionLaunchError(422) when the image lacks the kernel.
    Without a registered image (local backend) the kernels are `local` (local_kernels)."""
    offered: List[str] = list(image.kernels or []) if image is not None else list(local)
    if "python3" not in offered:
        offered.insert(0, "python3")  # every engine image has ipykernel
    for name in KERNELSPECS[kernel]:
        if name in offered:
            return name
    where = "image %s:%s" % (image.repository, image.tag) if image is not None \
        else "the local engine"
    flag = {"r": " (build one with `cdsw images build --with-r`)",
            "scala": " (build one with `cdsw images build --with-scala`)" if image is not None
            else " (the local engine has Scala when cluster_client_kind and cluster_client_dirs "
                 "give a Spark with Scala and java_home a Java)"}.get(kernel, "")
    raise SessionLaunchError(422, "invalid request: kernel: %s has no %s kernel (it has: %s); "
                                  "choose another kernel or an image that has one%s"
                             % (where, KERNEL_TITLES[kernel], ", ".join(offered), flag))


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_port(db: Session, node: str, rng: Optional[random.Random] = None,
              reserved: AbstractSet[int] = frozenset()) -> int:
    """A host port no active session uses on that node, nor any of `reserved` (warm engines')."""
    used = set(db.scalars(select(EngineSession.host_port).where(
        EngineSession.node == node, EngineSession.status.in_(ACTIVE_STATUSES)))) | set(reserved)
    rng = rng or random.SystemRandom()
    low, high = SESSION_PORT_RANGE
    for _ in range(200):
        port = rng.randrange(low, high + 1)
        if port not in used:
            return port
    raise SessionLaunchError(503, "node %s has no free session port left; stop a session" % node)


def engine_env(settings: Settings, orchestrator: Orchestrator, session: EngineSession,
               token: str, container_port: int, files_dir: Path) -> Dict[str, str]:
    # the engine gets the token's digest only: the token stays in the master (engine/entrypoint.py)
    env = {DIGEST_VARIABLE: token_digest(token), "CDSW_ENGINE_PORT": str(container_port),
           "CDSW_ENGINE_BASE_URL": base_path(session.id), "CDSW_SESSION_ID": str(session.id),
           "CDSW_KERNEL": session.kernel,
           # a web app the session serves there is at APP_PATH on the engine origin
           "CDSW_APP_PORT": str(APP_PORT), "CDSW_APP_PATH": app_path(session.id),
           PRESTART_VARIABLE: session.kernelspec}  # started before the server listens
    if orchestrator.name == "local":
        # a plain process: /home/cdsw does not exist, so the server shows the project folder
        # itself and keeps its runtime files (connection files) in the engine's private
        # directory; $HOME and Jupyter's other folders are the user's (workloads.user_home)
        private = Path(settings.data_dir) / "sessions" / str(session.id) / "engine"
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        env.update(CDSW_ENGINE_ROOT_DIR=str(files_dir), JUPYTER_RUNTIME_DIR=str(private / "run"),
                   CDSW_ENGINE_ALLOW_ROOT="1" if os.geteuid() == 0 else "0")
    else:
        env["JUPYTER_RUNTIME_DIR"] = "/tmp/jupyter-runtime"  # connection files stay private
    return env


def session_spec(db: Session, settings: Settings, orchestrator: Orchestrator,
                 session: EngineSession, project: Project, launcher: User, token: str,
                 files_dir: Path, pool: Optional["WarmPool"] = None, claim: bool = True
                 ) -> Tuple[WorkloadSpec, Optional["WarmEngine"]]:
    """The engine workload, and the warm engine of `pool` it is to become (when `claim` and
    one fits, see warm_pool.py); sets session.node and session.host_port. Raises EngineError."""
    local = orchestrator.name == "local"
    if local:
        port = _free_local_port()
        # the master's environment has jupyter_server and ipykernel
        command = [sys.executable] + list(ENGINE_COMMAND[1:])
        ports: List[Port] = []
    else:
        port, command = ENGINE_PORT, list(ENGINE_COMMAND)
        ports = []  # published below, once the node is known
    request = EngineRequest(
        kind="session", name=session.name, project=project, launcher=launcher,
        command=command, files_dir=files_dir,
        image_id=session.engine_image_id, profile_id=session.profile_id,
        env=engine_env(settings, orchestrator, session, token, port, files_dir), ports=ports,
        labels={SESSION_LABEL: str(session.id)})
    warm = pool.candidate() if pool is not None and claim and not local else None
    if warm is not None:  # described where that engine runs, with its Spark ports
        request.node, request.spark_ports = warm.node, warm.spark_ports
    spec = build_spec(db, settings, orchestrator, request)
    if local:
        session.node, session.host_port = "local", port
        return spec, None
    if warm is not None and not (pool is not None and pool.claim(spec, warm)):
        warm = None  # another image or profile, a cluster of its own, or taken meanwhile
        if request.spark_ports is not None and spec.ports:  # they are the warm engine's
            request.node = request.spark_ports = None
            spec = build_spec(db, settings, orchestrator, request)
    if warm is not None:  # its node and port are the session's
        spec.node, session.node, session.host_port = warm.node, warm.node, warm.host_port
    else:
        # The master reaches the engine at its node's address: choose the node now (build_spec
        # did when client configs are mounted) and publish jupyter_server there in host mode.
        if spec.node is None:
            spec.node = place(orchestrator, spec.cpu_reservation, spec.memory_reservation).name
        session.node, session.host_port = spec.node, node_port(
            db, spec.node, reserved=pool.ports(spec.node) if pool is not None else frozenset())
    spec.ports.append(Port(container=ENGINE_PORT, host=session.host_port))
    return spec, warm


def node_address(orchestrator: Orchestrator, node: Optional[str],
                 nodes: Optional[Iterable] = None) -> Optional[str]:
    if orchestrator.name == "local" or node == "local":
        return "127.0.0.1"
    for n in nodes if nodes is not None else orchestrator.nodes():
        if n.name == node:
            return n.address
    return None
