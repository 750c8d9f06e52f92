#!/usr/bin/env python
"""Parameters of the CDSW scripts, read from the command JSON (Ambari 2.6 to 3.0 shapes).

Runs on Python 2.6+ and 3: no f-strings, explicit str.format indexes."""

import os

from resource_management.libraries.functions.default import default
from resource_management.libraries.script.script import Script

import status_params

config = Script.get_config()
tmp_dir = Script.get_tmp_dir()

version = "@CDSW_VERSION@"

cdsw_env = config["configurations"]["cdsw-env"]
cdsw_site = config["configurations"]["cdsw-site"]

user = cdsw_env.get("cdsw_user", "root")
group = cdsw_env.get("cdsw_group", "root")
install_dir = cdsw_env.get("cdsw_install_dir", "/opt/cdsw")
conf_dir = cdsw_env.get("cdsw_conf_dir", "/etc/cdsw/conf")
log_dir = cdsw_env.get("cdsw_log_dir", "/var/log/cdsw")
venv_root = cdsw_env.get("cdsw_venv_root", "/var/lib/cdsw/venvs")
python = cdsw_env.get("cdsw_python", "") or ""
first_admin_username = cdsw_env.get("first_admin_username", "admin")
first_admin_password = cdsw_env.get("first_admin_password", "")
pid_dir = status_params.pid_dir()

# The payload travels inside the service package: package/files/payload.
package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
payload_src = os.path.join(package_dir, "files", "payload")
payload_dir = "{0}/{1}".format(install_dir, version)
cdsw_bin = "{0}/bin/cdsw".format(payload_dir)
properties_file = "{0}/cdsw.properties".format(conf_dir)



def text(value):
    """A configuration value as text on Python 2 (unicode, never str(): Ambari 2.6/2.7 hand
    non-ASCII values as unicode and str() of those raises) and on Python 3."""
    if value is None:
        return u""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, bool):
        return u"true" if value else u"false"
    try:
        return unicode(value)  # noqa: F821  (Python 2)
    except NameError:
        return str(value)


# cdsw.properties holds exactly the cdsw-site properties (the agent refuses unknown keys).
site_properties = dict((text(k), text(v)) for k, v in cdsw_site.items())
start_timeout = int(cdsw_env.get("cdsw_start_timeout", 300) or 300)


def ams_collector_url():
    """The cluster's Ambari Metrics collector (its timeline API), or "" when there is none."""
    hosts = default("/clusterHostInfo/metrics_collector_hosts", [])
    if not hosts:
        return u""
    ams_site = config["configurations"].get("ams-site") or {}
    address = text(ams_site.get("timeline.metrics.service.webapp.address", "0.0.0.0:6188"))
    port = address.rsplit(":", 1)[-1] or u"6188"
    policy = text(ams_site.get("timeline.metrics.service.http.policy", "HTTP_ONLY"))
    scheme = u"https" if policy == u"HTTPS_ONLY" else u"http"
    return u"{0}://{1}:{2}".format(scheme, text(sorted(hosts)[0]), port)


# The master sends its metrics to the cluster's Metrics Collector (the CDSW page's widgets)
# unless the admin set cdsw.ams.collector.url.
if site_properties.get(u"cdsw.ams.collector.url", None) == u"":
    site_properties[u"cdsw.ams.collector.url"] = ams_collector_url()

# Ambari 2.7+ moved these keys; 2.6 has them under hostLevelParams.
hostname = default("/agentLevelParams/hostname", default("/hostname", ""))
stack_name = default("/clusterLevelParams/stack_name", default("/hostLevelParams/stack_name", ""))
java_home = default("/ambariLevelParams/java_home", default("/hostLevelParams/java_home", ""))
master_hosts = default("/clusterHostInfo/cdsw_master_hosts", [])

spark_conf = "/etc/spark/conf" if stack_name.upper() == "BIGTOP" else "/etc/spark2/conf"
client_conf_candidates = ["/etc/hadoop/conf", spark_conf, "/etc/hive/conf"]
