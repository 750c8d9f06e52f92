"""Build the Ambari management pack cdsw-ambari-mpack-<version>.tar.gz.

Layout (one root dir, as ambari-server install-mpack needs):
    cdsw-ambari-mpack-<v>/mpack.json
    cdsw-ambari-mpack-<v>/common-services/CDSW/<v>/   <- ambari-mpack/common-services/CDSW/service
    cdsw-ambari-mpack-<v>/addon-services/CDSW/<v>-<stack>/   <- ambari-mpack/addon-services/<stack>
The service package carries the agent payload in package/files/payload. Every file of the
source trees gets @CDSW_VERSION@ replaced and a trailing .in dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from gen_ambari import site_xml
from payload import payload_entries
from pkgcommon import ROOT, Entries, read_tree, tar_gz_bytes, write_bytes

MPACK_DIR = ROOT / "ambari-mpack"
SERVICE_SRC = MPACK_DIR / "common-services" / "CDSW" / "service"
ADDON_SRC = MPACK_DIR / "addon-services"
STACKS = ("hdp26", "hdp3", "bigtop32")
MPACK_NAME = "cdsw-ambari-mpack"
# The Ambari agent may run any CPython 3.9-3.12 for the agent (the payload is independent of it).
MPACK_PYTHONS = ["3.9", "3.10", "3.11", "3.12"]


def _versioned(entries: Entries, ver: str) -> Entries:
    out: Entries = {}
    for name, (data, executable) in entries.items():
        if name.endswith(".in"):
            name = name[:-3]
        try:
            data = data.decode("utf-8").replace("@CDSW_VERSION@", ver).encode("utf-8")
        except UnicodeDecodeError:
            pass
        out[name] = (data, executable)
    return out


def mpack_root(ver: str) -> str:
    return "%s-%s/" % (MPACK_NAME, ver)


def mpack_entries(schema: List[Dict[str, Any]], ver: str, pythons: Sequence[str],
                  wheels: Dict[str, Path]) -> Entries:
    root = mpack_root(ver)
    service = "%scommon-services/CDSW/%s/" % (root, ver)
    entries = _versioned({root + "mpack.json.in": ((MPACK_DIR / "mpack.json.in").read_bytes(),
                                                   False)}, ver)
    entries.update(_versioned(read_tree(SERVICE_SRC, service), ver))
    for stack in STACKS:
        entries.update(_versioned(read_tree(ADDON_SRC / stack,
                                            "%saddon-services/CDSW/%s-%s/" % (root, ver, stack)),
                                  ver))
    entries[service + "configuration/cdsw-site.xml"] = (site_xml(schema), False)
    entries.update(payload_entries(ver, pythons, wheels, service + "package/files/payload/"))
    return entries


def mpack_filename(ver: str) -> str:
    return "%s-%s.tar.gz" % (MPACK_NAME, ver)


def build_mpack(out_dir: Path, schema: List[Dict[str, Any]], ver: str, pythons: Sequence[str],
                wheels: Dict[str, Path], epoch: int) -> Path:
    return write_bytes(out_dir / mpack_filename(ver),
                       tar_gz_bytes(mpack_entries(schema, ver, pythons, wheels), epoch))
