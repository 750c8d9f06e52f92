"""A tiny HTTP stand-in for a cluster manager's REST API: routes (method, path regex) to Python
handlers and records every request (method, path, query, headers, JSON body) for assertions."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

Handler = Callable[["Request"], Tuple[int, Any]]


class Request:
    def __init__(self, method: str, path: str, query: Dict[str, List[str]],
                 headers: Dict[str, str], body: Any, match: "re.Match[str]"):
        self.method, self.path, self.query, self.headers, self.body = (method, path, query,
                                                                       headers, body)
        self.match = match

    def __repr__(self) -> str:
        return "%s %s" % (self.method, self.path)


class StandIn:
    def __init__(self) -> None:
        self.routes: List[Tuple[str, "re.Pattern[str]", Handler]] = []
        self.requests: List[Request] = []
        self.delay: Dict[str, float] = {}
        standin = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                for method, pattern, handler in standin.routes:
                    m = pattern.fullmatch(parts.path)
                    if method == self.command and m:
                        req = Request(self.command, parts.path, parse_qs(parts.query),
                                      dict(self.headers), body, m)
                        standin.requests.append(req)
                        time.sleep(standin.delay.get(parts.path, 0))
                        status, payload = handler(req)
                        break
                else:
                    status, payload = 404, {"message": "no route %s %s" % (self.command,
                                                                           parts.path)}
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode() \
                    if payload is not None else b""
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain" if isinstance(payload, str)
                                     else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern), handler))

    def calls(self, method: Optional[str] = None, path: Optional[str] = None) -> List[Request]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (path is None or r.path == path)]

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
