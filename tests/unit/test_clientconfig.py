"""Client configuration bundles from real configuration trees (Ambari and Cloudera Manager
layouts) in tmp dirs, the engine mounts/env mapping and the rendered spark-defaults.conf."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict

import pytest
from click.testing import CliRunner

from cdsw_agent.cli import clientconfig as clientconfig_cli
from cdsw_agent.cli.main import cli
from cdsw_agent.clientconfig import bundle as bundle_mod
from cdsw_agent.clientconfig import (MOUNT_ROOT, Bundle, SparkPorts, collect, current,
                                     current_version, detect_kinds, engine_mounts_and_env,
                                     list_bundles, prune)
from cdsw_agent.errors import UserError
from cdsw_agent.orchestrators.base import Mount, Port, WorkloadSpec
from cdsw_agent.render import render, render_all
from cdsw_agent.settings import load_settings


def site(**props: str) -> str:
    body = "".join("  <property>\n    <name>%s</name>\n    <value>%s</value>\n  </property>\n"
                   % kv for kv in props.items())
    return '<?xml version="1.0"?>\n<configuration>\n%s</configuration>\n' % body


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SPARK_DEFAULTS = """# from Ambari
spark.master yarn
spark.driver.port=7077
spark.yarn.historyServer.address nn1.example.com:18081
spark.driver.host \\
    gateway-continued.example.com
spark.eventLog.enabled true
"""


@pytest.fixture
def ambari(tmp_path: Path) -> Dict[str, Path]:
    """/etc/hadoop/conf (hadoop + yarn), /etc/hive/conf, /etc/spark2/conf as HDP lays them out."""
    etc = tmp_path / "etc"
    hadoop, hive, spark = etc / "hadoop" / "conf", etc / "hive" / "conf", etc / "spark2" / "conf"
    write(hadoop / "core-site.xml", site(**{"fs.defaultFS": "hdfs://nn1.example.com:8020"}))
    write(hadoop / "hdfs-site.xml", site(**{"dfs.replication": "3"}))
    write(hadoop / "yarn-site.xml", site(**{"yarn.resourcemanager.hostname": "rm.example.com"}))
    write(hadoop / "hadoop-env.sh", "export HADOOP_HEAPSIZE=1024\n")
    write(hadoop / "ssl-server.xml", site(**{"ssl.server.keystore.password": "s3cret"}))
    write(hadoop / "nn.service.keytab", "binary keytab")
    write(hive / "hive-site.xml", site(**{"hive.metastore.uris": "thrift://hms.example.com:9083"}))
    write(spark / "spark-defaults.conf", SPARK_DEFAULTS)
    write(spark / "spark-env.sh", "export SPARK_DIST_CLASSPATH=/usr/hdp/current\n")
    write(spark / "hive-site.xml", site(**{"hive.metastore.uris": "thrift://hms.example.com:9083"}))
    write(spark / "log4j.properties", "log4j.rootCategory=WARN, console\n")
    return {"hadoop": hadoop, "hive": hive, "spark": spark}


def sources(tree: Dict[str, Path]):
    return [tree["hadoop"], tree["hive"], tree["spark"]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "client-config"


def settings(tmp_path: Path, **values):
    base = {"data_dir": str(tmp_path / "data"), "krb5_conf": "", "java_home": ""}
    base.update(values)
    return load_settings(None, None, environ={}, overrides=base)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_created(bundle: Bundle, when: str) -> None:
    manifest = bundle.path / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["created"] = when
    manifest.write_text(json.dumps(doc))


# --- collecting --------------------------------------------------------------------------------

def test_ambari_layout_is_bundled_with_a_manifest(ambari, root):
    b = collect(sources(ambari), root)
    assert b.kinds == ("hadoop", "yarn", "hive", "spark") and not b.reused
    assert b.path == root / b.version and len(b.version) == 16
    # /etc/hadoop/conf serves both HADOOP_CONF_DIR and YARN_CONF_DIR
    for kind in ("hadoop", "yarn"):
        assert (b.dir(kind) / "yarn-site.xml").read_bytes() == \
            (ambari["hadoop"] / "yarn-site.xml").read_bytes()
    assert (b.dir("spark") / "spark-defaults.conf").read_text() == SPARK_DEFAULTS
    assert (b.dir("hive") / "hive-site.xml").exists()
    # secrets stay on the host
    assert not list(b.path.rglob("ssl-server.xml")) and not list(b.path.rglob("*.keytab"))
    doc = json.loads((b.path / "manifest.json").read_text())
    assert doc["version"] == b.version and doc["kinds"] == list(b.kinds)
    assert doc["sources"] == {"hadoop": str(ambari["hadoop"]), "yarn": str(ambari["hadoop"]),
                              "hive": str(ambari["hive"]), "spark": str(ambari["spark"])}
    assert doc["files"]["spark/log4j.properties"] == sha(b.dir("spark") / "log4j.properties")
    assert set(doc["files"]) == {p.relative_to(b.path).as_posix() for p in b.path.rglob("*")
                                 if p.is_file() and p.name != "manifest.json"}
    assert doc["created"].endswith("+00:00")
    assert current_version(root) == b.version and current(root) == Bundle.load(b.path)
    assert oct((b.dir("hadoop") / "core-site.xml").stat().st_mode & 0o777) == "0o644"
    assert not list(root.glob(".tmp-*"))


def test_cloudera_manager_dirs_are_known_by_name(tmp_path, root):
    process = tmp_path / "process" / "123-cdsw-CDSW_MASTER"
    # CM's yarn-conf and hive-conf carry copies of core-site.xml: the name decides
    for name in ("hadoop-conf", "yarn-conf", "hive-conf"):
        write(process / name / "core-site.xml", site(**{"fs.defaultFS": "hdfs://nn:8020"}))
        write(process / name / "__cloudera_generation__", str(time.time()))
    write(process / "yarn-conf" / "yarn-site.xml", site())
    write(process / "hive-conf" / "hive-site.xml", site())
    write(process / "spark2-conf" / "spark-defaults.conf", "spark.master yarn\n")
    write(process / "spark2-conf" / "yarn-conf" / "yarn-site.xml", site())
    write(process / "hbase-conf" / "hbase-site.xml", site())
    dirs = [process / n for n in ("hadoop-conf", "yarn-conf", "hive-conf", "spark2-conf",
                                  "hbase-conf")]
    b = collect(dirs, root)
    assert b.kinds == ("hadoop", "yarn", "hive", "spark")
    assert b.sources["yarn"] == str(process / "yarn-conf")
    assert (b.dir("spark") / "yarn-conf" / "yarn-site.xml").exists()  # sub-directories too
    assert not list(b.path.rglob("__cloudera_*"))  # bookkeeping left out...
    assert len(b.skipped) == 1 and "hbase-conf" in b.skipped[0]
    # ...so a redeploy of the same configuration is the same bundle
    for name in ("hadoop-conf", "yarn-conf", "hive-conf"):
        write(process / name / "__cloudera_generation__", "changed")
    assert collect(dirs, root).version == b.version


@pytest.mark.parametrize("files,kinds", [
    ({"core-site.xml": site()}, ["hadoop"]),
    ({"yarn-site.xml": site()}, ["yarn"]),
    ({"core-site.xml": site(), "yarn-site.xml": site()}, ["hadoop", "yarn"]),
    ({"hive-site.xml": site(), "core-site.xml": site()}, ["hive"]),
    ({"spark-env.sh": "", "hive-site.xml": site()}, ["spark"]),
    ({"README": "nothing"}, []),
])
def test_detect_kinds_from_contents(tmp_path, files, kinds):
    for name, text in files.items():
        write(tmp_path / "conf" / name, text)
    assert detect_kinds(tmp_path / "conf") == kinds


def test_unchanged_config_reuses_the_bundle_and_a_change_makes_a_new_one(ambari, root):
    first = collect(sources(ambari), root)
    again = collect(sources(ambari), root)
    assert again.version == first.version and again.reused
    assert again.created == first.created  # the bundle itself was not rewritten
    write(ambari["hive"] / "hive-site.xml", site(**{"hive.metastore.uris": "thrift://new:9083"}))
    changed = collect(sources(ambari), root)
    assert changed.version != first.version and not changed.reused
    assert current_version(root) == changed.version
    assert first.path.is_dir()  # kept: running engines may still mount it
    assert "thrift://new:9083" in (changed.dir("hive") / "hive-site.xml").read_text()
    # a file's name is part of the content too
    os.rename(ambari["spark"] / "log4j.properties", ambari["spark"] / "log4j2.properties")
    assert collect(sources(ambari), root).version not in (first.version, changed.version)


def test_broken_xml_names_the_file_and_line_and_leaves_nothing_behind(ambari, root):
    good = collect(sources(ambari), root)
    bad = write(ambari["hadoop"] / "hdfs-site.xml",
                "<configuration>\n  <property>\n    <name>x</value>\n</configuration>\n")
    with pytest.raises(UserError) as e:
        collect(sources(ambari), root)
    assert str(e.value).startswith("%s line 3: not well-formed XML (mismatched tag)" % bad)
    assert "\n" not in str(e.value)
    assert current_version(root) == good.version
    assert [b.version for b in list_bundles(root)] == [good.version]
    assert not list(root.glob(".tmp-*"))


def test_symlinks_inside_are_followed_and_escapes_refused(ambari, root, tmp_path):
    outside = write(tmp_path / "elsewhere" / "core-site.xml", site(**{"secret": "x"}))
    os.remove(ambari["hadoop"] / "core-site.xml")
    os.symlink(outside, ambari["hadoop"] / "core-site.xml")
    with pytest.raises(UserError, match="is a symlink to .*outside"):
        collect(sources(ambari), root)
    assert not root.exists() or not list_bundles(root)
    # the same file inside the source, linked: copied as a plain file
    write(ambari["hadoop"] / "real" / "core-site.xml", site(**{"fs.defaultFS": "hdfs://in"}))
    os.remove(ambari["hadoop"] / "core-site.xml")
    os.symlink("real/core-site.xml", ambari["hadoop"] / "core-site.xml")
    os.symlink("real", ambari["hadoop"] / "linked-dir")  # a linked directory: not copied twice
    b = collect(sources(ambari), root)
    copied = b.dir("hadoop") / "core-site.xml"
    assert not copied.is_symlink() and "hdfs://in" in copied.read_text()
    assert not (b.dir("hadoop") / "linked-dir").exists()
    # a directory link leaving the source is refused as well, and a dangling one named
    os.symlink(str(tmp_path / "elsewhere"), ambari["hive"] / "more")
    with pytest.raises(UserError, match="more is a symlink to .*outside"):
        collect(sources(ambari), root)
    os.remove(ambari["hive"] / "more")
    os.symlink("missing.xml", ambari["hive"] / "gone.xml")
    with pytest.raises(UserError, match="gone.xml is a broken symlink"):
        collect(sources(ambari), root)


def test_a_source_dir_reached_through_a_symlink_works(ambari, root, tmp_path):
    alternatives = tmp_path / "alternatives-hadoop-conf"
    os.symlink(ambari["hadoop"], alternatives)
    b = collect([alternatives], root)
    assert b.kinds == ("hadoop", "yarn") and (b.dir("hadoop") / "core-site.xml").exists()


def test_bad_sources_are_one_line_errors(ambari, root, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        collect([tmp_path / "nope"], root)
    with pytest.raises(UserError, match="both .* hold the hive client configuration"):
        collect([ambari["hive"], write(tmp_path / "h2" / "hive-site.xml", site()).parent], root)
    with pytest.raises(UserError, match="no Hadoop, YARN, Hive or Spark client configuration"):
        collect([write(tmp_path / "empty" / "README", "").parent], root)


def test_unreadable_file_is_named(ambari, root, monkeypatch):
    f = ambari["hive"] / "hive-site.xml"
    if os.geteuid() == 0:  # root reads every file: deny it the way the kernel would
        real_open = open

        def deny(path, *args, **kwargs):
            if os.path.basename(path) == "hive-site.xml":
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(bundle_mod, "open", deny, raising=False)
    else:
        f.chmod(0)
    with pytest.raises(UserError, match="hive-site.xml is not readable by this user"):
        collect(sources(ambari), root)
    assert not root.exists() or not list(root.iterdir())


def test_pruning_keeps_the_newest_the_current_and_those_in_use(ambari, root):
    made = []
    for i in range(4):
        write(ambari["hive"] / "hive-site.xml", site(n=str(i)))
        b = collect(sources(ambari), root)
        set_created(b, "2026-01-0%dT00:00:00+00:00" % (i + 1))
        made.append(b.version)
    assert [b.version for b in list_bundles(root)] == made[::-1]
    # back to the oldest configuration: reused, current, and protected although oldest
    write(ambari["hive"] / "hive-site.xml", site(n="0"))
    b = collect(sources(ambari), root, keep=1, in_use=[made[1]])
    assert b.version == made[0] and b.reused and current_version(root) == made[0]
    assert sorted(x.version for x in list_bundles(root)) == sorted([made[0], made[1], made[3]])
    assert prune(root, keep=0) == [made[3], made[1]]  # in_use no longer given
    assert [x.version for x in list_bundles(root)] == [made[0]]


def test_prune_clears_stale_temp_dirs_only(root):
    root.mkdir(parents=True)
    stale, fresh = root / ".tmp-dead", root / ".tmp-busy"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    prune(root)
    assert not stale.exists() and fresh.exists()


def test_a_damaged_bundle_is_not_listed(ambari, root):
    b = collect(sources(ambari), root)
    (b.path / "manifest.json").write_text("{")
    assert list_bundles(root) == []
    with pytest.raises(UserError, match="no readable manifest.json"):
        Bundle.load(b.path)
    again = collect(sources(ambari), root)  # collecting again repairs it
    assert again.version == b.version and not again.reused
    assert list_bundles(root) == [Bundle.load(b.path)]
    (b.path / "manifest.json").unlink()
    assert collect(sources(ambari), root).version == b.version


# --- engine mounts, env and spark-defaults ---------------------------------------------------

def properties_of(text: str) -> Dict[str, str]:
    """Java-properties reading of spark-defaults.conf: later keys win, continuations join."""
    out: Dict[str, str] = {}
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith(("#", "!"))):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        logical.append(pending + stripped)
        pending = ""
    for entry in logical:
        key, _, value = entry.replace("=", " ", 1).partition(" ")
        out[key] = value.strip()
    return out


def test_engine_gets_read_only_mounts_env_ports_and_spark_defaults(ambari, tmp_path):
    java = tmp_path / "jdk"
    java.mkdir()
    krb5 = write(tmp_path / "krb5.conf", "[libdefaults]\n default_realm = EXAMPLE.COM\n")
    s = settings(tmp_path, java_home=str(java), krb5_conf=str(krb5))
    b = collect(sources(ambari), Path(s.data_dir) / "client-config")
    cfg = engine_mounts_and_env(b, s, "10.1.2.3", SparkPorts(20050, 20051, 20052),
                                tmp_path / "engines" / "s1")
    engine_spark = tmp_path / "engines" / "s1" / "spark"
    assert cfg.mounts == [
        Mount(str(b.dir("hadoop")), MOUNT_ROOT + "/hadoop", True),
        Mount(str(b.dir("yarn")), MOUNT_ROOT + "/yarn", True),
        Mount(str(b.dir("hive")), MOUNT_ROOT + "/hive", True),
        Mount(str(engine_spark), MOUNT_ROOT + "/spark", True),
        Mount(str(java), str(java), True),
        Mount(str(krb5), "/etc/krb5.conf", True),
    ]
    assert cfg.env == {"HADOOP_CONF_DIR": MOUNT_ROOT + "/hadoop",
                       "YARN_CONF_DIR": MOUNT_ROOT + "/yarn",
                       "HIVE_CONF_DIR": MOUNT_ROOT + "/hive",
                       "SPARK_CONF_DIR": MOUNT_ROOT + "/spark",
                       "JAVA_HOME": str(java), "KRB5_CONFIG": "/etc/krb5.conf"}
    assert cfg.ports == [Port(20050, 20050), Port(20051, 20051)]  # the UI goes through the router
    assert cfg.labels == {"io.cdsw.client-config": b.version} and cfg.notes == []
    # the engine's Spark conf dir: the bundle's files plus this engine's spark-defaults.conf
    assert (engine_spark / "log4j.properties").read_text() == "log4j.rootCategory=WARN, console\n"
    assert (engine_spark / "spark-defaults.conf").read_text() == cfg.spark_defaults
    assert (b.dir("spark") / "spark-defaults.conf").read_text() == SPARK_DEFAULTS  # untouched
    props = properties_of(cfg.spark_defaults)
    assert props["spark.master"] == "yarn"  # the cluster's settings are kept
    assert props["spark.yarn.historyServer.address"] == "nn1.example.com:18081"
    assert props["spark.eventLog.enabled"] == "true"
    assert props["spark.driver.host"] == "10.1.2.3"
    assert props["spark.driver.bindAddress"] == "0.0.0.0"
    assert props["spark.driver.port"] == "20050"
    assert props["spark.driver.blockManager.port"] == "20051"
    assert props["spark.ui.port"] == "20052"
    # the cluster's own values for these keys are commented out, continuation lines included
    assert "# (set by CDSW below) spark.driver.port=7077" in cfg.spark_defaults
    assert "#     gateway-continued.example.com" in cfg.spark_defaults
    assert cfg.spark_defaults.count("\nspark.driver.host ") == 1
    assert "bundle %s" % b.version in cfg.spark_defaults
    # it maps straight onto a WorkloadSpec
    spec = WorkloadSpec(name="s1", image="engine", command=["true"], env={"A": "1"},
                        mounts=[Mount("/p", "/home/cdsw")])
    cfg.apply(spec)
    spec.validate()
    assert spec.env["A"] == "1" and spec.env["SPARK_CONF_DIR"] == MOUNT_ROOT + "/spark"
    assert spec.mounts[0] == Mount("/p", "/home/cdsw") and len(spec.mounts) == 7
    assert spec.ports == cfg.ports and spec.labels["io.cdsw.client-config"] == b.version


def test_engine_config_is_rewritten_for_a_new_launch(ambari, tmp_path):
    s = settings(tmp_path)
    b = collect(sources(ambari), Path(s.data_dir) / "client-config")
    engine_mounts_and_env(b, s, "10.0.0.1", SparkPorts(20050, 20051), tmp_path / "e")
    cfg = engine_mounts_and_env(b, s, "gw2.example.com", SparkPorts(30000, 30001), tmp_path / "e")
    text = (tmp_path / "e" / "spark" / "spark-defaults.conf").read_text()
    assert text == cfg.spark_defaults and "spark.driver.host gw2.example.com" in text
    assert "spark.ui.port" not in properties_of(text)
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["spark"]


def test_only_yarn_conf_stands_in_for_hadoop_and_missing_files_are_noted(tmp_path):
    yarn = tmp_path / "process" / "yarn-conf"
    write(yarn / "core-site.xml", site())
    write(yarn / "yarn-site.xml", site())
    s = settings(tmp_path, java_home=str(tmp_path / "no-jdk"), krb5_conf=str(tmp_path / "no.conf"))
    b = collect([yarn], Path(s.data_dir) / "client-config")
    cfg = engine_mounts_and_env(b, s, "10.0.0.1", SparkPorts(20050, 20051), tmp_path / "e")
    assert cfg.env == {"HADOOP_CONF_DIR": MOUNT_ROOT + "/yarn",
                       "YARN_CONF_DIR": MOUNT_ROOT + "/yarn",
                       "SPARK_CONF_DIR": MOUNT_ROOT + "/spark"}
    assert [m.target for m in cfg.mounts] == [MOUNT_ROOT + "/yarn", MOUNT_ROOT + "/spark"]
    assert len(cfg.notes) == 2 and "no-jdk" in cfg.notes[0] and "no.conf" in cfg.notes[1]
    # Spark without any collected configuration still gets client-mode settings
    cfg = engine_mounts_and_env(None, s, "::1", SparkPorts(20050, 20051), tmp_path / "e2")
    assert [m.target for m in cfg.mounts] == [MOUNT_ROOT + "/spark"] and cfg.labels == {}
    assert properties_of(cfg.spark_defaults)["spark.driver.host"] == "::1"


@pytest.mark.parametrize("address,ports,message", [
    ("10.0.0.1\nspark.x y", SparkPorts(1, 2), "neither an IP address nor a host name"),
    ("", SparkPorts(1, 2), "neither an IP address"),
    ("10.0.0.1", SparkPorts(0, 2), "from 1 to 65535"),
    ("10.0.0.1", SparkPorts(1, 70000), "from 1 to 65535"),
    ("10.0.0.1", SparkPorts(5, 5), "must differ"),
    ("10.0.0.1", SparkPorts(5, 6, 5), "must differ"),
])
def test_engine_inputs_are_checked(tmp_path, address, ports, message):
    with pytest.raises(UserError, match=message):
        engine_mounts_and_env(None, settings(tmp_path), address, ports, tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_template_renders_alone_for_config_render(tmp_path):
    s = settings(tmp_path)
    text = render("spark-defaults.conf.j2", s)
    assert properties_of(text) == {"spark.driver.bindAddress": "0.0.0.0"}
    written = {p.name for p in render_all(s, tmp_path / "out")}
    assert "spark-defaults.conf" in written


# --- CLI ---------------------------------------------------------------------------------------

@pytest.fixture
def runner():
    if "client-config" not in cli.commands:  # until the lead registers it in main.py
        cli.add_command(clientconfig_cli.command)
    return CliRunner()


def props_file(tmp_path: Path, **values: str) -> str:
    base = {"data_dir": str(tmp_path / "data"), "krb5_conf": ""}
    base.update(values)
    path = tmp_path / "cdsw.properties"
    path.write_text("".join("cdsw.%s=%s\n" % (k.replace("_", "."), v) for k, v in base.items()))
    return str(path)


def test_cli_collect_and_show(ambari, tmp_path, runner):
    props = props_file(tmp_path, hadoop_conf_dirs=",".join(str(p) for p in sources(ambari)))
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect"])
    assert r.exit_code == 0, r.output
    version = current_version(tmp_path / "data" / "client-config")
    assert r.output.splitlines()[0] == "bundle %s (new): hadoop, yarn, hive, spark" % version
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect"])
    assert r.output.splitlines()[0] == "bundle %s (unchanged): hadoop, yarn, hive, spark" % version
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect",
                            "--source", str(ambari["hive"])])
    assert r.exit_code == 0 and ": hive" in r.output
    r = runner.invoke(cli, ["--properties", props, "client-config", "show"])
    lines = r.output.splitlines()
    assert r.exit_code == 0 and len(lines) == 2
    assert lines[0].startswith("* ") and lines[1].startswith("  %s" % version)
    doc = json.loads(runner.invoke(cli, ["--properties", props, "client-config", "show",
                                         "--json"]).output)
    assert [b["current"] for b in doc["bundles"]] == [True, False]
    assert doc["bundles"][1]["version"] == version and doc["bundles"][1]["files"] == 4 + 4 + 1 + 4
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect", "--keep", "1",
                            "--source", str(ambari["spark"])])
    assert r.exit_code == 0 and ": spark" in r.output
    assert [b.kinds for b in list_bundles(tmp_path / "data" / "client-config")] == [("spark",)]


def test_cli_errors_are_one_line(ambari, tmp_path, runner):
    props = props_file(tmp_path)
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect"])
    assert r.exit_code == 1 and r.output.strip().startswith("cdsw: error: no client configuration")
    write(ambari["hive"] / "hive-site.xml", "<configuration>")
    r = runner.invoke(cli, ["--properties", props, "client-config", "collect",
                            "--source", str(ambari["hive"])])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "hive-site.xml line 1: not well-formed XML" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(cli, ["--properties", props, "client-config", "show"])
    assert r.exit_code == 0 and "no client configuration bundle" in r.output
