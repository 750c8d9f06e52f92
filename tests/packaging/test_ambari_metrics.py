"""The Ambari scripts point the master at the cluster's Ambari Metrics collector (the widgets of
the CDSW page get their data from it): the command JSON's Metrics Collector host and ams-site's
port and HTTP policy become cdsw.ams.collector.url in cdsw.properties, unless the admin set one.
What the master then sends is tests/integration/test_dashboards.py.

Boundary: the stand-in resource_management of test_ambari_scripts.py; no ambari-server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from .test_ambari_scripts import STUB, Agent, _interpreters, command_json, service  # noqa: F401


def run_master(agent: Agent, tmp: Path, shape: str, ams_hosts: Optional[list],
               ams_site: Optional[Dict[str, str]], site: Optional[Dict[str, str]] = None) -> str:
    cfg: Dict[str, Any] = command_json(shape, agent.service, tmp, "gw1.example.com",
                                       "CDSW_MASTER", site)
    if ams_hosts is not None:
        cfg["clusterHostInfo"]["metrics_collector_hosts"] = ams_hosts
    if ams_site is not None:
        cfg["configurations"]["ams-site"] = ams_site
    cmd_file = tmp / "command.json"
    cmd_file.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(STUB), RM_STUB_LOG=str(agent.resources))
    env.pop("PYTHONHOME", None)
    r = subprocess.run([agent.python, str(agent.package / "scripts" / "cdsw_master.py"),
                        "INSTALL", str(cmd_file), str(agent.package), str(tmp / "out.json"),
                        "INFO", str(tmp)], capture_output=True, text=True, env=env,
                       cwd=str(tmp), timeout=120)
    assert r.returncode == 0, r.stderr
    props = (tmp / "etc" / "cdsw.properties").read_text().splitlines()
    return next(line.split("=", 1)[1] for line in props
                if line.startswith("cdsw.ams.collector.url="))


@pytest.mark.parametrize("python,shape", _interpreters())
def test_the_collector_of_the_cluster_is_found(python, shape, service, tmp_path):
    agent = Agent(python, service, tmp_path, shape)
    assert run_master(agent, tmp_path, shape, ["ams1.example.com"],
                      {"timeline.metrics.service.webapp.address": "0.0.0.0:6188"}) == \
        "http://ams1.example.com:6188"
    assert run_master(agent, tmp_path, shape, ["ams1.example.com"],
                      {"timeline.metrics.service.webapp.address": "0.0.0.0:6189",
                       "timeline.metrics.service.http.policy": "HTTPS_ONLY"}) == \
        "https://ams1.example.com:6189"
    # no Metrics Collector in the cluster: nothing is sent
    assert run_master(agent, tmp_path, shape, None, None) == ""
    # the admin's own collector wins
    assert run_master(agent, tmp_path, shape, ["ams1.example.com"], {},
                      site={"cdsw.ams.collector.url": "http://other:6188"}) == "http://other:6188"
