"""scripts/cm_deploy.py (through Cloudera's cm_client package) against a stand-in Cloudera Manager.

Boundary: the stand-in implements only the CM REST API v41 endpoints cm_deploy.py calls, with the
request and response shapes of the documented API (cm_client 45 models: ApiCommand {id, active,
success, resultMessage}, ApiParcel {stage, state{progress, totalProgress, errors}}, ApiService,
ApiRole {type, hostRef{hostId}}, ApiConfigList {items[{name, value}]}, ApiRoleConfigGroup
{name, roleType, base}); commands finish on the second poll and parcels advance one stage per
poll. It checks what the script sends, not what CM then does.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import re
import sys
from typing import Any, Dict, List

import pytest

from .helpers import ROOT
from .standin import StandIn

sys.path.insert(0, str(ROOT / "scripts"))
import cm_deploy  # noqa: E402
from deploy_common import DeployError  # noqa: E402

API = "/api/v41"
C = API + "/clusters/c1"
PARCEL = C + "/parcels/products/CDSW/versions/0.2.0"
PREVIOUS = C + "/parcels/products/CDSW/versions/0.1.0"


class FakeCm:
    def __init__(self, server: StandIn, service_types=("HDFS", "YARN", "CDSW")):
        self.server = server
        self.config = [{"name": "REMOTE_PARCEL_REPO_URLS", "value": "https://archive.example/cdh7"}]
        self.stage = "AVAILABLE_REMOTELY"
        self.services: List[Dict[str, Any]] = []
        self.roles: List[Dict[str, Any]] = []
        self.commands: Dict[int, Dict[str, Any]] = {}
        self.fail: Dict[str, str] = {}
        self.fail_once: set = set()  # commands that fail the first time only
        self.failed_once: set = set()
        r = server.route
        r("GET", "/api/version", lambda q: (200, "v41"))
        r("GET", "/repo/manifest.json", lambda q: (200, {"lastUpdated": 1, "parcels": [
            {"parcelName": "CDSW-0.2.0-el8.parcel", "hash": "0" * 40, "components": []},
            {"parcelName": "CDSW-0.2.0-jammy.parcel", "hash": "1" * 40, "components": []}]}))
        r("GET", C + "/serviceTypes", lambda q: (200, {"items": list(service_types)}))
        r("GET", API + "/cm/config", lambda q: (200, {"items": self.config}))
        r("PUT", API + "/cm/config", self.put_config)
        r("POST", API + "/cm/commands/refreshParcelRepos", lambda q: self.command("refresh"))
        r("GET", API + r"/commands/(\d+)", self.read_command)
        self.previous_stage = "ACTIVATED"  # CDSW 0.1.0, active before an upgrade
        r("GET", C + "/parcels", lambda q: (200, {"items": [
            {"product": "CDSW", "version": "0.1.0", "stage": self.previous_stage},
            {"product": "CDSW", "version": "0.2.0", "stage": self.stage},
            {"product": "CDH", "version": "7.1.9-1.cdh7.1.9.p0.1", "stage": "ACTIVATED"}]}))
        r("GET", PREVIOUS, lambda q: (200, {"product": "CDSW", "version": "0.1.0",
                                            "stage": self.previous_stage,
                                            "state": {"errors": []}}))
        r("POST", PREVIOUS + "/commands/activate", self.activate_previous)
        r("GET", PARCEL, self.read_parcel)
        r("POST", PARCEL + r"/commands/(startDownload|startDistribution|activate)",
          self.parcel_command)
        r("GET", API + "/hosts", lambda q: (200, {"items": [
            {"hostId": "id-%d" % i, "hostname": "gw%d.example.com" % i} for i in (1, 2, 3)]}))
        r("GET", C + "/services", lambda q: (200, {"items": self.services}))
        r("POST", C + "/services", self.create_services)
        r("PUT", C + "/services/CDSW/config", lambda q: (200, q.body))
        r("GET", C + "/services/CDSW/roles", lambda q: (200, {"items": [
            dict(role, roleState="STARTED", healthSummary="GOOD") for role in self.roles]}))
        r("POST", C + "/services/CDSW/roles", self.create_roles)
        r("GET", C + "/services/CDSW/roleConfigGroups", lambda q: (200, {"items": [
            {"name": "CDSW-CDSW_MASTER-BASE", "roleType": "CDSW_MASTER", "base": True},
            {"name": "CDSW-CDSW_WORKER-BASE", "roleType": "CDSW_WORKER", "base": True}]}))
        r("PUT", C + "/services/CDSW/roleConfigGroups/CDSW-CDSW_MASTER-BASE/config",
          lambda q: (200, q.body))
        for name in ("firstRun", "restart", "CdswBackupDb", "rollingRestart"):
            r("POST", C + "/services/CDSW/commands/" + name,
              lambda q, name=name: self.command(name))
        r("GET", C + "/services/CDSW", lambda q: (200, {
            "name": "CDSW", "serviceState": "STARTED", "healthSummary": "GOOD",
            "healthChecks": [{"name": "CDSW_CDSW_MASTER_HEALTH", "summary": "GOOD"}]}))

    def put_config(self, q):
        self.config = q.body["items"]
        return 200, {"items": self.config}

    def command(self, name):
        cid = len(self.commands) + 1
        self.commands[cid] = {"id": cid, "name": name, "polls": 0}
        return 200, {"id": cid, "name": name, "active": True}

    def read_command(self, q):
        cmd = self.commands[int(q.match.group(1))]
        cmd["polls"] += 1
        done = cmd["polls"] > 1
        failed = done and cmd["name"] in self.fail and cmd.setdefault(
            "fails", cmd["name"] not in self.failed_once)
        if failed and cmd["name"] in self.fail_once:
            self.failed_once.add(cmd["name"])
        return 200, {"id": cmd["id"], "name": cmd["name"], "active": not done,
                     "success": done and not failed,
                     "resultMessage": self.fail.get(cmd["name"], "Finished")}

    def read_parcel(self, q):
        step = {"DOWNLOADING": "DOWNLOADED", "DISTRIBUTING": "DISTRIBUTED",
                "ACTIVATING": "ACTIVATED"}
        shown = self.stage
        self.stage = step.get(self.stage, self.stage)
        return 200, {"product": "CDSW", "version": "0.2.0", "stage": shown,
                     "state": {"progress": 50, "totalProgress": 100, "errors": []}}

    def activate_previous(self, q):
        self.previous_stage, self.stage = "ACTIVATED", "DISTRIBUTED"
        return 200, {"id": 98, "active": False, "success": True}

    def parcel_command(self, q):
        expected = {"startDownload": "AVAILABLE_REMOTELY", "startDistribution": "DOWNLOADED",
                    "activate": "DISTRIBUTED"}[q.match.group(1)]
        if self.stage != expected:
            return 400, {"message": "parcel is in stage %s" % self.stage}
        self.stage = {"startDownload": "DOWNLOADING", "startDistribution": "DISTRIBUTING",
                      "activate": "ACTIVATING"}[q.match.group(1)]
        if q.match.group(1) == "activate":
            self.previous_stage = "DISTRIBUTED"  # CM deactivates the other version
        return 200, {"id": 99, "active": True}

    def create_services(self, q):
        if "services" in self.fail:
            return 400, {"message": self.fail["services"]}
        self.services += q.body["items"]
        return 200, q.body

    def create_roles(self, q):
        self.roles += q.body["items"]
        return 200, q.body


@pytest.fixture()
def cm():
    with StandIn() as server:
        yield FakeCm(server)


def _args(cm, *rest, timeout="10"):
    return ["--cm-url", cm.server.url, "--user", "admin", "--cluster", "c1",
            "--poll-interval", "0.01", "--http-timeout", timeout] + list(rest)


INSTALL = ["install", "--repo-url", "REPO", "--master", "gw1.example.com",
           "--workers", "gw2.example.com,gw3.example.com",
           "--config", "cdsw_domain=cdsw.example.com", "--config", "cdsw_master_host=10.0.0.5",
           "--role-config", "CDSW_MASTER:first_admin_password=pw"]


def _install(cm):
    return [a.replace("REPO", cm.server.url + "/repo") for a in INSTALL]


def test_install_drives_cm_from_repo_to_health(cm, monkeypatch, capsys):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    assert cm_deploy.main(_args(cm, *_install(cm))) == 0
    calls = [(r.method, r.path) for r in cm.server.requests
             if not r.path.startswith(API + "/commands/") and r.path != PARCEL]
    assert calls == [
        ("GET", "/api/version"), ("GET", C + "/serviceTypes"), ("GET", "/repo/manifest.json"),
        ("GET", API + "/cm/config"), ("PUT", API + "/cm/config"),
        ("POST", API + "/cm/commands/refreshParcelRepos"),
        ("POST", PARCEL + "/commands/startDownload"),
        ("POST", PARCEL + "/commands/startDistribution"), ("POST", PARCEL + "/commands/activate"),
        ("GET", C + "/services"), ("POST", C + "/services"), ("GET", API + "/hosts"),
        ("GET", C + "/services/CDSW/roles"), ("POST", C + "/services/CDSW/roles"),
        ("GET", C + "/services/CDSW/roleConfigGroups"),
        ("PUT", C + "/services/CDSW/roleConfigGroups/CDSW-CDSW_MASTER-BASE/config"),
        ("POST", C + "/services/CDSW/commands/firstRun"),
        ("GET", C + "/services/CDSW"), ("GET", C + "/services/CDSW/roles")]
    assert cm.config == [{"name": "REMOTE_PARCEL_REPO_URLS",
                          "value": "https://archive.example/cdh7,%s/repo" % cm.server.url}]
    created = cm.server.calls("POST", C + "/services")[0].body
    items = created["items"][0]["config"]["items"]
    secret = next(i["value"] for i in items if i["name"] == "cdsw_cluster_secret")
    assert len(secret) >= 40  # generated at service creation: no manual step before First Run
    assert created == {"items": [{
        "name": "CDSW", "type": "CDSW", "config": {"items": [
            {"name": "cdsw_cluster_secret", "value": secret},
            {"name": "cdsw_domain", "value": "cdsw.example.com"},
            {"name": "cdsw_master_host", "value": "10.0.0.5"}]}}]}
    placed = sorted((r["type"], r["hostRef"]["hostId"]) for r in cm.roles)
    assert placed == [("CDSW_DOCKER", "id-1"), ("CDSW_DOCKER", "id-2"), ("CDSW_DOCKER", "id-3"),
                      ("CDSW_MASTER", "id-1"), ("CDSW_WORKER", "id-2"), ("CDSW_WORKER", "id-3")]
    group = cm.server.calls("PUT", C + "/services/CDSW/roleConfigGroups/CDSW-CDSW_MASTER-BASE/config")
    assert group[0].body == {"items": [{"name": "first_admin_password", "value": "pw"}]}
    auth = cm.server.requests[0].headers["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"admin:secret"
    out = capsys.readouterr().out
    assert "parcel CDSW-0.2.0: ACTIVATED" in out
    assert "service CDSW: state STARTED, health GOOD" in out


def test_rerun_updates_configuration_and_creates_nothing_twice(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    assert cm_deploy.main(_args(cm, *_install(cm))) == 0
    before = len(cm.roles)
    assert cm_deploy.main(_args(cm, *_install(cm))) == 0
    assert len(cm.roles) == before and len(cm.services) == 1
    assert len(cm.server.calls("PUT", API + "/cm/config")) == 1  # repo already listed
    assert len(cm.server.calls("POST", C + "/services")) == 1
    update = cm.server.calls("PUT", C + "/services/CDSW/config")
    assert len(update) == 1 and update[0].query == {"message": ["cm_deploy.py"]}
    assert update[0].body["items"][0] == {"name": "cdsw_domain", "value": "cdsw.example.com"}


def test_a_given_secret_is_kept_and_a_rerun_never_makes_another(cm, monkeypatch, capsys):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    argv = _install(cm) + ["--config", "cdsw_cluster_secret=mine"]
    assert cm_deploy.main(_args(cm, *argv)) == 0
    items = cm.server.calls("POST", C + "/services")[0].body["items"][0]["config"]["items"]
    assert {"name": "cdsw_cluster_secret", "value": "mine"} in items
    assert "cluster secret generated" not in capsys.readouterr().out
    assert cm_deploy.main(_args(cm, *_install(cm))) == 0
    update = cm.server.calls("PUT", C + "/services/CDSW/config")[-1].body["items"]
    assert not [i for i in update if i["name"] == "cdsw_cluster_secret"]


@pytest.mark.parametrize("name,version", [
    ("CDSW-0.1.0.812-el8.parcel", "0.1.0.812"),
    ("CDSW-1.2.0-1.cdsw1.2.0.p0.3-el7.parcel", "1.2.0-1.cdsw1.2.0.p0.3"),
    ("CDH-5.16.2-1.cdh5.16.2.p0.8-el7.parcel", None),
    ("CDSW-el8.parcel", None), ("CDSW-0.1.0-el8.parcel.sha1", None)])
def test_parcel_version_parsing(name, version):
    assert cm_deploy.parcel_version(name) == version


def test_the_newest_version_a_repository_offers_is_taken(cm):
    cm.server.routes.insert(0, ("GET", re.compile("/repo2/manifest.json"), lambda q: (200, {
        "parcels": [{"parcelName": n} for n in (
            "CDSW-0.1.0.9-el8.parcel", "CDSW-0.1.0.10-el8.parcel", "CDSW-0.1.0.10-el9.parcel",
            "CDH-7.1.9-1.cdh7.1.9.p0.1-el8.parcel")]})))
    assert cm_deploy.repo_version(cm.server.url + "/repo2", 5) == "0.1.0.10"
    cm.server.routes.insert(0, ("GET", re.compile("/repo3/manifest.json"),
                                lambda q: (200, {"parcels": []})))
    with pytest.raises(DeployError, match="offers no CDSW parcel: check --repo-url"):
        cm_deploy.repo_version(cm.server.url + "/repo3", 5)


def test_upgrade_backs_up_then_activates_and_restarts(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    cm.services.append({"name": "CDSW", "type": "CDSW"})
    argv = _args(cm, "upgrade", "--repo-url", cm.server.url + "/repo", "--rolling")
    assert cm_deploy.main(argv) == 0
    posts = [r.path.rsplit("/", 1)[1] for r in cm.server.requests if r.method == "POST"]
    assert posts == ["refreshParcelRepos", "CdswBackupDb", "startDownload", "startDistribution",
                     "activate", "rollingRestart"]
    body = cm.server.calls("POST", C + "/services/CDSW/commands/rollingRestart")[0].body
    assert body["slaveBatchSize"] == 1
    # never the Docker daemons under running masters and workers (CDSW: full restart for that)
    assert body["restartRoleTypes"] == ["CDSW_MASTER", "CDSW_WORKER"]


def test_a_failed_upgrade_rolls_back_with_one_line(cm, monkeypatch, capsys):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    cm.services.append({"name": "CDSW", "type": "CDSW"})
    cm.fail["restart"] = "Command failed: CDSW_MASTER on gw1: exited before it was ready"
    cm.fail_once.add("restart")  # the new version's restart fails, the previous one's works
    argv = _args(cm, "upgrade", "--repo-url", cm.server.url + "/repo")
    with pytest.raises(DeployError) as err:
        cm_deploy.main(argv)
    assert str(err.value) == (
        "upgrade to CDSW 0.2.0 failed and was rolled back: CDSW runs CDSW 0.1.0 again (if the "
        "new master had migrated the database, restore the backup taken before the upgrade "
        "with `cdsw db restore`)")
    posts = [r.path.rsplit("/", 1)[1] for r in cm.server.requests if r.method == "POST"]
    assert posts == ["refreshParcelRepos", "CdswBackupDb", "startDownload", "startDistribution",
                     "activate", "restart", "activate", "restart"]
    assert cm.previous_stage == "ACTIVATED"
    assert cm.server.calls("POST", PREVIOUS + "/commands/activate")


def test_missing_csd_is_explained(monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    with StandIn() as server:
        cm = FakeCm(server, service_types=("HDFS",))
        with pytest.raises(DeployError, match="copy CDSW-<version>.jar to /opt/cloudera/csd"):
            cm_deploy.main(_args(cm, *_install(cm)))


def test_http_error_names_the_call_and_cm_message(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    cm.fail["services"] = "Service type CDSW requires parcel tag cdsw"
    with pytest.raises(DeployError) as e:
        cm_deploy.main(_args(cm, *_install(cm)))
    assert str(e.value) == ("POST %s%s/services: HTTP 400: Service type CDSW requires parcel "
                            "tag cdsw" % (cm.server.url, C))


def test_failed_first_run_reports_the_command(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    cm.fail["firstRun"] = "Command Prepare Nodes failed on gw2.example.com"
    with pytest.raises(DeployError, match=r"First Run of CDSW failed \(command \d+\): Command "
                                          r"Prepare Nodes failed on gw2.example.com"):
        cm_deploy.main(_args(cm, *_install(cm)))


def test_master_cannot_be_a_worker(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    argv = [a.replace("gw2.example.com,gw3", "gw1.example.com,gw3") for a in _install(cm)]
    with pytest.raises(DeployError, match="cannot be both the master and a worker"):
        cm_deploy.main(_args(cm, *argv))


def test_timeout_and_old_api_end_with_one_line(cm, tmp_path):
    """The command line prints `error: ...` and exits 1."""
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    cm.server.delay["/api/version"] = 2.0
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cm_deploy.py"),
                        "--password-file", str(pw)] + _args(cm, "status", timeout="0.5"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: GET %s/api/version: no answer within 0.5s (is the server "
                                "up and reachable?)" % cm.server.url)
    cm.server.delay.clear()
    cm.server.routes.insert(0, ("GET", __import__("re").compile("/api/version"),
                                lambda q: (200, "v19")))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cm_deploy.py"),
                        "--password-file", str(pw)] + _args(cm, "status"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Cloudera Manager API v19 is too old: CDSW needs v41 or newer" in r.stderr


def test_unknown_host_is_refused_before_any_role_is_created(cm, monkeypatch):
    monkeypatch.setenv("CM_PASSWORD", "secret")
    argv = [a.replace("gw3.example.com", "gw9.example.com") for a in _install(cm)]
    with pytest.raises(DeployError, match="hosts gw9.example.com are not managed"):
        cm_deploy.main(_args(cm, *argv))
    assert cm.roles == []




def test_refused_connection_ends_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cm_deploy.py"), "--cm-url",
                        "http://127.0.0.1:%d" % port, "--cluster", "c1", "status"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, CM_PASSWORD="secret"))
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: GET http://127.0.0.1:%d/api/version: cannot "
                                       "connect: " % port), r.stderr
    assert "Connection refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
