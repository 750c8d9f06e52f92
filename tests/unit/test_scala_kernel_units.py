"""The Scala kernel's pieces that need no JVM: where it can run, its kernelspec (in the engine's
kernelspec manager and in an image built --with-scala), the session start's choice of it on the
local backend, its start-up code and how a failed cell is told. The REPL itself runs in
tests/integration/test_scala_sessions.py."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict

import pytest

from cdsw_agent.engine import scala_repl
from cdsw_agent.images.build import alias_tag
from cdsw_agent.images.recipe import Recipe
from cdsw_agent.sessions.launch import SessionLaunchError, kernelspec_for, local_kernels
from cdsw_agent.settings import load_settings


def fake_spark(root: Path, jars: tuple = ("scala-compiler-2.13.18.jar", "spark-repl_2.13-4.3.0.jar",
                                          "scala-library-2.13.18.jar")) -> Path:
    home = root / "SPARK3-4.3.0" / "lib" / "spark3"
    (home / "jars").mkdir(parents=True)
    (home / "bin").mkdir()
    (home / "bin" / "spark-submit").write_text("#!/bin/sh\n")
    for jar in jars:
        (home / "jars" / jar).write_text("")
    (root / "SPARK3").symlink_to("SPARK3-4.3.0")
    return home


def fake_java(root: Path) -> Path:
    java = root / "jdk"
    (java / "bin").mkdir(parents=True)
    (java / "bin" / "java").write_text("#!/bin/sh\n")
    (java / "bin" / "java").chmod(0o755)
    return java


def env_of(spark: Path, java: Path) -> Dict[str, str]:
    return {"SPARK_HOME": str(spark), "JAVA_HOME": str(java), "PATH": "/nonexistent"}


def test_scala_runs_where_spark_has_the_scala_compiler_and_repl_and_java(tmp_path: Path) -> None:
    spark, java = fake_spark(tmp_path / "parcels"), fake_java(tmp_path)
    assert scala_repl.available(env_of(spark, java))
    assert scala_repl.scala_version(str(spark)) == "2.13.18"
    assert not scala_repl.available(env_of(spark, tmp_path / "nojava"))
    assert not scala_repl.available({"JAVA_HOME": str(java), "PATH": "/nonexistent"})
    # a Spark without the REPL (a Spark Connect client, a stripped parcel) is no Scala kernel
    bare = fake_spark(tmp_path / "bare", jars=("scala-library-2.13.18.jar",))
    assert scala_repl.spark_home(env_of(bare, java)) is None
    with pytest.raises(scala_repl.ScalaUnavailable, match="no Spark with Scala in this engine"):
        scala_repl.Interpreter(env_of(bare, java))
    with pytest.raises(scala_repl.ScalaUnavailable, match="no Java in this engine"):
        scala_repl.Interpreter(env_of(spark, tmp_path / "nojava"))


def test_kernelspec_runs_the_kernel_module_isolated(tmp_path: Path) -> None:
    where = scala_repl.write_kernelspec(str(tmp_path / "kernels"), "/opt/cdsw/venv/bin/python")
    spec = json.loads((Path(where) / "kernel.json").read_text())
    assert Path(where).name == "scala"
    assert spec["argv"] == ["/opt/cdsw/venv/bin/python", "-I", "-m",
                            "cdsw_agent.engine.scala_kernel", "-f", "{connection_file}"]
    assert (spec["language"], spec["display_name"]) == ("scala", "Scala")


def test_engine_offers_scala_only_with_spark_and_java(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from cdsw_agent.engine.server import EngineKernelSpecManager

    spark, java = fake_spark(tmp_path / "parcels"), fake_java(tmp_path)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("JAVA_HOME", str(java))
    monkeypatch.delenv("SPARK_HOME", raising=False)
    assert "scala" not in EngineKernelSpecManager().find_kernel_specs()
    monkeypatch.setenv("SPARK_HOME", str(spark))
    manager = EngineKernelSpecManager()
    assert "scala" in manager.find_kernel_specs() and "python3" in manager.find_kernel_specs()
    spec = manager.get_kernel_spec("scala")
    assert spec.argv[:4] == [sys.executable, "-I", "-m", "cdsw_agent.engine.scala_kernel"]
    assert spec.language == "scala"
    assert "scala" in manager.get_all_specs()  # what GET /api/kernelspecs lists


def _settings(tmp_path: Path, **values: object) -> object:
    return load_settings(conf_path=None, properties_path=None, environ={},
                         overrides=dict(data_dir=str(tmp_path / "data"), **values))


def test_local_engine_has_scala_with_the_cluster_clients_spark(tmp_path: Path) -> None:
    parcels = tmp_path / "parcels"
    fake_spark(parcels)
    java = fake_java(tmp_path)
    with_spark = _settings(tmp_path, cluster_client_kind="cm-parcels",
                           cluster_client_dirs=[str(parcels)], java_home=str(java))
    assert "scala" in local_kernels(with_spark)  # beside python3 (and ir where R is here)
    assert kernelspec_for("scala", None, local_kernels(with_spark)) == "scala"
    assert "scala" not in local_kernels(_settings(tmp_path, cluster_client_kind="none"))
    no_java = _settings(tmp_path, cluster_client_kind="cm-parcels",
                        cluster_client_dirs=[str(parcels)], java_home=str(tmp_path / "nojava"))
    assert "scala" not in local_kernels(no_java) or shutil.which("java")
    with pytest.raises(SessionLaunchError, match="the local engine has no Scala kernel .*"
                                                 "cluster_client_kind and cluster_client_dirs"):
        kernelspec_for("scala", None, ["python3"])


def test_scala_image_flavour_declares_the_kernel() -> None:
    r = Recipe(arch="amd64", with_scala=True)
    assert r.kernels == ["python3", "scala"] and r.flavour == "py-scala"
    assert r.labels("c" * 64)["com.cdsw.engine.kernels"] == "python3,scala"
    assert alias_tag(Recipe(arch="amd64", with_r=True, with_scala=True,
                            with_jupyterlab=True)) == "latest-r-scala-lab"
    # the kernel runs on the cluster's Spark and Java: the image gains no JVM; the build checks
    # that the image's Python imports the kernel
    assert r.packages == Recipe(arch="amd64").packages
    assert "cdsw_agent.engine.scala_kernel" in r.python_imports
    assert Recipe(arch="amd64").kernels == ["python3"]


def test_start_up_code_quotes_any_folder_as_a_scala_string() -> None:
    code = scala_repl.init_code('/tmp/a "b"\\c', 'Scala session 7')
    assert '.config("spark.repl.class.outputDir", "/tmp/a \\"b\\"\\\\c")' in code
    assert '.getOrElse("Scala session 7")' in code
    assert "@transient lazy val spark" in code and "@transient lazy val sc" in code


def test_failed_cells_are_told_by_kind() -> None:
    # an error in the first line: the REPL's caret alone; the line is put back above it
    echo = "           ^\n       error: not found: value notDefined\n"
    assert scala_repl.error_parts("Error", echo, "1 + notDefined\nval y = 2") == (
        "CompileError", "not found: value notDefined",
        ["1 + notDefined", "    ^", "error: not found: value notDefined"])
    # further down, the REPL shows the line itself
    echo = ("       val b = a + nope\n                   ^\n"
            "On line 2: error: not found: value nope\n")
    assert scala_repl.error_parts("Error", echo, "val a = 1\nval b = a + nope") == (
        "CompileError", "not found: value nope",
        ["       val b = a + nope", "                   ^",
         "On line 2: error: not found: value nope"])
    thrown = "java.lang.IllegalStateException: no more\n  ... 33 elided\n"
    ename, evalue, tb = scala_repl.error_parts("Error", thrown)
    assert (ename, evalue) == ("java.lang.IllegalStateException", "no more")
    assert tb == ["java.lang.IllegalStateException: no more", "  ... 33 elided"]
    assert scala_repl.error_parts("Incomplete", "")[0] == "Incomplete"


def test_kernel_module_imports_without_a_jvm() -> None:
    # the engine starts it as `python -I -m cdsw_agent.engine.scala_kernel`
    import cdsw_agent.engine.scala_kernel as k

    assert k.ScalaKernel.language_info["name"] == "scala"
    assert os.path.basename(k.__file__) == "scala_kernel.py"
