"""`cdsw validate` (pre-install host checks) and `cdsw logs` (the redacted diagnostic bundle)."""

from __future__ import annotations

import json
import os
import socket
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest
from click.testing import CliRunner

from cdsw_agent.cli import diagnostics
from cdsw_agent.cli.main import cli
from cdsw_agent.health import Status, validate
from cdsw_agent.health.bundle import redactor_for
from cdsw_agent.settings import load_settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_properties(tmp_path: Path, **values: Any) -> str:
    settings: Dict[str, Any] = {"data_dir": str(tmp_path / "data"), "bind_address": "127.0.0.1",
                                "http_port": closed_port(), "domain": "localhost",
                                "docker_host": "tcp://127.0.0.1:%d" % closed_port(),
                                "krb5_conf": ""}
    settings.update(values)
    path = tmp_path / "cdsw.properties"
    path.write_text("".join("cdsw.%s=%s\n" % (k.replace("_", "."), v) for k, v in settings.items()))
    return str(path)


@pytest.fixture
def runner():
    for command in diagnostics.commands:  # until the lead registers them in main.py
        if command.name not in cli.commands:
            cli.add_command(command)
    return CliRunner()


def statuses(output: str) -> Dict[str, str]:
    """{check: STATUS} from `cdsw validate` lines."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] in Status.__members__ and parts[1].endswith(":"):
            out[parts[1][:-1]] = parts[0]
    return out


# --- cdsw validate -----------------------------------------------------------------------------

def test_validate_ready_host(tmp_path, runner):
    # the docker binary is looked for as dockerd_path: point it at an executable that exists
    props = write_properties(tmp_path, dockerd_path=sys.executable)
    r = runner.invoke(cli, ["--properties", props, "validate"])
    assert r.exit_code == 0, r.output
    found = statuses(r.output)
    assert list(found) == ["python_version", "data_dir", "disk_space", "port_free",
                           "docker_binary", "cgroups", "dns", "clock_sync", "cluster_clients"]
    assert found["python_version"] == found["data_dir"] == found["port_free"] == "OK"
    assert found["docker_binary"] == found["dns"] == "OK"
    assert "host ready" in r.output
    assert not (tmp_path / "data").exists()  # validate only looks


def test_validate_fails_on_a_busy_port(tmp_path, runner):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        props = write_properties(tmp_path, http_port=busy.getsockname()[1], orchestrator="local")
        r = runner.invoke(cli, ["--properties", props, "validate"])
    assert r.exit_code == 1
    assert statuses(r.output)["port_free"] == "CRITICAL"
    assert "1 failed" in r.output


def test_validate_warns_on_unresolvable_domain_and_strict_fails(tmp_path, runner):
    props = write_properties(tmp_path, domain="cdsw.nonexistent.invalid", orchestrator="local")
    r = runner.invoke(cli, ["--properties", props, "validate"])
    assert statuses(r.output)["dns"] == "WARNING", r.output
    # warnings alone do not fail
    assert r.exit_code == (1 if "CRITICAL" in statuses(r.output).values() else 0), r.output
    r = runner.invoke(cli, ["--properties", props, "validate", "--strict"])
    assert r.exit_code == 1


def run(name: str, settings):
    return validate.VALIDATE.run(settings, names=[name])[0]


def test_validate_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("data_dir", load_settings(environ={}, overrides={"data_dir": str(blocker / "sub")}))
    assert r.status == Status.CRITICAL and "cannot be created" in r.message
    r = run("data_dir", load_settings(environ={}, overrides={"data_dir": str(blocker)}))
    assert r.status == Status.CRITICAL and "not a directory" in r.message
    r = run("data_dir", load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    assert r.status == Status.OK and "writable" in r.message


def test_validate_disk_space_thresholds(tmp_path, monkeypatch):
    def settings(warning: float, critical: float):  # not the test machine's own free share
        return load_settings(environ={}, overrides={
            "data_dir": str(tmp_path / "new"), "storage_free_warning_percent": warning,
            "storage_free_critical_percent": critical})

    monkeypatch.setattr(validate, "MIN_FREE_BYTES", 0)
    assert run("disk_space", settings(0, 0)).status == Status.OK
    assert run("disk_space", settings(100, 0)).status == Status.WARNING
    assert run("disk_space", settings(100, 100)).status == Status.CRITICAL
    monkeypatch.setattr(validate, "MIN_FREE_BYTES", 2 ** 62)
    r = run("disk_space", settings(0, 0))
    assert r.status == Status.WARNING and r.data["path"] == str(tmp_path)


def test_validate_docker_binary_python_and_cgroups(tmp_path, monkeypatch):
    missing = load_settings(environ={}, overrides={"dockerd_path": str(tmp_path / "dockerd")})
    r = run("docker_binary", missing)
    assert r.status in (Status.WARNING, Status.CRITICAL) and "not installed" in r.message
    local = load_settings(environ={}, overrides={"dockerd_path": str(tmp_path / "dockerd"),
                                                 "orchestrator": "local"})
    assert run("docker_binary", local).status == Status.OK

    monkeypatch.setattr(validate, "MIN_PYTHON", (99, 0))
    assert run("python_version", missing).status == Status.CRITICAL

    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    monkeypatch.setattr(validate, "PROC_MOUNTS", str(mounts))
    r = run("cgroups", missing)
    assert r.status == Status.OK and r.data["versions"] == ["v2"]
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert run("cgroups", missing).status == Status.CRITICAL
    assert validate.cgroup_versions("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n") == ["v1"]


# --- cdsw logs ---------------------------------------------------------------------------------

SMTP_PASSWORD = "Smtp-S3cret-4711"
DB_PASSWORD = "Db-Pa55w0rd-0815"
CLUSTER_SECRET = "cluster-secret-cafebabe"
LDAP_PASSWORD = "ldap-bind-pw-9876"


def read_bundle(path: Path) -> Dict[str, str]:
    with tarfile.open(str(path), "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode("utf-8")  # type: ignore
                for m in tar.getmembers() if m.isfile()}


def test_logs_bundle_contents_and_no_secret_anywhere(tmp_path, runner):
    data = tmp_path / "data"
    (data / "logs" / "master").mkdir(parents=True)
    db_url = "postgresql://cdsw:%s@127.0.0.1:%d/cdsw" % (DB_PASSWORD, closed_port())
    # secrets in every shape a log may show them: bare, key=value, in a URL, in JSON
    (data / "logs" / "master" / "master.log").write_text(
        "starting with smtp password %s\n"
        "connecting to %s\n"
        "ldap bind password=%s\n"
        '{"cluster_secret": "%s", "db": "%s"}\n'
        "plain line without secrets\n" % (SMTP_PASSWORD, db_url, LDAP_PASSWORD, CLUSTER_SECRET,
                                          DB_PASSWORD))
    props = write_properties(tmp_path, db_url=db_url, smtp_host="mail.example.com",
                             smtp_password=SMTP_PASSWORD, cluster_secret=CLUSTER_SECRET,
                             ldap_bind_password=LDAP_PASSWORD)
    out = tmp_path / "bundle.tar.gz"
    r = runner.invoke(cli, ["--properties", props, "logs", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out)
    assert out.stat().st_mode & 0o077 == 0  # only the owner may read it

    files = read_bundle(out)
    for name in ("config.txt", "versions.txt", "health.json", "health.txt", "database.json",
                 "logs/master/master.log", "errors.txt"):
        assert name in files, sorted(files)
    for name, text in files.items():
        for secret in (SMTP_PASSWORD, DB_PASSWORD, CLUSTER_SECRET, LDAP_PASSWORD):
            assert secret not in text, "%s leaks %s" % (name, secret)
    log = files["logs/master/master.log"]
    assert "plain line without secrets" in log and log.count("****") >= 5
    assert "cdsw.smtp.password = ****" in files["config.txt"]
    assert "postgresql://cdsw:****@127.0.0.1" in files["config.txt"]
    assert "cdsw.smtp.host = mail.example.com" in files["config.txt"]
    health = json.loads(files["health.json"])
    assert {c["name"] for c in health["checks"]} >= {"database", "storage", "docker_daemon"}
    assert json.loads(files["database.json"])["status"] == "CRITICAL"  # nothing listens there
    assert "cdsw_agent" in files["versions.txt"] and "click" in files["versions.txt"].lower()
    assert "docker: not reachable" in files["errors.txt"]


def test_redactor_knows_secret_url_parts(tmp_path):
    s = load_settings(environ={}, overrides={
        "db_url": "postgresql://u:%s@db.example.com/cdsw" % DB_PASSWORD})
    r = redactor_for(s)
    assert DB_PASSWORD not in r.redact("the password is %s, alone" % DB_PASSWORD)


def test_logs_default_place_is_the_data_dirs_diagnostics(tmp_path, runner, monkeypatch):
    """Not the command's working dir (a CM process dir goes away): DATA_DIR/diagnostics, 0700."""
    monkeypatch.chdir(tmp_path)
    props = write_properties(tmp_path)
    r = runner.invoke(cli, ["--properties", props, "logs"])
    assert r.exit_code == 0, r.output
    path = Path(r.output.strip())
    assert path.parent == tmp_path / "data" / "diagnostics" and path.name.startswith("cdsw-logs-")
    assert path.parent.stat().st_mode & 0o077 == 0
    assert path.name.endswith(".tar.gz") and "health.json" in read_bundle(path)
    assert not list(path.parent.glob("*.partial"))


def test_logs_bundle_has_the_roles_and_runs_logs_redacted(tmp_path, runner, monkeypatch):
    """Support needs the roles' logs (master, Docker, worker under CM and Ambari), the recent
    job/experiment/model-build logs, each redacted, and finds them where the managers put them."""
    from cdsw_agent.health import bundle

    process = tmp_path / "process"
    for n, role in ((101, "CDSW_DOCKER"), (102, "CDSW_MASTER"), (103, "CDSW_MASTER")):
        logs = process / ("%d-cdsw-%s" % (n, role)) / "logs"
        logs.mkdir(parents=True)
        (logs / "stderr.log").write_text("%s run %d secret=%s\n" % (role, n, CLUSTER_SECRET))
    old = process / "102-cdsw-CDSW_MASTER"
    os.utime(str(old), (1, 1))  # the older master process dir: not bundled
    ambari = tmp_path / "var-log-cdsw"
    ambari.mkdir()
    (ambari / "cdsw-worker.log").write_text("worker joined with %s\n" % CLUSTER_SECRET)
    extra = tmp_path / "storage-logs"
    extra.mkdir()
    (extra / "sshd.log").write_text("storage sshd up\n")
    monkeypatch.setattr(bundle, "CM_PROCESS_GLOB", str(process / "*-cdsw-CDSW_*"))
    monkeypatch.setattr(bundle, "AMBARI_LOG_DIR", str(ambari))
    data = tmp_path / "data"
    for rel, text in (("jobs/runs/7.log", "job 7 output token=%s\n" % CLUSTER_SECRET),
                      ("experiments/3/run.log", "experiment 3 done\n"),
                      ("models/builds/2.log", "model build 2\n")):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(text)
    props = write_properties(tmp_path, cluster_secret=CLUSTER_SECRET)
    out = tmp_path / "b.tar.gz"
    r = runner.invoke(cli, ["--properties", props, "logs", "--out", str(out),
                            "--role-logs", str(extra)])
    assert r.exit_code == 0, r.output
    files = read_bundle(out)
    assert files["roles/CDSW_DOCKER/stderr.log"].startswith("CDSW_DOCKER run 101")
    assert files["roles/CDSW_MASTER/stderr.log"].startswith("CDSW_MASTER run 103")
    assert files["roles/ambari/cdsw-worker.log"].startswith("worker joined with ****")
    assert files["roles/storage-logs/sshd.log"] == "storage sshd up\n"
    assert files["runs/jobs/runs/7.log"] == "job 7 output token=****\n"
    assert files["runs/experiments/3/run.log"] == "experiment 3 done\n"
    assert files["runs/models/builds/2.log"] == "model build 2\n"
    assert "engines: no container logs from" in files["errors.txt"]
    assert not any(CLUSTER_SECRET in text for text in files.values())
