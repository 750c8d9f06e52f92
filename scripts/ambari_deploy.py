#!/usr/bin/env python3
"""Deploy CDSW on an Ambari cluster (HDP 2.6/3.x, Bigtop 3.2) through Ambari's REST API (v1).

    ambari_deploy.py --ambari-url http://ambari.example.com:8080 --user admin \\
        --password-file pw --cluster c1 install --master gw1 --workers gw2,gw3 \\
        --site cdsw.domain=cdsw.example.com --site cdsw.master.host=10.0.0.5 \\
        --env first_admin_password=...
    ambari_deploy.py ... restart        (after `ambari-server upgrade-mpack`)
    ambari_deploy.py ... status

The management pack must already be installed (`ambari-server install-mpack --mpack=...` and a
server restart). The script makes the calls Ambari's Add Service wizard makes: service,
components, both config types (stack defaults + overrides), host components (plus the stack's
HDFS/YARN/Spark clients the wizard would add), install, start, service check, alerts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "packaging"))

from deploy_common import (DeployError, RestClient, parse_pairs, read_password,  # noqa: E402
                           run_main, say, wait_for)

SERVICE = "CDSW"
CONFIG_TYPES = ("cdsw-site", "cdsw-env")
SECRET_KEY = "cdsw.cluster.secret"
DONE = {"COMPLETED"}
FAILED = {"FAILED", "TIMEDOUT", "ABORTED", "HOLDING_FAILED", "HOLDING_TIMEDOUT", "SKIPPED_FAILED"}
# The Hadoop clients the CDSW components need on their hosts, per stack family.
CLIENTS = {"HDP": ["HDFS_CLIENT", "YARN_CLIENT", "SPARK2_CLIENT"],
           "BIGTOP": ["HDFS_CLIENT", "YARN_CLIENT", "SPARK_CLIENT"]}


class Ambari:
    def __init__(self, args: argparse.Namespace):
        password = read_password(args.password_file, "AMBARI_PASSWORD")
        verify: Any = args.ca_bundle or not args.insecure
        self.api = RestClient(args.ambari_url + "/api/v1", args.user, password,
                              args.http_timeout, verify,
                              headers={"X-Requested-By": "cdsw-ambari-deploy"})
        self.cluster = args.cluster
        self.timeout = args.timeout
        self.poll = args.poll_interval
        info = self.api.get("/clusters/" + self.cluster, params={"fields": "Clusters/version"})
        stack = (info.get("Clusters") or {}).get("version", "")
        self.stack, _, self.stack_version = stack.partition("-")
        if not self.stack or not self.stack_version:
            raise DeployError("cluster %s reports no stack version (Clusters/version=%r)"
                              % (self.cluster, stack))
        say("Ambari %s, cluster %s, stack %s %s" % (args.ambari_url, self.cluster, self.stack,
                                                   self.stack_version))

    @property
    def c(self) -> str:
        return "/clusters/" + self.cluster

    def wait_request(self, answer: Any, what: str) -> None:
        """Poll a 202 answer's request until it completes; 200 with no body means nothing to do."""
        if not answer:
            say("%s: nothing to do" % what)
            return
        rid = (answer.get("Requests") or {}).get("id")
        if rid is None:
            raise DeployError("%s: Ambari returned no request id" % what)

        def probe() -> Tuple[bool, str]:
            req = self.api.get("%s/requests/%s" % (self.c, rid), params={
                "fields": "Requests/request_status,Requests/progress_percent"})["Requests"]
            status = req.get("request_status")
            if status in FAILED:
                raise DeployError("%s failed: request %s ended %s; see the request's tasks in "
                                  "Ambari (Background Operations)" % (what, rid, status))
            return status in DONE, "%s %d%%" % (status, int(req.get("progress_percent") or 0))
        wait_for(what, probe, self.timeout, self.poll)


def check_stack(amb: Ambari) -> Dict[str, Dict[str, str]]:
    """The stack's default properties of each CDSW config type; fails if the mpack is missing."""
    base = "/stacks/%s/versions/%s/services/%s" % (amb.stack, amb.stack_version, SERVICE)
    try:
        amb.api.get(base)
    except DeployError as e:
        if "HTTP 404" in str(e):
            raise DeployError("stack %s %s has no %s service: run `ambari-server install-mpack "
                              "--mpack=cdsw-ambari-mpack-<version>.tar.gz` and restart "
                              "ambari-server" % (amb.stack, amb.stack_version, SERVICE)) from None
        raise
    items = amb.api.get(base + "/configurations",
                        params={"fields": "StackConfigurations/*"}).get("items", [])
    defaults: Dict[str, Dict[str, str]] = {t: {} for t in CONFIG_TYPES}
    for item in items:
        sc = item.get("StackConfigurations") or {}
        ctype = str(sc.get("type", "")).replace(".xml", "")
        if ctype in defaults:
            defaults[ctype][sc["property_name"]] = sc.get("property_value") or ""
    return defaults


def current_configs(amb: Ambari) -> Dict[str, Dict[str, str]]:
    """The cluster's current properties of each CDSW config type (what the UI shows), empty
    for a type the cluster does not have yet."""
    desired = (amb.api.get(amb.c, params={"fields": "Clusters/desired_configs"})
               .get("Clusters") or {}).get("desired_configs") or {}
    out: Dict[str, Dict[str, str]] = {t: {} for t in CONFIG_TYPES}
    for ctype in CONFIG_TYPES:
        tag = (desired.get(ctype) or {}).get("tag")
        if tag:
            items = amb.api.get(amb.c + "/configurations",
                                params={"type": ctype, "tag": tag}).get("items") or []
            if items:
                out[ctype] = dict(items[0].get("properties") or {})
    return out


def desired_configs(defaults: Dict[str, Dict[str, str]], site: Dict[str, str],
                    env: Dict[str, str], current: Optional[Dict[str, Dict[str, str]]] = None
                    ) -> Dict[str, Dict[str, str]]:
    """Stack defaults, then what the cluster has now (a setting changed in the UI stays), then
    the command line's values. A cluster secret is generated when none is set: the master and
    every worker get it through cdsw-site, so the first start needs no manual step."""
    configs = {t: dict(v) for t, v in defaults.items()}
    for ctype, values in (current or {}).items():
        configs.setdefault(ctype, {}).update(values)
    for ctype, overrides in (("cdsw-site", site), ("cdsw-env", env)):
        unknown = sorted(set(overrides) - set(configs[ctype]))
        if unknown:
            raise DeployError("%s has no properties %s (the agent refuses unknown keys)"
                              % (ctype, ", ".join(unknown)))
        configs[ctype].update(overrides)
    empty = [k for k in ("cdsw.domain", "cdsw.master.host") if not configs["cdsw-site"].get(k)]
    if empty:
        raise DeployError("set %s with --site KEY=VALUE" % " and ".join(empty))
    if SECRET_KEY in configs["cdsw-site"] and not configs["cdsw-site"][SECRET_KEY]:
        configs["cdsw-site"][SECRET_KEY] = secrets.token_urlsafe(32)
        say("cluster secret generated (cdsw-site %s)" % SECRET_KEY)
    return configs


def ensure_service(amb: Ambari, configs: Dict[str, Dict[str, str]], hosts: Dict[str, List[str]],
                   current: Optional[Dict[str, Dict[str, str]]] = None) -> None:
    code, _ = amb.api.call("GET", "%s/services/%s" % (amb.c, SERVICE), ok=(200, 404))
    if code == 404:
        amb.api.post(amb.c + "/services", [{"ServiceInfo": {"service_name": SERVICE}}])
        for comp in ("CDSW_MASTER", "CDSW_WORKER", "CDSW_DOCKER"):
            amb.api.post("%s/services/%s/components/%s" % (amb.c, SERVICE, comp))
        say("service %s and its components created" % SERVICE)
    tag = "version%d" % int(time.time() * 1000)
    changed = [t for t in CONFIG_TYPES if configs[t] != (current or {}).get(t)]
    if changed:
        amb.api.put(amb.c, {"Clusters": {"desired_config": [
            {"type": t, "tag": tag, "properties": configs[t],
             "service_config_version_note": "ambari_deploy.py"} for t in changed]}})
        say("configurations %s set (tag %s)" % (", ".join(changed), tag))
    else:
        say("configurations %s unchanged" % ", ".join(CONFIG_TYPES))
    clients = CLIENTS.get(amb.stack.upper(), CLIENTS["HDP"])
    for host, components in sorted(hosts.items()):
        present = {hc["HostRoles"]["component_name"] for hc in amb.api.get(
            "%s/hosts/%s/host_components" % (amb.c, host)).get("items", [])}
        for comp in components + clients:
            if comp not in present:
                amb.api.post("%s/hosts/%s/host_components/%s" % (amb.c, host, comp))
                say("%s added on %s" % (comp, host))
                if comp in clients:
                    amb.wait_request(amb.api.put(
                        "%s/hosts/%s/host_components/%s" % (amb.c, host, comp),
                        {"HostRoles": {"state": "INSTALLED"}}), "install %s on %s" % (comp, host))


def set_state(amb: Ambari, state: str, context: str) -> None:
    amb.wait_request(amb.api.put("%s/services/%s" % (amb.c, SERVICE), {
        "RequestInfo": {"context": context}, "Body": {"ServiceInfo": {"state": state}}}), context)


def custom_command(amb: Ambari, command: str, context: str, component: str = "",
                   hosts: str = "") -> None:
    target: Dict[str, str] = {"service_name": SERVICE}
    if component:
        target.update({"component_name": component, "hosts": hosts})
    amb.wait_request(amb.api.post(amb.c + "/requests", {
        "RequestInfo": {"context": context, "command": command},
        "Requests/resource_filters": [target]}), context)


def print_alerts(amb: Ambari) -> bool:
    items = amb.api.get(amb.c + "/alerts", params={
        "Alert/service_name": SERVICE,
        "fields": "Alert/state,Alert/label,Alert/text,Alert/host_name"}).get("items", [])
    ok = True
    for item in sorted(items, key=lambda i: (i["Alert"].get("label", ""),
                                             i["Alert"].get("host_name") or "")):
        alert = item["Alert"]
        ok = ok and alert.get("state") in ("OK", None)
        say("  alert %-9s %-36s %-24s %s" % (alert.get("state"), alert.get("label"),
                                             alert.get("host_name") or "", (alert.get("text") or "")
                                             .splitlines()[0] if alert.get("text") else ""))
    if not items:
        say("  no CDSW alerts reported yet (alerts run every minute)")
    return ok


def install(amb: Ambari, args: argparse.Namespace) -> int:
    workers = [w for w in (args.workers or "").split(",") if w]
    if args.master in workers:
        raise DeployError("%s cannot be both the master and a worker" % args.master)
    current = current_configs(amb)
    configs = desired_configs(check_stack(amb), parse_pairs(args.site, "--site"),
                              parse_pairs(args.env, "--env"), current)
    hosts: Dict[str, List[str]] = {args.master: ["CDSW_MASTER", "CDSW_DOCKER"]}
    for w in workers:
        hosts[w] = ["CDSW_WORKER", "CDSW_DOCKER"]
    ensure_service(amb, configs, hosts, current)
    set_state(amb, "INSTALLED", "Install CDSW")
    set_state(amb, "STARTED", "Start CDSW")
    if configs["cdsw-env"].get("first_admin_password"):
        custom_command(amb, "CREATE_ADMIN", "Create the first CDSW administrator",
                       "CDSW_MASTER", args.master)
    custom_command(amb, "CDSW_SERVICE_CHECK", "CDSW Service Check")
    return 0 if print_alerts(amb) or not args.require_ok else 2


def restart(amb: Ambari, args: argparse.Namespace) -> int:
    custom_command(amb, "BACKUP_DB", "Back up the CDSW database", "CDSW_MASTER",
                   master_host(amb))
    set_state(amb, "INSTALLED", "Stop CDSW")
    set_state(amb, "STARTED", "Start CDSW")
    custom_command(amb, "CDSW_SERVICE_CHECK", "CDSW Service Check")
    return 0 if print_alerts(amb) or not args.require_ok else 2


def master_host(amb: Ambari) -> str:
    items = amb.api.get(amb.c + "/host_components", params={
        "HostRoles/component_name": "CDSW_MASTER", "fields": "HostRoles/host_name"}).get("items")
    if not items:
        raise DeployError("no CDSW_MASTER in cluster %s: run install first" % amb.cluster)
    return items[0]["HostRoles"]["host_name"]


def status(amb: Ambari) -> int:
    svc = amb.api.get("%s/services/%s" % (amb.c, SERVICE),
                      params={"fields": "ServiceInfo/state,ServiceInfo/maintenance_state"})
    say("service %s: %s" % (SERVICE, (svc.get("ServiceInfo") or {}).get("state")))
    comps = amb.api.get(amb.c + "/host_components", params={
        "HostRoles/service_name": SERVICE,
        "fields": "HostRoles/state,HostRoles/host_name,HostRoles/stale_configs"}).get("items", [])
    for hc in comps:
        r = hc["HostRoles"]
        say("  %-12s %-28s %-10s%s" % (r.get("component_name"), r.get("host_name"),
                                       r.get("state"), " (stale configs)" if r.get(
                                           "stale_configs") else ""))
    return 0 if print_alerts(amb) else 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ambari-url", required=True, help="e.g. http://ambari.example.com:8080")
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", help="file holding the password (else $AMBARI_PASSWORD)")
    p.add_argument("--cluster", required=True)
    p.add_argument("--ca-bundle")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--http-timeout", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per request")
    p.add_argument("--poll-interval", type=float, default=5.0)
    p.add_argument("--require-ok", action="store_true",
                   help="exit 2 when a CDSW alert is not OK at the end")
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("install")
    i.add_argument("--master", required=True)
    i.add_argument("--workers", default="")
    i.add_argument("--site", action="append", metavar="KEY=VALUE", help="cdsw-site property")
    i.add_argument("--env", action="append", metavar="KEY=VALUE", help="cdsw-env property")
    sub.add_parser("restart", help="back up, stop, start, check (after upgrade-mpack)")
    sub.add_parser("status")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    amb = Ambari(args)
    if args.action == "install":
        return install(amb, args)
    if args.action == "restart":
        return restart(amb, args)
    return status(amb)


if __name__ == "__main__":
    run_main(main)
