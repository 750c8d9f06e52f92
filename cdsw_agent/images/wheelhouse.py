"""The wheelhouse: every Python wheel an engine image needs, downloaded on the host for the image's
Python and architecture, then installed offline inside the image (pip inside a fresh chroot
cannot verify TLS against the index here, and should not need the network anyway).

Only binary wheels are accepted (`--only-binary=:all:`), which is what lets the host's pip, of any
Python version, fetch for the image's CPython. The directory is keyed by the requirements, the
target Python and the architecture; a cached one is reused without touching the network.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from ..errors import UserError
from .progress import Progress, run_logged
from .recipe import Recipe
from .util import atomic_dir, remove_tree, sha256_file, sha256_json

WHEELHOUSE_STEP_VERSION = "1"
# manylinux_2_17 .. _2_36: glibc 2.36 is bookworm's; manylinux2014 expands to 2010 and 1 in pip.
MANYLINUX_MINORS = range(17, 37)
MANIFEST = "wheelhouse.json"


@dataclass(frozen=True)
class Wheelhouse:
    key: str
    path: Path
    requirements: List[str]
    wheels: Dict[str, str]  # file name -> sha256


def platform_tags(arch: str) -> List[str]:
    tags = ["manylinux_2_%d_%s" % (minor, arch) for minor in MANYLINUX_MINORS]
    return tags + ["manylinux2014_" + arch]


def wheelhouse_key(recipe: Recipe) -> str:
    return sha256_json({"step": WHEELHOUSE_STEP_VERSION, "python": recipe.python_version,
                        "arch": recipe.wheel_arch, "requirements": recipe.requirements})


def pip_download_command(recipe: Recipe, dest: Path, requirements_file: Path) -> List[str]:
    short = recipe.python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", recipe.python_version,
           "--implementation", "cp", "--abi", "cp" + short, "--dest", str(dest),
           "--requirement", str(requirements_file)]
    for tag in platform_tags(recipe.wheel_arch):
        cmd += ["--platform", tag]
    return cmd


def cached_wheelhouse(recipe: Recipe, cache: Path) -> Optional[Wheelhouse]:
    key = wheelhouse_key(recipe)
    path = cache / "wheelhouse" / key
    manifest = path / MANIFEST
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        return Wheelhouse(key, path, meta["requirements"], meta["wheels"])
    return None


def ensure_wheelhouse(recipe: Recipe, cache: Path, progress: Progress,
                      env: Optional[Mapping[str, str]] = None) -> Wheelhouse:
    """The cached wheelhouse for recipe, downloaded with the host's pip when missing."""
    found = cached_wheelhouse(recipe, cache)
    if found:
        progress.say("wheelhouse: cache hit %s (%d wheels)" % (found.key[:12], len(found.wheels)))
        return found
    key = wheelhouse_key(recipe)
    final = cache / "wheelhouse" / key
    final.parent.mkdir(parents=True, exist_ok=True)
    log = cache / "logs" / ("wheelhouse-%s.log" % key[:12])
    with atomic_dir(cache / "tmp", "wheelhouse-") as work:
        dest = work / "wheels"
        dest.mkdir()
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(recipe.requirements) + "\n")
        with progress.step("wheelhouse", "pip download %d requirements for CPython %s %s"
                           % (len(recipe.requirements), recipe.python_version, recipe.wheel_arch)):
            run_logged(pip_download_command(recipe, dest, reqs), log, progress, "pip download", env=env,
                       what="pip download of the engine's Python packages (binary wheels only)")
            wheels = {p.name: sha256_file(p) for p in sorted(dest.iterdir())}
            not_wheels = [n for n in wheels if not n.endswith(".whl")]
            if not_wheels:
                raise UserError("pip downloaded non-wheel files %s; only binary wheels can be "
                                "installed offline" % ", ".join(not_wheels))
            (dest / MANIFEST).write_text(json.dumps(
                {"requirements": recipe.requirements, "python": recipe.python_version,
                 "arch": recipe.wheel_arch, "wheels": wheels}, indent=1, sort_keys=True))
            if final.exists():  # a stale directory without a manifest
                remove_tree(final)
            os.replace(dest, final)
        progress.say("wheelhouse: %d wheels, %.1f MB" % (
            len(wheels), sum((final / n).stat().st_size for n in wheels) / 1e6))
    return Wheelhouse(key, final, recipe.requirements, wheels)
