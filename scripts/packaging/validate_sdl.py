"""Validate a CSD service descriptor (service.sdl) against the rules of CM's cm-schema.

The rules follow cloudera/cm_ext's descriptor classes and reference validators (docs/packaging.md,
"Sources") (strict mode: unknown fields are refused). Each problem names the file,
the field path and the rule it breaks. Usage:

    validate_sdl.py service.sdl [--jar-root DIR] [--schema-json FILE]

With --jar-root, files the descriptor points at (icon, runner programs) must exist there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

NAME_RE = re.compile(r"^[A-Z0-9_]+$")
SUBST_RE = re.compile(r"\$\{([^}]*)\}")
BUILTIN_SERVICES = {"HDFS", "MAPREDUCE", "HBASE", "OOZIE", "ZOOKEEPER", "HUE", "YARN", "IMPALA",
                    "FLUME", "HIVE", "SOLR", "SQOOP", "KS_INDEXER", "SENTRY", "AWS_S3",
                    "ADLS_CONNECTOR", "MGMT"}
# Dependency types a CDSW service may name: built-ins plus the CSD-defined types CM 6/7 ship.
KNOWN_DEPENDENCIES = BUILTIN_SERVICES | {"SPARK_ON_YARN", "SPARK", "KAFKA", "KUDU", "ATLAS",
                                         "RANGER", "KNOX", "LIVY", "HBASE"}
BUILTIN_ROLES = {"GATEWAY", "MASTER", "SERVER", "DATANODE", "NAMENODE", "SECONDARYNAMENODE",
                 "JOURNALNODE", "FAILOVERCONTROLLER", "HTTPFS", "NFSGATEWAY", "BALANCER",
                 "JOBTRACKER", "TASKTRACKER", "REGIONSERVER", "HBASETHRIFTSERVER",
                 "HBASERESTSERVER", "OOZIE_SERVER", "HUE_SERVER", "BEESWAX_SERVER",
                 "KT_RENEWER", "RESOURCEMANAGER", "NODEMANAGER", "JOBHISTORY", "HIVEMETASTORE",
                 "HIVESERVER2", "WEBHCAT", "IMPALAD", "STATESTORE", "CATALOGSERVER", "AGENT",
                 "SOLR_SERVER", "SQOOP_SERVER", "HBASE_INDEXER", "SENTRY_SERVER", "LLAMA"}
FIXED_VARIABLES = {"host", "user", "group", "principal"}

SERVICE_FIELDS = {"name", "label", "description", "version", "compatibility", "maxInstances",
                  "runAs", "icon", "parcel", "inExpressWizard", "rolesWithExternalLinks",
                  "commands", "stopRunner", "roles", "parameters", "serviceDependencies",
                  "dependencyExtensions", "gateway", "hdfsDirs", "serviceInit", "providesDfs",
                  "providesKms", "kerberos", "externalKerberosPrincipals", "licenseFeature",
                  "authorities", "rollingRestart", "healthTests"}
ROLE_FIELDS = {"name", "label", "pluralLabel", "startRunner", "stopRunner", "topology",
               "parameters", "runAs", "logging", "commands", "configWriter", "cgroup",
               "kerberosPrincipals", "sslServer", "sslClient", "externalLink",
               "additionalExternalLinks", "jvmBased", "uniqueIdParameters",
               "healthAggregation", "healthTests", "dependencyExtensions",
               "serviceMonitorClient", "supportBundle"}
COMMON_PARAM = {"name", "label", "description", "configName", "required", "default",
                "configurableInWizard", "sensitive", "type"}
NUMERIC = {"min", "max", "softMin", "softMax", "unit"}
PARAM_FIELDS: Dict[str, Set[str]] = {
    "string": {"conformRegex", "initType"},
    "password": {"conformRegex", "initType", "credentialProviderCompatible",
                 "alternateScriptParameterName"},
    "path": {"conformRegex", "pathType", "mode"},
    "uri": {"conformRegex", "allowedSchemes", "opaque"},
    "string_enum": {"validValues"},
    "boolean": set(),
    "long": NUMERIC,
    "double": NUMERIC,
    "memory": NUMERIC | {"scaleFactor", "autoConfigShare"},
    "port": {"min", "unit", "outbound", "zeroAllowed", "negativeOneAllowed"},
    "string_array": {"separator", "minLength", "maxLength"},
    "path_array": {"separator", "minLength", "maxLength", "pathType", "mode"},
    "uri_array": {"separator", "minLength", "maxLength", "allowedSchemes", "opaque"},
    "provided": set(),
}
UNITS = {"milliseconds", "seconds", "minutes", "hours", "bytes", "kilobytes", "megabytes",
         "gigabytes", "percent", "pages", "times", "lines"}
PATH_TYPES = {"localDataDir", "localDataFile", "serviceSpecific"}
CONFIG_FORMATS = {"hadoop_xml", "properties", "gflags"}


class Report:
    """Collects problems as 'FILE: FIELD: RULE' lines."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: List[str] = []

    def add(self, field: str, rule: str) -> None:
        self.problems.append("%s: %s: %s" % (self.filename, field, rule))

    def require(self, obj: Dict[str, Any], key: str, where: str) -> Any:
        value = obj.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            self.add("%s.%s" % (where, key) if where else key, "is required and must not be blank")
        return value


def _unknown(report: Report, obj: Dict[str, Any], allowed: Set[str], where: str) -> None:
    for key in sorted(set(obj) - allowed):
        report.add("%s.%s" % (where, key) if where else key,
                   "unknown field (strict mode refuses it; check the spelling)")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_parameter(report: Report, p: Dict[str, Any], where: str) -> None:
    for key in ("name", "label", "description", "type"):
        report.require(p, key, where)
    ptype = p.get("type")
    if ptype not in PARAM_FIELDS:
        report.add(where + ".type", "unknown parameter type %r (expected one of %s)"
                   % (ptype, ", ".join(sorted(PARAM_FIELDS))))
        return
    if ptype == "provided":
        _unknown(report, p, {"name", "type"}, where)
        return
    _unknown(report, p, COMMON_PARAM | PARAM_FIELDS[ptype], where)
    default = p.get("default")
    if p.get("required") and default is None and not p.get("configurableInWizard"):
        report.add(where + ".default", "a required parameter needs a default or "
                   "configurableInWizard so the admin is asked for it")
    if ptype in ("long", "double", "memory", "port"):
        check_numeric(report, p, where, ptype)
    elif ptype == "boolean":
        if default is not None and not isinstance(default, bool):
            report.add(where + ".default", "must be true or false for a boolean parameter")
    elif ptype == "string_enum":
        values = p.get("validValues")
        if not isinstance(values, list) or not values:
            report.add(where + ".validValues", "is required and must be a non-empty list")
        elif default is not None and default not in values:
            report.add(where + ".default", "%r is not one of validValues %s" % (default, values))
    elif ptype in ("string_array", "path_array", "uri_array"):
        if default is not None and not (isinstance(default, list)
                                        and all(isinstance(v, str) for v in default)):
            report.add(where + ".default", "must be a list of strings for %s" % ptype)
    elif default is not None and not isinstance(default, str):
        report.add(where + ".default", "must be a string for a %s parameter" % ptype)
    if ptype in ("path", "path_array"):
        if p.get("pathType") not in PATH_TYPES:
            report.add(where + ".pathType", "is required: one of %s" % ", ".join(sorted(PATH_TYPES)))
    if "mode" in p and not re.fullmatch(r"[0-7]{4}", str(p["mode"])):
        report.add(where + ".mode", "must be 4 octal digits such as 0755")
    if "conformRegex" in p and isinstance(default, str) and default:
        try:
            if not re.fullmatch(p["conformRegex"], default):
                report.add(where + ".default", "%r does not match conformRegex" % default)
        except re.error as e:
            report.add(where + ".conformRegex", "is not a valid regular expression (%s)" % e)
    if ptype == "password" and "credentialProviderCompatible" in p \
            and "alternateScriptParameterName" in p:
        report.add(where, "credentialProviderCompatible and alternateScriptParameterName "
                   "are mutually exclusive")
    if "initType" in p and p["initType"] != "randomBase64":
        report.add(where + ".initType", "only randomBase64 is known")


def check_numeric(report: Report, p: Dict[str, Any], where: str, ptype: str) -> None:
    checker = _is_int if ptype in ("long", "memory", "port") else _is_num
    bounds = [(k, p[k]) for k in ("min", "softMin", "softMax", "max") if k in p]
    for key, value in bounds:
        if not checker(value):
            report.add("%s.%s" % (where, key), "must be a %s" % ("whole number" if checker is _is_int
                                                             else "number"))
    if ptype == "port":
        for key in ("max", "softMin", "softMax"):
            if key in p:
                report.add("%s.%s" % (where, key), "is not allowed on a port parameter")
    numeric = [(k, v) for k, v in bounds if checker(v)]
    for (k1, v1), (k2, v2) in zip(numeric, numeric[1:]):
        if not v1 < v2 and not (k1 == "min" and k2 == "max" and v1 == v2):
            report.add(where, "%s (%s) must be below %s (%s)" % (k1, v1, k2, v2))
    if "unit" in p and p["unit"] not in UNITS:
        report.add(where + ".unit", "unknown unit %r (expected one of %s)"
                   % (p["unit"], ", ".join(sorted(UNITS))))
    default = p.get("default")
    if default is None:
        return
    if not checker(default):
        report.add(where + ".default", "must be a %s" % ("whole number" if checker is _is_int
                                                         else "number"))
        return
    lo = p.get("min", 1 if ptype == "port" and not p.get("zeroAllowed") else None)
    hi = p.get("max", 65535 if ptype == "port" else None)
    if (lo is not None and default < lo) or (hi is not None and default > hi):
        report.add(where + ".default", "%s is outside [%s, %s]" % (default, lo, hi))


def check_parameters(report: Report, params: Any, where: str) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    if params is None:
        return out
    if not isinstance(params, list):
        report.add(where, "must be a list")
        return out
    config_names: Set[str] = set()
    for i, p in enumerate(params):
        pwhere = "%s[%s]" % (where, p.get("name", i) if isinstance(p, dict) else i)
        if not isinstance(p, dict):
            report.add(pwhere, "must be an object")
            continue
        check_parameter(report, p, pwhere)
        name = p.get("name")
        if name in out:
            report.add(pwhere + ".name", "duplicate parameter name %r" % name)
        out[str(name)] = p
        config_name = p.get("configName", name)
        if config_name in config_names:
            report.add(pwhere + ".configName", "duplicate configName %r" % config_name)
        config_names.add(str(config_name))
    return out


def check_substitutions(report: Report, text: Any, where: str, scope: Set[str]) -> None:
    if not isinstance(text, str):
        return
    for var in SUBST_RE.findall(text):
        if var not in scope and var not in FIXED_VARIABLES:
            report.add(where, "has invalid substitution ${%s} (no such parameter in scope)" % var)


def check_runner(report: Report, runner: Any, where: str, scope: Set[str],
                 files: Optional[Set[str]]) -> None:
    if not isinstance(runner, dict):
        report.add(where, "is required and must be an object with a program")
        return
    _unknown(report, runner, {"program", "args", "environmentVariables"}, where)
    program = report.require(runner, "program", where)
    if files is not None and isinstance(program, str) and program not in files:
        report.add(where + ".program", "%s is not in the CSD jar" % program)
    for i, arg in enumerate(runner.get("args", []) or []):
        check_substitutions(report, arg, "%s.args[%d]" % (where, i), scope)
    env = runner.get("environmentVariables", {}) or {}
    if not isinstance(env, dict):
        report.add(where + ".environmentVariables", "must be an object of strings")
        return
    for key, value in env.items():
        check_substitutions(report, value, "%s.environmentVariables.%s" % (where, key), scope)


def check_role(report: Report, role: Dict[str, Any], where: str, role_names: Set[str],
               service_params: Dict[str, Dict[str, Any]], files: Optional[Set[str]]) -> None:
    _unknown(report, role, ROLE_FIELDS, where)
    name = report.require(role, "name", where)
    if isinstance(name, str):
        if not NAME_RE.match(name):
            report.add(where + ".name", "must be upper-case letters, digits and underscores")
        if name in BUILTIN_ROLES:
            report.add(where + ".name", "%s is a built-in role type; prefix it with the service "
                       "name" % name)
    report.require(role, "label", where)
    report.require(role, "pluralLabel", where)
    role_params = check_parameters(report, role.get("parameters"), where + ".parameters")
    for clash in sorted(set(role_params) & set(service_params)):
        report.add(where + ".parameters[%s]" % clash, "name also used by a service parameter")
    scope = set(service_params) | set(role_params)
    if role.get("logging"):
        check_logging(report, role["logging"], where + ".logging")
        scope.add(role["logging"].get("configName") or "log_dir")
    check_runner(report, role.get("startRunner"), where + ".startRunner", scope, files)
    stop = role.get("stopRunner")
    if stop is not None:
        if not _is_int(stop.get("timeout", 0)) or stop.get("timeout", 0) < 0:
            report.add(where + ".stopRunner.timeout", "must be milliseconds >= 0")
        if "runner" in stop:
            check_runner(report, stop["runner"], where + ".stopRunner.runner", scope, files)
    check_topology(report, role.get("topology") or {}, where + ".topology", role_names)
    check_role_commands(report, role.get("commands") or [], where + ".commands", scope, files)
    check_config_writer(report, role.get("configWriter"), where + ".configWriter", scope)
    for key in ("externalLink",):
        if role.get(key) is not None:
            check_link(report, role[key], "%s.%s" % (where, key), scope)
    for i, link in enumerate(role.get("additionalExternalLinks") or []):
        check_link(report, link, "%s.additionalExternalLinks[%d]" % (where, i), scope)
    agg = role.get("healthAggregation")
    if agg is not None:
        check_health_aggregation(report, agg, where + ".healthAggregation")
    run_as = role.get("runAs")
    if run_as is not None:
        report.require(run_as, "user", where + ".runAs")
        report.require(run_as, "group", where + ".runAs")
    check_kerberos_principals(report, role.get("kerberosPrincipals"),
                              where + ".kerberosPrincipals", scope)


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_kerberos_principals(report: Report, principals: Any, where: str,
                              scope: Set[str]) -> None:
    """RoleDescriptor.kerberosPrincipals (KerberosPrincipalDescriptor): each {name, primary,
    instance?}; name is exported to the role's environment as the principal, so it is an
    environment variable name, unique in the role; primary takes parameters and ${principal},
    instance parameters and ${host}. CM puts one keytab with all of them in the process dir."""
    if principals is None:
        return
    if not isinstance(principals, list):
        report.add(where, "must be a list of {name, primary, instance}")
        return
    seen: Set[str] = set()
    for i, p in enumerate(principals):
        pwhere = "%s[%d]" % (where, i)
        if not isinstance(p, dict):
            report.add(pwhere, "must be an object with name, primary and instance")
            continue
        _unknown(report, p, {"name", "primary", "instance"}, pwhere)
        name = report.require(p, "name", pwhere)
        if isinstance(name, str):
            if not ENV_NAME_RE.match(name):
                report.add(pwhere + ".name", "must be an environment variable name (CM exports "
                           "the principal under it)")
            if name in seen:
                report.add(pwhere + ".name", "duplicate principal name %r" % name)
            seen.add(name)
        primary = report.require(p, "primary", pwhere)
        check_substitutions(report, primary, pwhere + ".primary", scope)
        check_substitutions(report, p.get("instance"), pwhere + ".instance", scope)


LOGGING_FIELDS = {"dir", "filename", "modifiable", "loggingType", "configName"}
LOGGING_TYPES = {"log4j", "logback", "glog", "other"}  # CsdLoggingType, as JSON


def check_logging(report: Report, logging: Any, where: str) -> None:
    """LoggingDescriptor: dir and filename required; loggingType one of CsdLoggingType."""
    if not isinstance(logging, dict):
        report.add(where, "must be an object with dir and filename")
        return
    _unknown(report, logging, LOGGING_FIELDS, where)
    for key in ("dir", "filename"):
        if not str(logging.get(key) or "").strip():
            report.add("%s.%s" % (where, key), "is required")
    if not str(logging.get("dir", "/")).startswith("/"):
        report.add(where + ".dir", "must be an absolute path")
    if logging.get("loggingType", "other") not in LOGGING_TYPES:
        report.add(where + ".loggingType", "unknown logging type %r (expected one of %s)"
                   % (logging.get("loggingType"), ", ".join(sorted(LOGGING_TYPES))))
    if logging.get("loggingType") == "glog" and not str(logging.get("filename", "")).endswith(
            ".INFO"):
        report.add(where + ".filename", "must end in .INFO for glog")


def check_topology(report: Report, topo: Dict[str, Any], where: str, role_names: Set[str]) -> None:
    _unknown(report, topo, {"minInstances", "maxInstances", "softMinInstances",
                            "softMaxInstances", "requiresOddNumberOfInstances",
                            "placementRules"}, where)
    lo, hi = topo.get("minInstances", 1), topo.get("maxInstances")
    if not _is_int(lo) or lo < 0:
        report.add(where + ".minInstances", "must be a whole number >= 0")
    if hi is not None and (not _is_int(hi) or hi < 1):
        report.add(where + ".maxInstances", "must be a whole number >= 1")
    elif hi is not None and _is_int(lo) and lo > hi:
        report.add(where, "minInstances (%s) must not exceed maxInstances (%s)" % (lo, hi))
    seen: Set[str] = set()
    for i, rule in enumerate(topo.get("placementRules") or []):
        rwhere = "%s.placementRules[%d]" % (where, i)
        rtype = rule.get("type")
        if rtype in seen:
            report.add(rwhere + ".type", "only one %s rule is allowed" % rtype)
        seen.add(str(rtype))
        if rtype == "alwaysWith":
            targets = [rule.get("roleType")]
        elif rtype in ("neverWith", "alwaysWithAny"):
            targets = rule.get("roleTypes") or []
            if not targets or (rtype == "alwaysWithAny" and len(targets) < 2):
                report.add(rwhere + ".roleTypes", "needs %s role types"
                           % ("at least two" if rtype == "alwaysWithAny" else "at least one"))
        else:
            report.add(rwhere + ".type", "unknown rule %r (alwaysWith, neverWith, alwaysWithAny)"
                       % rtype)
            continue
        for target in targets:
            if target not in role_names:
                report.add(rwhere, "refers to unknown role type %r" % target)
    if {"alwaysWith", "alwaysWithAny"} <= seen:
        report.add(where + ".placementRules", "alwaysWith and alwaysWithAny are mutually exclusive")


def check_role_commands(report: Report, commands: List[Dict[str, Any]], where: str,
                        scope: Set[str], files: Optional[Set[str]]) -> None:
    names: Set[str] = set()
    for i, cmd in enumerate(commands):
        cwhere = "%s[%s]" % (where, cmd.get("name", i))
        _unknown(report, cmd, {"name", "label", "description", "expectedExitCodes",
                               "commandRunner", "requiredRoleState"}, cwhere)
        for key in ("name", "label", "description"):
            report.require(cmd, key, cwhere)
        if cmd.get("name") in names:
            report.add(cwhere + ".name", "duplicate command name")
        names.add(str(cmd.get("name")))
        codes = cmd.get("expectedExitCodes")
        if not isinstance(codes, list) or not codes or not all(_is_int(c) for c in codes):
            report.add(cwhere + ".expectedExitCodes", "must be a non-empty list of exit codes")
        state = cmd.get("requiredRoleState")
        if state is not None and state not in ("running", "stopped"):
            report.add(cwhere + ".requiredRoleState", "must be running or stopped")
        check_runner(report, cmd.get("commandRunner"), cwhere + ".commandRunner", scope, files)


def check_config_writer(report: Report, writer: Any, where: str, scope: Set[str]) -> None:
    if writer is None:
        return
    _unknown(report, writer, {"generators", "auxConfigGenerators", "peerConfigGenerators"}, where)
    for group in ("generators", "auxConfigGenerators", "peerConfigGenerators"):
        filenames: Set[str] = set()
        for i, gen in enumerate(writer.get(group) or []):
            gwhere = "%s.%s[%d]" % (where, group, i)
            filename = report.require(gen, "filename", gwhere)
            if filename in filenames:
                report.add(gwhere + ".filename", "duplicate filename %r" % filename)
            filenames.add(str(filename))
            if group == "generators":
                if gen.get("configFormat") not in CONFIG_FORMATS:
                    report.add(gwhere + ".configFormat", "must be one of %s"
                               % ", ".join(sorted(CONFIG_FORMATS)))
                for key in ("includedParams", "excludedParams"):
                    for name in gen.get(key) or []:
                        if name not in scope:
                            report.add("%s.%s" % (gwhere, key),
                                       "refers to unknown parameter %r" % name)
            if group == "peerConfigGenerators" and not gen.get("params"):
                report.add(gwhere + ".params", "is required and must not be empty")


def check_link(report: Report, link: Dict[str, Any], where: str, scope: Set[str]) -> None:
    for key in ("name", "label", "url"):
        report.require(link, key, where)
    for key in ("url", "secureUrl"):
        url = link.get(key)
        if isinstance(url, str):
            check_substitutions(report, url, "%s.%s" % (where, key), scope)
            if not re.match(r"^https?://", url):
                report.add("%s.%s" % (where, key), "must start with http:// or https://")


def check_health_aggregation(report: Report, agg: Dict[str, Any], where: str) -> None:
    kind = agg.get("type")
    if kind == "singleton":
        return
    if kind != "nonSingleton":
        report.add(where + ".type", "must be singleton or nonSingleton")
        return
    for key in ("percentGreenForGreen", "percentYellowGreenForYellow"):
        value: Any = agg.get(key)
        if not _is_num(value) or not 0.0 <= value <= 99.99:
            report.add("%s.%s" % (where, key), "must be a percentage from 0.0 to 99.99")


def check_service_commands(report: Report, sdl: Dict[str, Any],
                           roles: Dict[str, Dict[str, Any]]) -> Set[str]:
    names: Set[str] = set()
    for i, cmd in enumerate(sdl.get("commands") or []):
        where = "commands[%s]" % cmd.get("name", i)
        _unknown(report, cmd, {"name", "label", "description", "roleName", "roleCommand",
                               "runMode"}, where)
        for key in ("name", "label", "description", "roleName", "roleCommand"):
            report.require(cmd, key, where)
        if cmd.get("name") in names:
            report.add(where + ".name", "duplicate service command name")
        names.add(str(cmd.get("name")))
        role = roles.get(cmd.get("roleName"))
        if role is None:
            report.add(where + ".roleName", "refers to unknown role %r" % cmd.get("roleName"))
        elif cmd.get("roleCommand") not in {c.get("name") for c in role.get("commands") or []}:
            report.add(where + ".roleCommand", "role %s has no command %r"
                       % (cmd.get("roleName"), cmd.get("roleCommand")))
        if cmd.get("runMode") not in ("all", "single"):
            report.add(where + ".runMode", "must be all or single")
    for d in sdl.get("hdfsDirs") or []:
        names.add(str(d.get("name")))
    return names


def check_service_init(report: Report, init: Dict[str, Any], commands: Set[str]) -> None:
    for phase in ("preStartSteps", "postStartSteps"):
        for i, step in enumerate(init.get(phase) or []):
            if step.get("commandName") not in commands:
                report.add("serviceInit.%s[%d].commandName" % (phase, i),
                           "refers to unknown service command %r" % step.get("commandName"))


def check_rolling_restart(report: Report, rr: Dict[str, Any], roles: Dict[str, Dict[str, Any]],
                          service_commands: Set[str]) -> None:
    for i, step in enumerate(rr.get("nonWorkerSteps") or []):
        where = "rollingRestart.nonWorkerSteps[%d]" % i
        role = roles.get(step.get("roleName"))
        if role is None:
            report.add(where + ".roleName", "refers to unknown role %r" % step.get("roleName"))
            continue
        known = {c.get("name") for c in role.get("commands") or []} | {"Start", "Stop"}
        for key in ("bringDownCommands", "bringUpCommands"):
            for name in step.get(key) or []:
                if name not in known:
                    report.add("%s.%s" % (where, key), "role %s has no command %r"
                               % (step.get("roleName"), name))
    worker = rr.get("workerSteps")
    if worker:
        if worker.get("roleName") not in roles:
            report.add("rollingRestart.workerSteps.roleName", "refers to unknown role %r"
                       % worker.get("roleName"))
        for key in ("bringDownCommands", "bringUpCommands"):
            for name in worker.get(key) or []:
                if name not in service_commands | {"Start", "Stop"}:
                    report.add("rollingRestart.workerSteps.%s" % key,
                               "refers to unknown service command %r" % name)


METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
METRIC_TYPES = {"gauge", "counter"}


def validate_mdl(mdl: Any, sdl: Dict[str, Any], filename: str = "service.mdl") -> List[str]:
    """ServiceMonitoringDefinitionsDescriptor: the service's name and version, roles that exist
    in the SDL, metric names (MetricNameFormat) unique, label and description, known type."""
    report = Report(filename)
    if not isinstance(mdl, dict):
        report.add("(top level)", "must be a JSON object")
        return report.problems
    _unknown(report, mdl, {"name", "version", "compatibility", "roles", "metricDefinitions",
                           "metricEntityAttributeDefinitions", "metricEntityTypeDefinitions",
                           "nameForCrossEntityAggregateMetrics"}, "")
    if mdl.get("name") != sdl.get("name"):
        report.add("name", "must be the SDL's service name %r" % sdl.get("name"))
    if not str(mdl.get("version") or "").strip():
        report.add("version", "is required")
    role_names = {r.get("name") for r in sdl.get("roles") or []}
    seen: Set[str] = set()
    groups = [("metricDefinitions", mdl.get("metricDefinitions") or [])]
    for i, role in enumerate(mdl.get("roles") or []):
        where = "roles[%s]" % role.get("name", i)
        if role.get("name") not in role_names:
            report.add(where + ".name", "is not a role of the SDL")
        groups.append((where + ".metricDefinitions", role.get("metricDefinitions") or []))
    for where, metrics in groups:
        for metric in metrics:
            name = str(metric.get("name", ""))
            at = "%s[%s]" % (where, name)
            if not METRIC_NAME_RE.match(name):
                report.add(at + ".name", "must be lower case letters, digits and underscores")
            if name in seen:
                report.add(at + ".name", "is defined twice")
            seen.add(name)
            for key in ("label", "description"):
                if not str(metric.get(key) or "").strip():
                    report.add("%s.%s" % (at, key), "is required")
            if metric.get("type", "gauge") not in METRIC_TYPES:
                report.add(at + ".type", "must be gauge or counter")
    return report.problems


def validate_sdl(sdl: Any, filename: str = "service.sdl",
                 files: Optional[Iterable[str]] = None) -> List[str]:
    """All problems of one descriptor; empty when it is valid."""
    report = Report(filename)
    if not isinstance(sdl, dict):
        report.add("(top level)", "must be a JSON object")
        return report.problems
    file_set = set(files) if files is not None else None
    _unknown(report, sdl, SERVICE_FIELDS, "")
    name = report.require(sdl, "name", "")
    if isinstance(name, str) and (not NAME_RE.match(name) or name in BUILTIN_SERVICES):
        report.add("name", "must be upper-case letters, digits, underscores and not a built-in "
                   "service type")
    for key in ("label", "description", "version"):
        report.require(sdl, key, "")
    compat = sdl.get("compatibility") or {}
    if "generation" in compat and (not _is_int(compat["generation"]) or compat["generation"] < 1):
        report.add("compatibility.generation", "must be a whole number >= 1")
    if "maxInstances" in sdl and (not _is_int(sdl["maxInstances"]) or sdl["maxInstances"] < 1):
        report.add("maxInstances", "must be a whole number >= 1")
    if sdl.get("runAs") is not None:
        report.require(sdl["runAs"], "user", "runAs")
        report.require(sdl["runAs"], "group", "runAs")
    if sdl.get("icon") and file_set is not None and sdl["icon"] not in file_set:
        report.add("icon", "%s is not in the CSD jar" % sdl["icon"])
    parcel = sdl.get("parcel")
    if parcel is not None and not (isinstance(parcel.get("requiredTags"), list)
                                   and parcel["requiredTags"]):
        report.add("parcel.requiredTags", "must be a non-empty list of tags")
    deps: Set[str] = set()
    for i, dep in enumerate(sdl.get("serviceDependencies") or []):
        dname = dep.get("name")
        if dname in deps:
            report.add("serviceDependencies[%d].name" % i, "duplicate dependency %r" % dname)
        deps.add(str(dname))
        if dname not in KNOWN_DEPENDENCIES:
            report.add("serviceDependencies[%d].name" % i, "unknown service type %r" % dname)
        if not isinstance(dep.get("required"), bool):
            report.add("serviceDependencies[%d].required" % i, "must be true or false")
    service_params = check_parameters(report, sdl.get("parameters"), "parameters")
    roles: Dict[str, Dict[str, Any]] = {}
    for role in sdl.get("roles") or []:
        if role.get("name") in roles:
            report.add("roles[%s].name" % role.get("name"), "duplicate role name")
        roles[str(role.get("name"))] = role
    for rname, role in roles.items():
        check_role(report, role, "roles[%s]" % rname, set(roles), service_params, file_set)
    for i, rname in enumerate(sdl.get("rolesWithExternalLinks") or []):
        if rname not in roles:
            report.add("rolesWithExternalLinks[%d]" % i, "refers to unknown role %r" % rname)
        elif not roles[rname].get("externalLink"):
            report.add("rolesWithExternalLinks[%d]" % i, "role %s has no externalLink" % rname)
    service_commands = check_service_commands(report, sdl, roles)
    if sdl.get("serviceInit"):
        check_service_init(report, sdl["serviceInit"], service_commands)
    if sdl.get("rollingRestart"):
        check_rolling_restart(report, sdl["rollingRestart"], roles, service_commands)
    check_substitutions(report, sdl.get("kerberos"), "kerberos", set(service_params))
    return report.problems


MASTER_PRINCIPAL_ENV = "CDSW_PRINCIPAL"


def check_cdsw_contract(sdl: Dict[str, Any], schema: List[Dict[str, Any]],
                        filename: str = "service.sdl") -> List[str]:
    """CDSW's own rules on top of CM's: every role renders exactly the agent's property keys."""
    report = Report(filename)
    params = {p.get("name"): p for p in sdl.get("parameters") or []}
    wanted = sorted(row["property"] for row in schema)
    roles = {r.get("name"): r for r in sdl.get("roles") or []}
    for rname in ("CDSW_MASTER", "CDSW_WORKER", "CDSW_DOCKER"):
        role = roles.get(rname)
        if role is None:
            report.add("roles", "role %s is missing" % rname)
            continue
        gens = [g for g in (role.get("configWriter") or {}).get("generators") or []
                if g.get("filename") == "cdsw.properties"]
        if len(gens) != 1:
            report.add("roles[%s].configWriter" % rname, "needs exactly one cdsw.properties "
                       "generator")
            continue
        keys = sorted((params.get(n) or {}).get("configName", n)
                      for n in gens[0].get("includedParams") or [])
        if keys != wanted:
            missing = sorted(set(wanted) - set(keys))
            extra = sorted(set(keys) - set(wanted))
            report.add("roles[%s].configWriter.generators[cdsw.properties].includedParams"
                       % rname, "must render exactly the settings schema's keys (missing %s, "
                       "unknown to the agent %s)" % (missing or "none", extra or "none"))
    master = (roles.get("CDSW_MASTER") or {}).get("topology") or {}
    if master.get("minInstances", 1) != 1 or master.get("maxInstances") != 1:
        report.add("roles[CDSW_MASTER].topology", "exactly one master: minInstances and "
                   "maxInstances must both be 1")
    # The master and workers drive the Docker socket (root:docker 0660) and serve project files
    # as their owners: every role runs as root, as the parcel and the mpack declare too.
    for role in sdl.get("roles") or []:
        run_as = role.get("runAs") or sdl.get("runAs") or {}
        if run_as.get("user") != "root":
            report.add("roles[%s].runAs" % role.get("name"), "must be root (service or role "
                       "runAs): the role needs the Docker socket and root to serve project files")
    # CDSW's guidance: restarting the Docker daemons under running masters and workers hangs;
    # the Docker role is restarted only by a full service restart, never by a rolling one.
    rr = sdl.get("rollingRestart") or {}
    rolled = [s.get("roleName") for s in rr.get("nonWorkerSteps") or []]
    rolled.append((rr.get("workerSteps") or {}).get("roleName"))
    if "CDSW_DOCKER" in rolled:
        report.add("rollingRestart", "must not restart CDSW_DOCKER under running masters and "
                   "workers: restart the Docker daemons with a full service restart")
    # Kerberos: CM creates the master's service principal and keytab when the service needs
    # Kerberos (the kerberos_enabled parameter, or a Kerberized dependency); control.sh hands
    # them to the agent as kerberos_service_principal/keytab.
    principals = (roles.get("CDSW_MASTER") or {}).get("kerberosPrincipals") or []
    if not any(p.get("name") == MASTER_PRINCIPAL_ENV for p in principals
               if isinstance(p, dict)):
        report.add("roles[CDSW_MASTER].kerberosPrincipals", "must declare %s (the master's "
                   "service principal; control.sh reads it with the process dir's cdsw.keytab)"
                   % MASTER_PRINCIPAL_ENV)
    if sdl.get("kerberos") != "${cdsw_kerberos_enabled}":
        report.add("kerberos", "must be ${cdsw_kerberos_enabled}: CM creates the service's "
                   "principals when the parameter is on (or a dependency is Kerberized)")
    rules = ((roles.get("CDSW_WORKER") or {}).get("topology") or {}).get("placementRules") or []
    if not any(r.get("type") == "neverWith" and "CDSW_MASTER" in (r.get("roleTypes") or [])
               for r in rules):
        report.add("roles[CDSW_WORKER].topology.placementRules",
                   "a worker must never share the master's host (neverWith CDSW_MASTER)")
    return report.problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a CSD service.sdl")
    parser.add_argument("sdl", type=Path)
    parser.add_argument("--jar-root", type=Path, help="unpacked CSD to check referenced files")
    parser.add_argument("--schema-json", type=Path, help="`cdsw config schema` output")
    args = parser.parse_args(argv)
    try:
        sdl = json.loads(args.sdl.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print("%s: (file): cannot be read as JSON: %s" % (args.sdl, e), file=sys.stderr)
        return 1
    files = None
    if args.jar_root:
        files = [p.relative_to(args.jar_root).as_posix() for p in args.jar_root.rglob("*")]
    problems = validate_sdl(sdl, str(args.sdl), files)
    if args.schema_json:
        schema = json.loads(args.schema_json.read_text(encoding="utf-8"))
        problems += check_cdsw_contract(sdl, schema, str(args.sdl))
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("%s: valid" % args.sdl)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
