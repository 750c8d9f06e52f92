"""/metrics: Prometheus exposition of health checks, nodes, workloads and capacity, and the
workbench's own state (sessions, jobs, models, storage, database, request latency:
server/workbench_metrics.py, server/request_metrics.py).

Anonymous scrapes are allowed from loopback only (a Prometheus agent on the master host, or an
SSH tunnel); from anywhere else the caller must be a site administrator (an API key works).
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Tuple

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from ...health import REGISTRY, CheckResult, prometheus
from .. import workbench_metrics
from ..deps import get_state
from ..permissions import Access, require
from ..state import ServerState

router = APIRouter(tags=["health"])

CACHE_SECONDS = 10.0  # scrapes closer together than this reuse the last health run
# these would make the master call itself; /metrics being answered says the same
SELF_CHECKS = ("master_api", "clock_skew")
_CACHE_KEY = "metrics.health"
_lock = threading.Lock()


def _health(state: ServerState) -> List[CheckResult]:
    with _lock:
        cached: Optional[Tuple[float, List[CheckResult]]] = state.extras.get(_CACHE_KEY)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        names = [c.name for c in REGISTRY.select(role="master") if c.name not in SELF_CHECKS]
        results = REGISTRY.run(state.settings, names=names)
        state.extras[_CACHE_KEY] = (time.monotonic(), results)
        return results


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, access: Access = require("metrics.read"),
            state: ServerState = Depends(get_state)) -> PlainTextResponse:
    exp = prometheus.collect(_health(state), state.extras.get("orchestrator"))
    workbench_metrics.collect(exp, state)
    return PlainTextResponse(exp.render(), media_type=prometheus.CONTENT_TYPE)
