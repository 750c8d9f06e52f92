"""Contract test of the mpack's component scripts: they run as the Ambari agent runs them
(`python SCRIPT COMMAND command.json package/ out.json INFO tmp/`) with command JSON shaped like
Ambari 2.6's (HDP 2.6) and 2.7's (HDP 3.1) under Python 2.7, and 3.0's (Bigtop 3.2) under Python 3.

Boundary: resource_management is the stand-in in ambari_stub/ (see its docstring): Execute runs
commands for real, File/Directory write for real, ownership is ignored. The payload's `cdsw`
launcher is replaced by a stub that records its argv, environment and stdin and, for
`role NAME start`, stays up like a role does; the real launcher is tested with the parcel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from .helpers import extract

STUB = Path(__file__).resolve().parent / "ambari_stub"

FAKE_CDSW = r"""#!/bin/sh
log="$(dirname "$0")/../calls.jsonl"
ready="$(dirname "$0")/../ready"
case "$*" in
  *" role "*" status") [ -e "$ready-$4" ]; exit $? ;;
esac
stdin=""
case "$*" in *--password-stdin*) stdin=$(cat) ;; esac
python3 - "$log" "$stdin" "$@" <<'PY'
import json, os, sys
log, stdin, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
env = {k: v for k, v in os.environ.items() if k.startswith("CDSW_")}
with open(log, "a") as fh:
    fh.write(json.dumps({"argv": argv, "env": env, "stdin": stdin}) + "\n")
PY
case "$*" in
  *" role "*" start")
    if [ -n "${FAKE_START_DIE:-}" ]; then echo "cdsw: error: $FAKE_START_DIE" >&2; exit 2; fi
    [ -n "${FAKE_NEVER_READY:-}" ] || touch "$ready-$4"
    trap 'rm -f "$ready-$4"; kill $! 2>/dev/null; exit 0' TERM
    sleep 300 &
    wait ;;
  *"health --check"*) exit "${FAKE_HEALTH_EXIT:-0}" ;;
esac
"""


@pytest.fixture(scope="module")
def service(dist: Path, version: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = extract(dist / ("cdsw-ambari-mpack-%s.tar.gz" % version),
                   tmp_path_factory.mktemp("mpack"))
    return root / "common-services" / "CDSW" / version


def _site(service: Path) -> Dict[str, str]:
    """cdsw-site as Ambari sends it: the stack defaults from configuration/cdsw-site.xml."""
    from xml.etree import ElementTree
    tree = ElementTree.parse(str(service / "configuration" / "cdsw-site.xml"))
    site = {p.findtext("name"): p.findtext("value") or "" for p in tree.findall("property")}
    site.update({"cdsw.domain": "cdsw.example.com", "cdsw.master.host": "gw1.example.com"})
    return site


def command_json(shape: str, service: Path, tmp: Path, host: str, role: str,
                 site: Dict[str, str] = None, env_extra: Dict[str, str] = None) -> Dict[str, Any]:
    env = {"cdsw_user": "cdsw", "cdsw_group": "cdsw", "cdsw_install_dir": str(tmp / "opt"),
           "cdsw_conf_dir": str(tmp / "etc"), "cdsw_pid_dir": str(tmp / "run"),
           "cdsw_log_dir": str(tmp / "log"), "cdsw_venv_root": str(tmp / "venvs"),
           "cdsw_python": "", "first_admin_username": "alice",
           "first_admin_password": "s3cret pass"}
    env.update(env_extra or {})
    cfg: Dict[str, Any] = {"configurations": {"cdsw-site": dict(_site(service), **(site or {})),
                                              "cdsw-env": env},
                           "role": role, "commandType": "EXECUTION_COMMAND",
                           "clusterHostInfo": {"cdsw_master_hosts": ["gw1.example.com"],
                                               "cdsw_worker_hosts": ["gw2.example.com"]}}
    if shape == "2.6":  # HDP 2.6 on Ambari 2.6: host and stack keys before the 2.7 move
        cfg.update({"hostname": host,
                    "hostLevelParams": {"stack_name": "HDP", "stack_version": "2.6",
                                        "java_home": "/usr/jdk64/jdk1.8.0_77"}})
    elif shape == "2.7":  # HDP 3.1 on Ambari 2.7
        cfg.update({"agentLevelParams": {"hostname": host},
                    "clusterLevelParams": {"stack_name": "HDP", "stack_version": "3.1"},
                    "ambariLevelParams": {"java_home": "/usr/jdk64/jdk1.8.0_112"}})
    else:  # Bigtop 3.2 on Ambari 3.0
        cfg.update({"agentLevelParams": {"hostname": host},
                    "clusterLevelParams": {"stack_name": "BIGTOP", "stack_version": "3.2.0"},
                    "ambariLevelParams": {"java_home": "/usr/lib/jvm/java-1.8.0"}})
    return cfg


class Agent:
    """Runs one component script like the Ambari agent does and collects what happened."""

    def __init__(self, python: str, service: Path, tmp: Path, shape: str,
                 package: str = "package"):
        self.python, self.service, self.tmp, self.shape = python, service, tmp, shape
        self.package = tmp / package
        shutil.copytree(service / "package", self.package)
        fake = self.package / "files" / "payload" / "bin" / "cdsw"
        fake.write_text(FAKE_CDSW)
        fake.chmod(0o755)
        self.resources = tmp / "resources.jsonl"

    def run(self, script: str, command: str, host: str = "gw1.example.com",
            role: str = "CDSW_MASTER", extra_env: Dict[str, str] = None,
            site: Dict[str, str] = None, env_extra: Dict[str, str] = None):
        cfg = command_json(self.shape, self.service, self.tmp, host, role, site, env_extra)
        cmd_file = self.tmp / "command.json"
        cmd_file.write_text(json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=str(STUB), RM_STUB_LOG=str(self.resources),
                   **(extra_env or {}))
        env.pop("PYTHONHOME", None)
        return subprocess.run(
            [self.python, str(self.package / "scripts" / script), command, str(cmd_file),
             str(self.package), str(self.tmp / "out.json"), "INFO", str(self.tmp)],
            capture_output=True, text=True, env=env, cwd=str(self.tmp), timeout=120)

    def calls(self):
        log = self.tmp / "opt" / self.version_dir() / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def version_dir(self) -> str:
        return self.service.name

    def last_call(self, *tail: str) -> Dict[str, Any]:
        """The newest recorded cdsw call ending in tail; a backgrounded role logs a bit later."""
        deadline = time.time() + 20
        while True:
            calls = [c for c in self.calls() if c["argv"][-len(tail):] == list(tail)]
            if calls or time.time() > deadline:
                assert calls, "no cdsw call ending in %s: %s" % (tail, self.calls())
                return calls[-1]
            time.sleep(0.1)


def _interpreters():
    """Ambari 2.6/2.7 run the scripts under Python 2.7: with pyenv's where this machine has one;
    elsewhere (Debian bookworm has no Python 2) their command shapes run under Python 3 and
    tests/packaging/test_validate_mpack.py checks the scripts for Python 2.7 with vermin."""
    out = [pytest.param(sys.executable, "3.0", id="ambari-3.0-python3")]
    py2 = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python")
    have_py2 = os.access(py2, os.X_OK)
    for shape in ("2.6", "2.7"):
        out.append(pytest.param(py2 if have_py2 else sys.executable, shape,
                                id="ambari-%s-python%s" % (shape, "2.7" if have_py2 else "3")))
    return out


@pytest.mark.parametrize("python,shape", _interpreters())
def test_master_lifecycle(python, shape, service, tmp_path):
    agent = Agent(python, service, tmp_path, shape)
    r = agent.run("cdsw_master.py", "INSTALL")
    assert r.returncode == 0, r.stderr
    ver = service.name
    assert (tmp_path / "opt" / ver / "bin" / "cdsw").exists()
    props = (tmp_path / "etc" / "cdsw.properties").read_text().splitlines()
    keys = sorted(line.split("=", 1)[0] for line in props if not line.startswith("#"))
    assert keys == sorted(_site(service)), "cdsw.properties must hold exactly cdsw-site's keys"
    assert "cdsw.domain=cdsw.example.com" in props
    assert agent.calls()[0]["argv"] == ["--launcher-prepare"]
    assert agent.calls()[0]["env"]["CDSW_VENV_ROOT"] == str(tmp_path / "venvs")

    r = agent.run("cdsw_master.py", "STATUS")
    assert r.returncode == 1 and "ComponentIsNotRunning" in r.stderr, r.stderr
    r = agent.run("cdsw_master.py", "START")
    assert r.returncode == 0, r.stderr
    start = agent.last_call("start")
    assert start["argv"] == ["--properties", str(tmp_path / "etc" / "cdsw.properties"),
                             "role", "master", "start"]
    cfg = command_json(shape, service, tmp_path, "h", "r")
    java = (cfg.get("ambariLevelParams") or cfg["hostLevelParams"])["java_home"]
    assert start["env"]["CDSW_JAVA_HOME"] == java
    pid = int((tmp_path / "run" / "cdsw-master.pid").read_text())
    assert agent.run("cdsw_master.py", "STATUS").returncode == 0
    r = agent.run("cdsw_master.py", "START")  # idempotent: no second process
    assert int((tmp_path / "run" / "cdsw-master.pid").read_text()) == pid

    r = agent.run("cdsw_master.py", "CREATE_ADMIN")
    assert r.returncode == 0, r.stderr
    admin = agent.calls()[-1]
    assert admin["argv"][-4:] == ["create-user", "alice", "--admin", "--password-stdin"]
    assert admin["stdin"] == "s3cret pass"
    assert "s3cret" not in " ".join(admin["argv"])

    r = agent.run("cdsw_master.py", "STOP")
    assert r.returncode == 0, r.stderr
    _wait_gone(pid)
    r = agent.run("cdsw_master.py", "STATUS")
    assert r.returncode == 1 and "ComponentIsNotRunning" in r.stderr


@pytest.mark.parametrize("python,shape", _interpreters())
def test_worker_refuses_the_master_host(python, shape, service, tmp_path):
    agent = Agent(python, service, tmp_path, shape)
    assert agent.run("cdsw_worker.py", "INSTALL", role="CDSW_WORKER").returncode == 0
    r = agent.run("cdsw_worker.py", "START", host="gw1.example.com", role="CDSW_WORKER")
    assert r.returncode == 1
    assert "CDSW Worker cannot run on gw1.example.com: it hosts the CDSW Master" in r.stderr
    r = agent.run("cdsw_worker.py", "START", host="gw2.example.com", role="CDSW_WORKER")
    assert r.returncode == 0, r.stderr
    assert agent.last_call("role", "worker", "start")["env"]["CDSW_VENV_ROOT"] == str(
        tmp_path / "venvs")
    assert agent.run("cdsw_worker.py", "STOP", role="CDSW_WORKER").returncode == 0


@pytest.mark.parametrize("python,shape", _interpreters())
def test_docker_install_prepares_the_host_and_custom_commands_exist(python, shape, service,
                                                                   tmp_path):
    agent = Agent(python, service, tmp_path, shape)
    r = agent.run("cdsw_docker.py", "INSTALL", role="CDSW_DOCKER")
    assert r.returncode == 0, r.stderr
    assert agent.calls()[-1]["argv"][-3:] == ["role", "docker", "prepare"]
    assert agent.run("cdsw_docker.py", "VALIDATE", role="CDSW_DOCKER").returncode == 0
    assert agent.calls()[-1]["argv"][-1] == "validate"
    r = agent.run("cdsw_docker.py", "NO_SUCH_COMMAND", role="CDSW_DOCKER")
    assert r.returncode == 1 and "has no method 'no_such_command'" in r.stderr


@pytest.mark.parametrize("python,shape", _interpreters())
def test_a_worker_that_dies_before_it_is_ready_fails_start(python, shape, service, tmp_path):
    """START returns success only once `cdsw role worker status` answers; a worker that exits
    (here: an empty cluster secret) fails START with its last log lines."""
    agent = Agent(python, service, tmp_path, shape)
    assert agent.run("cdsw_worker.py", "INSTALL", role="CDSW_WORKER").returncode == 0
    r = agent.run("cdsw_worker.py", "START", host="gw2.example.com", role="CDSW_WORKER",
                  extra_env={"FAKE_START_DIE": "cluster_secret is empty"})
    assert r.returncode == 1
    log = tmp_path / "log" / "cdsw-worker.log"
    assert ("CDSW worker exited before it was ready; its last lines in %s:\n"
            "  | cdsw: error: cluster_secret is empty" % log) in r.stderr, r.stderr
    r = agent.run("cdsw_worker.py", "STATUS", role="CDSW_WORKER")
    assert r.returncode == 1 and "ComponentIsNotRunning" in r.stderr


def test_a_role_never_ready_is_stopped_and_fails_start(service, tmp_path):
    agent = Agent(sys.executable, service, tmp_path, "3.0")
    r = agent.run("cdsw_master.py", "START", extra_env={"FAKE_NEVER_READY": "1"},
                  env_extra={"cdsw_start_timeout": "3"})
    assert r.returncode == 1
    assert "CDSW master was not ready within 3s (cdsw role master status) and was stopped" \
        in r.stderr, r.stderr
    assert not (tmp_path / "run" / "cdsw-master.pid").exists()


@pytest.mark.parametrize("python,shape", _interpreters())
def test_non_ascii_configuration_values(python, shape, service, tmp_path):
    """Ambari 2.6/2.7 hand configuration values to Python 2.7 as unicode: a non-ASCII value (a
    site name, an LDAP DN) must reach cdsw.properties as UTF-8 in every command."""
    agent = Agent(python, service, tmp_path, shape)
    site = {"cdsw.domain": u"cdsw.example.com", "cdsw.ldap.user.search.base":
            u"uid={0},ou=Forschung und Entwicklung \u00e9\u00e8 \u4e2d\u6587,dc=example"}
    site = {k: v for k, v in site.items() if k in _site(service)}
    assert len(site) == 2, "the test needs the LDAP search base in cdsw-site"
    for command in ("INSTALL", "START", "CREATE_ADMIN", "STOP"):
        r = agent.run("cdsw_master.py", command, site=site)
        assert r.returncode == 0, (command, r.stderr)
    props = (tmp_path / "etc" / "cdsw.properties").read_bytes().decode("utf-8")
    for key, value in site.items():
        assert "%s=%s" % (key, value) in props.splitlines()


@pytest.mark.parametrize("python,shape", _interpreters())
def test_upgrade_mpack_switches_scripts_and_keeps_the_configuration(python, shape, service,
                                                                    tmp_path):
    """`ambari-server upgrade-mpack`: the new stack version directory's scripts take over. The
    master runs from N's payload; Ambari stops it with N's scripts and starts it with N+1's,
    with no INSTALL: N+1's payload is copied next to N's, the same cdsw-site renders the same
    cdsw.properties, and the role runs N+1's launcher."""
    ver_n1 = service.name
    parts = ver_n1.split(".")
    ver_n = ".".join(parts[:-1] + [str(int(parts[-1]) - 1)])
    old = tmp_path / "stack" / ver_n  # N's common-services/CDSW/<version>, as N's mpack had it
    shutil.copytree(str(service), str(old))
    params = old / "package" / "scripts" / "params.py"
    params.write_text(params.read_text().replace('"%s"' % ver_n1, '"%s"' % ver_n))
    site = {"cdsw.http.port": "8443"}  # a value the operator changed in the Ambari UI
    agent_n = Agent(python, old, tmp_path, shape, package="package-n")
    assert agent_n.run("cdsw_master.py", "INSTALL", site=site).returncode == 0
    r = agent_n.run("cdsw_master.py", "START", site=site)
    assert r.returncode == 0, r.stderr
    assert agent_n.last_call("role", "master", "start")
    props_n = (tmp_path / "etc" / "cdsw.properties").read_text()
    assert "cdsw.http.port=8443" in props_n.splitlines()
    assert agent_n.run("cdsw_master.py", "STOP").returncode == 0

    agent_n1 = Agent(python, service, tmp_path, shape, package="package-n1")
    r = agent_n1.run("cdsw_master.py", "START", site=site)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "opt" / ver_n / "bin" / "cdsw").exists(), "N's payload stays for a rollback"
    calls = agent_n1.calls()
    assert calls[0]["argv"] == ["--launcher-prepare"]
    assert agent_n1.last_call("role", "master", "start")
    assert (tmp_path / "etc" / "cdsw.properties").read_text() == props_n
    assert agent_n1.run("cdsw_master.py", "STOP").returncode == 0


def test_start_without_install_brings_the_payload(service, tmp_path):
    """After upgrade-mpack Ambari restarts components without INSTALL."""
    agent = Agent(sys.executable, service, tmp_path, "3.0")
    r = agent.run("cdsw_docker.py", "START", role="CDSW_DOCKER")
    assert r.returncode == 0, r.stderr
    assert agent.calls()[0]["argv"] == ["--launcher-prepare"]
    assert agent.last_call("role", "docker", "start")
    assert agent.run("cdsw_docker.py", "STOP", role="CDSW_DOCKER").returncode == 0


def test_missing_admin_password_is_a_clear_failure(service, tmp_path):
    agent = Agent(sys.executable, service, tmp_path, "3.0")
    assert agent.run("cdsw_master.py", "INSTALL").returncode == 0
    cfg_env = command_json("3.0", service, tmp_path, "h", "r")
    cfg_env["configurations"]["cdsw-env"]["first_admin_password"] = ""
    (tmp_path / "command.json").write_text(json.dumps(cfg_env))
    env = dict(os.environ, PYTHONPATH=str(STUB))
    r = subprocess.run([sys.executable, str(agent.package / "scripts" / "cdsw_master.py"),
                        "CREATE_ADMIN", str(tmp_path / "command.json"), str(agent.package),
                        str(tmp_path / "out.json"), "INFO", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert "first_admin_password in cdsw-env is empty" in r.stderr


@pytest.mark.parametrize("code,state", [(0, "OK"), (1, "WARNING"), (2, "CRITICAL"),
                                        (3, "UNKNOWN"), (7, "UNKNOWN")])
def test_alert_maps_cdsw_health_exit_codes(code, state, service, tmp_path, monkeypatch):
    install = tmp_path / "opt"
    bin_dir = install / service.name / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "cdsw").write_text(FAKE_CDSW)
    (bin_dir / "cdsw").chmod(0o755)
    monkeypatch.setenv("FAKE_HEALTH_EXIT", str(code))
    sys.path.insert(0, str(service / "package" / "alerts"))
    try:
        import alert_cdsw_health as alert
    finally:
        sys.path.pop(0)
    tokens = alert.get_tokens()
    configurations = {tokens[0]: str(install), tokens[1]: str(tmp_path / "etc"),
                      tokens[2]: str(tmp_path / "venvs")}
    result = alert.execute(configurations, {"check.name": "master_api"}, "gw1")
    assert result[0] == state
    call = json.loads((install / service.name / "calls.jsonl").read_text().splitlines()[-1])
    assert call["argv"] == ["--properties", str(tmp_path / "etc" / "cdsw.properties"),
                            "health", "--check", "master_api"]


def test_alert_names_real_health_checks(service):
    """Every SCRIPT alert runs a check the agent's health registry knows."""
    from cdsw_agent.health import REGISTRY
    alerts = json.loads((service / "alerts.json").read_text())
    known = {c.name for c in REGISTRY.select()}
    used = {p["value"] for defs in alerts["CDSW"].values() for d in defs
            for p in d["source"]["parameters"] if p["name"] == "check.name"}
    assert used and used <= known, sorted(used - known)


def _wait_gone(pid: int) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError("process %d still running" % pid)
