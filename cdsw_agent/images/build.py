"""`cdsw images build`: assemble an engine image from cached parts and import it into Docker.

Steps (each prints its elapsed time):
  1. rootfs      Debian root file system from debootstrap (cached tarball)      } in parallel
  2. wheelhouse  Python wheels for the image's CPython, from the host's pip     } when missing
  3. tag         sha256 over every input; an image with that tag already there is a cache hit
  4. assemble    unpack the rootfs; venv + offline pip install in a chroot (cached as a tarball
                 too, so a change to the engine runtime alone skips pip); runtime; user cdsw
  5. verify      kernelspecs and imports inside the chroot
  6. import      `docker import` of the tree with the image contract (USER, WORKDIR, ENV, LABEL)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .. import __version__
from ..errors import UserError
from .mirror import resolve_mirror
from .progress import Progress, run_logged
from .recipe import (ENGINE_UID, ENGINE_USER, GIT_GUARD, MANIFEST_PATH, RECIPE_VERSION, REPOSITORY,
                     USER_HOME, VENV, Recipe)
from .rootfs import CHROOT_ENV, Rootfs, cached_rootfs, check_host, ensure_rootfs, tar_create, tar_extract
from .runtime import PACKAGE_ROOT, install_runtime, runtime_digest
from .util import atomic_dir, cache_lock, scratch_parent, sha256_json
from .wheelhouse import Wheelhouse, ensure_wheelhouse

IMPORT_TIMEOUT = 1800  # seconds Docker may take to answer an import of a large tree
CHROOT_WHEELHOUSE = "/tmp/cdsw-wheelhouse"
DEBIAN_WHEELS = "/usr/share/python-wheels"
# Bump when install_python changes what it makes.
VENV_STEP_VERSION = "1"


@dataclass
class BuildResult:
    image: str  # repository:tag, e.g. cdsw/engine:py-0.1.0-0123456789ab
    tag: str
    alias: str  # the moving tag that now points at it, e.g. cdsw/engine:latest
    image_id: str
    content_sha256: str
    cache_hit: bool
    seconds: float
    timings: Dict[str, float] = field(default_factory=dict)


def content_inputs(recipe: Recipe, rootfs: Rootfs, wheelhouse: Wheelhouse,
                   runtime_sha256: Optional[str] = None) -> Dict[str, Any]:
    """Everything that decides the image's content; the tag is derived from its sha256."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": recipe.suite,
        "arch": recipe.arch,
        "flavour": recipe.flavour,
        "packages": rootfs.packages,
        "requirements": recipe.requirements,
        "wheels": wheelhouse.wheels,
        "runtime": {"version": __version__, "sha256": runtime_sha256 or runtime_digest()},
        "config": recipe.docker_changes(""),
    }


def image_tag(recipe: Recipe, content_sha256: str) -> str:
    return "%s-%s-%s" % (recipe.flavour, __version__, content_sha256[:12])


def alias_tag(recipe: Recipe) -> str:
    """Moving tag of the newest image of a flavour: latest, latest-r, latest-lab, latest-r-lab."""
    return "latest" + recipe.flavour[len("py"):]


def build_image(client: Any, recipe: Recipe, cache: Path, progress: Progress, mirror: str = "",
                mirror_setting: str = "", etc_apt: Path = Path("/etc/apt"),
                rebuild: bool = False, keep_work: bool = False,
                work_dir: Optional[Path] = None,
                proxies: Optional[Mapping[str, str]] = None,
                runtime_root: Path = PACKAGE_ROOT) -> BuildResult:
    """Builds (or finds) the engine image for recipe. `client` is a docker.DockerClient.

    work_dir: where trees are assembled (default: RAM when there is room, see scratch_parent).
    proxies: http_proxy/https_proxy/no_proxy for the downloads (debootstrap, pip), used where the
    environment does not already set them.
    runtime_root: the cdsw_agent source directory the engine runtime is taken from."""
    cache = cache.resolve()
    scratch = scratch_parent(cache, work_dir)
    started = time.monotonic()
    with cache_lock(cache, lambda: progress.say("waiting for another build using %s" % cache)):
        rootfs, wheelhouse = _inputs(recipe, cache, progress, mirror, mirror_setting, etc_apt, scratch,
                                     download_env(proxies or {}))
        content = sha256_json(content_inputs(recipe, rootfs, wheelhouse, runtime_digest(runtime_root)))
        tag = image_tag(recipe, content)
        ref = "%s:%s" % (REPOSITORY, tag)
        alias = "%s:%s" % (REPOSITORY, alias_tag(recipe))
        existing = _find_image(client, ref)
        if existing is not None and not rebuild:
            client.api.tag(existing.id, REPOSITORY, alias_tag(recipe))
            progress.say("cache hit: %s already exists (%s); nothing to build" % (ref, existing.short_id))
            return BuildResult(ref, tag, alias, existing.id, content, True,
                               time.monotonic() - started, dict(progress.timings))
        check_host()
        with atomic_dir(scratch, "image-") as work:
            root = work / "root"
            log = cache / "logs" / ("assemble-%s.log" % tag)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            with progress.step("assemble", "root file system + venv + user %s + runtime" % ENGINE_USER):
                assemble(root, recipe, rootfs, wheelhouse, log, progress, content, tag, cache,
                         runtime_root)
            with progress.step("verify", "kernels %s, imports" % ",".join(recipe.kernels)):
                verify(root, recipe, log)
            with progress.step("import", "docker import as %s" % ref):
                image_id = docker_import(client, root, ref, recipe.docker_changes(content))
                client.api.tag(image_id, REPOSITORY, alias_tag(recipe))
            if existing is not None and existing.id != image_id:
                _remove_if_untagged(client, existing.id, progress)
            if keep_work:
                kept = cache / "tmp" / ("kept-" + tag)
                shutil.rmtree(kept, ignore_errors=True)
                shutil.move(str(root), str(kept))
                progress.say("kept the image tree in %s" % kept)
        size = client.images.get(image_id).attrs.get("Size", 0)
        progress.say("built %s (%s, %.0f MB) in %.1fs" % (ref, image_id[7:19], size / 1e6,
                                                          time.monotonic() - started))
        return BuildResult(ref, tag, alias, image_id, content, False, time.monotonic() - started,
                           dict(progress.timings))


def _inputs(recipe: Recipe, cache: Path, progress: Progress, mirror: str, mirror_setting: str,
            etc_apt: Path, scratch: Path, env: Dict[str, str]) -> Tuple[Rootfs, Wheelhouse]:
    """The rootfs and wheelhouse, made in parallel when missing (both mostly wait on the network)."""
    mirror_url = ""
    if cached_rootfs(recipe, cache) is None:
        check_host()
        mirror_url = resolve_mirror(recipe.suite, mirror, mirror_setting, etc_apt)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cdsw-image") as pool:
        rootfs_f = pool.submit(ensure_rootfs, recipe, cache, mirror_url, progress, scratch, env)
        wheels_f = pool.submit(ensure_wheelhouse, recipe, cache, progress, env)
        # wait for both so no step is left running behind a failure of the other
        errors = [f.exception() for f in (rootfs_f, wheels_f)]
    for e in errors:
        if e is not None:
            raise e
    return rootfs_f.result(), wheels_f.result()


def download_env(proxies: Mapping[str, str], base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of the download steps: this process's, plus the configured proxies under
    both spellings (debootstrap's wget reads lower case, pip either) unless already set."""
    env = dict(os.environ if base is None else base)
    for name, value in proxies.items():
        if value and not (env.get(name.lower()) or env.get(name.upper())):
            env[name.lower()] = env[name.upper()] = value
    return env


def _remove_if_untagged(client: Any, image_id: str, progress: Progress) -> None:
    """Drops the image a --rebuild replaced once no tag names it; one a container still uses stays."""
    import docker.errors

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
            progress.say("removed the replaced image %s" % image_id[7:19])
    except docker.errors.APIError as e:  # in use, or already gone
        progress.say("kept the replaced image %s: %s" % (image_id[7:19], e.explanation or e))


def _find_image(client: Any, ref: str) -> Any:
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def chroot(root: Path, *args: str, uid: Optional[int] = None) -> List[str]:
    """Command line running args inside root, as uid (and the same gid) when given."""
    user = ["--userspec=%d:%d" % (uid, uid)] if uid is not None else []
    return ["chroot"] + user + [str(root)] + list(args)


def assemble(root: Path, recipe: Recipe, rootfs: Rootfs, wheelhouse: Wheelhouse, log: Path,
             progress: Progress, content: str, tag: str, cache: Optional[Path] = None,
             runtime_root: Path = PACKAGE_ROOT) -> None:
    """Turns the cached root file system into the engine's tree under root."""
    tar_extract(rootfs.tarball, root)
    freeze = ensure_venv(root, recipe, rootfs, wheelhouse, log, progress, cache)
    site_rel = "%s/lib/python%s/site-packages" % (VENV, recipe.python_version)
    install_runtime(root / site_rel.lstrip("/"), runtime_root)
    install_git_guard(root)
    if recipe.with_scala:
        from ..engine.scala_repl import write_kernelspec

        write_kernelspec(str(root / VENV.lstrip("/") / "share/jupyter/kernels"), VENV + "/bin/python")
    run_logged(chroot(root, VENV + "/bin/python", "-m", "compileall", "-q", site_rel + "/cdsw_agent"),
               log, progress, "compileall", env=CHROOT_ENV, what="compiling the engine runtime")
    run_logged(chroot(root, "groupadd", "--gid", str(ENGINE_UID), ENGINE_USER), log, progress,
               "groupadd", env=CHROOT_ENV)
    run_logged(chroot(root, "useradd", "--uid", str(ENGINE_UID), "--gid", str(ENGINE_UID),
                      "--create-home", "--home-dir", USER_HOME, "--shell", "/bin/bash",
                      ENGINE_USER), log, progress, "useradd", env=CHROOT_ENV)
    dropped = drop_setuid_bits(root)
    progress.say("  dropped the setuid/setgid bit of %d programs" % len(dropped))
    manifest = {
        "tag": tag, "content_sha256": content, "recipe_version": RECIPE_VERSION,
        "runtime_version": __version__, "suite": recipe.suite, "arch": recipe.arch,
        "python": recipe.python_version, "kernels": recipe.kernels, "editors": recipe.editors,
        "debian_packages": rootfs.packages, "python_packages": freeze,
    }
    path = root / MANIFEST_PATH.lstrip("/")
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    path.chmod(0o644)


def install_git_guard(root: Path) -> None:
    """`git` as the engine runs it: through the guard, with -I so that nothing in the project
    (the working directory) or the environment is imported first."""
    path = root / GIT_GUARD.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n# git through cdsw_agent/engine/git_guard.py\n"
                    'exec %s/bin/python -I -m cdsw_agent.engine.git_guard "$@"\n' % VENV)
    path.chmod(0o755)


def drop_setuid_bits(root: Path) -> List[str]:
    """Clears the setuid and setgid bits of every file in the tree (su, passwd, mount...): no
    program in an engine can gain privileges, whether or not Docker applies no-new-privileges
    (swarm services of Docker before 27 cannot ask for it). Returns the paths changed."""
    changed = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                changed.append("/" + os.path.relpath(path, root))
    return changed


def venv_key(recipe: Recipe, rootfs: Rootfs, wheelhouse: Wheelhouse) -> str:
    return sha256_json({"step": VENV_STEP_VERSION, "rootfs": rootfs.key, "wheels": wheelhouse.wheels,
                        "requirements": recipe.requirements})


def ensure_venv(root: Path, recipe: Recipe, rootfs: Rootfs, wheelhouse: Wheelhouse, log: Path,
                progress: Progress, cache: Optional[Path]) -> List[str]:
    """Puts the third-party Python environment into root, from the cache when the same root file
    system and wheels made it before (a change to the engine runtime alone then skips pip).
    Returns `pip freeze` of it."""
    key = venv_key(recipe, rootfs, wheelhouse)
    tarball = cache / "venv" / (key + ".tar") if cache else None
    meta = cache / "venv" / (key + ".json") if cache else None
    if tarball is not None and meta is not None and tarball.is_file() and meta.is_file():
        tar_extract(tarball, root)
        progress.say("  venv: cache hit %s" % key[:12])
        return list(json.loads(meta.read_text())["freeze"])
    freeze = install_python(root, recipe, wheelhouse, log, progress)
    if tarball is not None and meta is not None:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tmp = tarball.parent / (".%s.tar.%d" % (key, os.getpid()))
        try:
            tar_create(root, tmp, members=[VENV.lstrip("/")])
            os.replace(tmp, tarball)
        finally:
            tmp.unlink(missing_ok=True)
        meta.write_text(json.dumps({"freeze": freeze, "wheelhouse": wheelhouse.key}, indent=1))
    return freeze


def install_python(root: Path, recipe: Recipe, wheelhouse: Wheelhouse, log: Path,
                   progress: Progress) -> List[str]:
    """The venv at VENV with every wheel installed offline, test suites dropped, bytecode made."""
    env = dict(CHROOT_ENV, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    # --system-site-packages keeps `pip install --user` working for the engine's user, as in CDSW.
    # No ensurepip: pip comes from Debian's own wheel (python3-venv ships it) in the install below.
    run_logged(chroot(root, "/usr/bin/python3", "-m", "venv", "--without-pip",
                      "--system-site-packages", VENV),
               log, progress, "venv", env=env, what="creating %s in the image" % VENV)
    pip_wheel = _debian_pip_wheel(root)
    wh = root / CHROOT_WHEELHOUSE.lstrip("/")
    shutil.copytree(wheelhouse.path, wh)
    (wh / "requirements.txt").write_text("\n".join(recipe.requirements + ["pip"]) + "\n")
    run_logged(chroot(root, VENV + "/bin/python", pip_wheel + "/pip", "install", "--no-index",
                      "--no-compile", "--find-links", CHROOT_WHEELHOUSE,
                      "--find-links", DEBIAN_WHEELS, "--requirement",
                      CHROOT_WHEELHOUSE + "/requirements.txt"),
               log, progress, "pip install", env=env,
               what="offline pip install of %d wheels in the image" % len(wheelhouse.wheels))
    shutil.rmtree(wh)
    freeze = subprocess.run(chroot(root, VENV + "/bin/python", "-m", "pip", "freeze", "--all"),
                            env=env, check=True, capture_output=True, text=True).stdout.split()
    site_rel = "%s/lib/python%s/site-packages" % (VENV, recipe.python_version)
    removed = prune_test_suites(root / site_rel.lstrip("/"))
    progress.say("  dropped %d test suites of third-party packages" % removed)
    # bytecode now, on every core: the engine's user cannot write __pycache__ in the venv later
    run_logged(chroot(root, VENV + "/bin/python", "-m", "compileall", "-q", "-j", "0", site_rel),
               log, progress, "compileall", env=env, what="compiling the image's Python bytecode")
    return freeze


def _debian_pip_wheel(root: Path) -> str:
    """Path (inside root) of the pip wheel Debian's python3-venv ships."""
    found = sorted((root / DEBIAN_WHEELS.lstrip("/")).glob("pip-*.whl"))
    if not found:
        raise UserError("the root file system has no pip wheel in %s; is python3-venv in the recipe?"
                        % DEBIAN_WHEELS)
    return DEBIAN_WHEELS + "/" + found[-1].name


def prune_test_suites(site_packages: Path) -> int:
    """Removes the `tests` packages third-party distributions ship (pandas, numpy, matplotlib...):
    a quarter of the files, never imported by the libraries themselves."""
    removed = 0
    for dist in sorted(site_packages.iterdir()):
        if not dist.is_dir() or dist.name.endswith((".dist-info", ".data")) or dist.name == "cdsw_agent":
            continue
        for tests in sorted(dist.rglob("tests")):
            if tests.is_dir() and not tests.is_symlink() and tests.exists():
                shutil.rmtree(tests)
                removed += 1
    return removed


def verify(root: Path, recipe: Recipe, log: Path) -> None:
    """Fails the build when the tree would not start a session: kernels and imports, checked as
    the engine's user (so permissions are tested too) with a throw-away home directory."""
    home = root / "tmp/cdsw-verify-home"
    home.mkdir(mode=0o700)
    os.chown(home, ENGINE_UID, ENGINE_UID)
    env = dict(CHROOT_ENV, HOME="/tmp/cdsw-verify-home", USER=ENGINE_USER)
    try:
        out = subprocess.run(chroot(root, VENV + "/bin/jupyter", "kernelspec", "list", "--json",
                                    uid=ENGINE_UID),
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise UserError("`jupyter kernelspec list` fails inside the image: %s; see %s"
                            % ((out.stderr.strip().splitlines() or ["?"])[-1], log))
        found = set(json.loads(out.stdout).get("kernelspecs", {}))
        missing = [k for k in recipe.kernels if k not in found]
        if missing:
            raise UserError("the image lacks kernel(s) %s (found %s)"
                            % (", ".join(missing), ", ".join(sorted(found))))
        check = subprocess.run(
            chroot(root, VENV + "/bin/python", "-c", "import " + ", ".join(recipe.python_imports),
                   uid=ENGINE_UID),
            env=env, capture_output=True, text=True)
        if check.returncode != 0:
            raise UserError("the image's Python cannot import its packages: %s"
                            % (check.stderr.strip().splitlines() or ["?"])[-1])
        git = subprocess.run(chroot(root, "/bin/sh", "-c", '[ "$(command -v git)" = %s ] && cd /tmp '
                                    "&& git --version" % GIT_GUARD,
                                    uid=ENGINE_UID), env=env, capture_output=True, text=True)
        if git.returncode != 0 or not git.stdout.startswith("git version"):
            raise UserError("git in the image does not run through its guard: %s"
                            % (git.stderr.strip().splitlines() or ["?"])[-1])
        if recipe.with_r:
            r = subprocess.run(chroot(root, "Rscript", "-e", "library(IRkernel)", uid=ENGINE_UID),
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise UserError("R in the image cannot load IRkernel: %s"
                                % (r.stderr.strip().splitlines() or ["?"])[-1])
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _long_timeout(client: Any, seconds: int) -> Iterator[None]:
    old = client.api.timeout
    client.api.timeout = seconds
    try:
        yield
    finally:
        client.api.timeout = old


def docker_import(client: Any, root: Path, ref: str, changes: List[str]) -> str:
    """Streams the tree under root into `docker import` and returns the new image's id."""
    import docker.errors

    repository, tag = ref.rsplit(":", 1)
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
         "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-C", str(root), "-cf", "-", "."],
        stdout=subprocess.PIPE)
    assert tar.stdout is not None

    def chunks() -> Iterator[bytes]:
        for chunk in iter(lambda: tar.stdout.read(1024 * 1024), b""):  # type: ignore[union-attr]
            yield chunk

    try:
        with _long_timeout(client, IMPORT_TIMEOUT):
            answer = client.api.import_image_from_stream(chunks(), repository=repository, tag=tag,
                                                         changes=changes)
    except docker.errors.APIError as e:
        raise UserError("docker import of %s failed: %s" % (ref, e.explanation or e))
    finally:
        tar.stdout.close()
        rc = tar.wait()
    if rc != 0:
        raise UserError("tar of the image tree failed (exit %d)" % rc)
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        raise UserError("docker import of %s reported %s but the image is missing" % (ref, str(answer)[:200]))
