"""The cluster's own clients (Spark, Hadoop, Hive and Java) in every engine, read-only from the
gateway, the way CDSW did it.

A gateway host of the cluster holds the client programs its manager deployed:

    kind        gateway directories (cluster_client_dirs)      Spark, Hadoop, Hive homes below them
    cm-parcels  /opt/cloudera/parcels (mounted whole)          SPARK3/lib/spark3, SPARK2/lib/spark2,
                                                               CDH/lib/spark; CDH/lib/hadoop,
                                                               CDH/lib/hive; CDH/bin (the wrappers)
    hdp         /usr/hdp (mounted whole)                       current/spark2-client (spark-client),
                                                               current/hadoop-client,
                                                               current/hadoop-hdfs-client,
                                                               current/hive-client
    bigtop      /usr/lib (only its component folders)          spark, hadoop, hadoop-hdfs,
                                                               hadoop-yarn, hadoop-mapreduce, hive

The directories are mounted read-only at the same path inside the engine, so the managers'
symbolic links (CDH -> CDH-7.1.7-..., current/* -> ../3.1.4.0-315/...) resolve there too. The
engine gets PATH with the distribution's bin folders (spark-submit, pyspark, spark-shell,
hadoop, hdfs, beeline where present), SPARK_HOME, HADOOP_HOME, HIVE_HOME, and PYTHONPATH with the
distribution's pyspark and py4j, so `import pyspark` uses the cluster's Spark. The collected
client configuration also appears at /etc/hadoop/conf, /etc/spark/conf and /etc/hive/conf, where
the distributions' own conf links point (Bigtop's /usr/lib/spark/conf -> /etc/spark/conf).

cluster_client_kind "auto" (the default) picks the first kind whose directories exist on this
host in the order above, which is the per-manager default: a Cloudera Manager gateway has parcels,
an HDP gateway /usr/hdp/current, a Bigtop one /usr/lib/hadoop. "none" gives engines no clients.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..orchestrators.base import Mount, WorkloadSpec
from ..settings import Settings
from .engine import MOUNT_ROOT

KINDS = ("auto", "cm-parcels", "hdp", "bigtop", "none")
DEFAULT_DIRS = {"cm-parcels": ["/opt/cloudera/parcels"], "hdp": ["/usr/hdp"],
                "bigtop": ["/usr/lib"]}

# Below a parcels directory: Spark homes, newest Spark first
PARCEL_SPARK_HOMES = ("SPARK3/lib/spark3", "SPARK3/lib/spark", "SPARK2/lib/spark2",
                      "CDH/lib/spark")
PARCEL_HADOOP_HOMES = ("CDH/lib/hadoop",)
PARCEL_HIVE_HOMES = ("CDH/lib/hive",)
PARCEL_BIN_DIRS = ("CDH/bin",)  # the parcel's wrappers: hadoop, hdfs, beeline, ...
# Below /usr/hdp (HDP 3 names Spark 2 spark2-client; HDP 2 has both)
HDP_SPARK_HOMES = ("current/spark2-client", "current/spark-client")
HDP_HADOOP_HOMES = ("current/hadoop-client",)
HDP_HIVE_HOMES = ("current/hive-client",)
HDP_BIN_DIRS = ("current/hadoop-hdfs-client/bin", "current/hadoop-yarn-client/bin")
# Below /usr/lib (Bigtop's packages); only these folders are mounted
BIGTOP_COMPONENTS = ("spark", "hadoop", "hadoop-hdfs", "hadoop-yarn", "hadoop-mapreduce", "hive",
                     "tez", "zookeeper")

# Where the collected configuration of each kind also appears (besides MOUNT_ROOT/<kind>)
CONF_ALIASES = {"hadoop": ("/etc/hadoop/conf",), "spark": ("/etc/spark/conf",),
                "hive": ("/etc/hive/conf",)}
HDP_SPARK_CONF = "/etc/spark2/conf"  # where HDP's spark2-client/conf points
COMMANDS = ("spark-submit", "pyspark", "spark-shell", "spark-sql", "hadoop", "hdfs", "yarn",
            "beeline", "hive")


@dataclass(frozen=True)
class ClientDistribution:
    """One gateway's cluster clients: what to mount, and what the engine's environment gets."""

    kind: str
    roots: Tuple[str, ...]  # host directories mounted read-only at the same path
    spark_home: str = ""
    hadoop_home: str = ""
    hive_home: str = ""
    bin_dirs: Tuple[str, ...] = ()  # on PATH, in this order
    python_path: Tuple[str, ...] = ()  # the distribution's pyspark and py4j

    def commands(self) -> Dict[str, str]:
        """The client commands found on PATH: name -> path."""
        out: Dict[str, str] = {}
        for name in COMMANDS:
            for d in self.bin_dirs:
                path = os.path.join(d, name)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    out[name] = path
                    break
        return out

    def env(self, base_path: str, keep_first: int = 1) -> Dict[str, str]:
        """SPARK_HOME, HADOOP_HOME, HIVE_HOME, PYTHONPATH and PATH (the bin folders inserted
        into base_path after its first keep_first entries: the image's virtualenv)."""
        out: Dict[str, str] = {}
        for name, value in (("SPARK_HOME", self.spark_home), ("HADOOP_HOME", self.hadoop_home),
                            ("HIVE_HOME", self.hive_home)):
            if value:
                out[name] = value
        if self.python_path:
            out["PYTHONPATH"] = os.pathsep.join(self.python_path)
        if self.bin_dirs:
            parts = [p for p in base_path.split(os.pathsep) if p]
            rest = [p for p in parts[keep_first:] if p not in self.bin_dirs]
            out["PATH"] = os.pathsep.join(parts[:keep_first] + list(self.bin_dirs) + rest)
        return out


@dataclass
class ClusterClients:
    distribution: Optional[ClientDistribution]
    notes: List[str] = field(default_factory=list)


def _first_dir(roots: Sequence[str], candidates: Sequence[str]) -> str:
    for root in roots:
        for c in candidates:
            path = os.path.join(root, c)
            if os.path.isdir(path):
                return path
    return ""


def spark_python_path(spark_home: str) -> Tuple[str, ...]:
    """$SPARK_HOME/python when it holds the pyspark package, else its lib/pyspark.zip (the
    pyspark wheel's python/pyspark holds only shell.py), and the newest lib/py4j-*-src.zip."""
    if not spark_home:
        return ()
    out: List[str] = []
    python = os.path.join(spark_home, "python")
    if os.path.isfile(os.path.join(python, "pyspark", "__init__.py")):
        out.append(python)
    elif os.path.isfile(os.path.join(python, "lib", "pyspark.zip")):
        out.append(os.path.join(python, "lib", "pyspark.zip"))
    py4j = sorted(glob.glob(os.path.join(python, "lib", "py4j-*-src.zip")))
    if py4j:
        out.append(py4j[-1])
    return tuple(out)


def _assemble(kind: str, roots: Sequence[str], spark: Sequence[str], hadoop: Sequence[str],
              hive: Sequence[str], extra_bins: Sequence[str]) -> Optional[ClientDistribution]:
    spark_home = _first_dir(roots, spark)
    hadoop_home = _first_dir(roots, hadoop)
    hive_home = _first_dir(roots, hive)
    if not (spark_home or hadoop_home or hive_home):
        return None
    bins: List[str] = []
    for d in [os.path.join(h, "bin") for h in (spark_home, hadoop_home, hive_home) if h] + \
            [os.path.join(r, b) for r in roots for b in extra_bins]:
        if os.path.isdir(d) and d not in bins:
            bins.append(d)
    return ClientDistribution(kind=kind, roots=tuple(roots), spark_home=spark_home,
                              hadoop_home=hadoop_home, hive_home=hive_home, bin_dirs=tuple(bins),
                              python_path=spark_python_path(spark_home))


def detect(kind: str, dirs: Sequence[str]) -> Optional[ClientDistribution]:
    """The distribution of that kind under dirs (or the kind's standard places), None when
    nothing is there."""
    if kind == "none":
        return None
    if kind == "auto":
        for k in ("cm-parcels", "hdp", "bigtop"):
            found = detect(k, dirs)
            if found is not None:
                return found
        return None
    if kind not in DEFAULT_DIRS:
        raise UserError("cluster_client_kind %r is unknown; use one of %s"
                        % (kind, ", ".join(KINDS)))
    roots = [d.rstrip("/") or "/" for d in (dirs or DEFAULT_DIRS[kind]) if os.path.isdir(d)]
    if not roots:
        return None
    if kind == "cm-parcels":
        return _assemble(kind, roots, PARCEL_SPARK_HOMES, PARCEL_HADOOP_HOMES, PARCEL_HIVE_HOMES,
                         PARCEL_BIN_DIRS)
    if kind == "hdp":
        return _assemble(kind, roots, HDP_SPARK_HOMES, HDP_HADOOP_HOMES, HDP_HIVE_HOMES,
                         HDP_BIN_DIRS)
    components = [os.path.join(r, c) for r in roots for c in BIGTOP_COMPONENTS
                  if os.path.isdir(os.path.join(r, c))]
    found = _assemble(kind, roots, ("spark",), ("hadoop",), ("hive",),
                      ("hadoop-hdfs/bin", "hadoop-yarn/bin"))
    if found is None:
        return None
    return ClientDistribution(kind=kind, roots=tuple(components), spark_home=found.spark_home,
                              hadoop_home=found.hadoop_home, hive_home=found.hive_home,
                              bin_dirs=found.bin_dirs, python_path=found.python_path)


def cluster_clients(settings: Settings) -> ClusterClients:
    """The configured distribution, with a note when one was asked for and is not there."""
    kind = settings.cluster_client_kind
    dirs = list(settings.cluster_client_dirs)
    found = detect(kind, dirs)
    notes: List[str] = []
    if found is None and kind not in ("auto", "none"):
        notes.append("cluster_client_kind is %s but no Spark, Hadoop or Hive client was found "
                     "under %s; engines get no cluster clients"
                     % (kind, ", ".join(dirs or DEFAULT_DIRS[kind])))
    elif found is None and kind == "auto" and dirs:
        notes.append("no Cloudera Manager parcels, HDP or Bigtop clients found under %s; "
                     "engines get no cluster clients" % ", ".join(dirs))
    return ClusterClients(found, notes)


def conf_alias_mounts(spec: WorkloadSpec, distribution: Optional[ClientDistribution]) -> List[Mount]:
    """The collected configuration mounted into spec also at /etc/hadoop/conf, /etc/spark/conf,
    /etc/hive/conf (and HDP's /etc/spark2/conf), from the same host folders."""
    by_target = {m.target: m for m in spec.mounts}
    out: List[Mount] = []
    for kind, targets in CONF_ALIASES.items():
        source = by_target.get("%s/%s" % (MOUNT_ROOT, kind))
        if source is None and kind == "hadoop":  # Cloudera Manager's yarn-conf is a superset
            source = by_target.get("%s/yarn" % MOUNT_ROOT)
        if source is None:
            continue
        extra = (HDP_SPARK_CONF,) if kind == "spark" and distribution is not None \
            and distribution.kind == "hdp" else ()
        for target in targets + extra:
            if target not in by_target:
                out.append(Mount(source.source, target, True))
    return out


# Folders too broad to mount for a Java home's links
_TOO_BROAD = {"/", "/etc", "/usr", "/usr/lib", "/usr/share", "/lib", "/opt", "/var"}


def java_link_dirs(java_home: str) -> List[str]:
    """Folders outside java_home that its absolute symbolic links point into (Debian's OpenJDK:
    lib/jvm.cfg -> /etc/java-17-openjdk/jvm-amd64.cfg, lib/security/cacerts ->
    /etc/ssl/certs/java/cacerts); the JVM does not start without them."""
    home = os.path.realpath(java_home)
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            if not os.path.isabs(target) or target.startswith(home + os.sep):
                continue
            parent = os.path.dirname(os.path.normpath(target))
            if os.path.isdir(parent) and parent not in _TOO_BROAD:
                found.append(parent)
    out: List[str] = []
    for d in sorted(set(found)):
        if not any(d == o or d.startswith(o + os.sep) for o in out):
            out.append(d)
    return out


def attach_java(settings: Settings, spec: WorkloadSpec, local: bool) -> Optional[str]:
    """JAVA_HOME from the gateway, with the folders its links need; its bin folder, for PATH."""
    java_home = settings.java_home
    if not java_home or not os.path.isdir(java_home):
        return None
    spec.env["JAVA_HOME"] = java_home
    if not local:
        taken = {m.target for m in spec.mounts}
        for d in [java_home] + java_link_dirs(java_home):
            if d not in taken:
                spec.mounts.append(Mount(d, d, True))
    return os.path.join(java_home, "bin")


def local_path() -> str:
    """PATH of a local engine: its Python's own bin folder (the master's virtualenv: `python`,
    `pip`, `jupyter`) first, as an engine image's virtualenv is, then this process's PATH. A
    master started as `.venv/bin/cdsw` has no virtualenv on its PATH, and Debian has no
    `python`, so a terminal's `python` was not found."""
    own = os.path.dirname(os.path.abspath(sys.executable))
    rest = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and p != own]
    return os.pathsep.join([own] + rest)


def attach(settings: Settings, spec: WorkloadSpec, local: bool, image_path: str) -> List[str]:
    """Mount the cluster's clients and configuration aliases into spec and set its environment;
    the notes say what was left out. local: plain processes on this host (nothing is mounted;
    PATH extends this process's)."""
    clients = cluster_clients(settings)
    d = clients.distribution
    if not local:
        spec.mounts.extend(conf_alias_mounts(spec, d))
    java_bin = attach_java(settings, spec, local)
    if d is None and java_bin is None:
        return clients.notes
    d = d or ClientDistribution(kind="none", roots=())
    if java_bin:
        d = replace(d, bin_dirs=d.bin_dirs + (java_bin,))
    if not local:
        taken = {m.target for m in spec.mounts}
        spec.mounts.extend(Mount(r, r, True) for r in d.roots if r not in taken)
    base = spec.env.get("PATH") or local_path() if local else image_path
    env = d.env(base, keep_first=0 if local else 1)
    if "PYTHONPATH" in env and spec.env.get("PYTHONPATH"):  # the project's own entries first
        env["PYTHONPATH"] = spec.env["PYTHONPATH"] + os.pathsep + env["PYTHONPATH"]
    spec.env.update(env)
    return clients.notes
