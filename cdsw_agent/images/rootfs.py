"""The Debian root file system of an engine image, made with debootstrap and cached as a tarball.

The tarball is keyed by what decides its content (suite, architecture, package list, this step's
version), so a rebuild with an unchanged recipe never runs debootstrap again; downloaded .deb
files are cached too, so a changed package list only fetches what is new.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from ..errors import UserError
from .progress import Progress, run_logged
from .recipe import Recipe
from .util import atomic_dir, sha256_json

# Bump when the way the root file system is made or trimmed changes.
ROOTFS_STEP_VERSION = "1"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class Rootfs:
    key: str
    tarball: Path
    packages: List[str]  # "name=version" of every installed Debian package
    python_version: str  # "3.11"


def rootfs_key(recipe: Recipe) -> str:
    return sha256_json({"step": ROOTFS_STEP_VERSION, "suite": recipe.suite, "arch": recipe.arch,
                        "variant": "minbase", "packages": recipe.packages})


def check_host() -> None:
    """What building a root file system needs from the host; one actionable line if missing."""
    if os.geteuid() != 0:
        raise UserError("building an engine image needs root (debootstrap and chroot); run it as root")
    if not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed; install it with: apt-get install debootstrap")
    if not shutil.which("tar"):
        raise UserError("tar is not installed; install it with: apt-get install tar")


def cached_rootfs(recipe: Recipe, cache: Path) -> Optional[Rootfs]:
    key = rootfs_key(recipe)
    tarball = cache / "rootfs" / (key + ".tar")
    manifest = cache / "rootfs" / (key + ".json")
    if tarball.is_file() and manifest.is_file():
        meta = json.loads(manifest.read_text())
        return Rootfs(key, tarball, meta["packages"], meta["python_version"])
    return None


def ensure_rootfs(recipe: Recipe, cache: Path, mirror: str, progress: Progress,
                  scratch: Optional[Path] = None, env: Optional[Mapping[str, str]] = None) -> Rootfs:
    """The cached root file system for recipe, made with debootstrap when missing."""
    found = cached_rootfs(recipe, cache)
    if found:
        progress.say("rootfs: cache hit %s (%d packages)" % (found.tarball.name, len(found.packages)))
        return found
    check_host()
    if not KEYRING.is_file():
        raise UserError("Debian's archive keyring %s is missing, so debootstrap cannot verify the "
                        "mirror; install it with: apt-get install debian-archive-keyring" % KEYRING)
    key = rootfs_key(recipe)
    out_dir = cache / "rootfs"
    out_dir.mkdir(parents=True, exist_ok=True)
    debs = cache / "debs" / recipe.suite / recipe.arch
    debs.mkdir(parents=True, exist_ok=True)
    log = cache / "logs" / ("debootstrap-%s.log" % key[:12])
    with atomic_dir(scratch or cache / "tmp", "rootfs-") as work:
        root = work / "root"
        cmd = ["debootstrap", "--variant=minbase", "--arch=" + recipe.arch, "--components=main",
               "--cache-dir=" + str(debs.resolve()), "--include=" + ",".join(recipe.packages),
               "--keyring=" + str(KEYRING), recipe.suite, str(root), mirror]
        with progress.step("rootfs", "debootstrap %s %s (%d packages asked) from %s"
                           % (recipe.suite, recipe.arch, len(recipe.packages), mirror)):
            run_logged(cmd, log, progress, "debootstrap", env=env,
                       what="debootstrap of %s from %s" % (recipe.suite, mirror))
            python = _python_version(root)
            if python != recipe.python_version:
                raise UserError("%s ships Python %s but the recipe expects %s; update SUITE_PYTHON"
                                % (recipe.suite, python, recipe.python_version))
            packages = _installed_packages(root)
            trim(root)
            tmp_tar = out_dir / (".%s.tar.%d" % (key, os.getpid()))
            try:
                tar_create(root, tmp_tar)
                os.replace(tmp_tar, out_dir / (key + ".tar"))
            finally:
                tmp_tar.unlink(missing_ok=True)
        (out_dir / (key + ".json")).write_text(json.dumps(
            {"suite": recipe.suite, "arch": recipe.arch, "mirror": mirror, "packages": packages,
             "python_version": python}, indent=1))
    return Rootfs(key, out_dir / (key + ".tar"), packages, python)


def _python_version(root: Path) -> str:
    target = os.readlink(root / "usr/bin/python3") if (root / "usr/bin/python3").is_symlink() else ""
    name = os.path.basename(target)
    if not name.startswith("python3."):
        raise UserError("the root file system has no /usr/bin/python3 link; is python3 in the recipe?")
    return name[len("python"):]


def _installed_packages(root: Path) -> List[str]:
    out = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}=${Version}\\n"],
                         env=CHROOT_ENV, check=True, capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if line)


def trim(root: Path) -> None:
    """Drops what an engine never reads: downloaded .debs, apt lists, man pages, translations and
    documentation (the copyright files stay), and the host's resolv.conf and hostname."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "usr/share/man/*", "usr/share/info/*", "var/log/*.log", "var/log/apt/*"):
        for p in root.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                if p.name != "partial":
                    shutil.rmtree(p)
            elif p.name != "lock":
                p.unlink()
    locale = root / "usr/share/locale"
    if locale.is_dir():
        for p in locale.iterdir():
            if p.name != "locale.alias":
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for dirpath, dirnames, filenames in os.walk(doc, topdown=False):
            for f in filenames:
                if f != "copyright":
                    os.unlink(os.path.join(dirpath, f))
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    os.unlink(full)
                elif not os.listdir(full):
                    os.rmdir(full)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").write_text("localhost\n")


def tar_create(root: Path, tarball: Path, members: Sequence[str] = (".",)) -> None:
    """Archives members (paths relative to root) with numeric owners and file capabilities."""
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
                    "-C", str(root), "-cf", str(tarball)] + list(members), check=True)


def tar_extract(tarball: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
                    "-xpf", str(tarball), "-C", str(root)], check=True)
