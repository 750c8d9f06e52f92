"""Health checks: the registry, every check's OK/WARNING/CRITICAL/UNKNOWN paths against real
files, a real SQLite database, real certificates and real HTTP servers (a fake Docker Engine API
on loopback for the docker SDK), `cdsw health` exit codes, and /metrics."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

from cdsw_agent.cli import health as health_cli
from cdsw_agent.cli.main import cli
from cdsw_agent.health import (REGISTRY, HealthContext, Registry, Status, UnknownCheck,
                               prometheus, report, worst)
from cdsw_agent.health.registry import ok, warning
from cdsw_agent.orchestrators.base import Node, WorkloadRef, WorkloadStatus
from cdsw_agent.settings import load_settings
from cdsw_agent.store.db import Database

ALL_CHECKS = ["docker_daemon", "swarm_membership", "swarm_nodes", "engine_isolation",
              "engine_image", "master_api",
              "clock_skew", "database", "storage", "hadoop_client_configs", "kerberos",
              "cluster_clients",
              "tls_certificate"]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(tmp_path: Path, **overrides: Any):
    values = {"data_dir": str(tmp_path / "data"), "master_host": "127.0.0.1",
              "docker_host": "tcp://127.0.0.1:%d" % closed_port(), "http_port": closed_port(),
              "krb5_conf": ""}
    values.update(overrides)
    return load_settings(environ={}, overrides=values)


def run_check(name: str, settings) -> "Any":
    return REGISTRY.run(settings, names=[name])[0]


# --- small real servers on loopback --------------------------------------------------------

class Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose handler answers from `routes`."""

    def __init__(self, handler: type):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class DockerApi(JsonHandler):
    """Just enough of the Docker Engine API for the docker SDK calls the checks make."""

    def do_GET(self) -> None:
        state = self.server.owner.state  # type: ignore[attr-defined]
        url = urlparse(self.path)
        path = re.sub(r"^/v[0-9.]+", "", url.path)
        if path == "/_ping":
            data = b"OK"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
        elif path == "/version":
            self.send_json(200, {"Version": "24.0.7", "ApiVersion": "1.43",
                                 "MinAPIVersion": "1.12"})
        elif path == "/info":
            self.send_json(200, {"ID": "x", "Swarm": state["swarm"]})
        elif path == "/networks/bridge":
            self.send_json(200, {"Name": "bridge", "Options": state["bridge"]})
        elif path == "/nodes":
            self.send_json(200, state["nodes"])
        elif path == "/images/json":
            wanted = json.loads(parse_qs(url.query).get("filters", ["{}"])[0]).get("label", [])
            self.send_json(200, [{"Id": i["Id"], "RepoTags": i["RepoTags"]} for i in state["images"]
                                 if all(w in i["Config"]["Labels"] for w in wanted)])
        elif path.startswith("/images/") and path.endswith("/json"):
            image_id = path[len("/images/"):-len("/json")]
            match = [i for i in state["images"] if i["Id"] == image_id]
            self.send_json(200 if match else 404,
                           match[0] if match else {"message": "no such image"})
        else:
            self.send_json(404, {"message": "page not found"})


def node(hostname: str, state: str, availability: str = "active") -> Dict[str, Any]:
    return {"ID": "id-" + hostname, "Description": {"Hostname": hostname},
            "Status": {"State": state}, "Spec": {"Availability": availability, "Role": "worker"}}


MANAGER = {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "abcdef1234567890",
           "NodeAddr": "10.0.0.1"}
ENGINE = {"Id": "sha256:" + "e" * 64, "RepoTags": ["cdsw/engine:1.0"],
          "Config": {"Labels": {"com.cdsw.engine.version": "1.0"}}}
OTHER = {"Id": "sha256:" + "f" * 64, "RepoTags": ["debian:bookworm"], "Config": {"Labels": {}}}


@pytest.fixture
def docker_api():
    server = Server(DockerApi)
    server.state = {"swarm": dict(MANAGER), "nodes": [node("gw1", "ready")],  # type: ignore
                    "images": [ENGINE, OTHER],
                    "bridge": {"com.docker.network.bridge.enable_icc": "false"}}
    yield server
    server.close()


class MasterApi(JsonHandler):
    """/healthz as the master answers it, with a Date header off by `offset` seconds."""

    def date_time_string(self, timestamp: Any = None) -> str:
        owner = self.server.owner  # type: ignore[attr-defined]
        return email.utils.formatdate(time.time() + owner.offset, usegmt=True)

    def do_GET(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        self.send_json(owner.status, owner.body)


@pytest.fixture
def master_api():
    server = Server(MasterApi)
    server.offset, server.status = 0.0, 200  # type: ignore[attr-defined]
    server.body = {"status": "ok", "version": "0.1.0", "checks": {"database": "ok"}}  # type: ignore
    yield server
    server.close()


# --- the registry ----------------------------------------------------------------------------

def test_registry_lists_every_check_with_roles_and_description():
    assert REGISTRY.names() == ALL_CHECKS
    for check in REGISTRY.select():
        assert check.description and check.roles
    assert [c.name for c in REGISTRY.select(role="docker")] == ["docker_daemon"]
    worker = [c.name for c in REGISTRY.select(role="worker")]
    assert "database" not in worker and "tls_certificate" not in worker and "storage" in worker


def test_registry_rejects_unknown_names_and_roles_and_duplicates():
    with pytest.raises(UnknownCheck) as e:
        REGISTRY.select(["database", "nosuch"])
    assert "nosuch" in str(e.value) and "database" in str(e.value)  # the message lists the names
    with pytest.raises(ValueError):
        REGISTRY.select(role="gateway")
    reg = Registry()
    reg.register("a", "A")(lambda ctx: ok("fine"))
    with pytest.raises(ValueError):
        reg.register("a", "again")(lambda ctx: ok("fine"))
    with pytest.raises(ValueError):
        reg.register("b", "B", roles=("gateway",))


def test_registry_turns_exceptions_bad_returns_and_hangs_into_unknown(tmp_path):
    reg = Registry()
    reg.register("fine", "F")(lambda ctx: warning("careful", n=1))

    @reg.register("raises", "R")
    def raises(ctx):
        raise RuntimeError("boom\nsecond line")

    reg.register("bad_return", "B")(lambda ctx: "OK")

    @reg.register("hangs", "H", timeout=0.3)
    def hangs(ctx):
        time.sleep(3)
        return ok("too late")

    start = time.monotonic()
    results = {r.name: r for r in reg.run(make_settings(tmp_path))}
    assert time.monotonic() - start < 2
    assert list(results) == ["fine", "raises", "bad_return", "hangs"]
    assert results["fine"].status == Status.WARNING and results["fine"].data == {"n": 1}
    assert results["raises"].status == Status.UNKNOWN
    assert results["raises"].message == "check failed: RuntimeError: boom"
    assert results["bad_return"].status == Status.UNKNOWN
    assert results["hangs"].status == Status.UNKNOWN
    assert "did not finish" in results["hangs"].message


def test_worst_status_ranks_critical_over_warning_over_unknown():
    assert worst([]) == Status.OK
    assert worst([Status.OK, Status.UNKNOWN]) == Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.WARNING]) == Status.WARNING
    assert worst([Status.WARNING, Status.CRITICAL, Status.UNKNOWN]) == Status.CRITICAL


def test_context_caches_values_and_failures(tmp_path):
    ctx = HealthContext(make_settings(tmp_path))
    calls = []
    assert ctx.cached("k", lambda: calls.append(1) or 42) == 42
    assert ctx.cached("k", lambda: calls.append(1) or 43) == 42
    assert calls == [1]

    def fail():
        calls.append(2)
        raise OSError("down")

    for _ in range(2):
        with pytest.raises(OSError):
            ctx.cached("bad", fail)
    assert calls == [1, 2]


# --- docker checks ---------------------------------------------------------------------------

def test_docker_daemon_ok_and_critical(tmp_path, docker_api):
    good = make_settings(tmp_path, docker_host="tcp://127.0.0.1:%d" % docker_api.port)
    r = run_check("docker_daemon", good)
    assert r.status == Status.OK and "24.0.7" in r.message
    r = run_check("docker_daemon", make_settings(tmp_path))
    assert r.status == Status.CRITICAL
    assert "connection refused" in r.message and "CDSW_DOCKER" in r.message
    r = run_check("docker_daemon", make_settings(tmp_path, orchestrator="local"))
    assert r.status == Status.OK and "not used" in r.message


@pytest.mark.parametrize("state,expected", [
    ("active", Status.OK), ("pending", Status.WARNING), ("inactive", Status.CRITICAL),
    ("error", Status.CRITICAL)])
def test_swarm_membership_states(tmp_path, docker_api, state, expected):
    docker_api.state["swarm"] = dict(MANAGER, LocalNodeState=state, Error="cert expired")
    r = run_check("swarm_membership", make_settings(
        tmp_path, docker_host="tcp://127.0.0.1:%d" % docker_api.port))
    assert r.status == expected, r.message
    assert r.data["state"] == state


def test_swarm_membership_unknown_without_docker(tmp_path):
    r = run_check("swarm_membership", make_settings(tmp_path))
    assert r.status == Status.UNKNOWN and "cannot reach Docker" in r.message


def test_swarm_nodes_readiness(tmp_path, docker_api):
    s = make_settings(tmp_path, docker_host="tcp://127.0.0.1:%d" % docker_api.port)
    docker_api.state["nodes"] = [node("gw1", "ready"), node("gw2", "ready", "drain")]
    r = run_check("swarm_nodes", s)
    assert r.status == Status.OK and r.data["ready"] == 2 and "gw2" in r.message
    docker_api.state["nodes"] = [node("gw1", "ready"), node("gw2", "down")]
    r = run_check("swarm_nodes", s)
    assert r.status == Status.WARNING and "gw2 (down)" in r.message
    docker_api.state["nodes"] = [node("gw1", "down"), node("gw2", "unknown")]
    assert run_check("swarm_nodes", s).status == Status.CRITICAL
    docker_api.state["swarm"] = dict(MANAGER, ControlAvailable=False)  # a worker cannot list
    r = run_check("swarm_nodes", s)
    assert r.status == Status.OK and "not a swarm manager" in r.message


def test_engine_isolation_says_when_the_bridge_lets_containers_talk(tmp_path, docker_api):
    s = make_settings(tmp_path, docker_host="tcp://127.0.0.1:%d" % docker_api.port)
    r = run_check("engine_isolation", s)
    assert r.status == Status.OK and "icc disabled" in r.message
    for options in ({"com.docker.network.bridge.enable_icc": "true"}, {}):  # {}: Docker's default
        docker_api.state["bridge"] = options
        r = run_check("engine_isolation", s)
        assert r.status == Status.WARNING and "restart the CDSW_DOCKER role" in r.message
    r = run_check("engine_isolation", make_settings(tmp_path, docker_host="tcp://127.0.0.1:%d"
                                                    % closed_port()))
    assert r.status == Status.UNKNOWN


def test_engine_image_present_or_missing(tmp_path, docker_api):
    s = make_settings(tmp_path, docker_host="tcp://127.0.0.1:%d" % docker_api.port)
    r = run_check("engine_image", s)
    assert r.status == Status.OK and "cdsw/engine:1.0" in r.message
    assert [i["version"] for i in r.data["images"]] == ["1.0"]
    # a model build carries the engine label of its base image, but is no engine image
    from cdsw_agent.health.docker_checks import MODEL_BUILD_LABEL
    from cdsw_agent.models.builds import BUILD_LABEL
    assert MODEL_BUILD_LABEL == BUILD_LABEL
    build = {"Id": "sha256:" + "b" * 64, "RepoTags": ["cdsw/model:m1-b1"], "Config": {"Labels": {
        "com.cdsw.engine.version": "1.0", BUILD_LABEL: "1"}}}
    docker_api.state["images"] = [ENGINE, build]
    r = run_check("engine_image", s)
    assert r.status == Status.OK and r.message.startswith("1 engine image(s)"), r.message
    docker_api.state["images"] = [OTHER]  # an image without the engine label does not count
    r = run_check("engine_image", s)
    assert r.status == Status.CRITICAL and "cdsw images build" in r.message


# --- master API and clock ------------------------------------------------------------------

def test_master_api_ready_not_ready_and_down(tmp_path, master_api):
    s = make_settings(tmp_path, http_port=master_api.port)
    r = run_check("master_api", s)
    assert r.status == Status.OK and r.data["http_status"] == 200
    master_api.status = 503
    master_api.body = {"status": "unavailable", "checks": {"database": "unavailable: locked"}}
    r = run_check("master_api", s)
    assert r.status == Status.CRITICAL and "database: unavailable: locked" in r.message
    r = run_check("master_api", make_settings(tmp_path))
    assert r.status == Status.CRITICAL and "does not answer" in r.message


@pytest.mark.parametrize("offset,expected", [(0, Status.OK), (-2, Status.OK), (12, Status.WARNING),
                                             (-12, Status.WARNING), (90, Status.CRITICAL)])
def test_clock_skew_against_master_date(tmp_path, master_api, offset, expected):
    master_api.offset = offset
    r = run_check("clock_skew", make_settings(tmp_path, http_port=master_api.port))
    assert r.status == expected, r.message
    assert abs(r.data["skew_seconds"] + offset) < 2  # local minus master


def test_clock_skew_unknown_without_master(tmp_path):
    assert run_check("clock_skew", make_settings(tmp_path)).status == Status.UNKNOWN


# --- database --------------------------------------------------------------------------------

def migrated(settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    return db


def test_database_missing_empty_and_current(tmp_path):
    s = make_settings(tmp_path)
    r = run_check("database", s)
    assert r.status == Status.CRITICAL and "does not exist" in r.message
    assert not Path(s.data_dir, "cdsw.db").exists()  # the check did not create it
    Path(s.data_dir).mkdir(parents=True)
    Database(s.database_url).engine.connect().close()  # an empty database file
    r = run_check("database", s)
    assert r.status == Status.CRITICAL and "cdsw db upgrade" in r.message
    db = migrated(s)
    r = run_check("database", s)
    assert r.status == Status.OK
    assert r.message == "at revision %s (newest)" % db.head_revision()
    assert report.line(r) == "OK       database: at revision %s (newest)" % db.head_revision()


def test_database_behind_and_ahead(tmp_path, monkeypatch):
    import cdsw_agent.store.db as store_db

    s = make_settings(tmp_path)
    db = migrated(s)
    head = db.head_revision()
    # a newer software version: its migrations have one more revision on top of ours
    newer = tmp_path / "migrations"
    shutil.copytree(store_db.MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "9999_future.py").write_text(
        'revision = "9999"\ndown_revision = "%s"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n" % head)
    monkeypatch.setattr(store_db, "MIGRATIONS", newer)
    r = run_check("database", s)
    assert r.status == Status.WARNING
    assert "1 migration(s) behind 9999" in r.message and "cdsw db upgrade" in r.message
    monkeypatch.undo()
    # a database migrated by a newer version than this one
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff0000'")
    r = run_check("database", s)
    assert r.status == Status.CRITICAL and "newer than the software" in r.message


# --- storage ---------------------------------------------------------------------------------

def test_storage_thresholds(tmp_path, monkeypatch):
    # thresholds of the test's own, not the test machine's free share
    s = make_settings(tmp_path, storage_free_warning_percent=0, storage_free_critical_percent=0)
    assert run_check("storage", s).status == Status.CRITICAL  # not created yet
    Path(s.data_dir).mkdir(parents=True)
    r = run_check("storage", s)
    assert r.status == Status.OK and 0 < r.data["free_percent"] <= 100
    assert list(Path(s.data_dir).iterdir()) == []  # the probe file is gone
    s = make_settings(tmp_path, storage_free_warning_percent=100, storage_free_critical_percent=0)
    r = run_check("storage", s)
    assert r.status == Status.WARNING and "free space soon" in r.message
    s = make_settings(tmp_path, storage_free_warning_percent=100, storage_free_critical_percent=100)
    r = run_check("storage", s)
    assert r.status == Status.CRITICAL and "free space now" in r.message
    # the defaults: a warning below 10 % free, critical below 5 %
    defaults = make_settings(tmp_path)
    assert (defaults.storage_free_warning_percent, defaults.storage_free_critical_percent) == \
        (10.0, 5.0)


def test_storage_not_writable(tmp_path):
    # /proc refuses new files even to root
    r = run_check("storage", make_settings(tmp_path, data_dir="/proc"))
    assert r.status == Status.CRITICAL and "not writable" in r.message


# --- Hadoop client configs ----------------------------------------------------------------------

SITE = '<?xml version="1.0"?>\n<configuration><property><name>fs.defaultFS</name>' \
       '<value>hdfs://nn:8020</value></property></configuration>\n'


def test_hadoop_client_configs(tmp_path):
    assert run_check("hadoop_client_configs", make_settings(tmp_path)).message == "none configured"
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text(SITE)
    (conf / "hdfs-site.xml").write_text(SITE)
    (conf / "log4j.properties").write_text("x=y\n")
    r = run_check("hadoop_client_configs", make_settings(tmp_path, hadoop_conf_dirs=[str(conf)]))
    assert r.status == Status.OK and r.data["dirs"][str(conf)] == ["core-site.xml", "hdfs-site.xml"]

    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_check("hadoop_client_configs", make_settings(tmp_path, hadoop_conf_dirs=[str(conf),
                                                                                     str(empty)]))
    assert r.status == Status.WARNING and str(empty) in r.message

    (conf / "yarn-site.xml").write_text("<configuration><property></configuration>")
    r = run_check("hadoop_client_configs", make_settings(tmp_path, hadoop_conf_dirs=[str(conf)]))
    assert r.status == Status.CRITICAL and "yarn-site.xml is not valid XML" in r.message
    (conf / "yarn-site.xml").write_text("<html></html>")
    r = run_check("hadoop_client_configs", make_settings(tmp_path, hadoop_conf_dirs=[str(conf)]))
    assert r.status == Status.CRITICAL and "not a Hadoop configuration" in r.message

    r = run_check("hadoop_client_configs",
                  make_settings(tmp_path, hadoop_conf_dirs=[str(tmp_path / "missing")]))
    assert r.status == Status.CRITICAL and "does not exist" in r.message


# --- Kerberos --------------------------------------------------------------------------------

def test_kerberos(tmp_path):
    r = run_check("kerberos", make_settings(tmp_path, krb5_conf=""))
    assert r.status == Status.OK and "not configured" in r.message
    r = run_check("kerberos", make_settings(tmp_path, krb5_conf=str(tmp_path / "krb5.conf")))
    assert r.status == Status.OK and "does not exist" in r.message
    krb5 = tmp_path / "krb5.conf"
    krb5.write_text("[libdefaults]\n  default_realm = EXAMPLE.COM\n[realms]\n EXAMPLE.COM = {\n"
                    "  kdc = kdc.example.com\n }\n")
    r = run_check("kerberos", make_settings(tmp_path, krb5_conf=str(krb5)))
    assert r.status == Status.OK and r.data["realm"] == "EXAMPLE.COM"
    krb5.write_text("[realms]\n")
    r = run_check("kerberos", make_settings(tmp_path, krb5_conf=str(krb5)))
    assert r.status == Status.WARNING and "default_realm" in r.message
    r = run_check("kerberos", make_settings(tmp_path, krb5_conf=str(tmp_path)))  # a directory
    assert r.status == Status.CRITICAL and "not readable" in r.message


# --- TLS certificate ---------------------------------------------------------------------------

def make_cert(folder: Path, days: float, names=("cdsw.example.com", "*.cdsw.example.com"),
              start_days_ago: float = 1, other_key: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=start_days_ago))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(key, hashes.SHA256()))
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_settings(tmp_path, cert, key, domain="cdsw.example.com"):
    return make_settings(tmp_path, tls_enable=True, tls_cert=str(cert), tls_key=str(key),
                         domain=domain)


def test_tls_off_and_valid(tmp_path):
    assert run_check("tls_certificate", make_settings(tmp_path)).message == "TLS is off"
    cert, key = make_cert(tmp_path, 365)
    r = run_check("tls_certificate", tls_settings(tmp_path, cert, key))
    assert r.status == Status.OK, r.message
    assert 363 <= r.data["days_left"] <= 365
    # the wildcard covers engine subdomains and the domain's hosts
    r = run_check("tls_certificate", tls_settings(tmp_path, cert, key, domain="x.cdsw.example.com"))
    assert r.status == Status.OK


@pytest.mark.parametrize("days,expected,words", [(20, Status.WARNING, "renew it soon"),
                                                 (3, Status.CRITICAL, "renew it now"),
                                                 (-1, Status.CRITICAL, "expired")])
def test_tls_expiry(tmp_path, days, expected, words):
    cert, key = make_cert(tmp_path, days, start_days_ago=10)
    r = run_check("tls_certificate", tls_settings(tmp_path, cert, key))
    assert r.status == expected and words in r.message, r.message


def test_tls_broken_files(tmp_path):
    cert, key = make_cert(tmp_path, 365)
    r = run_check("tls_certificate", tls_settings(tmp_path, tmp_path / "missing.pem", key))
    assert r.status == Status.CRITICAL and "not readable" in r.message
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    r = run_check("tls_certificate", tls_settings(tmp_path, garbage, key))
    assert r.status == Status.CRITICAL and "not a PEM certificate" in r.message
    other = tmp_path / "other"
    other.mkdir()
    cert2, key2 = make_cert(other, 365, other_key=True)
    r = run_check("tls_certificate", tls_settings(tmp_path, cert2, key2))
    assert r.status == Status.CRITICAL and "does not belong" in r.message
    r = run_check("tls_certificate", tls_settings(tmp_path, cert, key, domain="other.example.org"))
    assert r.status == Status.WARNING and "does not name the domain" in r.message


# --- `cdsw health` -----------------------------------------------------------------------------

@pytest.fixture
def runner():
    if "health" not in cli.commands:  # until the lead registers it in main.py
        cli.add_command(health_cli.command)
    return CliRunner()


def properties(tmp_path: Path, **values: Any) -> str:
    settings = {"data_dir": str(tmp_path / "data"), "http_port": closed_port(),
                "docker_host": "tcp://127.0.0.1:%d" % closed_port(), "krb5_conf": ""}
    settings.update(values)
    path = tmp_path / "cdsw.properties"
    path.write_text("".join("cdsw.%s=%s\n" % (k.replace("_", "."), v) for k, v in settings.items()))
    return str(path)


def health(runner, props: str, *args: str):
    return runner.invoke(cli, ["--properties", props, "health", *args])


def test_cli_exit_codes_follow_the_worst_check(tmp_path, runner, monkeypatch):
    props = properties(tmp_path)
    (tmp_path / "data").mkdir()
    r = health(runner, props, "--check", "storage")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("OK       storage: ")
    monkeypatch.setenv("CDSW_STORAGE_FREE_WARNING_PERCENT", "100")
    r = health(runner, props, "--check", "storage")
    assert r.exit_code == 1 and r.output.startswith("WARNING  storage: ")
    r = health(runner, props, "--check", "storage", "--check", "database")
    assert r.exit_code == 2
    assert [line.split()[1] for line in r.output.splitlines()] == ["database:", "storage:"]
    r = health(runner, props, "--check", "swarm_membership")  # no Docker: cannot tell
    assert r.exit_code == 3 and r.output.startswith("UNKNOWN  swarm_membership: ")
    r = health(runner, props, "--check", "swarm_membership", "--check", "storage")
    assert r.exit_code == 1  # a known warning outranks "cannot tell"


def test_cli_unknown_check_name_exits_3_with_the_names(tmp_path, runner):
    r = health(runner, properties(tmp_path), "--check", "nosuch")
    assert r.exit_code == 3
    assert "unknown check nosuch" in r.output and "database" in r.output and "kerberos" in r.output
    r = health(runner, properties(tmp_path), "--check", "database", "--role", "worker")
    assert r.exit_code == 3 and "unknown check database" in r.output  # not a worker check
    r = health(runner, properties(tmp_path), "--json", "--check", "nosuch")
    assert r.exit_code == 3 and json.loads(r.output)["status"] == "UNKNOWN"


def test_cli_bad_configuration_is_unknown(tmp_path, runner):
    bad = tmp_path / "bad.properties"
    bad.write_text("cdsw.http.port=eighty\n")
    r = runner.invoke(cli, ["--properties", str(bad), "health"])
    assert r.exit_code == 3 and "configuration" in r.output


def test_cli_json_and_role(tmp_path, runner):
    props = properties(tmp_path)
    migrated(load_settings(properties_path=props, environ={}))
    r = health(runner, props, "--json", "--role", "master")
    doc = json.loads(r.output)
    names = [c["name"] for c in doc["checks"]]
    assert names == [c.name for c in REGISTRY.select(role="master")]
    assert doc["status"] == "CRITICAL" and doc["code"] == r.exit_code == 2  # no Docker here
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["database"]["status"] == "OK" and by_name["database"]["code"] == 0
    assert by_name["docker_daemon"]["status"] == "CRITICAL"
    assert sum(doc["counts"].values()) == len(names)
    r = health(runner, props, "--json", "--role", "docker")
    assert [c["name"] for c in json.loads(r.output)["checks"]] == ["docker_daemon"]
    r = health(runner, props, "--list", "--role", "worker")
    assert r.exit_code == 0 and "database" not in r.output and "clock_skew" in r.output


# --- /metrics ----------------------------------------------------------------------------------

class FakeOrchestrator:
    """The three read-only calls of the orchestrator interface /metrics uses."""

    name = "fake"

    def __init__(self, fail: bool = False):
        self.fail = fail

    def nodes(self) -> List[Node]:
        if self.fail:
            raise ConnectionError("swarm manager unreachable")
        return [Node("gw1", "10.0.0.1", "ready", 4.0, 8 * 2 ** 30, 1.5, 2 ** 30),
                Node("gw2", "10.0.0.2", "ready", 2.0, 4 * 2 ** 30, 0.5, 2 ** 29),
                Node("gw3", "10.0.0.3", "down", 8.0, 16 * 2 ** 30)]

    def list(self) -> List[WorkloadRef]:
        return [WorkloadRef(str(i), "w%d" % i) for i in range(4)]

    def status(self, workload_id: str) -> WorkloadStatus:
        return WorkloadStatus("running" if workload_id in ("0", "1", "2") else "pending")


SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.]+(e[-+]?[0-9]+)?|NaN|[+-]Inf)$')


def parse_metrics(text: str) -> Dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


@pytest.fixture
def app_settings(tmp_path):
    s = make_settings(tmp_path)
    migrated(s)
    return s


def metrics_client(settings, host: str = "127.0.0.1"):
    from fastapi.testclient import TestClient

    from cdsw_agent.server.app import create_app

    app = create_app(settings)
    if not any(getattr(route, "path", "") == "/metrics" for route in app.routes):
        from cdsw_agent.server.routes import metrics  # until the lead adds it to ROOT_ROUTERS

        app.include_router(metrics.router)
    return app, TestClient(app, client=(host, 40000))


def test_metrics_from_loopback(app_settings):
    from cdsw_agent import __version__

    app, client = metrics_client(app_settings)
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(r.text)
    assert m["cdsw_up"] == 1
    assert m['cdsw_info{version="%s"}' % __version__] == 1
    assert m['cdsw_health_check_status{check="database"}'] == 0
    assert m['cdsw_health_check_status{check="docker_daemon"}'] == 2
    assert m['cdsw_health_check_status{check="swarm_membership"}'] == 3
    assert 'cdsw_health_check_status{check="master_api"}' not in m  # no calls to itself
    assert m["cdsw_orchestrator_up"] == 0  # none attached yet
    assert r.text.count("# TYPE cdsw_health_check_status gauge") == 1


def test_metrics_with_an_orchestrator(app_settings):
    app, client = metrics_client(app_settings)
    app.state.server.extras["orchestrator"] = FakeOrchestrator()
    m = parse_metrics(client.get("/metrics").text)
    assert m['cdsw_orchestrator_up{backend="fake"}'] == 1
    assert m['cdsw_nodes{state="ready"}'] == 2 and m['cdsw_nodes{state="down"}'] == 1
    assert m['cdsw_workloads{state="running"}'] == 3 and m['cdsw_workloads{state="pending"}'] == 1
    assert m["cdsw_cluster_cpu_capacity_cores"] == 6.0  # ready nodes only
    assert m["cdsw_cluster_cpu_allocated_cores"] == 2.0
    assert m["cdsw_cluster_memory_capacity_bytes"] == 12 * 2 ** 30
    assert m['cdsw_node_memory_allocated_bytes{node="gw2"}'] == 2 ** 29
    app.state.server.extras["orchestrator"] = FakeOrchestrator(fail=True)
    m = parse_metrics(client.get("/metrics").text)
    assert m['cdsw_orchestrator_up{backend="fake"}'] == 0 and m["cdsw_up"] == 1


def test_metrics_caches_health_between_close_scrapes(app_settings):
    app, client = metrics_client(app_settings)
    client.get("/metrics")
    first = app.state.server.extras["metrics.health"]
    client.get("/metrics")
    assert app.state.server.extras["metrics.health"] is first


def api_key(settings, admin: bool) -> str:
    from cdsw_agent.security import tokens
    from cdsw_agent.store.models import ApiKey, User

    key = tokens.new_token("cdsw_")
    with Database(settings.database_url).session() as s:
        user = User(username="admin" if admin else "alice", is_admin=admin, auth_source="ldap")
        s.add(user)
        s.flush()
        s.add(ApiKey(user_id=user.id, name="prom", prefix=key[:8], key_hash=tokens.digest(key),
                     expires_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                     + dt.timedelta(days=1)))
    return key


def test_metrics_from_elsewhere_need_a_site_admin(app_settings):
    _, client = metrics_client(app_settings, host="192.0.2.10")
    r = client.get("/metrics")
    assert r.status_code == 401 and "loopback" in r.json()["error"]
    user_key, admin_key = api_key(app_settings, False), api_key(app_settings, True)
    r = client.get("/metrics", headers={"Authorization": "Bearer " + user_key})
    assert r.status_code == 403
    r = client.get("/metrics", headers={"Authorization": "Bearer " + admin_key})
    assert r.status_code == 200 and "cdsw_up 1" in r.text


def test_exposition_escapes_label_values():
    exp = prometheus.Exposition()
    exp.gauge("x_total", "help", [({"a": 'q"b\\c\nd'}, 1.5)])
    assert 'x_total{a="q\\"b\\\\c\\nd"} 1.5' in exp.render()
    parse_metrics(prometheus.render([]))  # valid with no checks and no orchestrator


def test_context_slow_keys_do_not_block_each_other(tmp_path):
    ctx = HealthContext(make_settings(tmp_path))
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(1.0)
        return "slow"

    t = threading.Thread(target=ctx.cached, args=("slow", slow))
    t.start()
    assert started.wait(2)
    begin = time.monotonic()
    assert ctx.cached("fast", lambda: "fast") == "fast"
    assert time.monotonic() - begin < 0.5
    t.join()


def test_docker_checks_unknown_without_the_sdk(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "docker", None)  # import docker -> ImportError
    results = REGISTRY.run(make_settings(tmp_path), names=["docker_daemon", "engine_image"])
    assert [r.status for r in results] == [Status.UNKNOWN, Status.UNKNOWN]
    assert "pip install docker" in results[0].message
