"""The agent payload shared by the parcel and the Ambari mpack: launcher + offline wheelhouse.

Layout under a prefix:
    bin/cdsw                   launcher (parcel/bin/cdsw.in): makes a venv outside the payload
    lib/cdsw/wheels/*.whl      cdsw_agent and every dependency for the listed CPython versions
    lib/cdsw/BUILD.json        version, CPython versions, platform tag and wheel hashes
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Sequence

from pkgcommon import ROOT, Entries
from wheelhouse import PLATFORM

LAUNCHER_IN = ROOT / "parcel" / "bin" / "cdsw.in"


def substitute(text: str, ver: str, pythons: Sequence[str]) -> str:
    return (text.replace("@CDSW_VERSION@", ver)
            .replace("@PYTHONS_SPACED@", "{" + ",".join(pythons) + "}")
            .replace("@PYTHONS@", " ".join(pythons)))


def payload_entries(ver: str, pythons: Sequence[str], wheels: Dict[str, Path],
                    prefix: str) -> Entries:
    # Newest interpreter first: the launcher takes the first one it finds.
    order = sorted(pythons, key=lambda v: tuple(int(x) for x in v.split(".")), reverse=True)
    entries: Entries = {}
    launcher = substitute(LAUNCHER_IN.read_text(encoding="utf-8"), ver, order)
    entries[prefix + "bin/cdsw"] = (launcher.encode("utf-8"), True)
    listing = {}
    for name in sorted(wheels):
        data = wheels[name].read_bytes()
        entries[prefix + "lib/cdsw/wheels/" + name] = (data, False)
        listing[name] = hashlib.sha256(data).hexdigest()
    info = {"version": ver, "pythons": order, "platform": PLATFORM, "wheels": listing}
    entries[prefix + "lib/cdsw/BUILD.json"] = (
        (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8"), False)
    return entries
