"""Build and validate the cluster packages from the one version in cdsw_agent/__init__.py.

    build_packages.py [--out dist] [--cache build/cache] [--only csd|parcels|mpack ...]

Makes CDSW-<v>.jar, CDSW-<v>-{el8,el9,jammy}.parcel (+ .sha1), manifest.json and
cdsw-ambari-mpack-<v>.tar.gz, validates each, and exits 1 naming the first problems if any is off.
Two builds of the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import wheelhouse
from csd import build_csd
from mpack import MPACK_PYTHONS, build_mpack
from parcel import DISTROS, build_parcel, write_manifest
from pkgcommon import ROOT, BuildError, source_date_epoch, version
from settings_schema import load_schema
from validate_mpack import find_python2, validate_mpack, vermin_installed
from validate_parcel import validate_manifest, validate_parcel
from validate_sdl import check_cdsw_contract, validate_mdl, validate_sdl

PARTS = ("csd", "parcels", "mpack")
STALE = ("CDSW-*.jar", "CDSW-*.parcel", "CDSW-*.parcel.sha1", "manifest.json",
         "cdsw-ambari-mpack-*.tar.gz")


def log(msg: str) -> None:
    print("build: " + msg, flush=True)


def fail_if(problems: List[str], what: str) -> None:
    if problems:
        for line in problems[:40]:
            print("  " + line, file=sys.stderr)
        more = "" if len(problems) <= 40 else " (and %d more)" % (len(problems) - 40)
        raise BuildError("%s is invalid: %d problem(s)%s" % (what, len(problems), more))


def check_csd(jar: Path, schema: List[Dict[str, object]]) -> None:
    with zipfile.ZipFile(jar) as zf:
        names = zf.namelist()
        sdl = json.loads(zf.read("descriptor/service.sdl"))
        mdl = json.loads(zf.read("descriptor/service.mdl"))
        control = zf.read("scripts/control.sh").decode("utf-8")
    files = [n for n in names if not n.endswith("/")]
    problems = validate_sdl(sdl, jar.name + "!descriptor/service.sdl", files)
    problems += check_cdsw_contract(sdl, schema, jar.name + "!descriptor/service.sdl")  # type: ignore[arg-type]
    problems += validate_mdl(mdl, sdl, jar.name + "!descriptor/service.mdl")
    proc = subprocess.run(["bash", "-n"], input=control, capture_output=True, text=True)
    if proc.returncode != 0:
        problems.append("%s!scripts/control.sh: (syntax): %s" % (jar.name, proc.stderr.strip()))
    fail_if(problems, jar.name)


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One build at a time per cache (tests and ./build.sh may share build/cache)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(out: Path, cache: Path, parts: List[str], agent_root: Path = ROOT) -> List[Path]:
    """agent_root: where cdsw_agent and setup.py are read from (tests pass a frozen copy)."""
    with cache_lock(cache):
        return _build(out, cache, parts, agent_root)


def _build(out: Path, cache: Path, parts: List[str], agent_root: Path) -> List[Path]:
    started = time.time()
    ver, epoch = version(agent_root), source_date_epoch()
    schema = load_schema(root=agent_root)
    log("version %s, SOURCE_DATE_EPOCH %d, %d settings" % (ver, epoch, len(schema)))
    out.mkdir(parents=True, exist_ok=True)
    for pattern in STALE:
        for old in out.glob(pattern):
            old.unlink()
    made: List[Path] = []
    if "csd" in parts:
        jar = build_csd(out, schema, ver, epoch)
        check_csd(jar, schema)
        made.append(jar)
        log("%s built and valid" % jar.name)
    if "parcels" in parts or "mpack" in parts:
        agent = wheelhouse.build_agent_wheel(agent_root, cache, epoch, ver=ver)
        wanted = set(MPACK_PYTHONS) | {v for vs in DISTROS.values() for v in vs}
        log("agent wheel %s; fetching dependencies for CPython %s"
            % (agent.name, ", ".join(sorted(wanted))))
        by_python = wheelhouse.collect(agent, wanted, cache)
    if "parcels" in parts:
        parcels = []
        memo: Dict[Tuple[str, ...], bytes] = {}
        for distro, pythons in DISTROS.items():
            wheels = wheelhouse.union(by_python, pythons)
            parcels.append(build_parcel(out, ver, distro, pythons, wheels, epoch, memo))
        manifest = write_manifest(out, parcels, ver, epoch)
        problems: List[str] = []
        for p in parcels:
            problems += validate_parcel(p, build_root=str(ROOT))
        problems += validate_manifest(manifest)
        fail_if(problems, "the parcel repository")
        made += parcels + [p.with_name(p.name + ".sha1") for p in parcels] + [manifest]
        log("%d parcels and manifest.json built and valid" % len(parcels))
    if "mpack" in parts:
        pack = build_mpack(out, schema, ver, MPACK_PYTHONS,
                           wheelhouse.union(by_python, MPACK_PYTHONS), epoch)
        python2 = find_python2()
        fail_if(validate_mpack(pack, python2), pack.name)
        made.append(pack)
        log("%s built and valid%s" % (pack.name, "" if python2 else
                                     " (Python 2.7 checked by vermin: no python2.7 found)"
                                     if vermin_installed() else
                                     " (Python 2.7 check skipped: neither python2.7 nor vermin)"))
    log("done in %.1fs" % (time.time() - started))
    return made


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "cache")
    parser.add_argument("--only", action="append", choices=PARTS)
    args = parser.parse_args(argv)
    try:
        made = build(args.out.resolve(), args.cache.resolve(), args.only or list(PARTS))
    except BuildError as e:
        print("build: error: %s" % e, file=sys.stderr)
        return 1
    for path in made:
        print("%12d  %s" % (path.stat().st_size, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
