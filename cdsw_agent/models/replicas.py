"""A model replica as a workload: the build, the replica server, its port and token.

A replica acts as whoever last deployed or redeployed its deployment (never the model's
creator): the deployer is fixed on the replica when it is launched, and a redeploy by someone
else replaces the replicas, as a new build does.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path
from typing import Collection, Dict

from sqlalchemy.orm import Session

from ..images.recipe import VENV
from ..orchestrators import Orchestrator, Port, WorkloadSpec
from ..orchestrators.base import RESTART_ON_FAILURE
from ..settings import Settings
from ..store.models_models import ModelBuild, ModelDeployment, ModelReplica
from ..workloads.engine import PROJECT_MOUNT, EngineRequest, build_spec
from .builds import LOCAL_PACKAGES

REPLICA_LABEL = "io.cdsw.model-replica"
DEPLOYMENT_LABEL = "io.cdsw.model-deployment"
SERVER_MODULE = "cdsw_agent.engine.model_server"
# host ports replicas publish (mode=host): below Spark's 20050-32767 and Linux's ephemeral ports
PORT_RANGE = (16000, 18000)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def choose_port(used: Collection[int], local: bool, rng: random.Random = random.SystemRandom()
                ) -> int:
    """A port no live replica holds (on the local backend also free on this host). On swarm a
    clash with something else on the node fails the task, and the replica is reported failed."""
    low, high = PORT_RANGE
    for _ in range(200):
        port = rng.randrange(low, high)
        if port not in used and (not local or _bindable(port)):
            return port
    raise RuntimeError("no free port for a model replica in %d-%d" % PORT_RANGE)


def environment(build: ModelBuild, deployment: ModelDeployment, replica: ModelReplica,
                files: Path, local: bool) -> Dict[str, str]:
    env = {"CDSW_MODEL_ID": str(deployment.model_id), "CDSW_MODEL_BUILD_ID": str(build.id),
           "CDSW_MODEL_DEPLOYMENT_ID": str(deployment.id),
           "CDSW_MODEL_REPLICA_ID": str(replica.id), "CDSW_MODEL_FILE": build.file,
           "CDSW_MODEL_FUNCTION": build.function, "CDSW_MODEL_PORT": str(replica.port),
           "CDSW_MODEL_TOKEN": replica.token}
    if local:
        env["CDSW_MODEL_PACKAGES"] = str(files / LOCAL_PACKAGES)
    return env


def current(replica: ModelReplica, deployment: ModelDeployment) -> bool:
    """The replica runs what the deployment asks for now: its build, as its deployer."""
    return replica.build_id == deployment.build_id \
        and replica.run_as_user_id == deployment.deployed_by_id


def replica_spec(db: Session, settings: Settings, orchestrator: Orchestrator,
                 build: ModelBuild, deployment: ModelDeployment,
                 replica: ModelReplica) -> WorkloadSpec:
    """EngineError when the engine cannot be described."""
    local = orchestrator.name == "local"
    files = Path(settings.data_dir) / build.artifact if local \
        else Path(settings.data_dir) / "models" / "builds" / str(build.id) / "files"
    python = sys.executable if local else VENV + "/bin/python"
    request = EngineRequest(
        kind="model", name=replica.name, project=deployment.model.project,
        launcher=replica.run_as, command=[python, "-m", SERVER_MODULE], files_dir=files,
        profile_id=deployment.profile_id, env=environment(build, deployment, replica, files, local),
        ports=[Port(replica.port, replica.port)],
        labels={REPLICA_LABEL: str(replica.id), DEPLOYMENT_LABEL: str(deployment.id)},
        restart=RESTART_ON_FAILURE, image_override=None if local else build.artifact,
        spark=False)  # a replica starts no Spark driver: no pinning, no driver ports
    spec = build_spec(db, settings, orchestrator, request)
    if not local:
        # the build image holds the snapshot at /home/cdsw (with what cdsw-build.sh made there);
        # mounting the live project folder over it would serve unbuilt files
        spec.mounts = [m for m in spec.mounts if m.target != PROJECT_MOUNT]
    return spec
