"""The replica server at the edge: `python -m cdsw_agent.engine.model_edge`, a model bundle's
container answering callers itself with no workbench in front (models/bundles.py makes the
bundle). It loads and calls the function exactly as a workbench replica does (model_server.py's
load_function and Replica); only the front differs.

Inside the workbench the master's router checks access keys and speaks both request shapes;
a replica only takes the bare request with its replica token. At the edge the replica does
the router's part, in the same shapes as the master:

    POST /model  (and /api/altus-ds-1/models/call-model)
         {"accessKey": "...", "request": ...}  ->  {"success": true, "response": ...}
    GET  /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready
    POST /v2/models/{name}/infer  {"inputs": [...]}  ->  {"model_name", "outputs": [...]}

The access key is optional: when CDSW_MODEL_ACCESS_KEY is set (at `docker run -e` time, or by
`cdsw models run-bundle --access-key`), every call must carry it (`accessKey` in the body, or
`Authorization: Bearer KEY` / `?accessKey=` for v2); without one the endpoint is open, as the
operator of the edge host chose. The description of the model (its name, file, function and
example input) is the JSON file CDSW_MODEL_EDGE names, which the bundle's image holds;
CDSW_MODEL_PORT (8080 by default) is where it listens.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from . import inference_v2 as v2
from .model_server import MAX_BODY, Replica, ReplicaServer, load_function

CALL_PATHS = ("/model", "/api/altus-ds-1/models/call-model")
Answer = Tuple[int, Dict[str, Any]]


class Edge:
    """What the edge answers for one model: `call` is the replica's function call."""

    def __init__(self, description: Mapping[str, Any], access_key: str, replica: Any):
        self.name = str(description.get("name") or "model")
        self.version = str(description.get("build") or "")
        self.example_input = description.get("example_input")
        self.access_key = access_key
        self.replica = replica

    def apply(self, request: Any) -> Answer:
        """The function called on the request (a JSON value), in CDSW's answer shape."""
        return self.replica.call(json.dumps(request).encode())

    def _key_ok(self, sent: str) -> bool:
        return not self.access_key or hmac.compare_digest(sent.encode(), self.access_key.encode())

    def get(self, path: str, headers: Mapping[str, str]) -> Optional[Answer]:
        route, query = _split(path)
        if route == "/v2/health/live":
            return 200, {"live": True}
        if route == "/v2/health/ready":
            return (200, {"ready": True}) if self.replica.function is not None \
                else (503, {"error": self.replica.error})
        name, rest = _v2_model(route)
        if name is None or rest not in ("", "/ready"):
            return None
        refusal = self._v2_refusal(name, headers, query)
        if refusal:
            return refusal
        if rest == "/ready":
            return (200, {"ready": True}) if self.replica.function is not None \
                else (503, {"error": "model %s cannot serve: %s" % (self.name, self.replica.error)})
        return 200, v2.metadata(self.name, [self.version] if self.version else [],
                                self.example_input)

    def post(self, path: str, headers: Mapping[str, str], raw: bytes) -> Optional[Answer]:
        route, query = _split(path)
        if route in CALL_PATHS:
            return self._cdsw_call(raw)
        name, rest = _v2_model(route)
        if name is None or rest != "/infer":
            return None
        refusal = self._v2_refusal(name, headers, query)
        if refusal:
            return refusal
        try:
            body = json.loads(raw or b"null")
            argument = v2.function_input(body)
        except (ValueError, UnicodeDecodeError) as e:
            return 400, {"error": str(e) if isinstance(e, v2.InferenceError)
                         else "the body is not JSON"}
        status, answer = self.apply(argument)
        if status != 200:
            return status, {"error": answer.get("error") or "the model failed"}
        try:
            return 200, v2.response(self.name, self.version or None, body, answer["response"])
        except (TypeError, ValueError) as e:
            return 500, {"error": "the function's answer is not JSON: %s" % e}

    def _cdsw_call(self, raw: bytes) -> Answer:
        try:
            data = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not set(data) <= {"accessKey", "request"}:
            return 400, {"success": False, "error": "send {\"accessKey\": \"...\", "
                         "\"request\": {...}} as JSON"}
        key = data.get("accessKey") or ""
        if not isinstance(key, str) or not self._key_ok(key):
            return 401, {"success": False, "error": "missing or wrong accessKey" if key
                         else "missing accessKey: this endpoint needs one"}
        return self.apply(data.get("request"))

    def _v2_refusal(self, name: str, headers: Mapping[str, str],
                    query: Dict[str, Any]) -> Optional[Answer]:
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        key = value.strip() if scheme.lower() == "bearer" and value.strip() \
            else (query.get("accessKey") or [""])[0]
        if not self._key_ok(key):
            return 401, {"error": "missing or wrong access key: send it as 'Authorization: "
                         "Bearer KEY' or ?accessKey=KEY"}
        if name != self.name:
            return 404, {"error": "model %s not found: this bundle serves %s" % (name, self.name)}
        return None


def _split(path: str) -> Tuple[str, Dict[str, Any]]:
    parts = urlsplit(path)
    return parts.path.rstrip("/") or "/", parse_qs(parts.query)


def _v2_model(route: str) -> Tuple[Optional[str], str]:
    """("name", rest) for /v2/models/{name}{rest}, else (None, "")."""
    prefix = "/v2/models/"
    if not route.startswith(prefix):
        return None, ""
    name, slash, rest = route[len(prefix):].partition("/")
    return (unquote(name), slash + rest) if name else (None, "")


def encode(status: int, body: Dict[str, Any]) -> Tuple[int, bytes]:
    try:
        return status, json.dumps(body).encode()
    except (TypeError, ValueError) as e:
        return 500, json.dumps({"success": False, "error": "the function's answer is not "
                                "JSON: %s" % e}).encode()


def handler_for(edge: Edge) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "cdsw-model-edge"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, answer: Optional[Answer]) -> None:
            status, data = encode(*(answer or (404, {"error": "not found"})))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(edge.get(self.path, self.headers))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._send((413, {"success": False, "error": "request larger than 64 MiB"}))
                return
            self._send(edge.post(self.path, self.headers,
                                 self.rfile.read(length) if length else b""))

    return Handler


def main() -> int:
    described_by = os.environ.get("CDSW_MODEL_EDGE", "/opt/cdsw/edge-model.json")
    try:
        with open(described_by, encoding="utf-8") as f:
            description = json.load(f)
        assert isinstance(description, dict)
    except (OSError, ValueError, AssertionError) as e:
        print("model bundle cannot start: its description %s is unreadable (%s)"
              % (described_by, type(e).__name__), file=sys.stderr, flush=True)
        return 2
    port = int(os.environ.get("CDSW_MODEL_PORT") or 8080)
    access_key = os.environ.pop("CDSW_MODEL_ACCESS_KEY", "")  # not the function's business
    path, name = str(description.get("file") or ""), str(description.get("function") or "")
    function, error = load_function(path, name)
    if error:
        print("model cannot serve: %s" % error, file=sys.stderr, flush=True)
    edge = Edge(description, access_key, Replica(function, error, ""))
    server = ReplicaServer(("0.0.0.0", port), handler_for(edge))

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print("model %s (%s:%s) serving on port %d, access key %s%s" % (
        edge.name, path, name, port, "required" if access_key else "not required",
        "" if function else " (failed: %s)" % error), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
