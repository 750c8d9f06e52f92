"""Sessions on the swarm backend with the real engine image, driven through the master's API.

h1 is a network namespace with its own dockerd (the CDSW_DOCKER role) and a one-node swarm; the
engine image is built once on the shared test dockerd and loaded into h1. The master (the app,
in this process) reaches each engine at its node's address on the host-mode published port,
exactly as it would an engine on a worker. `swarm_master` is reused by
benchmarks/session_start.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from cdsw_agent.images import transfer
from cdsw_agent.roles import swarm as swarm_mgr

from ..conftest import Api, build_api, make_settings
from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Lab, available, docker_env, start_docker_role

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
CDSW = str(Path(sys.executable).with_name("cdsw"))


@dataclass
class SwarmMaster:
    api: Api
    client: Any  # the API-key TestClient of the site admin, who owns the project
    project_id: int
    image_id: int
    docker: Any  # docker client of h1
    host: Any = None  # h1 (tests/integration/netns.py Host); host.lab adds more hosts

    def start(self, **body: Any) -> Dict[str, Any]:
        r = self.client.post("/api/v1/projects/%d/sessions" % self.project_id, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, sid: int, *states: str, timeout: float = 180) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.client.get("/api/v1/sessions/%d" % sid).json()
            if s["status"] in states or time.monotonic() > deadline:
                return s
            time.sleep(0.2)

    def execute(self, sid: int, code: str) -> list:
        with self.client.stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                json={"code": code}) as r:
            assert r.status_code == 200, r.read()
            return [json.loads(line) for line in r.iter_lines() if line]


def swarm_master(lab: Lab, engine_tar: Path, engine_ref: str, data_dir: Path,
                 **extra_settings: Any) -> SwarmMaster:
    """h1 with dockerd, a one-node swarm and the engine image; the master app on top."""
    h1 = lab.add_host("h1")
    _, docker_client = start_docker_role(h1, CDSW)
    assert transfer.load_image(docker_client, engine_tar) == [engine_ref]
    settings = make_settings(data_dir, orchestrator="swarm",
                             docker_host=docker_env(h1)["CDSW_DOCKER_HOST"],
                             master_host=h1.address, **extra_settings)
    swarm_mgr.ensure_manager(docker_client, settings)
    api = build_api(settings)
    admin = api.user("admin", admin=True)
    client = api.key_client(admin)
    repository, tag = engine_ref.rsplit(":", 1)
    r = client.post("/api/v1/engine-images", json={
        "repository": repository, "tag": tag, "kernels": ["python3"],
        "editors": ["workbench", "terminal"], "is_default": True})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    r = client.post("/api/v1/projects", json={"name": "on-swarm"})
    assert r.status_code == 201, r.text
    return SwarmMaster(api, client, r.json()["id"], image_id, docker_client, h1)


@contextlib.contextmanager
def lab_master(engine_image: str, docker_engine: Any,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory,
               name: str, **settings: Any) -> Iterator[SwarmMaster]:
    """A swarm master on a lab host of its own (skipped where labs cannot run), its workloads
    removed at the end; the module fixtures of the swarm session tests."""
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("%s-%s" % (name, os.urandom(3).hex()))) as lab:
        m = swarm_master(lab, saved.path, engine_image, tmp_path_factory.mktemp(name) / "data",
                         **settings)
        try:
            yield m
        finally:
            from cdsw_agent.sessions.monitor import manager_for

            orch = manager_for(m.api.client.app.state.server).orchestrator
            for ref in orch.list():
                orch.remove(ref.id)
            m.api.db.engine.dispose()


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmMaster]:
    with lab_master(engine_image, docker_engine, tmp_path_factory, "sess") as m:
        yield m


def test_session_on_swarm_end_to_end(master: SwarmMaster) -> None:
    s = master.start()
    running = master.wait(s["id"], "running", "failed")
    assert running["status"] == "running", running
    assert running["node"] == "h1"
    sid = s["id"]

    out = master.execute(sid, "print('hello from', __import__('os').environ['HADOOP_USER_NAME'])"
                              "\n1+1")
    assert out[0] == {"type": "stream", "name": "stdout", "text": "hello from admin\n"}
    assert out[1]["type"] == "execute_result" and out[1]["data"]["text/plain"] == "2"
    assert out[2]["status"] == "ok"
    # the engine runs as the image's user, in the project folder
    who = master.execute(sid, "import os\nprint(os.getuid(), os.getcwd())")
    assert who[0]["text"] == "8536 /home/cdsw\n", who

    r = master.client.post("/api/v1/sessions/%d/terminals" % sid)
    assert r.status_code == 201, r.text
    with master.client.websocket_connect(r.json()["websocket"]) as ws:
        # the terminal has the kernels' environment: the image's virtualenv first on PATH
        ws.send_text(json.dumps(["stdin", "echo swarm-$((20+22)) $(command -v python pip); "
                                 "python -c 'import pandas; print(\"pandas\", 4+2)'\r"]))
        seen, deadline = "", time.monotonic() + 30
        while "pandas 6" not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
    assert "swarm-42 /opt/cdsw/venv/bin/python /opt/cdsw/venv/bin/pip" in seen, seen
    assert "pandas 6" in seen, seen

    r = master.client.post("/api/v1/sessions/%d/stop" % sid)
    assert r.status_code == 200, r.text
    stopped = master.wait(sid, "stopped", "failed", timeout=60)
    assert stopped["status"] == "stopped" and stopped["reason"] == "stopped by admin", stopped
    services = master.docker.services.list(filters={"label": "io.cdsw.session=%d" % sid})
    assert services == [], "the stopped engine's service was not removed"
    log = master.client.get("/api/v1/sessions/%d/log" % sid).text
    assert "hello from admin" in log


PROBE = """
import socket
def probe(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "open"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
"""


def test_engines_are_isolated_hardened_and_run_nothing_planted(master: SwarmMaster) -> None:
    """A Contributor's planted files do not run in the owner's engine; the engine holds no
    capability, cannot gain privileges, sees no token; and it cannot connect to another
    session's engine, neither on its container address nor on its published port."""
    from cdsw_agent.sessions.monitor import manager_for

    from . import planted

    contrib = master.api.user("swarm-contrib")
    r = master.client.put("/api/v1/projects/%d/collaborators/%d" % (master.project_id, contrib.id),
                          json={"role": "contributor"})
    assert r.status_code == 200, r.text
    c, base = master.api.key_client(contrib), "/api/v1/projects/%d/files" % master.project_id
    planted.plant(lambda path, content: c.put(base + "/content",
                                               json={"path": path, "content": content}),
                  lambda path: c.post(base + "/mkdir", json={"path": path}), "/home/cdsw")
    r = master.client.put("/api/v1/projects/%d/env/PYTHONSTARTUP" % master.project_id,
                          json={"value": "/home/cdsw/.pythonrc.py"})
    assert r.status_code == 200, r.text
    project_dir = Path(master.api.settings.projects_dir) / str(master.project_id)
    assert (project_dir / "ipykernel_launcher.py").is_file()

    first, second = master.start(), master.start()
    for s in (first, second):
        assert master.wait(s["id"], "running", "failed")["status"] == "running"
    manager = manager_for(master.api.client.app.state.server)
    kernel_check, terminal_check = planted.token_checks(manager.running(first["id"])[1].token)
    r = master.client.post("/api/v1/sessions/%d/restart" % first["id"])
    assert r.status_code == 200, r.text
    r = master.client.post("/api/v1/sessions/%d/terminals" % first["id"])
    assert r.status_code == 201, r.text
    with master.client.websocket_connect(r.json()["websocket"]) as ws:
        ws.send_text(json.dumps(["stdin", terminal_check]))
        seen, deadline = "", time.monotonic() + 30
        while "done-42" not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
    assert "0\r\ndone-42" in seen, seen  # no variable holds the engine token
    ran = planted.markers([p.name for p in project_dir.iterdir()])
    assert ran == [], "planted files ran in the owner's engine: %s" % ran

    # hardening: no capability, no way to gain one, no setuid program, no token
    out = master.execute(first["id"], "import os, subprocess\n"
                         "st = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
                         "print(st['CapEff'].strip(), st['CapBnd'].strip(), "
                         "st['NoNewPrivs'].strip())\n"
                         "print(subprocess.run('find / -xdev -perm /6000 -type f', shell=True, "
                         "capture_output=True, text=True).stdout.split())\n"
                         "print(os.environ['HOME'])\n" + kernel_check)
    text = "".join(e.get("text", "") for e in out)
    assert text == "0000000000000000 0000000000000000 1\n[]\n/home/cdsw-user\n[]\nFalse\n", text

    # isolation: the first engine tries the second one's container addresses and published port
    _, ep = manager.running(second["id"])
    [container] = master.docker.containers.list(
        filters={"label": "io.cdsw.session=%d" % second["id"]})
    # on the node's default bridge, which the Docker role keeps closed between containers
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == ["bridge"] and not manager.orchestrator.own_networks, networks
    targets = [(n["IPAddress"], 8888) for n in networks.values() if n.get("IPAddress")]
    targets.append((ep.address, ep.port))
    code = PROBE + "print([probe(h, p) for h, p in %r])\nprint(probe('127.0.0.1', 8888))" % targets
    text = "".join(e.get("text", "") for e in master.execute(first["id"], code))
    reached, own = text.strip().splitlines()
    assert own == "open"  # the probe works: the engine reaches its own server
    assert "open" not in reached, (targets, reached)
    # the master (outside the containers) still reaches the second engine at that port
    assert master.execute(second["id"], "print(6*7)")[0]["text"] == "42\n"

    for s in (first, second):
        master.client.post("/api/v1/sessions/%d/stop" % s["id"])
        assert master.wait(s["id"], "stopped", "failed", timeout=60)["status"] == "stopped"
    master.client.delete("/api/v1/projects/%d/env/PYTHONSTARTUP" % master.project_id)


APP_SERVER = """
import os, pathlib, socket, subprocess, sys, time
site = pathlib.Path("/tmp/site"); site.mkdir(exist_ok=True)
(site / "index.html").write_text("served from " + os.environ["CDSW_APP_PATH"])
subprocess.Popen([sys.executable, "-m", "http.server", os.environ["CDSW_APP_PORT"], "--bind",
                  "127.0.0.1", "--directory", str(site)], stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(os.environ["CDSW_APP_PORT"])), 1).close()
        break
    except OSError:
        time.sleep(0.1)
print(os.environ["CDSW_APP_PORT"])
"""


def test_a_web_app_on_cdsw_app_port_is_served_through_the_engine(master: SwarmMaster) -> None:
    """The engine image's jupyter_server serves what the session runs on CDSW_APP_PORT under
    proxy/PORT/ (jupyter-server-proxy), reached through the master like every engine path."""
    s = master.start()
    assert master.wait(s["id"], "running", "failed")["status"] == "running"
    out = "".join(e.get("text", "") for e in master.execute(s["id"], APP_SERVER))
    assert out.strip() == "8100", out
    app = "/api/v1/sessions/%d/engine/proxy/8100/" % s["id"]
    r = master.client.get(app)
    assert r.status_code == 200 and r.text == "served from " + app, r.text
    master.client.post("/api/v1/sessions/%d/stop" % s["id"])


GIT_SHELL = ("import subprocess\n"
             "r = subprocess.run('mkdir -p repo && cd repo && ' + %r, shell=True, "
             "capture_output=True, text=True)\n"
             "print(r.returncode, r.stderr)")


def test_git_in_an_engine_runs_nothing_a_collaborator_planted_in_the_repository(
        master: SwarmMaster) -> None:
    """A Contributor writes a command-running monitor and a filter driver into the shared
    repository's .git/config (through the files API, as she could from her own session); the
    owner's `git status` and `git add` in their engine (the image's git, its guard) refuse and
    say why, and nothing runs. Plain /usr/bin/git in the same engine runs the planted monitor
    (the attack is real); the owner trusting the state makes it run (their own choice)."""
    contrib = master.api.user("git-contrib")
    r = master.client.put("/api/v1/projects/%d/collaborators/%d" % (master.project_id, contrib.id),
                          json={"role": "contributor"})
    assert r.status_code == 200, r.text
    s = master.start()
    assert master.wait(s["id"], "running", "failed")["status"] == "running"

    def shell(command: str) -> str:
        return "".join(e.get("text", "") for e in master.execute(s["id"], GIT_SHELL % command))

    out = shell("command -v git >&2; git init -q . && git -c user.name=o -c user.email=o@x "
                "commit -q --allow-empty -m first && git status --short")
    assert out == "0 /usr/local/bin/git\n\n", out
    marker = "/home/cdsw/repo/../hijacked-git-%s"
    c = master.api.key_client(contrib)
    base = "/api/v1/projects/%d/files" % master.project_id
    config = c.get(base + "/content", params={"path": "repo/.git/config"}).json()["content"]
    for path, content in (
            ("repo/.git/config", config + "[core]\n\tfsmonitor = touch %s; false\n"
             "[filter \"evil\"]\n\tclean = touch %s; cat\n" % (marker % "monitor",
                                                                   marker % "filter")),
            ("repo/.gitattributes", "* filter=evil\n"), ("repo/data.txt", "x\n")):
        r = c.put(base + "/content", json={"path": path, "content": content})
        assert r.status_code in (200, 201), r.text
    project_dir = Path(master.api.settings.projects_dir) / str(master.project_id)

    out = shell("git status; git add data.txt")
    assert out.startswith("1 cdsw: git did not run"), out
    assert "core.fsmonitor = touch" in out and "filter.evil.clean = touch" in out, out
    assert not list(project_dir.glob("hijacked-git-*"))

    assert shell("/usr/bin/git status >/dev/null")  # the engine's real git, unguarded
    assert (project_dir / "hijacked-git-monitor").is_file()  # runs the plant: the attack works
    (project_dir / "hijacked-git-monitor").unlink()

    assert shell("CDSW_GIT_TRUST=1 git status --short >/dev/null").startswith("0 ")
    assert (project_dir / "hijacked-git-monitor").is_file()  # trusted by the owner: it runs
    assert "/home/cdsw/repo/.git" in shell("cat $HOME/.config/cdsw/git-trusted >&2")
    for p in project_dir.glob("hijacked-git-*"):
        p.unlink()
    master.client.post("/api/v1/sessions/%d/stop" % s["id"])
    assert master.wait(s["id"], "stopped", "failed", timeout=60)["status"] == "stopped"


def test_no_engine_token_anywhere_a_kernel_or_terminal_can_look(master: SwarmMaster) -> None:
    """The attack: code in a session (a kernel, a terminal) looks for its engine's token in
    every process's environment and command line (the container's init, PID 1, included), in
    the memory of every process it may read, and in every file under /run, /proc/1, $HOME,
    /tmp and the project. The engine was given only the token's digest, and jupyter_server,
    where the master's requests arrive, is not dumpable: nothing is found."""
    from cdsw_agent.sessions.monitor import manager_for

    from . import planted

    s = master.start()
    assert master.wait(s["id"], "running", "failed")["status"] == "running"
    manager = manager_for(master.api.client.app.state.server)
    token = manager.running(s["id"])[1].token
    assert master.execute(s["id"], "print(6*7)")[0]["text"] == "42\n"  # the token went by
    paths = ["/run", "/proc/1", "/home/cdsw-user", "/tmp", "/home/cdsw"]
    kernel, terminal = planted.token_hunt(token, paths, memory=True)
    out = master.execute(s["id"], kernel)
    hunt = json.loads("".join(e.get("text", "") for e in out))
    assert hunt["found"] == [], hunt
    assert hunt["files"] > 100, hunt  # the walk read files (/proc/1 alone has dozens)
    # the hunt could read memory (PID 1, the container's init, runs as the same user) ...
    assert 1 in hunt["memory"], hunt
    # ... but not jupyter_server's
    assert hunt["server"] not in hunt["memory"], hunt

    r = master.client.post("/api/v1/sessions/%d/terminals" % s["id"])
    assert r.status_code == 201, r.text
    with master.client.websocket_connect(r.json()["websocket"]) as ws:
        ws.send_text(json.dumps(["stdin", terminal]))
        seen, deadline = "", time.monotonic() + 120
        while "done-42" not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
    assert "0\r\n0\r\ndone-42" in seen, seen
    master.client.post("/api/v1/sessions/%d/stop" % s["id"])
    assert master.wait(s["id"], "stopped", "failed", timeout=60)["status"] == "stopped"


LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()
"""


def test_spark_driver_ports_refuse_other_engines_and_hosts_not_listed(
        master: SwarmMaster, engine_image: str) -> None:  # noqa: F811
    """The attack: a Spark driver in an engine publishes its port on the node (20050-32767) for
    executors to connect back to. Another user's engine connects to it through the node's
    address and is refused; so is a host that is not one of the cluster's executor hosts once
    cdsw.spark.driver.allowed.networks lists them, while a listed host connects. An engine still
    reaches ports in that range on other hosts (Impala's 21050)."""
    import secrets as _secrets

    from cdsw_agent.orchestrators import Port, WorkloadSpec
    from cdsw_agent.sessions.monitor import manager_for

    h1 = master.host
    h2, h3 = h1.lab.add_host("h2-%s" % _secrets.token_hex(2)), \
        h1.lab.add_host("h3-%s" % _secrets.token_hex(2))
    orch = manager_for(master.api.client.app.state.server).orchestrator
    port = 20050 + _secrets.randbelow(1000) * 2
    driver = orch.launch(WorkloadSpec(
        name="spark-driver-" + _secrets.token_hex(3), image=engine_image, user="8536",
        command=["/opt/cdsw/venv/bin/python", "-c", LISTENER, str(port)],
        ports=[Port(container=port, host=port)], node="h1"))
    impala = h2.popen([sys.executable, "-c", LISTENER, "21050"], log_name="impala.log")
    firewall = "from cdsw_agent.roles.engine_firewall import install; install(driver_sources=%r)"
    s = master.start()
    try:
        assert master.wait(s["id"], "running", "failed")["status"] == "running"

        def from_host(host: Any) -> str:
            r = host.run([sys.executable, "-c", PROBE + "print(probe(%r, %d))"
                          % (h1.address, port)])
            return r.stdout.strip() or r.stderr

        # the driver answers an outside host (no list yet): the probe and the listener work
        deadline = time.monotonic() + 90
        while from_host(h2) != "open" and time.monotonic() < deadline:
            time.sleep(1)
        assert from_host(h2) == "open"

        def from_engine() -> list:
            code = PROBE + "print(probe(%r, %d), probe(%r, 21050))" % (h1.address, port,
                                                                        h2.address)
            return "".join(e.get("text", "") for e in master.execute(s["id"], code)).split()

        # another engine on the node: refused; its own connection to Impala on h2: open
        driver_port, impala_port = from_engine()
        assert driver_port != "open", driver_port
        assert impala_port == "open"

        # the executors run on h3 only: the Docker role's rules with that list
        r = h1.run([sys.executable, "-c", firewall % [h3.address + "/32"]])
        assert r.returncode == 0, r.stderr
        assert from_host(h3) == "open"
        assert from_host(h2) != "open"
        assert from_engine() == [driver_port, "open"]
    finally:
        h1.run([sys.executable, "-c", firewall % []])
        impala.terminate()
        orch.remove(driver.id)
        master.client.post("/api/v1/sessions/%d/stop" % s["id"])
        master.wait(s["id"], "stopped", "failed", timeout=60)


def test_missing_image_fails_with_one_clear_reason(master: SwarmMaster) -> None:
    r = master.client.post("/api/v1/engine-images", json={"repository": "cdsw/engine",
                                                          "tag": "not-built-here"})
    assert r.status_code == 201, r.text
    s = master.start(engine_image_id=r.json()["id"])
    failed = master.wait(s["id"], "failed", "running", timeout=120)
    assert failed["status"] == "failed", failed
    assert failed["reason"] == (
        "could not start the engine: the image cdsw/engine:not-built-here is not present on "
        "node h1; build or distribute it (cdsw images build) or choose another image"), failed
    assert "No such image" not in failed["reason"]  # Docker's words go to the log only


def test_orphan_sweep_removes_the_engine_of_a_session_that_is_gone(master: SwarmMaster) -> None:
    from cdsw_agent.sessions.monitor import manager_for
    from cdsw_agent.store.sessions_models import EngineSession

    s = master.start()
    assert master.wait(s["id"], "running", "failed")["status"] == "running"
    label = {"label": "io.cdsw.session=%d" % s["id"]}
    assert len(master.docker.services.list(filters=label)) == 1
    with master.api.db.session() as db:  # as when its project is deleted under it
        db.delete(db.get(EngineSession, s["id"]))
    manager = manager_for(master.api.client.app.state.server)
    [removed] = manager.remove_orphans()
    assert master.docker.services.list(filters=label) == [], removed
