"""The router's half of a session: stream HTTP and WebSocket traffic to the engine's
jupyter_server. The caller's own credentials (cookies, API key, CSRF header) never reach the
engine; the master adds the engine token instead. Nothing is buffered: bodies are streamed."""

from __future__ import annotations

import contextlib
import json
from typing import Callable, Dict, Iterable, Optional, Tuple

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import engine_client
from .engine_client import Endpoint

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
# the caller's credentials for the master, and what would make jupyter_server refuse the call
REQUEST_DROP = HOP_BY_HOP | {"cookie", "authorization", "x-csrf-token", "origin", "referer"}
RESPONSE_DROP = HOP_BY_HOP | {"set-cookie"}  # engine cookies would be scoped to our domain
PROXY_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=10.0)


def _forward(headers: Iterable[Tuple[str, str]], drop: set) -> Dict[str, str]:
    return {k: v for k, v in headers if k.lower() not in drop}


async def http(request: Request, ep: Endpoint, path: str, on_traffic: Callable[[], None],
               body: Optional[bytes] = None) -> Response:
    """Passes the call on; `body` is the request's body when the caller already read it."""
    url = ep.http + path + ("?" + request.url.query if request.url.query else "")
    headers = _forward(request.headers.items(), REQUEST_DROP)
    headers.update(ep.headers)
    client = httpx.AsyncClient(timeout=PROXY_TIMEOUT, trust_env=False)
    has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE")
    content = (body if body is not None else request.stream()) if has_body else None
    upstream_request = client.build_request(request.method, url, headers=headers,
                                            content=content)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as e:
        await client.aclose()
        return Response(json.dumps({"error": engine_client.unreachable(e, ep, "proxy %s" % path),
                                    "detail": None}),
                        status_code=502, media_type="application/json")
    on_traffic()

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                             headers=_forward(upstream.headers.multi_items(), RESPONSE_DROP),
                             background=BackgroundTask(close))


async def websocket(client_ws: WebSocket, ep: Endpoint, path: str,
                    on_traffic: Callable[[], None]) -> None:
    """Bridge the caller's WebSocket to the engine's, both ways, until either side closes."""
    query = client_ws.url.query
    url = ep.ws + path + ("?" + query if query else "")
    offered = list(client_ws.scope.get("subprotocols") or [])
    try:
        upstream_cm = ws_connect(url, additional_headers=ep.headers, proxy=None,
                                 subprotocols=offered or None, max_size=None, compression=None,
                                 open_timeout=10)
        upstream = await upstream_cm.__aenter__()
    except (OSError, InvalidHandshake, TimeoutError) as e:
        code = e.response.status_code if isinstance(e, InvalidStatus) else 0
        await client_ws.close(code=1011 if code != 404 else 1008,
                              reason="the engine refused the connection (%s)"
                                     % (code or type(e).__name__))
        return
    try:
        await client_ws.accept(subprotocol=upstream.subprotocol)
        async with anyio.create_task_group() as tg:
            async def down() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in upstream:
                        on_traffic()
                        if isinstance(message, bytes):
                            await client_ws.send_bytes(message)
                        else:
                            await client_ws.send_text(message)
                tg.cancel_scope.cancel()

            async def up() -> None:
                with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
                    while True:
                        message = await client_ws.receive()
                        if message["type"] == "websocket.disconnect":
                            break
                        on_traffic()
                        if message.get("bytes") is not None:
                            await upstream.send(message["bytes"])
                        elif message.get("text") is not None:
                            await upstream.send(message["text"])
                tg.cancel_scope.cancel()

            tg.start_soon(down)
            tg.start_soon(up)
    finally:
        await upstream_cm.__aexit__(None, None, None)
        with contextlib.suppress(Exception):
            await client_ws.close()

