#!/usr/bin/env python
"""Values the status command needs. Ambari 2.6 sends only *-env types with status commands,
so everything here comes from cdsw-env. Read on call, not at import: the component scripts
import this module before the agent has loaded the command JSON. Python 2.6+ and 3."""

from resource_management.libraries.functions.default import default


def pid_dir():
    return default("/configurations/cdsw-env/cdsw_pid_dir", "/var/run/cdsw")


def pid_file(role):
    return "{0}/cdsw-{1}.pid".format(pid_dir(), role)
