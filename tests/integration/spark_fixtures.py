"""A real Spark and Java for the integration tests, from the package registries: Debian's
OpenJDK (scripts/ci/apt-packages.txt) and the `pyspark` package from PyPI, whose package folder
holds bin/, sbin/ and jars/, a complete Spark.

The Spark is laid out once per machine (cached in SPARK_CACHE) exactly as Cloudera Manager
activates a parcel::

    SPARK_CACHE/parcels/SPARK3-<version>/lib/spark3/{bin,sbin,jars,...}   the pyspark package
    SPARK_CACHE/parcels/SPARK3-<version>/lib/spark3/python/lib/pyspark.zip and py4j-*-src.zip
    SPARK_CACHE/parcels/SPARK3 -> SPARK3-<version>

so the gateway setting is cluster_client_kind=cm-parcels, cluster_client_dirs=SPARK_CACHE/parcels.
A standalone master and worker (`spark-class org.apache.spark.deploy.master.Master` and
`...worker.Worker`) run from the same folder on hosts of their own (netns.Host).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import requests

PYSPARK = "pyspark==4.3.0"
PY4J = "py4j==0.10.9.9"
SPARK_CACHE = Path(os.environ.get("CDSW_TEST_SPARK_CACHE", "/var/lib/cdsw-test/spark"))
JAVA_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/java-17-openjdk-arm64")
# never in pyspark.zip: the JVM side, which the Spark home has at its top
_NOT_PYTHON = ("jars", "bin", "sbin", "examples", "licenses", "data")


def java_home() -> Optional[str]:
    for candidate in JAVA_CANDIDATES:
        if os.access(os.path.join(candidate, "bin", "java"), os.X_OK):
            return candidate
    return None


def _zip_tree(source: Path, arcname: str, target: Path, skip: tuple = ()) -> None:
    if target.exists():
        target.unlink()  # a hard link into the pip install: never write through it
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if rel.parts[0] in skip or "__pycache__" in rel.parts or not path.is_file():
                continue
            z.write(path, "%s/%s" % (arcname, rel.as_posix()))


def spark_client_settings() -> Dict[str, Any]:
    """Master settings whose engines get the SPARK3 parcel's Spark and Debian's Java: what a
    Scala session or job needs on the local backend."""
    java = java_home()
    assert java, "no Java 17: install openjdk-17-jre-headless (scripts/ci/apt-packages.txt)"
    return dict(cluster_client_kind="cm-parcels", cluster_client_dirs=[str(parcels_dir())],
                java_home=java)


def parcels_dir() -> Path:
    """SPARK_CACHE/parcels with SPARK3 activated; made on first use (pip install from PyPI)."""
    parcels = SPARK_CACHE / "parcels"
    version = PYSPARK.split("==")[1]
    home = parcels / ("SPARK3-" + version) / "lib" / "spark3"
    SPARK_CACHE.mkdir(parents=True, exist_ok=True)
    with open(SPARK_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (parcels / "SPARK3" / "lib" / "spark3" / "bin" / "spark-submit").is_file():
            return parcels
        site = SPARK_CACHE / ("site-" + version)
        if not (site / "pyspark" / "bin" / "spark-submit").is_file():
            shutil.rmtree(site, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--target", str(site), PYSPARK, PY4J], check=True, timeout=1800)
        shutil.rmtree(home.parent.parent, ignore_errors=True)
        home.parent.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(site / "pyspark"), str(home)], check=True)
        lib = home / "python" / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        # the pyspark package ships both zips; made here when a version does not
        if not (lib / "pyspark.zip").is_file():
            _zip_tree(site / "pyspark", "pyspark", lib / "pyspark.zip",
                      skip=_NOT_PYTHON + ("python",))
        if not glob.glob(str(lib / "py4j-*-src.zip")):
            _zip_tree(site / "py4j", "py4j", lib / ("py4j-%s-src.zip" % PY4J.split("==")[1]))
        for d in [SPARK_CACHE, parcels, *parcels.rglob("*")]:
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o755)
        link = parcels / "SPARK3"
        if link.is_symlink():
            link.unlink()
        link.symlink_to("SPARK3-" + version)  # as CM activates a parcel
    return parcels


def spark_home() -> Path:
    return parcels_dir() / "SPARK3" / "lib" / "spark3"


@dataclass
class SparkStandalone:
    master_url: str  # spark://ADDRESS:7077
    master_ui: str  # http://ADDRESS:8080
    worker_ui: str  # http://ADDRESS:8081
    worker_address: str

    def master_json(self) -> Dict[str, Any]:
        return requests.get(self.master_ui + "/json/", timeout=5).json()

    def worker_json(self) -> Dict[str, Any]:
        return requests.get(self.worker_ui + "/json/", timeout=5).json()

    def apps(self) -> Dict[str, Any]:
        """Every application the master saw, active or completed, by name."""
        state = self.master_json()
        return {a["name"]: a for a in state.get("activeapps", []) + state.get("completedapps", [])}

    def executors_of(self, app_id: str) -> list:
        """The executors the worker host ran (running or finished) for that application."""
        state = self.worker_json()
        return [e for e in state.get("executors", []) + state.get("finishedexecutors", [])
                if e.get("appid") == app_id]


def hosts_file(lab: Any) -> Path:
    """LAB/spark-hosts: every lab host's name and address. The hosts run under their own host
    names, which no DNS here knows; Java and log4j look the local name and addresses up at start
    and would wait for DNS timeouts (minutes). JVMs given -Djdk.net.hosts.file=THIS resolve from
    it only, and fail fast for anything else."""
    path = Path(lab.root) / "spark-hosts"
    path.write_text("127.0.0.1 localhost\n" + "".join("%s %s\n" % (h.address, h.name)
                                                      for h in lab.hosts))
    path.chmod(0o644)
    return path


def java_options(hosts: Path) -> str:
    return "-Djdk.net.hosts.file=%s" % hosts


def daemon_env(java: str, home: Path, log_dir: Path, hosts: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDSW_", "SPARK_", "PYSPARK"))}
    env.update(JAVA_HOME=java, SPARK_HOME=str(home), SPARK_DAEMON_MEMORY="256m",
               SPARK_LOG_DIR=str(log_dir), SPARK_NO_DAEMONIZE="1",
               SPARK_DAEMON_JAVA_OPTS=java_options(hosts), SPARK_LOCAL_HOSTNAME=log_dir.name,
               SPARK_WORKER_DIR=str(log_dir / "work"),  # not in the (shared, cached) Spark
               # Debian's python3 runs the executors' Python workers: the engine's minor version
               PATH="/usr/bin:/bin")
    return env


def start_standalone(master_host: Any, worker_host: Any, wait_for: Any) -> SparkStandalone:
    """A Spark standalone master on master_host and one worker (1 core, 1 GiB) on worker_host,
    both netns.Host; returns when the worker registered."""
    java = java_home()
    assert java, "no Java 17: install openjdk-17-jre-headless (scripts/ci/apt-packages.txt)"
    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    m, w = master_host.address, worker_host.address
    hosts = hosts_file(master_host.lab)
    master_host.popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", m,
                       "--port", "7077", "--webui-port", "8080"],
                      env=daemon_env(java, home, master_host.root, hosts), log_name="spark-master.log")
    spark = SparkStandalone("spark://%s:7077" % m, "http://%s:8080" % m, "http://%s:8081" % w, w)
    wait_for(lambda: _answers(spark.master_ui), 120,
             "the Spark master (log: %s)" % master_host.log("spark-master.log")[-800:])
    worker_host.popen([spark_class, "org.apache.spark.deploy.worker.Worker", spark.master_url,
                       "--host", w, "--webui-port", "8081", "--cores", "2", "--memory", "1g"],
                      env=daemon_env(java, home, worker_host.root, hosts), log_name="spark-worker.log")
    wait_for(lambda: any(x.get("state") == "ALIVE" and x.get("host") == w
                         for x in spark.master_json().get("workers", [])), 120,
             "the Spark worker to register (log: %s)" % worker_host.log("spark-worker.log")[-800:])
    return spark


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/json/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def describe(spark: SparkStandalone) -> str:
    try:
        return json.dumps({"master": spark.master_json(), "worker": spark.worker_json()})[:3000]
    except Exception as e:  # noqa: BLE001 - only for a failure message
        return "cannot read the Spark JSON API: %s" % e
