"""Helpers of the packaging tests that play the cluster managers' part."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "scripts" / "packaging"
if str(PACKAGING) not in sys.path:
    sys.path.insert(0, str(PACKAGING))


def extract(archive: Path, dest: Path, skip_wheels: bool = True) -> Path:
    """Unpack a parcel or mpack (wheels left out unless asked) and return its root dir."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers()
                   if not (skip_wheels and m.name.endswith(".whl"))]
        tar.extractall(dest, members=members)
        root = members[0].name.split("/")[0]
    return dest / root


def cm_render_properties(sdl: Dict[str, Any], role_name: str, values: Dict[str, Any]) -> str:
    """What CM's `properties` configWriter writes for one role: for each included parameter
    with a value (set, else its default), `configName=value`; booleans as true/false,
    string_array joined by its separator. Boundary: CM also escapes Java-properties specials;
    our values have none."""
    params = {p["name"]: p for p in sdl["parameters"]}
    role = next(r for r in sdl["roles"] if r["name"] == role_name)
    for p in role.get("parameters", []):
        params[p["name"]] = p
    gen = next(g for g in role["configWriter"]["generators"] if g["filename"] == "cdsw.properties")
    lines = []
    for name in gen["includedParams"]:
        p = params[name]
        value = values.get(name, p.get("default"))
        if value is None:
            continue  # CM leaves out a parameter without a value
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = p.get("separator", ",").join(value)
        lines.append("%s=%s" % (p.get("configName", name), value))
    return "\n".join(lines) + "\n"
