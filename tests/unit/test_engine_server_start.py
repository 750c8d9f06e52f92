"""The engine's jupyter_server module starts without jsonschema's rfc3987_syntax format checker,
whose import builds a Lark grammar (0.9 s of every engine start, see engine/server.py), and
jupyter_server's event schemas still validate without it."""

from __future__ import annotations

import subprocess
import sys

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
