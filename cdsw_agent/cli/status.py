"""`cdsw status`: nodes, roles on this host, workloads and failing health checks, ending with one
line that says the workbench is ready or what is not. Exit 0 when ready, 1 when not.

Everything is gathered concurrently and every failure to reach something becomes one line.
"""

from __future__ import annotations

import importlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import click

from ..orchestrators.base import RUNNING, Node
from ..roles import ROLE_NAMES
from ..settings import Settings
from .context import CliContext, pass_ctx

GIB = 1024 ** 3
HEALTH_ROLE = "master"  # the checks that say whether the whole workbench works
ORCHESTRATOR_TIMEOUT = 10  # seconds per orchestrator API call: status must not hang


def _reason(e: BaseException) -> str:
    from ..health.registry import reason

    return reason(e)


def _plural(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


@dataclass
class ClusterView:
    orchestrator: str
    location: str = ""  # where the orchestrator is reached, for messages
    error: str = ""  # why the orchestrator could not be reached
    nodes: List[Node] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)  # workloads by state
    running: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ready_nodes(self) -> List[Node]:
        return [n for n in self.nodes if n.state == "ready" and n.availability == "active"]


@dataclass
class StatusReport:
    cluster: ClusterView
    roles: Dict[str, str]  # running | not running | not used (...) | unknown: REASON
    health: List[Any]  # the non-OK CheckResults
    health_error: str = ""
    ready: bool = False
    reason: str = ""

    def summary(self) -> str:
        if self.ready:
            return "CDSW is ready: %s ready, %s running" % (
                _plural(len(self.cluster.ready_nodes), "node"),
                _plural(self.cluster.counts.get(RUNNING, 0), "workload"))
        return "CDSW is NOT ready: %s" % self.reason


# --- gathering ---------------------------------------------------------------------------------

def cluster_view(settings: Settings) -> ClusterView:
    from ..orchestrators import get_orchestrator

    view = ClusterView(settings.orchestrator, settings.docker_host
                       if settings.orchestrator == "swarm"
                       else str(Path(settings.data_dir) / "orchestrator" / "local"))
    try:
        orch = get_orchestrator(settings, **({"timeout": ORCHESTRATOR_TIMEOUT}
                                             if settings.orchestrator == "swarm" else {}))
    except Exception as e:
        view.error = _reason(e)
        return view
    try:
        view.nodes = orch.nodes()
        for ref in orch.list():
            try:
                st = orch.status(ref.id)
            except Exception:  # removed meanwhile, or its node does not answer
                view.counts["unknown"] = view.counts.get("unknown", 0) + 1
                continue
            view.counts[st.state] = view.counts.get(st.state, 0) + 1
            if st.state == RUNNING:
                view.running.append({"id": ref.id, "name": ref.name, "node": st.node,
                                     "started_at": st.started_at.isoformat(timespec="seconds")
                                     if st.started_at else None})
    except Exception as e:
        view.error = _reason(e)
    finally:
        try:
            orch.close()
        except Exception:
            pass
    return view


def role_state(settings: Settings, name: str) -> str:
    if name != "master" and settings.orchestrator != "swarm":
        return "not used (orchestrator is %s)" % settings.orchestrator
    try:
        running = importlib.import_module("cdsw_agent.roles." + name).status(settings)
    except Exception as e:
        return "unknown: %s" % _reason(e)
    return "running" if running else "not running"


def health_problems(settings: Settings) -> List[Any]:
    from ..health import REGISTRY, Status

    return [r for r in REGISTRY.run(settings, role=HEALTH_ROLE) if r.status != Status.OK]


def verdict(report: StatusReport) -> None:
    """Set ready and the first reason it is not, most fundamental first."""
    from ..health import Status

    c = report.cluster
    critical = [r for r in report.health if r.status == Status.CRITICAL]
    if c.error:
        report.reason = "cannot reach the %s orchestrator at %s: %s" % (c.orchestrator,
                                                                        c.location, c.error)
    elif not c.nodes:
        report.reason = "the %s orchestrator has no nodes" % c.orchestrator
    elif not c.ready_nodes:
        report.reason = "no node is ready (%s)" % ", ".join(
            "%s %s" % (n.name, n.state if n.state != "ready" else n.availability) for n in c.nodes)
    elif report.health_error:
        report.reason = "health checks could not run: %s" % report.health_error
    elif critical:
        report.reason = "%s: %s" % (critical[0].name, critical[0].message)
    report.ready = not report.reason


def gather(settings: Settings) -> StatusReport:
    with ThreadPoolExecutor(max_workers=2 + len(ROLE_NAMES)) as pool:
        cluster = pool.submit(cluster_view, settings)
        health = pool.submit(health_problems, settings)
        roles = {name: pool.submit(role_state, settings, name) for name in ROLE_NAMES}
        report = StatusReport(cluster.result(), {n: f.result() for n, f in roles.items()}, [])
        try:
            report.health = health.result()
        except Exception as e:
            report.health_error = _reason(e)
    verdict(report)
    return report


# --- showing -----------------------------------------------------------------------------------

def text_lines(report: StatusReport) -> List[str]:
    from ..health import report as health_report

    c = report.cluster
    lines = ["Orchestrator: %s%s" % (c.orchestrator, " (unreachable: %s)" % c.error
                                     if c.error else "")]
    if c.nodes:
        lines.append("Nodes: %d of %d ready" % (len(c.ready_nodes), len(c.nodes)))
        lines.append("  %-20s %-15s %-8s %-8s %-11s %s" % ("NAME", "ADDRESS", "STATE", "ROLE",
                                                          "CPU", "MEMORY (GiB)"))
        for n in c.nodes:
            state = n.state if n.availability == "active" else "%s/%s" % (n.state, n.availability)
            lines.append("  %-20s %-15s %-8s %-8s %-11s %.1f/%.1f" % (
                n.name, n.address, state, n.role, "%.1f/%.1f" % (n.cpu_allocated, n.cpu_capacity),
                n.memory_allocated / GIB, n.memory_capacity / GIB))
    lines.append("Roles on this host:")
    lines.extend("  %-7s %s" % (name, state) for name, state in report.roles.items())
    if not c.error:
        counts = ", ".join("%d %s" % (v, k) for k, v in sorted(c.counts.items()))
        lines.append("Workloads: %s" % (counts or "none"))
        lines.extend("  %-30s %-24s %-20s %s" % (w["name"], w["id"], w["node"] or "-",
                                                  w["started_at"] or "-") for w in c.running)
    if report.health_error:
        lines.append("Health: checks could not run: %s" % report.health_error)
    elif report.health:
        lines.append("Health (%s checks not OK):" % HEALTH_ROLE)
        lines.extend("  " + health_report.line(r) for r in report.health)
    else:
        lines.append("Health: all %s checks OK" % HEALTH_ROLE)
    lines.append(report.summary())
    return lines


def document(report: StatusReport) -> Dict[str, Any]:
    c = report.cluster
    return {"ready": report.ready, "reason": report.reason or None, "summary": report.summary(),
            "orchestrator": {"name": c.orchestrator, "location": c.location,
                             "error": c.error or None},
            "nodes": [dict(asdict(n), ready=n in c.ready_nodes) for n in c.nodes],
            "workloads": {"counts": c.counts, "running": c.running},
            "roles": report.roles,
            "health": {"error": report.health_error or None,
                       "problems": [r.as_dict() for r in report.health]}}


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of lines.")
@pass_ctx
def command(ctx: CliContext, as_json: bool) -> None:
    """Show nodes, roles, workloads and failing checks; exit 0 when the workbench is ready."""
    settings = ctx.settings
    report = gather(settings)
    if as_json:
        click.echo(json.dumps(document(report), indent=2, default=str))
    else:
        if ctx.instance_properties:
            from .instance import pointer_path

            click.echo("Instance: %s (data dir %s; found through %s)" % (
                settings.base_url, settings.data_dir, pointer_path()))
        for line in text_lines(report):
            click.echo(line)
    sys.exit(0 if report.ready else 1)
