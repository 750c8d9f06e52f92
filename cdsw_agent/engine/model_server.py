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
local build installed requirements.txt). Standard library only: it runs in the engine image.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
import os
import signal
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Tuple

TOKEN_HEADER = "X-CDSW-Model-Token"
MAX_BODY = 64 * 1024 * 1024


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


def handler_for(replica: Replica) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the master pools its connections
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
        server_version = "cdsw-model"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the replica's log

        def _answer(self, status: int, body: dict) -> None:
            try:
                data = json.dumps(body).encode()
            except (TypeError, ValueError) as e:
                status, data = 500, json.dumps({"success": False, "error": "the function's "
                                                "answer is not JSON: %s" % e}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            sent = self.headers.get(TOKEN_HEADER, "")
            if replica.token and hmac.compare_digest(sent.encode(), replica.token.encode()):
                return True
            self._answer(403, {"success": False, "error": "missing or wrong replica token"})
            return False

        def do_GET(self) -> None:
            if not self._allowed():
                return
            if self.path.split("?")[0] != "/health":
                self._answer(404, {"success": False, "error": "not found"})
            elif replica.function is None:
                self._answer(503, {"status": "failed", "error": replica.error})
            else:
                self._answer(200, {"status": "ready"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._answer(413, {"success": False, "error": "request larger than 64 MiB"})
                return
            raw = self.rfile.read(length) if length else b""
            if not self._allowed():
                return
            self._answer(*replica.call(raw))

    return Handler


class ReplicaServer(ThreadingHTTPServer):
    """A thread per connection (several calls at once), keep-alive, and a listen backlog that
    holds a burst of new connections: the default of 5 reset them (the master's 502s)."""

    request_queue_size = 1024
    daemon_threads = True


def main() -> int:
    path = os.environ.get("CDSW_MODEL_FILE", "")
    name = os.environ.get("CDSW_MODEL_FUNCTION", "")
    port = int(os.environ.get("CDSW_MODEL_PORT", "8080"))
    token = os.environ.pop("CDSW_MODEL_TOKEN", "")  # the function has no business with it
    packages = os.environ.get("CDSW_MODEL_PACKAGES", "")
    if packages and os.path.isdir(packages):
        sys.path.insert(0, packages)
    function, error = load_function(path, name)
    if error:
        print("model replica cannot serve: %s" % error, file=sys.stderr, flush=True)
    server = ReplicaServer(("0.0.0.0", port), handler_for(Replica(function, error, token)))

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print("model replica serving %s:%s on port %d%s" % (path, name, port,
                                                         "" if function else " (failed)"),
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    print("model replica stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
