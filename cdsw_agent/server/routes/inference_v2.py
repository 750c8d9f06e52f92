"""The Open Inference Protocol (v2) for deployed models, beside CDSW's POST /model:

    GET  /v2/health/live              {"live": true}
    GET  /v2/health/ready             {"ready": true}  (the master and its database answer)
    GET  /v2/models/{name}            the model's metadata
    GET  /v2/models/{name}/ready      200 {"ready": true} with a ready replica, else 503
    POST /v2/models/{name}/infer      {"inputs": [...]} -> {"model_name", "outputs": [...]}

{name} is the model's name (or its number); the model's access key is the credential, as
`Authorization: Bearer KEY` or `?accessKey=KEY`, and it must be that model's. The function
gets {input name: data} (engine/inference_v2.py says how shapes map). Errors answer
{"error": message} (the protocol's shape, with our "detail").
"""

from __future__ import annotations

import json
from typing import Any, Optional, Tuple

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from ...engine import inference_v2 as v2
from ...models.service import service_for
from ...store.models_models import Model, ModelDeployment, ModelReplica
from ..deps import get_state
from ..permissions import Access, api_router, require_model_key
from ..state import ServerState

router = api_router(prefix="/v2", tags=["models"])
KEY_HINT = "send the model's access key as 'Authorization: Bearer KEY' or ?accessKey=KEY"


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "detail": None}, status_code=status)


def _key(request: Request, access_key: str) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else access_key


def _model(state: ServerState, request: Request, name: str, access_key: str
           ) -> Tuple[Optional[Model], Optional[JSONResponse]]:
    """The model this key calls when it is the one named, else the refusal to answer."""
    key = _key(request, access_key)
    if not key:
        return None, _refuse(401, "missing access key: " + KEY_HINT)
    model_id = service_for(state).router.model_for(key)
    if model_id is None:
        return None, _refuse(401, "unknown or revoked access key")
    with state.db.session() as s:
        model = s.get(Model, model_id)
        if model is None or name not in (model.name, str(model.id)):
            return None, _refuse(404, "model %s not found for this access key" % name)
        s.expunge(model)
    return model, None


def _ready_build(state: ServerState, model_id: int) -> Optional[int]:
    """The build a ready replica of the model serves, or None when none is ready."""
    with state.db.session() as s:
        return s.scalar(select(ModelReplica.build_id).join(ModelDeployment).where(
            ModelDeployment.model_id == model_id, ModelReplica.state == "ready").limit(1))


@router.get("/health/live")
def live(access: Access = require_model_key("public")) -> Any:
    return {"live": True}


@router.get("/health/ready")
def ready(state: ServerState = Depends(get_state),
          access: Access = require_model_key("public")) -> Any:
    try:
        with state.db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception:
        return _refuse(503, "the master's database does not answer")
    return {"ready": True}


@router.get("/models/{name}")
def model_metadata(name: str, request: Request, accessKey: str = Query(""),
                   state: ServerState = Depends(get_state),
                   access: Access = require_model_key("model.call")) -> Any:
    model, refusal = _model(state, request, name, accessKey)
    if refusal is not None:
        return refusal
    assert model is not None
    build = _ready_build(state, model.id)
    return v2.metadata(model.name, [str(build)] if build else [], model.example_input)


@router.get("/models/{name}/ready")
def model_ready(name: str, request: Request, accessKey: str = Query(""),
                state: ServerState = Depends(get_state),
                access: Access = require_model_key("model.call")) -> Any:
    model, refusal = _model(state, request, name, accessKey)
    if refusal is not None:
        return refusal
    assert model is not None
    if _ready_build(state, model.id) is None:
        return _refuse(503, "model %s has no ready replica" % model.name)
    return {"ready": True}


@router.post("/models/{name}/infer", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"]}}}}})
async def infer(name: str, request: Request, accessKey: str = Query(""),
                state: ServerState = Depends(get_state),
                access: Access = require_model_key("model.call")) -> Any:
    from starlette.concurrency import run_in_threadpool

    model, refusal = await run_in_threadpool(_model, state, request, name, accessKey)
    if refusal is not None:
        return refusal
    assert model is not None
    try:
        body = json.loads(await request.body() or b"null")
        argument = v2.function_input(body)
    except (ValueError, UnicodeDecodeError) as e:
        return _refuse(400, str(e) if isinstance(e, v2.InferenceError)
                       else "the body is not JSON")
    status, answer = await service_for(state).router.call(model.id, argument)
    if status != 200 or not isinstance(answer, dict) or answer.get("success") is not True:
        error = answer.get("error") if isinstance(answer, dict) else None
        return _refuse(status if status >= 400 else 502, str(error or "the model failed"))
    return v2.response(model.name, None, body, answer.get("response"))
