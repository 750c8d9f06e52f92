"""Settings: sources and their order, typed parsing, one-line errors, masking, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdsw_agent.cli.main import cli
from cdsw_agent.render import render_all
from cdsw_agent.settings import SETTINGS, ConfigError, load_settings, masked
from cdsw_agent.settings.schema import BY_NAME


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_when_no_files(tmp_path: Path) -> None:
    s = load_settings(None, None, environ={})
    assert s.http_port == 8080
    assert s.source_of("http_port").kind == "default"
    assert s.database_url == "sqlite:////var/lib/cdsw/cdsw.db"


def test_later_sources_win(tmp_path: Path) -> None:
    conf = write(tmp_path / "cdsw.conf", 'DOMAIN="conf.example.com"\nMASTER_IP=10.0.0.1\n'
                                         "TLS_ENABLE=false  # comment\nUNRELATED_CDSW_KEY=1\n")
    props = write(tmp_path / "cdsw.properties", "cdsw.domain=props.example.com\ncdsw.http.port=9000\n")
    s = load_settings(conf, props, environ={"CDSW_HTTP_PORT": "9100"})
    assert s.domain == "props.example.com"
    assert s.source_of("domain").location == "%s:1" % props
    assert s.master_host == "10.0.0.1"
    assert s.source_of("master_host").kind == "cdsw.conf"
    assert s.http_port == 9100
    assert s.source_of("http_port").location == "CDSW_HTTP_PORT"


def test_bad_value_names_key_file_and_line(tmp_path: Path) -> None:
    props = write(tmp_path / "cdsw.properties", "# header\ncdsw.domain=ok.example.com\ncdsw.http.port=eighty\n")
    with pytest.raises(ConfigError) as e:
        load_settings(None, props, environ={})
    msg = str(e.value)
    assert "cdsw.http.port" in msg and "%s:3" % props in msg and "integer from 1 to 65535" in msg
    assert "\n" not in msg


def test_out_of_range_and_choice_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDSW_HTTP_PORT.*from 1 to 65535"):
        load_settings(None, None, environ={"CDSW_HTTP_PORT": "70000"})
    with pytest.raises(ConfigError, match="one of swarm, local"):
        load_settings(None, None, environ={"CDSW_ORCHESTRATOR": "mesos"})
    with pytest.raises(ConfigError, match="true or false"):
        load_settings(None, None, environ={"CDSW_TLS_ENABLE": "maybe"})


def test_unknown_property_is_refused(tmp_path: Path) -> None:
    props = write(tmp_path / "p", "cdsw.domian=typo.example.com\n")
    with pytest.raises(ConfigError, match=r"p:1: unknown key cdsw\.domian"):
        load_settings(None, props, environ={})


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "missing.conf"), None, environ={})


def test_conf_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c:2: expected KEY=VALUE"):
        load_settings(write(tmp_path / "c", "DOMAIN=a.b\njust words\n"), None, environ={})
    with pytest.raises(ConfigError, match="bad quoting"):
        load_settings(write(tmp_path / "d", 'DOMAIN="unterminated\n'), None, environ={})
    (tmp_path / "e").write_bytes(b"DOMAIN=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(str(tmp_path / "e"), None, environ={})


def test_cross_setting_rules() -> None:
    with pytest.raises(ConfigError, match="tls_cert or tls_key is empty"):
        load_settings(None, None, environ={"CDSW_TLS_ENABLE": "true"})
    with pytest.raises(ConfigError, match="ldap_user_search_base is empty"):
        load_settings(None, None, environ={"CDSW_LDAP_URL": "ldap://127.0.0.1:389"})


def test_secrets_are_masked() -> None:
    s = load_settings(None, None, environ={"CDSW_DB_URL": "postgresql://cdsw:hunter22@db:5432/cdsw",
                                           "CDSW_SMTP_PASSWORD": "mailpass"})
    assert masked(BY_NAME["db_url"], s.db_url) == "postgresql://cdsw:****@db:5432/cdsw"
    assert masked(BY_NAME["smtp_password"], s.smtp_password) == "****"
    assert set(s.secret_values()) == {"postgresql://cdsw:hunter22@db:5432/cdsw", "mailpass"}


def test_cli_config_show_masks_and_names_sources(tmp_path: Path) -> None:
    props = write(tmp_path / "cdsw.properties", "cdsw.ldap.bind.password=s3cr3t-bind\n")
    r = CliRunner().invoke(cli, ["--properties", props, "config", "show", "--sources"], env={})
    assert r.exit_code == 0, r.output
    assert "s3cr3t-bind" not in r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("cdsw.ldap.bind.password")][0]
    assert "****" in line and "%s:1" % props in line


def test_cli_config_error_is_one_line_and_nonzero(tmp_path: Path) -> None:
    props = write(tmp_path / "cdsw.properties", "cdsw.http.port=0\n")
    r = CliRunner().invoke(cli, ["--properties", props, "config", "show"])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0
    assert r.output.startswith("cdsw: configuration error: cdsw.http.port")


def test_schema_lists_every_setting() -> None:
    r = CliRunner().invoke(cli, ["config", "schema"])
    doc = json.loads(r.output)
    assert [d["name"] for d in doc] == [s.name for s in SETTINGS]
    port = next(d for d in doc if d["name"] == "http_port")
    assert port["property"] == "cdsw.http.port" and port["minimum"] == 1 and port["maximum"] == 65535


def test_render_is_strict_and_masks_by_default(tmp_path: Path) -> None:
    s = load_settings(None, None, environ={"CDSW_SMTP_PASSWORD": "mailpass", "CDSW_DOMAIN": "cdsw.example.com"})
    files = render_all(s, tmp_path / "out")
    names = {p.name for p in files}
    assert {"cdsw.conf", "cdsw.properties", "daemon.json"} <= names
    conf = (tmp_path / "out" / "cdsw.conf").read_text()
    assert 'DOMAIN="cdsw.example.com"' in conf
    assert "mailpass" not in (tmp_path / "out" / "cdsw.properties").read_text()
    json.loads((tmp_path / "out" / "daemon.json").read_text())
    revealed = render_all(s, tmp_path / "secret", reveal_secrets=True)
    assert "mailpass" in (tmp_path / "secret" / "cdsw.properties").read_text()
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in revealed)


def test_rendered_properties_load_back(tmp_path: Path) -> None:
    """What `config render` writes is a valid cdsw.properties for the agent (round trip)."""
    s = load_settings(None, None, environ={"CDSW_DOMAIN": "rt.example.com", "CDSW_HTTP_PORT": "8443"})
    render_all(s, tmp_path, reveal_secrets=True)
    again = load_settings(None, str(tmp_path / "cdsw.properties"), environ={})
    assert again.as_dict() == s.as_dict()


def test_strict_undefined(tmp_path: Path) -> None:
    import jinja2

    from cdsw_agent.render import environment

    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ nope }}").render()
