"""Validate an Ambari management pack tarball.

Rules from ambari-server's setupMpacks.py and the stack definition readers as documented in
Apache Ambari's management-pack guide (docs/packaging.md, "Sources"): one root directory, mpack.json with underscore prerequisite keys
and artifacts whose directories exist, well-formed metainfo.xml and configuration XML with the
required elements, alerts/quick links/role command order/kerberos JSON, and every Python script
compiling under Python 3 and under Python 2.7 (a real python2.7 when one is found, else the
vermin package's check of what each line needs). Usage:

    validate_mpack.py PACK.tar.gz [--python2 PATH]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from xml.etree import ElementTree

ARTIFACT_TYPES = {"stack-definitions", "extension-definitions", "service-definitions",
                  "stack-addon-service-definitions"}
HYPHENATED = {"min-ambari-version", "max-ambari-version", "min-stack-versions"}
VERSION_RE = re.compile(r"^\d+(\.\d+)*$")
CARDINALITY_RE = re.compile(r"^(\d+|\d+\+|\d+-\d+|ALL)$")
PROPERTY_TYPES = {"PASSWORD", "USER", "GROUP", "TEXT", "ADDITIONAL_USER_PROPERTY",
                  "NOT_MANAGED_HDFS_PATH", "VALUE_FROM_PROPERTY_FILE", "KERBEROS_PRINCIPAL"}
ALERT_SOURCES = {"PORT", "WEB", "METRIC", "SCRIPT", "AGGREGATE", "SERVER", "RECOVERY", "AMS"}


class Problems(list):  # type: ignore[type-arg]
    def add(self, filename: str, field: str, rule: str) -> None:
        self.append("%s: %s: %s" % (filename, field, rule))


def find_python2() -> Optional[str]:
    candidates = [os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python"),
                  shutil.which("python2.7") or "", shutil.which("python2") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


class Pack:
    """The unpacked archive: a temp dir plus the root directory name."""

    def __init__(self, base: Path, root: str):
        self.base = base
        self.root = root

    def path(self, rel: str) -> Path:
        return self.base / self.root / rel

    def read_json(self, rel: str, problems: Problems) -> Any:
        try:
            return json.loads(self.path(rel).read_text(encoding="utf-8"))
        except OSError:
            problems.add(rel, "(file)", "is missing")
        except ValueError as e:
            problems.add(rel, "(file)", "is not valid JSON: %s" % e)
        return None

    def read_xml(self, rel: str, problems: Problems) -> Optional[ElementTree.Element]:
        try:
            return ElementTree.parse(str(self.path(rel))).getroot()
        except OSError:
            problems.add(rel, "(file)", "is missing")
        except ElementTree.ParseError as e:
            problems.add(rel, "(file)", "is not well-formed XML: %s" % e)
        return None


def check_layout(tar: tarfile.TarFile, problems: Problems, name: str) -> Optional[str]:
    members = tar.getmembers()
    names = [m.name for m in members]
    if not names:
        problems.add(name, "(archive)", "is empty")
        return None
    tops = {n.split("/")[0] for n in names}
    if len(tops) != 1 or "." in tops or "" in tops:
        problems.add(name, "(archive)", "must hold exactly one root directory (found %s); build "
                     "with `tar czf x.tar.gz dir/`, never `-C dir .`" % sorted(tops)[:5])
        return None
    root = tops.pop()
    if not any(m.isdir() and m.name.rstrip("/") == root for m in members):
        problems.add(name, root + "/", "the root directory entry is missing (ambari-server takes "
                     "the common prefix of all names as the root)")
    for m in members:
        if m.name.startswith("/") or ".." in m.name.split("/"):
            problems.add(name, m.name, "member path must be relative and stay inside")
        if m.issym() or m.islnk():
            problems.add(name, m.name, "links are not allowed in a management pack")
    return root


def check_mpack_json(pack: Pack, problems: Problems) -> List[Dict[str, Any]]:
    meta = pack.read_json("mpack.json", problems)
    if not isinstance(meta, dict):
        return []
    for key in ("name", "version"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            problems.add("mpack.json", key, "is required")
    if isinstance(meta.get("version"), str) and not VERSION_RE.match(meta["version"]):
        problems.add("mpack.json", "version", "must be numbers and dots (format_stack_version "
                     "breaks on letters)")
    prereq = meta.get("prerequisites")
    if not isinstance(prereq, dict):
        problems.add("mpack.json", "prerequisites", "is required (may be {}); without it "
                     "install-mpack fails")
        prereq = {}
    for key in sorted(HYPHENATED & set(prereq)):
        problems.add("mpack.json", "prerequisites.%s" % key, "is ignored by ambari-server; use "
                     "%s" % key.replace("-", "_"))
    for key in ("min_ambari_version", "max_ambari_version"):
        if key in prereq and not VERSION_RE.match(str(prereq[key])):
            problems.add("mpack.json", "prerequisites.%s" % key, "must be a dotted version")
    for i, stack in enumerate(prereq.get("min_stack_versions") or []):
        if not isinstance(stack, dict) or not {"stack_name", "stack_version"} <= set(stack):
            problems.add("mpack.json", "prerequisites.min_stack_versions[%d]" % i,
                         "needs stack_name and stack_version")
    artifacts = meta.get("artifacts")
    if not isinstance(artifacts, list) or not artifacts:
        problems.add("mpack.json", "artifacts", "is required and must not be empty")
        return []
    services = []
    for i, art in enumerate(artifacts):
        where = "artifacts[%d]" % i
        for key in ("name", "type", "source_dir"):
            if not art.get(key):
                problems.add("mpack.json", "%s.%s" % (where, key), "is required")
        if art.get("type") not in ARTIFACT_TYPES:
            problems.add("mpack.json", where + ".type", "%r is skipped by ambari-server; use one of "
                         "%s" % (art.get("type"), ", ".join(sorted(ARTIFACT_TYPES))))
            continue
        src = str(art.get("source_dir", ""))
        if not pack.path(src).is_dir():
            problems.add("mpack.json", where + ".source_dir", "%s/ is not in the pack" % src)
            continue
        if art["type"] == "service-definitions":
            for svc in sorted(pack.path(src).iterdir()):
                for ver in sorted(svc.iterdir()):
                    services.append({"dir": "%s/%s/%s" % (src, svc.name, ver.name), "addon": False})
        if art["type"] == "stack-addon-service-definitions":
            vmap = art.get("service_versions_map")
            if not isinstance(vmap, list) or not vmap:
                problems.add("mpack.json", where + ".service_versions_map", "is required for "
                             "stack-addon-service-definitions")
                continue
            for j, entry in enumerate(vmap):
                ewhere = "%s.service_versions_map[%d]" % (where, j)
                rel = "%s/%s/%s" % (src, entry.get("service_name"), entry.get("service_version"))
                if not pack.path(rel).is_dir():
                    problems.add("mpack.json", ewhere + ".service_version",
                                 "%s/ is not in the pack" % rel)
                else:
                    services.append({"dir": rel, "addon": True})
                stacks = entry.get("applicable_stacks")
                if not isinstance(stacks, list) or not stacks or not all(
                        isinstance(s, dict) and {"stack_name", "stack_version"} <= set(s)
                        for s in stacks):
                    problems.add("mpack.json", ewhere + ".applicable_stacks",
                                 "needs a list of {stack_name, stack_version}")
    return services


def _text(el: Optional[ElementTree.Element], tag: str) -> str:
    found = el.find(tag) if el is not None else None
    return (found.text or "").strip() if found is not None and found.text else ""


def check_service_dir(pack: Pack, rel: str, addon: bool, problems: Problems) -> None:
    meta_rel = rel + "/metainfo.xml"
    root = pack.read_xml(meta_rel, problems)
    if root is None:
        return
    if root.tag != "metainfo":
        problems.add(meta_rel, "(root)", "must be <metainfo>")
        return
    if _text(root, "schemaVersion") != "2.0":
        problems.add(meta_rel, "schemaVersion", "must be 2.0")
    services = root.findall("services/service")
    if not services:
        problems.add(meta_rel, "services/service", "is required")
    for svc in services:
        name = _text(svc, "name")
        if not name:
            problems.add(meta_rel, "service/name", "is required")
        if addon:
            extends = _text(svc, "extends")
            if not extends or not pack.path(extends).is_dir():
                problems.add(meta_rel, "service/extends", "must name a common-services dir of the "
                             "pack (got %r)" % extends)
            check_dependencies(svc, meta_rel, problems)
            continue
        for key in ("displayName", "version"):
            if not _text(svc, key):
                problems.add(meta_rel, "service/" + key, "is required")
        check_components(pack, rel, svc, meta_rel, problems)
        script = _text(svc.find("commandScript"), "script")
        if script and not pack.path(rel + "/package/" + script).is_file():
            problems.add(meta_rel, "service/commandScript/script", "package/%s is missing" % script)
        for ql in svc.findall("quickLinksConfigurations/quickLinksConfiguration"):
            qrel = rel + "/quicklinks/" + _text(ql, "fileName")
            check_quicklinks(pack, qrel, problems)
        check_service_files(pack, rel, problems)


def check_dependencies(parent: ElementTree.Element, meta_rel: str, problems: Problems) -> None:
    for dep in parent.iter("dependency"):
        dname = _text(dep, "name")
        if "/" not in dname:
            problems.add(meta_rel, "dependency/name", "%r must be SERVICE/COMPONENT" % dname)
        if _text(dep, "scope") not in ("host", "cluster"):
            problems.add(meta_rel, "dependency[%s]/scope" % dname, "must be host or cluster")


def check_components(pack: Pack, rel: str, svc: ElementTree.Element, meta_rel: str,
                     problems: Problems) -> None:
    comps = svc.findall("components/component")
    if not comps:
        problems.add(meta_rel, "components", "a service needs at least one component")
    seen = set()
    for comp in comps:
        cname = _text(comp, "name")
        where = "component[%s]" % cname
        if not cname or cname in seen:
            problems.add(meta_rel, where + "/name", "is required and unique")
        seen.add(cname)
        if _text(comp, "category") not in ("MASTER", "SLAVE", "CLIENT"):
            problems.add(meta_rel, where + "/category", "must be MASTER, SLAVE or CLIENT")
        if not CARDINALITY_RE.match(_text(comp, "cardinality")):
            problems.add(meta_rel, where + "/cardinality", "must be N, N+, N-M or ALL")
        scripts = [comp.find("commandScript")] + [c.find("commandScript") for c in
                                                  comp.findall("customCommands/customCommand")]
        for cs in scripts:
            script = _text(cs, "script")
            if cs is None or not script:
                problems.add(meta_rel, where + "/commandScript/script", "is required")
            elif not pack.path(rel + "/package/" + script).is_file():
                problems.add(meta_rel, where + "/commandScript/script",
                             "package/%s is missing" % script)
        check_dependencies(comp, meta_rel, problems)


def check_configuration(pack: Pack, rel: str, problems: Problems) -> None:
    root = pack.read_xml(rel, problems)
    if root is None:
        return
    if root.tag != "configuration":
        problems.add(rel, "(root)", "must be <configuration>")
        return
    names = set()
    for prop in root.findall("property"):
        name = _text(prop, "name")
        where = "property[%s]" % name
        if not name or name in names:
            problems.add(rel, where + "/name", "is required and unique")
        names.add(name)
        if prop.find("value") is None:
            problems.add(rel, where + "/value", "is required (may be empty)")
        if prop.find("on-ambari-upgrade") is None:
            problems.add(rel, where + "/on-ambari-upgrade", "is required (add=\"true\")")
        if prop.find("property_type") is not None:
            problems.add(rel, where + "/property_type", "is not read; the element is "
                         "property-type")
        for ptype in _text(prop, "property-type").split():
            if ptype not in PROPERTY_TYPES:
                problems.add(rel, where + "/property-type", "unknown type %r" % ptype)


def check_alerts(pack: Pack, rel: str, problems: Problems) -> None:
    alerts = pack.read_json(rel, problems)
    if not isinstance(alerts, dict):
        return
    names = set()
    for svc, groups in alerts.items():
        for group, defs in (groups or {}).items():
            for i, d in enumerate(defs or []):
                where = "%s.%s[%s]" % (svc, group, d.get("name", i))
                if not d.get("name") or d["name"] in names:
                    problems.add(rel, where + ".name", "is required and unique")
                names.add(d.get("name"))
                if not d.get("label"):
                    problems.add(rel, where + ".label", "is required")
                interval = d.get("interval")
                if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                    problems.add(rel, where + ".interval", "must be whole minutes >= 1")
                source = d.get("source") or {}
                if source.get("type") not in ALERT_SOURCES:
                    problems.add(rel, where + ".source.type", "must be one of %s"
                                 % ", ".join(sorted(ALERT_SOURCES)))
                if source.get("type") == "SCRIPT":
                    path = str(source.get("path", ""))
                    if not pack.path("common-services/" + path).is_file():
                        problems.add(rel, where + ".source.path", "%s is not under "
                                     "common-services/ in the pack" % path)


def check_quicklinks(pack: Pack, rel: str, problems: Problems) -> None:
    ql = pack.read_json(rel, problems)
    if not isinstance(ql, dict):
        return
    links = (ql.get("configuration") or {}).get("links")
    if not ql.get("name") or not isinstance(links, list) or not links:
        problems.add(rel, "configuration.links", "needs a name and at least one link")
        return
    for link in links:
        for key in ("name", "label", "component_name", "url"):
            if not link.get(key):
                problems.add(rel, "links[%s].%s" % (link.get("name"), key), "is required")


def check_service_files(pack: Pack, rel: str, problems: Problems) -> None:
    for conf in sorted(pack.path(rel + "/configuration").glob("*.xml")):
        check_configuration(pack, "%s/configuration/%s" % (rel, conf.name), problems)
    if pack.path(rel + "/alerts.json").exists():
        check_alerts(pack, rel + "/alerts.json", problems)
    if pack.path(rel + "/role_command_order.json").exists():
        rco = pack.read_json(rel + "/role_command_order.json", problems) or {}
        for key, deps in (rco.get("general_deps") or {}).items():
            if key != "_comment" and (not re.match(r"^[A-Z0-9_]+-[A-Z_]+$", key)
                                      or not isinstance(deps, list)):
                problems.add(rel + "/role_command_order.json", "general_deps.%s" % key,
                             "keys are ROLE-COMMAND and values lists of ROLE-COMMAND")
    if pack.path(rel + "/kerberos.json").exists():
        check_kerberos(pack, rel, problems)
    if pack.path(rel + "/metrics.json").exists():
        check_metrics_widgets(pack, rel, problems)


def check_metrics_widgets(pack: Pack, rel: str, problems: Problems) -> None:
    """metrics.json: {COMPONENT: {"Component": [{"type", "metrics": {"default": {path:
    {"metric", "pointInTime", "temporal"}}}}]}} for components of the service; widgets.json:
    layouts whose widgets' metrics name a metric_path metrics.json defines, with that metric
    name, and whose values use only those names."""
    name = rel + "/metrics.json"
    metrics = pack.read_json(name, problems)
    if not isinstance(metrics, dict):
        return
    meta = pack.read_xml(rel + "/metainfo.xml", Problems()) \
        if pack.path(rel + "/metainfo.xml").exists() else None
    components = {_text(c, "name") for c in meta.iter("component")} if meta is not None else None
    paths: Dict[Tuple[str, str], str] = {}
    for comp, spec in metrics.items():
        if components is not None and comp not in components:
            problems.add(name, comp, "no such component in metainfo.xml")
        for i, kind in enumerate((spec or {}).get("Component") or []):
            if kind.get("type") not in ("ganglia", "jmx"):
                problems.add(name, "%s.Component[%d].type" % (comp, i), "must be ganglia "
                             "(Ambari Metrics) or jmx")
            for path, m in ((kind.get("metrics") or {}).get("default") or {}).items():
                if not path.startswith("metrics/") or not m.get("metric"):
                    problems.add(name, "%s.%s" % (comp, path), "needs a metrics/ path and a "
                                 "metric name")
                paths[(comp, path)] = m.get("metric", "")
    wname = rel + "/widgets.json"
    if not pack.path(wname).exists():
        return
    widgets = pack.read_json(wname, problems) or {}
    for layout in widgets.get("layouts") or []:
        for widget in layout.get("widgetLayoutInfo") or []:
            where = "layouts[%s].%s" % (layout.get("layout_name"), widget.get("widget_name"))
            if widget.get("widget_type") not in ("GRAPH", "GAUGE", "NUMBER", "TEMPLATE",
                                                 "HEATMAP"):
                problems.add(wname, where + ".widget_type", "unknown widget type")
            names = set()
            for m in widget.get("metrics") or []:
                key = (m.get("component_name"), m.get("metric_path"))
                if key not in paths:
                    problems.add(wname, where, "metric_path %s of %s is not in metrics.json"
                                 % (key[1], key[0]))
                elif paths[key] != m.get("name"):
                    problems.add(wname, where, "metric %s is %s in metrics.json"
                                 % (m.get("name"), paths[key]))
                names.add(m.get("name"))
            for v in widget.get("values") or []:
                for var in re.findall(r"[A-Za-z_][\w.]*", re.sub(r"^\$\{|\}$", "",
                                                                   str(v.get("value", "")))):
                    if var not in names:
                        problems.add(wname, where + ".values", "%s is not one of the widget's "
                                     "metrics" % var)


# config types every Ambari stack has, which a service's kerberos.json may refer to
STACK_CONFIG_TYPES = {"cluster-env", "kerberos-env", "krb5-conf", "core-site", "hadoop-env"}
KERBEROS_VARIABLES = {"realm", "keytab_dir", "principal_suffix", "hostname"}


def service_config_properties(pack: Pack, rel: str) -> Dict[str, Set[str]]:
    """{config type: its property names} of the service's configuration/*.xml."""
    out: Dict[str, Set[str]] = {}
    for conf in sorted(pack.path(rel + "/configuration").glob("*.xml")):
        try:
            root = ElementTree.parse(str(conf)).getroot()
        except ElementTree.ParseError:
            continue  # reported by check_configuration
        out[conf.stem] = {_text(p, "name") for p in root.findall("property")}
    return out


def check_kerberos(pack: Pack, rel: str, problems: Problems) -> None:
    """kerberos.json: services[].identities and components[].identities, whose principal and
    keytab `configuration` ("type/property") must name a property the service defines (that is
    where Ambari writes what it created, and what the scripts render), and whose ${type/prop}
    references resolve; components must exist in the service's metainfo."""
    name = rel + "/kerberos.json"
    kerb = pack.read_json(name, problems)
    if kerb is None:
        return
    if not isinstance(kerb.get("services"), list):
        problems.add(name, "services", "must be a list")
        return
    props = service_config_properties(pack, rel)
    meta = pack.read_xml(rel + "/metainfo.xml", Problems()) \
        if pack.path(rel + "/metainfo.xml").exists() else None
    components = {_text(c, "name") for c in meta.iter("component")} if meta is not None else None

    def known(ref: str) -> bool:
        ctype, _, prop = ref.partition("/")
        return ctype in STACK_CONFIG_TYPES or prop in props.get(ctype, set())

    def check_text(text: Any, where: str) -> None:
        for var in re.findall(r"\$\{([^}]*)\}", str(text or "")):
            if var not in KERBEROS_VARIABLES and ("/" not in var or not known(var)):
                problems.add(name, where, "${%s} is not a property of the service's config "
                             "types nor an Ambari Kerberos variable" % var)

    def check_identities(identities: Any, where: str) -> None:
        for i, ident in enumerate(identities or []):
            iwhere = "%s.identities[%d]" % (where, i)
            if not ident.get("name"):
                problems.add(name, iwhere + ".name", "is required")
            if ident.get("reference"):
                continue
            for part in ("principal", "keytab"):
                block = ident.get(part) or {}
                ref = block.get("configuration")
                if ref and not known(ref):
                    problems.add(name, "%s.%s.configuration" % (iwhere, part), "%s is not a "
                                 "property of the service's configuration" % ref)
                for key in ("value", "file", "local_username"):
                    check_text(block.get(key), "%s.%s.%s" % (iwhere, part, key))
                check_text((block.get("owner") or {}).get("name"), iwhere + "." + part + ".owner")

    for s_i, service in enumerate(kerb["services"]):
        where = "services[%d]" % s_i
        check_identities(service.get("identities"), where)
        for c_i, conf in enumerate(service.get("configurations") or []):
            for ctype, values in conf.items():
                for prop in values:
                    if not known("%s/%s" % (ctype, prop)):
                        problems.add(name, "%s.configurations[%d].%s" % (where, c_i, ctype),
                                     "%s is not a property of %s" % (prop, ctype))
        for c_i, comp in enumerate(service.get("components") or []):
            cwhere = "%s.components[%d]" % (where, c_i)
            if components is not None and comp.get("name") not in components:
                problems.add(name, cwhere + ".name", "no component %r in metainfo.xml"
                             % comp.get("name"))
            check_identities(comp.get("identities"), cwhere)


def _import_fallbacks(paths: List[Path]) -> List[str]:
    """Names imported in a `try:` whose handler catches ImportError (the Python 2 fallback
    follows), e.g. shlex.quote in `try: from shlex import quote / except ImportError: ...`."""
    names = set()
    for path in paths:
        try:
            tree = ast.parse(path.read_bytes())
        except SyntaxError:
            continue  # reported by the compile check
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try) or not any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                   "ModuleNotFoundError")
                    for h in node.handlers):
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    names.update("%s.%s" % (stmt.module, a.name) for a in stmt.names)
                    names.add(stmt.module)
                elif isinstance(stmt, ast.Import):
                    names.update(a.name for a in stmt.names)
    return sorted(names)


def vermin_installed() -> bool:
    return importlib.util.find_spec("vermin") is not None


def python27_features(paths: List[Path]) -> List[Tuple[Path, str, str]]:
    """(file, line, feature) for what Python 2.7 lacks, found without a Python 2.7 by vermin
    (PyPI), which reads the Python 3 syntax tree and knows in which version each syntax
    feature, module and member appeared."""
    cmd = [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())",
           "-t=2.7-", "-t=3.0-", "--violations", "--format", "parsable", "--no-parse-comments",
           "--processes", "1"]
    for name in _import_fallbacks(paths):
        cmd += ["--exclude", name]
    proc = subprocess.run(cmd + [str(p) for p in paths], capture_output=True, text=True)
    if proc.returncode not in (0, 1) or "No module named" in proc.stderr:
        raise RuntimeError("vermin failed: %s" % (proc.stderr.strip()[-200:] or proc.returncode))
    found = []
    for line in proc.stdout.splitlines():
        parts = line.rsplit(":", 5)
        if len(parts) == 6 and parts[0] and parts[5] and parts[3].startswith("!2"):
            found.append((Path(parts[0]), parts[1] or "?", parts[5].strip()))
    return found


def check_python(pack: Pack, problems: Problems, python2: Optional[str]) -> None:
    """Every script compiles under Python 3, and under Python 2.7 when python2 is given;
    without one, vermin checks that nothing needs more than Python 2.7 (runs anywhere)."""
    base = pack.base / pack.root
    scripts = sorted(p for p in base.rglob("*.py"))
    for path in scripts:
        rel = path.relative_to(base).as_posix()
        try:
            compile(path.read_bytes(), rel, "exec")
        except SyntaxError as e:
            problems.add(rel, "line %s" % e.lineno, "Python 3 syntax error: %s" % e.msg)
    if not scripts:
        return
    if not python2:
        if not vermin_installed():
            return  # neither check can run here: main() says so
        try:
            features = python27_features(scripts)
        except RuntimeError as e:
            problems.add("vermin", "(interpreter)", str(e))
            return
        for path, line, feature in features:
            problems.add(path.relative_to(base).as_posix(), "line %s" % line,
                         "Python 2.7 cannot run it: %s" % feature)
        return
    code = ("import py_compile, sys\nbad = 0\nfor f in sys.argv[1:]:\n"
            "    try:\n        py_compile.compile(f, cfile='/dev/null', doraise=True)\n"
            "    except py_compile.PyCompileError as e:\n"
            "        bad = 1\n        sys.stdout.write(f + '\\t' + str(e.msg).strip()"
            ".replace('\\n', ' ') + '\\n')\nsys.exit(bad)\n")
    proc = subprocess.run([python2, "-c", code] + [str(p) for p in scripts],
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        path_s, _, msg = line.partition("\t")
        rel = Path(path_s).relative_to(base).as_posix()
        problems.add(rel, "(syntax)", "Python 2.7 cannot compile it: %s" % msg)
    if proc.returncode not in (0, 1):
        problems.add(python2, "(interpreter)", "failed: %s" % proc.stderr.strip()[-200:])


def validate_mpack(path: Path, python2: Optional[str] = None) -> List[str]:
    problems = Problems()
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as e:
        problems.add(path.name, "(archive)", "is not a gzip'd tar file: %s" % e)
        return problems
    if not path.name.endswith(".tar.gz"):
        problems.add(path.name, "(file name)", "must end in .tar.gz (other suffixes break on "
                     "Ambari 2.6)")
    with tar, tempfile.TemporaryDirectory(prefix="cdsw-mpack-check-") as tmp:
        root = check_layout(tar, problems, path.name)
        if root is None:
            return problems
        # Wheels are opaque payload; leaving them packed keeps the check fast.
        safe = [m for m in tar.getmembers()
                if m.isdir() or (m.isfile() and not m.name.endswith(".whl"))]
        tar.extractall(tmp, members=safe)  # noqa: S202 - members checked above
        pack = Pack(Path(tmp), root)
        for svc in check_mpack_json(pack, problems):
            check_service_dir(pack, svc["dir"], svc["addon"], problems)
        check_python(pack, problems, python2)
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Validate an Ambari management pack")
    parser.add_argument("mpack", type=Path)
    parser.add_argument("--python2", help="python2.7 for the syntax check (default: search)")
    parser.add_argument("--no-python2", action="store_true", help="skip the 2.7 syntax check")
    args = parser.parse_args(argv)
    python2 = None if args.no_python2 else (args.python2 or find_python2())
    problems = validate_mpack(args.mpack, python2)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        how = ("" if python2 else " (Python 2.7 checked by vermin: no python2.7 found)"
               if vermin_installed() else " (Python 2.7 check skipped: neither python2.7 nor "
               "vermin found)")
        print("%s: valid%s" % (args.mpack, how))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
