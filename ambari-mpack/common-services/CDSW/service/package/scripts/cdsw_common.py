#!/usr/bin/env python
"""What every CDSW component does on its host: install the payload, render cdsw.properties,
start the role in the background under a pid file, stop it, report status, run a cdsw command.

The scripts stay thin: all logic lives in the `cdsw` agent. Runs on Python 2.6+ and 3."""

import io
import os
import signal
import subprocess
import time

try:
    from shlex import quote
except ImportError:  # Python 2
    from pipes import quote

from resource_management.core.exceptions import ComponentIsNotRunning, Fail
from resource_management.core.resources.system import Directory, Execute, File
from resource_management.libraries.functions.check_process_status import check_process_status
from resource_management.libraries.script.script import Script

import status_params

STOP_TIMEOUT = 90
READY_POLL = 2.0
LAST_LINES = 10


def properties_text(site_properties):
    """The text of cdsw.properties (unicode on Python 2: values may be any UTF-8 text)."""
    lines = [u"# Written by the CDSW Ambari scripts from the cdsw-site configuration."]
    for key in sorted(site_properties):
        lines.append(u"{0}={1}".format(key, site_properties[key]))
    return u"\n".join(lines) + u"\n"


def agent_environment(params):
    """Environment of every cdsw call: the venv location, the Python, and the client configs."""
    env = {"CDSW_VENV_ROOT": params.venv_root}
    if params.python:
        env["CDSW_PYTHON"] = params.python
    if not params.site_properties.get("cdsw.hadoop.conf.dirs"):
        found = [d for d in params.client_conf_candidates if os.path.isdir(d)]
        if found:
            env["CDSW_HADOOP_CONF_DIRS"] = ",".join(found)
    if params.java_home and not params.site_properties.get("cdsw.java.home"):
        env["CDSW_JAVA_HOME"] = params.java_home
    return env


def install(params):
    """Copy the payload to INSTALL_DIR/VERSION and build the agent's virtualenv offline."""
    Directory(params.install_dir, create_parents=True, mode=0o755)
    Execute(("cp", "-a", params.payload_src, params.payload_dir),
            not_if="test -x {0}".format(quote(params.cdsw_bin)), sudo=True)
    Directory(params.venv_root, create_parents=True, mode=0o755)
    Execute((params.cdsw_bin, "--launcher-prepare"), environment=agent_environment(params),
            logoutput=True)


def configure(params):
    Directory([params.conf_dir, params.pid_dir, params.log_dir], create_parents=True,
              owner=params.user, group=params.group, mode=0o755)
    File(params.properties_file, content=properties_text(params.site_properties),
         owner=params.user, group=params.group, mode=0o640, encoding="utf-8")


def cdsw_command(params, args):
    """`cdsw --properties FILE ARGS...` as a shell string, every word quoted."""
    words = [params.cdsw_bin, "--properties", params.properties_file] + list(args)
    return " ".join(quote(w) for w in words)


def _alive(pid_file):
    try:
        check_process_status(pid_file)
        return True
    except ComponentIsNotRunning:
        return False


def _log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def last_lines(path, offset=0, count=LAST_LINES):
    """The last lines the role wrote to its log since offset, as one indented block."""
    try:
        with io.open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return u"(no log at {0})".format(path)
    lines = [line for line in text.splitlines() if line.strip()][-count:]
    return u"\n".join(u"  | " + line for line in lines) or u"  | (no output)"


def role_ready(params, role):
    """The role's own readiness check: `cdsw role ROLE status` (master /healthz, worker swarm
    membership, docker ping) exits 0."""
    env = dict(os.environ)
    env.update(agent_environment(params))
    devnull = open(os.devnull, "w")
    try:
        return subprocess.call([params.cdsw_bin, "--properties", params.properties_file, "role",
                                role, "status"], env=env, stdout=devnull, stderr=devnull) == 0
    finally:
        devnull.close()


def wait_ready(params, role, pid_file, log_file, offset):
    """Return once the role answers its readiness check; a role that exits first, or is not
    ready within params.start_timeout seconds (then stopped), fails START with its last lines."""
    deadline = time.time() + params.start_timeout
    while True:
        if not _alive(pid_file):
            raise Fail(u"CDSW {0} exited before it was ready; its last lines in {1}:\n{2}".format(
                role, log_file, last_lines(log_file, offset)))
        if role_ready(params, role):
            return
        if time.time() > deadline:
            stop(params, role)
            raise Fail(u"CDSW {0} was not ready within {1}s (cdsw role {0} status) and was "
                       u"stopped; its last lines in {2}:\n{3}".format(
                           role, params.start_timeout, log_file, last_lines(log_file, offset)))
        time.sleep(READY_POLL)


def start(params, role, run_as):
    # After `ambari-server upgrade-mpack` Ambari restarts without INSTALL: bring the new payload.
    if not os.path.exists(params.cdsw_bin):
        install(params)
    configure(params)
    pid_file = status_params.pid_file(role)
    if _alive(pid_file):
        return
    log_file = "{0}/cdsw-{1}.log".format(params.log_dir, role)
    offset = _log_size(log_file)
    command = "nohup {0} >> {1} 2>&1 < /dev/null & echo $! > {2}".format(
        cdsw_command(params, ["role", role, "start"]), quote(log_file), quote(pid_file))
    Execute(command, user=run_as, environment=agent_environment(params))
    wait_ready(params, role, pid_file, log_file, offset)


def stop(params, role):
    pid_file = status_params.pid_file(role)
    try:
        pid = int(open(pid_file).read().strip())
    except (IOError, OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT
        while time.time() < deadline:
            os.kill(pid, 0)
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass  # gone
    File(pid_file, action="delete")


def status(role):
    check_process_status(status_params.pid_file(role))


def run(params, args, run_as, stdin_text=None):
    """Run one cdsw command in the foreground, its output in the task log."""
    command = cdsw_command(params, args)
    if stdin_text is not None:
        command = "printf '%s\\n' {0} | {1}".format(quote(stdin_text), command)
    Execute(command, user=run_as, environment=agent_environment(params), logoutput=True)


def refuse_worker_on_master(params):
    if params.hostname and params.hostname in params.master_hosts:
        raise Fail("CDSW Worker cannot run on {0}: it hosts the CDSW Master; move the worker "
                   "to another host".format(params.hostname))


class CdswRoleScript(Script):
    """The Ambari commands every CDSW component answers; a component script names its ROLE
    and adds what is particular to it."""

    ROLE = ""

    def load(self, env):
        import params
        env.set_params(params)
        return params

    def run_as(self, params):
        return params.user

    def install(self, env):
        params = self.load(env)
        install(params)
        configure(params)

    def configure(self, env, upgrade_type=None, config_dir=None):
        configure(self.load(env))

    def start(self, env, upgrade_type=None):
        params = self.load(env)
        start(params, self.ROLE, self.run_as(params))

    def stop(self, env, upgrade_type=None):
        stop(self.load(env), self.ROLE)

    def status(self, env):
        status(self.ROLE)
