"""POST /model: where callers reach deployed models, in CDSW's request shape.

    POST /model  {"accessKey": "...", "request": {...}}
    POST /api/altus-ds-1/models/call-model   the same, at CDSW's legacy address
    200 {"success": true, "response": ...}
    401 {"success": false, "error": ...}   missing, unknown or revoked access key
    500 {"success": false, "error": ...}   the function raised (the replica keeps serving)
    503 {"success": false, "error": ...}   no ready replica

The access key is the permission (rule "model.call" in permissions.py): no sign-in. Served from
the router's memory (keys, replicas, pooled connections), without a database query. The body is
read as JSON whatever its content type says: `curl -d '{...}'` sends none (or a form type), and
CDSW accepted it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

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


async def read_call(request: Request) -> ModelCall:
    """The body as a ModelCall, parsed as JSON whatever the content type; 422 otherwise."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise RequestValidationError([{"loc": ("body",), "msg": "the body is not JSON: send "
                                       "{\"accessKey\": \"...\", \"request\": {...}}",
                                       "type": "json_invalid"}])
    try:
        return ModelCall.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors())


_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ModelCall.model_json_schema()}}}}


@router.post("/model", openapi_extra=_BODY)
@router.post("/api/altus-ds-1/models/call-model", openapi_extra=_BODY)
async def call_model(request: Request, access: Access = require("model.call"),
                     state: ServerState = Depends(get_state)) -> JSONResponse:
    body = await read_call(request)
    if not body.accessKey:
        return refused("missing accessKey: send {\"accessKey\": \"...\", \"request\": {...}}")
    service = service_for(state)
    model_id = service.router.model_for(body.accessKey)
    if model_id is None:
        return refused("unknown or revoked accessKey")
    status, answer = await service.router.call(model_id, body.request)
    return JSONResponse(answer, status_code=status)
