#!/usr/bin/env python3
"""Deploy or upgrade CDSW on a Cloudera Manager cluster through the CM REST API (v41+).

    cm_deploy.py --cm-url https://cm.example.com:7183 --user admin --password-file pw \\
        --cluster Cluster1 install --repo-url https://repo/cdsw/0.1.0/ \\
        --master gw1.example.com --workers gw2.example.com,gw3.example.com \\
        --config cdsw_domain=cdsw.example.com --config cdsw_master_host=10.0.0.5 \\
        --role-config CDSW_MASTER:first_admin_password=...
    cm_deploy.py ... upgrade --repo-url https://repo/cdsw/0.2.0/
    cm_deploy.py ... status

The CSD jar must already be in /opt/cloudera/csd on the CM host (CM has no API for that).
It talks to the REST API with `requests` rather than the `cm_client` package: the calls and
bodies are the same ones cm_client's swagger model sends (its ApiCommand, ApiParcel,
ApiService, ApiRole JSON), without pinning cm_client's old urllib3/six stack into our tools,
and the tests can check each body against the documented API.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "packaging"))

from deploy_common import (DeployError, RestClient, parse_pairs, read_password,  # noqa: E402
                           run_main, say, wait_for)

PRODUCT = "CDSW"
SERVICE_TYPE = "CDSW"
MIN_API = 41
# The parcel stages in order, and the command that moves a parcel to each.
STAGES = [("DOWNLOADED", "startDownload"), ("DISTRIBUTED", "startDistribution"),
          ("ACTIVATED", "activate")]
ORDER = ["AVAILABLE_REMOTELY", "DOWNLOADING", "DOWNLOADED", "DISTRIBUTING", "DISTRIBUTED",
         "ACTIVATING", "ACTIVATED"]


class Cm:
    def __init__(self, args: argparse.Namespace):
        password = read_password(args.password_file, "CM_PASSWORD")
        verify: Any = args.ca_bundle or not args.insecure
        root = RestClient(args.cm_url + "/api", args.user, password, args.http_timeout, verify)
        version = str(root.get("/version") or "").strip().strip('"')
        if not version.startswith("v") or not version[1:].isdigit() or int(version[1:]) < MIN_API:
            raise DeployError("Cloudera Manager API %s is too old: CDSW needs v%d or newer "
                              "(Cloudera Manager 7.1+)" % (version or "?", MIN_API))
        self.api = RestClient("%s/api/%s" % (args.cm_url, version), args.user, password,
                              args.http_timeout, verify)
        self.cluster = args.cluster
        self.timeout = args.timeout
        self.poll = args.poll_interval
        say("Cloudera Manager %s, API %s, cluster %s" % (args.cm_url, version, args.cluster))

    @property
    def c(self) -> str:
        return "/clusters/" + self.cluster

    def wait_command(self, command: Dict[str, Any], what: str) -> None:
        cid = command.get("id")
        if cid is None:
            raise DeployError("%s: Cloudera Manager returned no command id" % what)

        def probe() -> Any:
            cmd = self.api.get("/commands/%s" % cid)
            if cmd.get("active"):
                return False, "running (command %s)" % cid
            if not cmd.get("success"):
                raise DeployError("%s failed (command %s): %s" % (
                    what, cid, cmd.get("resultMessage") or "no message"))
            return True, "done"
        wait_for(what, probe, self.timeout, self.poll)


def check_csd(cm: Cm) -> None:
    types = cm.api.get(cm.c + "/serviceTypes").get("items", [])
    if SERVICE_TYPE not in types:
        raise DeployError("service type %s is unknown to Cloudera Manager: copy CDSW-<version>.jar "
                          "to /opt/cloudera/csd on the CM host and restart cloudera-scm-server"
                          % SERVICE_TYPE)


def add_repo(cm: Cm, repo_url: str) -> None:
    config = cm.api.get("/cm/config").get("items", [])
    current = next((i.get("value") or "" for i in config
                    if i.get("name") == "REMOTE_PARCEL_REPO_URLS"), "")
    urls = [u.strip() for u in current.split(",") if u.strip()]
    if repo_url.rstrip("/") not in [u.rstrip("/") for u in urls]:
        urls.append(repo_url)
        cm.api.put("/cm/config", {"items": [{"name": "REMOTE_PARCEL_REPO_URLS",
                                             "value": ",".join(urls)}]})
        say("parcel repository %s added" % repo_url)
    cm.wait_command(cm.api.post("/cm/commands/refreshParcelRepos"), "refresh parcel repositories")


def repo_version(repo_url: str, timeout: float) -> str:
    """The CDSW version the repository offers, read from its manifest.json."""
    import requests

    url = repo_url.rstrip("/") + "/manifest.json"
    try:
        manifest = requests.get(url, timeout=timeout).json()
    except (requests.RequestException, ValueError) as e:
        raise DeployError("cannot read %s: %s (pass --version)" % (url, e)) from None
    versions = sorted({p["parcelName"].split("-")[1] for p in manifest.get("parcels", [])
                       if p.get("parcelName", "").startswith(PRODUCT + "-")})
    if len(versions) != 1:
        raise DeployError("%s offers CDSW versions %s: pass --version" % (url, versions or "none"))
    return versions[0]


def activate_parcel(cm: Cm, version: str) -> None:
    path = "%s/parcels/products/%s/versions/%s" % (cm.c, PRODUCT, version)
    parcel = cm.api.get(path)
    for target, command in STAGES:
        stage = parcel.get("stage", "")
        if stage not in ORDER:
            raise DeployError("parcel %s-%s is in stage %r; expected one of %s"
                              % (PRODUCT, version, stage, ", ".join(ORDER)))
        if ORDER.index(stage) >= ORDER.index(target):
            continue
        if stage not in ("DOWNLOADING", "DISTRIBUTING", "ACTIVATING"):
            cm.api.post(path + "/commands/" + command)

        def probe(target: str = target) -> Any:
            nonlocal parcel
            parcel = cm.api.get(path)
            state = parcel.get("state") or {}
            if state.get("errors"):
                raise DeployError("parcel %s-%s: %s" % (PRODUCT, version, state["errors"][0]))
            total = state.get("totalProgress") or 0
            pct = " %d%%" % (100 * state.get("progress", 0) // total) if total else ""
            return parcel.get("stage") == target, "%s%s" % (parcel.get("stage"), pct)
        wait_for("parcel %s-%s" % (PRODUCT, version), probe, cm.timeout, cm.poll)


def host_ids(cm: Cm, names: List[str]) -> Dict[str, str]:
    hosts = cm.api.get("/hosts").get("items", [])
    by_name = {h.get("hostname"): h.get("hostId") for h in hosts}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DeployError("hosts %s are not managed by Cloudera Manager (known: %s)"
                          % (", ".join(missing), ", ".join(sorted(by_name)) or "none"))
    return {n: by_name[n] for n in names}


def ensure_service(cm: Cm, name: str, config: Dict[str, str]) -> None:
    services = cm.api.get(cm.c + "/services").get("items", [])
    existing = next((s for s in services if s.get("name") == name), None)
    items = [{"name": k, "value": v} for k, v in sorted(config.items())]
    if existing is None:
        cm.api.post(cm.c + "/services", {"items": [{"name": name, "type": SERVICE_TYPE,
                                                     "config": {"items": items}}]})
        say("service %s created" % name)
    elif existing.get("type") != SERVICE_TYPE:
        raise DeployError("service %s exists with type %s, not %s"
                          % (name, existing.get("type"), SERVICE_TYPE))
    elif items:
        cm.api.put("%s/services/%s/config" % (cm.c, name), {"items": items},
                   params={"message": "cm_deploy.py"})
        say("service %s configuration updated" % name)


def ensure_roles(cm: Cm, service: str, master: str, workers: List[str]) -> None:
    if master in workers:
        raise DeployError("%s cannot be both the master and a worker: CDSW_WORKER never runs on "
                          "the master's host" % master)
    ids = host_ids(cm, [master] + workers)
    wanted = [("CDSW_MASTER", master)] + [("CDSW_DOCKER", h) for h in [master] + workers] + \
             [("CDSW_WORKER", h) for h in workers]
    roles = cm.api.get("%s/services/%s/roles" % (cm.c, service)).get("items", [])
    have = {(r.get("type"), (r.get("hostRef") or {}).get("hostId")) for r in roles}
    new = [{"type": t, "hostRef": {"hostId": ids[h]}} for t, h in wanted
           if (t, ids[h]) not in have]
    if new:
        cm.api.post("%s/services/%s/roles" % (cm.c, service), {"items": new})
        say("roles created: %s" % ", ".join("%s on %s" % (t, h) for t, h in wanted
                                              if (t, ids[h]) not in have))


def configure_roles(cm: Cm, service: str, role_config: Dict[str, Dict[str, str]]) -> None:
    if not role_config:
        return
    groups = cm.api.get("%s/services/%s/roleConfigGroups" % (cm.c, service)).get("items", [])
    for role_type, values in sorted(role_config.items()):
        base = next((g for g in groups if g.get("roleType") == role_type and g.get("base")), None)
        if base is None:
            raise DeployError("service %s has no base role config group for %s"
                              % (service, role_type))
        cm.api.put("%s/services/%s/roleConfigGroups/%s/config" % (cm.c, service, base["name"]),
                   {"items": [{"name": k, "value": v} for k, v in sorted(values.items())]},
                   params={"message": "cm_deploy.py"})
        say("%s configuration updated (%s)" % (base["name"], ", ".join(sorted(values))))


def print_health(cm: Cm, service: str) -> bool:
    svc = cm.api.get("%s/services/%s" % (cm.c, service), params={"view": "full"})
    say("service %s: state %s, health %s" % (service, svc.get("serviceState"),
                                               svc.get("healthSummary")))
    for check in svc.get("healthChecks") or []:
        say("  check %-40s %s" % (check.get("name"), check.get("summary")))
    roles = cm.api.get("%s/services/%s/roles" % (cm.c, service),
                       params={"view": "full"}).get("items", [])
    for role in sorted(roles, key=lambda r: (r.get("type", ""), r.get("name", ""))):
        say("  role %-12s %-28s %-8s %s" % (role.get("type"), (role.get("hostRef") or {}).get(
            "hostname") or (role.get("hostRef") or {}).get("hostId"), role.get("roleState"),
            role.get("healthSummary")))
    return svc.get("healthSummary") == "GOOD"


def role_config_pairs(pairs: Optional[List[str]]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for pair in pairs or []:
        role, sep, rest = pair.partition(":")
        if not sep or not role.startswith("CDSW_"):
            raise DeployError("--role-config %r: expected ROLE_TYPE:key=value, e.g. "
                              "CDSW_MASTER:first_admin_password=..." % pair)
        out.setdefault(role, {}).update(parse_pairs([rest], "--role-config"))
    return out


def install(cm: Cm, args: argparse.Namespace) -> int:
    workers = [w for w in (args.workers or "").split(",") if w]
    config = parse_pairs(args.config, "--config")
    role_config = role_config_pairs(args.role_config)
    check_csd(cm)
    version = args.version or repo_version(args.repo_url, cm.api.timeout)
    add_repo(cm, args.repo_url)
    activate_parcel(cm, version)
    ensure_service(cm, args.service, config)
    ensure_roles(cm, args.service, args.master, workers)
    configure_roles(cm, args.service, role_config)
    cm.wait_command(cm.api.post("%s/services/%s/commands/firstRun" % (cm.c, args.service)),
                    "First Run of %s" % args.service)
    return 0 if print_health(cm, args.service) or not args.require_healthy else 2


def upgrade(cm: Cm, args: argparse.Namespace) -> int:
    check_csd(cm)
    version = args.version or repo_version(args.repo_url, cm.api.timeout)
    add_repo(cm, args.repo_url)
    s = "%s/services/%s" % (cm.c, args.service)
    cm.wait_command(cm.api.post(s + "/commands/CdswBackupDb"), "database backup")
    activate_parcel(cm, version)
    if args.rolling:
        body = {"slaveBatchSize": 1, "sleepSeconds": 0, "slaveFailCountThreshold": 0,
                "staleConfigsOnly": False, "unUpgradedOnly": False, "restartRoleTypes": [
                    "CDSW_DOCKER", "CDSW_MASTER", "CDSW_WORKER"]}
        cm.wait_command(cm.api.post(s + "/commands/rollingRestart", body), "rolling restart")
    else:
        cm.wait_command(cm.api.post(s + "/commands/restart"), "restart of %s" % args.service)
    return 0 if print_health(cm, args.service) or not args.require_healthy else 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cm-url", required=True, help="e.g. https://cm.example.com:7183")
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", help="file holding the password (else $CM_PASSWORD)")
    p.add_argument("--cluster", required=True)
    p.add_argument("--service", default="CDSW", help="service name (default CDSW)")
    p.add_argument("--ca-bundle", help="CA bundle for CM's TLS certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--http-timeout", type=float, default=30.0, help="seconds per HTTP call")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per long command")
    p.add_argument("--poll-interval", type=float, default=5.0)
    p.add_argument("--require-healthy", action="store_true",
                   help="exit 2 when the service's health is not GOOD at the end")
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("install", help="parcel, service, roles, First Run, health")
    i.add_argument("--repo-url", required=True)
    i.add_argument("--version", help="parcel version (default: the repository's)")
    i.add_argument("--master", required=True)
    i.add_argument("--workers", default="", help="comma-separated hosts")
    i.add_argument("--config", action="append", metavar="PARAM=VALUE",
                   help="service parameter (e.g. cdsw_domain=..., hdfs_service=HDFS-1)")
    i.add_argument("--role-config", action="append", metavar="ROLE:PARAM=VALUE")
    u = sub.add_parser("upgrade", help="back up the DB, activate the new parcel, restart")
    u.add_argument("--repo-url", required=True)
    u.add_argument("--version")
    u.add_argument("--rolling", action="store_true", help="rolling restart instead of restart")
    sub.add_parser("status", help="print service and role health")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    cm = Cm(args)
    if args.action == "install":
        return install(cm, args)
    if args.action == "upgrade":
        return upgrade(cm, args)
    return 0 if print_health(cm, args.service) else 2


if __name__ == "__main__":
    run_main(main)
