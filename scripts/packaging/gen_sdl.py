"""Generate the CSD's descriptor/service.sdl from csd/descriptor/service.sdl.in and the settings.

One rule per setting kind decides the SDL parameter type; every setting becomes one service-wide
parameter named `cdsw_<name>` whose configName is the agent's property key, and every role's
cdsw.properties generator includes exactly those parameters, so the file CM renders holds only
keys the agent knows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from pkgcommon import ROOT, version
from settings_schema import generator_main, label

SDL_IN = ROOT / "csd" / "descriptor" / "service.sdl.in"
PROPERTIES_FILE = "cdsw.properties"

# Suffix of a setting name -> SDL unit (the units CM knows; days have none).
_UNITS = {"_minutes": "minutes", "_hours": "hours", "_mb": "megabytes", "_kib": "kilobytes",
          "_seconds": "seconds"}


# Secrets CM generates when the service is created (cm_ext StringParameter.initType, which
# PasswordParameter inherits: random bytes base64-encoded, length 30; the parameter is hidden),
# so workers join at First Run with no value typed into the wizard (issue 13).
GENERATED_BY_CM = frozenset(("cluster_secret",))


def param_name(setting_name: str) -> str:
    return "cdsw_" + setting_name


def to_parameter(row: Dict[str, Any]) -> Dict[str, Any]:
    """One SDL parameter for one setting."""
    kind = row["type"]
    p: Dict[str, Any] = {"name": param_name(row["name"]), "label": label(row["name"]),
                         "description": row["description"], "configName": row["property"]}
    default = row["default"]
    if kind == "int" and row["name"].endswith("_port"):
        p["type"] = "port"  # CM enforces 1..65535 itself; port params take no max
    elif kind in ("int", "float"):
        p["type"] = "long" if kind == "int" else "double"
        for key, bound in (("min", row["minimum"]), ("max", row["maximum"])):
            if bound is not None:
                p[key] = int(bound) if kind == "int" else bound
        for suffix, unit in _UNITS.items():
            if row["name"].endswith(suffix):
                p["unit"] = unit
    elif kind == "bool":
        p["type"] = "boolean"
    elif kind == "choice":
        p["type"] = "string_enum"
        p["validValues"] = list(row["choices"])
    elif kind == "list":
        p["type"] = "string_array"
        p["separator"] = ","
        default = list(default or [])
    elif kind == "path":
        p["type"] = "path"
        p["pathType"] = "localDataDir"
        p["mode"] = "0755"
    elif row["secret"]:
        p["type"] = "password"
        p["sensitive"] = True
        if row["name"] in GENERATED_BY_CM:
            p["initType"] = "randomBase64"
    else:
        p["type"] = "string"
    if row["required_in_cluster"]:
        # No default: a cluster must name its own domain/master, never "localhost".
        p["required"] = True
        p["configurableInWizard"] = True
    else:
        p["required"] = False
        p["default"] = int(default) if kind == "int" else default
    return p


def build_sdl(schema: List[Dict[str, Any]], ver: str, template: Path = SDL_IN) -> Dict[str, Any]:
    sdl = json.loads(template.read_text(encoding="utf-8").replace("@CDSW_VERSION@", ver))
    generated = [to_parameter(row) for row in schema]
    sdl["parameters"] = generated + list(sdl.get("parameters", []))
    names = [p["name"] for p in generated]
    for role in sdl.get("roles", []):
        for gen in role.get("configWriter", {}).get("generators", []):
            if gen.get("filename") == PROPERTIES_FILE:
                gen["includedParams"] = names
    return sdl


def dump_sdl(sdl: Dict[str, Any]) -> bytes:
    return (json.dumps(sdl, indent=2, sort_keys=False) + "\n").encode("utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    return generator_main(argv, __doc__.splitlines()[0],
                          lambda schema: dump_sdl(build_sdl(schema, version())))


if __name__ == "__main__":
    sys.exit(main())
