"""`cdsw clusters ...` and `cdsw client-config collect --cluster`: registering clusters and
grants from the command line, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from cdsw_agent.cli.main import cli
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import AuditEvent, User


def test_clusters_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CDSW_DATA_DIR": str(data), "CDSW_ARGON2_TIME_COST": "1",
           "CDSW_ARGON2_MEMORY_KIB": "1024"}
    run = CliRunner().invoke
    assert run(cli, ["db", "upgrade"], env=env).exit_code == 0
    db = Database("sqlite:///" + str(data / "cdsw.db"))
    with db.session() as s:
        s.add(User(username="carol", password_hash="x"))

    r = run(cli, ["clusters", "add", "PROD", "--kind", "prod", "--krb5-conf", "/etc/prod/krb5.conf"],
            env=env)
    assert r.exit_code == 0, r.output
    assert "workbench_cluster=PROD" in r.output and "--cluster PROD" in r.output
    r = run(cli, ["clusters", "add", "PROD"], env=env)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "already exists" in r.output
    r = run(cli, ["clusters", "grant", "PROD", "--user", "nobody"], env=env)
    assert r.exit_code == 1 and "no user named nobody" in r.output
    r = run(cli, ["clusters", "grant", "PROD", "--user", "carol"], env=env)
    assert r.exit_code == 0 and "user carol may run work on cluster PROD" in r.output

    listed = json.loads(run(cli, ["clusters", "list", "--json"], env=env).output)["clusters"]
    by_name = {c["name"]: c for c in listed}
    assert by_name["default"]["default"] and not by_name["default"]["requires_grant"]
    assert by_name["PROD"]["grants"] == ["user carol"]
    assert by_name["PROD"]["node_label"] == "cdsw.cluster=PROD"
    assert by_name["PROD"]["krb5_conf"] == "/etc/prod/krb5.conf"
    prod_root = Path(by_name["PROD"]["client_config"])
    assert prod_root == data / "clusters" / "PROD" / "client-config"

    conf = tmp_path / "prod-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text("<configuration/>\n")
    r = run(cli, ["client-config", "collect", "--cluster", "PROD", "--source", str(conf)], env=env)
    assert r.exit_code == 0, r.output
    assert str(prod_root) in r.output and (prod_root / "current").is_symlink()
    assert not (data / "client-config" / "current").exists()  # the default cluster's: untouched
    r = run(cli, ["client-config", "collect", "--cluster", "QA", "--source", str(conf)], env=env)
    assert r.exit_code == 1 and "no cluster named QA" in r.output

    assert run(cli, ["clusters", "revoke", "PROD", "--user", "carol"], env=env).exit_code == 0
    r = run(cli, ["clusters", "revoke", "PROD", "--user", "carol"], env=env)
    assert r.exit_code == 1 and "has no grant" in r.output
    r = run(cli, ["clusters", "remove", "default"], env=env)
    assert r.exit_code == 1 and "cannot be removed" in r.output
    assert run(cli, ["clusters", "remove", "PROD"], env=env).exit_code == 0
    with db.session() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == ["cluster.add", "cluster.grant", "cluster.revoke", "cluster.remove"]
    db.engine.dispose()
