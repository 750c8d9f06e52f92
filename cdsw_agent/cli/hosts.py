"""`cdsw hosts add|list|remove`: worker gateway hosts, added and removed over SSH from the
master (cdsw_agent/hosts holds the logic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import click

from ..errors import UserError
from ..hosts import install, nodes, ssh, wheels
from .context import CliContext, pass_ctx


@click.group("hosts")
def command() -> None:
    """Worker gateway hosts: add one over SSH, list the swarm's nodes, remove one."""


def _ssh_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--ssh-user", default="root", show_default=True,
                     help="Remote user: root, or one with passwordless sudo."),
        click.option("--ssh-port", default=22, show_default=True, type=click.IntRange(1, 65535)),
        click.option("--identity", default="", metavar="FILE", help="SSH private key."),
        click.option("--known-hosts", default="", metavar="FILE",
                     help="known_hosts file to check the host key against (default "
                     "~/.ssh/known_hosts)."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="The host has no key in known_hosts yet: print its fingerprint and "
                     "record it (a changed key is still refused)."),
        click.option("--prefix", default="/opt/cdsw", show_default=True,
                     help="Where the agent, its settings and its logs go on the host."),
        click.option("--unit-dir", default="/etc/systemd/system", show_default=True,
                     help="Where the systemd units go."),
    ]):
        f = option(f)
    return f


def _target(host: str, ssh_user: str, ssh_port: int, identity: str, known_hosts: str) -> ssh.Target:
    if identity and not Path(identity).is_file():
        raise UserError("--identity %s: no such file" % identity)
    return ssh.Target(host=host, user=ssh_user, port=ssh_port, identity=identity,
                      known_hosts=known_hosts)


def _cluster(ctx: CliContext, name: str) -> str:
    """The cluster's node label value ("" for the default cluster); refuses unknown names."""
    from .. import clusters

    if not name:
        return ""
    db = ctx.database()
    if db.needs_upgrade():
        raise UserError("the database schema is not current; run `cdsw db upgrade` first")
    with db.session() as s:
        clusters.default_cluster(s)
        c = clusters.by_name(s, name)
        return "" if c.is_default else c.name


def _wheelhouse(path: str) -> Tuple[Path, str, str, set]:
    d = Path(path)
    if not d.is_dir():
        raise UserError("--wheelhouse %s: no such directory" % path)
    version, build = install.build_id(d)
    return d, version, build, install.wheelhouse_pythons(p.name for p in d.glob("*.whl"))


def _cluster_secret(settings: Any) -> str:
    """The secret this master's workers join with, read, never made here: a new one would
    not be the running master's (a CLI reading another data directory)."""
    if settings.cluster_secret:
        return str(settings.cluster_secret)
    path = Path(settings.data_dir) / "cluster-secret"
    if not path.is_file():
        raise UserError("no cluster secret in %s: run this on the master, with its settings (the "
                        "master must have started once), or set cdsw.cluster.secret" % path)
    return path.read_text().strip()


def _no_wheelhouse() -> Path:
    """Without --wheelhouse: the source checkout to build one from, once the remote's Python
    is known; refused before the remote is touched where there is none."""
    root = wheels.checkout_root()
    if root is None:
        raise UserError("no wheelhouse: pass --wheelhouse DIR (the parcel's lib/cdsw/wheels) or "
                        "set CDSW_WHEELHOUSE")
    return root


def _probe(target: ssh.Target, plan: install.Plan) -> Dict[str, str]:
    return install.parse_facts(ssh.run_script(target, install.probe_script(plan), timeout=60).stdout)


@command.command("add")
@click.argument("host")
@click.option("--cluster", default="", metavar="NAME",
              help="Workbench cluster (registered with `cdsw clusters add`) the host serves.")
@_ssh_options
@click.option("--python", "python", default="python3", show_default=True,
              help="The host's Python (3.9 or later, with venv).")
@click.option("--services", type=click.Choice(install.SERVICE_MODES), default="auto",
              show_default=True, help="systemd units, or background processes with pid files "
              "where there is no systemd; auto: systemd, else refuse.")
@click.option("--wheelhouse", envvar="CDSW_WHEELHOUSE", default="", metavar="DIR",
              help="Offline wheels of the agent and its dependencies for the host's Python "
              "(default: the parcel's; from a source checkout, built from it for that Python).")
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
              help="A setting of this host only (e.g. docker_data_root=/data/docker); repeatable.")
@click.option("--timeout", default=300.0, show_default=True,
              help="Seconds to wait for the node to join the swarm with its label.")
@pass_ctx
def add_cmd(ctx: CliContext, host: str, cluster: str, ssh_user: str, ssh_port: int,
            identity: str, known_hosts: str, accept_new_host_key: bool, prefix: str,
            unit_dir: str, python: str, services: str, wheelhouse: str,
            assignments: Tuple[str, ...], timeout: float) -> None:
    """Make HOST a worker gateway: install the agent over SSH, start CDSW_DOCKER and
    CDSW_WORKER as services, wait until its node joined the swarm (with its cluster label)."""
    from ..roles import swarm

    echo = click.echo
    # everything that can be refused here is, before the remote is touched
    extra = install.parse_assignments(assignments)
    plan = install.Plan(prefix=prefix.rstrip("/"), python=python, services=services,
                        unit_dir=unit_dir.rstrip("/"),
                        dockerd=extra.get("dockerd_path", ctx.settings.dockerd_path))
    install.check_plan(plan)
    target = _target(host, ssh_user, ssh_port, identity, known_hosts)
    label = _cluster(ctx, cluster)
    if wheelhouse:
        wheel_dir, version, build, wheel_pythons = _wheelhouse(wheelhouse)
    else:
        checkout, wheel_pythons = _no_wheelhouse(), set()
    settings = ctx.settings
    properties = install.worker_properties(settings, _cluster_secret(settings), label, extra)
    client = swarm.connect(settings)  # the master's Docker: where the node will show up
    nodes.refuse_loopback_swarm(client, settings.docker_host)

    echo("[1/6] %s: checking the host key" % target)
    ssh.check_key_known(target, accept_new_host_key, echo)
    echo("[2/6] %s: checking the host" % host)
    facts = _probe(target, plan)
    found = install.problems(plan, facts, wheel_pythons)
    if found:
        raise UserError("%s is not ready: %s" % (host, "; ".join(found)))
    mode = install.service_mode(plan, facts)
    hostname = facts.get("hostname", "")
    nodes.refuse_manager(client, hostname)
    if not wheelhouse:
        wheel_dir = wheels.build_from_checkout(checkout, facts["python"], echo)
        version, build = install.build_id(wheel_dir)
    was_running = any(facts.get("running_%s" % r) == "yes" for r in install.ROLES)
    echo("  host name %s, Python %s, dockerd %s, services: %s%s" % (
        hostname, facts["python"], facts["dockerd"], mode,
        ", roles already running" if was_running else ""))
    started = False
    known_nodes = {n["ID"] for n in nodes.nodes_named(client, hostname)}
    try:
        if facts.get("installed") == build:
            echo("[3/6] agent %s already installed in %s" % (build, plan.current))
        else:
            echo("[3/6] copying the wheelhouse (%s) and installing agent %s in %s" % (
                wheel_dir, build, plan.current))
            ssh.upload_tree(target, wheel_dir, plan.wheels)
            ssh.run_script(target, install.install_script(plan, version, build))
        echo("[4/6] writing %s (mode 0600) and starting CDSW_DOCKER and CDSW_WORKER (%s)"
             % (plan.properties, mode))
        started = True
        ssh.run_script(target, install.configure_and_start_script(plan, mode, properties))
        echo("[5/6] waiting for %s to join the swarm as a node of cluster %s" % (
            hostname, label or "default"))
        logs = ("`journalctl -u cdsw-worker` on %s" % host if mode == "systemd"
                else "%s/log/worker.log on %s" % (plan.prefix, host))
        node = nodes.wait_joined(client, hostname, label, timeout, echo, logs=logs)
    except (UserError, KeyboardInterrupt):
        if started and not was_running:  # leave nothing half-started behind
            echo("  stopping what this run started on %s" % host, err=True)
            try:
                ssh.run_script(target, install.stop_script(plan), check=False, timeout=300)
                nodes.remove(client, [n["ID"] for n in nodes.nodes_named(client, hostname)
                                      if n["ID"] not in known_nodes])
            except UserError as e:
                echo("  could not stop it: %s" % e, err=True)
        raise
    row = nodes.describe(node)
    echo("[6/6] %s added: swarm node %s, %s, cluster %s, services %s under %s" % (
        host, row["id"][:12], row["state"], row["cluster"], mode, plan.prefix))


def _reports(ctx: CliContext) -> Dict[str, Any]:
    from ..store.models import ClusterNode

    try:
        with ctx.database().session() as s:
            return {n.hostname: dict(n.report or {}) for n in s.query(ClusterNode).all()}
    except Exception:  # no database here: the swarm alone still answers
        return {}


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of lines.")
@pass_ctx
def list_cmd(ctx: CliContext, as_json: bool) -> None:
    """The swarm's nodes: role, cluster, state, availability and last heartbeat."""
    from ..roles import swarm

    client = swarm.connect(ctx.settings)
    rows = nodes.list_nodes(client, _reports(ctx))
    if as_json:
        click.echo(json.dumps({"hosts": rows}, indent=2))
        return
    click.echo("%-20s %-7s %-10s %-8s %-12s %-16s %s" % (
        "HOST", "ROLE", "CLUSTER", "STATE", "AVAILABILITY", "ADDRESS", "LAST HEARTBEAT"))
    for r in rows:
        click.echo("%-20s %-7s %-10s %-8s %-12s %-16s %s" % (
            r["hostname"], r["role"], r["cluster"], r["state"], r["availability"], r["address"],
            r["last_heartbeat"]))


@command.command("remove")
@click.argument("host")
@_ssh_options
@click.option("--purge", is_flag=True, help="Also delete the prefix (agent, wheels, logs).")
@click.option("--unreachable", is_flag=True,
              help="HOST is gone for good: take its swarm node out without SSH (HOST as `cdsw "
              "hosts list` shows it: host name or address); nothing on it is stopped.")
@pass_ctx
def remove_cmd(ctx: CliContext, host: str, ssh_user: str, ssh_port: int, identity: str,
               known_hosts: str, accept_new_host_key: bool, prefix: str, unit_dir: str,
               purge: bool, unreachable: bool) -> None:
    """Drain HOST's node, stop its services over SSH, and remove the node from the swarm."""
    from ..roles import swarm

    echo = click.echo
    plan = install.Plan(prefix=prefix.rstrip("/"), unit_dir=unit_dir.rstrip("/"))
    install.check_plan(plan)
    target = _target(host, ssh_user, ssh_port, identity, known_hosts)
    client = swarm.connect(ctx.settings)
    if unreachable:
        ids = nodes.drain_unreachable(client, host)
        echo("[1/1] removing %d swarm node%s of %s (nothing stopped there: if it comes back, "
             "run `cdsw hosts remove %s` without --unreachable)"
             % (len(ids), "" if len(ids) == 1 else "s", host, host))
        nodes.remove(client, ids, timeout=0)
        echo("%s removed" % host)
        return
    ssh.check_key_known(target, accept_new_host_key, echo)
    hostname = _probe(target, plan).get("hostname", "")
    if not hostname:
        raise UserError("cannot read the host name of %s" % host)
    echo("[1/3] draining %s's swarm node" % hostname)
    ids = nodes.drain(client, hostname)
    if not ids:
        echo("  %s is not in the swarm" % hostname)
    echo("[2/3] stopping CDSW_WORKER and CDSW_DOCKER on %s%s" % (
        host, " and deleting %s" % plan.prefix if purge else ""))
    ssh.run_script(target, install.stop_script(plan, purge=purge), timeout=400)
    echo("[3/3] removing %s from the swarm" % hostname)
    nodes.remove(client, ids)
    echo("%s removed (%d swarm node%s)" % (host, len(ids), "" if len(ids) == 1 else "s"))

