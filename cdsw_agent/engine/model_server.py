"""A model replica: `python -m cdsw_agent.engine.model_server`, inside the model's build.

It imports the model's file, finds its function and serves it over HTTP to the master's model
router, which checks the caller's access key and balances over the replicas:

- ``POST /``  body: the caller's ``request`` (JSON)  ->  ``{"success": true, "response": ...}``;
  a function that raises answers 500 ``{"success": false, "error": "Type: message"}`` (the
  traceback goes to the replica's log) and the replica keeps serving;
- ``GET /health``  ->  200 ``{"status": "ready"}``, or 503 ``{"status": "failed", "error": ...}``
  when the file cannot be imported or has no such function: the replica stays up in that state
  (a crash loop would say nothing more) and the master shows the message.

Every request must carry the replica token the master gave it (X-CDSW-Model-Token), so the
published port does not bypass the access key. Environment: CDSW_MODEL_FILE (relative to the
working directory, the project snapshot), CDSW_MODEL_FUNCTION, CDSW_MODEL_PORT,
CDSW_MODEL_TOKEN, optionally CDSW_MODEL_PACKAGES (a directory put first on sys.path: where a
local build installed requirements.txt), optionally CDSW_MODEL_THREADS (calls that run at
once, 32 by default).

Where its Python has uvicorn (the master's virtualenv, which the local backend runs replicas
with) it serves on uvicorn, with httptools and uvloop when they are there: a C HTTP parser, a
listen backlog of 1024, keep-alive, and the function called in a pool of threads, so several
calls run at once without a thread per connection. Elsewhere (an engine image without uvicorn)
it falls back to the standard library's threading server with the same answers.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import os
import signal
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

TOKEN_HEADER = "X-CDSW-Model-Token"
MAX_BODY = 64 * 1024 * 1024
BACKLOG = 1024  # a burst of new connections waits instead of being reset (the master's 502s)
DEFAULT_THREADS = 32
# longer than the master's pool keeps an idle connection (router.py, 30 s): the master closes
# first, so it never sends a call on a connection the replica is closing
KEEP_ALIVE_SECONDS = 75
STOP_GRACE_SECONDS = 5  # calls still running at SIGTERM get this long
TOO_LARGE = "request larger than 64 MiB"


def load_function(path: str, name: str) -> Tuple[Optional[Callable[[Any], Any]], str]:
    """The function, or None and one line saying why it cannot be served."""
    if not os.path.isfile(path):
        return None, "model file %s not found in the build" % path
    folder = os.path.dirname(os.path.abspath(path))
    for entry in (folder, os.getcwd()):  # the file may import its neighbours
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec = importlib.util.spec_from_file_location("cdsw_model", path)
    if spec is None or spec.loader is None:
        return None, "cannot import %s: not a Python file" % path
    module = importlib.util.module_from_spec(spec)
    sys.modules["cdsw_model"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit and friends too: the replica reports, not dies
        traceback.print_exc()
        return None, "importing %s failed: %s: %s" % (path, type(e).__name__, str(e).strip())
    function = getattr(module, name, None)
    if function is None:
        return None, "%s has no function %s" % (path, name)
    if not callable(function):
        return None, "%s.%s is not a function" % (path, name)
    return function, ""


class Replica:
    def __init__(self, function: Optional[Callable[[Any], Any]], error: str, token: str):
        self.function, self.error, self.token = function, error, token

    def call(self, raw: bytes) -> Tuple[int, dict]:
        if self.function is None:
            return 503, {"success": False, "error": self.error}
        try:
            request = json.loads(raw or b"null")
        except ValueError as e:
            return 400, {"success": False, "error": "the request is not JSON: %s" % e}
        try:
            result = self.function(request)
            return 200, {"success": True, "response": result}
        except Exception as e:
            traceback.print_exc()
            return 500, {"success": False, "error": "%s: %s" % (type(e).__name__, e)}

    def allowed(self, sent: str) -> bool:
        return bool(self.token) and hmac.compare_digest(sent.encode(), self.token.encode())

    def answer(self, raw: bytes) -> Tuple[int, bytes]:
        """`call`'s answer encoded (in the calling thread: a large answer is encoded there)."""
        return encode(*self.call(raw))

    def health(self) -> Tuple[int, bytes]:
        if self.function is None:
            return encode(503, {"status": "failed", "error": self.error})
        return encode(200, {"status": "ready"})


def encode(status: int, body: dict) -> Tuple[int, bytes]:
    try:
        return status, json.dumps(body).encode()
    except (TypeError, ValueError) as e:
        return 500, json.dumps({"success": False, "error": "the function's answer is not "
                                "JSON: %s" % e}).encode()


FORBIDDEN = encode(403, {"success": False, "error": "missing or wrong replica token"})
NOT_FOUND = encode(404, {"success": False, "error": "not found"})


def handler_for(replica: Replica) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the master pools its connections
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
        server_version = "cdsw-model"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the replica's log

        def _answer(self, status: int, body: dict) -> None:
            self._send(*encode(status, body))

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            if replica.allowed(self.headers.get(TOKEN_HEADER, "")):
                return True
            self._send(*FORBIDDEN)
            return False

        def do_GET(self) -> None:
            if not self._allowed():
                return
            if self.path.split("?")[0] != "/health":
                self._send(*NOT_FOUND)
            else:
                self._send(*replica.health())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._answer(413, {"success": False, "error": TOO_LARGE})
                return
            raw = self.rfile.read(length) if length else b""
            if not self._allowed():
                return
            self._send(*replica.answer(raw))

    return Handler


class ReplicaServer(ThreadingHTTPServer):
    """A thread per connection (several calls at once), keep-alive, and a listen backlog that
    holds a burst of new connections: the default of 5 reset them (the master's 502s)."""

    request_queue_size = BACKLOG
    daemon_threads = True


_TOKEN_KEY = TOKEN_HEADER.lower().encode()
_JSON = [(b"content-type", b"application/json")]


def asgi_app(replica: Replica, pool: ThreadPoolExecutor) -> Callable[..., Any]:
    """The replica as an ASGI application: the same answers as `handler_for`'s, the function
    called in `pool` (the event loop keeps taking calls meanwhile)."""

    async def send_answer(send: Any, status: int, data: bytes, close: bool = False) -> None:
        headers = _JSON + [(b"content-length", str(len(data)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        token, length = "", 0
        for k, v in scope["headers"]:
            if k == _TOKEN_KEY:
                token = v.decode("latin-1")
            elif k == b"content-length" and v.isdigit():
                length = int(v)
        method = scope["method"]
        if method == "GET":
            if not replica.allowed(token):
                await send_answer(send, *FORBIDDEN)
            elif scope["path"] != "/health":
                await send_answer(send, *NOT_FOUND)
            else:
                await send_answer(send, *replica.health())
            return
        if method != "POST":
            await send_answer(send, *encode(501, {"success": False,
                                                  "error": "unsupported method %s" % method}))
            return
        if length > MAX_BODY:
            await send_answer(send, *encode(413, {"success": False, "error": TOO_LARGE}),
                              close=True)
            return
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the caller went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:  # a chunked body without a length
                await send_answer(send, *encode(413, {"success": False, "error": TOO_LARGE}),
                                  close=True)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        if not replica.allowed(token):
            await send_answer(send, *FORBIDDEN)
            return
        loop = asyncio.get_running_loop()
        await send_answer(send, *await loop.run_in_executor(pool, replica.answer,
                                                            b"".join(chunks)))

    return app


def _uvicorn() -> Any:
    """uvicorn, or None when this Python does not have it (imported before the model's own
    packages go on sys.path, so that they cannot shadow the server)."""
    try:
        import uvicorn
    except ImportError:
        return None
    return uvicorn


def _serve_uvicorn(uvicorn: Any, replica: Replica, port: int) -> None:
    """Serves on uvicorn until SIGTERM."""
    threads = int(os.environ.get("CDSW_MODEL_THREADS") or DEFAULT_THREADS)
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="model-call")
    config = uvicorn.Config(asgi_app(replica, pool), host="0.0.0.0", port=port,
                            backlog=BACKLOG, lifespan="off", access_log=False,
                            log_config=None, log_level="warning", server_header=False,
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            timeout_graceful_shutdown=STOP_GRACE_SECONDS)
    try:
        uvicorn.Server(config).run()  # SIGTERM: finish the calls in flight, then stop
    finally:
        pool.shutdown(wait=False)


def _serve_stdlib(replica: Replica, port: int) -> None:
    server = ReplicaServer(("0.0.0.0", port), handler_for(replica))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main() -> int:
    path = os.environ.get("CDSW_MODEL_FILE", "")
    name = os.environ.get("CDSW_MODEL_FUNCTION", "")
    port = int(os.environ.get("CDSW_MODEL_PORT", "8080"))
    token = os.environ.pop("CDSW_MODEL_TOKEN", "")  # the function has no business with it
    uvicorn = _uvicorn()
    packages = os.environ.get("CDSW_MODEL_PACKAGES", "")
    if packages and os.path.isdir(packages):
        sys.path.insert(0, packages)
    function, error = load_function(path, name)
    if error:
        print("model replica cannot serve: %s" % error, file=sys.stderr, flush=True)
    replica = Replica(function, error, token)

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print("model replica serving %s:%s on port %d%s" % (path, name, port,
                                                         "" if function else " (failed)"),
          flush=True)
    try:
        if uvicorn is not None:
            _serve_uvicorn(uvicorn, replica, port)
        else:
            _serve_stdlib(replica, port)
    except KeyboardInterrupt:
        pass
    except SystemExit as e:  # SIGTERM (0), or uvicorn could not listen (1, said on stderr)
        if e.code not in (0, None):
            return 1
    print("model replica stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
