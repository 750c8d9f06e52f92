"""POST /model's hot path (server/routes/model_endpoint.ModelFrontDoor): a model call is answered
from the router's memory through a real replica process, without touching the database; calls
it leaves to the FastAPI route (a bad body) still get the API's answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Tuple

import httpx
import pytest

from cdsw_agent.engine.model_server import TOKEN_HEADER
from cdsw_agent.models.keys import digest
from cdsw_agent.models.router import Route
from cdsw_agent.models.service import service_for
from cdsw_agent.server.request_metrics import STATS_KEY

from ..conftest import Api

MODEL_PY = "def predict(args):\n    return {\"echo\": args}\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Tuple[str, str]]:
    """One replica process serving MODEL_PY on loopback: (url, token)."""
    (tmp_path / "model.py").write_text(MODEL_PY)
    port, token = _free_port(), os.urandom(16).hex()
    proc = subprocess.Popen([sys.executable, "-m", "cdsw_agent.engine.model_server"],
                            cwd=str(tmp_path), env=dict(
                                os.environ, CDSW_MODEL_FILE="model.py",
                                CDSW_MODEL_FUNCTION="predict", CDSW_MODEL_PORT=str(port),
                                CDSW_MODEL_TOKEN=token))
    url = "http://127.0.0.1:%d/" % port
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "health", headers={TOKEN_HEADER: token}).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the replica did not start"
        time.sleep(0.05)
    yield url, token
    proc.terminate()
    proc.wait(timeout=10)


def _no_database(*_: Any, **__: Any) -> Any:
    raise AssertionError("the model hot path opened a database session")


def test_model_call_answered_without_the_database(api: Api, replica: Tuple[str, str]) -> None:
    state = api.client.app.state.server
    service = service_for(state)  # publishes from the (empty) database once, as at start-up
    url, token = replica
    key = "mkey-" + os.urandom(8).hex()
    service.router.publish({7: [Route(replica_id=70, url=url, token=token)]}, {digest(key): 7})
    stats = state.extras[STATS_KEY]
    counted = stats.count("model", "2xx"), stats.count("model", "4xx")
    real = state.db.sessionmaker
    state.db.sessionmaker = _no_database
    try:
        for path in ("/model", "/api/altus-ds-1/models/call-model"):
            r = api.client.post(path, json={"accessKey": key, "request": {"x": [1, "é"]}})
            assert r.status_code == 200, r.text
            assert r.json() == {"success": True, "response": {"echo": {"x": [1, "é"]}}}
            assert r.headers["content-type"] == "application/json"
            # the middlewares' work it skips: the security headers, the count for /metrics
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
        r = api.client.post("/model", content=b'{"accessKey": "nope", "request": 1}')
        assert r.status_code == 401 and r.json()["error"] == "unknown or revoked accessKey"
        r = api.client.post("/model", json={"request": 1})
        assert r.status_code == 401 and r.json()["error"].startswith("missing accessKey")
    finally:
        state.db.sessionmaker = real
    assert (stats.count("model", "2xx"), stats.count("model", "4xx")) == \
        (counted[0] + 2, counted[1] + 2)
    assert service.router.summary(70)["requests"] == 2
    assert service.router.summary(70)["successes"] == 2
    # a body the front door does not accept goes to the FastAPI route: the API's 422 shape
    r = api.client.post("/model", content=b"not json")
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request"), r.text
    r = api.client.post("/model", json={"accessKey": key, "request": 1, "extra": True})
    assert r.status_code == 422, r.text
