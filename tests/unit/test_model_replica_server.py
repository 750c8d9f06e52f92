"""The model replica server (engine/model_server.py) answers the same on uvicorn (where its
Python has it: the master's virtualenv, the local backend) and on the standard library's
threading server (an engine image without uvicorn), and runs several calls at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Tuple

import httpx
import pytest

from cdsw_agent.engine import model_server
from cdsw_agent.engine.model_server import TOKEN_HEADER

MODEL_PY = '''
import threading
both = threading.Barrier(2, timeout=20)

def predict(args):
    return {"echo": args}

def fails(args):
    raise ValueError("no such thing")

def not_json(args):
    return {1, 2}

def meet(args):
    both.wait()  # returns only when a second call is inside the function at the same time
    return args
'''
TOKEN = "t0ken"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "health", headers={TOKEN_HEADER: TOKEN}, timeout=2)
            return
        except httpx.HTTPError:
            pass
        assert alive() and time.monotonic() < deadline, "the replica did not start"
        time.sleep(0.05)


@pytest.fixture(params=["uvicorn", "stdlib"])
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A function name -> the URL of a replica serving it on this server kind."""
    (tmp_path / "model.py").write_text(MODEL_PY)
    stops: list = []

    def start(function: str) -> str:
        port = _free_port()
        url = "http://127.0.0.1:%d/" % port
        if request.param == "uvicorn":
            proc = subprocess.Popen(
                [sys.executable, "-m", "cdsw_agent.engine.model_server"], cwd=str(tmp_path),
                env=dict(os.environ, CDSW_MODEL_FILE="model.py", CDSW_MODEL_FUNCTION=function,
                         CDSW_MODEL_PORT=str(port), CDSW_MODEL_TOKEN=TOKEN),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            stops.append(lambda: (proc.send_signal(signal.SIGTERM), proc.wait(timeout=15)))
            _wait_ready(url, lambda: proc.poll() is None)
        else:
            fn, error = model_server.load_function(str(tmp_path / "model.py"), function)
            server = model_server.ReplicaServer(
                ("127.0.0.1", port),
                model_server.handler_for(model_server.Replica(fn, error, TOKEN)))
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            stops.append(lambda: (server.shutdown(), server.server_close()))
            _wait_ready(url, thread.is_alive)
        return url

    yield start
    for stop in stops:
        stop()


def _post(url: str, body: bytes, token: str = TOKEN, **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={TOKEN_HEADER: token, **headers}, timeout=30)


def test_answers(serve: Callable[[str], str]) -> None:
    url = serve("predict")
    r = httpx.get(url + "health", headers={TOKEN_HEADER: TOKEN})
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    assert httpx.get(url + "health").status_code == 403
    assert httpx.get(url + "health", headers={TOKEN_HEADER: "wrong"}).status_code == 403
    r = httpx.get(url + "elsewhere", headers={TOKEN_HEADER: TOKEN})
    assert (r.status_code, r.json()["error"]) == (404, "not found")
    r = _post(url, b'{"a": [1, 2]}')
    assert (r.status_code, r.json()) == (200, {"success": True, "response": {"echo": {"a": [1, 2]}}})
    assert r.headers["content-type"] == "application/json"
    r = _post(url, b'{"a": 1}', token="wrong")
    assert (r.status_code, r.json()["error"]) == (403, "missing or wrong replica token")
    r = _post(url, b"not json")
    assert r.status_code == 400 and r.json()["error"].startswith("the request is not JSON: ")
    r = _post(url, b"")  # no body: the function gets None
    assert r.json() == {"success": True, "response": {"echo": None}}
    status, body = _announce_too_much(url)
    assert status == 413 and b'"error": "request larger than 64 MiB"' in body, body


def _announce_too_much(url: str) -> Tuple[int, bytes]:
    """Headers announcing a body over the limit, and no body: the answer comes anyway."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("POST / HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Length: %d\r\n\r\n"
                   % (TOKEN_HEADER, TOKEN, model_server.MAX_BODY + 1)).encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]


def test_function_errors(serve: Callable[[str], str]) -> None:
    r = _post(serve("fails"), b"1")
    assert (r.status_code, r.json()) == (500, {"success": False,
                                               "error": "ValueError: no such thing"})
    r = _post(serve("not_json"), b"1")
    assert r.status_code == 500 and r.json()["error"].startswith("the function's answer is "
                                                                 "not JSON: ")
    url = serve("missing")
    r = httpx.get(url + "health", headers={TOKEN_HEADER: TOKEN})
    assert r.status_code == 503 and r.json()["status"] == "failed"
    assert r.json()["error"].endswith("model.py has no function missing"), r.json()
    assert _post(url, b"1").status_code == 503


def test_several_calls_at_once(serve: Callable[[str], str]) -> None:
    """Two calls meet inside the function: neither returns unless both run at the same time."""
    url = serve("meet")
    answers = []

    def call(n: int) -> None:
        answers.append(_post(url, str(n).encode()).json())

    threads = [threading.Thread(target=call, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a["response"] for a in answers) == [1, 2], answers


def test_sigterm_stops_the_uvicorn_replica_cleanly(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(MODEL_PY)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdsw_agent.engine.model_server"], cwd=str(tmp_path),
        env=dict(os.environ, CDSW_MODEL_FILE="model.py", CDSW_MODEL_FUNCTION="predict",
                 CDSW_MODEL_PORT=str(port), CDSW_MODEL_TOKEN=TOKEN),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_ready("http://127.0.0.1:%d/" % port, lambda: proc.poll() is None)
    with socket.create_connection(("127.0.0.1", port)) as s:  # listens with a real backlog
        assert s.getpeername()[1] == port
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "model replica stopped"


def test_a_port_in_use_ends_the_replica_with_an_error(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(MODEL_PY)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "cdsw_agent.engine.model_server"], cwd=str(tmp_path),
            env=dict(os.environ, CDSW_MODEL_FILE="model.py", CDSW_MODEL_FUNCTION="predict",
                     CDSW_MODEL_PORT=str(taken.getsockname()[1]), CDSW_MODEL_TOKEN=TOKEN),
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "address already in use" in proc.stderr, proc.stderr


def test_the_masters_client_keeps_its_connection(serve: Callable[[str], str]) -> None:
    """The master's router calls replicas through models/replica_client.py: calls one after
    another reuse one connection on either server kind, the answers are the replica's own, and
    32 calls at once all get theirs."""
    import asyncio

    from cdsw_agent.models.replica_client import ReplicaClient

    url = serve("predict")

    async def calls() -> None:
        client = ReplicaClient()
        first = None
        for i in range(20):
            status, body = await client.post(url, TOKEN, b'{"n": %d}' % i, 10)
            assert (status, body) == (200, b'{"success": true, "response": {"echo": {"n": %d}}}'
                                      % i)
            pool = client._pools[url]
            first = first or pool.idle[0]
            assert (pool.open, pool.idle) == (1, [first])  # the same connection each time
        answers = await asyncio.gather(*(client.post(url, TOKEN, b"%d" % i, 10)
                                         for i in range(32)))
        assert answers == [(200, b'{"success": true, "response": {"echo": %d}}' % i)
                           for i in range(32)]
        status, body = await client.post(url, "wrong", b"1", 10)
        assert status == 403 and b"missing or wrong replica token" in body
        client.close()

    asyncio.run(calls())
