"""Every setting the workbench knows, declared once.

The CLI, the server, the rendered templates, the Cloudera Manager SDL and the
Ambari configuration files are all derived from this list (`cdsw config schema`).
"""

from __future__ import annotations

import re
from typing import Dict, List

from .fields import Setting, SettingError


def _hostname(value: str) -> None:
    if value and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value):
        raise SettingError("expected a host name such as cdsw.example.com")


def _cluster_name(value: str) -> None:
    if value and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", value):
        raise SettingError("expected a cluster name such as DEV or PROD (a letter, then letters, "
                           "digits, '-' or '_')")


def _db_url(value: str) -> None:
    if value and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
        raise SettingError("expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB")


def _git_schemes(value: List[str]) -> None:
    allowed = {"https", "http", "ssh", "git", "file"}
    bad = [v for v in value if v not in allowed]
    if bad:
        raise SettingError("unknown scheme %s; expected some of %s" % (bad[0], ", ".join(sorted(allowed))))


def _networks(value: List[str]) -> None:
    import ipaddress

    for v in value:
        try:
            ipv4 = ipaddress.ip_network(v, strict=False).version == 4
        except ValueError:
            ipv4 = False
        if not ipv4:
            raise SettingError("%r is not an IPv4 address or network; expected e.g. "
                               "10.20.0.0/16 or 10.20.1.7" % v)


S = Setting

SETTINGS: List[Setting] = [
    # --- where the workbench lives
    S("domain", "str", "localhost", "DNS name users reach the workbench at (CDSW DOMAIN).",
      conf_key="DOMAIN", validator=_hostname, required_in_cluster=True),
    S("master_host", "str", "127.0.0.1", "Address of the master gateway host (CDSW MASTER_IP).",
      conf_key="MASTER_IP", validator=_hostname, required_in_cluster=True),
    S("bind_address", "str", "0.0.0.0", "Address the web server listens on."),
    S("http_port", "int", 8080, "Port of the web UI and API (HTTPS when TLS is enabled).",
      minimum=1, maximum=65535),
    S("master_http_workers", "int", 1, "Processes of the master that answer HTTP (the web UI, "
      "the API, model calls). 1: one process serves and runs the control loops. More: that many "
      "worker processes share the port, each with its own interpreter (one core each at most), "
      "and the master process becomes their controller: loops, engine launches and counts "
      "(docs/architecture.md). Use up to the master host's cores.", minimum=1, maximum=64),
    S("data_dir", "path", "/var/lib/cdsw", "Directory for the database, project files and backups."),
    S("db_url", "str", "", "Database URL; empty means SQLite in the data directory. "
      "PostgreSQL: postgresql://USER:PASSWORD@HOST:5432/DB.", secret=True, validator=_db_url,
      group="database"),
    S("java_home", "str", "", "JAVA_HOME mounted into engines for Spark and Hadoop clients.",
      conf_key="JAVA_HOME"),
    S("log_level", "choice", "info", "Log verbosity.", choices=("debug", "info", "warning", "error")),
    # --- TLS and proxies
    S("tls_enable", "bool", False, "Serve HTTPS with tls_cert and tls_key.", conf_key="TLS_ENABLE",
      group="tls"),
    S("tls_cert", "str", "", "PEM certificate (chain) file for HTTPS.", conf_key="TLS_CERT", group="tls"),
    S("tls_key", "str", "", "PEM private key file for HTTPS.", conf_key="TLS_KEY", group="tls"),
    S("http_proxy", "str", "", "HTTP proxy passed to engines.", conf_key="HTTP_PROXY", group="proxy"),
    S("https_proxy", "str", "", "HTTPS proxy passed to engines.", conf_key="HTTPS_PROXY", group="proxy"),
    S("no_proxy", "str", "127.0.0.1,localhost", "Hosts that bypass the proxy.", conf_key="NO_PROXY",
      group="proxy"),
    # --- accounts and security
    S("signup_enabled", "bool", False, "Let anyone create a local account from the sign-in page.",
      group="security"),
    S("login_max_failures", "int", 5, "Failed sign-ins a client may make on one account before it "
      "must wait (ten times as many from one address across accounts).", minimum=1,
      maximum=100, group="security"),
    S("login_lockout_minutes", "int", 15, "Longest wait after repeated failed sign-ins: the first "
      "is 30 s and each further failure doubles it up to this.", minimum=1,
      maximum=1440, group="security"),
    S("web_session_hours", "int", 12, "Lifetime of a browser sign-in.", minimum=1, maximum=720,
      group="security"),
    S("api_key_max_days", "int", 365, "Longest lifetime an API key may be given.", minimum=1,
      maximum=3650, group="security"),
    S("password_min_length", "int", 10, "Shortest password a local account may have.", minimum=8,
      maximum=128, group="security"),
    S("argon2_time_cost", "int", 3, "argon2id iterations for password hashes.", minimum=1, maximum=20,
      group="security"),
    S("argon2_memory_kib", "int", 65536, "argon2id memory for password hashes (KiB).", minimum=1024,
      maximum=4194304, group="security"),
    S("allowed_git_schemes", "list", ["https", "ssh", "git"],
      "URL schemes a project may be cloned from (file is off by default: it reads the master's disk).",
      validator=_git_schemes, group="security"),
    S("max_upload_mb", "int", 1024, "Largest upload or archive, in MiB.", minimum=1, maximum=102400,
      group="security"),
    # --- LDAP
    S("ldap_url", "str", "", "LDAP server, ldap://host:389 or ldaps://host:636; empty turns LDAP off.",
      group="ldap"),
    S("ldap_bind_dn", "str", "", "DN used to search for users; empty binds anonymously.", group="ldap"),
    S("ldap_bind_password", "str", "", "Password of ldap_bind_dn.", secret=True, group="ldap"),
    S("ldap_user_search_base", "str", "", "Base DN under which users are searched.", group="ldap"),
    S("ldap_user_filter", "str", "(uid={username})",
      "Filter that finds one user; {username} is replaced, escaped.", group="ldap"),
    S("ldap_starttls", "bool", False, "Upgrade ldap:// connections with StartTLS.", group="ldap"),
    S("ldap_ca_cert", "str", "", "CA bundle that signs the LDAP server's certificate.", group="ldap"),
    S("ldap_tls_verify", "bool", True, "Verify the LDAP server's certificate.", group="ldap"),
    S("ldap_admin_group_dn", "str", "", "Members of this group become site administrators.",
      group="ldap"),
    S("ldap_email_attribute", "str", "mail", "User attribute holding the e-mail address.", group="ldap"),
    S("ldap_fullname_attribute", "str", "cn", "User attribute holding the full name.", group="ldap"),
    # --- cluster, docker and orchestration
    S("orchestrator", "choice", "swarm", "Where engines run: swarm (Docker Swarm on the gateways) or "
      "local (plain processes, for a laptop without Docker).", choices=("swarm", "local"),
      group="cluster"),
    S("cluster_secret", "str", "", "Shared secret workers present to join; generated at the master's "
      "first start when empty.", secret=True, group="cluster"),
    S("docker_host", "str", "unix:///var/run/cdsw/docker.sock", "Docker socket the roles talk to.",
      group="docker"),
    S("docker_use_system", "bool", False, "Use an already running system Docker instead of starting "
      "one in the CDSW_DOCKER role.", group="docker"),
    S("dockerd_path", "str", "dockerd", "dockerd executable started by the CDSW_DOCKER role.",
      group="docker"),
    S("docker_storage_driver", "choice", "auto", "Docker storage driver; auto picks overlay2 where "
      "the data root's file system can hold it (not on overlayfs), else fuse-overlayfs when "
      "installed, else vfs.",
      choices=("auto", "overlay2", "fuse-overlayfs", "vfs", "devicemapper", "btrfs", "zfs"),
      group="docker"),
    S("docker_data_root", "path", "/var/lib/cdsw/docker", "Docker's data root.", group="docker"),
    S("docker_registries", "list", [], "Insecure (HTTP) registries Docker may pull from.",
      group="docker"),
    S("engine_registry", "str", "", "External registry engine images are pushed to and pulled from; "
      "empty streams images from the master to the workers.", group="docker"),
    S("engine_debian_mirror", "str", "", "Debian mirror `cdsw images build` uses; empty means the "
      "one this host's apt uses.", group="docker"),
    S("hadoop_conf_dirs", "list", [], "Client configuration directories collected for engines "
      "(Ambari: /etc/hadoop/conf, ...; Cloudera Manager: the role's dependency dirs).",
      group="cluster"),
    S("cluster_client_kind", "choice", "auto", "Where the cluster's own clients (Spark, Hadoop, "
      "Hive) live on the gateways, mounted read-only into engines: cm-parcels "
      "(/opt/cloudera/parcels), hdp (/usr/hdp), bigtop (/usr/lib); auto takes the first found "
      "in that order; none mounts nothing.",
      choices=("auto", "cm-parcels", "hdp", "bigtop", "none"), group="cluster"),
    S("cluster_client_dirs", "list", [], "Gateway directories of the cluster clients "
      "(the parcels directory, /usr/hdp, or Bigtop's /usr/lib); empty: the kind's standard "
      "place.", group="cluster"),
    S("spark_driver_allowed_networks", "list", [], "Addresses or networks (CIDR) of the "
      "cluster hosts whose Spark executors connect back to drivers in engines; the Docker role "
      "lets only these reach the driver ports 20050-32767. Empty: any host but the engines.",
      validator=_networks, group="cluster"),
    S("krb5_conf", "str", "/etc/krb5.conf", "krb5.conf mounted into engines.", group="cluster"),
    S("workbench_cluster", "str", "", "The workbench cluster (e.g. DEV or PROD, registered with "
      "`cdsw clusters add`) this gateway host belongs to: its worker labels its swarm node "
      "cdsw.cluster=NAME, and only that cluster's projects run engines here. Empty: the "
      "default cluster.", validator=_cluster_name, group="cluster"),
    S("kerberos_enabled", "bool", False, "The cluster uses Kerberos: engines act with their "
      "user's Kerberos identity, so session sharing is off by default (site setting "
      "session_sharing_allowed).", group="cluster"),
    S("kerberos_check_seconds", "int", 60, "How often the master checks every user's Kerberos "
      "ticket and renews (kinit -R) or re-obtains it before it expires.", minimum=1,
      maximum=3600, group="cluster"),
    S("kerberos_ticket_lifetime", "str", "", "Lifetime asked for users' tickets (kinit -l, e.g. "
      "10h); empty: the KDC's default.", group="cluster"),
    S("kerberos_renew_lifetime", "str", "7d", "Renewable lifetime asked for users' tickets "
      "(kinit -r); past it the ticket is obtained again from the stored keytab or password.",
      group="cluster"),
    S("kerberos_key_file", "str", "", "Key that encrypts users' stored Kerberos passwords and "
      "keytabs (never in the database); empty: DATA_DIR/kerberos/credentials.key, made with "
      "mode 0600 on first use. Back it up apart from the database.", group="cluster"),
    S("kerberos_service_principal", "str", "", "The workbench's own principal for its cluster "
      "access (Cloudera Manager and Ambari create it, e.g. cdsw/HOST@REALM).", group="cluster"),
    S("kerberos_service_keytab", "str", "", "Keytab of kerberos_service_principal.",
      group="cluster"),
    S("ams_collector_url", "str", "", "Ambari Metrics collector the master sends its metrics "
      "to (the widgets of Ambari's CDSW page), e.g. http://ams.example.com:6188; the Ambari "
      "scripts fill it in from the cluster's Metrics Collector when empty; empty elsewhere: "
      "not sent.", group="cluster"),
    S("ams_push_seconds", "int", 60, "How often the master sends its metrics to "
      "ams_collector_url.", minimum=5, maximum=3600, group="cluster"),
    # --- project storage shared by the gateways
    S("storage_backend", "choice", "auto", "How nodes reach project files: auto (local on the master, "
      "sshfs on workers), local, sshfs or nfs.", choices=("auto", "local", "sshfs", "nfs"),
      group="storage"),
    S("storage_ssh_port", "int", 2222, "Port of the master's SFTP-only sshd that workers mount project "
      "files from.", minimum=1, maximum=65535, group="storage"),
    S("storage_ssh_user", "str", "cdsw-storage", "Account on the master that owns SFTP access to "
      "project files; created at first start, no shell, chrooted.", group="storage"),
    S("storage_ssh_key", "str", "", "Worker: private key for the sshfs mount; empty fetches it from "
      "the master with the cluster secret.", group="storage"),
    S("storage_nfs_export", "str", "", "NFS export holding project files, e.g. "
      "nfs.example.com:/export/cdsw.", group="storage"),
    S("storage_nfs_options", "str", "rw,hard,nfsvers=4.1,timeo=600,retrans=2,noatime",
      "Mount options of the NFS export.", group="storage"),
    S("storage_check_seconds", "int", 15, "How often a node checks its project mount and remounts it "
      "when it dropped.", minimum=1, maximum=3600, group="storage"),
    S("storage_free_warning_percent", "float", 10.0, "Health check storage: warning when the data "
      "directory's file system has less than this share free.", minimum=0, maximum=100,
      group="storage"),
    S("storage_free_critical_percent", "float", 5.0, "Health check storage: critical when the data "
      "directory's file system has less than this share free (0 checks only that it is not "
      "full).", minimum=0, maximum=100, group="storage"),
    # --- engines and workloads
    S("session_idle_minutes", "int", 60, "Stop a session after this long without activity.",
      minimum=1, maximum=10080, group="engines"),
    S("session_max_minutes", "int", 480, "Stop a session after this long in any case.", minimum=1,
      maximum=43200, group="engines"),
    S("session_warm_engines", "int", 0, "Engines kept started ahead of sessions on the master's "
      "node (Docker Swarm backend): a session of the default engine image with the profile "
      "session_warm_profile takes one and answers in about half the time. A warm engine holds "
      "nothing of anyone until a session claims it, and ends with that session; each reserves "
      "its profile's CPU and memory while it waits, and gives way to a session that needs "
      "them. 0 turns them off.", minimum=0, maximum=20,
      group="engines"),
    S("session_warm_profile", "str", "", "Engine profile (name) of the warm engines; empty: "
      "sessions started with the site default (no profile).", group="engines"),
    S("job_default_timeout_minutes", "int", 0, "Timeout of a job that sets none; 0 means none.",
      minimum=0, maximum=43200, group="engines"),
    S("engine_origin", "choice", "port", "Where browsers reach engine content (JupyterLab, "
      "anything a session serves), never on the workbench's own origin: port (a second listener "
      "on engine_port, same host name, no DNS needed) or subdomain (one host "
      "s-<session>-<tag>.DOMAIN per session; needs wildcard DNS *.DOMAIN, and a wildcard "
      "certificate with TLS).", choices=("port", "subdomain"), group="engines"),
    S("engine_port", "int", 8081, "Port of the master's engine-content listener when "
      "engine_origin is port; 0 turns it off (engines then answer API keys only).", minimum=0,
      maximum=65535, group="engines"),
    S("model_max_replicas", "int", 9, "Most replicas a model deployment may ask for.", minimum=1,
      maximum=100, group="engines"),
    # --- mail
    S("smtp_host", "str", "", "SMTP server for job notifications; empty turns mail off.", group="smtp"),
    S("smtp_port", "int", 25, "SMTP port.", minimum=1, maximum=65535, group="smtp"),
    S("smtp_user", "str", "", "SMTP user name.", group="smtp"),
    S("smtp_password", "str", "", "SMTP password.", secret=True, group="smtp"),
    S("smtp_starttls", "bool", False, "Use STARTTLS.", group="smtp"),
    S("smtp_from", "str", "cdsw@localhost", "Sender address of notifications.", group="smtp"),
]

BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_PROPERTY: Dict[str, Setting] = {s.property_key: s for s in SETTINGS}
BY_CONF_KEY: Dict[str, Setting] = {s.conf_key: s for s in SETTINGS if s.conf_key}
BY_ENV: Dict[str, Setting] = {s.env_var: s for s in SETTINGS}

# Variables that select the files themselves; not settings.
LOCATOR_ENV = {"CDSW_CONF", "CDSW_PROPERTIES"}
