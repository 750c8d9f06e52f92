"""scripts/ambari_deploy.py against a stand-in Ambari server.

Boundary: the stand-in implements only the Ambari REST API v1 endpoints the script calls, with the
documented shapes (ambari-server docs/api/v1 and the web UI's Add Service calls): stack service
and StackConfigurations, service/component/host_component creation, PUT /clusters/C with
Clusters/desired_config, service state changes answered 202 {"Requests": {"id": N}}, request
polling (Requests/request_status, progress_percent), custom commands via POST /requests, and
alerts. It insists on the X-Requested-By header for every write, as Ambari's CSRF filter does.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List

import pytest

from .helpers import ROOT
from .standin import StandIn

sys.path.insert(0, str(ROOT / "scripts"))
import ambari_deploy  # noqa: E402
from deploy_common import DeployError  # noqa: E402

V1 = "/api/v1"
C = V1 + "/clusters/c1"


class FakeAmbari:
    def __init__(self, server: StandIn, stack: str = "HDP-3.1", has_cdsw: bool = True):
        self.server = server
        self.stack = stack
        self.service = False
        self.configs: List[Dict[str, Any]] = []
        self.host_components: Dict[str, List[str]] = {"gw1": ["DATANODE"], "gw2": ["HDFS_CLIENT"]}
        self.requests_made: List[Any] = []
        self.fail_request = ""
        name, ver = stack.split("-")
        base = V1 + "/stacks/%s/versions/%s/services/CDSW" % (name, ver)
        r = server.route
        r("GET", C, lambda q: (200, {"Clusters": {"cluster_name": "c1", "version": self.stack,
                                                  "desired_configs": self.desired()}}))
        r("GET", C + "/configurations", self.read_config)
        r("GET", base, lambda q: (200, {"StackServices": {"service_name": "CDSW"}})
          if has_cdsw else (404, {"status": 404, "message": "The requested resource doesn't exist"}))
        r("GET", base + "/configurations", lambda q: (200, {"items": [
            {"StackConfigurations": {"type": "cdsw-site.xml", "property_name": k,
                                     "property_value": v}}
            for k, v in (("cdsw.domain", ""), ("cdsw.master.host", ""), ("cdsw.http.port", "8080"),
                         ("cdsw.cluster.secret", ""))
        ] + [{"StackConfigurations": {"type": "cdsw-env.xml", "property_name": k,
                                      "property_value": v}}
             for k, v in (("cdsw_user", "cdsw"), ("first_admin_password", ""))]}))
        r("GET", C + "/services/CDSW", lambda q: (200, {"ServiceInfo": {"state": "STARTED"}})
          if self.service else (404, {"message": "Service not found"}))
        r("POST", C + "/services", self.write(self.create_service))
        r("POST", C + r"/services/CDSW/components/(\w+)", self.write(lambda q: (201, None)))
        r("PUT", C, self.write(self.put_configs))
        r("GET", C + r"/hosts/(\w+)/host_components", lambda q: (200, {"items": [
            {"HostRoles": {"component_name": c}} for c in self.host_components[q.match.group(1)]]}))
        r("POST", C + r"/hosts/(\w+)/host_components/(\w+)", self.write(self.add_component))
        r("PUT", C + r"/hosts/(\w+)/host_components/(\w+)", self.write(self.request))
        r("PUT", C + "/services/CDSW", self.write(self.request))
        r("POST", C + "/requests", self.write(self.request))
        r("GET", C + r"/requests/(\d+)", self.poll)
        r("GET", C + "/alerts", lambda q: (200, {"items": [
            {"Alert": {"state": "OK", "label": "CDSW Master API", "host_name": "gw1",
                       "text": "master_api: OK"}}]}))

    def write(self, handler):
        def wrapped(q):
            if "X-Requested-By" not in q.headers:
                return 400, {"message": "CSRF protection is turned on. X-Requested-By HTTP "
                                        "header is required."}
            return handler(q)
        return wrapped

    def desired(self):
        """Clusters/desired_configs: the newest tag of each type."""
        return {c["type"]: {"tag": c["tag"]} for c in self.configs}

    def read_config(self, q):
        ctype, tag = q.query["type"][0], q.query["tag"][0]
        found = [c for c in self.configs if c["type"] == ctype and c["tag"] == tag]
        return 200, {"items": [{"type": ctype, "tag": tag,
                                "properties": found[-1]["properties"]}] if found else []}

    def create_service(self, q):
        self.service = True
        return 201, None

    def put_configs(self, q):
        self.configs += q.body["Clusters"]["desired_config"]
        return 200, None

    def add_component(self, q):
        self.host_components[q.match.group(1)].append(q.match.group(2))
        return 201, None

    def request(self, q):
        self.requests_made.append(q.body)
        rid = len(self.requests_made)
        return 202, {"href": "%s/requests/%d" % (C, rid), "Requests": {"id": rid,
                                                                        "status": "Accepted"}}

    def poll(self, q):
        rid = int(q.match.group(1))
        body = self.requests_made[rid - 1]
        context = (body.get("RequestInfo") or {}).get("context", "")
        status = "FAILED" if self.fail_request and self.fail_request in context else "COMPLETED"
        return 200, {"Requests": {"id": rid, "request_status": status,
                                  "progress_percent": 100.0}}


@pytest.fixture()
def ambari(monkeypatch):
    monkeypatch.setenv("AMBARI_PASSWORD", "secret")
    with StandIn() as server:
        yield FakeAmbari(server)


def _args(amb, *rest):
    return ["--ambari-url", amb.server.url, "--cluster", "c1", "--poll-interval", "0.01",
            "--http-timeout", "10"] + list(rest)


INSTALL = ["install", "--master", "gw1", "--workers", "gw2",
           "--site", "cdsw.domain=cdsw.example.com", "--site", "cdsw.master.host=10.0.0.5",
           "--env", "first_admin_password=pw"]


def test_install_adds_service_configs_clients_and_starts(ambari, capsys):
    assert ambari_deploy.main(_args(ambari, *INSTALL)) == 0
    writes = [r for r in ambari.server.requests if r.method != "GET"]
    assert all(r.headers.get("X-Requested-By") for r in writes)
    assert ambari.server.calls("POST", C + "/services")[0].body == [
        {"ServiceInfo": {"service_name": "CDSW"}}]
    comps = [r.path.rsplit("/", 1)[1] for r in writes if "/services/CDSW/components/" in r.path]
    assert comps == ["CDSW_MASTER", "CDSW_WORKER", "CDSW_DOCKER"]
    site = next(c for c in ambari.configs if c["type"] == "cdsw-site")
    env = next(c for c in ambari.configs if c["type"] == "cdsw-env")
    secret = site["properties"]["cdsw.cluster.secret"]
    assert len(secret) >= 40  # generated: master and workers share it with no manual step
    assert site["properties"] == {"cdsw.domain": "cdsw.example.com",
                                  "cdsw.master.host": "10.0.0.5", "cdsw.http.port": "8080",
                                  "cdsw.cluster.secret": secret}
    assert env["properties"] == {"cdsw_user": "cdsw", "first_admin_password": "pw"}
    assert site["tag"] == env["tag"] and site["tag"].startswith("version")
    # HDP 3: the SPARK2/YARN/HDFS clients the wizard would add, CDSW roles by host
    assert sorted(ambari.host_components["gw1"]) == sorted([
        "DATANODE", "CDSW_MASTER", "CDSW_DOCKER", "HDFS_CLIENT", "YARN_CLIENT", "SPARK2_CLIENT"])
    assert sorted(ambari.host_components["gw2"]) == sorted([
        "HDFS_CLIENT", "CDSW_WORKER", "CDSW_DOCKER", "YARN_CLIENT", "SPARK2_CLIENT"])
    contexts = [(b.get("RequestInfo") or {}).get("context") for b in ambari.requests_made]
    assert contexts[-4:] == ["Install CDSW", "Start CDSW", "Create the first CDSW administrator",
                             "CDSW Service Check"]
    admin = ambari.requests_made[-2]
    assert admin["RequestInfo"]["command"] == "CREATE_ADMIN"
    assert admin["Requests/resource_filters"] == [
        {"service_name": "CDSW", "component_name": "CDSW_MASTER", "hosts": "gw1"}]
    assert ambari.requests_made[-3] == {"RequestInfo": {"context": "Start CDSW"},
                                        "Body": {"ServiceInfo": {"state": "STARTED"}}}
    out = capsys.readouterr().out
    assert "alert OK        CDSW Master API" in out


def test_rerun_keeps_what_was_changed_in_the_ui_and_the_secret(ambari, capsys):
    assert ambari_deploy.main(_args(ambari, *INSTALL)) == 0
    first = [c for c in ambari.configs if c["type"] == "cdsw-site"][-1]["properties"]
    # an operator changes the port in the Ambari UI: a new cdsw-site version
    ambari.configs.append({"type": "cdsw-site", "tag": "version-ui",
                           "properties": dict(first, **{"cdsw.http.port": "9090"})})
    assert ambari_deploy.main(_args(ambari, *INSTALL)) == 0
    site = [c for c in ambari.configs if c["type"] == "cdsw-site"][-1]
    assert site["tag"] == "version-ui", "nothing changed, so no new version is written"
    assert ambari_deploy.main(_args(ambari, *INSTALL, "--site", "cdsw.http.port=9443")) == 0
    site = [c for c in ambari.configs if c["type"] == "cdsw-site"][-1]["properties"]
    assert site["cdsw.http.port"] == "9443"
    assert site["cdsw.cluster.secret"] == first["cdsw.cluster.secret"]
    assert capsys.readouterr().out.count("cluster secret generated") == 1


def test_bigtop_gets_the_spark_client(monkeypatch):
    monkeypatch.setenv("AMBARI_PASSWORD", "secret")
    with StandIn() as server:
        amb = FakeAmbari(server, stack="BIGTOP-3.2.0")
        assert ambari_deploy.main(_args(amb, *INSTALL)) == 0
        assert "SPARK_CLIENT" in amb.host_components["gw1"]
        assert "SPARK2_CLIENT" not in amb.host_components["gw1"]


def test_missing_mpack_is_explained(monkeypatch):
    monkeypatch.setenv("AMBARI_PASSWORD", "secret")
    with StandIn() as server:
        amb = FakeAmbari(server, has_cdsw=False)
        with pytest.raises(DeployError, match="stack HDP 3.1 has no CDSW service: run "
                                              "`ambari-server install-mpack"):
            ambari_deploy.main(_args(amb, *INSTALL))


def test_required_and_unknown_properties_are_refused_before_any_write(ambari):
    argv = [a for a in INSTALL if a != "cdsw.domain=cdsw.example.com"]
    argv.remove("--site")
    with pytest.raises(DeployError, match="set cdsw.domain with --site KEY=VALUE"):
        ambari_deploy.main(_args(ambari, *argv))
    with pytest.raises(DeployError, match=r"cdsw-site has no properties cdsw.htp.port"):
        ambari_deploy.main(_args(ambari, *INSTALL, "--site", "cdsw.htp.port=1"))
    assert [r for r in ambari.server.requests if r.method != "GET"] == []


def test_failed_request_names_it(ambari):
    ambari.fail_request = "Start CDSW"
    with pytest.raises(DeployError, match=r"Start CDSW failed: request \d+ ended FAILED"):
        ambari_deploy.main(_args(ambari, *INSTALL))


def test_missing_csrf_header_would_be_refused(ambari):
    """The stand-in enforces X-Requested-By; a client without it gets Ambari's 400."""
    import requests
    resp = requests.post(ambari.server.url + C + "/services", json=[], auth=("admin", "x"))
    assert resp.status_code == 400 and "X-Requested-By" in resp.json()["message"]


def test_unreachable_server_is_one_line(monkeypatch):
    monkeypatch.setenv("AMBARI_PASSWORD", "secret")
    with pytest.raises(DeployError, match=r"GET http://127.0.0.1:9/api/v1/clusters/c1: cannot "
                                          r"connect"):
        ambari_deploy.main(["--ambari-url", "http://127.0.0.1:9", "--cluster", "c1", "status"])
