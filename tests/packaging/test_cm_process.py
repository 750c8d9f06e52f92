"""control.sh's own contract, fast and on this machine: a CM-style process dir (CONF_DIR with the
cdsw.properties the SDL's configWriter renders, scripts/ from the CSD jar, dependency
client-config dirs), the built parcel unpacked into a parcels dir, its defines script sourced,
and control.sh run for a role: its input checks, what it hands to the agent (argv, client
configs, JAVA_HOME, the password on stdin), exec in the foreground, and the parcel launcher's
refusal of an unsupported Python.

Boundary: no CM agent or supervisord; helpers.cm_render_properties plays the configWriter, and a
stub CDSW_HOME stands for the parcel where only control.sh's hand-over is looked at. The real
roles from the real parcel on fresh Debian hosts (healthz, worker join, SIGTERM, a forbidden or
missing parameter at start) are test_cm_agent_emulation.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Dict, Optional

import pytest

from .helpers import cm_render_properties, extract

VALID = {"cdsw_domain": "cdsw.example.com", "cdsw_master_host": "127.0.0.1",
         "cdsw_orchestrator": "local"}


@pytest.fixture(scope="module")
def csd(dist: Path, version: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    out = tmp_path_factory.mktemp("csd")
    with zipfile.ZipFile(dist / ("CDSW-%s.jar" % version)) as zf:
        zf.extractall(out)
    return {"dir": out, "sdl": json.loads((out / "descriptor" / "service.sdl").read_text())}


@pytest.fixture(scope="module")
def parcels(dist: Path, version: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parcels")
    extract(dist / ("CDSW-%s-el8.parcel" % version), root)  # launcher, env script
    return root


def process_dir(tmp: Path, csd: Dict[str, object], role: str, values: Dict[str, object],
                client_confs=()) -> Path:
    conf = tmp / ("%d-cdsw-%s" % (int(time.time() * 1000) % 100000, role))
    shutil.copytree(Path(csd["dir"]) / "scripts", conf / "scripts")
    shutil.copytree(Path(csd["dir"]) / "aux", conf / "aux")
    (conf / "cdsw.properties").write_text(cm_render_properties(csd["sdl"], role, values))
    for name in client_confs:
        (conf / name).mkdir()
        (conf / name / "core-site.xml").write_text("<configuration/>")
    return conf


def control(conf: Optional[Path], args, parcels: Optional[Path], version: str,
            extra_env: Optional[Dict[str, str]] = None, source_parcel: bool = True,
            **popen) -> subprocess.CompletedProcess:
    """Run control.sh as the CM agent would: env script sourced, cwd = CONF_DIR."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if conf is not None:
        env["CONF_DIR"] = str(conf)
    if parcels is not None:
        env.update({"PARCELS_ROOT": str(parcels), "PARCEL_DIRNAME": "CDSW-%s" % version})
    env.update(extra_env or {})
    script = str((conf or Path("/nonexistent")) / "scripts" / "control.sh")
    source = '. "$PARCELS_ROOT/$PARCEL_DIRNAME/meta/cdsw_env.sh"; ' if source_parcel else ""
    cmd = ["bash", "-c", source + 'exec bash "$0" "$@"', script] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=str(conf) if conf else None, timeout=popen.pop("timeout", 300),
                          **popen)


def test_without_conf_dir_it_says_it_needs_the_cm_agent(csd, parcels, version, tmp_path):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    env = {"PATH": os.environ["PATH"]}
    r = subprocess.run(["bash", str(conf / "scripts" / "control.sh"), "start", "master"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == ("control.sh: error: CONF_DIR is not set: this script is run by "
                                "the Cloudera Manager agent in the role's process directory")


def test_without_the_parcel_env_it_says_activate_the_parcel(csd, version, tmp_path):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    r = control(conf, ["start", "master"], None, version, source_parcel=False)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("control.sh: error: CDSW_HOME is not set: download, "
                                       "distribute and activate the CDSW parcel")


def test_port_out_of_range_and_unknown_role(csd, parcels, version, tmp_path):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", dict(VALID, cdsw_http_port=70000))
    r = control(conf, ["start", "master"], parcels, version)
    assert r.returncode == 1
    assert r.stderr.strip() == "control.sh: error: cdsw.http.port=70000 is outside 1-65535"
    r = control(conf, ["start", "gateway"], parcels, version)
    assert r.stderr.strip() == ("control.sh: error: unknown role 'gateway': expected master, "
                                "worker or docker")


STUB = """#!/bin/sh
case "$*" in
  *" role "*" status") [ -e "$CONF_DIR/ready" ] && exit 0; exit 3 ;;
esac
printf '%s\\n' "$@" > "$CONF_DIR/argv"
printf '%s' "${CDSW_HADOOP_CONF_DIRS:-}" > "$CONF_DIR/hadoop_conf_dirs"
printf '%s' "${CDSW_JAVA_HOME:-}" > "$CONF_DIR/java_home"
[ -t 0 ] || cat > "$CONF_DIR/stdin"
echo $$ > "$CONF_DIR/pid"
case "$*" in
  *" role "*" start")
    echo "role starting"
    if [ -n "${STUB_DIE:-}" ]; then echo "cdsw: error: $STUB_DIE" >&2; exit 2; fi
    [ -n "${STUB_NEVER_READY:-}" ] || touch "$CONF_DIR/ready"
    trap 'echo "role stopped" >&2; exit 0' TERM
    while :; do sleep 0.1; done ;;
esac
"""


@pytest.fixture()
def stub_home(tmp_path: Path) -> Path:
    home = tmp_path / "stub-home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "cdsw").write_text(STUB)
    (home / "bin" / "cdsw").chmod(0o755)
    return home


def _start(conf: Path, role: str, stub_home: Path, **env: str) -> subprocess.Popen:
    full = {"PATH": os.environ["PATH"], "CONF_DIR": str(conf), "CDSW_HOME": str(stub_home),
            "CDSW_START_POLL": "0.2"}
    full.update(env)
    return subprocess.Popen(["bash", str(conf / "scripts" / "control.sh"), "start", role],
                            env=full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen, role: str) -> None:
    for line in proc.stderr:
        if line.startswith("control.sh: CDSW %s is ready after " % role):
            return
    raise AssertionError("control.sh ended without saying the role is ready")


def test_client_configs_and_java_home_reach_the_agent(csd, version, tmp_path, stub_home):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER",
                       dict(VALID, cdsw_hadoop_conf_dirs=["/etc/extra/conf"]),
                       client_confs=("hadoop-conf", "hive-conf", "spark-conf"))
    proc = _start(conf, "master", stub_home, JAVA_HOME="/usr/java/default")
    _wait_ready(proc, "master")
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert (conf / "argv").read_text().splitlines() == [
        "--properties", str(conf / "cdsw.properties"), "role", "master", "start"]
    assert (conf / "hadoop_conf_dirs").read_text() == ",".join(
        [str(conf / "hadoop-conf"), str(conf / "hive-conf"), str(conf / "spark-conf"),
         "/etc/extra/conf"])
    assert (conf / "java_home").read_text() == "/usr/java/default"


def test_start_waits_for_readiness_and_passes_sigterm_on(csd, version, tmp_path, stub_home):
    """The role runs as control.sh's child in the foreground (supervisord keeps control.sh);
    START is reported once `cdsw role docker status` answers; SIGTERM reaches the role and its
    exit status is control.sh's."""
    conf = process_dir(tmp_path, csd, "CDSW_DOCKER", VALID)
    proc = _start(conf, "docker", stub_home)
    _wait_ready(proc, "docker")
    role_pid = int((conf / "pid").read_text())
    ppid = int(Path("/proc/%d/stat" % role_pid).read_text().rsplit(")", 1)[1].split()[1])
    assert ppid == proc.pid
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert "role stopped" in proc.stderr.read()
    assert "role starting" in (conf / "logs" / "cdsw-docker-start.log").read_text()


def test_a_role_that_dies_before_it_is_ready_fails_start(csd, version, tmp_path, stub_home):
    conf = process_dir(tmp_path, csd, "CDSW_WORKER", VALID)
    proc = _start(conf, "worker", stub_home, STUB_DIE="cluster_secret is empty")
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == (
        "control.sh: error: CDSW worker exited (status 2) before it was ready: cdsw: error: "
        "cluster_secret is empty")


def test_a_role_that_never_gets_ready_is_stopped_and_fails_start(csd, version, tmp_path,
                                                                 stub_home):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    proc = _start(conf, "master", stub_home, STUB_NEVER_READY="1", CDSW_START_TIMEOUT="2")
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "control.sh: error: CDSW master was not ready within 2s (cdsw role master status), "
        "stopped it: role stopped")
    assert not Path("/proc/%d" % int((conf / "pid").read_text())).exists()


def test_create_admin_passes_the_password_on_stdin(csd, version, tmp_path, stub_home):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    env = {"CDSW_HOME": str(stub_home), "CDSW_FIRST_ADMIN_USER": "alice",
           "CDSW_FIRST_ADMIN_PASSWORD": "pa ss"}
    r = control(conf, ["create-admin", "master"], None, version, source_parcel=False,
                extra_env=env)
    assert r.returncode == 0, r.stderr
    assert (conf / "argv").read_text().splitlines()[-4:] == ["create-user", "alice", "--admin",
                                                             "--password-stdin"]
    assert (conf / "stdin").read_text() == "pa ss\n"
    env["CDSW_FIRST_ADMIN_PASSWORD"] = ""
    r = control(conf, ["create-admin", "master"], None, version, source_parcel=False,
                extra_env=env)
    assert r.returncode == 1 and "first_admin_password is empty" in r.stderr


def test_launcher_refuses_an_unsupported_python(parcels, version, tmp_path):
    launcher = parcels / ("CDSW-%s" % version) / "bin" / "cdsw"
    py2 = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python")
    fake = tmp_path / "python3.8"
    fake.write_text("#!/bin/sh\necho 3.8\n")  # answers the version probe like a Python 3.8
    fake.chmod(0o755)
    for python, shown in ((str(fake), "3.8"), (py2, "2.7")):
        if not os.access(python, os.X_OK):
            continue
        r = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "CDSW_PYTHON": python,
                                "CDSW_VENV_ROOT": str(tmp_path / "v")})
        assert r.returncode == 1
        assert r.stderr.strip() == ("cdsw launcher: error: CDSW_PYTHON=%s is Python %s; this "
                                    "payload has wheels for Python 3.12 3.11 3.9" % (python, shown))
        assert not (tmp_path / "v").exists()


def test_launcher_never_exits_silently_and_names_the_package(parcels, version, tmp_path):
    """A plain RHEL 8 host: python3 is 3.6 and a python3.11 on PATH that does not run. The
    launcher names what it skipped and which package to install, in the line CM shows."""
    launcher = parcels / ("CDSW-%s" % version) / "bin" / "cdsw"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    (bin_dir / "python3").write_text("#!/bin/sh\necho 3.6\n")
    (bin_dir / "python3.11").write_text("#!/bin/sh\necho 'error while loading shared "
                                        "libraries' >&2\nexit 127\n")
    for fake in ("python3", "python3.11"):
        (bin_dir / fake).chmod(0o755)
    r = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                       env={"PATH": str(bin_dir), "CDSW_VENV_ROOT": str(tmp_path / "v")})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-2] == "cdsw launcher: warning: found but cannot run: %s" % (bin_dir /
                                                                              "python3.11")
    assert lines[-1] == (
        "cdsw launcher: error: no supported Python found: install one of python3.12 3.11 3.9 "
        "(with its venv module) or set CDSW_PYTHON; on RHEL 8 (whose python3 is 3.6): dnf "
        "install python3.11 (or python39); on RHEL 9: dnf install python3.11")


def test_a_ready_role_that_stops_answering_is_stopped_so_cm_sees_it(csd, version, tmp_path,
                                                                   stub_home):
    """CM's health for a CSD role is its process: a master whose process lives but whose API
    no longer answers is stopped by control.sh's watchdog and the process exits 1 with a line."""
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    proc = _start(conf, "master", stub_home, CDSW_WATCHDOG_INTERVAL="0.3",
                  CDSW_WATCHDOG_FAILURES="3")
    _wait_ready(proc, "master")
    time.sleep(1.5)
    assert proc.poll() is None, "a role that answers is left alone"
    (conf / "ready").unlink()  # the API hangs: /healthz no longer answers
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "control.sh: error: CDSW master stopped answering its readiness check (cdsw role master "
        "status) 3 times in a row; stopped it so Cloudera Manager restarts it: role stopped")
