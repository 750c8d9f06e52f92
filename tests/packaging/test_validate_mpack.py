"""The mpack validator refuses packs ambari-server or the agents would choke on. Each case
starts from the real pack's sources (built into a small pack without the wheelhouse)."""

from __future__ import annotations

import json

import pytest

from . import helpers  # noqa: F401

import mpack as mpack_mod  # noqa: E402
from pkgcommon import tar_gz_bytes  # noqa: E402
from validate_mpack import validate_mpack  # noqa: E402


@pytest.fixture()
def entries(schema, version):
    return mpack_mod.mpack_entries(schema, version, ["3.11"], {})


def _write(tmp_path, entries):
    path = tmp_path / "cdsw-ambari-mpack-test.tar.gz"
    path.write_bytes(tar_gz_bytes(entries, 315532800))
    return path


def _key(entries, suffix):
    return next(k for k in entries if k.endswith(suffix))


def test_real_sources_are_valid(tmp_path, entries, python2):
    assert validate_mpack(_write(tmp_path, entries), python2) == []


def test_hyphenated_prerequisites_and_missing_artifact_dir(tmp_path, entries):
    key = _key(entries, "/mpack.json")
    meta = json.loads(entries[key][0])
    meta["prerequisites"] = {"min-ambari-version": "2.7.0.0"}
    meta["artifacts"][1]["service_versions_map"][0]["service_version"] = "9.9-hdp26"
    entries[key] = (json.dumps(meta).encode(), False)
    problems = validate_mpack(_write(tmp_path, entries))
    assert ("mpack.json: prerequisites.min-ambari-version: is ignored by ambari-server; use "
            "min_ambari_version") in problems
    assert ("mpack.json: artifacts[1].service_versions_map[0].service_version: "
            "addon-services/CDSW/9.9-hdp26/ is not in the pack") in problems


def test_missing_prerequisites_and_lettered_version(tmp_path, entries):
    key = _key(entries, "/mpack.json")
    meta = json.loads(entries[key][0])
    del meta["prerequisites"]
    meta["version"] = "1.0rc1"
    entries[key] = (json.dumps(meta).encode(), False)
    problems = validate_mpack(_write(tmp_path, entries))
    assert any(p.startswith("mpack.json: prerequisites: is required") for p in problems)
    assert any(p.startswith("mpack.json: version: must be numbers and dots") for p in problems)


def test_two_root_directories_are_refused(tmp_path, entries):
    entries["other/readme"] = (b"x", False)
    problems = validate_mpack(_write(tmp_path, entries))
    assert len(problems) == 1 and "must hold exactly one root directory" in problems[0]


def test_configuration_xml_rules(tmp_path, entries):
    key = _key(entries, "/configuration/cdsw-env.xml")
    text = entries[key][0].decode()
    text = text.replace('<on-ambari-upgrade add="true"/>', "", 1)
    text = text.replace("<property-type>USER</property-type>", "<property_type>USER</property_type>")
    entries[key] = (text.encode(), False)
    rel = key.split("/", 1)[1]
    problems = validate_mpack(_write(tmp_path, entries))
    assert "%s: property[cdsw_user]/on-ambari-upgrade: is required (add=\"true\")" % rel in problems
    assert ("%s: property[cdsw_user]/property_type: is not read; the element is property-type"
            % rel) in problems


def test_malformed_metainfo_and_missing_script(tmp_path, entries):
    key = _key(entries, "/metainfo.xml")
    entries[key] = (entries[key][0].replace(b"</metainfo>", b""), False)
    assert any("is not well-formed XML" in p for p in validate_mpack(_write(tmp_path, entries)))


def test_component_script_must_exist(tmp_path, entries):
    del entries[_key(entries, "package/scripts/cdsw_worker.py")]
    problems = validate_mpack(_write(tmp_path, entries))
    assert any(p.endswith("component[CDSW_WORKER]/commandScript/script: package/"
                          "scripts/cdsw_worker.py is missing") for p in problems), problems


def test_alert_script_path_must_resolve(tmp_path, entries):
    key = _key(entries, "/alerts.json")
    alerts = json.loads(entries[key][0])
    alerts["CDSW"]["CDSW_MASTER"][0]["source"]["path"] = "CDSW/0/package/alerts/nope.py"
    alerts["CDSW"]["CDSW_MASTER"][1]["interval"] = 0
    entries[key] = (json.dumps(alerts).encode(), False)
    problems = validate_mpack(_write(tmp_path, entries))
    assert any("source.path: CDSW/0/package/alerts/nope.py is not under common-services/" in p
               for p in problems)
    assert any("CDSW.CDSW_MASTER[cdsw_database].interval: must be whole minutes >= 1" in p
               for p in problems)


def test_python2_incompatible_script_is_refused(tmp_path, entries, python2):
    key = _key(entries, "package/scripts/params.py")
    entries[key] = (entries[key][0] + b'\nlabel = f"cdsw {version}"\n', False)
    problems = validate_mpack(_write(tmp_path, entries), python2)
    rel = key.split("/", 1)[1]
    assert len(problems) == 1, problems
    assert problems[0].startswith("%s: (syntax): Python 2.7 cannot compile it" % rel
                                  if python2 else "%s: line " % rel), problems


@pytest.mark.parametrize("added,feature", [
    (b'\nlabel = f"cdsw {version}"\n', "f-strings"),
    (b"\nimport pathlib\n", "'pathlib' module"),
    (b"\nfrom subprocess import run\n", "'subprocess.run' member"),
    (b"\ndef f(*, key=None):\n    return key\n", "keyword-only parameters"),
])
def test_vermin_finds_what_python2_lacks_without_a_python2(tmp_path, entries, added, feature):
    """The check that runs on every machine (Debian bookworm has no Python 2.7)."""
    key = _key(entries, "package/scripts/params.py")
    lines = entries[key][0].count(b"\n") + 1
    entries[key] = (entries[key][0] + added, False)
    problems = validate_mpack(_write(tmp_path, entries), None)
    rel = key.split("/", 1)[1]
    assert len(problems) == 1, problems
    assert problems[0].startswith("%s: line " % rel), problems
    assert int(problems[0].split(": line ")[1].split(":")[0]) >= lines
    assert "Python 2.7 cannot run it: %s" % feature in problems[0], problems


def test_vermin_accepts_an_import_with_a_python2_fallback(tmp_path, entries):
    key = _key(entries, "package/scripts/params.py")
    entries[key] = (entries[key][0] + b"\ntry:\n    from shlex import quote\nexcept ImportError:"
                    b"\n    from pipes import quote\n", False)
    assert validate_mpack(_write(tmp_path, entries), None) == []


def test_kerberos_json_must_write_into_properties_the_service_has(tmp_path, entries):
    """Ambari writes the principal and keytab it creates into the `configuration` each
    identity names; a property the service does not define would be created, never rendered
    into cdsw.properties, and the workbench would not use the keytab."""
    key = _key(entries, "/kerberos.json")
    kerb = json.loads(entries[key][0])
    master = kerb["services"][0]["components"][0]["identities"][0]
    assert master["principal"]["configuration"] == "cdsw-site/cdsw.kerberos.service.principal"
    assert master["keytab"]["configuration"] == "cdsw-site/cdsw.kerberos.service.keytab"
    master["keytab"]["configuration"] = "cdsw-site/cdsw.kerberos.keytab"
    master["principal"]["value"] = "${cdsw-env/cdsw_usr}/_HOST@${realm}"
    kerb["services"][0]["components"].append({"name": "CDSW_GATEWAY", "identities": []})
    entries[key] = (json.dumps(kerb).encode(), False)
    rel = key.split("/", 1)[1]
    problems = validate_mpack(_write(tmp_path, entries))
    where = "services[0].components[0].identities[0]"
    assert ("%s: %s.keytab.configuration: cdsw-site/cdsw.kerberos.keytab is not a property of "
            "the service's configuration" % (rel, where)) in problems, problems
    assert ("%s: %s.principal.value: ${cdsw-env/cdsw_usr} is not a property of the service's "
            "config types nor an Ambari Kerberos variable" % (rel, where)) in problems
    assert ("%s: services[0].components[1].name: no component 'CDSW_GATEWAY' in metainfo.xml"
            % rel) in problems


def test_widgets_must_name_metrics_that_metrics_json_defines(tmp_path, entries):
    key = _key(entries, "/widgets.json")
    widgets = json.loads(entries[key][0])
    first = widgets["layouts"][0]["widgetLayoutInfo"][0]
    first["metrics"][0]["metric_path"] = "metrics/cdsw/nope"
    first["values"][0]["value"] = "${cdsw_unknown}"
    entries[key] = (json.dumps(widgets).encode(), False)
    rel = key.split("/", 1)[1]
    problems = validate_mpack(_write(tmp_path, entries))
    where = "layouts[default_cdsw_dashboard].Master Up"
    assert ("%s: %s: metric_path metrics/cdsw/nope of CDSW_MASTER is not in metrics.json"
            % (rel, where)) in problems, problems
    assert ("%s: %s.values: cdsw_unknown is not one of the widget's metrics"
            % (rel, where)) in problems
