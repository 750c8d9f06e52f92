"""The cluster's own clients in engines (cdsw_agent/clientconfig/distributions.py): Cloudera
Manager parcels, HDP and Bigtop laid out in tmp dirs as the managers lay them out, what an engine
mounts and its environment, and the cluster_clients health check."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from cdsw_agent.clientconfig import bundles_dir, collect
from cdsw_agent.clientconfig.distributions import (attach, cluster_clients, detect,
                                                   java_link_dirs)
from cdsw_agent.health import REGISTRY
from cdsw_agent.health.validate import VALIDATE
from cdsw_agent.images.recipe import IMAGE_PATH, VENV
from cdsw_agent.orchestrators.base import Node, Orchestrator, WorkloadSpec
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import EngineImage, Project, User
from cdsw_agent.workloads import EngineRequest, build_spec

from ..conftest import make_settings


def script(path: Path, text: str = "echo $0 \"$@\"\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def spark_home(home: Path, marker: str) -> Path:
    """A Spark home as parcels and HDP ship it: bin/, python/pyspark, python/lib/py4j zip."""
    for name in ("spark-submit", "pyspark", "spark-shell"):
        script(home / "bin" / name)
    pkg = home / "python" / "pyspark"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("WHICH = %r\n" % marker)
    (home / "python" / "lib").mkdir()
    for version in ("0.10.9.5", "0.10.9.7"):
        with zipfile.ZipFile(home / "python" / "lib" / ("py4j-%s-src.zip" % version), "w") as z:
            z.writestr("py4j/__init__.py", "VERSION = %r\n" % version)
    return home


@pytest.fixture
def parcels(tmp_path: Path) -> Path:
    """/opt/cloudera/parcels: CDH and SPARK3 behind their version links, as CM activates them."""
    root = tmp_path / "opt" / "cloudera" / "parcels"
    cdh = root / "CDH-7.1.7-1.cdh7.1.7.p0.15945976"
    spark_home(cdh / "lib" / "spark", "cdh")
    script(cdh / "lib" / "hadoop" / "bin" / "hadoop")
    script(cdh / "lib" / "hive" / "bin" / "beeline")
    for name in ("hadoop", "hdfs", "beeline", "spark-submit"):
        script(cdh / "bin" / name)
    spark_home(root / "SPARK3-3.3.2.3.3.7190.0-91-1.p0.45265883" / "lib" / "spark3", "spark3")
    (root / "CDH").symlink_to(cdh.name)
    (root / "SPARK3").symlink_to("SPARK3-3.3.2.3.3.7190.0-91-1.p0.45265883")
    return root


def test_parcels_spark3_first_then_cdh_wrappers(parcels: Path) -> None:
    d = detect("cm-parcels", [str(parcels)])
    assert d is not None and d.kind == "cm-parcels" and d.roots == (str(parcels),)
    assert d.spark_home == str(parcels / "SPARK3" / "lib" / "spark3")  # the link, not its target
    assert d.hadoop_home == str(parcels / "CDH" / "lib" / "hadoop")
    assert d.hive_home == str(parcels / "CDH" / "lib" / "hive")
    assert d.bin_dirs == (d.spark_home + "/bin", d.hadoop_home + "/bin", d.hive_home + "/bin",
                          str(parcels / "CDH" / "bin"))
    assert d.python_path == (d.spark_home + "/python",
                             d.spark_home + "/python/lib/py4j-0.10.9.7-src.zip")
    commands = d.commands()
    assert commands["spark-submit"] == d.spark_home + "/bin/spark-submit"  # Spark 3's
    assert commands["hdfs"] == str(parcels / "CDH" / "bin" / "hdfs")
    assert {"pyspark", "spark-shell", "hadoop", "beeline"} <= set(commands)


def test_hdp_and_bigtop_layouts(tmp_path: Path) -> None:
    hdp = tmp_path / "usr" / "hdp"
    version = hdp / "3.1.4.0-315"
    spark_home(version / "spark2", "hdp")
    script(version / "hadoop" / "bin" / "hadoop")
    script(version / "hadoop-hdfs" / "bin" / "hdfs")
    script(version / "hive" / "bin" / "beeline")
    (hdp / "current").mkdir()
    for link, target in (("spark2-client", "spark2"), ("hadoop-client", "hadoop"),
                         ("hadoop-hdfs-client", "hadoop-hdfs"), ("hive-client", "hive")):
        (hdp / "current" / link).symlink_to("../3.1.4.0-315/" + target)
    d = detect("hdp", [str(hdp)])
    assert d is not None and d.roots == (str(hdp),)
    assert d.spark_home == str(hdp / "current" / "spark2-client")
    assert set(d.commands()) == {"spark-submit", "pyspark", "spark-shell", "hadoop", "hdfs",
                                 "beeline"}

    lib = tmp_path / "usr" / "lib"
    spark_home(lib / "spark", "bigtop")
    script(lib / "hadoop" / "bin" / "hadoop")
    script(lib / "hadoop-hdfs" / "bin" / "hdfs")
    (lib / "python3").mkdir()  # not Bigtop's: never mounted
    d = detect("bigtop", [str(lib)])
    assert d is not None and sorted(d.roots) == [str(lib / "hadoop"), str(lib / "hadoop-hdfs"),
                                                 str(lib / "spark")]
    assert d.commands()["hdfs"] == str(lib / "hadoop-hdfs" / "bin" / "hdfs")
    # auto takes the first kind found; none is nothing
    assert detect("auto", [str(hdp)]).kind == "hdp"  # type: ignore[union-attr]
    assert detect("none", [str(hdp)]) is None


def test_a_missing_distribution_is_a_note_and_a_health_warning(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", cluster_client_kind="cm-parcels",
                             cluster_client_dirs=[str(tmp_path / "nowhere")])
    clients = cluster_clients(settings)
    assert clients.distribution is None
    assert clients.notes == ["cluster_client_kind is cm-parcels but no Spark, Hadoop or Hive "
                             "client was found under %s; engines get no cluster clients"
                             % (tmp_path / "nowhere")]
    result = REGISTRY.run(settings, names=["cluster_clients"])[0]
    assert result.status.name == "WARNING" and "set cluster_client_dirs" in result.message
    none = make_settings(tmp_path / "data", cluster_client_kind="none")
    assert REGISTRY.run(none, names=["cluster_clients"])[0].status.name == "OK"


def test_health_and_validate_name_the_clients_and_want_java(tmp_path: Path, parcels: Path) -> None:
    settings = make_settings(tmp_path / "data", cluster_client_dirs=[str(parcels)])
    result = VALIDATE.run(settings, names=["cluster_clients"])[0]
    assert result.status.name == "WARNING"
    assert "java_home is empty" in result.message and "spark-submit" in result.message
    java = tmp_path / "jdk"
    script(java / "bin" / "java")
    with_java = make_settings(tmp_path / "data", cluster_client_dirs=[str(parcels)],
                              java_home=str(java))
    result = REGISTRY.run(with_java, names=["cluster_clients"])[0]
    assert result.status.name == "OK", result.message
    assert result.message.startswith("cm-parcels clients in %s (beeline, hadoop, hdfs, pyspark, "
                                      "spark-shell, spark-submit)" % parcels)
    broken = make_settings(tmp_path / "data", cluster_client_dirs=[str(parcels)],
                           java_home=str(tmp_path))
    assert REGISTRY.run(broken, names=["cluster_clients"])[0].status.name == "CRITICAL"


def fake_jdk(tmp_path: Path) -> Tuple[Path, Path]:
    """A JDK with absolute links outside its home, as Debian's OpenJDK has them."""
    etc = tmp_path / "etc" / "java-17-openjdk"
    (etc / "security").mkdir(parents=True)
    (etc / "jvm-amd64.cfg").write_text("-server KNOWN\n")
    (etc / "security" / "java.security").write_text("\n")
    jdk = tmp_path / "usr" / "lib" / "jvm" / "java-17"
    script(jdk / "bin" / "java")
    (jdk / "lib" / "security").mkdir(parents=True)
    (jdk / "lib" / "jvm.cfg").symlink_to(etc / "jvm-amd64.cfg")
    (jdk / "lib" / "security" / "java.security").symlink_to(etc / "security" / "java.security")
    (jdk / "lib" / "relative").symlink_to("security")
    return jdk, etc


def test_java_home_brings_the_folders_its_links_need(tmp_path: Path) -> None:
    jdk, etc = fake_jdk(tmp_path)
    assert java_link_dirs(str(jdk)) == [str(etc)]


class FixedNodes(Orchestrator):
    name = "swarm"

    def nodes(self):  # type: ignore[no-untyped-def]
        return [Node(name="w1", address="10.0.0.9", state="ready", cpu_capacity=4.0,
                     memory_capacity=8 * 2**30, cpu_allocated=0.0, memory_allocated=0, id="w1")]

    def launch(self, spec):  # type: ignore[no-untyped-def]
        raise AssertionError("the builder must not launch")

    stop = status = logs = list = remove = launch  # type: ignore[assignment]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Tuple[Database, Dict[str, int]]]:
    settings = make_settings(tmp_path / "data")
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as s:
        alice = User(username="alice", password_hash="x", email="a@example.com")
        s.add(alice)
        s.flush()
        project = Project(name="P", slug="p", namespace="u:%d" % alice.id,
                          owner_user_id=alice.id)
        s.add_all([project, EngineImage(repository="cdsw/engine", tag="abc", is_default=True)])
        s.flush()
        ids = {"alice": alice.id, "project": project.id}
    yield db, ids
    db.engine.dispose()


def test_a_swarm_engine_mounts_the_clients_read_only_with_path_and_conf(
        world, tmp_path: Path, parcels: Path) -> None:  # type: ignore[no-untyped-def]
    db, ids = world
    jdk, etc = fake_jdk(tmp_path)
    settings = make_settings(tmp_path / "data", cluster_client_kind="cm-parcels",
                             cluster_client_dirs=[str(parcels)], java_home=str(jdk))
    conf = tmp_path / "yarn-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text("<configuration/>\n")
    (conf / "yarn-site.xml").write_text("<configuration/>\n")
    hive = tmp_path / "hive-conf"
    hive.mkdir()
    (hive / "hive-site.xml").write_text("<configuration/>\n")
    collect([conf, hive], bundles_dir(settings))
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes(), EngineRequest(
            kind="session", name="s-1", project=s.get(Project, ids["project"]),
            launcher=s.get(User, ids["alice"]), command=["true"], files_dir=tmp_path,
            env={"PYTHONPATH": "/home/cdsw/lib"}))
    mounts = {m.target: m for m in spec.mounts}
    for path in (str(parcels), str(jdk), str(etc)):
        assert mounts[path].source == path and mounts[path].read_only
    spark = parcels / "SPARK3" / "lib" / "spark3"
    assert spec.env["SPARK_HOME"] == str(spark)
    assert spec.env["HADOOP_HOME"] == str(parcels / "CDH" / "lib" / "hadoop")
    assert spec.env["JAVA_HOME"] == str(jdk)
    path = spec.env["PATH"].split(":")
    assert path[0] == VENV + "/bin"  # python and pip of the image stay first
    assert path[1] == str(spark / "bin") and str(jdk / "bin") in path
    assert path[-len(IMAGE_PATH.split(":")) + 1:] == IMAGE_PATH.split(":")[1:]
    assert spec.env["PYTHONPATH"] == "/home/cdsw/lib:%s/python:%s/python/lib/py4j-0.10.9.7-src.zip" \
        % (spark, spark)
    # the collected configuration is also where the distributions' conf links point
    spark_conf = mounts[spec.env["SPARK_CONF_DIR"]]
    assert mounts["/etc/spark/conf"].source == spark_conf.source
    assert mounts["/etc/hadoop/conf"].source == mounts[spec.env["HADOOP_CONF_DIR"]].source
    assert mounts["/etc/hive/conf"].source == mounts[spec.env["HIVE_CONF_DIR"]].source
    assert all(mounts[t].read_only for t in ("/etc/spark/conf", "/etc/hadoop/conf",
                                             "/etc/hive/conf"))


def test_a_local_engine_runs_the_distributions_commands_and_pyspark(tmp_path: Path,
                                                                    parcels: Path) -> None:
    """The environment a local engine gets finds the cluster's spark-submit first and imports
    the cluster's pyspark and py4j, not anything installed."""
    settings = make_settings(tmp_path / "data", cluster_client_kind="cm-parcels",
                             cluster_client_dirs=[str(parcels)])
    spec = WorkloadSpec(name="x", image="none", command=[], env={})
    notes = attach(settings, spec, local=True, image_path=IMAGE_PATH)
    assert notes == [] and spec.mounts == []
    env = dict(os.environ, **spec.env)
    out = subprocess.run(["bash", "-c", "command -v spark-submit hdfs beeline"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    spark = parcels / "SPARK3" / "lib" / "spark3"
    assert out == [str(spark / "bin" / "spark-submit"), str(parcels / "CDH" / "bin" / "hdfs"),
                   str(parcels / "CDH" / "lib" / "hive" / "bin" / "beeline")]
    code = "import pyspark, py4j; print(pyspark.WHICH, py4j.VERSION)"
    printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
    assert printed == ["spark3", "0.10.9.7"]


def test_a_spark_home_whose_python_folder_is_not_the_package_uses_pyspark_zip(tmp_path: Path) -> None:
    """The pyspark wheel's python/pyspark holds only shell.py: on sys.path it would be an empty
    namespace package, so python/lib/pyspark.zip is used, as Spark's own scripts do."""
    from cdsw_agent.clientconfig.distributions import spark_python_path

    home = tmp_path / "spark"
    (home / "python" / "pyspark").mkdir(parents=True)
    (home / "python" / "pyspark" / "shell.py").write_text("")
    (home / "python" / "lib").mkdir()
    for name in ("pyspark.zip", "py4j-0.10.9.9-src.zip"):
        with zipfile.ZipFile(home / "python" / "lib" / name, "w") as z:
            z.writestr("x.py", "")
    assert spark_python_path(str(home)) == (str(home / "python" / "lib" / "pyspark.zip"),
                                            str(home / "python" / "lib" / "py4j-0.10.9.9-src.zip"))
    assert spark_python_path("") == ()
