"""The orchestrator interface: where and how workloads (sessions, jobs, model replicas) run.

A workload is described once with `WorkloadSpec`; each backend (local processes, Docker Swarm,
later Kubernetes) maps it onto its own objects. Callers only ever hold a `WorkloadRef.id`.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# workload states, the same for every backend
PENDING, RUNNING, SUCCEEDED, FAILED, LOST = "pending", "running", "succeeded", "failed", "lost"
STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, LOST)
FINAL_STATES = (SUCCEEDED, FAILED, LOST)
# the reason of a pending workload that no node has the CPU and memory for (sessions'
# warm engines give way when a session waits for this: sessions/warm_pool.py)
WAITING_FOR_RESOURCES = "waiting for a node with the CPU and memory its profile reserves"

# restart policies: one-shot work (jobs, experiments) never restarts; services do
RESTART_NEVER, RESTART_ON_FAILURE, RESTART_ALWAYS = "never", "on-failure", "always"
RESTART_POLICIES = (RESTART_NEVER, RESTART_ON_FAILURE, RESTART_ALWAYS)

# every workload carries this label so CDSW finds its own workloads among others
WORKLOAD_LABEL = "io.cdsw.workload"
NAME_LABEL = "io.cdsw.name"

STOPPED_REASON = "stopped"


class OrchestratorError(Exception):
    """The backend could not do what was asked; str() is one line."""


class WorkloadNotFound(OrchestratorError):
    pass


class MountUnsupported(OrchestratorError):
    """This host cannot mount into running workloads at all (not root, a kernel without the
    mount API), whatever the mount (inject_mounts)."""


@dataclass(frozen=True)
class Mount:
    source: str  # host path (on every node that may run the workload)
    target: str  # path inside the workload
    read_only: bool = False


@dataclass(frozen=True)
class Port:
    container: int
    host: int = 0  # 0: let the backend choose
    protocol: str = "tcp"


@dataclass
class WorkloadSpec:
    name: str
    image: str
    command: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    mounts: List[Mount] = field(default_factory=list)
    workdir: Optional[str] = None
    cpu_reservation: float = 0.0  # cores
    cpu_limit: float = 0.0  # cores; 0 = none
    memory_reservation: int = 0  # bytes
    memory_limit: int = 0  # bytes; 0 = none
    gpus: int = 0
    user: Optional[str] = None  # "uid[:gid]" or a name known in the image
    ports: List[Port] = field(default_factory=list)
    labels: Dict[str, str] = field(default_factory=dict)
    restart: str = RESTART_NEVER
    node: Optional[str] = None  # run only on the node of this name
    networks: List[str] = field(default_factory=list)
    # run only on nodes whose labels meet all of these: (label, "==" or "!=", value); a node
    # without the label equals nothing (the swarm's rule)
    node_constraints: List[Tuple[str, str, str]] = field(default_factory=list)

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise OrchestratorError("workload name %r: use letters, digits, '-', '_' or '.'"
                                    % self.name)
        if not self.command:
            raise OrchestratorError("workload %s has no command" % self.name)
        if self.restart not in RESTART_POLICIES:
            raise OrchestratorError("workload %s: restart must be one of %s"
                                    % (self.name, ", ".join(RESTART_POLICIES)))
        if self.cpu_limit and self.cpu_reservation > self.cpu_limit:
            raise OrchestratorError("workload %s: cpu reservation exceeds its limit" % self.name)
        if self.memory_limit and self.memory_reservation > self.memory_limit:
            raise OrchestratorError("workload %s: memory reservation exceeds its limit" % self.name)
        for label, op, value in self.node_constraints:
            if op not in ("==", "!=") or not label or not value:
                raise OrchestratorError("workload %s: bad node constraint %s%s%s"
                                        % (self.name, label, op, value))
        for m in self.mounts:
            if not m.target.startswith("/"):
                raise OrchestratorError("workload %s: mount target %r must be absolute"
                                        % (self.name, m.target))

    def all_labels(self) -> Dict[str, str]:
        return dict(self.labels, **{WORKLOAD_LABEL: "1", NAME_LABEL: self.name})


@dataclass(frozen=True)
class WorkloadRef:
    id: str
    name: str


@dataclass
class WorkloadStatus:
    state: str
    exit_code: Optional[int] = None
    reason: str = ""
    node: Optional[str] = None
    started_at: Optional[dt.datetime] = None
    finished_at: Optional[dt.datetime] = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class Node:
    name: str
    address: str
    state: str  # ready | down
    cpu_capacity: float  # cores
    memory_capacity: int  # bytes
    cpu_allocated: float = 0.0  # reserved by running workloads
    memory_allocated: int = 0
    role: str = "worker"  # manager | worker
    availability: str = "active"  # active | pause | drain
    id: str = ""
    labels: Dict[str, str] = field(default_factory=dict)  # the node's own labels


class Orchestrator(abc.ABC):
    """What the master needs from a backend. Methods raise OrchestratorError (one line)."""

    name = "abstract"

    @abc.abstractmethod
    def launch(self, spec: WorkloadSpec) -> WorkloadRef:
        """Start a workload; returns at once (it may still be pending)."""

    @abc.abstractmethod
    def stop(self, workload_id: str, timeout: float = 10.0) -> None:
        """Stop a workload (SIGTERM, then SIGKILL after timeout). Its status stays readable
        as failed/"stopped" until remove(); stopping a finished workload changes nothing."""

    @abc.abstractmethod
    def remove(self, workload_id: str) -> None:
        """Forget a workload and what it left behind (logs too). Stops it first if needed."""

    @abc.abstractmethod
    def status(self, workload_id: str) -> WorkloadStatus:
        """Current state; raises WorkloadNotFound for an unknown id."""

    @abc.abstractmethod
    def logs(self, workload_id: str, follow: bool = False) -> Iterator[str]:
        """Output lines (stdout and stderr, without newlines); with follow, until it ends."""

    @abc.abstractmethod
    def list(self, labels: Optional[Dict[str, str]] = None) -> List[WorkloadRef]:
        """CDSW workloads, optionally only those carrying all the given labels."""

    @abc.abstractmethod
    def nodes(self) -> List[Node]:
        """The nodes workloads may run on, with capacity and what is reserved on them."""

    def local_node(self) -> Optional[str]:
        """The node whose processes this master reaches as its own (same kernel): where
        inject_mounts works. None when there is none."""
        return None

    def inject_mounts(self, workload_id: str, mounts: Sequence[Mount]) -> None:
        """Bind-mounts host paths into a running workload on local_node() (warm engines)."""
        raise OrchestratorError("the %s backend cannot add mounts to a running workload"
                                % self.name)

    def relabel(self, workload_id: str, labels: Dict[str, str]) -> None:
        """Replaces a workload's labels (what list() filters by and names it by)."""
        raise OrchestratorError("the %s backend cannot relabel a workload" % self.name)

    def close(self) -> None:
        """Release connections; the workloads keep running."""


def split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Turn a stream of byte chunks into text lines, however the chunks are cut."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace").rstrip("\r")
