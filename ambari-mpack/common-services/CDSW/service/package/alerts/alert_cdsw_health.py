#!/usr/bin/env python
"""Ambari SCRIPT alert: runs `cdsw health --check NAME` on the host and maps its Nagios-style
exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) to the alert state.

The Ambari agent imports this module into its own interpreter (Python 2.6+ in Ambari 2.6-2.8,
Python 3 in 3.0), so it uses only the standard library and no f-strings. It relies on tokens
only: Ambari 2.6 does not set Script.config for alerts."""

import os
import subprocess
import threading

INSTALL_DIR_KEY = "{{cdsw-env/cdsw_install_dir}}"
CONF_DIR_KEY = "{{cdsw-env/cdsw_conf_dir}}"
VENV_ROOT_KEY = "{{cdsw-env/cdsw_venv_root}}"
PYTHON_KEY = "{{cdsw-env/cdsw_python}}"

VERSION = "@CDSW_VERSION@"
STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
DEFAULT_TIMEOUT = 30.0


def get_tokens():
    return (INSTALL_DIR_KEY, CONF_DIR_KEY, VENV_ROOT_KEY, PYTHON_KEY)


def _run(command, env, timeout):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        output = proc.communicate()[0]
    finally:
        timer.cancel()
    if not isinstance(output, str):
        output = output.decode("utf-8", "replace")
    return proc.returncode, output.strip()


def execute(configurations=None, parameters=None, host_name=None):
    configurations = configurations or {}
    parameters = parameters or {}
    check = parameters.get("check.name")
    if not check:
        return ("UNKNOWN", ["the alert definition has no check.name parameter"])
    try:
        timeout = float(parameters.get("check.timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        timeout = DEFAULT_TIMEOUT
    install_dir = configurations.get(INSTALL_DIR_KEY, "/opt/cdsw")
    conf_dir = configurations.get(CONF_DIR_KEY, "/etc/cdsw/conf")
    cdsw_bin = "{0}/{1}/bin/cdsw".format(install_dir, VERSION)
    properties = "{0}/cdsw.properties".format(conf_dir)
    if not os.path.exists(cdsw_bin):
        return ("UNKNOWN", ["{0} is not installed on {1}".format(cdsw_bin, host_name)])
    env = dict(os.environ)
    env["CDSW_VENV_ROOT"] = configurations.get(VENV_ROOT_KEY, "/var/lib/cdsw/venvs")
    if configurations.get(PYTHON_KEY):
        env["CDSW_PYTHON"] = configurations[PYTHON_KEY]
    try:
        code, output = _run([cdsw_bin, "--properties", properties, "health", "--check", check],
                            env, timeout)
    except OSError as e:
        return ("UNKNOWN", ["cannot run {0}: {1}".format(cdsw_bin, e)])
    if code < 0:
        return ("UNKNOWN", ["cdsw health --check {0} timed out after {1:g}s".format(
            check, timeout)])
    state = STATES.get(code, "UNKNOWN")
    return (state, [output or "cdsw health --check {0}: exit {1}".format(check, code)])
