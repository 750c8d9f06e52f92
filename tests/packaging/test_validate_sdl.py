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
