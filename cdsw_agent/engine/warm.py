"""A warm engine: an engine container started ahead of any session, which becomes one user's
session only when the master claims it (sessions/warm_pool.py).

`python -I -m cdsw_agent.engine` with CDSW_WARM_CLAIM_SHA256 set runs this instead of starting
jupyter_server at once. Before the claim the process holds nothing of anyone: the container was
started with no project folder, no home, no credential and none of a user's or project's
variables (the pool's spec has only this digest and the port). It imports jupyter_server and its
extensions (0.4 s of an engine start), then waits for one claim on the engine port:

    POST /cdsw-warm/claim   Authorization: token SECRET   {"env": {...}, "workdir": "/home/cdsw"}

SECRET is the pool's secret for this one engine (the container carries only its SHA-256). By the
time the master sends the claim it has mounted the session's folders into the container
(orchestrators/mount_inject.py). The process then takes the session's environment as the
container would have had it from the start (the image's variables, then the session's), moves
into its working directory (the injected project folder), and goes on as a cold engine does:
the session's kernel starts first, then jupyter_server, in this same process, so the imports
are not paid again. A wrong secret or a malformed claim is refused and the engine goes on
waiting; after the claim the listener is closed and jupyter_server answers the port with the
session's token only. An engine is claimed once: it ends with its session.
"""

from __future__ import annotations

import hmac
import importlib
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Dict, List, Mapping

from .entrypoint import DEFAULT_PORT, server_command, token_digest

WARM_VARIABLE = "CDSW_WARM_CLAIM_SHA256"
CLAIM_PATH = "/cdsw-warm/claim"
READY_PATH = "/cdsw-warm/ready"
MAX_CLAIM_BYTES = 1 << 20
# what a session's jupyter_server loads at start, imported while the engine waits
PRELOAD = ("cdsw_agent.engine.server", "cdsw_agent.engine.early_kernel",
           "cdsw_agent.engine.terminal", "cdsw_agent.engine.spark_ui",
           "jupyter_server_terminals", "jupyterlab", "jupyter_lsp", "notebook_shim",
           "jupyter_server.services.contents.largefilemanager",
           "jupyter_server.services.kernels.websocket", "terminado",
           "jupyter_server_proxy", "jupyter_server_proxy.handlers")


class Claim(Exception):
    """Raised by the handler to leave the wait with the session's environment."""

    def __init__(self, env: Dict[str, str], workdir: str):
        super().__init__("claimed")
        self.env, self.workdir = env, workdir


def parse_claim(body: bytes) -> Claim:
    """The claim's environment and working directory; ValueError saying what is wrong."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError("the claim is not JSON")
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) and k
                                            and "=" not in k and "\0" not in k + v
                                            for k, v in env.items()):
        raise ValueError("env must be an object of strings")
    workdir = data.get("workdir", "")
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise ValueError("workdir must be an absolute path")
    return Claim(env, workdir)


def _handler(digest: str) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base's name
            pass

        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def _authorised(self) -> bool:
            scheme, _, given = self.headers.get("Authorization", "").partition(" ")
            return scheme.lower() == "token" and bool(given) and hmac.compare_digest(
                token_digest(given.strip()).encode(), digest.encode())

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return self._answer(403, "forbidden")
            if self.path != READY_PATH:
                return self._answer(404, "not found")
            self._answer(200, "warm")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return self._answer(403, "forbidden")
            if self.path != CLAIM_PATH:
                return self._answer(404, "not found")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, "Content-Length is required")
            if not 0 < length <= MAX_CLAIM_BYTES:
                return self._answer(413, "the claim must be 1 byte to 1 MiB")
            try:
                claim = parse_claim(self.rfile.read(length))
            except ValueError as e:
                return self._answer(400, str(e))
            self._answer(200, "claimed")
            raise claim

    return Handler


class _Listener(HTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], Claim):
            raise  # out of handle_request, to wait_for_claim
        super().handle_error(request, client_address)


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - not in this image (e.g. no JupyterLab)
            pass


def wait_for_claim(port: int, digest: str) -> Claim:
    """Answers on the engine port until a valid claim arrives; the listener is closed on
    return, so jupyter_server can take the port."""
    listener = _Listener(("0.0.0.0", port), _handler(digest))
    try:
        while True:
            try:
                listener.handle_request()
            except Claim as claim:
                return claim
    finally:
        listener.server_close()


def session_environment(base: Mapping[str, str], claimed: Mapping[str, str]) -> Dict[str, str]:
    """What a cold engine's container would have had: the image's variables (the warm
    container's, less the pool's own), then the session's."""
    env = {k: v for k, v in base.items() if k != WARM_VARIABLE}
    env.update(claimed)
    return env


def become_session(claim: Claim, base: Mapping[str, str]) -> None:
    """Runs the claimed session's engine in this process (does not return)."""
    env = session_environment(base, claim.env)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(claim.workdir)  # the injected project folder, not the image's empty one
    argv, server_env = server_command(env)
    os.environ.clear()
    os.environ.update(server_env)
    from . import server

    sys.argv = argv[3:]
    server.main(argv[4:])
    sys.exit(0)


def main() -> None:
    source = os.environ
    digest = source.pop(WARM_VARIABLE, "")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        sys.stderr.write("cdsw engine: %s is not a SHA-256 in hex\n" % WARM_VARIABLE)
        sys.exit(2)
    from .server import make_undumpable

    make_undumpable()  # the claim carries the session's variables: same rule as the server
    try:
        port = int(source.get("CDSW_ENGINE_PORT", str(DEFAULT_PORT)))
    except ValueError:
        port = DEFAULT_PORT
    base = dict(source)
    preload()
    claim = wait_for_claim(port, digest)
    become_session(claim, base)


def is_warm(env: Mapping[str, str]) -> bool:
    return bool(env.get(WARM_VARIABLE))


__all__: List[str] = ["WARM_VARIABLE", "CLAIM_PATH", "READY_PATH", "main", "is_warm",
                      "parse_claim", "session_environment"]
