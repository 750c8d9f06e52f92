"""Validate parcels and a parcel repository's manifest.json.

Rules from cloudera/cm_ext's parcel validator (docs/packaging.md, "Sources"): file
name NAME-VERSION-DISTRO.parcel, a gzip'd tar whose only top-level directory is NAME-VERSION,
a strict meta/parcel.json, a defines script that exists and never exits, and manifest hashes
equal to the files' SHA-1. Usage:

    validate_parcel.py FILE.parcel... [--manifest DIR/manifest.json] [--build-root PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional

FILENAME_RE = re.compile(r"^(.*?)-(.*)-(.*?)\.parcel$")
KNOWN_DISTROS = {"el5", "el6", "el7", "el8", "el9", "sles11", "sles12", "sles15", "lucid",
                 "precise", "trusty", "xenial", "bionic", "focal", "jammy", "noble", "squeeze",
                 "wheezy", "jessie"}
PARCEL_KEYS = {"schema_version", "name", "version", "setActiveSymlink", "scripts", "packages",
               "components", "users", "groups", "extraVersionInfo", "depends", "replaces",
               "conflicts", "provides", "servicesRestartInfo"}
REQUIRED_KEYS = {"schema_version", "name", "version", "setActiveSymlink", "scripts", "packages",
                 "components", "users", "groups"}
USER_KEYS = {"longname", "home", "shell", "extra_groups"}
EXIT_RE = re.compile(r"^\s*(exit|return)\b", re.M)


class Problems(list):  # type: ignore[type-arg]
    def add(self, filename: str, field: str, rule: str) -> None:
        self.append("%s: %s: %s" % (filename, field, rule))


def check_parcel_json(meta: Any, where: str, problems: Problems,
                      members: Optional[Dict[str, tarfile.TarInfo]] = None,
                      top: str = "") -> None:
    if not isinstance(meta, dict):
        problems.add(where, "(top level)", "must be a JSON object")
        return
    for key in sorted(REQUIRED_KEYS - set(meta)):
        problems.add(where, key, "is required")
    for key in sorted(set(meta) - PARCEL_KEYS):
        problems.add(where, key, "unknown field (parcel.json is always parsed strictly)")
    if "schema_version" in meta and meta["schema_version"] != 1:
        problems.add(where, "schema_version", "must be 1")
    for key in ("name", "version"):
        if key in meta and (not isinstance(meta[key], str) or not meta[key].strip()):
            problems.add(where, key, "must be a non-blank string")
    if isinstance(meta.get("name"), str) and "-" in meta["name"]:
        problems.add(where, "name", "must not contain '-' (it separates name, version, distro)")
    if "setActiveSymlink" in meta and not isinstance(meta["setActiveSymlink"], bool):
        problems.add(where, "setActiveSymlink", "must be true or false")
    scripts = meta.get("scripts")
    if "scripts" in meta:
        if not isinstance(scripts, dict) or set(scripts) != {"defines"}:
            problems.add(where, "scripts", "must be exactly {\"defines\": \"<file in meta/>\"}")
        elif members is not None and top + "meta/" + str(scripts["defines"]) not in members:
            problems.add(where, "scripts.defines", "meta/%s is not in the parcel"
                         % scripts["defines"])
    for key, fields in (("packages", {"name", "version"}),
                        ("components", {"name", "version"})):
        items = meta.get(key)
        if key not in meta:
            continue
        if not isinstance(items, list):
            problems.add(where, key, "must be a list")
            continue
        names = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not fields <= set(item):
                problems.add(where, "%s[%d]" % (key, i), "needs %s" % " and ".join(sorted(fields)))
                continue
            extra = set(item) - fields - ({"pkg_version", "pkg_release"} if key == "components"
                                          else set())
            if extra:
                problems.add(where, "%s[%d]" % (key, i), "unknown fields %s" % sorted(extra))
            if item["name"] in names:
                problems.add(where, "%s[%d].name" % (key, i), "duplicate name %r" % item["name"])
            names.add(item["name"])
    users = meta.get("users")
    if "users" in meta:
        if not isinstance(users, dict):
            problems.add(where, "users", "must be an object of user -> {longname, home, shell, "
                         "extra_groups}")
        else:
            for user, spec in users.items():
                if not isinstance(spec, dict) or set(spec) != USER_KEYS:
                    problems.add(where, "users.%s" % user, "needs exactly %s"
                                 % ", ".join(sorted(USER_KEYS)))
                elif not isinstance(spec["extra_groups"], list):
                    problems.add(where, "users.%s.extra_groups" % user, "must be a list")
    if "groups" in meta and not isinstance(meta["groups"], list):
        problems.add(where, "groups", "must be a list")
    for key in ("depends", "replaces", "conflicts"):
        if key in meta and not isinstance(meta[key], str):
            problems.add(where, key, "must be a string such as \"FOO (>= 1.0)\"")
    provides = meta.get("provides")
    if provides is not None and not (isinstance(provides, list)
                                     and all(isinstance(t, str) and t for t in provides)):
        problems.add(where, "provides", "must be a list of tags")


def validate_parcel(path: Path, build_root: Optional[str] = None) -> List[str]:
    problems = Problems()
    name = path.name
    match = FILENAME_RE.match(name)
    if not match:
        problems.add(name, "file name", "must be NAME-VERSION-DISTRO.parcel")
        return problems
    pname, pver, distro = match.groups()
    if distro not in KNOWN_DISTROS:
        problems.add(name, "file name", "unknown distro suffix %r (expected one of %s)"
                     % (distro, ", ".join(sorted(KNOWN_DISTROS))))
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as e:
        problems.add(name, "(archive)", "is not a gzip'd tar file: %s" % e)
        return problems
    with tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        top = "%s-%s" % (pname, pver)
        for mname, member in sorted(members.items()):
            if mname.startswith("/") or ".." in mname.split("/"):
                problems.add(name, mname, "member path must be relative and stay inside")
            elif mname != top and not mname.startswith(top + "/"):
                problems.add(name, mname, "is outside the only allowed top-level directory %s/"
                             % top)
            if member.issym() or member.islnk():
                target = member.linkname
                if target.startswith("/") or ".." in target.split("/"):
                    problems.add(name, mname, "link target %r leaves the parcel" % target)
        keyed = {k + ("/" if m.isdir() else ""): m for k, m in members.items()}
        keyed.update(members)
        meta_name = top + "/meta/parcel.json"
        if meta_name not in members:
            problems.add(name, "meta/parcel.json", "is missing")
            return problems
        meta_file = tar.extractfile(members[meta_name])
        try:
            meta = json.loads(meta_file.read().decode("utf-8")) if meta_file else None
        except ValueError as e:
            problems.add(name, "meta/parcel.json", "is not valid JSON (no comments allowed): %s" % e)
            return problems
        where = "%s!meta/parcel.json" % name
        check_parcel_json(meta, where, problems, members, top + "/")
        if isinstance(meta, dict):
            if meta.get("name") != pname:
                problems.add(where, "name", "%r differs from the file name's %r"
                             % (meta.get("name"), pname))
            if meta.get("version") != pver:
                problems.add(where, "version", "%r differs from the file name's %r"
                             % (meta.get("version"), pver))
            defines = top + "/meta/" + str((meta.get("scripts") or {}).get("defines"))
            if defines in members:
                check_defines(tar, members[defines], name, problems)
        check_alternatives(tar, members, top, name, problems)
        if build_root:
            check_no_build_paths(tar, members, build_root, name, problems)
    return problems


def check_defines(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str,
                  problems: Problems) -> None:
    fh = tar.extractfile(member)
    text = fh.read().decode("utf-8", "replace") if fh else ""
    field = "%s!%s" % (name, member.name.split("/", 1)[1])
    if EXIT_RE.search(text):
        problems.add(field, "(script)", "a defines script is sourced: it must not exit or return")
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        problems.add(field, "(script)", "bash syntax error: %s" % proc.stderr.strip())


def check_alternatives(tar: tarfile.TarFile, members: Dict[str, tarfile.TarInfo], top: str,
                       name: str, problems: Problems) -> None:
    member = members.get(top + "/meta/alternatives.json")
    if member is None:
        return
    fh = tar.extractfile(member)
    where = name + "!meta/alternatives.json"
    try:
        alts = json.loads(fh.read().decode("utf-8")) if fh else {}
    except ValueError as e:
        problems.add(where, "(file)", "is not valid JSON: %s" % e)
        return
    for alt, spec in alts.items():
        keys = {"destination", "source", "priority", "isDirectory"}
        if not isinstance(spec, dict) or set(spec) != keys:
            problems.add(where, alt, "needs exactly %s" % ", ".join(sorted(keys)))
            continue
        if not str(spec["destination"]).startswith("/"):
            problems.add(where, alt + ".destination", "must be an absolute path")
        if top + "/" + str(spec["source"]) not in members:
            problems.add(where, alt + ".source", "%s is not in the parcel" % spec["source"])


def check_no_build_paths(tar: tarfile.TarFile, members: Dict[str, tarfile.TarInfo],
                         build_root: str, name: str, problems: Problems) -> None:
    """No file may carry this machine's build directory (it would not exist on a gateway)."""
    needle = build_root.encode()
    for mname, member in sorted(members.items()):
        if not member.isfile() or member.size > 4 << 20 or mname.endswith(".whl"):
            continue
        fh = tar.extractfile(member)
        if fh and needle in fh.read():
            problems.add(name, mname, "contains the build machine path %s" % build_root)


def validate_manifest(path: Path) -> List[str]:
    problems = Problems()
    where = path.name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.add(where, "(file)", "cannot be read as JSON: %s" % e)
        return problems
    if not isinstance(data.get("lastUpdated"), int) or isinstance(data.get("lastUpdated"), bool):
        problems.add(where, "lastUpdated", "is required: milliseconds since 1970 as an integer")
    parcels = data.get("parcels")
    if not isinstance(parcels, list) or not parcels:
        problems.add(where, "parcels", "is required and must list the repository's parcels")
        return problems
    seen = set()
    for i, item in enumerate(parcels):
        pwhere = "parcels[%d]" % i
        pname = item.get("parcelName")
        for key in ("parcelName", "hash", "components"):
            if key not in item:
                problems.add(where, "%s.%s" % (pwhere, key), "is required")
        if pname in seen:
            problems.add(where, pwhere + ".parcelName", "duplicate %r" % pname)
        seen.add(pname)
        if not isinstance(pname, str) or not FILENAME_RE.match(pname):
            problems.add(where, pwhere + ".parcelName", "must be NAME-VERSION-DISTRO.parcel")
            continue
        digest = item.get("hash")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{40}", digest):
            problems.add(where, pwhere + ".hash", "must be the 40-hex SHA-1 of the parcel")
            continue
        local = path.parent / pname
        if not local.exists():
            problems.add(where, pwhere + ".parcelName", "%s is not next to the manifest" % pname)
            continue
        actual = hashlib.sha1(local.read_bytes()).hexdigest()
        if actual != digest:
            problems.add(where, pwhere + ".hash", "%s does not match %s's SHA-1 %s"
                         % (digest, pname, actual))
        side = local.with_name(pname + ".sha1")
        if side.exists() and side.read_text().split()[0] != actual:
            problems.add(side.name, "(file)", "does not hold %s's SHA-1 %s" % (pname, actual))
    for local in sorted(path.parent.glob("*.parcel")):
        if local.name not in seen:
            problems.add(where, "parcels", "%s is in the repository but not listed" % local.name)
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Validate CM parcels and manifest.json")
    parser.add_argument("parcels", nargs="*", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--build-root", help="refuse files that mention this path")
    args = parser.parse_args(argv)
    problems: List[str] = []
    for path in args.parcels:
        problems += validate_parcel(path, args.build_root)
    if args.manifest:
        problems += validate_manifest(args.manifest)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("parcels valid: %s" % ", ".join(p.name for p in args.parcels + (
            [args.manifest] if args.manifest else [])))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
