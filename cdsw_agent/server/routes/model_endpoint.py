"""POST /model: where callers reach deployed models, in CDSW's request shape.

    POST /model  {"accessKey": "...", "request": {...}}
    200 {"success": true, "response": ...}
    401 {"success": false, "error": ...}   missing, unknown or revoked access key
    500 {"success": false, "error": ...}   the function raised (the replica keeps serving)
    503 {"success": false, "error": ...}   no ready replica

The access key is the permission (rule "model.call" in permissions.py): no sign-in. Served from
the router's memory (keys, replicas, pooled connections), without a database query.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from ...models.service import service_for
from ..deps import get_state
from ..permissions import Access, require
from ..schemas import Strict
from ..state import ServerState

router = APIRouter(tags=["models"])


class ModelCall(Strict):
    accessKey: str = Field(default="", max_length=256)
    request: Any = None


def refused(message: str) -> JSONResponse:
    # also in the API's error shape, so generic clients read it like any other refusal
    return JSONResponse({"success": False, "error": message, "detail": None}, status_code=401)


@router.post("/model")
async def call_model(body: ModelCall, access: Access = require("model.call"),
                     state: ServerState = Depends(get_state)) -> JSONResponse:
    if not body.accessKey:
        return refused("missing accessKey: send {\"accessKey\": \"...\", \"request\": {...}}")
    service = service_for(state)
    model_id = service.router.model_for(body.accessKey)
    if model_id is None:
        return refused("unknown or revoked accessKey")
    status, answer = await service.router.call(model_id, body.request)
    return JSONResponse(answer, status_code=status)
