"""`cdsw status` through click's CliRunner: with a fake orchestrator injected (every way of not
being ready), and with the real local orchestrator, a migrated SQLite database and a master
answering /healthz on loopback."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from click.testing import CliRunner

import cdsw_agent.orchestrators as orchestrators
from cdsw_agent.cli import status as status_cli
from cdsw_agent.cli.main import cli
from cdsw_agent.health import CheckResult, Status
from cdsw_agent.orchestrators import (FAILED, RUNNING, Node, OrchestratorError, WorkloadNotFound,
                                      WorkloadRef, WorkloadSpec, WorkloadStatus)
from cdsw_agent.orchestrators.local import LocalOrchestrator
from cdsw_agent.settings import load_settings
from cdsw_agent.store.db import Database

GIB = 1024 ** 3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def runner() -> CliRunner:
    if "status" not in cli.commands:  # until the lead registers it in main.py
        cli.add_command(status_cli.command)
    return CliRunner()


def properties(tmp_path: Path, **values: Any) -> str:
    settings = {"data_dir": str(tmp_path / "data"), "http_port": closed_port(),
                "docker_host": "tcp://127.0.0.1:%d" % closed_port(), "krb5_conf": ""}
    settings.update(values)
    path = tmp_path / "cdsw.properties"
    path.write_text("".join("cdsw.%s=%s\n" % (k.replace("_", "."), v) for k, v in settings.items()))
    return str(path)


def status(runner: CliRunner, props: str, *args: str):
    return runner.invoke(cli, ["--properties", props, "status", *args])


# --- a fake orchestrator -----------------------------------------------------------------------

STARTED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


class FakeOrchestrator:
    name = "fake"

    def __init__(self, nodes: List[Node], workloads: Dict[str, Optional[WorkloadStatus]],
                 fail: str = ""):
        self._nodes, self._workloads, self.fail, self.closed = nodes, workloads, fail, False

    def nodes(self) -> List[Node]:
        if self.fail:
            raise OrchestratorError(self.fail)
        return self._nodes

    def list(self, labels=None) -> List[WorkloadRef]:
        return [WorkloadRef(i, i.rsplit("-", 1)[0]) for i in self._workloads]

    def status(self, workload_id: str) -> WorkloadStatus:
        st = self._workloads[workload_id]
        if st is None:
            raise WorkloadNotFound("no workload %s" % workload_id)
        return st

    def close(self) -> None:
        self.closed = True


def two_nodes() -> List[Node]:
    return [Node("gw1", "10.0.0.1", "ready", 4.0, 8 * GIB, 1.5, 2 * GIB, role="manager"),
            Node("gw2", "10.0.0.2", "down", 4.0, 8 * GIB)]


def workloads() -> Dict[str, Optional[WorkloadStatus]]:
    return {"session-a1": WorkloadStatus(RUNNING, node="gw1", started_at=STARTED),
            "job-b2": WorkloadStatus(RUNNING, node="gw1"),
            "job-c3": WorkloadStatus(FAILED, 1, "exit code 1", node="gw1"),
            "model-d4": None}  # removed while we looked


@pytest.fixture
def fake(monkeypatch):
    """Installs a fake orchestrator, roles and health; returns the knobs."""
    state: Dict[str, Any] = {"orch": FakeOrchestrator(two_nodes(), workloads()), "ctor_error": None,
                             "health": [CheckResult("clock_skew", Status.WARNING, "off by 6 s")],
                             "health_error": None}

    def get_orchestrator(settings, **options):
        state["options"] = options
        if state["ctor_error"]:
            raise state["ctor_error"]
        return state["orch"]

    def health_problems(settings):
        if state["health_error"]:
            raise state["health_error"]
        return state["health"]

    def broken(settings):
        raise RuntimeError("Docker SDK exploded\nwith a long story")

    import cdsw_agent.roles.docker as docker_role
    import cdsw_agent.roles.master as master_role
    import cdsw_agent.roles.worker as worker_role

    monkeypatch.setattr(orchestrators, "get_orchestrator", get_orchestrator)
    monkeypatch.setattr(status_cli, "health_problems", health_problems)
    monkeypatch.setattr(master_role, "status", lambda settings: True)
    monkeypatch.setattr(docker_role, "status", lambda settings: False)
    monkeypatch.setattr(worker_role, "status", broken)
    return state


def test_ready_shows_nodes_roles_workloads_and_health(tmp_path, runner, fake):
    r = status(runner, properties(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "Orchestrator: swarm"
    assert "Nodes: 1 of 2 ready" in lines
    gw1 = next(line for line in lines if line.strip().startswith("gw1"))
    assert gw1.split() == ["gw1", "10.0.0.1", "ready", "manager", "1.5/4.0", "2.0/8.0"]
    assert next(line for line in lines if line.strip().startswith("gw2")).split()[2] == "down"
    assert "  docker  not running" in lines and "  master  running" in lines
    assert "  worker  unknown: Docker SDK exploded" in lines  # one line, no traceback
    assert "Workloads: 1 failed, 2 running, 1 unknown" in lines
    running = [line.split() for line in lines if line.startswith(("  session ", "  job "))]
    assert running == [["session", "session-a1", "gw1", "2026-01-02T03:04:05+00:00"],
                       ["job", "job-b2", "gw1", "-"]]
    assert "  WARNING  clock_skew: off by 6 s" in lines
    assert lines[-1] == "CDSW is ready: 1 node ready, 2 workloads running"
    assert fake["orch"].closed and fake["options"] == {"timeout": status_cli.ORCHESTRATOR_TIMEOUT}


def test_json_document(tmp_path, runner, fake):
    r = status(runner, properties(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ready"] is True and doc["reason"] is None
    assert doc["summary"] == "CDSW is ready: 1 node ready, 2 workloads running"
    assert [(n["name"], n["ready"]) for n in doc["nodes"]] == [("gw1", True), ("gw2", False)]
    assert doc["nodes"][0]["memory_allocated"] == 2 * GIB
    assert doc["workloads"]["counts"] == {"running": 2, "failed": 1, "unknown": 1}
    assert [w["id"] for w in doc["workloads"]["running"]] == ["session-a1", "job-b2"]
    assert doc["roles"] == {"docker": "not running", "master": "running",
                            "worker": "unknown: Docker SDK exploded"}
    assert doc["health"]["problems"][0]["name"] == "clock_skew"
    assert doc["orchestrator"]["name"] == "swarm" and doc["orchestrator"]["error"] is None


def drained() -> List[Node]:
    return [Node("gw1", "10.0.0.1", "ready", 4.0, GIB, availability="drain"),
            Node("gw2", "10.0.0.2", "down", 4.0, GIB)]


@pytest.mark.parametrize("setup,reason", [
    (dict(ctor_error=OrchestratorError("Cannot connect to Docker\nmore detail")),
     "cannot reach the swarm orchestrator at tcp://127.0.0.1:{port}: Cannot connect to Docker"),
    (dict(orch=FakeOrchestrator(two_nodes(), {}, fail="swarm API timed out")),
     "cannot reach the swarm orchestrator at tcp://127.0.0.1:{port}: timed out"),
    (dict(orch=FakeOrchestrator([], {})), "the swarm orchestrator has no nodes"),
    (dict(orch=FakeOrchestrator(drained(), {})), "no node is ready (gw1 drain, gw2 down)"),
    (dict(health=[CheckResult("swarm_nodes", Status.WARNING, "1 node down"),
                  CheckResult("database", Status.CRITICAL, "at revision 0001, run cdsw db upgrade"),
                  CheckResult("storage", Status.CRITICAL, "disk full")]),
     "database: at revision 0001, run cdsw db upgrade"),
    (dict(health_error=RuntimeError("registry broke")),
     "health checks could not run: registry broke"),
])
def test_not_ready_says_why_in_one_line(tmp_path, runner, fake, setup, reason):
    fake.update(setup)
    port = closed_port()
    props = properties(tmp_path, docker_host="tcp://127.0.0.1:%d" % port)
    r = status(runner, props)
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output and "more detail" not in r.output
    assert r.output.splitlines()[-1] == "CDSW is NOT ready: " + reason.format(port=port)
    doc = json.loads(status(runner, props, "--json").output)
    assert doc["ready"] is False and doc["reason"] == reason.format(port=port)


def test_configuration_error_is_one_line(tmp_path, runner):
    bad = tmp_path / "bad.properties"
    bad.write_text("cdsw.http.port=notaport\n")
    r = runner.invoke(cli, ["--properties", str(bad), "status"])
    assert r.exit_code == 2 and r.output.startswith("cdsw: configuration error: ")
    assert len(r.output.strip().splitlines()) == 1


# --- the real local orchestrator ---------------------------------------------------------------

class Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"status": "ok", "version": "test", "checks": {}}).encode()
        self.send_response(200 if self.path == "/healthz" else 404)  # adds the Date header
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def master():
    """A master's /healthz on loopback, as the master role serves it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def local(tmp_path):
    props = {"orchestrator": "local", "data_dir": str(tmp_path / "data"), "master_host":
             "127.0.0.1"}
    settings = load_settings(None, None, environ={}, overrides=props)
    Database(settings.database_url).upgrade()
    orch = LocalOrchestrator(Path(settings.data_dir) / "orchestrator" / "local")
    yield props, orch
    for ref in orch.list():
        orch.remove(ref.id)


def wait_running(orch: LocalOrchestrator, workload_id: str) -> None:
    deadline = time.monotonic() + 15
    while orch.status(workload_id).state != RUNNING:
        assert time.monotonic() < deadline, "workload never started"
        time.sleep(0.05)


def test_local_orchestrator_ready(tmp_path, runner, master, local):
    values, orch = local
    props = properties(tmp_path, http_port=master.server_address[1], **values)
    ref = orch.launch(WorkloadSpec("sleeper", "ignored", [sys.executable, "-c",
                                                          "import time; time.sleep(60)"],
                                   cpu_reservation=0.5, memory_reservation=GIB))
    done = orch.launch(WorkloadSpec("quick", "ignored", [sys.executable, "-c", "pass"]))
    wait_running(orch, ref.id)
    deadline = time.monotonic() + 15
    while not orch.status(done.id).final:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = status(runner, props)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "Orchestrator: local" and "Nodes: 1 of 1 ready" in lines
    node = next(line.split() for line in lines if line.startswith("  " + socket.gethostname()))
    assert node[1:4] == ["127.0.0.1", "ready", "manager"] and node[4].startswith("0.5/")
    assert node[5].startswith("1.0/")
    assert "  master  running" in lines  # its /healthz answers on this host
    assert "  docker  not used (orchestrator is local)" in lines
    assert "Workloads: 1 running, 1 succeeded" in lines
    assert any(line.split()[:2] == ["sleeper", ref.id] for line in lines)
    assert "Health: all master checks OK" in lines
    assert lines[-1] == "CDSW is ready: 1 node ready, 1 workload running"
    doc = json.loads(status(runner, props, "--json").output)
    assert doc["ready"] and doc["workloads"]["running"][0]["id"] == ref.id
    assert doc["workloads"]["running"][0]["node"] == socket.gethostname()
    orch.stop(ref.id, timeout=2)
    r = status(runner, props)
    assert r.exit_code == 0 and "Workloads: 1 failed, 1 succeeded" in r.output.splitlines()
    assert r.output.splitlines()[-1] == "CDSW is ready: 1 node ready, 0 workloads running"


def test_local_orchestrator_without_a_master(tmp_path, runner, local):
    values, orch = local
    props = properties(tmp_path, **values)  # http_port: nothing listens there
    r = status(runner, props)
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    assert "  master  not running" in lines and "Nodes: 1 of 1 ready" in lines
    assert "Workloads: none" in lines
    assert any(line.startswith("  CRITICAL master_api: ") for line in lines)
    assert lines[-1].startswith("CDSW is NOT ready: master_api: master at http://127.0.0.1:")
    assert "does not answer (connection refused)" in lines[-1]
    assert "Traceback" not in r.output
