"""The SDL validator refuses what Cloudera Manager would refuse, naming file, field and rule."""

from __future__ import annotations

import copy
import json

import pytest

from . import helpers  # noqa: F401  (puts scripts/packaging on sys.path)

import gen_sdl  # noqa: E402
import validate_sdl  # noqa: E402

FILES = ["scripts/control.sh", "images/icon.png"]


@pytest.fixture()
def sdl(schema, version):
    return copy.deepcopy(gen_sdl.build_sdl(schema, version))


def _role(sdl, name):
    return next(r for r in sdl["roles"] if r["name"] == name)


def _problems(sdl, schema=None):
    out = validate_sdl.validate_sdl(sdl, "service.sdl", FILES)
    if schema is not None:
        out += validate_sdl.check_cdsw_contract(sdl, schema)
    return out


def _only(problems, field, words):
    hits = [p for p in problems if p.startswith("service.sdl: " + field + ":")]
    assert hits, problems
    assert any(all(w in h for w in words) for h in hits), hits


def test_generated_sdl_is_valid(sdl, schema):
    assert _problems(sdl, schema) == []


def test_unknown_substitution_is_refused(sdl):
    _role(sdl, "CDSW_MASTER")["externalLink"]["url"] = "http://${cdsw_domian}:${cdsw_http_port}/"
    _only(_problems(sdl), "roles[CDSW_MASTER].externalLink.url",
          ["invalid substitution ${cdsw_domian}"])


def test_role_command_env_may_only_use_its_roles_parameters(sdl):
    # first_admin_password is a CDSW_MASTER parameter: the worker cannot substitute it
    _role(sdl, "CDSW_WORKER")["startRunner"]["environmentVariables"] = {"X": "${first_admin_password}"}
    _only(_problems(sdl), "roles[CDSW_WORKER].startRunner.environmentVariables.X",
          ["${first_admin_password}"])


def test_default_outside_range_and_bad_enum_default(sdl):
    params = {p["name"]: p for p in sdl["parameters"]}
    params["cdsw_login_max_failures"]["default"] = 1000
    params["cdsw_log_level"]["default"] = "verbose"
    problems = _problems(sdl)
    _only(problems, "parameters[cdsw_login_max_failures].default", ["1000", "outside [1, 100]"])
    _only(problems, "parameters[cdsw_log_level].default", ["'verbose'", "validValues"])


def test_unknown_parameter_type_and_misplaced_attribute(sdl):
    params = {p["name"]: p for p in sdl["parameters"]}
    params["cdsw_smtp_host"]["type"] = "hostname"
    params["cdsw_http_port"]["max"] = 65535
    problems = _problems(sdl)
    _only(problems, "parameters[cdsw_smtp_host].type", ["unknown parameter type 'hostname'"])
    _only(problems, "parameters[cdsw_http_port].max", ["not allowed on a port parameter"])


def test_duplicate_config_name(sdl):
    sdl["parameters"][1]["configName"] = sdl["parameters"][0]["configName"]
    _only(_problems(sdl), "parameters[%s].configName" % sdl["parameters"][1]["name"],
          ["duplicate configName 'cdsw.domain'"])


def test_references_must_resolve(sdl):
    sdl["serviceInit"]["postStartSteps"].append({"commandName": "CdswDance"})
    sdl["commands"][0]["roleCommand"] = "CdswNope"
    _role(sdl, "CDSW_WORKER")["topology"]["placementRules"][0]["roleTypes"] = ["CDSW_MASTR"]
    sdl["rollingRestart"]["nonWorkerSteps"][0]["bringUpCommands"] = ["Launch"]
    problems = _problems(sdl)
    _only(problems, "serviceInit.postStartSteps[2].commandName", ["unknown service command"])
    _only(problems, "commands[CdswPrepareNodes].roleCommand", ["no command 'CdswNope'"])
    _only(problems, "roles[CDSW_WORKER].topology.placementRules[0]", ["'CDSW_MASTR'"])
    _only(problems, "rollingRestart.nonWorkerSteps[0].bringUpCommands", ["'Launch'"])


def test_strict_mode_refuses_unknown_fields_and_missing_files(sdl):
    sdl["serviceCommands"] = []
    _role(sdl, "CDSW_DOCKER")["startRunner"]["program"] = "scripts/missing.sh"
    problems = _problems(sdl)
    _only(problems, "serviceCommands", ["unknown field"])
    _only(problems, "roles[CDSW_DOCKER].startRunner.program", ["not in the CSD jar"])


def test_cdsw_contract_rules(sdl, schema):
    master = _role(sdl, "CDSW_MASTER")
    master["configWriter"]["generators"][0]["includedParams"].remove("cdsw_http_port")
    master["topology"]["maxInstances"] = 2
    _role(sdl, "CDSW_WORKER")["topology"]["placementRules"] = []
    problems = validate_sdl.check_cdsw_contract(sdl, schema)
    _only(problems, "roles[CDSW_MASTER].configWriter.generators[cdsw.properties].includedParams",
          ["missing ['cdsw.http.port']"])
    _only(problems, "roles[CDSW_MASTER].topology", ["exactly one master"])
    _only(problems, "roles[CDSW_WORKER].topology.placementRules", ["neverWith CDSW_MASTER"])


def test_cli_exit_status_and_message(sdl, tmp_path, capsys):
    bad = tmp_path / "service.sdl"
    sdl["name"] = "cdsw"
    bad.write_text(json.dumps(sdl))
    assert validate_sdl.main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert "%s: name: must be upper-case" % bad in err


def test_rolling_restart_never_restarts_docker_under_running_roles(sdl, schema):
    """CDSW's guidance: restarting the Docker daemons under a running master or worker hangs; a
    rolling restart restarts the master, then the workers one by one, never CDSW_DOCKER."""
    rr = sdl["rollingRestart"]
    assert [s["roleName"] for s in rr["nonWorkerSteps"]] == ["CDSW_MASTER"]
    assert rr["workerSteps"]["roleName"] == "CDSW_WORKER"
    rr["nonWorkerSteps"].insert(0, {"roleName": "CDSW_DOCKER", "bringDownCommands": ["Stop"],
                                    "bringUpCommands": ["Start"]})
    _only(_problems(sdl, schema), "rollingRestart", ["must not restart CDSW_DOCKER",
                                                     "full service restart"])


def _order(deps, suffix, roles):
    """The order Ambari runs ROLE-suffix commands in, from role_command_order's general_deps
    (a command waits for every command it lists): a topological sort, ties by name."""
    waits = {r: {d.rsplit("-", 1)[0] for d in deps.get("%s-%s" % (r, suffix), [])
                 if d.endswith("-" + suffix) and d.rsplit("-", 1)[0] in roles} for r in roles}
    done = []
    while len(done) < len(roles):
        ready = sorted(r for r in roles if r not in done and waits[r] <= set(done))
        assert ready, "role_command_order has a cycle for %s: %s" % (suffix, waits)
        done.append(ready[0])
    return done


def test_ambari_restart_order_starts_docker_first_and_stops_it_last():
    """A service restart in Ambari is STOP then START in role_command_order's order."""
    path = helpers.ROOT / "ambari-mpack/common-services/CDSW/service/role_command_order.json"
    deps = json.loads(path.read_text())["general_deps"]
    roles = ["CDSW_DOCKER", "CDSW_MASTER", "CDSW_WORKER"]
    assert _order(deps, "START", roles) == ["CDSW_DOCKER", "CDSW_MASTER", "CDSW_WORKER"]
    assert _order(deps, "STOP", roles) == ["CDSW_WORKER", "CDSW_MASTER", "CDSW_DOCKER"]


def test_every_role_runs_as_root_in_the_sdl_the_parcel_and_the_mpack(sdl, schema):
    """The master and workers need the Docker socket (root:docker 0660) and root to serve
    project files: the SDL, the parcel (no service user to create) and the mpack agree."""
    import parcel as parcel_mod
    from xml.etree import ElementTree

    assert (sdl["runAs"]["user"], sdl["runAs"]["group"]) == ("root", "root")
    assert all((r.get("runAs") or sdl["runAs"])["user"] == "root" for r in sdl["roles"])
    meta = parcel_mod.parcel_json("1.0")
    assert meta["users"] == {} and meta["groups"] == []
    env_xml = helpers.ROOT / "ambari-mpack/common-services/CDSW/service/configuration/cdsw-env.xml"
    props = {p.findtext("name"): p.findtext("value")
             for p in ElementTree.parse(str(env_xml)).findall("property")}
    assert props["cdsw_user"] == "root" and props["cdsw_group"] == "root"
    sdl["runAs"] = {"user": "cdsw", "group": "cdsw"}
    _only(_problems(sdl, schema), "roles[CDSW_MASTER].runAs", ["must be root"])


def test_kerberos_principals_follow_cm_ext(sdl, schema):
    """RoleDescriptor.kerberosPrincipals: {name, primary, instance}; the name is exported as an
    environment variable, primary takes ${principal} and parameters, instance ${host}."""
    assert _problems(sdl, schema) == []
    master = next(r for r in sdl["roles"] if r["name"] == "CDSW_MASTER")
    master["kerberosPrincipals"] = [
        {"name": "CDSW PRINCIPAL", "primary": "${nope}", "instance": "${host}", "realm": "X"},
        {"primary": "cdsw"}]
    problems = _problems(sdl)
    where = "roles[CDSW_MASTER].kerberosPrincipals"
    assert any(where + "[0].name: must be an environment variable name" in p for p in problems)
    assert any(where + "[0].primary: has invalid substitution ${nope}" in p for p in problems)
    assert any(where + "[0]" in p and "realm" in p for p in problems)  # unknown field (strict)
    assert any(where + "[1].name: is required" in p for p in problems), problems
    master["kerberosPrincipals"] = []
    sdl["kerberos"] = "true"
    problems = validate_sdl.check_cdsw_contract(sdl, schema)
    assert any(where + ": must declare CDSW_PRINCIPAL" in p for p in problems)
    assert any("kerberos: must be ${cdsw_kerberos_enabled}" in p for p in problems), problems


def test_every_role_logs_to_a_rotated_file_cm_knows(sdl, schema):
    """A logging block per role (CM's log viewer and search read DIR/FILE); the start runner
    hands that path and the rotation parameters to the agent, which writes there."""
    for role in sdl["roles"]:
        name = role["name"].split("_", 1)[1].lower()
        assert role["logging"] == {"dir": "/var/log/cdsw", "filename": "cdsw-%s.log" % name,
                                   "modifiable": True, "loggingType": "other"}
        assert role["startRunner"]["environmentVariables"] == {
            "CDSW_LOG_FILE": "${log_dir}/cdsw-%s.log" % name,
            "CDSW_LOG_MAX_MB": "${log_max_size_mb}", "CDSW_LOG_BACKUPS": "${log_max_backups}"}
    master = _role(sdl, "CDSW_MASTER")
    master["logging"]["loggingType"] = "syslog"
    master["logging"]["dir"] = "var/log"
    problems = _problems(sdl, schema)
    _only(problems, "roles[CDSW_MASTER].logging.loggingType", ["unknown logging type 'syslog'"])
    _only(problems, "roles[CDSW_MASTER].logging.dir", ["absolute path"])
    del master["logging"]
    _only(_problems(sdl), "roles[CDSW_MASTER].startRunner.environmentVariables.CDSW_LOG_FILE",
          ["log_dir"])


def _mdl(version="1.0"):
    text = (helpers.ROOT / "csd" / "descriptor" / "service.mdl.in").read_text()
    return json.loads(text.replace("@CDSW_VERSION@", version))


def test_mdl_names_the_masters_prometheus_metrics(sdl, tmp_path):
    """service.mdl: the master's metrics for CM's charts; each one's context is the Prometheus
    query on the master's /metrics it stands for, and that metric family is exposed (by a
    master app on an empty database; tests/integration/test_dashboards.py scrapes a busy one)."""
    import re as re_mod
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from cdsw_agent.server.app import create_app
    from cdsw_agent.store.db import Database
    from tests.conftest import make_settings

    mdl = _mdl()
    assert validate_sdl.validate_mdl(mdl, sdl) == []
    settings = make_settings(tmp_path / "data")
    db = Database(settings.database_url)
    db.upgrade()
    app = create_app(settings, db)
    app.state.server.extras["orchestrator"] = SimpleNamespace(name="swarm", nodes=lambda: [],
                                                              list=lambda: [])
    text = TestClient(app, client=("127.0.0.1", 40000)).get("/metrics").text
    db.engine.dispose()
    exposed = set(re_mod.findall(r"^# TYPE (\S+) ", text, re_mod.M))
    master = next(r for r in mdl["roles"] if r["name"] == "CDSW_MASTER")["metricDefinitions"]
    assert len(master) >= 9
    for metric in master:
        query = metric["context"].split("prometheus: ", 1)[1]
        family = re_mod.sub(r"^\w+\((.*)\)$", r"\1", query).split("{", 1)[0]
        assert family in exposed, (metric["name"], family, sorted(exposed))


def test_mdl_rules():
    sdl = {"name": "CDSW", "roles": [{"name": "CDSW_MASTER"}]}
    mdl = {"name": "CDSX", "version": "", "roles": [
        {"name": "CDSW_MASTR", "metricDefinitions": [
            {"name": "Bad-Name", "label": "x", "description": "y"},
            {"name": "ok_metric", "label": "", "description": "y", "type": "histogram"},
            {"name": "ok_metric", "label": "x", "description": "y"}]}]}
    problems = validate_sdl.validate_mdl(mdl, sdl)
    for field, words in (("name", "SDL's service name"), ("version", "is required"),
                         ("roles[CDSW_MASTR].name", "not a role"),
                         ("roles[CDSW_MASTR].metricDefinitions[Bad-Name].name", "lower case"),
                         ("roles[CDSW_MASTR].metricDefinitions[ok_metric].label", "required"),
                         ("roles[CDSW_MASTR].metricDefinitions[ok_metric].type", "gauge"),
                         ("roles[CDSW_MASTR].metricDefinitions[ok_metric].name", "twice")):
        assert any(p.startswith("service.mdl: %s:" % field) and words in p for p in problems), \
            (field, problems)
