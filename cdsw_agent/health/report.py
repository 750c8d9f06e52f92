"""How results are shown: one line per check, a JSON document, one exit code."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, Dict, List, Sequence

from .. import __version__
from .registry import CheckResult, Status, worst


def line(result: CheckResult) -> str:
    """``OK       database: at revision 0001 (newest)``"""
    return "%-8s %s: %s" % (result.status.name, result.name, result.message)


def exit_code(results: Sequence[CheckResult]) -> int:
    """The worst status's Nagios / Ambari exit code (0 when nothing ran)."""
    return int(worst(r.status for r in results))


def document(results: Sequence[CheckResult], role: str = "") -> Dict[str, Any]:
    overall = worst(r.status for r in results)
    counts: Dict[str, int] = {s.name: 0 for s in Status}
    for r in results:
        counts[r.status.name] += 1
    checks: List[Dict[str, Any]] = [r.as_dict() for r in results]
    return {"status": overall.name, "code": int(overall), "version": __version__,
            "host": socket.gethostname(), "role": role or None,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": counts, "checks": checks}
