"""Build the CSD jar CDSW-<version>.jar: descriptor/service.sdl and service.mdl, scripts/,
images/icon.png, aux/."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from gen_sdl import build_sdl, dump_sdl
from pkgcommon import ROOT, Entries, png_icon, write_bytes, zip_bytes

CSD_DIR = ROOT / "csd"


def required_keys(schema: List[Dict[str, Any]]) -> str:
    return " ".join(row["property"] for row in schema if row["required_in_cluster"])


def control_script(schema: List[Dict[str, Any]], ver: str) -> bytes:
    text = (CSD_DIR / "scripts" / "control.sh.in").read_text(encoding="utf-8")
    return (text.replace("@CDSW_VERSION@", ver)
            .replace("@REQUIRED_KEYS@", required_keys(schema)).encode("utf-8"))


def csd_entries(schema: List[Dict[str, Any]], ver: str) -> Entries:
    entries: Entries = {
        "descriptor/service.sdl": (dump_sdl(build_sdl(schema, ver)), False),
        "scripts/control.sh": (control_script(schema, ver), True),
        # the workbench's metrics for CM's charts (the names of the master's /metrics)
        "descriptor/service.mdl": ((CSD_DIR / "descriptor" / "service.mdl.in").read_text(
            encoding="utf-8").replace("@CDSW_VERSION@", ver).encode("utf-8"), False),
        "images/icon.png": (png_icon(), False),
    }
    for path in sorted((CSD_DIR / "aux").glob("*")):
        if path.is_file():
            entries["aux/" + path.name] = (path.read_bytes(), False)
    return entries


def csd_filename(ver: str) -> str:
    return "CDSW-%s.jar" % ver


def build_csd(out_dir: Path, schema: List[Dict[str, Any]], ver: str, epoch: int) -> Path:
    return write_bytes(out_dir / csd_filename(ver), zip_bytes(csd_entries(schema, ver), epoch))
