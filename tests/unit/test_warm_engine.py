"""A warm engine (engine/warm.py), as a plain process: it holds nothing of a user until claimed,
only its pool's secret claims it, and once claimed its session is the one a cold engine with the
same variables would have been: same kernel environment and working directory, the kernel taken
over by the server, the session's token and no other."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import httpx
import pytest

from cdsw_agent.engine.entrypoint import DIGEST_VARIABLE, PRESTART_VARIABLE, token_digest
from cdsw_agent.engine.warm import (CLAIM_PATH, READY_PATH, WARM_VARIABLE, parse_claim,
                                    session_environment)
from cdsw_agent.sessions.engine_client import Endpoint

from .test_engine_server_start import FACTS, _free_port, engine, run

pytestmark = pytest.mark.timeout(180)


def base_env() -> Dict[str, str]:
    """What the image gives every container (here: the test's own, less Jupyter's and ours)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CDSW_"))}


def session_env(tmp_path: Path, token: str, user: str) -> Dict[str, str]:
    return {DIGEST_VARIABLE: token_digest(token), PRESTART_VARIABLE: "python3",
            "CDSW_ENGINE_ROOT_DIR": str(tmp_path / "project"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path / "home"),
            "CDSW_ENGINE_ALLOW_ROOT": "1" if os.geteuid() == 0 else "0",
            "HADOOP_USER_NAME": user, "PROJECT_SECRET": "only-" + user}


@contextlib.contextmanager
def warm_engine(tmp_path: Path) -> Iterator[Tuple[subprocess.Popen, str, int]]:
    secret, port = "w-" + os.urandom(8).hex(), _free_port()
    idle = tmp_path / "image-workdir"  # the image's empty /home/cdsw
    idle.mkdir(exist_ok=True)
    env = dict(base_env(), **{WARM_VARIABLE: token_digest(secret), "CDSW_ENGINE_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-I", "-m", "cdsw_agent.engine"], env=env, cwd=idle,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = httpx.get("http://127.0.0.1:%d%s" % (port, READY_PATH),
                              headers={"Authorization": "token " + secret}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the warm engine did not listen"
                time.sleep(0.02)
        assert r.status_code == 200 and r.text == "warm\n", r.text
        yield proc, secret, port
    finally:
        proc.terminate()
        proc.wait(30)


def claim(port: int, secret: str, body: object) -> httpx.Response:
    return httpx.post("http://127.0.0.1:%d%s" % (port, CLAIM_PATH), json=body,
                      headers={"Authorization": "token " + secret}, timeout=10)


def wait_listening(ep: Endpoint) -> list:
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(ep.http + "api/kernels", headers=ep.headers, timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the claimed engine did not serve"
        time.sleep(0.02)


def test_only_the_pools_secret_claims_and_bad_claims_change_nothing(tmp_path: Path) -> None:
    with warm_engine(tmp_path) as (proc, secret, port):
        url = "http://127.0.0.1:%d" % port
        assert httpx.get(url + READY_PATH, timeout=5).status_code == 403
        assert httpx.get(url + READY_PATH, headers={"Authorization": "token nope"},
                         timeout=5).status_code == 403
        assert claim(port, "not-the-secret", {"env": {}, "workdir": "/"}).status_code == 403
        assert claim(port, secret, {"env": {"A": 1}, "workdir": "/"}).status_code == 400
        assert claim(port, secret, {"env": {}, "workdir": "relative"}).status_code == 400
        r = httpx.post(url + CLAIM_PATH, content=b"{not json",
                       headers={"Authorization": "token " + secret}, timeout=5)
        assert r.status_code == 400 and "JSON" in r.text
        # still waiting, still nobody's
        assert httpx.get(url + READY_PATH, headers={"Authorization": "token " + secret},
                         timeout=5).text == "warm\n"
        assert proc.poll() is None


def test_a_claimed_engine_is_the_session_a_cold_engine_would_have_been(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "home").mkdir()
    token = "t-" + os.urandom(8).hex()
    wanted = session_env(tmp_path, token, "alice")
    # the cold engine is given its own token by engine(): the rest is the same
    cold_env = {k: v for k, v in wanted.items() if k != DIGEST_VARIABLE}
    with engine(project, **cold_env) as (cold_proc, cold_ep, kernels):
        cold = json.loads(run(cold_ep, kernels[0]["id"], FACTS))
    with warm_engine(tmp_path) as (proc, secret, port):
        r = claim(port, secret, {"env": wanted, "workdir": str(project)})
        assert r.status_code == 200 and r.text == "claimed\n"
        ep = Endpoint("127.0.0.1", port, "/", token)
        kernels = wait_listening(ep)
        assert [k["name"] for k in kernels] == ["python3"], kernels  # the early kernel, taken
        pid, ppid, argv, env, cwd, _ = json.loads(run(ep, kernels[0]["id"], FACTS))
        assert ppid == proc.pid and os.path.basename(argv[-1]).startswith("kernel-early-")
        assert cwd == cold[4] == str(project)
        differs = {"CDSW_ENGINE_PORT", "JPY_PARENT_PID"}  # each engine's own port and server
        assert env["JPY_PARENT_PID"] == str(proc.pid)
        assert {k: v for k, v in env.items() if k not in differs} == \
            {k: v for k, v in cold[3].items() if k not in differs}
        assert env["HADOOP_USER_NAME"] == "alice" and WARM_VARIABLE not in env
        assert DIGEST_VARIABLE not in env
        # the port is jupyter_server's now: the pool's secret opens nothing, the session's
        # token does
        assert claim(port, secret, {"env": {}, "workdir": "/"}).status_code in (403, 404)
        assert httpx.get(ep.http + "api/kernels", headers={"Authorization": "token " + secret},
                         timeout=5).status_code == 403


def test_the_claim_replaces_the_pool_variable_and_keeps_the_images() -> None:
    env = session_environment({"PATH": "/img/bin", WARM_VARIABLE: "x", "LANG": "C.UTF-8"},
                              {"PATH": "/session/bin", "HADOOP_USER_NAME": "bob"})
    assert env == {"PATH": "/session/bin", "LANG": "C.UTF-8", "HADOOP_USER_NAME": "bob"}
    with pytest.raises(ValueError, match="env"):
        parse_claim(b'{"env": {"A=B": "c"}, "workdir": "/"}')
    with pytest.raises(ValueError, match="env"):
        parse_claim(b'{"env": {"A": "c\\u0000"}, "workdir": "/"}')
