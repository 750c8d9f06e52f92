"""The CSD parameters and the Ambari cdsw-site properties are generated from the settings
schema: one per setting, with the type, limits, default and secrecy the agent declares."""

from __future__ import annotations

import json
from xml.etree import ElementTree

from .helpers import ROOT

import gen_ambari  # noqa: E402
import gen_sdl  # noqa: E402
from validate_sdl import check_cdsw_contract, validate_sdl  # noqa: E402

from cdsw_agent.settings.schema import BY_NAME, BY_PROPERTY, SETTINGS


def _sdl(schema, version):
    return gen_sdl.build_sdl(schema, version)


def test_every_setting_is_one_sdl_parameter_keyed_by_its_property(schema, version):
    sdl = _sdl(schema, version)
    generated = {p["configName"]: p for p in sdl["parameters"] if p["name"].startswith("cdsw_")}
    assert sorted(generated) == sorted(s.property_key for s in SETTINGS)
    assert validate_sdl(sdl, files=["scripts/control.sh", "images/icon.png"]) == []
    assert check_cdsw_contract(sdl, schema) == []


def test_sdl_parameter_types_follow_the_setting_kinds(schema, version):
    params = {p["name"]: p for p in _sdl(schema, version)["parameters"]}
    assert params["cdsw_http_port"]["type"] == "port"
    assert params["cdsw_http_port"]["default"] == BY_NAME["http_port"].default
    lockout = params["cdsw_login_lockout_minutes"]
    assert (lockout["type"], lockout["min"], lockout["max"], lockout["unit"]) == (
        "long", 1, 1440, "minutes")
    assert params["cdsw_tls_enable"]["type"] == "boolean"
    assert params["cdsw_orchestrator"]["validValues"] == list(BY_NAME["orchestrator"].choices)
    assert params["cdsw_allowed_git_schemes"]["type"] == "string_array"
    assert params["cdsw_allowed_git_schemes"]["default"] == ["https", "ssh", "git"]
    assert params["cdsw_data_dir"]["pathType"] == "localDataDir"
    for secret in ("cdsw_cluster_secret", "cdsw_db_url", "cdsw_ldap_bind_password"):
        assert params[secret]["type"] == "password", secret
    # CM generates the cluster secret at service creation: no manual step at first install
    assert params["cdsw_cluster_secret"]["initType"] == "randomBase64"
    assert [n for n, p in params.items() if "initType" in p] == ["cdsw_cluster_secret"]
    # settings a cluster must set are asked for in the wizard and have no "localhost" default
    for name in ("cdsw_domain", "cdsw_master_host"):
        assert params[name]["required"] is True and "default" not in params[name]
        assert params[name]["configurableInWizard"] is True


def test_csd_only_parameters_never_reach_cdsw_properties(schema, version):
    sdl = _sdl(schema, version)
    master = next(r for r in sdl["roles"] if r["name"] == "CDSW_MASTER")
    included = master["configWriter"]["generators"][0]["includedParams"]
    assert "first_admin_password" not in included
    assert {p["name"] for p in master["parameters"]} == {"first_admin_username",
                                                          "first_admin_password"}


def test_ambari_site_xml_has_every_setting_and_its_defaults_parse_back(schema):
    root = ElementTree.fromstring(gen_ambari.site_xml(schema))
    props = {p.findtext("name"): p for p in root.findall("property")}
    assert sorted(props) == sorted(s.property_key for s in SETTINGS)
    for key, prop in props.items():
        setting = BY_PROPERTY[key]
        assert prop.find("on-ambari-upgrade").get("add") == "true"
        value = prop.findtext("value") or ""
        if setting.required_in_cluster:
            assert value == "" and prop.get("require-input") == "true"
            continue
        # what Ambari writes into cdsw.properties must be what the agent would default to
        assert setting.parse(value) == setting.parse(setting.default), key
        is_password = prop.findtext("property-type") == "PASSWORD"
        assert is_password == setting.secret, key
    port = props["cdsw.http.port"].find("value-attributes")
    assert (port.findtext("type"), port.findtext("minimum"), port.findtext("maximum")) == (
        "int", "1", "65535")
    entries = [e.findtext("value") for e in props["cdsw.log.level"].iter("entry")]
    assert entries == list(BY_NAME["log_level"].choices)


def test_generators_read_the_same_schema_as_cdsw_config_schema(schema, tmp_path, version):
    """`--schema-json` (the CLI's JSON) and the module import give the same SDL."""
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    out = tmp_path / "service.sdl"
    assert gen_sdl.main(["--schema-json", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == _sdl(schema, version)


def test_sdl_template_is_plain_json_with_the_version_placeholder():
    text = (ROOT / "csd" / "descriptor" / "service.sdl.in").read_text()
    assert json.loads(text)["version"] == "@CDSW_VERSION@"
