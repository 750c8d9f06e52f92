"""`cdsw status` and `cdsw health` find the running `cdsw standalone` (its port, data dir and the
backend it really uses) without being told, and report the local fallback as what it is."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from cdsw_agent.cli import instance
from cdsw_agent.settings import load_settings

from .test_master_process import CDSW, env_for, free_port, start, stop, wait_for


def _bare_env(pointer: Path) -> dict:
    """An admin's shell: no CDSW_* settings, no configuration files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    env["CDSW_INSTANCE_FILE"] = str(pointer)
    return env


def test_status_and_health_find_the_standalone_on_its_local_fallback(tmp_path: Path) -> None:
    assert not Path("/etc/cdsw/config/cdsw.conf").exists()
    port, pointer, data = free_port(), tmp_path / "run" / "instance.json", tmp_path / "data"
    env = env_for(tmp_path, CDSW_INSTANCE_FILE=str(pointer),
                  CDSW_DOCKERD_PATH=str(tmp_path / "no-dockerd"))  # Docker cannot run: fallback
    del env["CDSW_ORCHESTRATOR"]  # the default, swarm, as an evaluator runs it
    proc = start(["standalone", "--data-dir", str(data), "--port", str(port)], env)
    try:
        wait_for("http://127.0.0.1:%d/healthz" % port, proc, timeout=60)
        record = json.loads(pointer.read_text())
        assert (record["http_port"], record["data_dir"], record["orchestrator"]) == \
            (port, str(data), "local")
        props = Path(record["properties"])
        assert stat.S_IMODE(props.stat().st_mode) == 0o600  # it holds the secrets

        status = subprocess.run(CDSW + ["status"], capture_output=True, text=True,
                                env=_bare_env(pointer), cwd=str(tmp_path), timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == ("Instance: http://localhost:%d (data dir %s; found through %s)"
                            % (port, data, pointer))
        assert lines[1] == "Orchestrator: local"
        assert "unreachable" not in status.stdout and "swarm" not in status.stdout
        assert lines[-1].startswith("CDSW is ready: 1 node ready")

        health = subprocess.run(CDSW + ["health", "--check", "master_api", "--check", "storage"],
                                capture_output=True, text=True, env=_bare_env(pointer),
                                timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
        assert "127.0.0.1:%d/healthz ready" % port in health.stdout
        assert str(data) in health.stdout

        # a configuration given to the command wins over the instance
        other = subprocess.run(CDSW + ["status"], capture_output=True, text=True, timeout=60,
                               env=dict(_bare_env(pointer), CDSW_ORCHESTRATOR="local",
                                        CDSW_HTTP_PORT=str(free_port()),
                                        CDSW_DATA_DIR=str(tmp_path / "elsewhere")))
        assert "Instance:" not in other.stdout and "master  not running" in other.stdout

        # a second instance does not take the record over from a live one
        second = load_settings(environ={"CDSW_DATA_DIR": str(tmp_path / "second")})
        assert instance.register(second, pointer) is None
        assert json.loads(pointer.read_text())["pid"] == record["pid"]
    finally:
        out = stop(proc)
    assert "find this instance through %s" % pointer in out
    assert not pointer.exists()  # removed on the way out
    after = subprocess.run(CDSW + ["status"], capture_output=True, text=True, timeout=60,
                           env=_bare_env(pointer), cwd=str(tmp_path))
    assert "Instance:" not in after.stdout


def test_a_dead_instances_record_is_ignored(tmp_path: Path) -> None:
    props = tmp_path / "instance.properties"
    props.write_text("")
    pointer = tmp_path / "instance.json"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pointer.write_text(json.dumps({"pid": dead.pid, "properties": str(props)}))
    assert instance.read(pointer) is None
    pointer.write_text("{not json")
    assert instance.read(pointer) is None


def test_own_configuration_wins_over_the_instance(tmp_path: Path) -> None:
    assert instance.configured_elsewhere(None, None, {"PATH": "/bin"}) is False
    assert instance.configured_elsewhere(None, None, {"CDSW_HTTP_PORT": "1"}) is True
    assert instance.configured_elsewhere(None, None, {"CDSW_PROJECT": "x"}) is False  # engine var
    assert instance.configured_elsewhere("/x/cdsw.conf", None, {}) is True
    assert instance.configured_elsewhere(None, "/x/cdsw.properties", {}) is True
