"""/metrics: Prometheus exposition of health checks, nodes, workloads and capacity, and the
workbench's own state (sessions, jobs, models, storage, database, request latency:
server/workbench_metrics.py, server/request_metrics.py).

Anonymous scrapes are allowed from loopback only (a Prometheus agent on the master host, or an
SSH tunnel); from anywhere else the caller must be a site administrator (an API key works).
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import PlainTextResponse

from ...health import prometheus
from .. import workbench_metrics
from ..deps import get_state
from ..permissions import Access, api_router, require
from ..state import ServerState

router = api_router(tags=["health"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, access: Access = require("metrics.read"),
            state: ServerState = Depends(get_state)) -> PlainTextResponse:
    # an HTTP worker asks the controller, which holds every worker's counts
    text = state.controller.call("metrics.text") if state.controller is not None \
        else workbench_metrics.exposition(state).render()
    return PlainTextResponse(text, media_type=prometheus.CONTENT_TYPE)
