"""The master's side of `cdsw hosts`: the swarm's nodes with what their workers last reported,
waiting for a new node (joined, ready, labelled), draining and removing one."""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..errors import UserError
from ..roles.swarm import CLUSTER_NODE_LABEL, set_availability


def describe(node: Mapping[str, Any], report: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """One node as `cdsw hosts list` shows it."""
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    return {"hostname": (node.get("Description") or {}).get("Hostname", ""),
            "id": node.get("ID", ""),
            "role": "master" if spec.get("Role") == "manager" else "worker",
            "cluster": (spec.get("Labels") or {}).get(CLUSTER_NODE_LABEL, "") or "default",
            "state": status.get("State", ""), "availability": spec.get("Availability", ""),
            "address": status.get("Addr", ""),
            "last_heartbeat": (report or {}).get("last_seen", "") or "-"}


def list_nodes(client: Any, reports: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    rows = [describe(n, reports.get((n.get("Description") or {}).get("Hostname", "")))
            for n in client.api.nodes()]
    return sorted(rows, key=lambda r: (r["role"] != "master", r["hostname"], r["state"] != "ready"))


def nodes_named(client: Any, hostname: str) -> List[dict]:
    return [n for n in client.api.nodes()
            if (n.get("Description") or {}).get("Hostname") == hostname]


def refuse_manager(client: Any, hostname: str) -> None:
    """The master's own host runs CDSW_MASTER, not a worker: adding it would never join."""
    if any((n.get("Spec") or {}).get("Role") == "manager" for n in nodes_named(client, hostname)):
        raise UserError("%s is the swarm manager (the master's host); add other hosts as workers"
                        % hostname)


def refuse_loopback_swarm(client: Any, docker_host: str) -> None:
    """A swarm created while master_host was a loopback address advertises it to every worker,
    and no other host can join it (a standalone master started without CDSW_MASTER_HOST)."""
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise UserError("the master's Docker is not a swarm manager yet; start the master first")
    managers = [m.get("Addr", "") for m in swarm.get("RemoteManagers") or []]
    if managers and all(_is_loopback(a.rpartition(":")[0]) for a in managers):
        raise UserError("the master's swarm advertises %s, which other hosts cannot reach: stop "
                        "the master, run `docker -H %s swarm leave --force`, set cdsw.master.host "
                        "(CDSW_MASTER_HOST) to this host's address and start the master again"
                        % (", ".join(managers), docker_host))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def joined(client: Any, hostname: str, cluster: str) -> Optional[dict]:
    """The host's node once it is ready, active and carries its cluster's label."""
    for node in nodes_named(client, hostname):
        row = describe(node)
        if row["state"] == "ready" and row["availability"] == "active" and \
                row["cluster"] == (cluster or "default"):
            return node
    return None


def wait_joined(client: Any, hostname: str, cluster: str, timeout: float,
                echo: Callable[[str], None], interval: float = 2.0,
                logs: str = "the worker's log there") -> dict:
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        node = joined(client, hostname, cluster)
        if node is not None:
            return node
        found = [describe(n) for n in nodes_named(client, hostname)]
        now = ("node %s is %s, cluster %s" % (found[-1]["id"][:12], found[-1]["state"],
                                             found[-1]["cluster"]) if found
               else "not in the swarm yet")
        if now != said:
            echo("  %s: %s" % (hostname, now))
            said = now
        if time.monotonic() > deadline:
            raise UserError("%s did not join the swarm as a ready node of cluster %s within %.0f s "
                            "(%s); see %s" % (hostname, cluster or "default", timeout, now, logs))
        time.sleep(interval)


def drain(client: Any, hostname: str) -> List[str]:
    """Drain every worker node of that host name; returns their ids."""
    return _drain(client, nodes_named(client, hostname), hostname)


def drain_unreachable(client: Any, host: str) -> List[str]:
    """The worker nodes of a host that is gone, found by host name or address, drained."""
    found = [n for n in client.api.nodes()
             if host in ((n.get("Description") or {}).get("Hostname"),
                         (n.get("Status") or {}).get("Addr"))]
    if not found:
        raise UserError("no swarm node is named %s or has that address; `cdsw hosts list` shows "
                        "them" % host)
    return _drain(client, found, host)


def _drain(client: Any, found: List[dict], host: str) -> List[str]:
    if any((n.get("Spec") or {}).get("Role") == "manager" for n in found):
        raise UserError("%s is the swarm manager (the master); it cannot be removed" % host)
    for node in found:
        if (node.get("Spec") or {}).get("Availability") != "drain":
            set_availability(client, node, "drain")
    return [n["ID"] for n in found]


def remove(client: Any, node_ids: List[str], timeout: float = 60) -> None:
    """Remove the nodes from the swarm once they are down (force after timeout)."""
    deadline = time.monotonic() + timeout
    for node_id in node_ids:
        while time.monotonic() < deadline:
            try:
                state = client.api.inspect_node(node_id)["Status"].get("State")
            except Exception:  # already gone
                state = "gone"
            if state in ("down", "gone"):
                break
            time.sleep(1.0)
        try:
            client.api.remove_node(node_id, force=True)
        except Exception as e:
            if "not found" not in str(e).lower():
                raise UserError("cannot remove swarm node %s: %s"
                                % (node_id, str(e).splitlines()[0]))
