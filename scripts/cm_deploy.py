#!/usr/bin/env python3
"""Deploy or upgrade CDSW on a Cloudera Manager cluster through the CM API (v41+), with cm_client.

    cm_deploy.py --cm-url https://cm.example.com:7183 --user admin --password-file pw \\
        --cluster Cluster1 install --repo-url https://repo/cdsw/0.1.0/ \\
        --master gw1.example.com --workers gw2.example.com,gw3.example.com \\
        --config cdsw_domain=cdsw.example.com --config cdsw_master_host=10.0.0.5 \\
        --role-config CDSW_MASTER:first_admin_password=...
    cm_deploy.py ... upgrade --repo-url https://repo/cdsw/0.2.0/
    cm_deploy.py ... status

The CSD jar must already be in /opt/cloudera/csd on the CM host (CM has no API for that).
Every CM call goes through Cloudera's `cm_client` package (pip install cm-client) against the
API version the server reports (at least v41); an HTTP error or a timeout ends the run with one
line naming the call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "packaging"))

from deploy_common import (DeployError, error_message, parse_pairs,  # noqa: E402
                           read_password, run_main, say, wait_for)

try:
    import cm_client
    import urllib3
    from cm_client.rest import ApiException
except ImportError:  # pragma: no cover - depends on the admin's environment
    print("error: the cm_client package is missing: pip install cm-client", file=sys.stderr)
    sys.exit(1)

PRODUCT = "CDSW"
SERVICE_TYPE = "CDSW"
# A rolling restart never restarts CDSW_DOCKER under running masters and workers (CDSW's
# guidance: that hangs; restart the Docker daemons with a full service restart).
ROLLING_ROLE_TYPES = ("CDSW_MASTER", "CDSW_WORKER")
SECRET_PARAM = "cdsw_cluster_secret"  # the SDL parameter of cdsw.cluster.secret
MIN_API = 41
# The parcel stages in order, and the ParcelResourceApi method that moves a parcel to each.
STAGES = [("DOWNLOADED", "start_download_command"),
          ("DISTRIBUTED", "start_distribution_command"), ("ACTIVATED", "activate_command")]
ORDER = ["AVAILABLE_REMOTELY", "DOWNLOADING", "DOWNLOADED", "DISTRIBUTING", "DISTRIBUTED",
         "ACTIVATING", "ACTIVATED"]
MESSAGE = "cm_deploy.py"  # the change message CM records with each configuration update


class CmApiClient(cm_client.ApiClient):
    """cm_client's ApiClient with a timeout on every request and each failure turned into a
    DeployError naming the call: `PUT https://cm:7183/api/v41/cm/config: HTTP 400: ...`."""

    def __init__(self, host: str, timeout: float):
        super().__init__(host)
        self.timeout = timeout
        # One attempt per call, so --http-timeout bounds it; urllib3 would otherwise retry reads
        # three times, logging each through the handler cm_client attaches to urllib3's logger.
        self.rest_client.pool_manager.connection_pool_kw["retries"] = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            # a (connect, read) pair: cm_client silently ignores a float given on its own
            kwargs["_request_timeout"] = (self.timeout, self.timeout)
        try:
            return super().request(method, url, *args, **kwargs)
        except ApiException as e:
            if not e.status:  # cm_client's own failure, e.g. TLS: the reason says what
                raise DeployError("%s %s: %s" % (method, url, e.reason)) from None
            raise DeployError("%s %s: HTTP %d: %s" % (method, url, e.status, error_message(
                _json(e.body), e.reason or ""))) from None
        except urllib3.exceptions.HTTPError as e:
            reason = getattr(e, "reason", None) or e
            # NewConnectionError (refused, unresolvable) is a ConnectTimeoutError subclass
            if isinstance(reason, urllib3.exceptions.TimeoutError) and \
                    not isinstance(reason, urllib3.exceptions.NewConnectionError):
                raise DeployError("%s %s: no answer within %gs (is the server up and reachable?)"
                                  % (method, url, self.timeout)) from None
            raise DeployError("%s %s: cannot connect: %s"
                              % (method, url, str(reason).split(": ", 1)[-1][:200])) from None


def _json(body: Any) -> Any:
    """An error answer's body as JSON when it is JSON, else as text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body


class Cm:
    """The cm_client resource APIs for one cluster, bound to the server's API version."""

    def __init__(self, args: argparse.Namespace):
        config = cm_client.configuration  # cm_client keeps its settings in one global object
        config.username = args.user
        config.password = read_password(args.password_file, "CM_PASSWORD")
        config.verify_ssl = not args.insecure
        config.ssl_ca_cert = args.ca_bundle or None
        root = CmApiClient(args.cm_url + "/api", args.http_timeout)
        version = str(root.call_api("/version", "GET", response_type="str",
                                    auth_settings=["basic"], _return_http_data_only=True) or "")
        version = version.strip().strip('"')
        if not version.startswith("v") or not version[1:].isdigit() or int(version[1:]) < MIN_API:
            raise DeployError("Cloudera Manager API %s is too old: CDSW needs v%d or newer "
                              "(Cloudera Manager 7.1+)" % (version or "?", MIN_API))
        client = CmApiClient("%s/api/%s" % (args.cm_url, version), args.http_timeout)
        self.http_timeout = args.http_timeout
        self.cm = cm_client.ClouderaManagerResourceApi(client)
        self.clusters = cm_client.ClustersResourceApi(client)
        self.commands = cm_client.CommandsResourceApi(client)
        self.parcel = cm_client.ParcelResourceApi(client)
        self.parcels = cm_client.ParcelsResourceApi(client)
        self.hosts = cm_client.HostsResourceApi(client)
        self.services = cm_client.ServicesResourceApi(client)
        self.roles = cm_client.RolesResourceApi(client)
        self.groups = cm_client.RoleConfigGroupsResourceApi(client)
        self.cluster = args.cluster
        self.timeout = args.timeout
        self.poll = args.poll_interval
        say("Cloudera Manager %s, API %s, cluster %s" % (args.cm_url, version, args.cluster))

    def wait_command(self, command: Any, what: str) -> None:
        cid = getattr(command, "id", None)
        if cid is None:
            raise DeployError("%s: Cloudera Manager returned no command id" % what)

        def probe() -> Any:
            cmd = self.commands.read_command(cid)
            if cmd.active:
                return False, "running (command %s)" % cid
            if not cmd.success:
                raise DeployError("%s failed (command %s): %s" % (
                    what, cid, cmd.result_message or "no message"))
            return True, "done"
        wait_for(what, probe, self.timeout, self.poll)


def _configs(values: Dict[str, str]) -> List[Any]:
    return [cm_client.ApiConfig(name=k, value=v) for k, v in sorted(values.items())]


def check_csd(cm: Cm) -> None:
    types = cm.clusters.list_service_types(cm.cluster).items or []
    if SERVICE_TYPE not in types:
        raise DeployError("service type %s is unknown to Cloudera Manager: copy CDSW-<version>.jar "
                          "to /opt/cloudera/csd on the CM host and restart cloudera-scm-server"
                          % SERVICE_TYPE)


def add_repo(cm: Cm, repo_url: str) -> None:
    config = cm.cm.get_config().items or []
    current = next((i.value or "" for i in config if i.name == "REMOTE_PARCEL_REPO_URLS"), "")
    urls = [u.strip() for u in current.split(",") if u.strip()]
    if repo_url.rstrip("/") not in [u.rstrip("/") for u in urls]:
        urls.append(repo_url)
        cm.cm.update_config(message=MESSAGE, body=cm_client.ApiConfigList(
            items=_configs({"REMOTE_PARCEL_REPO_URLS": ",".join(urls)})))
        say("parcel repository %s added" % repo_url)
    cm.wait_command(cm.cm.refresh_parcel_repos(), "refresh parcel repositories")


def repo_version(repo_url: str, timeout: float) -> str:
    """The CDSW version the repository offers, read from its manifest.json (plain HTTP: the
    repository is not Cloudera Manager)."""
    import requests

    url = repo_url.rstrip("/") + "/manifest.json"
    try:
        manifest = requests.get(url, timeout=timeout).json()
    except (requests.RequestException, ValueError) as e:
        raise DeployError("cannot read %s: %s (pass --version)" % (url, e)) from None
    versions = {v for v in (parcel_version(p.get("parcelName", ""))
                            for p in manifest.get("parcels", [])) if v}
    if not versions:
        raise DeployError("%s offers no CDSW parcel: check --repo-url" % url)
    return max(versions, key=version_key)


def parcel_version(name: str) -> Optional[str]:
    """VERSION of 'CDSW-VERSION-DISTRO.parcel' (VERSION may hold dashes, as CDH's
    '5.16.2-1.cdh5.16.2.p0.8' does; DISTRO never does), None for another product's parcel."""
    prefix, suffix = PRODUCT + "-", ".parcel"
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    version, sep, distro = name[len(prefix):-len(suffix)].rpartition("-")
    return version if sep and version and distro else None


def version_key(version: str) -> Tuple[Tuple[int, Any], ...]:
    """Orders '0.1.0.9' before '0.1.0.10' (numbers as numbers, other parts as text)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.-]", version))


def activate_parcel(cm: Cm, version: str) -> None:
    parcel = cm.parcel.read_parcel(cm.cluster, PRODUCT, version)
    for target, command in STAGES:
        stage = parcel.stage or ""
        if stage not in ORDER:
            raise DeployError("parcel %s-%s is in stage %r; expected one of %s"
                              % (PRODUCT, version, stage, ", ".join(ORDER)))
        if ORDER.index(stage) >= ORDER.index(target):
            continue
        if stage not in ("DOWNLOADING", "DISTRIBUTING", "ACTIVATING"):
            getattr(cm.parcel, command)(cm.cluster, PRODUCT, version)

        def probe(target: str = target) -> Any:
            nonlocal parcel
            parcel = cm.parcel.read_parcel(cm.cluster, PRODUCT, version)
            state = parcel.state
            if state is not None and state.errors:
                raise DeployError("parcel %s-%s: %s" % (PRODUCT, version, state.errors[0]))
            total = (state.total_progress if state is not None else 0) or 0
            pct = " %d%%" % (100 * (state.progress or 0) // total) if total else ""
            return parcel.stage == target, "%s%s" % (parcel.stage, pct)
        wait_for("parcel %s-%s" % (PRODUCT, version), probe, cm.timeout, cm.poll)


def host_ids(cm: Cm, names: List[str]) -> Dict[str, str]:
    by_name = {h.hostname: h.host_id for h in cm.hosts.read_hosts().items or []}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DeployError("hosts %s are not managed by Cloudera Manager (known: %s)"
                          % (", ".join(missing), ", ".join(sorted(by_name)) or "none"))
    return {n: by_name[n] for n in names}


def ensure_service(cm: Cm, name: str, config: Dict[str, str]) -> None:
    services = cm.services.read_services(cm.cluster).items or []
    existing = next((s for s in services if s.name == name), None)
    if existing is None:
        if not config.get(SECRET_PARAM):
            # First install with no manual step: the secret every role shares (the master
            # checks it, workers present it) is made here, once, and CM hands it to every
            # role's cdsw.properties. A re-run finds the service and leaves it as it is.
            config = dict(config, **{SECRET_PARAM: secrets.token_urlsafe(32)})
            say("cluster secret generated (service parameter %s)" % SECRET_PARAM)
        service = cm_client.ApiService(name=name, type=SERVICE_TYPE,
                                       config=cm_client.ApiServiceConfig(items=_configs(config)))
        cm.services.create_services(cm.cluster, body=cm_client.ApiServiceList(items=[service]))
        say("service %s created" % name)
    elif existing.type != SERVICE_TYPE:
        raise DeployError("service %s exists with type %s, not %s"
                          % (name, existing.type, SERVICE_TYPE))
    elif config:
        cm.services.update_service_config(cm.cluster, name, message=MESSAGE,
                                          body=cm_client.ApiServiceConfig(items=_configs(config)))
        say("service %s configuration updated" % name)


def ensure_roles(cm: Cm, service: str, master: str, workers: List[str]) -> None:
    if master in workers:
        raise DeployError("%s cannot be both the master and a worker: CDSW_WORKER never runs on "
                          "the master's host" % master)
    ids = host_ids(cm, [master] + workers)
    wanted = [("CDSW_MASTER", master)] + [("CDSW_DOCKER", h) for h in [master] + workers] + \
             [("CDSW_WORKER", h) for h in workers]
    roles = cm.roles.read_roles(cm.cluster, service).items or []
    have = {(r.type, r.host_ref.host_id if r.host_ref else None) for r in roles}
    missing = [(t, h) for t, h in wanted if (t, ids[h]) not in have]
    if missing:
        new = [cm_client.ApiRole(type=t, host_ref=cm_client.ApiHostRef(host_id=ids[h]))
               for t, h in missing]
        cm.roles.create_roles(cm.cluster, service, body=cm_client.ApiRoleList(items=new))
        say("roles created: %s" % ", ".join("%s on %s" % (t, h) for t, h in missing))


def configure_roles(cm: Cm, service: str, role_config: Dict[str, Dict[str, str]]) -> None:
    if not role_config:
        return
    groups = cm.groups.read_role_config_groups(cm.cluster, service).items or []
    for role_type, values in sorted(role_config.items()):
        base = next((g for g in groups if g.role_type == role_type and g.base), None)
        if base is None:
            raise DeployError("service %s has no base role config group for %s"
                              % (service, role_type))
        cm.groups.update_config(cm.cluster, base.name, service, message=MESSAGE,
                                body=cm_client.ApiConfigList(items=_configs(values)))
        say("%s configuration updated (%s)" % (base.name, ", ".join(sorted(values))))


def print_health(cm: Cm, service: str) -> bool:
    svc = cm.services.read_service(cm.cluster, service, view="full")
    say("service %s: state %s, health %s" % (service, svc.service_state, svc.health_summary))
    for check in svc.health_checks or []:
        say("  check %-40s %s" % (check.name, check.summary))
    roles = cm.roles.read_roles(cm.cluster, service, view="full").items or []
    for role in sorted(roles, key=lambda r: (r.type or "", r.name or "")):
        host = role.host_ref.hostname or role.host_ref.host_id if role.host_ref else None
        say("  role %-12s %-28s %-8s %s" % (role.type, host, role.role_state,
                                            role.health_summary))
    return svc.health_summary == "GOOD"


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
    version = args.version or repo_version(args.repo_url, cm.http_timeout)
    add_repo(cm, args.repo_url)
    activate_parcel(cm, version)
    ensure_service(cm, args.service, config)
    ensure_roles(cm, args.service, args.master, workers)
    configure_roles(cm, args.service, role_config)
    cm.wait_command(cm.services.first_run(cm.cluster, args.service),
                    "First Run of %s" % args.service)
    return 0 if print_health(cm, args.service) or not args.require_healthy else 2


def active_version(cm: Cm) -> Optional[str]:
    """The CDSW parcel version active on the cluster now, if any."""
    for parcel in cm.parcels.read_parcels(cm.cluster).items or []:
        if parcel.product == PRODUCT and parcel.stage == "ACTIVATED":
            return parcel.version
    return None


def restart_service(cm: Cm, args: argparse.Namespace) -> None:
    if args.rolling:
        restart = cm_client.ApiRollingRestartArgs(
            slave_batch_size=1, sleep_seconds=0, slave_fail_count_threshold=0,
            stale_configs_only=False, un_upgraded_only=False,
            restart_role_types=list(ROLLING_ROLE_TYPES))
        cm.wait_command(cm.services.rolling_restart(cm.cluster, args.service, body=restart),
                        "rolling restart")
    else:
        cm.wait_command(cm.services.restart_command(cm.cluster, args.service),
                        "restart of %s" % args.service)


def upgrade(cm: Cm, args: argparse.Namespace) -> int:
    """Back up, activate the new parcel, restart; when the restart fails, activate the previous
    parcel again, restart it and fail with one line saying so."""
    check_csd(cm)
    version = args.version or repo_version(args.repo_url, cm.http_timeout)
    add_repo(cm, args.repo_url)
    previous = active_version(cm)
    cm.wait_command(cm.services.service_command_by_name(cm.cluster, "CdswBackupDb",
                                                        args.service), "database backup")
    activate_parcel(cm, version)
    try:
        restart_service(cm, args)
    except DeployError as e:
        if not previous or previous == version:
            raise
        say("upgrade to %s failed: %s; rolling back to %s" % (version, e, previous))
        activate_parcel(cm, previous)
        cm.wait_command(cm.services.restart_command(cm.cluster, args.service),
                        "restart of %s on %s" % (args.service, previous))
        raise DeployError("upgrade to CDSW %s failed and was rolled back: %s runs CDSW %s again "
                          "(if the new master had migrated the database, restore the backup "
                          "taken before the upgrade with `cdsw db restore`)"
                          % (version, args.service, previous)) from None
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
