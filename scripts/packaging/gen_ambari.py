"""Generate the mpack's configuration/cdsw-site.xml from the settings schema.

One <property> per setting, named by its property key, so the scripts can write cdsw.properties
straight from the cdsw-site type. Secrets are PASSWORD properties; settings a cluster must set
are empty with require-input.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape

from settings_schema import generator_main, label, render_value

_WIDGET = {"int": "int", "float": "float", "bool": "boolean", "choice": "value-list",
           "list": "string", "path": "directory", "str": "string"}


def _property(row: Dict[str, Any]) -> List[str]:
    kind = row["type"]
    required = bool(row["required_in_cluster"])
    value = "" if required else render_value(row, row["default"])
    attrs = ' require-input="true"' if required else ""
    out = ["  <property%s>" % attrs,
           "    <name>%s</name>" % escape(row["property"]),
           "    <value>%s</value>" % escape(value),
           "    <display-name>%s</display-name>" % escape(label(row["name"])),
           "    <description>%s</description>" % escape(row["description"])]
    if row["secret"]:
        out.append("    <property-type>PASSWORD</property-type>")
    attributes = ["<type>%s</type>" % ("password" if row["secret"] else _WIDGET[kind])]
    if kind in ("int", "float"):
        for tag, bound in (("minimum", row["minimum"]), ("maximum", row["maximum"])):
            if bound is not None:
                attributes.append("<%s>%s</%s>" % (tag, render_value(row, bound), tag))
    if kind == "choice":
        entries = "".join("<entry><value>%s</value><label>%s</label></entry>"
                          % (escape(c), escape(c)) for c in row["choices"])
        attributes.append("<entries>%s</entries>" % entries)
        attributes.append("<selection-cardinality>1</selection-cardinality>")
    if kind == "bool":
        attributes.append("<overridable>false</overridable>")
    if value == "" and not required:
        attributes.append("<empty-value-valid>true</empty-value-valid>")
    out.append("    <value-attributes>%s</value-attributes>" % "".join(attributes))
    out.append('    <on-ambari-upgrade add="true"/>')
    out.append("  </property>")
    return out


def site_xml(schema: List[Dict[str, Any]]) -> bytes:
    lines = ['<?xml version="1.0"?>',
             "<!-- Generated from cdsw_agent/settings/schema.py by scripts/packaging/gen_ambari.py;"
             " do not edit. -->",
             '<configuration supports_adding_forbidden="true" supports_final="false">']
    for row in schema:
        lines += _property(row)
    lines.append("</configuration>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    return generator_main(argv, __doc__.splitlines()[0], site_xml)


if __name__ == "__main__":
    sys.exit(main())
