"""An HTTP worker's client of the controller (server/controller.py): one keep-alive HTTP
connection per thread over the controller's Unix socket.

A call's own errors (a session that cannot start, a run already ended...) are raised again
here as the same exception, with the same status and message, so the routes answer exactly as
they do in a single-process master. A controller that does not answer is ApiError 503.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Optional

from .controller import ERRORS
from .errors import ApiError

CALL_TIMEOUT_SECONDS = 600.0  # a session start may wait for an image on a node
REPORT_TIMEOUT_SECONDS = 10.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("controller", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ControllerClient:
    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self._auth = "Bearer " + token
        self._local = threading.local()

    def _connection(self, timeout: float) -> _UnixConnection:
        conn: Optional[_UnixConnection] = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _UnixConnection(self.path, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def call(self, name: str, timeout: float = CALL_TIMEOUT_SECONDS, **kwargs: Any) -> Any:
        body = json.dumps(kwargs).encode()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        for attempt in (1, 2):  # a kept connection the controller closed meanwhile: once more
            conn = self._connection(timeout)
            try:
                conn.request("POST", "/call/" + name, body, headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._local.conn = None
                if attempt == 2 or isinstance(e, (socket.timeout, ConnectionRefusedError,
                                                  FileNotFoundError)):
                    raise ApiError(503, "the master's controller does not answer (%s); try "
                                        "again in a moment" % (e.strerror if isinstance(e, OSError)
                                                               and e.strerror else e))
        try:
            answer = json.loads(data)
        except ValueError:
            raise ApiError(503, "the master's controller answered HTTP %d without JSON"
                           % response.status)
        error = answer.get("error")
        if error is not None:
            make = ERRORS.get(error.get("kind", ""))
            if make is not None:
                raise make(int(error.get("status", 500)), error.get("message", ""))
            raise ApiError(503 if response.status != 500 else 500,
                           "controller: %s" % error.get("message", "failed"))
        return answer.get("result")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
