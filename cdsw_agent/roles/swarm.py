"""Swarm-manager helpers the master role calls at start, and the cluster API uses.

The master's own dockerd is the (single) swarm manager. Everything here is idempotent: a master
that restarts finds its swarm and network again.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import docker
from docker.errors import APIError, DockerException, NotFound

from ..errors import UserError
from ..settings import Settings

log = logging.getLogger(__name__)

SWARM_PORT = 2377
ENGINE_NETWORK = "cdsw-engines"
NODE_LABEL = "io.cdsw.node"


@dataclass
class SwarmInfo:
    node_id: str
    cluster_id: str
    manager_addresses: List[str]  # host:port workers join
    created: bool = False  # True when this call initialised the swarm
    labels: Dict[str, str] = field(default_factory=dict)


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "explanation", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def advertise_address(settings: Settings) -> str:
    """The address other gateways reach this manager at: settings.master_host, as an IP."""
    try:
        return socket.gethostbyname(settings.master_host)
    except OSError:
        raise UserError("cannot resolve master_host %s; set cdsw.master.host (MASTER_IP) to this "
                        "host's address" % settings.master_host)


def connect(settings: Settings, timeout: int = 60) -> docker.DockerClient:
    try:
        client = docker.DockerClient(base_url=settings.docker_host, timeout=timeout)
        client.ping()
        return client
    except (DockerException, OSError) as e:
        raise UserError("Docker does not answer on %s (%s); start the CDSW_DOCKER role first"
                        % (settings.docker_host, _first_line(e)))


def ensure_manager(client: docker.DockerClient, settings: Settings,
                   dispatcher_heartbeat: Optional[float] = None) -> SwarmInfo:
    """Initialise the swarm on this daemon once; afterwards just describe it.

    dispatcher_heartbeat (seconds) sets how fast a dead node is noticed (Docker's default: 5 s
    heartbeats, node down after a few missed); only applied when the swarm is created.
    """
    swarm = client.info().get("Swarm", {})
    state = swarm.get("LocalNodeState", "inactive")
    created = False
    if state == "inactive":
        addr = advertise_address(settings)
        spec = {}
        if dispatcher_heartbeat:
            spec = client.api.create_swarm_spec(
                dispatcher_heartbeat_period=int(dispatcher_heartbeat * 1_000_000_000))
        try:
            client.api.init_swarm(advertise_addr=addr, listen_addr="0.0.0.0:%d" % SWARM_PORT,
                                  swarm_spec=spec or None)
        except APIError as e:
            raise UserError("cannot create the swarm on %s advertising %s: %s"
                            % (settings.docker_host, addr, _first_line(e)))
        log.info("created the swarm; manager at %s:%d", addr, SWARM_PORT)
        created = True
        swarm = client.info().get("Swarm", {})
    elif state != "active":
        raise UserError("this host's Docker swarm state is %s (%s); run `docker swarm leave "
                        "--force` on it and restart the master" % (state, swarm.get("Error") or
                                                                   "not usable"))
    if not swarm.get("ControlAvailable"):
        raise UserError("this host's Docker is a swarm worker, not a manager; run `docker swarm "
                        "leave` on it and restart the master")
    managers = [m["Addr"] for m in swarm.get("RemoteManagers") or []]
    wanted = "%s:%d" % (advertise_address(settings), SWARM_PORT)
    if wanted not in managers:
        log.warning("swarm managers are %s, but master_host says %s; workers join %s",
                    ", ".join(managers) or "unknown", wanted, ", ".join(managers) or wanted)
    return SwarmInfo(node_id=swarm.get("NodeID", ""),
                     cluster_id=(swarm.get("Cluster") or {}).get("ID", ""),
                     manager_addresses=managers or [wanted], created=created)


def ensure_network(client: docker.DockerClient, name: str = ENGINE_NETWORK) -> str:
    """An attachable overlay network engines share; returns its id."""
    for found in client.api.networks(names=[name]):
        net = client.api.inspect_network(found["Id"])
        if net["Name"] == name:
            if net.get("Driver") != "overlay":
                raise UserError("network %s exists with driver %s; remove it (docker network rm "
                                "%s) so CDSW can create an overlay network" % (name, net.get("Driver"),
                                                                               name))
            return net["Id"]
    try:
        return client.api.create_network(name, driver="overlay", attachable=True,
                                         labels={NODE_LABEL: "1"})["Id"]
    except APIError as e:
        raise UserError("cannot create overlay network %s: %s" % (name, _first_line(e)))


def join_tokens(client: docker.DockerClient) -> Dict[str, str]:
    tokens = client.api.inspect_swarm()["JoinTokens"]
    return {"worker": tokens["Worker"], "manager": tokens["Manager"]}


def find_node(client: docker.DockerClient, node_id: str = "", hostname: str = "") -> Optional[dict]:
    if node_id:
        try:
            return client.api.inspect_node(node_id)
        except NotFound:
            return None
    matches = [n for n in client.api.nodes() if n["Description"].get("Hostname") == hostname]
    return matches[0] if len(matches) == 1 else None


def set_availability(client: docker.DockerClient, node: dict, availability: str) -> None:
    """active | pause | drain; drain moves the node's tasks elsewhere."""
    spec = dict(node["Spec"], Availability=availability)
    client.api.update_node(node["ID"], node["Version"]["Index"], spec)


CLUSTER_NODE_LABEL = "cdsw.cluster"  # the workbench cluster a node belongs to (clusters/)


def set_cluster_label(client: docker.DockerClient, node: dict, cluster: str) -> bool:
    """Label the node cdsw.cluster=cluster (no label for the default cluster, ""). Returns
    whether it changed."""
    labels = dict(node["Spec"].get("Labels") or {})
    if labels.get(CLUSTER_NODE_LABEL, "") == cluster:
        return False
    if cluster:
        labels[CLUSTER_NODE_LABEL] = cluster
    else:
        labels.pop(CLUSTER_NODE_LABEL, None)
    client.api.update_node(node["ID"], node["Version"]["Index"], dict(node["Spec"], Labels=labels))
    return True


def start_manager(settings: Settings) -> Optional[SwarmInfo]:
    """What the master calls once at start: with the swarm orchestrator, make this host's
    Docker the swarm manager and create the engines' network. None for other orchestrators."""
    if settings.orchestrator != "swarm":
        return None
    client = connect(settings)
    try:
        info = ensure_manager(client, settings)
        ensure_network(client)
    finally:
        client.close()
    log.info("swarm manager ready at %s (node %s)", ", ".join(info.manager_addresses),
             info.node_id)
    return info


def engine_node_addresses(client: docker.DockerClient,
                          reported: Optional[Dict[str, List[str]]] = None) -> List[str]:
    """The addresses of the CDSW nodes, for the engine firewall (roles/engine_firewall.py):
    every swarm node's address (Status.Addr; a manager's from ManagerStatus.Addr, as Docker
    may report 0.0.0.0 for it) and the host addresses reported for its host name (reported:
    host name -> addresses, from the workers' heartbeats). Down nodes count: they come back."""
    from .engine_firewall import node_addresses

    found: List[str] = []
    for node in client.api.nodes():
        found.append(node.get("Status", {}).get("Addr", ""))
        found.append((node.get("ManagerStatus") or {}).get("Addr", ""))
        found += (reported or {}).get(node.get("Description", {}).get("Hostname", ""), [])
    return node_addresses(found)
