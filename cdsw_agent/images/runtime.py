"""The engine runtime: the part of cdsw_agent that runs inside engine containers.

Only `cdsw_agent/__init__.py` and the `cdsw_agent.engine` package go into the image (their code
uses the standard library and what the image's wheelhouse holds), so a change anywhere else in
cdsw_agent does not force a new engine image, and a change here always does.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import List, Tuple

from .. import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # .../cdsw_agent
# "../cdsw": the `cdsw` library experiment scripts import, a top-level package next to
# cdsw_agent (in the image too: site-packages/cdsw)
RUNTIME_PATHS: Tuple[str, ...] = ("__init__.py", "engine", "../cdsw")


def runtime_files(package_root: Path = PACKAGE_ROOT) -> List[Path]:
    """Source files of the runtime, relative to the cdsw_agent package directory."""
    files: List[Path] = []
    for rel in RUNTIME_PATHS:
        p = package_root / rel
        if p.is_file():
            files.append(Path(rel))
        elif p.is_dir():
            files += sorted(f.relative_to(package_root) for f in p.rglob("*.py")
                            if "__pycache__" not in f.parts)
    if not files:
        raise FileNotFoundError("no engine runtime under %s" % package_root)
    return files


def runtime_digest(package_root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the runtime's file names and contents, and the package version."""
    h = hashlib.sha256(("version=%s\n" % __version__).encode())
    for rel in runtime_files(package_root):
        h.update(("%s\n" % rel.as_posix()).encode())
        h.update(hashlib.sha256((package_root / rel).read_bytes()).digest())
    return h.hexdigest()


def install_runtime(site_packages: Path, package_root: Path = PACKAGE_ROOT) -> List[Path]:
    """Copies the runtime into an image's site-packages as the `cdsw_agent` package."""
    dest_root = site_packages / "cdsw_agent"
    written = []
    for rel in runtime_files(package_root):
        dest = dest_root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_root / rel, dest)
        dest.chmod(0o644)
        written.append(dest)
    for d in {dest_root} | {p for p in dest_root.rglob("*") if p.is_dir()} \
            | {w.parent for w in written}:
        d.chmod(0o755)
    return written
