"""/healthz: liveness and readiness of the master, for load balancers and the managers."""

from __future__ import annotations

from fastapi import Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ... import __version__
from ...health.host_checks import data_volume_full
from ..deps import get_state
from ..permissions import Access, api_router, require
from ..state import ServerState

router = api_router(tags=["health"])


@router.get("/healthz")
def healthz(access: Access = require("public"), state: ServerState = Depends(get_state)) -> JSONResponse:
    checks = {}
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = state.db.current_revision()
        checks["database"] = "ok" if current == state.db.head_revision() else \
            "schema at %s, expected %s" % (current, state.db.head_revision())
        if checks["database"] == "ok":
            # SQLite's quick_check reads the whole file: its answer is kept a few seconds
            checks["database"] = state.db.integrity_problem() or "ok"
    except Exception as e:  # any failure means not ready; say which
        checks["database"] = "unavailable: %s" % str(e).splitlines()[0][:200]
    checks["storage"] = data_volume_full(state.settings.data_dir) or "ok"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "version": __version__,
                         "checks": checks}, status_code=200 if ok else 503)
