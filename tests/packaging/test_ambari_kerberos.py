"""Ambari's Kerberos contract for the mpack (issue 12): what `kerberos.json` makes Ambari write
reaches the workbench.

When a cluster is Kerberized, Ambari creates each identity of a service's kerberos.json, resolves
its `${config-type/property}`, `${realm}`, `${keytab_dir}` and `_HOST` references, and writes the
principal and keytab path into the `configuration` each names; the service's `configurations`
block is merged into its config types. This test plays that step on the built pack's
kerberos.json (realm EXAMPLE.COM, Ambari's default keytab dir), hands the resulting cdsw-site and
cdsw-env to the master's START as the Ambari agent does (Python 2.7 shapes and Python 3), and
checks cdsw.properties, which the master reads, carries the principal, the keytab and Kerberos
on, and that the keytab belongs to the user the role runs as.

Boundary: no ambari-server; the resolution follows Ambari's kerberos descriptor rules as
documented, for the references this kerberos.json uses. That the master then keeps the
principal's ticket from such a keytab is tests/integration/test_kerberos.py (real KDC), and the
same hand-over under CM is test_cm_kerberos.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Tuple

import pytest

from .test_ambari_scripts import Agent, _interpreters, _site, service  # noqa: F401 (fixture)

REALM = "EXAMPLE.COM"
KEYTAB_DIR = "/etc/security/keytabs"  # Ambari's kerberos-env keytab_dir default
HOST = "gw1.example.com"


def ambari_kerberize(service: Path, env: Dict[str, str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(cdsw-site values, identity facts) Ambari writes for the CDSW_MASTER on HOST."""
    kerb = json.loads((service / "kerberos.json").read_text())
    configs = {"cdsw-env": env}
    site: Dict[str, str] = {}

    def resolve(text: str) -> str:
        def one(m: "re.Match[str]") -> str:
            var = m.group(1)
            if var == "realm":
                return REALM
            if var == "keytab_dir":
                return KEYTAB_DIR
            ctype, prop = var.split("/", 1)
            return configs[ctype][prop]
        return re.sub(r"\$\{([^}]+)\}", one, text).replace("_HOST", HOST)

    (svc,) = kerb["services"]
    for block in svc.get("configurations", []):
        for ctype, values in block.items():
            assert ctype == "cdsw-site", block
            site.update(values)
    facts: Dict[str, str] = {}
    (master,) = [c for c in svc["components"] if c["name"] == "CDSW_MASTER"]
    for ident in master["identities"]:
        principal, keytab = ident["principal"], ident["keytab"]
        ctype, prop = principal["configuration"].split("/", 1)
        assert ctype == "cdsw-site"
        site[prop] = resolve(principal["value"])
        ctype, prop = keytab["configuration"].split("/", 1)
        assert ctype == "cdsw-site"
        site[prop] = resolve(keytab["file"])
        facts["owner"] = resolve(keytab["owner"]["name"])
        facts["local_username"] = resolve(principal["local_username"])
    return site, facts


@pytest.mark.parametrize("python,shape", _interpreters())
def test_the_masters_principal_and_keytab_reach_cdsw_properties(python, shape, service,
                                                                 tmp_path):
    agent = Agent(python, service, tmp_path, shape)
    env = {"cdsw_user": "root", "cdsw_group": "root"}  # the stack default: roles run as root
    site, facts = ambari_kerberize(service, env)
    assert site == {"cdsw.kerberos.enabled": "true",
                    "cdsw.kerberos.service.principal": "root/%s@%s" % (HOST, REALM),
                    "cdsw.kerberos.service.keytab": KEYTAB_DIR + "/cdsw.service.keytab"}
    assert set(site) <= set(_site(service)), "kerberos.json writes only cdsw-site properties"
    # the keytab is readable by the user the master runs as
    assert facts == {"owner": "root", "local_username": "root"}
    for command in ("INSTALL", "START", "STOP"):
        r = agent.run("cdsw_master.py", command, site=site, env_extra=env)
        assert r.returncode == 0, (command, r.stderr)
    props = (tmp_path / "etc" / "cdsw.properties").read_text().splitlines()
    for key, value in site.items():
        assert "%s=%s" % (key, value) in props, (key, props)
