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

The hot path is `ModelFrontDoor`, which the application (server/app.MasterApp) hands a call to
before any middleware or FastAPI's router: a call that carries no cookie and no Authorization
header (every model client: curl, SDKs) and a well formed body is answered there, with no
middleware, dependency injection, database session or thread pool.
Anything else (a browser's cookie, whose CSRF rule applies; an Authorization header, which must
be valid; a body that does not validate, which gets the API's 422) goes on to the FastAPI route
below, which declares the permission and documents the call in OpenAPI. Both answer through
`answer_call`, so they cannot disagree.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field, ValidationError

from ...models.service import SERVICE_KEY, service_for
from ...sessions import engine_origin
from ..deps import get_state
from ..request_metrics import HttpStats
from ..permissions import Access, api_router, require
from ..schemas import Strict
from ..state import ServerState

log = logging.getLogger(__name__)
router = api_router(tags=["models"])
MISSING_KEY = "missing accessKey: send {\"accessKey\": \"...\", \"request\": {...}}"
UNKNOWN_KEY = "unknown or revoked accessKey"
PATHS = frozenset(("/model", "/api/altus-ds-1/models/call-model"))
MAX_KEY_LENGTH = 256


class ModelCall(Strict):
    accessKey: str = Field(default="", max_length=MAX_KEY_LENGTH)
    request: Any = None


def _refusal(message: str) -> Dict[str, Any]:
    return {"success": False, "error": message, "detail": None}


async def answer_call(state: ServerState, key: str, payload: bytes) -> Tuple[int, Any]:
    """(status, answer as bytes or a dict) for a call with this key and this JSON request."""
    if not key:
        return 401, _refusal(MISSING_KEY)
    service = state.extras.get(SERVICE_KEY) or service_for(state)
    model_id = service.router.model_for(key)
    if model_id is None:
        return 401, _refusal(UNKNOWN_KEY)
    return await service.router.call_raw(model_id, payload)


def _dumps(answer: Any) -> bytes:
    if isinstance(answer, bytes):
        return answer
    return json.dumps(answer, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


class ModelFrontDoor:
    """Answers POST /model (and the legacy address) before anything else of the app runs (see
    MasterApp in server/app.py, and this module's docstring for what it leaves to the route).
    It adds the security headers every answer carries and counts the call for /metrics itself,
    as the middlewares it skips would."""

    def __init__(self, state: ServerState, headers: List[Tuple[bytes, bytes]],
                 stats: HttpStats) -> None:
        self.state, self.stats = state, stats
        self.headers = [(b"content-type", b"application/json")] + list(headers)

    def takes(self, scope: Dict[str, Any]) -> bool:
        """A call for the front door: POST to a model path on the workbench's origin (an
        engine origin answers engine paths only: server/engine_access.py refuses the rest),
        with no cookie and no Authorization header (whose rules the route applies)."""
        return scope["type"] == "http" and scope["method"] == "POST" \
            and scope["path"] in PATHS \
            and not any(k in (b"cookie", b"authorization") for k, _ in scope["headers"]) \
            and not engine_origin.classify(scope, self.state.settings).engine

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any,
                       app: Callable[..., Awaitable[None]]) -> None:
        """Answers the call; `app` (the whole application) gets what it cannot answer."""
        started = time.perf_counter()
        chunks: List[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the caller went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        call = _parse(raw)
        if call is None:  # let the route give the API's 422 (it reads the same bytes)
            replayed = [False]

            async def replay() -> Dict[str, Any]:
                if replayed[0]:
                    return await receive()
                replayed[0] = True
                return {"type": "http.request", "body": raw, "more_body": False}

            await app(scope, replay, send)
            return
        key, payload = call
        try:
            status, answer = await answer_call(self.state, key, payload)
        except Exception:  # noqa: BLE001 - a bug here must not become a bare 500 page
            log.exception("model call failed in the master")
            status, answer = 500, _refusal("internal error in the workbench; see its log")
        data = _dumps(answer)
        await send({"type": "http.response.start", "status": status,
                    "headers": self.headers + [(b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
        self.stats.observe("model", status, time.perf_counter() - started)


def _parse(raw: bytes) -> Optional[Tuple[str, bytes]]:
    """(access key, the request re-encoded as JSON) when the body is a valid call, else None."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not set(data) <= {"accessKey", "request"}:
        return None
    key = data.get("accessKey", "")
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    return key, json.dumps(data.get("request")).encode()


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
                     state: ServerState = Depends(get_state)) -> Response:
    body = await read_call(request)
    status, answer = await answer_call(state, body.accessKey, json.dumps(body.request).encode())
    return Response(_dumps(answer), status_code=status, media_type="application/json")
