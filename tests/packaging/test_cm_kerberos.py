"""Cloudera Manager's Kerberos contract for the CSD, against a real MIT KDC (issue 12).

What CM does for a role whose SDL declares `kerberosPrincipals` on a Kerberized cluster (cm_ext
RoleDescriptor; the KAFKA and SPARK CSDs do the same): it creates the principal PRIMARY/HOST@REALM
in the KDC, puts a keytab holding it in the role's process dir as `<service type in lower
case>.keytab` (here `cdsw.keytab`), and exports the principal under the declared name
(CDSW_PRINCIPAL). This test plays CM with a real KDC (tests/integration/kdc.py): the principal
`cdsw/localhost` the SDL's `${principal}/${host}` gives on this host, its keytab exported into
CONF_DIR, the process dir's cdsw.properties rendered from the built jar's SDL. control.sh then
starts the real master (the agent from this checkout's virtualenv stands for the parcel's
`bin/cdsw`), which must take the keytab as its own cluster identity and hold a ticket of
cdsw/localhost@REALM obtained from it.

Boundary: no CM server or agent; the principal name and keytab file are what the cm_ext contract
documents, not observed from a live CM.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.integration.kdc import Kdc, start_kdc

from .test_cm_process import VALID, control, csd, process_dir  # noqa: F401 (csd: fixture)

pytestmark = pytest.mark.timeout(300)

PRINCIPAL = "cdsw/localhost@CDSW.TEST"  # SDL: primary ${principal} (runAs.principal), ${host}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    k = start_kdc(tmp_path_factory.mktemp("cm-kdc") / "kdc")
    try:
        k.add_principal("cdsw/localhost")
        yield k
    finally:
        k.stop()


@pytest.fixture()
def agent_home(tmp_path: Path) -> Path:
    """CDSW_HOME whose bin/cdsw is this checkout's agent (the parcel's launcher stands there)."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "cdsw").write_text('#!/bin/sh\nexec "%s" -m cdsw_agent.cli.main "$@"\n'
                                       % sys.executable)
    (home / "bin" / "cdsw").chmod(0o755)
    return home


def test_the_sdl_declares_the_masters_principal_and_kerberos_switch(csd):
    sdl = csd["sdl"]
    assert sdl["kerberos"] == "${cdsw_kerberos_enabled}"
    assert sdl["runAs"]["principal"] == "cdsw"
    roles = {r["name"]: r for r in sdl["roles"]}
    assert roles["CDSW_MASTER"]["kerberosPrincipals"] == [
        {"name": "CDSW_PRINCIPAL", "primary": "${principal}", "instance": "${host}"}]
    assert "kerberosPrincipals" not in roles["CDSW_WORKER"]  # engines use their users' tickets
    params = {p["name"] for p in sdl["parameters"]}
    assert {"cdsw_kerberos_enabled", "cdsw_kerberos_service_principal",
            "cdsw_kerberos_service_keytab", "cdsw_krb5_conf"} <= params


def test_the_master_takes_the_keytab_cm_puts_in_its_process_dir(csd, kdc, agent_home, tmp_path):
    port = _free_port()
    values = dict(VALID, cdsw_http_port=port, cdsw_bind_address="127.0.0.1",
                  cdsw_data_dir=str(tmp_path / "data"), cdsw_krb5_conf=str(kdc.krb5_conf),
                  cdsw_kerberos_check_seconds=1, cdsw_storage_backend="local")
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", values)
    props = (conf / "cdsw.properties").read_text()
    assert "cdsw.kerberos.enabled=false" in props  # the admin did not switch it on: CM's keytab does
    kdc.keytab("cdsw/localhost", conf / "cdsw.keytab")  # what CM writes into the process dir
    (conf / "cdsw.keytab").chmod(0o600)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "CONF_DIR": str(conf), "CDSW_HOME": str(agent_home), "CDSW_PRINCIPAL": PRINCIPAL,
           "CDSW_START_POLL": "0.5", "CDSW_ENGINE_PORT": str(_free_port()),
           "CDSW_ARGON2_TIME_COST": "1", "CDSW_ARGON2_MEMORY_KIB": "1024",
           "KRB5_CONFIG": str(kdc.krb5_conf)}
    stderr = open(tmp_path / "stderr.log", "w+")
    proc = subprocess.Popen(["bash", str(conf / "scripts" / "control.sh"), "start", "master"],
                            env=env, cwd=str(conf), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    cache = tmp_path / "data" / "kerberos" / "service" / "krb5cc"
    try:
        deadline = time.time() + 180
        listed = ""
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-3000:]
            if cache.exists():
                done = subprocess.run(["klist", "-c", "FILE:%s" % cache], capture_output=True,
                                      text=True, env={"PATH": env["PATH"],
                                                      "KRB5_CONFIG": str(kdc.krb5_conf)})
                listed = done.stdout
                if done.returncode == 0 and "krbtgt/CDSW.TEST@CDSW.TEST" in listed:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("no service ticket in %s: %s" % (
                cache, (tmp_path / "stderr.log").read_text()[-3000:]))
        assert "Default principal: %s" % PRINCIPAL in listed
        log = (tmp_path / "stderr.log").read_text()
        assert ("control.sh: Kerberos service principal %s, keytab %s/cdsw.keytab"
                % (PRINCIPAL, conf)) in log
        # the master reports the ticket it holds in its own health
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
        health = subprocess.run([str(agent_home / "bin" / "cdsw"), "--properties",
                                 str(conf / "cdsw.properties"), "health", "--check", "kerberos"],
                                capture_output=True, text=True, timeout=60,
                                env=dict(env, CDSW_KERBEROS_ENABLED="true",
                                         CDSW_KERBEROS_SERVICE_PRINCIPAL=PRINCIPAL,
                                         CDSW_KERBEROS_SERVICE_KEYTAB=str(conf / "cdsw.keytab")))
        assert "service principal %s valid until" % PRINCIPAL in health.stdout, \
            health.stdout + health.stderr
    finally:
        proc.terminate()
        rc = proc.wait(timeout=60)
        stderr.close()
    assert rc == 0, (tmp_path / "stderr.log").read_text()[-3000:]


def test_a_principal_without_its_keytab_fails_start_in_one_line(csd, agent_home, version,
                                                                 tmp_path):
    conf = process_dir(tmp_path, csd, "CDSW_MASTER", VALID)
    r = control(conf, ["start", "master"], None, version, source_parcel=False,
                extra_env={"CDSW_HOME": str(agent_home), "CDSW_PRINCIPAL": PRINCIPAL})
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "control.sh: error: Cloudera Manager gave the principal %s but no keytab %s/cdsw.keytab: "
        "run Administration > Security > Kerberos Credentials > Generate Missing Credentials, "
        "then restart the role" % (PRINCIPAL, conf))


def test_the_admins_own_keytab_wins_over_cms(csd, agent_home, version, tmp_path):
    """A keytab the admin configured (cdsw.kerberos.service.keytab) is kept; CM's is not forced
    on top of it (control.sh says so in one line)."""
    conf = process_dir(tmp_path, csd, "CDSW_MASTER",
                       dict(VALID, cdsw_kerberos_service_keytab="/etc/security/cdsw.keytab"))
    r = control(conf, ["validate", "master"], None, version, source_parcel=False,
                extra_env={"CDSW_HOME": str(agent_home), "CDSW_PRINCIPAL": PRINCIPAL})
    assert ("control.sh: using cdsw.kerberos.service.keytab from the configuration, not CM's "
            "%s/cdsw.keytab" % conf) in r.stderr
