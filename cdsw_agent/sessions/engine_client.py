"""Talking to a session's jupyter_server: readiness, kernels, terminals, and executing code
over the kernel's WebSocket channel with its outputs turned into plain, ordered events.

The engine token goes in the Authorization header only (never in a URL, so it never reaches
an access log)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Optional

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

# the MIME types a console renders; others are dropped from the event (text/plain stays)
RICH_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png",
              "image/jpeg", "image/svg+xml", "application/json",
              "application/vnd.plotly.v1+json")  # drawn by the workbench's plotly.js
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
log = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """The engine did not answer as expected; str() is one line."""


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    base_path: str  # jupyter_server's base_url, e.g. /api/v1/sessions/7/engine/
    token: str

    def __repr__(self) -> str:  # never print the token
        return "Endpoint(%s:%d%s)" % (self.address, self.port, self.base_path)

    @property
    def http(self) -> str:
        host = "[%s]" % self.address if ":" in self.address else self.address
        return "http://%s:%d%s" % (host, self.port, self.base_path)

    @property
    def ws(self) -> str:
        return "ws" + self.http[4:]

    @property
    def headers(self) -> Dict[str, str]:
        return {"Authorization": "token " + self.token}


def unreachable(e: Exception, ep: Endpoint, what: str, quiet: bool = False) -> str:
    """What an HTTP client's failure to reach the engine means for the user; the client's own
    words go to the log (one line) unless `quiet`. `what` names the request in the log."""
    if not quiet:
        log.warning("engine at %s:%d (%s): %s: %s", ep.address, ep.port, what,
                    type(e).__name__, (str(e).strip().splitlines() or [""])[0])
    if isinstance(e, httpx.TimeoutException):
        return "the engine did not answer in time; try again, or restart the session"
    if isinstance(e, (httpx.ConnectError, ConnectionRefusedError)):
        return "the engine is no longer running"
    return "the connection to the engine broke; try again"


def _call(ep: Endpoint, method: str, path: str, json_body: Any = None,
          timeout: Optional[httpx.Timeout] = None, quiet: bool = False) -> httpx.Response:
    try:
        with httpx.Client(timeout=timeout or HTTP_TIMEOUT, trust_env=False) as client:
            return client.request(method, ep.http + path, json=json_body, headers=ep.headers)
    except httpx.HTTPError as e:
        raise EngineUnavailable(unreachable(e, ep, "%s %s" % (method, path), quiet))


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.reason_phrase)
    except ValueError:
        return r.reason_phrase


def ready(ep: Endpoint) -> bool:
    try:
        return _call(ep, "GET", "api/status", timeout=httpx.Timeout(3.0),
                     quiet=True).status_code == 200
    except EngineUnavailable:
        return False


def started_kernel(ep: Endpoint, kernelspec: str) -> Optional[str]:
    """The id of a live kernel of this kernelspec the engine started itself, if any."""
    r = _call(ep, "GET", "api/kernels")
    if r.status_code != 200:
        return None
    for kernel in r.json():
        if kernel.get("name") == kernelspec and kernel.get("execution_state") != "dead":
            return str(kernel["id"])
    return None


def create_kernel(ep: Endpoint, kernelspec: str) -> str:
    r = _call(ep, "POST", "api/kernels", {"name": kernelspec}, timeout=httpx.Timeout(60.0))
    if r.status_code != 201:
        raise EngineUnavailable("the engine cannot start kernel %s: %s" % (kernelspec, _error(r)))
    return str(r.json()["id"])


def kernel_alive(ep: Endpoint, kernel_id: str) -> bool:
    return _call(ep, "GET", "api/kernels/" + kernel_id).status_code == 200


def interrupt(ep: Endpoint, kernel_id: str) -> None:
    r = _call(ep, "POST", "api/kernels/%s/interrupt" % kernel_id)
    if r.status_code != 204:
        raise EngineUnavailable("the engine did not interrupt the kernel: %s" % _error(r))


def restart(ep: Endpoint, kernel_id: str) -> None:
    r = _call(ep, "POST", "api/kernels/%s/restart" % kernel_id, timeout=httpx.Timeout(60.0))
    if r.status_code != 200:
        raise EngineUnavailable("the engine did not restart the kernel: %s" % _error(r))


def create_terminal(ep: Endpoint) -> str:
    r = _call(ep, "POST", "api/terminals")
    if r.status_code != 200:
        raise EngineUnavailable("the engine cannot open a terminal: %s" % _error(r))
    return str(r.json()["name"])


def _message(code: str) -> Dict[str, Any]:
    msg_id = uuid.uuid4().hex
    return {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "cdsw",
                   "session": uuid.uuid4().hex, "version": "5.3",
                   "date": dt.datetime.now(dt.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }


def output_event(msg_type: str, content: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A kernel iopub message as a console event, or None for messages a console ignores."""
    if msg_type == "stream":
        return {"type": "stream", "name": content.get("name", "stdout"),
                "text": content.get("text", "")}
    if msg_type in ("display_data", "execute_result", "update_display_data"):
        data = {k: v for k, v in (content.get("data") or {}).items() if k in RICH_TYPES}
        event: Dict[str, Any] = {"type": msg_type, "data": data}
        if msg_type == "execute_result":
            event["execution_count"] = content.get("execution_count")
        return event
    if msg_type == "error":
        return {"type": "error", "ename": content.get("ename", ""),
                "evalue": content.get("evalue", ""), "traceback": content.get("traceback", [])}
    if msg_type == "clear_output":
        return {"type": "clear_output"}
    return None


async def execute(ep: Endpoint, kernel_id: str, code: str) -> AsyncIterator[Dict[str, Any]]:
    """Runs code; yields its outputs in the kernel's order, then one
    {"type": "result", "status": ok|error|aborted, "execution_count": N}."""
    request = _message(code)
    msg_id = request["header"]["msg_id"]
    url = ep.ws + "api/kernels/%s/channels" % kernel_id
    reply: Optional[Dict[str, Any]] = None
    idle = False
    try:
        async with ws_connect(url, additional_headers=ep.headers, max_size=64 << 20,
                                      open_timeout=10, proxy=None) as ws:
            await ws.send(json.dumps(request))
            while reply is None or not idle:
                msg = json.loads(await ws.recv())
                if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                    continue  # another client's execution on the same kernel
                msg_type = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
                content = msg.get("content") or {}
                if msg.get("channel") == "shell" and msg_type == "execute_reply":
                    reply = content
                elif msg_type == "status":
                    idle = content.get("execution_state") == "idle"
                else:
                    event = output_event(str(msg_type), content)
                    if event is not None:
                        yield event
    except (OSError, WebSocketException) as e:
        text = unreachable(e, ep, "kernel channel")
        raise EngineUnavailable(text if isinstance(e, ConnectionRefusedError)
                                else "lost the connection to the kernel; run the code again")
    yield {"type": "result", "status": reply.get("status", "error"),
           "execution_count": reply.get("execution_count")}
