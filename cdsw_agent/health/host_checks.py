"""Checks of this host's files: data directory, Hadoop client configs, Kerberos."""

from __future__ import annotations

import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

from .registry import REGISTRY, HealthContext, Outcome, critical, ok, warning

# below this many free bytes the data volume counts as full (writes are failing or about to):
# the storage check and /healthz say so
FULL_BELOW_BYTES = 16 * 1024 ** 2


def _gib(n: int) -> str:
    return "%.1f GiB" % (n / 1024 ** 3)


@REGISTRY.register("storage", "The data directory is writable and its file system has free space.",
                   roles=("master", "worker"))
def storage(ctx: HealthContext) -> Outcome:
    data_dir = Path(ctx.settings.data_dir)
    if not data_dir.is_dir():
        return critical("data directory %s does not exist; start the role once or create it"
                        % data_dir)
    full = data_volume_full(str(data_dir))
    if full:
        return critical(full)
    probe = data_dir / (".health-%s" % uuid.uuid4().hex)
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        probe.unlink(missing_ok=True)
        return critical("data directory %s is not writable: %s" % (data_dir, e.strerror or e))
    usage = shutil.disk_usage(str(data_dir))
    free_pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    data = {"path": str(data_dir), "free_bytes": usage.free, "total_bytes": usage.total,
            "free_percent": round(free_pct, 2)}
    text = "%s writable, %s free of %s (%.1f%%)" % (data_dir, _gib(usage.free), _gib(usage.total),
                                                    free_pct)
    if free_pct < ctx.settings.storage_free_critical_percent:
        return critical(text + "; free space now", **data)
    if free_pct < ctx.settings.storage_free_warning_percent:
        return warning(text + "; free space soon", **data)
    return ok(text, **data)


def data_volume_full(data_dir: str) -> Optional[str]:
    """One line when the data directory's file system is full (less than FULL_BELOW_BYTES
    free), else None. Cheap (one statvfs): /healthz asks on every call."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError:
        return None  # a missing directory is the caller's other problem
    if usage.free >= FULL_BELOW_BYTES or usage.total == 0:  # total 0: a pseudo file system
        return None
    return ("no space left on the data volume: %s free of %s at %s; free space or grow the "
            "volume" % (_size(usage.free), _size(usage.total), data_dir))


def _size(n: int) -> str:
    return _gib(n) if n >= 1024 ** 3 else "%.1f MiB" % (n / 1024 ** 2)


def _check_site_file(path: Path) -> str:
    """'' when the file is a readable Hadoop configuration, else what is wrong."""
    try:
        with path.open("rb") as f:
            root = ET.parse(f).getroot()
    except OSError as e:
        return "%s is not readable: %s" % (path, e.strerror or e)
    except ET.ParseError as e:
        return "%s is not valid XML: %s" % (path, e)
    if root.tag != "configuration":
        return "%s is not a Hadoop configuration (root element <%s>)" % (path, root.tag)
    return ""


@REGISTRY.register("hadoop_client_configs",
                   "Each Hadoop client configuration directory holds readable *-site.xml files.",
                   roles=("master", "worker"))
def hadoop_client_configs(ctx: HealthContext) -> Outcome:
    dirs: List[str] = list(ctx.settings.hadoop_conf_dirs)
    if not dirs:
        return ok("none configured", dirs={})
    found: Dict[str, List[str]] = {}
    problems: List[str] = []
    empty: List[str] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            problems.append("%s does not exist" % d)
            continue
        if not os.access(str(path), os.R_OK | os.X_OK):
            problems.append("%s is not readable" % d)
            continue
        files = sorted(path.glob("*-site.xml"))
        found[d] = [f.name for f in files]
        if not files:
            empty.append(d)
        problems.extend(p for p in (_check_site_file(f) for f in files) if p)
    if problems:
        return critical("; ".join(problems) + "; redeploy the client configuration", dirs=found)
    if empty:
        return warning("no *-site.xml in %s; deploy the Hadoop client configuration"
                       % ", ".join(empty), dirs=found)
    total = sum(len(v) for v in found.values())
    return ok("%d site file(s) in %d director%s" % (total, len(found),
                                                     "y" if len(found) == 1 else "ies"), dirs=found)


@REGISTRY.register("kerberos", "krb5.conf is readable when Kerberos is configured.",
                   roles=("master", "worker"))
def kerberos(ctx: HealthContext) -> Outcome:
    conf = ctx.settings.krb5_conf
    if not conf:
        return ok("not configured (krb5_conf is empty)")
    path = Path(conf)
    if not path.exists():
        if ctx.settings.kerberos_enabled:
            return critical("kerberos_enabled is on but %s does not exist; deploy the cluster's "
                            "krb5.conf (the managers' Kerberos wizard does)" % conf, path=conf)
        return ok("not in use: %s does not exist" % conf, path=conf)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return critical("%s is not readable: %s; engines cannot authenticate to Hadoop"
                        % (conf, e.strerror or e), path=conf)
    realm = ""
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif section == "libdefaults" and "=" in stripped and not stripped.startswith(("#", ";")):
            key, value = (part.strip() for part in stripped.split("=", 1))
            if key == "default_realm":
                realm = value
    if not realm:
        return warning("%s has no default_realm in [libdefaults]; Kerberos clients will need "
                       "fully qualified principals" % conf, path=conf)
    if ctx.settings.kerberos_enabled:  # users' tickets, kept by the master (kerberos/tickets.py)
        from ..kerberos.health import tickets_summary
        from ..kerberos.kdc import tools_missing

        missing = tools_missing()
        if missing:
            return critical(missing + "; users' tickets cannot be obtained", path=conf)
        good, text, data = tickets_summary(ctx.settings)
        if text:
            line = "%s readable, default realm %s; %s" % (conf, realm, text)
            return (ok if good else warning)(line, path=conf, realm=realm, tickets=data)
    return ok("%s readable, default realm %s" % (conf, realm), path=conf, realm=realm)
