"""The wheelhouse `cdsw hosts add` installs from, when none is given and the agent runs from
a source checkout (a master set up with scripts/standalone.sh): the checkout's own agent wheel
and its dependencies for the remote's CPython, made the way the parcel build makes them
(scripts/packaging/wheelhouse.py; downloads cached in build/cache, so only the first build for
a Python version needs the network, on the master; the remote never does)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError

EPOCH = 315532800  # 1980-01-01, the oldest time a zip holds: the same sources, the same wheel


def checkout_root() -> Optional[Path]:
    """The source checkout this agent runs from, if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "scripts" / "packaging" / "wheelhouse.py").is_file() else None


def build_from_checkout(root: Path, pyver: str, echo: Callable[[str], None] = print) -> Path:
    """root/build/wheelhouse/pyX.Y: this checkout's agent and its dependencies for CPython
    pyver (manylinux2014 x86_64 wheels), rebuilt from the cache each time."""
    sys.path.insert(0, str(root / "scripts" / "packaging"))
    try:
        import wheelhouse  # type: ignore[import-not-found]
        from pkgcommon import BuildError  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    cache = root / "build" / "cache"
    echo("  building a wheelhouse for Python %s from %s (dependencies cached in %s)"
         % (pyver, root, cache))
    try:
        agent = wheelhouse.build_agent_wheel(root, cache, EPOCH)
        files = wheelhouse.collect(agent, [pyver], cache)[pyver]
    except BuildError as e:
        raise UserError("cannot build the wheelhouse for Python %s: %s; or pass --wheelhouse DIR"
                        % (pyver, e))
    dest = root / "build" / "wheelhouse" / ("py" + pyver)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
