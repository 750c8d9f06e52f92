"""Orchestrator backends behind one interface (see base.py); pick one with get_orchestrator()."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import UserError
from .base import (
    FAILED,
    FINAL_STATES,
    LOST,
    PENDING,
    RUNNING,
    SUCCEEDED,
    WAITING_FOR_RESOURCES,
    Mount,
    MountUnsupported,
    Node,
    Orchestrator,
    OrchestratorError,
    Port,
    WorkloadNotFound,
    WorkloadRef,
    WorkloadSpec,
    WorkloadStatus,
)

__all__ = ["get_orchestrator", "shared_orchestrator", "Orchestrator", "OrchestratorError",
           "WorkloadNotFound", "MountUnsupported", "WorkloadSpec", "WorkloadRef", "WorkloadStatus",
           "Mount", "Port", "Node",
           "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "LOST", "FINAL_STATES",
           "WAITING_FOR_RESOURCES"]


SHARED_KEY = "orchestrator"  # in a server state's extras
_shared_lock = threading.Lock()


def shared_orchestrator(state: Any) -> Orchestrator:
    """The one orchestrator client of a server state (its settings' backend, made on first
    use), shared by the job runner, the session manager and the model service."""
    with _shared_lock:
        orchestrator = state.extras.get(SHARED_KEY)
        if orchestrator is None:
            orchestrator = state.extras[SHARED_KEY] = get_orchestrator(state.settings)
        return orchestrator


def get_orchestrator(settings: Any, **options: Any) -> Orchestrator:
    """The backend selected by settings.orchestrator; options go to its constructor."""
    kind = settings.orchestrator
    if kind == "local":
        from .local import LocalOrchestrator
        return LocalOrchestrator(options.pop("state_dir", Path(settings.data_dir) / "orchestrator"
                                             / "local"))
    if kind == "swarm":
        from .swarm import SwarmOrchestrator
        return SwarmOrchestrator.from_url(options.pop("docker_host", settings.docker_host),
                                          **options)
    raise UserError("unknown orchestrator %r; set cdsw.orchestrator to swarm or local" % kind)
