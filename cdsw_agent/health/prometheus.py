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


# (sample name suffix, labels, value); a gauge's or counter's suffix is ""
Series = Tuple[str, Labels, float]
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Exposition:
    """Collects gauges, counters and histograms and renders them; each metric's HELP and TYPE
    appear once."""

    def __init__(self) -> None:
        self._metrics: Dict[str, Tuple[str, str, List[Series]]] = {}

    def _add(self, name: str, kind: str, help_text: str, series: Iterable[Series]) -> None:
        self._metrics.setdefault(name, (kind, help_text, []))[2].extend(series)

    def gauge(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._add(name, "gauge", help_text, (("", labels, v) for labels, v in samples))

    def counter(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        """`name` ends in _total, as Prometheus' naming rules ask of counters."""
        self._add(name, "counter", help_text, (("", labels, v) for labels, v in samples))

    def histogram(self, name: str, help_text: str,
                  samples: Iterable[Tuple[Labels, Sequence[Tuple[float, float]], float, float]]
                  ) -> None:
        """samples: (labels, [(upper bound, cumulative count)], sum, count); +Inf is added."""
        series: List[Series] = []
        for labels, buckets, total, count in samples:
            for bound, cumulative in buckets:
                series.append(("_bucket", dict(labels, le=_number(bound)), cumulative))
            series.append(("_bucket", dict(labels, le="+Inf"), count))
            series.append(("_sum", labels, total))
            series.append(("_count", labels, count))
        self._add(name, "histogram", help_text, series)

    def names(self) -> List[str]:
        return list(self._metrics)

    def families(self) -> List[Tuple[str, str, List[Series]]]:
        """(name, kind, series) of every metric, in the order they were added."""
        return [(name, kind, list(series)) for name, (kind, _, series) in self._metrics.items()]

    def render(self) -> str:
        out: List[str] = []
        for name, (kind, help_text, series) in self._metrics.items():
            out.append("# HELP %s %s" % (name, help_text.replace("\\", "\\\\").replace("\n", " ")))
            out.append("# TYPE %s %s" % (name, kind))
            for suffix, labels, value in series:
                label_text = ",".join('%s="%s"' % (k, _escape(str(v))) for k, v in labels.items())
                out.append("%s%s%s %s" % (name, suffix, "{%s}" % label_text if label_text else "",
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


def collect(results: Sequence[CheckResult], orchestrator: Optional[Any] = None) -> Exposition:
    exp = Exposition()
    exp.gauge("cdsw_up", "1 while the CDSW master serves requests.", [({}, 1)])
    exp.gauge("cdsw_info", "Version of the running workbench.", [({"version": __version__}, 1)])
    health_metrics(exp, results)
    orchestrator_metrics(exp, orchestrator)
    return exp


def render(results: Sequence[CheckResult], orchestrator: Optional[Any] = None) -> str:
    return collect(results, orchestrator).render()
