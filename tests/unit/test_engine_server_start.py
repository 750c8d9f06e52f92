"""How the engine's jupyter_server starts quickly (engine/server.py): without jsonschema's
rfc3987_syntax format checker, whose import builds a Lark grammar (0.9 s of every engine start),
with jupyter_server's event schemas still validated; and with the session's kernel started before
the server listens, so the first answer already lists it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cdsw_agent.engine.entrypoint import DIGEST_VARIABLE, PRESTART_VARIABLE, token_digest

CHECK = """
import sys
import cdsw_agent.engine.server
assert sys.modules.get("rfc3987_syntax") is None, "rfc3987_syntax was imported"
import io, logging
import jsonschema
from jupyter_events import EventLogger
logger = EventLogger(handlers=[logging.StreamHandler(io.StringIO())])  # emit needs a handler
logger.register_event_schema({
    "$id": "https://example.org/cdsw/test", "version": "1", "title": "t",
    "type": "object", "properties": {"where": {"type": "string", "format": "uri"}}})
logger.emit(schema_id="https://example.org/cdsw/test", data={"where": "https://example.org/"})
try:
    logger.emit(schema_id="https://example.org/cdsw/test", data={"where": 3})
except jsonschema.ValidationError:
    print("validated")
"""


def test_engine_server_skips_the_slow_format_checker_and_events_still_validate() -> None:
    # a process of its own: the module's effect is on sys.modules at import time
    out = subprocess.run([sys.executable, "-I", "-c", CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "validated"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_kernel_is_listed_from_the_servers_first_answer(tmp_path: Path) -> None:
    token, port = "t-" + os.urandom(8).hex(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CDSW_"))}
    env.update({DIGEST_VARIABLE: token_digest(token), PRESTART_VARIABLE: "python3",
                "CDSW_ENGINE_PORT": str(port), "CDSW_ENGINE_ROOT_DIR": str(tmp_path),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path),
                "CDSW_ENGINE_ALLOW_ROOT": "1" if os.geteuid() == 0 else "0"})
    proc = subprocess.Popen([sys.executable, "-I", "-m", "cdsw_agent.engine"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = "http://127.0.0.1:%d/api/kernels" % port
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = httpx.get(url, headers={"Authorization": "token " + token}, timeout=5)
                break
            except httpx.TransportError:  # not listening yet
                assert time.monotonic() < deadline, "the engine did not listen"
                time.sleep(0.02)
        assert r.status_code == 200, r.text
        assert [k["name"] for k in r.json()] == ["python3"], r.json()  # from the first answer
    finally:
        proc.terminate()
        proc.wait(30)
