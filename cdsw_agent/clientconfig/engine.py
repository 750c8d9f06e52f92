"""What an engine gets from the client configuration: read-only mounts, environment variables,
a spark-defaults.conf for Spark client mode from inside a container, and the ports to publish.

Spark's driver runs in the engine; executors on the cluster connect back to it. So the driver
binds to 0.0.0.0 in the container, advertises its node's address (spark.driver.host), and its
RPC and block manager ports are fixed and published on the node in host mode. Use
spark.driver.blockManager.port, not spark.blockManager.port: the latter also moves the
executors' block managers on the NodeManagers.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..errors import UserError
from ..orchestrators.base import Mount, Port, WorkloadSpec
from ..settings import Settings
from .bundle import Bundle, copy_tree

MOUNT_ROOT = "/etc/cdsw/client-config"  # <kind>/ below it, inside every engine
KRB5_TARGET = "/etc/krb5.conf"  # where Java and MIT Kerberos look without being told
SPARK_DEFAULTS = "spark-defaults.conf"
BUNDLE_LABEL = "io.cdsw.client-config"  # the bundle version an engine mounts (see prune in_use)
ENV_FOR_KIND = {"hadoop": "HADOOP_CONF_DIR", "yarn": "YARN_CONF_DIR", "hive": "HIVE_CONF_DIR",
                "spark": "SPARK_CONF_DIR"}

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


@dataclass(frozen=True)
class SparkPorts:
    driver: int  # spark.driver.port, published
    block_manager: int  # spark.driver.blockManager.port, published
    ui: int = 0  # spark.ui.port when non-zero; reached through the router, not published

    def validate(self) -> None:
        given = [p for p in (self.driver, self.block_manager, self.ui) if p]
        if not all(1 <= p <= 65535 for p in given) or not self.driver or not self.block_manager:
            raise UserError("Spark ports must be from 1 to 65535 (driver %s, block manager %s, "
                            "UI %s)" % (self.driver, self.block_manager, self.ui))
        if len(set(given)) != len(given):
            raise UserError("Spark driver, block manager and UI ports must differ (%s)"
                            % ", ".join(map(str, given)))


@dataclass
class EngineClientConfig:
    """Maps onto WorkloadSpec: mounts, env, ports (host mode) and labels; see apply()."""

    mounts: List[Mount] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    ports: List[Port] = field(default_factory=list)
    labels: Dict[str, str] = field(default_factory=dict)
    spark_defaults: str = ""  # the rendered file, also written under engine_dir/spark
    notes: List[str] = field(default_factory=list)  # what was left out, and why

    def apply(self, spec: WorkloadSpec) -> WorkloadSpec:
        taken = {m.target for m in self.mounts}
        spec.mounts = [m for m in spec.mounts if m.target not in taken] + list(self.mounts)
        spec.env.update(self.env)
        spec.ports.extend(p for p in self.ports if p not in spec.ports)
        spec.labels.update(self.labels)
        return spec


def check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        if _HOSTNAME.fullmatch(address or ""):
            return address
    raise UserError("node address %r is neither an IP address nor a host name" % address)


def comment_out_keys(text: str, keys: Iterable[str]) -> str:
    """The cluster's spark-defaults.conf with the properties setting one of keys commented out
    (their continuation lines too), so CDSW's values are the only ones."""
    keys = set(keys)
    out: List[str] = []
    commenting = continued = False
    for line in text.splitlines():
        if continued:  # more of the previous property's value
            out.append("# " + line if commenting else line)
            continued = _continues(line)
            continue
        stripped = line.strip()
        is_property = bool(stripped) and not stripped.startswith(("#", "!"))
        commenting = is_property and re.split(r"[\s=:]", stripped, maxsplit=1)[0] in keys
        out.append("# (set by CDSW below) " + line if commenting else line)
        continued = is_property and _continues(line)
    return "\n".join(out)


def _continues(line: str) -> bool:
    """A Java properties line ending in an odd number of backslashes continues on the next."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def render_spark_defaults(settings: Settings, base: str, node_address: str, ports: SparkPorts,
                          bundle_version: str = "") -> str:
    from ..render import render

    overridden = ["spark.driver.host", "spark.driver.bindAddress", "spark.driver.port",
                  "spark.driver.blockManager.port"] + (["spark.ui.port"] if ports.ui else [])
    return render("spark-defaults.conf.j2", settings, base=comment_out_keys(base, overridden),
                  bundle_version=bundle_version, driver_host=node_address,
                  driver_port=ports.driver, block_manager_port=ports.block_manager,
                  ui_port=ports.ui)


def write_spark_dir(bundle: Optional[Bundle], text: str, engine_dir: Path) -> Path:
    """engine_dir/spark: the bundle's Spark files plus this engine's spark-defaults.conf,
    replaced atomically."""
    engine_dir.mkdir(parents=True, exist_ok=True)
    target = engine_dir / "spark"
    tmp = engine_dir / (".spark-" + secrets.token_hex(4))
    try:
        if bundle is not None and "spark" in bundle.kinds:
            copy_tree(bundle.dir("spark"), tmp)
        else:
            tmp.mkdir()
        (tmp / SPARK_DEFAULTS).write_text(text, encoding="utf-8")
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            os.chmod(d, 0o755)
        os.chmod(tmp / SPARK_DEFAULTS, 0o644)
        old = engine_dir / (".old-spark-" + secrets.token_hex(4))
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def engine_mounts_and_env(bundle: Optional[Bundle], settings: Settings, node_address: str,
                          ports: SparkPorts, engine_dir: Path) -> EngineClientConfig:
    """The client configuration of one engine that will run on the node at node_address.

    engine_dir is a host directory of this workload (visible on its node) that receives the
    engine's Spark conf dir; bundle may be None where no client configuration is collected."""
    address = check_address(node_address)
    ports.validate()
    out = hadoop_mounts_and_env(bundle, settings, java_and_kerberos=False)  # added after Spark
    kinds = bundle.kinds if bundle is not None else ()
    base = ""
    if "spark" in kinds and (bundle.dir("spark") / SPARK_DEFAULTS).is_file():
        base = (bundle.dir("spark") / SPARK_DEFAULTS).read_text(encoding="utf-8", errors="replace")
    version = bundle.version if bundle is not None else ""
    out.spark_defaults = render_spark_defaults(settings, base, address, ports, version)
    spark_dir = write_spark_dir(bundle, out.spark_defaults, Path(engine_dir))
    out.mounts.append(Mount(str(spark_dir), MOUNT_ROOT + "/spark", True))
    out.env["SPARK_CONF_DIR"] = MOUNT_ROOT + "/spark"
    out.ports = [Port(ports.driver, ports.driver), Port(ports.block_manager, ports.block_manager)]
    add_java_and_kerberos(out, settings)
    return out


def hadoop_mounts_and_env(bundle: Optional[Bundle], settings: Settings,
                          java_and_kerberos: bool = True) -> EngineClientConfig:
    """What does not depend on the node: the Hadoop, YARN and Hive configuration, Java and
    Kerberos. Enough for engines that start no Spark driver (model replicas)."""
    out = EngineClientConfig()
    kinds = bundle.kinds if bundle is not None else ()
    for kind in kinds:
        if kind != "spark":
            out.mounts.append(Mount(str(bundle.dir(kind)), "%s/%s" % (MOUNT_ROOT, kind), True))
            out.env[ENV_FOR_KIND[kind]] = "%s/%s" % (MOUNT_ROOT, kind)
    # Ambari's /etc/hadoop/conf holds both, Cloudera Manager's yarn-conf is a superset of
    # hadoop-conf: either stands in for the other when only one was deployed
    if "hadoop" in kinds or "yarn" in kinds:
        out.env.setdefault("HADOOP_CONF_DIR", out.env.get("YARN_CONF_DIR", ""))
        out.env.setdefault("YARN_CONF_DIR", out.env["HADOOP_CONF_DIR"])
    if bundle is not None:
        out.labels[BUNDLE_LABEL] = bundle.version
    if java_and_kerberos:
        add_java_and_kerberos(out, settings)
    return out


def add_java_and_kerberos(out: EngineClientConfig, settings: Settings) -> None:
    """JAVA_HOME and krb5.conf from the gateway, read-only."""
    java_home = settings.java_home
    if java_home and os.path.isdir(java_home):
        out.mounts.append(Mount(java_home, java_home, True))
        out.env["JAVA_HOME"] = java_home
    elif java_home:
        out.notes.append("java_home %s is not a directory on this host; engines get no Java"
                         % java_home)
    krb5 = settings.krb5_conf
    if krb5 and os.path.isfile(krb5):
        out.mounts.append(Mount(krb5, KRB5_TARGET, True))
        out.env["KRB5_CONFIG"] = KRB5_TARGET
    elif krb5:
        out.notes.append("krb5_conf %s does not exist; engines get no Kerberos configuration"
                         % krb5)
