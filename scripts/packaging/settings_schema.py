"""The settings schema as plain dicts, the same shape `cdsw config schema` prints.

It is read by importing cdsw_agent.settings.schema straight from the work tree (that module needs
only the standard library), so the generators work before the package's dependencies are
installed. `--schema-json FILE` (the output of `cdsw config schema`) may be used instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from pkgcommon import ROOT, BuildError

KINDS = {"str", "int", "float", "bool", "choice", "list", "path"}


def load_schema(schema_json: Optional[Path] = None, root: Path = ROOT) -> List[Dict[str, Any]]:
    if schema_json is not None:
        rows = json.loads(schema_json.read_text(encoding="utf-8"))
    else:
        rows = _from_module(root)
    for row in rows:
        if row["type"] not in KINDS:
            raise BuildError("settings schema: %s: unknown type %r (expected one of %s)"
                             % (row["name"], row["type"], ", ".join(sorted(KINDS))))
    return rows


def _from_module(root: Path) -> List[Dict[str, Any]]:
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("cdsw_agent.settings.schema")
    except ImportError as e:
        raise BuildError("cannot import cdsw_agent.settings.schema from %s: %s"
                         % (root, e)) from None
    finally:
        sys.path.pop(0)
    out = []
    for s in module.SETTINGS:
        out.append({
            "name": s.name, "type": s.kind, "default": s.default, "description": s.description,
            "property": s.property_key, "env": s.env_var, "conf_key": s.conf_key,
            "secret": s.secret, "choices": list(s.choices), "minimum": s.minimum,
            "maximum": s.maximum, "group": s.group, "required_in_cluster": s.required_in_cluster,
        })
    return out


_WORDS = {"http": "HTTP", "https": "HTTPS", "tls": "TLS", "db": "Database", "url": "URL",
          "ldap": "LDAP", "smtp": "SMTP", "api": "API", "dn": "DN", "ca": "CA", "kib": "(KiB)",
          "mb": "(MiB)", "dir": "Directory", "dirs": "Directories", "starttls": "StartTLS",
          "cert": "Certificate", "conf": "Configuration", "krb5": "krb5", "argon2": "Argon2",
          "dockerd": "dockerd", "no": "No", "min": "Minimum", "max": "Maximum"}


def label(name: str) -> str:
    """A readable label: http_port -> HTTP Port, ldap_bind_dn -> LDAP Bind DN."""
    return " ".join(_WORDS.get(w, w.capitalize()) for w in name.split("_"))


def render_value(row: Dict[str, Any], value: Any) -> str:
    """A value as the agent reads it from cdsw.properties (mirrors Setting.render)."""
    if row["type"] == "bool":
        return "true" if value else "false"
    if row["type"] == "list":
        return ",".join(value or [])
    if value is None:
        return ""
    if row["type"] == "float" or (row["type"] == "int" and isinstance(value, float)):
        return str(int(value)) if row["type"] == "int" else str(value)
    return str(value)


def generator_main(argv: Optional[List[str]], description: str,
                   generate: Callable[[List[Dict[str, Any]]], bytes]) -> int:
    """The command line every generator shares: read the schema, write the file or stdout."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--schema-json", type=Path, help="output of `cdsw config schema`")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    data = generate(load_schema(args.schema_json))
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.write(data.decode("utf-8"))
    return 0
