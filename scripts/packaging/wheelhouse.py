"""The agent payload's wheelhouse: the cdsw_agent wheel plus every dependency, per CPython.

Dependencies are fetched as binary wheels for the target, not for this machine:
`pip download --only-binary=:all: --platform manylinux2014_x86_64 --python-version X.Y`. The
manylinux2014 tag means glibc >= 2.17, so one download per CPython version serves RHEL 8/9 and
Ubuntu 22.04 alike; what differs per distribution is which CPython versions its parcel carries.
Downloads are cached under build/cache keyed by (requirements, python, platform), so a second
build needs no network and gives the same files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from pkgcommon import BuildError

PLATFORM = "manylinux2014_x86_64"
AGENT_SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")


def _pip_env(epoch: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"SOURCE_DATE_EPOCH": str(epoch), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_INPUT": "1", "PYTHONHASHSEED": "0"})
    return env


def _packages(root: Path) -> List[str]:
    """The top-level Python packages setup.py can ship: cdsw_agent, and any other (such as the
    engines' `cdsw` library); tests/ is never one."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests")


def _source_files(root: Path) -> List[str]:
    """The files of the agent's packages as git sees them (tracked plus new, ignored ones left
    out)."""
    packages = _packages(root)
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard",
                              "--", *packages, *AGENT_SOURCES],
                             capture_output=True, text=True, check=True).stdout
        names = [n for n in out.splitlines() if n and (root / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(root).as_posix() for package in packages
                 for p in (root / package).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
        names += [n for n in AGENT_SOURCES if (root / n).is_file()]
    if "setup.py" not in names and "pyproject.toml" not in names:
        raise BuildError("no setup.py or pyproject.toml found in %s" % root)
    return sorted(set(names))


def build_env(cache: Path, python: str = sys.executable) -> str:
    """A cached virtualenv holding setuptools and wheel, so building the agent's wheel needs no
    network after the first build (pip's build isolation would fetch them every time)."""
    env_dir = cache / "buildenv"
    py = env_dir / "bin" / "python"
    if (env_dir / ".complete").is_file() and py.exists():
        return str(py)
    shutil.rmtree(env_dir, ignore_errors=True)
    steps = [[python, "-m", "venv", str(env_dir)],
             [str(py), "-m", "pip", "install", "--quiet", "setuptools>=61", "wheel"]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env(0))
        if proc.returncode != 0:
            raise BuildError("preparing the wheel build environment failed: %s"
                             % _last_error(proc))
    (env_dir / ".complete").write_text("ok\n")
    return str(py)


def build_agent_wheel(root: Path, cache: Path, epoch: int, python: str = sys.executable,
                      ver: str = "") -> Path:
    """Build cdsw_agent's wheel from a clean copy of its sources (cached by their content);
    ver, when given, is stamped into the copy's cdsw_agent/__init__.py (the build number)."""
    names = _source_files(root)
    digest = hashlib.sha256(("%d %s" % (epoch, ver)).encode())
    for name in names:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    out_dir = cache / "agent" / digest.hexdigest()[:20]
    wheels = sorted(out_dir.glob("cdsw_agent-*.whl"))
    if wheels:
        return wheels[0]
    with tempfile.TemporaryDirectory(prefix="cdsw-agent-src-") as tmp:
        src = Path(tmp) / "src"
        for name in names:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, src / name)
        if ver:
            init = src / "cdsw_agent" / "__init__.py"
            text, count = re.subn(r'^__version__ = "[^"]+"', '__version__ = "%s"' % ver,
                                  init.read_text(encoding="utf-8"), count=1, flags=re.M)
            if count != 1:
                raise BuildError("cdsw_agent/__init__.py: __version__ not found")
            init.write_text(text, encoding="utf-8")
        built = Path(tmp) / "wheel"
        builder = build_env(cache, python)
        proc = subprocess.run([builder, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--no-build-isolation", "--wheel-dir", str(built), str(src)],
                              capture_output=True, text=True, env=_pip_env(epoch), cwd=tmp)
        if proc.returncode != 0:
            raise BuildError("building the cdsw_agent wheel failed: %s" % _last_error(proc))
        found = sorted(built.glob("cdsw_agent-*.whl"))
        if len(found) != 1:
            raise BuildError("pip wheel made %d cdsw_agent wheels, expected 1" % len(found))
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_copy = out_dir / (".tmp-" + found[0].name)
        shutil.copyfile(found[0], tmp_copy)
        os.replace(tmp_copy, out_dir / found[0].name)
    return out_dir / found[0].name


def _last_error(proc: "subprocess.CompletedProcess[str]") -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
             if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["exit status %d" % proc.returncode])[-1]


def requirements_of(wheel: Path) -> List[str]:
    """The wheel's Requires-Dist lines, without extras-only ones."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8")
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if "extra ==" not in req:
                reqs.append(req)
    return sorted(reqs)


def download_deps(reqs: Sequence[str], pyver: str, cache: Path,
                  python: str = sys.executable) -> List[Path]:
    """Binary wheels of reqs (and their dependencies) for CPython pyver on manylinux2014."""
    key = hashlib.sha256(("\n".join(reqs) + "\n" + pyver + "\n" + PLATFORM).encode())
    out_dir = cache / "deps" / ("py%s-%s" % (pyver, key.hexdigest()[:16]))
    if (out_dir / ".complete").is_file():
        return sorted(out_dir.glob("*.whl"))
    tmp = Path(tempfile.mkdtemp(prefix="cdsw-deps-", dir=str(cache)))
    try:
        req_file = tmp / "requirements.txt"
        req_file.write_text("\n".join(reqs) + "\n", encoding="utf-8")
        cmd = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--platform", PLATFORM, "--python-version", pyver, "--implementation", "cp",
               "--dest", str(tmp / "wheels"), "--requirement", str(req_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env(0))
        if proc.returncode != 0:
            raise BuildError("downloading wheels for Python %s (%s) failed: %s"
                             % (pyver, PLATFORM, _last_error(proc)))
        wheels = sorted((tmp / "wheels").iterdir())
        bad = [w.name for w in wheels if w.suffix != ".whl"]
        if bad:
            raise BuildError("pip download for Python %s returned non-wheels: %s"
                             % (pyver, ", ".join(bad)))
        (tmp / "wheels" / ".complete").write_text(pyver + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "wheels", out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out_dir.glob("*.whl"))


def collect(agent_wheel: Path, pyvers: Iterable[str], cache: Path,
            python: str = sys.executable) -> Dict[str, Dict[str, Path]]:
    """{python version: {wheel file name: path}} for every requested CPython version."""
    reqs = requirements_of(agent_wheel)
    versions = sorted(set(pyvers))
    cache.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda v: download_deps(reqs, v, cache, python), versions))
    out: Dict[str, Dict[str, Path]] = {}
    for pyver, wheels in zip(versions, results):
        files = {w.name: w for w in wheels}
        files[agent_wheel.name] = agent_wheel
        out[pyver] = files
    return out


def union(by_python: Dict[str, Dict[str, Path]], pyvers: Iterable[str]) -> Dict[str, Path]:
    """One wheelhouse for several CPython versions: pure and abi3 wheels appear once."""
    merged: Dict[str, Path] = {}
    for pyver in sorted(set(pyvers)):
        merged.update(by_python[pyver])
    return dict(sorted(merged.items()))
