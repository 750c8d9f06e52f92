"""The iptables rules the Docker role installs on every node, so an engine cannot connect to
another engine's published ports, and the narrowing of those rules to the CDSW nodes.

Engines publish their ports (jupyter_server, model replicas: 15000-19999) in swarm's host mode,
which binds every address of the node: Docker 20.10 cannot bind one address for a swarm service.
The master reaches those ports from outside the containers; engines, whose traffic leaves
through Docker's bridges, must not: they would reach another user's engine through its node's
address, on this node (hairpin through the bridge or docker-proxy) or on another CDSW node
(forwarded). So connections opened from a container interface to an engine port are dropped,
both those for this host (INPUT: docker-proxy) and those forwarded or DNATed to a container
(DOCKER-USER, which Docker evaluates first in FORWARD). The original destination port is matched
(conntrack), so the rule also holds after Docker's DNAT; only connections opened from a
container are refused, not the replies of the master's. Containers of different engines cannot
reach each other directly either: they sit on their node's default bridge, where the Docker
role's daemon.json turns inter-container traffic off ("icc": false; orchestrators/swarm.py).

Hadoop services use the same range on other hosts (HBase 16000-16030, Hive LLAP 15001-15004,
Spark History Server 18080/18088, MapReduce JobHistory 19888), so the drop is narrowed to CDSW
nodes: once a node knows the addresses of every CDSW node, a connection from a container to an
engine port is dropped only when its destination is this host (addrtype LOCAL), was DNATed by
Docker (ctstate DNAT), or is the address of a CDSW node (chain NODES_CHAIN, `-d ADDR -j DROP`);
the same ports on every other host are open to engines. The addresses are the swarm nodes'
(`docker node ls`: Status.Addr, a manager's ManagerStatus.Addr) and the host addresses each
worker reports in its heartbeat (gateways with several networks); the master knows them and
hands them to workers that present the cluster secret (POST /api/v1/cluster/engine-nodes,
routes/cluster.py). NodeFirewall keeps them applied, refreshed every heartbeat interval: in the
master process on the master host (roles/master.py) and in the worker role on the others
(roles/worker.py). A node that joins is known to the others within one interval. Both chains
are replaced in one `iptables-restore --noflush` transaction, so no moment is left without
rules. Until a node has learnt the list, and again when the role that keeps it stops or
iptables fails, the broad rule stands: engine ports are dropped towards every host (the Docker
role installs it at start). A service in the range on a CDSW gateway itself stays closed to
engines.

Spark drivers in engines publish two ports each in 20050-32767 (workloads/engine.py), which the
cluster's executors connect back to. Those connections come from the cluster's hosts, never from
containers: connections to a driver port of this node (a local address, or DNATed by Docker to
a container here) are refused from containers, and, when `spark_driver_allowed_networks` lists
the executors' hosts, from every other source too (an engine on another node arrives with its
node's address). Connections engines open to ports in that range on other hosts (Impala's
21050, ...) are neither local nor DNATed, and pass.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import UserError

log = logging.getLogger(__name__)

CHAIN = "CDSW-ENGINES"
# the CDSW nodes' addresses (and this node) for the engine ports, once they are known
NODES_CHAIN = "CDSW-ENGINE-NODES"
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


def chain_rules(nodes: Optional[Sequence[str]] = None,
                ports: Tuple[int, int] = ENGINE_PORTS) -> List[List[str]]:
    """The engine-port rules of CHAIN, each as iptables arguments after `-A CHAIN`. nodes: the
    CDSW nodes' addresses (node_addresses), None while unknown: then every destination is
    dropped; else the connections go to NODES_CHAIN (node_rules), which drops only those for
    this node and for the CDSW nodes."""
    # --ctdir ORIGINAL: connections a container opens; the replies of the master's own
    # connections to an engine also enter from the bridge, with the same original port
    target = "DROP" if nodes is None else NODES_CHAIN
    return [["-i", iface, "-p", "tcp", "-m", "conntrack", "--ctdir", "ORIGINAL",
             "--ctorigdstport", "%d:%d" % ports, "-j", target] for iface in CONTAINER_INTERFACES]


def node_rules(nodes: Sequence[str]) -> List[List[str]]:
    """The rules of NODES_CHAIN: drop what goes to this host (docker-proxy, INPUT), what Docker
    DNATed to a container here (DOCKER-USER), and what goes to a CDSW node's address; every
    other destination returns to CHAIN and passes."""
    return [["-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"],
            ["-m", "conntrack", "--ctstate", "DNAT", "-j", "DROP"]] + \
        [["-d", "%s/32" % address, "-j", "DROP"] for address in node_addresses(nodes)]


def node_addresses(values: Iterable[str]) -> List[str]:
    """The IPv4 host addresses among values (an address, or host:port as swarm reports a
    manager's), sorted and once each; unspecified (0.0.0.0, what Docker may report for a
    manager), loopback and anything else are left out."""
    found = set()
    for value in values:
        text = str(value or "").strip()
        if text.count(":") == 1:
            text = text.split(":", 1)[0]
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if not (address.is_unspecified or address.is_loopback or address.is_multicast):
            found.add(address)
    return [str(a) for a in sorted(found)]


def host_addresses() -> List[str]:
    """This host's own IPv4 addresses, but those of loopback and of Docker's bridges (the same
    on every node, and never where another node's engine is reached): what a worker reports so
    that every address of its host counts as a CDSW node's."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    prefixes = tuple(i[:-1] for i in CONTAINER_INTERFACES if i.endswith("+")) + ("veth",)
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet":
            continue
        iface = fields[1].split("@", 1)[0]
        if iface == "lo" or iface in CONTAINER_INTERFACES or iface.startswith(prefixes):
            continue
        found.append(fields[3].split("/", 1)[0])
    return node_addresses(found)


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
    """Creates (or refreshes) CHAIN, NODES_CHAIN and DRIVER_CHAIN and hooks CHAIN first into
    INPUT and DOCKER-USER, with the broad engine-port rule (every destination) until
    NodeFirewall narrows it. driver_sources: the only sources (besides this host) allowed to
    connect to Spark driver ports; empty: any but containers. Idempotent; Docker keeps a
    DOCKER-USER chain that exists when it starts."""
    if shutil.which(iptables) is None:
        raise UserError("%s not found; install it (dockerd needs it, and CDSW's engine "
                        "firewall rules too)" % iptables)
    for chain in (CHAIN, NODES_CHAIN, DRIVER_CHAIN, "DOCKER-USER"):
        if not _run(iptables, ["-n", "-L", chain], check=False):
            _run(iptables, ["-N", chain])
    for chain in (CHAIN, NODES_CHAIN, DRIVER_CHAIN):
        _run(iptables, ["-F", chain])
    jumps, drivers = driver_rules(driver_sources)
    for rule in chain_rules() + jumps:
        _run(iptables, ["-A", CHAIN] + rule)
    for rule in drivers:
        _run(iptables, ["-A", DRIVER_CHAIN] + rule)
    for hook in HOOKS:
        if not _run(iptables, ["-C", hook, "-j", CHAIN], check=False):
            _run(iptables, ["-I", hook, "1", "-j", CHAIN])
    log.info("engine firewall: packets from containers to ports %d-%d are dropped (%s), towards "
             "every host until the master or worker role of this node learns the CDSW nodes",
             ENGINE_PORTS[0], ENGINE_PORTS[1], ", ".join(CONTAINER_INTERFACES))
    if driver_sources:
        log.info("engine firewall: Spark driver ports %d-%d of this node accept connections "
                 "only from %s", DRIVER_PORTS[0], DRIVER_PORTS[1], ", ".join(driver_sources))
    else:
        log.warning("engine firewall: Spark driver ports %d-%d of this node accept connections "
                    "from any host but containers; set cdsw.spark.driver.allowed.networks to "
                    "the cluster hosts that run executors", DRIVER_PORTS[0], DRIVER_PORTS[1])


def restore_input(nodes: Optional[Sequence[str]]) -> str:
    """`iptables-restore --noflush` input that replaces CHAIN and NODES_CHAIN in one
    transaction (a declared chain is flushed and refilled, nothing else is touched): the
    narrowed rules for nodes, or the broad rule for None. DRIVER_CHAIN must exist (install)."""
    lines = ["*filter", ":%s - [0:0]" % CHAIN, ":%s - [0:0]" % NODES_CHAIN]
    lines += ["-A %s %s" % (CHAIN, " ".join(rule))
              for rule in chain_rules(nodes) + driver_rules()[0]]
    if nodes is not None:
        lines += ["-A %s %s" % (NODES_CHAIN, " ".join(rule)) for rule in node_rules(nodes)]
    return "\n".join(lines + ["COMMIT", ""])


def _restore(iptables: str, text: str) -> str:
    """Feeds text to iptables-restore --noflush; "" when done, else what went wrong (one line)."""
    restore = iptables + "-restore"
    if shutil.which(restore) is None:
        return "%s not found" % restore
    try:
        proc = subprocess.run([restore, "-w", "--noflush"], input=text, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return "%s: %s" % (restore, e)
    if proc.returncode == 0:
        return ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return "%s exited %d: %s" % (restore, proc.returncode, lines[0] if lines else "no message")


class NodeFirewall:
    """Keeps this node's engine-port rule narrowed to the CDSW nodes whose addresses it was
    last given (update), as long as iptables takes them. Called on every round of the role's
    loop: the rules are rewritten when the list changes, or when the Docker role (restarted)
    put the broad rule back. A failure is logged once, in one line, and the broad rule kept."""

    def __init__(self, iptables: str = "iptables"):
        self.iptables = iptables
        self.applied: Optional[List[str]] = None  # the node list in force; None: broad rule
        self._error = ""

    def narrowed(self) -> bool:
        """True when CHAIN holds the narrowed rules (not the Docker role's broad ones)."""
        try:
            return _run(self.iptables, ["-C", CHAIN] + chain_rules(())[0], check=False)
        except OSError:  # iptables gone
            return False

    def _missing_chains(self) -> str:
        """What is missing for a rewrite ("" when nothing): the chains the Docker role makes;
        without them there is nothing to narrow (and nothing is created here)."""
        for chain in (CHAIN, DRIVER_CHAIN):
            try:
                if not _run(self.iptables, ["-n", "-L", chain], check=False):
                    return "no chain %s on this host (the CDSW_DOCKER role installs it)" % chain
            except OSError as e:
                return "%s: %s" % (self.iptables, e.strerror or e)
        return ""

    def update(self, nodes: Optional[Iterable[str]]) -> bool:
        """Narrow to nodes (None: nothing learnt, change nothing); True when in force."""
        if nodes is None:
            return self.applied is not None
        wanted = node_addresses(nodes)
        if wanted == self.applied and self.narrowed():
            return True
        missing = self._missing_chains()
        if missing:  # no Docker role here (a system Docker): no rule to narrow
            if missing != self._error:
                log.warning("engine firewall: nothing to narrow, %s", missing)
            self._error, self.applied = missing, None
            return False
        error = _restore(self.iptables, restore_input(wanted))
        if error:
            if error != self._error:
                log.error("engine firewall: engine ports %d-%d stay closed to engines on every "
                          "host, the rule could not be narrowed to the CDSW nodes: %s",
                          ENGINE_PORTS[0], ENGINE_PORTS[1], error)
            self._error = error
            if self.applied is not None:  # back to the broad rule, if iptables lets us
                _restore(self.iptables, restore_input(None))
                self.applied = None
            return False
        # rewritten: the list changed, or the Docker role (restarted) put the broad rule back
        log.info("engine firewall: engines reach ports %d-%d on any host but this node and "
                 "the CDSW nodes %s", ENGINE_PORTS[0], ENGINE_PORTS[1],
                 ", ".join(wanted) or "(none other)")
        self.applied, self._error = wanted, ""
        return True

    def reset(self) -> None:
        """Back to the broad rule (the role that kept the list stops: it would go stale)."""
        if self.applied is None:
            return
        error = _restore(self.iptables, restore_input(None))
        if error:
            log.error("engine firewall: cannot put back the broad engine-port rule: %s", error)
        else:
            log.info("engine firewall: engine ports %d-%d closed to engines on every host again",
                     ENGINE_PORTS[0], ENGINE_PORTS[1])
        self.applied = None
