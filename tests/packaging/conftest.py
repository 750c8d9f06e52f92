"""Fixtures of the packaging tests: one real build per session (network on the first run to
fetch wheels; build/cache makes later runs offline) and the schema it is generated from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from .helpers import ROOT

import build_packages  # noqa: E402  (scripts/packaging, put on sys.path by helpers)
import pkgcommon  # noqa: E402
from settings_schema import load_schema  # noqa: E402


@pytest.fixture(scope="session")
def schema() -> List[Dict[str, object]]:
    return load_schema()


@pytest.fixture(scope="session")
def build_number() -> Iterator[int]:
    """CDSW_BUILD_NUMBER pinned for the session (the commit count by default), so a commit
    landing mid-run cannot give the session's builds and its `version` different numbers."""
    value = pkgcommon.build_number()
    old = os.environ.get("CDSW_BUILD_NUMBER")
    os.environ["CDSW_BUILD_NUMBER"] = str(value)
    yield value
    if old is None:
        os.environ.pop("CDSW_BUILD_NUMBER", None)
    else:
        os.environ["CDSW_BUILD_NUMBER"] = old


@pytest.fixture(scope="session")
def version(build_number: int) -> str:
    return pkgcommon.version()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ.get("CDSW_BUILD_CACHE", str(ROOT / "build" / "cache")))


@pytest.fixture(scope="session")
def epoch() -> Iterator[int]:
    """SOURCE_DATE_EPOCH pinned for the session, so a commit landing mid-run (the last commit's
    time is the default) cannot make two builds of the session differ."""
    value = pkgcommon.source_date_epoch()
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(value)
    yield value
    if old is None:
        os.environ.pop("SOURCE_DATE_EPOCH", None)
    else:
        os.environ["SOURCE_DATE_EPOCH"] = old


@pytest.fixture(scope="session")
def agent_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the agent's sources, so edits made while the tests run (by a developer)
    cannot make the session's two builds differ; CI builds the same files either way."""
    snap = tmp_path_factory.mktemp("agent-src")
    # every top-level package setup.py may pick up (cdsw_agent, the engines' `cdsw` library, ...)
    for package in sorted(p for p in ROOT.iterdir()
                          if (p / "__init__.py").is_file() and p.name != "tests"):
        shutil.copytree(package, snap / package.name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, snap / name)
    return snap


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, epoch: int,
         agent_sources: Path, build_number: int) -> Path:
    """Everything ./build.sh makes, built once for the session into a temp dir."""
    out = tmp_path_factory.mktemp("dist")
    build_packages.build(out, cache_dir, list(build_packages.PARTS), agent_sources)
    return out


@pytest.fixture(scope="session")
def python2() -> Optional[str]:
    """How the Ambari scripts are checked for Python 2.7: a real python2.7 where this machine has
    one (pyenv; Debian bookworm has none), else None: vermin's check, which runs anywhere."""
    from validate_mpack import find_python2, vermin_installed

    found = find_python2()
    assert found or vermin_installed(), "neither python2.7 nor vermin: pip install -e '.[test]'"
    return found
