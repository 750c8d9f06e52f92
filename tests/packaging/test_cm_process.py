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
printf '%s\\n' "$@" > "$CONF_DIR/argv"
printf '%s' "${CDSW_HADOOP_CONF_DIRS:-}" > "$CONF_DIR/hadoop_conf_dirs"
printf '%s' "${CDSW_JAVA_HOME:-}" > "$CONF_DIR/java_home"
[ -t 0 ] || cat > "$CONF_DIR/stdin"
echo $$ > "$CONF_DIR/pid"
"""


@pytest.fixture()
def stub_home(tmp_path: Path) -> Path:
    home = tmp_path / "stub-home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "cdsw").write_text(STUB)
    (home / "bin" / "cdsw").chmod(0o755)
    return home


def test_client_configs_and_java_home_reach_the_agent(csd, version, tmp_path, stub_home):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER",
                       dict(VALID, cdsw_hadoop_conf_dirs=["/etc/extra/conf"]),
                       client_confs=("hadoop-conf", "hive-conf", "spark-conf"))
    r = control(conf, ["start", "master"], None, version, source_parcel=False,
                extra_env={"CDSW_HOME": str(stub_home), "JAVA_HOME": "/usr/java/default"})
    assert r.returncode == 0, r.stderr
    assert (conf / "argv").read_text().splitlines() == [
        "--properties", str(conf / "cdsw.properties"), "role", "master", "start"]
    assert (conf / "hadoop_conf_dirs").read_text() == ",".join(
        [str(conf / "hadoop-conf"), str(conf / "hive-conf"), str(conf / "spark-conf"),
         "/etc/extra/conf"])
    assert (conf / "java_home").read_text() == "/usr/java/default"


def test_start_execs_the_agent_in_the_foreground(csd, version, tmp_path, stub_home):
    """exec keeps the role in supervisord's process tree: the agent has control.sh's pid."""
    conf = process_dir(tmp_path, csd, "CDSW_DOCKER", VALID)
    env = {"PATH": os.environ["PATH"], "CONF_DIR": str(conf), "CDSW_HOME": str(stub_home)}
    proc = subprocess.Popen(["bash", str(conf / "scripts" / "control.sh"), "start", "docker"],
                            env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert int((conf / "pid").read_text()) == proc.pid


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
