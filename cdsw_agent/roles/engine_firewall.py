"""The iptables rules the Docker role installs on every node, so an engine cannot connect to
another engine's published ports.

Engines publish their ports (jupyter_server, model replicas) in swarm's host mode, which binds
every address of the node: Docker 20.10 cannot bind one address for a swarm service. The master
reaches those ports from outside the containers; engines, whose traffic leaves through Docker's
bridges, must not: they would reach another user's engine through its node's address, on this
node (hairpin through the bridge or docker-proxy) or on another one (forwarded). So packets that
come in from a container interface for an engine port are dropped, both those for this host
(INPUT: docker-proxy) and those forwarded or DNATed to a container (DOCKER-USER, which Docker
evaluates first in FORWARD). The original destination port is matched (conntrack), so the rule
also holds after Docker's DNAT; only connections opened from a container are refused, not the
replies of the master's. Containers of different engines do not share a network either:
the swarm backend gives each workload its own overlay network (orchestrators/swarm.py).

Spark drivers in engines publish two ports each in 20050-32767 (workloads/engine.py), which the
cluster's executors connect back to. Those connections come from the cluster's hosts, never from
containers: connections to a driver port of this node (a local address, or DNATed by Docker to
a container here) are refused from containers, and, when `spark_driver_allowed_networks` lists
the executors' hosts, from every other source too (an engine on another node arrives with its
node's address). Connections engines open to ports in that range on other hosts (Impala's
21050, ...) are neither local nor DNATed, and pass.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Iterable, List, Sequence, Tuple

from ..errors import UserError

log = logging.getLogger(__name__)

CHAIN = "CDSW-ENGINES"
# the host ports engines publish: sessions 15000-19999 (sessions/launch.py SESSION_PORT_RANGE),
# model replicas 16000-18000 (models/replicas.py PORT_RANGE)
ENGINE_PORTS: Tuple[int, int] = (15000, 19999)
# where containers' traffic enters the host: overlay networks' gateway bridge, the default
# bridge, user-defined bridges
CONTAINER_INTERFACES: Tuple[str, ...] = ("docker_gwbridge", "docker0", "br-+")
HOOKS: Tuple[str, ...] = ("INPUT", "DOCKER-USER")
DRIVER_CHAIN = "CDSW-SPARK-DRIVERS"
# host ports Spark drivers publish (workloads/engine.py SPARK_PORT_RANGE), as in CDSW
DRIVER_PORTS: Tuple[int, int] = (20050, 32767)


def chain_rules(ports: Tuple[int, int] = ENGINE_PORTS) -> List[List[str]]:
    """The rules of CHAIN, each as iptables arguments after `-A CHAIN`."""
    # --ctdir ORIGINAL: connections a container opens; the replies of the master's own
    # connections to an engine also enter from the bridge, with the same original port
    return [["-i", iface, "-p", "tcp", "-m", "conntrack", "--ctdir", "ORIGINAL",
             "--ctorigdstport", "%d:%d" % ports, "-j", "DROP"] for iface in CONTAINER_INTERFACES]


def driver_rules(allowed: Iterable[str] = (),
                 ports: Tuple[int, int] = DRIVER_PORTS) -> Tuple[List[List[str]], List[List[str]]]:
    """(rules appended to CHAIN that send new connections to a driver port of this node into
    DRIVER_CHAIN, the rules of DRIVER_CHAIN). Such a connection is one whose original
    destination port is in range and whose destination is this host (INPUT, docker-proxy) or
    was DNATed by Docker to a container here (DOCKER-USER)."""
    new = ["-p", "tcp", "-m", "conntrack", "--ctdir", "ORIGINAL",
           "--ctorigdstport", "%d:%d" % ports]
    jumps = [new + ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DRIVER_CHAIN],
             new[:4] + ["--ctstate", "DNAT"] + new[4:] + ["-j", DRIVER_CHAIN]]
    rules = [["-i", iface, "-j", "DROP"] for iface in CONTAINER_INTERFACES]  # other engines
    allowed = list(allowed)
    if allowed:
        rules.append(["-i", "lo", "-j", "RETURN"])  # this host's own processes
        rules += [["-s", network, "-j", "RETURN"] for network in allowed]
        rules.append(["-j", "DROP"])
    return jumps, rules


def _run(iptables: str, args: Sequence[str], check: bool = True) -> bool:
    proc = subprocess.run([iptables, "-w"] + list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise UserError("cannot install the engines' firewall rules (%s %s): %s; engines could "
                        "reach each other's ports" % (iptables, " ".join(args),
                                                      proc.stderr.strip() or proc.returncode))
    return proc.returncode == 0


def install(iptables: str = "iptables", driver_sources: Sequence[str] = ()) -> None:
    """Creates (or refreshes) CHAIN and DRIVER_CHAIN and hooks CHAIN first into INPUT and
    DOCKER-USER. driver_sources: the only sources (besides this host) allowed to connect to
    Spark driver ports; empty: any but containers. Idempotent; Docker keeps a DOCKER-USER
    chain that exists when it starts."""
    if shutil.which(iptables) is None:
        raise UserError("%s not found; install it (dockerd needs it, and CDSW's engine "
                        "firewall rules too)" % iptables)
    for chain in (CHAIN, DRIVER_CHAIN, "DOCKER-USER"):
        if not _run(iptables, ["-n", "-L", chain], check=False):
            _run(iptables, ["-N", chain])
    _run(iptables, ["-F", CHAIN])
    _run(iptables, ["-F", DRIVER_CHAIN])
    jumps, drivers = driver_rules(driver_sources)
    for rule in chain_rules() + jumps:
        _run(iptables, ["-A", CHAIN] + rule)
    for rule in drivers:
        _run(iptables, ["-A", DRIVER_CHAIN] + rule)
    for hook in HOOKS:
        if not _run(iptables, ["-C", hook, "-j", CHAIN], check=False):
            _run(iptables, ["-I", hook, "1", "-j", CHAIN])
    log.info("engine firewall: packets from containers to ports %d-%d are dropped (%s)",
             ENGINE_PORTS[0], ENGINE_PORTS[1], ", ".join(CONTAINER_INTERFACES))
    if driver_sources:
        log.info("engine firewall: Spark driver ports %d-%d of this node accept connections "
                 "only from %s", DRIVER_PORTS[0], DRIVER_PORTS[1], ", ".join(driver_sources))
    else:
        log.warning("engine firewall: Spark driver ports %d-%d of this node accept connections "
                    "from any host but containers; set cdsw.spark.driver.allowed.networks to "
                    "the cluster hosts that run executors", DRIVER_PORTS[0], DRIVER_PORTS[1])
