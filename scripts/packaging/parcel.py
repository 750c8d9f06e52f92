"""Build the CDSW parcels (one per distribution) and the repository's manifest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from payload import payload_entries, substitute
from pkgcommon import ROOT, Entries, sha1_file, tar_gz_bytes, write_bytes

PARCEL_NAME = "CDSW"
META_IN = ROOT / "parcel" / "meta"
# CPython versions each distribution's parcel carries (what the OS packages offer: RHEL 8/9
# AppStream python3.9/3.11/3.12, Ubuntu 22.04 python3.10).
DISTROS: Dict[str, List[str]] = {"el8": ["3.9", "3.11", "3.12"],
                                 "el9": ["3.9", "3.11", "3.12"],
                                 "jammy": ["3.10"]}


def parcel_json(ver: str) -> Dict[str, Any]:
    return {
        "schema_version": 1,
        "name": PARCEL_NAME,
        "version": ver,
        "extraVersionInfo": {"fullVersion": ver, "baseVersion": ver, "patchCount": "0"},
        "setActiveSymlink": True,
        "depends": "",
        "replaces": "",
        "conflicts": "",
        "provides": ["cdsw"],
        "scripts": {"defines": "cdsw_env.sh"},
        "packages": [{"name": "cdsw-agent", "version": ver}],
        "components": [{"name": "cdsw-agent", "version": ver, "pkg_version": ver}],
        # Every role runs as root (the SDL's runAs): the roles drive the Docker socket and
        # serve project files as their owners. No service user to create.
        "users": {},
        "groups": [],
    }


def parcel_entries(ver: str, pythons: Sequence[str], wheels: Dict[str, Path]) -> Entries:
    top = "%s-%s/" % (PARCEL_NAME, ver)
    entries = payload_entries(ver, pythons, wheels, top)
    meta = parcel_json(ver)
    entries[top + "meta/parcel.json"] = ((json.dumps(meta, indent=2) + "\n").encode(), False)
    for name in ("cdsw_env.sh", "release-notes.txt"):
        text = substitute((META_IN / (name + ".in")).read_text(encoding="utf-8"), ver, pythons)
        entries[top + "meta/" + name] = (text.encode("utf-8"), name.endswith(".sh"))
    alternatives = {"cdsw": {"destination": "/usr/bin/cdsw", "source": "bin/cdsw",
                             "priority": 10, "isDirectory": False}}
    entries[top + "meta/alternatives.json"] = (
        (json.dumps(alternatives, indent=2) + "\n").encode(), False)
    return entries


def parcel_filename(ver: str, distro: str) -> str:
    return "%s-%s-%s.parcel" % (PARCEL_NAME, ver, distro)


def build_parcel(out_dir: Path, ver: str, distro: str, pythons: Sequence[str],
                 wheels: Dict[str, Path], epoch: int,
                 memo: Optional[Dict[Tuple[str, ...], bytes]] = None) -> Path:
    """One distribution's parcel; distributions with the same CPython set share the bytes."""
    key = tuple(pythons)
    data = memo.get(key) if memo is not None else None
    if data is None:
        data = tar_gz_bytes(parcel_entries(ver, pythons, wheels), epoch)
        if memo is not None:
            memo[key] = data
    path = write_bytes(out_dir / parcel_filename(ver, distro), data)
    write_bytes(path.with_name(path.name + ".sha1"), (sha1_file(path) + "\n").encode())
    return path


def manifest(parcels: Sequence[Path], ver: str, epoch: int) -> Dict[str, Any]:
    """manifest.json as Cloudera's make_manifest.py writes it (lastUpdated in ms)."""
    meta = parcel_json(ver)
    items = []
    for path in sorted(parcels, key=lambda p: p.name):
        item: Dict[str, Any] = {"parcelName": path.name, "components": meta["components"],
                                "hash": sha1_file(path)}
        for key in ("depends", "replaces", "conflicts"):
            item[key] = meta[key]
        notes = (META_IN / "release-notes.txt.in").read_text(encoding="utf-8")
        item["releaseNotes"] = substitute(notes, ver, DISTROS[path.name.rsplit("-", 1)[1][:-7]])
        items.append(item)
    return {"lastUpdated": epoch * 1000, "parcels": items}


def write_manifest(out_dir: Path, parcels: Sequence[Path], ver: str, epoch: int) -> Path:
    data = json.dumps(manifest(parcels, ver, epoch), indent=2) + "\n"
    return write_bytes(out_dir / "manifest.json", data.encode("utf-8"))
