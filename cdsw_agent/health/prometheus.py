"""Prometheus text exposition (format 0.0.4) of the workbench's health and capacity.

Written by hand: a handful of gauges do not justify another dependency.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .. import __version__
from .registry import CheckResult

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_WORKLOADS = 2000  # status() calls per scrape, at most

Labels = Dict[str, str]
Sample = Tuple[Labels, float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    """Collects gauges and renders them; each metric's HELP and TYPE appear once."""

    def __init__(self) -> None:
        self._metrics: Dict[str, Tuple[str, List[Sample]]] = {}

    def gauge(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._metrics.setdefault(name, (help_text, []))[1].extend(samples)

    def render(self) -> str:
        out: List[str] = []
        for name, (help_text, samples) in self._metrics.items():
            out.append("# HELP %s %s" % (name, help_text.replace("\\", "\\\\").replace("\n", " ")))
            out.append("# TYPE %s gauge" % name)
            for labels, value in samples:
                label_text = ",".join('%s="%s"' % (k, _escape(str(v))) for k, v in labels.items())
                out.append("%s%s %s" % (name, "{%s}" % label_text if label_text else "",
                                        _number(value)))
        return "\n".join(out) + "\n"


def health_metrics(exp: Exposition, results: Sequence[CheckResult]) -> None:
    exp.gauge("cdsw_health_check_status",
              "Health check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
              (({"check": r.name}, int(r.status)) for r in results))
    exp.gauge("cdsw_health_check_duration_seconds", "Time the health check took.",
              (({"check": r.name}, round(r.duration, 4)) for r in results))


_UP_HELP = "1 when the orchestrator answered this scrape."
# node attribute, metric stem, help
_CAPACITY = (("cpu_capacity", "cpu_capacity_cores", "CPU cores offered"),
             ("cpu_allocated", "cpu_allocated_cores", "CPU cores reserved by workloads"),
             ("memory_capacity", "memory_capacity_bytes", "Memory offered"),
             ("memory_allocated", "memory_allocated_bytes", "Memory reserved by workloads"))


def orchestrator_metrics(exp: Exposition, orchestrator: Optional[Any]) -> None:
    """Node, workload and capacity gauges; cdsw_orchestrator_up says whether they could be read."""
    if orchestrator is None:
        exp.gauge("cdsw_orchestrator_up", _UP_HELP, [({}, 0)])
        return
    backend = str(getattr(orchestrator, "name", "unknown"))
    try:
        nodes = orchestrator.nodes()
        states: Counter = Counter()
        for ref in orchestrator.list()[:MAX_WORKLOADS]:
            try:
                states[orchestrator.status(ref.id).state] += 1
            except Exception:  # vanished between list() and status()
                continue
    except Exception as e:
        log.warning("metrics: orchestrator %s did not answer: %s", backend, e)
        exp.gauge("cdsw_orchestrator_up", _UP_HELP, [({"backend": backend}, 0)])
        return
    exp.gauge("cdsw_orchestrator_up", _UP_HELP, [({"backend": backend}, 1)])
    by_state = Counter({"ready": 0, "down": 0})
    by_state.update(n.state for n in nodes)
    exp.gauge("cdsw_nodes", "Nodes by state.",
              (({"state": s}, c) for s, c in sorted(by_state.items())))
    exp.gauge("cdsw_workloads", "Workloads (sessions, jobs, model replicas) by state.",
              (({"state": s}, c) for s, c in sorted(states.items())))
    ready = [n for n in nodes if n.state == "ready"]
    for attr, stem, what in _CAPACITY:
        exp.gauge("cdsw_node_" + stem, what + " by a node.",
                  (({"node": n.name}, float(getattr(n, attr, 0) or 0)) for n in nodes))
        exp.gauge("cdsw_cluster_" + stem, what + " by all ready nodes.",
                  [({}, float(sum(getattr(n, attr, 0) or 0 for n in ready)))])


def render(results: Sequence[CheckResult], orchestrator: Optional[Any] = None) -> str:
    exp = Exposition()
    exp.gauge("cdsw_up", "1 while the CDSW master serves requests.", [({}, 1)])
    exp.gauge("cdsw_info", "Version of the running workbench.", [({"version": __version__}, 1)])
    health_metrics(exp, results)
    orchestrator_metrics(exp, orchestrator)
    return exp.render()
