"""`swarm` backend: each workload is a Docker Swarm service with one replica.

Mapping: one-shot work uses restart condition "none", long-running work "on-failure"/"any";
endpoint_mode dnsrr and host-mode published ports, because the routing mesh needs IPVS (our own
router balances instead); reservations place the work, limits cap it. State comes from the
service's newest task. Stopping scales the service to 0 and labels it, so its status stays
readable (as failed/"stopped") until remove(). Docker's own error texts are logged, never
returned: errors and reasons are sentences from reasons.py.

Networks: no engine may reach another's container. A workload joins its node's default bridge,
where the CDSW_DOCKER role's dockerd keeps containers apart ("icc": false in daemon.json, so
Docker drops bridge-to-bridge traffic) and the engine firewall (roles/engine_firewall.py) drops
what they open towards engine ports through the nodes' addresses. Containers on other nodes sit
behind their own node's bridge and NAT. A swarm overlay network would cost about a second on
every start (the task's network attachment is allocated and the node builds the overlay's
sandbox: measured 1.5 s from service creation to a running container with a network of its own,
0.5 s on the bridge, 0.35 s for `docker run`). When the manager's default bridge lets containers
talk (a dockerd the role did not configure), every workload gets an overlay network of its own
instead, as before, and the master says so once in its log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import (
    ContainerSpec,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)
from docker.types import Mount as DockerMount

from .base import (
    FAILED,
    LOST,
    MountUnsupported,
    NAME_LABEL,
    PENDING,
    RUNNING,
    STOPPED_REASON,
    SUCCEEDED,
    WAITING_FOR_RESOURCES,
    WORKLOAD_LABEL,
    Mount,
    Node,
    Orchestrator,
    OrchestratorError,
    WorkloadNotFound,
    WorkloadRef,
    WorkloadSpec,
    WorkloadStatus,
    split_lines,
)
from .bridge import bridge_icc, icc_disabled
from .reasons import (ENGINE_GONE, backend_error, exit_reason, first_line,
                      image_missing_reason)

log = logging.getLogger(__name__)
# what the Docker SDK raises: its own errors, and the HTTP library's when Docker is unreachable
DOCKER_ERRORS = (DockerException, requests.exceptions.RequestException)

STOPPED_LABEL = "io.cdsw.stopped"
NANO = 1_000_000_000
STOP_GRACE_NS = 10 * NANO  # SIGTERM, then SIGKILL after this long
RESTART_CONDITIONS = {"never": "none", "on-failure": "on-failure", "always": "any"}
# Engines run as an unprivileged user: they keep no capability at all (cap_drop ALL). Docker
# before 27 cannot set no-new-privileges on a swarm service; the Docker role sets it for the
# whole daemon (templates/daemon.json.j2) and engine images hold no setuid program.
CAPABILITIES: Tuple[str, ...] = ()


def bridge_isolated(client: docker.DockerClient) -> bool:
    """Whether this dockerd's default bridge keeps containers apart (icc disabled)."""
    try:
        return icc_disabled(bridge_icc(client.api))
    except DOCKER_ERRORS:
        return False


def network_name(workload: str) -> str:
    """The overlay network only this workload is attached to (removed with it)."""
    return "cdsw-net-" + workload

# swarm task states -> ours; terminal ones are refined in _task_status
TASK_STATES = {
    "new": PENDING, "allocated": PENDING, "pending": PENDING, "assigned": PENDING,
    "accepted": PENDING, "preparing": PENDING, "ready": PENDING, "starting": PENDING,
    "running": RUNNING, "complete": SUCCEEDED, "failed": FAILED, "rejected": FAILED,
    "shutdown": FAILED, "remove": FAILED, "orphaned": LOST,
}
LIVE_TASK_STATES = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
                    "starting", "running"}


def parse_time(value: Optional[str]) -> Optional[dt.datetime]:
    """Docker's RFC 3339 times carry nanoseconds; Python takes microseconds."""
    if not value or value.startswith("0001-"):
        return None
    main, _, frac = value.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return dt.datetime.strptime(main + "." + frac, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=dt.timezone.utc)


def _first_line(e: BaseException) -> str:
    text = getattr(e, "explanation", None) or str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def task_error(err: str, image: str, node: Optional[str]) -> str:
    """A sentence for the error swarm recorded on a task (Docker's words go to the log)."""
    text = err.lower()
    where = " on node %s" % node if node else ""
    if "no such image" in text or ("image" in text and "not found" in text):
        return image_missing_reason(image, node)
    if "no such container" in text:
        return ENGINE_GONE
    if "bind source path does not exist" in text or "invalid mount config" in text:
        return ("could not start the engine: a folder it mounts is missing%s; check that the "
                "project storage is shared with every node" % where)
    if "insufficient resources" in text:
        return WAITING_FOR_RESOURCES
    if "no suitable node" in text:
        return "waiting for a node that may run it (none meets its placement)"
    return "could not start the engine%s (the master's log has Docker's words)" % where


class SwarmOrchestrator(Orchestrator):
    name = "swarm"

    def __init__(self, client: docker.DockerClient, network: Optional[str] = None):
        self.client = client
        self.default_network = network  # attached to every workload, e.g. "cdsw-engines"
        self._logged_tasks: Set[str] = set()  # tasks whose error was logged once
        self._own_networks: Optional[bool] = None  # see the module's docstring; on first launch
        self._local_node: Optional[str] = None  # "" once known to be none

    @property
    def own_networks(self) -> bool:
        """Whether each workload needs an overlay network of its own (the bridge is open)."""
        if self._own_networks is None:
            self._own_networks = not bridge_isolated(self.client)
            if self._own_networks:
                log.warning("the default bridge of Docker at %s lets containers reach each other "
                            "(icc): every workload gets an overlay network of its own, which "
                            "adds about a second to each start; run dockerd with \"icc\": false "
                            "(the CDSW_DOCKER role does)", getattr(self.client.api, "base_url", "?"))
        return self._own_networks

    def _failure(self, doing: str, e: BaseException) -> OrchestratorError:
        """Logs Docker's words and returns the sentence users see ("DOING: why")."""
        if not isinstance(e, APIError):
            why = "Docker at %s does not answer; check the Docker role (cdsw status)" \
                % getattr(self.client.api, "base_url", "?")
        elif "not a swarm manager" in str(e).lower() or "not part of a swarm" in str(e).lower():
            why = "this Docker is not a swarm manager; start the master's Docker role " \
                  "(cdsw status says why)"
        else:
            why = "the swarm refused it (the master's log has Docker's words)"
        return backend_error(log, "%s: %s" % (doing, why) if doing else why, _first_line(e))

    @classmethod
    def from_url(cls, url: str, network: Optional[str] = None,
                 timeout: int = 60) -> "SwarmOrchestrator":
        try:
            return cls(docker.DockerClient(base_url=url, timeout=timeout), network)
        except DOCKER_ERRORS as e:
            raise OrchestratorError("cannot reach Docker at %s: %s" % (url, _first_line(e)))

    # --- mapping
    def _service_kwargs(self, spec: WorkloadSpec) -> Dict[str, Any]:
        labels = spec.all_labels()
        mounts = [DockerMount(m.target, m.source, type="bind", read_only=m.read_only)
                  for m in spec.mounts]
        container = ContainerSpec(
            spec.image, command=list(spec.command), env=dict(spec.env), workdir=spec.workdir,
            user=spec.user, labels=labels, mounts=mounts,
            stop_grace_period=STOP_GRACE_NS,
            cap_drop=["ALL"], cap_add=list(CAPABILITIES) or None,
            init=True)  # a real PID 1: forwards SIGTERM on stop, reaps zombies
        generic = {"gpu": spec.gpus} if spec.gpus else None  # nodes must advertise "gpu"
        resources = Resources(
            cpu_limit=int(spec.cpu_limit * NANO) or None,
            mem_limit=spec.memory_limit or None,
            cpu_reservation=int(spec.cpu_reservation * NANO) or None,
            mem_reservation=spec.memory_reservation or None,
            generic_resources=generic)
        constraints = ["node.hostname==%s" % spec.node] if spec.node else []
        constraints += ["node.labels.%s%s%s" % c for c in spec.node_constraints]
        own = [network_name(spec.name)] if self.own_networks else []
        networks = list(dict.fromkeys(own + spec.networks + (
            [self.default_network] if self.default_network else [])))
        task = TaskTemplate(
            container, resources=resources,
            restart_policy=RestartPolicy(condition=RESTART_CONDITIONS[spec.restart], delay=NANO),
            placement=Placement(constraints=constraints),
            networks=[{"Target": n} for n in networks] or None)
        endpoint = {"Mode": "dnsrr", "Ports": [
            {"Protocol": p.protocol, "TargetPort": p.container, "PublishedPort": p.host,
             "PublishMode": "host"} for p in spec.ports]}
        return dict(task_template=task, name=spec.name, labels=labels,
                    mode=ServiceMode("replicated", replicas=1), endpoint_spec=endpoint)

    def _service(self, workload_id: str) -> Any:
        try:
            service = self.client.services.get(workload_id)
        except NotFound:
            raise WorkloadNotFound("no workload %s" % workload_id)
        except DOCKER_ERRORS as e:
            raise self._failure("cannot read workload %s" % workload_id, e)
        if service.attrs["Spec"].get("Labels", {}).get(WORKLOAD_LABEL) != "1":
            raise WorkloadNotFound("no workload %s" % workload_id)  # not ours: never touch it
        return service

    # --- interface
    def launch(self, spec: WorkloadSpec) -> WorkloadRef:
        spec.validate()
        self._remove_networks()  # of workloads removed while their containers still ran
        try:
            if self.own_networks:
                self._create_network(spec)
            result = self.client.api.create_service(**self._service_kwargs(spec))
        except APIError as e:
            self._remove_networks()
            if e.status_code == 409:
                raise OrchestratorError("a workload named %s already exists" % spec.name)
            raise self._failure("", e)  # the caller says what could not start
        except DOCKER_ERRORS as e:
            raise self._failure("", e)
        return WorkloadRef(result["ID"], spec.name)

    # --- one network per workload where the bridge is open (own_networks)
    def _create_network(self, spec: WorkloadSpec) -> None:
        name = network_name(spec.name)
        if self.client.api.networks(names=[name], filters={"label": WORKLOAD_LABEL}):
            return
        self.client.api.create_network(
            name, driver="overlay", attachable=False, check_duplicate=True,
            labels={WORKLOAD_LABEL: "1", NAME_LABEL: spec.name})

    def _remove_networks(self) -> None:
        """Removes the networks of workloads that are gone. One whose containers are still
        stopping stays until a later call (Docker refuses to remove a network in use)."""
        try:
            networks = self.client.api.networks(filters={"label": WORKLOAD_LABEL})
            names = {s["Spec"]["Name"] for s in self.client.api.services(
                filters={"label": WORKLOAD_LABEL})}
        except DOCKER_ERRORS as e:
            log.warning("cannot list the workloads' networks: %s", _first_line(e))
            return
        for net in networks:
            owner = (net.get("Labels") or {}).get(NAME_LABEL, "")
            if owner and owner not in names and net.get("Name") == network_name(owner):
                try:
                    self.client.api.remove_network(net["Id"])
                except DOCKER_ERRORS:
                    pass  # still in use: its task is shutting down

    def stop(self, workload_id: str, timeout: float = 10.0) -> None:
        """Scale to 0. `timeout` is not used: the grace period is fixed at launch."""
        service = self._service(workload_id)
        if self._status(service).state in (SUCCEEDED, FAILED):
            return  # a finished workload keeps its status; a lost one is still scaled to 0,
            # so its node stops the container should it come back
        labels = dict(service.attrs["Spec"].get("Labels", {}), **{STOPPED_LABEL: "1"})
        # Only mode and labels change: a changed task template would roll out a new task,
        # re-running a one-shot workload. SIGTERM-to-SIGKILL time is set at launch.
        try:
            self.client.api.update_service(service.id, service.version, labels=labels,
                                           mode={"Replicated": {"Replicas": 0}},
                                           fetch_current_spec=True)
        except DOCKER_ERRORS as e:
            raise self._failure("cannot stop workload %s" % workload_id, e)

    def remove(self, workload_id: str) -> None:
        service = self._service(workload_id)
        try:
            service.remove()
        except NotFound:
            pass
        except DOCKER_ERRORS as e:
            raise self._failure("cannot remove workload %s" % workload_id, e)
        self._remove_networks()

    def status(self, workload_id: str) -> WorkloadStatus:
        return self._status(self._service(workload_id))

    def _status(self, service: Any) -> WorkloadStatus:
        try:
            tasks = self.client.api.tasks(filters={"service": service.id})
        except DOCKER_ERRORS as e:
            raise self._failure("cannot read the state of workload %s" % service.id, e)
        stopped = service.attrs["Spec"].get("Labels", {}).get(STOPPED_LABEL) == "1"
        if not tasks:
            return WorkloadStatus(FAILED, None, STOPPED_REASON) if stopped \
                else WorkloadStatus(PENDING, reason="waiting for the scheduler")
        task = max(tasks, key=lambda t: (t.get("CreatedAt", ""), t["Version"]["Index"]))
        return self._task_status(service, task, stopped)

    def _started(self, task: Dict[str, Any], container: Dict[str, Any]) -> Optional[dt.datetime]:
        """When the task's container started: exact when the container is on the daemon we
        talk to, else the task's creation (swarm keeps no start time once a task ended)."""
        if task["Status"].get("State") == "running":
            return parse_time(task["Status"].get("Timestamp"))
        try:
            attrs = self.client.api.inspect_container(container.get("ContainerID", ""))
            return parse_time(attrs["State"].get("StartedAt"))
        except DOCKER_ERRORS + (KeyError,):
            return parse_time(task.get("CreatedAt"))

    def _task_status(self, service: Any, task: Dict[str, Any], stopped: bool) -> WorkloadStatus:
        status = task["Status"]
        state = status.get("State", "new")
        container = status.get("ContainerStatus") or {}
        exit_code = container.get("ExitCode") if state not in LIVE_TASK_STATES else None
        node = self._node_name(task.get("NodeID"))
        ours = TASK_STATES.get(state, PENDING)
        times: Dict[str, Any] = dict(node=node, started_at=None if ours == PENDING or not container
                     else self._started(task, container))
        if state in LIVE_TASK_STATES:
            down = self._node_down(task.get("NodeID"))
            if down:
                return WorkloadStatus(LOST, None, "node %s is %s" % (node or "?", down),
                                      finished_at=parse_time(status.get("Timestamp")), **times)
            if stopped:
                return WorkloadStatus(RUNNING if state == "running" else PENDING,
                                      reason="stopping", **times)
            reason = ""
            if ours == PENDING:
                reason = self._task_error(service, task, node) if status.get("Err") \
                    else status.get("Message", "")
            return WorkloadStatus(ours, None, reason, **times)
        finished = parse_time(status.get("Timestamp"))
        if stopped:
            return WorkloadStatus(FAILED, exit_code, STOPPED_REASON, finished_at=finished, **times)
        if ours == SUCCEEDED:
            return WorkloadStatus(SUCCEEDED, exit_code or 0, finished_at=finished, **times)
        if ours == LOST:
            return WorkloadStatus(LOST, None, "node %s went away" % (node or "?"),
                                  finished_at=finished, **times)
        err = status.get("Err") or ""
        if state == "shutdown" and task.get("DesiredState") == "shutdown" and exit_code is None:
            reason = "shut down by the swarm"
        elif exit_code and (not err or err.startswith("task: non-zero exit")):
            reason = exit_reason(exit_code, self._oom(container), self._memory_limit(service))
        elif err:
            reason = self._task_error(service, task, node)
        else:
            reason = exit_reason(exit_code)
        return WorkloadStatus(FAILED, exit_code, reason, finished_at=finished, **times)

    def _task_error(self, service: Any, task: Dict[str, Any], node: Optional[str]) -> str:
        err = task["Status"].get("Err") or ""
        image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image", "?")
        if task.get("ID") not in self._logged_tasks:  # once, not on every status read
            self._logged_tasks.add(task.get("ID", ""))
            log.warning("workload %s, task %s on %s: %s", service.attrs["Spec"].get("Name"),
                        task.get("ID", "?")[:12], node or "?", first_line(err))
        return task_error(err, image.split("@")[0], node)

    @staticmethod
    def _memory_limit(service: Any) -> int:
        limits = service.attrs["Spec"]["TaskTemplate"].get("Resources", {}).get("Limits", {})
        return int(limits.get("MemoryBytes") or 0)

    def _oom(self, container: Dict[str, Any]) -> Optional[bool]:
        """Swarm's task status has no OOMKilled flag: ask the container when it is on the
        daemon we talk to; None when it is elsewhere (the reason then says "probably")."""
        try:
            attrs = self.client.api.inspect_container(container.get("ContainerID", ""))
            return bool(attrs["State"].get("OOMKilled"))
        except DOCKER_ERRORS + (KeyError,):
            return None

    def _node(self, node_id: Optional[str]) -> Optional[Dict[str, Any]]:
        if not node_id:
            return None
        try:
            return self.client.api.inspect_node(node_id)
        except DOCKER_ERRORS:
            return None

    def _node_name(self, node_id: Optional[str]) -> Optional[str]:
        node = self._node(node_id)
        return node["Description"]["Hostname"] if node else None

    def _node_down(self, node_id: Optional[str]) -> str:
        """Why a task's node cannot be running it any more ("" when it can)."""
        if not node_id:
            return ""
        node = self._node(node_id)
        if node is None:
            return "gone from the swarm"
        state = node.get("Status", {}).get("State", "unknown")
        return "" if state == "ready" else state

    def logs(self, workload_id: str, follow: bool = False) -> Iterator[str]:
        service = self._service(workload_id)
        if follow:
            return self._follow(service)
        try:
            chunks = service.logs(stdout=True, stderr=True)
        except DOCKER_ERRORS as e:
            raise self._failure("cannot read the output of workload %s" % workload_id, e) \
                from None
        return split_lines(chunks)

    def _follow(self, service: Any, interval: float = 1.0) -> Iterator[str]:
        """Docker's own follow never ends (it waits for further tasks), so poll with
        timestamps instead, and stop once the workload has ended and all is read."""
        since = 0  # whole seconds: what the API takes
        seen: Set[Tuple[str, str]] = set()  # lines yielded from second `since` on
        while True:
            final = self._status(service).final
            try:
                lines = list(split_lines(service.logs(stdout=True, stderr=True, timestamps=True,
                                                      since=since)))
            except DOCKER_ERRORS as e:
                raise self._failure("cannot read the output of workload %s" % service.id, e) \
                    from None
            for line in lines:
                stamp, _, text = line.partition(" ")
                at = parse_time(stamp)
                if at is None or (stamp, text) in seen:
                    continue
                seen.add((stamp, text))
                since = max(since, int(at.timestamp()))
                yield text
            seen = {k for k in seen if int(parse_time(k[0]).timestamp()) >= since}  # type: ignore[union-attr]
            if final:
                return
            time.sleep(interval)

    def list(self, labels: Optional[Dict[str, str]] = None) -> List[WorkloadRef]:
        wanted = dict(labels or {}, **{WORKLOAD_LABEL: "1"})
        try:
            services = self.client.api.services(
                filters={"label": ["%s=%s" % kv for kv in wanted.items()]})
        except DOCKER_ERRORS as e:
            raise self._failure("cannot list the workloads", e)
        return [WorkloadRef(s["ID"], s["Spec"].get("Labels", {}).get(NAME_LABEL,
                                                                       s["Spec"]["Name"]))
                for s in services]

    def nodes(self) -> List[Node]:
        try:
            nodes = self.client.api.nodes()
            tasks = self.client.api.tasks(filters={"desired-state": "running"})
        except DOCKER_ERRORS as e:
            raise self._failure("cannot list the nodes", e)
        used: Dict[str, List[int]] = {}
        for t in tasks:
            if t["Status"].get("State") not in LIVE_TASK_STATES:
                continue
            res = t["Spec"].get("Resources", {}).get("Reservations", {})
            u = used.setdefault(t.get("NodeID", ""), [0, 0])
            u[0] += res.get("NanoCPUs", 0)
            u[1] += res.get("MemoryBytes", 0)
        out = []
        for n in nodes:
            res = n["Description"].get("Resources", {})
            cpu, mem = used.get(n["ID"], [0, 0])
            out.append(Node(
                name=n["Description"]["Hostname"], address=n["Status"].get("Addr", ""),
                state="ready" if n["Status"].get("State") == "ready" else "down",
                cpu_capacity=res.get("NanoCPUs", 0) / NANO, memory_capacity=res.get("MemoryBytes", 0),
                cpu_allocated=cpu / NANO, memory_allocated=mem, role=n["Spec"].get("Role", "worker"),
                availability=n["Spec"].get("Availability", "active"), id=n["ID"],
                labels=dict(n["Spec"].get("Labels") or {})))
        return out

    # --- warm engines (sessions/warm_pool.py)
    def local_node(self) -> Optional[str]:
        """The swarm node of the dockerd this master talks to. Its containers' processes are
        the master's to reach when both run on one host as root; the first injection says
        whether they are (inject_mounts fails otherwise)."""
        if self._local_node is None:
            try:
                node_id = self.client.info().get("Swarm", {}).get("NodeID") or ""
            except DOCKER_ERRORS:
                return None
            self._local_node = (self._node_name(node_id) or "") if node_id else ""
        return self._local_node or None

    def inject_mounts(self, workload_id: str, mounts: Sequence[Mount]) -> None:
        from .mount_inject import MountInjectError, inject

        service = self._service(workload_id)
        try:
            tasks = self.client.api.tasks(filters={"service": service.id})
            running = [t for t in tasks if t["Status"].get("State") == "running"]
            if not running:
                raise OrchestratorError("workload %s is not running" % workload_id)
            container = running[0]["Status"].get("ContainerStatus", {}).get("ContainerID", "")
            pid = int(self.client.api.inspect_container(container)["State"].get("Pid") or 0)
        except NotFound:
            raise OrchestratorError("workload %s does not run on this master's node"
                                    % workload_id)
        except DOCKER_ERRORS as e:
            raise self._failure("cannot find the container of workload %s" % workload_id, e)
        if not pid:
            raise OrchestratorError("workload %s has no running process" % workload_id)
        try:
            inject(pid, mounts)
        except MountInjectError as e:
            raise (MountUnsupported if e.host_cannot else OrchestratorError)(str(e))

    def relabel(self, workload_id: str, labels: Dict[str, str]) -> None:
        """The service's spec is sent back exactly as stored, with new labels. The SDK's
        update_service(fetch_current_spec=True) reads the spec with its defaults filled in,
        which the swarm takes for a changed task template: it replaced the running container
        (harmless when stop() scales to 0, fatal for a claimed warm engine)."""
        service = self._service(workload_id)
        api = self.client.api
        try:
            current = api.inspect_service(service.id)
            spec = dict(current["Spec"], Labels=dict(labels))
            response = api._post_json(api._url("/services/{0}/update", service.id), data=spec,
                                      params={"version": current["Version"]["Index"]})
            api._raise_for_status(response)
        except DOCKER_ERRORS as e:
            raise self._failure("cannot relabel workload %s" % workload_id, e)

    def close(self) -> None:
        self.client.close()

