"""Code completion in the workbench console: jupyter's complete_request on the session's kernel
(Python, R, Scala: whatever the kernel completes), answered as matches and the range they replace.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Dict, List

import anyio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from .engine_client import Endpoint, EngineUnavailable, unreachable

# the whole answer, connection included: a Tab key cannot wait for a busy kernel (it answers
# after the running cell) or a slow first jedi call; no matches then, and the user presses again
COMPLETE_TIMEOUT = 8.0
MAX_MATCHES = 200


def complete_request(code: str, cursor_pos: int) -> Dict[str, Any]:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "complete_request",
                   "username": "cdsw", "session": uuid.uuid4().hex, "version": "5.3",
                   "date": dt.datetime.now(dt.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "cursor_pos": cursor_pos},
    }


def answer(content: Dict[str, Any], code: str, cursor_pos: int) -> Dict[str, Any]:
    """The kernel's complete_reply as the API's answer."""
    matches: List[str] = [str(m) for m in (content.get("matches") or [])][:MAX_MATCHES]
    start = content.get("cursor_start", cursor_pos)
    end = content.get("cursor_end", cursor_pos)
    start = start if isinstance(start, int) and 0 <= start <= len(code) else cursor_pos
    end = end if isinstance(end, int) and start <= end <= len(code) else cursor_pos
    return {"matches": matches if content.get("status", "ok") == "ok" else [],
            "cursor_start": start, "cursor_end": end}


async def complete(ep: Endpoint, kernel_id: str, code: str, cursor_pos: int) -> Dict[str, Any]:
    """{"matches", "cursor_start", "cursor_end"}; no matches when the kernel is busy too long."""
    request = complete_request(code, cursor_pos)
    msg_id = request["header"]["msg_id"]
    url = ep.ws + "api/kernels/%s/channels" % kernel_id
    try:
        with anyio.move_on_after(COMPLETE_TIMEOUT):
            async with ws_connect(url, additional_headers=ep.headers, max_size=16 << 20,
                                  open_timeout=COMPLETE_TIMEOUT, proxy=None) as ws:
                await ws.send(json.dumps(request))
                while True:
                    msg = json.loads(await ws.recv())
                    if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                        continue
                    msg_type = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
                    if msg.get("channel") == "shell" and msg_type == "complete_reply":
                        return answer(msg.get("content") or {}, code, cursor_pos)
    except (OSError, WebSocketException) as e:
        raise EngineUnavailable(unreachable(e, ep, "kernel channel"))
    return {"matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos}
