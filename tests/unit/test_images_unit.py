"""Engine images without Docker or the network: mirrors, recipe and content tags, caches, the
engine entrypoint, save/load checksums and registry push/pull against a mocked Docker client."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock

import docker.errors
import pytest
from click.testing import CliRunner

from cdsw_agent import __version__
from cdsw_agent.engine.entrypoint import EntrypointError, jupyter_command
from cdsw_agent.errors import UserError
from cdsw_agent.images import build as build_mod
from cdsw_agent.images import rootfs as rootfs_mod
from cdsw_agent.images import transfer
from cdsw_agent.images.build import (alias_tag, build_image, content_inputs, image_tag,
                                     prune_test_suites)
from cdsw_agent.images.catalog import human_age, human_size, list_engine_images
from cdsw_agent.images.mirror import apt_sources, find_debian_mirror, resolve_mirror
from cdsw_agent.images.progress import Progress, run_logged
from cdsw_agent.images.recipe import ENGINE_UID, Recipe
from cdsw_agent.images.rootfs import Rootfs, rootfs_key, trim
from cdsw_agent.images.runtime import install_runtime, runtime_digest, runtime_files
from cdsw_agent.images.util import atomic_dir, scratch_parent, sha256_json
from cdsw_agent.images.wheelhouse import (MANIFEST, Wheelhouse, cached_wheelhouse,
                                          pip_download_command, wheelhouse_key)

RECIPE = Recipe(arch="amd64")


# ----------------------------------------------------------------------------- mirror


def _apt(tmp_path: Path, files: Dict[str, str]) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


def test_mirror_from_deb822_sources_skips_security_and_disabled(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list.d/debian.sources": (
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://mirror.invalid/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")})
    assert find_debian_mirror("bookworm", etc) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources_with_options(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list": (
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian bookworm main contrib\n")})
    assert find_debian_mirror("bookworm", etc) == "http://one.invalid/debian"


def test_mirror_of_another_debian_release_serves_the_suite(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list.d/x.list": "deb http://other.invalid/debian trixie main\n"
                                                   "deb https://vendor.invalid/apt cloud-sdk main\n"})
    assert find_debian_mirror("bookworm", etc) == "http://other.invalid/debian"


def test_no_debian_source_is_a_user_error_naming_the_option(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list.d/x.list": (
        "deb https://vendor.invalid/apt stable main\n"
        "deb https://docker.invalid/linux/debian bookworm stable\n")})
    assert find_debian_mirror("bookworm", etc) is None
    with pytest.raises(UserError, match="--mirror"):
        resolve_mirror("bookworm", etc_apt=etc)


def test_mirror_option_wins_over_setting_and_apt(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list": "deb http://apt.invalid/debian bookworm main\n"})
    assert resolve_mirror("bookworm", "http://opt.invalid/debian/", "http://set.invalid/d", etc) \
        == "http://opt.invalid/debian"
    assert resolve_mirror("bookworm", "", "http://set.invalid/d", etc) == "http://set.invalid/d"
    assert resolve_mirror("bookworm", "", "", etc) == "http://apt.invalid/debian"
    with pytest.raises(UserError, match="not a URL"):
        resolve_mirror("bookworm", "mirror.invalid", "", etc)


def test_apt_sources_reads_both_formats(tmp_path: Path) -> None:
    etc = _apt(tmp_path, {"sources.list": "deb http://a.invalid/debian bookworm main\n",
                          "sources.list.d/b.sources": "Types: deb\nURIs: http://b.invalid/debian\n"
                                                      "Suites: bookworm\nComponents: main\n"})
    assert [s.uri for s in apt_sources(etc)] == ["http://a.invalid/debian", "http://b.invalid/debian"]


# ----------------------------------------------------------------------------- recipe and tags


def test_recipe_contract_labels_and_changes() -> None:
    r = Recipe(arch="amd64", with_r=True)
    assert "r-base-core" in r.packages and "r-cran-irkernel" in r.packages
    assert "r-base-core" not in RECIPE.packages and "tini" in RECIPE.packages
    assert r.kernels == ["python3", "ir"] and RECIPE.kernels == ["python3"]
    labels = r.labels("c" * 64)
    assert labels["com.cdsw.engine.kernels"] == "python3,ir"
    assert labels["com.cdsw.engine.version"] == __version__
    assert labels["com.cdsw.engine"] == "true"
    changes = r.docker_changes("c" * 64)
    assert "USER %d:%d" % (ENGINE_UID, ENGINE_UID) in changes and "WORKDIR /home/cdsw" in changes
    assert any(c.startswith("ENV PATH=/opt/cdsw/venv/bin:") for c in changes)
    assert any('com.cdsw.engine.editors="jupyter-server,terminal"' in c for c in changes)


def test_flavours_and_alias_tags() -> None:
    assert (RECIPE.flavour, alias_tag(RECIPE)) == ("py", "latest")
    assert alias_tag(Recipe(arch="amd64", with_r=True)) == "latest-r"
    assert alias_tag(Recipe(arch="amd64", with_r=True, with_jupyterlab=True)) == "latest-r-lab"
    lab = Recipe(arch="amd64", with_jupyterlab=True)
    assert any(req.startswith("jupyterlab==") for req in lab.requirements)


def test_unknown_suite_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown Debian suite"):
        _ = Recipe(suite="hamm", arch="amd64").python_version


def _parts(packages: List[str] = ("python3=3.11.2-1",), wheels: Dict[str, str] = None) -> Any:
    rootfs = Rootfs("k", Path("/nonexistent.tar"), list(packages), "3.11")
    wh = Wheelhouse("w", Path("/nonexistent"), RECIPE.requirements, wheels or {"a-1-py3-none-any.whl": "11"})
    return rootfs, wh


def test_content_hash_follows_every_input() -> None:
    rootfs, wh = _parts()
    base = sha256_json(content_inputs(RECIPE, rootfs, wh, runtime_sha256="r1"))
    assert base == sha256_json(content_inputs(RECIPE, *_parts(), runtime_sha256="r1"))  # stable
    changed = [
        content_inputs(RECIPE, *_parts(packages=["python3=3.11.2-2"]), runtime_sha256="r1"),
        content_inputs(RECIPE, *_parts(wheels={"a-1-py3-none-any.whl": "12"}), runtime_sha256="r1"),
        content_inputs(RECIPE, rootfs, wh, runtime_sha256="r2"),
        content_inputs(Recipe(arch="amd64", with_r=True), rootfs, wh, runtime_sha256="r1"),
    ]
    assert len({base} | {sha256_json(c) for c in changed}) == 5
    tag = image_tag(RECIPE, base)
    assert tag == "py-%s-%s" % (__version__, base[:12])


def test_rootfs_and_wheelhouse_keys_follow_their_inputs() -> None:
    assert rootfs_key(RECIPE) == rootfs_key(Recipe(arch="amd64"))
    assert rootfs_key(RECIPE) != rootfs_key(Recipe(arch="amd64", with_r=True))
    assert rootfs_key(RECIPE) == rootfs_key(Recipe(arch="amd64", with_jupyterlab=True))
    assert wheelhouse_key(RECIPE) != wheelhouse_key(Recipe(arch="amd64", with_jupyterlab=True))
    assert wheelhouse_key(RECIPE) == wheelhouse_key(Recipe(arch="amd64", with_r=True))


def test_pip_download_targets_the_image_python_with_binary_wheels_only(tmp_path: Path) -> None:
    cmd = pip_download_command(RECIPE, tmp_path / "d", tmp_path / "r.txt")
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert cmd[cmd.index("--abi") + 1] == "cp311"
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert "manylinux_2_17_x86_64" in platforms and "manylinux_2_36_x86_64" in platforms
    assert "manylinux_2_37_x86_64" not in platforms  # newer than bookworm's glibc


# ----------------------------------------------------------------------------- caches and the build


def _seed_cache(cache: Path, recipe: Recipe) -> None:
    (cache / "rootfs").mkdir(parents=True)
    key = rootfs_key(recipe)
    (cache / "rootfs" / (key + ".tar")).write_bytes(b"")
    (cache / "rootfs" / (key + ".json")).write_text(json.dumps(
        {"packages": ["python3=3.11.2-1"], "python_version": "3.11"}))
    wh = cache / "wheelhouse" / wheelhouse_key(recipe)
    wh.mkdir(parents=True)
    (wh / MANIFEST).write_text(json.dumps({"requirements": recipe.requirements,
                                           "wheels": {"a-1-py3-none-any.whl": "11"}}))


def test_unchanged_inputs_reuse_the_existing_image_without_debootstrap(tmp_path: Path) -> None:
    _seed_cache(tmp_path, RECIPE)
    client = mock.MagicMock()
    client.images.get.return_value = mock.Mock(id="sha256:" + "ab" * 32, short_id="sha256:abab")
    lines: List[str] = []
    with mock.patch.object(build_mod, "check_host", side_effect=AssertionError("no build wanted")), \
            mock.patch.object(rootfs_mod, "run_logged", side_effect=AssertionError("no debootstrap")):
        result = build_image(client, RECIPE, tmp_path, Progress(lines.append), work_dir=tmp_path / "w")
    assert result.cache_hit and result.image.startswith("cdsw/engine:py-%s-" % __version__)
    assert cached_wheelhouse(RECIPE, tmp_path) is not None
    client.images.get.assert_called_with(result.image)
    client.api.tag.assert_called_with(client.images.get.return_value.id, "cdsw/engine", "latest")
    assert any("cache hit" in line for line in lines)


def test_configured_proxies_reach_the_downloads_without_overriding_the_environment() -> None:
    proxies = {"http_proxy": "http://proxy.invalid:3128", "https_proxy": "", "no_proxy": "localhost"}
    env = build_mod.download_env(proxies, base={"HTTPS_PROXY": "http://mine:1", "PATH": "/bin"})
    assert env["http_proxy"] == env["HTTP_PROXY"] == "http://proxy.invalid:3128"
    assert "https_proxy" not in env and env["HTTPS_PROXY"] == "http://mine:1"
    assert env["no_proxy"] == "localhost" and env["PATH"] == "/bin"
    env = build_mod.download_env({"http_proxy": "http://proxy.invalid:3128"}, base={"http_proxy": "http://own:8"})
    assert env["http_proxy"] == "http://own:8" and "HTTP_PROXY" not in env


def test_build_needs_root_and_debootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootfs_mod.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install debootstrap"):
        rootfs_mod.check_host()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="needs root"):
        rootfs_mod.check_host()


def test_trim_keeps_copyright_files_and_drops_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("usr/share/doc/git/copyright", "usr/share/doc/git/changelog.gz",
                "usr/share/man/man1/git.1.gz", "usr/share/locale/de/LC_MESSAGES/git.mo",
                "usr/share/locale/locale.alias", "var/lib/apt/lists/deb_Packages",
                "var/cache/apt/archives/git_1_amd64.deb", "etc/resolv.conf", "etc/hostname",
                "usr/bin/git"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "var/lib/apt/lists/partial").mkdir()
    trim(root)
    assert (root / "usr/share/doc/git/copyright").exists()
    assert (root / "usr/share/locale/locale.alias").exists()
    assert (root / "usr/bin/git").exists() and (root / "var/lib/apt/lists/partial").is_dir()
    for gone in ("usr/share/doc/git/changelog.gz", "usr/share/man/man1", "usr/share/locale/de",
                 "var/lib/apt/lists/deb_Packages", "var/cache/apt/archives/git_1_amd64.deb"):
        assert not (root / gone).exists(), gone
    assert (root / "etc/resolv.conf").read_text() == ""


def test_prune_test_suites_spares_testing_helpers_and_the_runtime(tmp_path: Path) -> None:
    for rel in ("pandas/tests/frame/test_x.py", "pandas/tests/frame/tests/y.py", "numpy/testing/u.py",
                "numpy/_core/tests/t.py", "numpy/core.py", "cdsw_agent/tests/keep.py",
                "foo-1.dist-info/tests/keep"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert prune_test_suites(tmp_path) == 2
    assert not (tmp_path / "pandas/tests").exists() and not (tmp_path / "numpy/_core/tests").exists()
    for kept in ("numpy/testing/u.py", "numpy/core.py", "cdsw_agent/tests/keep.py",
                 "foo-1.dist-info/tests/keep"):
        assert (tmp_path / kept).exists(), kept


def test_scratch_goes_to_ram_only_when_it_is_an_exec_tmpfs_with_room(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert scratch_parent(cache, tmp_path / "mine") == tmp_path / "mine"
    assert scratch_parent(cache, shm=tmp_path / "missing") == cache / "tmp"
    assert scratch_parent(cache, shm=tmp_path, min_free=10 ** 18) == cache / "tmp"
    mounts = "tmpfs %s tmpfs rw,nosuid,nodev 0 0\n" % tmp_path
    with mock.patch("cdsw_agent.images.util.Path.read_text", return_value=mounts):
        assert scratch_parent(cache, shm=tmp_path, min_free=1) == tmp_path / "cdsw-images"
    with mock.patch("cdsw_agent.images.util.Path.read_text", return_value=mounts.replace("nodev", "noexec")):
        assert scratch_parent(cache, shm=tmp_path, min_free=1) == cache / "tmp"


def test_atomic_dir_is_removed_even_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path, "x-") as d:
            (d / "f").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_cleanup_does_not_hide_the_error_that_caused_it(tmp_path: Path) -> None:
    with mock.patch("cdsw_agent.images.util.remove_tree", side_effect=UserError("is a mount point")):
        with pytest.raises(RuntimeError, match="debootstrap broke"):
            with atomic_dir(tmp_path, "x-"):
                raise RuntimeError("debootstrap broke")
        with pytest.raises(UserError, match="mount point"):
            with atomic_dir(tmp_path, "y-"):
                pass


# ----------------------------------------------------------------------------- runtime + progress


def test_runtime_is_the_engine_package_and_its_digest_follows_it(tmp_path: Path) -> None:
    rels = [p.as_posix() for p in runtime_files()]
    assert "__init__.py" in rels and "engine/entrypoint.py" in rels
    assert not any(r.startswith(("cli/", "images/", "server/")) for r in rels)
    pkg = tmp_path / "pkg"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "x"\n')
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "entrypoint.py").write_text("A = 1\n")
    before = runtime_digest(pkg)
    (pkg / "engine" / "entrypoint.py").write_text("A = 2\n")
    assert runtime_digest(pkg) != before
    site = tmp_path / "site"
    written = install_runtime(site, pkg)
    assert (site / "cdsw_agent/engine/entrypoint.py").read_text() == "A = 2\n"
    assert len(written) == 3


def test_progress_prints_steps_with_elapsed_times() -> None:
    now = [100.0]
    lines: List[str] = []
    p = Progress(lines.append, clock=lambda: now[0])
    with p.step("rootfs", "debootstrap"):
        now[0] += 12.5
    with pytest.raises(ValueError):
        with p.step("import"):
            now[0] += 1
            raise ValueError("x")
    assert lines == ["[   0.0s] rootfs: debootstrap ...", "[  12.5s] rootfs done in 12.5s",
                     "[  12.5s] import ...", "[  13.5s] import failed after 1.0s"]
    assert p.timings == {"rootfs": 12.5}


def test_run_logged_failure_names_the_error_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(UserError) as e:
        run_logged(["sh", "-c", "echo working; echo 'E: Failed getting release file'; echo bye; exit 3"],
                   log, Progress(), "debootstrap")
    assert "exit 3" in str(e.value) and "E: Failed getting release file" in str(e.value)
    assert str(log) in str(e.value) and "working" in log.read_text()
    with pytest.raises(UserError, match="not found"):
        run_logged(["/nonexistent/debootstrap"], log, Progress(), "debootstrap")


# ----------------------------------------------------------------------------- engine entrypoint


DIGEST = "ab" * 32  # what the master passes: the SHA-256 of the token, never the token


def test_entrypoint_builds_the_jupyter_command_from_the_environment() -> None:
    argv, env = jupyter_command({"CDSW_ENGINE_TOKEN_SHA256": DIGEST, "CDSW_ENGINE_PORT": "9000",
                                 "CDSW_ENGINE_BASE_URL": "/s/abc", "JUPYTER_TOKEN": "tok-123",
                                 "CDSW_ENGINE_TOKEN": "tok-123",
                                 "CDSW_ENGINE_ROOT_DIR": "/home/cdsw", "HOME": "/home/cdsw-user"})
    # isolated: nothing from the working directory (the project) is importable at start
    assert argv[1:4] == ["-I", "-m", "cdsw_agent.engine.server"]
    assert "--port=9000" in argv and "--ServerApp.base_url=/s/abc/" in argv
    assert "--ServerApp.root_dir=/home/cdsw" in argv and "--ip=0.0.0.0" in argv
    assert not any("tok-123" in a or DIGEST in a for a in argv)
    # a token given anyway (a project variable, a hand-run image) never reaches the server
    assert "tok-123" not in env.values() and "CDSW_ENGINE_TOKEN" not in env
    assert "JUPYTER_TOKEN" not in env
    # the digest does; the server takes it out of os.environ before any kernel starts
    assert env["CDSW_ENGINE_TOKEN_SHA256"] == DIGEST


def test_engine_accepts_the_token_whose_digest_it_holds_and_nothing_else() -> None:
    import asyncio
    import concurrent.futures

    from cdsw_agent.engine.entrypoint import token_digest
    from cdsw_agent.engine.server import USER, EngineIdentityProvider

    provider = EngineIdentityProvider()
    provider.digest = token_digest("tok-789")

    def ask(header: str) -> Any:
        handler = mock.Mock()
        handler.request.headers = {"Authorization": header} if header else {}
        # in a thread of its own: an earlier test of the session may leave an event loop
        # running in this one, where asyncio.run refuses to start (seen on a fresh machine)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, provider.get_user_token(handler)).result()

    assert ask("token tok-789") is USER
    assert ask("token " + token_digest("tok-789")) is None  # the digest opens nothing
    assert ask("token tok-78") is None and ask("") is None
    assert provider.token == ""  # nothing a page could embed


def test_engine_server_makes_itself_undumpable() -> None:
    """Kernels run as the same user: without this they could read the server's memory."""
    import subprocess

    code = ("from cdsw_agent.engine.server import make_undumpable\n"
            "import ctypes; libc = ctypes.CDLL(None)\n"
            "print(libc.prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
            "make_undumpable()\n"
            "print(libc.prctl(3, 0, 0, 0, 0))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "0"], out


def test_engine_kernels_start_isolated() -> None:
    from cdsw_agent.engine.server import kernel_argv

    native = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert kernel_argv("python3", native) == [sys.executable, "-I", "-m",
                                              "cdsw_agent.engine.kernel", "-f", "{connection_file}"]
    ir = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    assert kernel_argv("ir", ir)[:3] == ["R", "--no-restore", "--no-save"]


def test_engine_kernel_adds_user_paths_after_the_image_packages() -> None:
    from cdsw_agent.engine.paths import user_paths

    assert user_paths("/home/cdsw", "/opt/lib:/home/cdsw", "/home/cdsw-user/.local/lib/x") == \
        ["/home/cdsw-user/.local/lib/x", "/opt/lib", "/home/cdsw"]


@pytest.mark.parametrize("env,message", [
    ({}, "CDSW_ENGINE_TOKEN_SHA256 is not set"),
    ({"CDSW_ENGINE_TOKEN": "tok-123"}, "CDSW_ENGINE_TOKEN_SHA256 is not set"),
    ({"CDSW_ENGINE_TOKEN_SHA256": "tok-123"}, "not a SHA-256 in hex"),
    ({"CDSW_ENGINE_TOKEN_SHA256": DIGEST, "CDSW_ENGINE_PORT": "http"}, "not a port number"),
    ({"CDSW_ENGINE_TOKEN_SHA256": DIGEST, "CDSW_ENGINE_PORT": "70000"}, "not a port number"),
    ({"CDSW_ENGINE_TOKEN_SHA256": DIGEST, "CDSW_ENGINE_BASE_URL": "x/"}, "must start with /"),
])
def test_entrypoint_refuses_bad_environments(env: Dict[str, str], message: str) -> None:
    with pytest.raises(EntrypointError, match=message):
        jupyter_command(env)


# ----------------------------------------------------------------------------- save / load


class FakeImages:
    def __init__(self, tags: List[str]):
        self.image = mock.Mock(id="sha256:" + "cd" * 32, tags=tags)

    def get(self, ref: str) -> Any:
        if ref not in self.image.tags and ref != self.image.id:
            raise docker.errors.ImageNotFound("no such image: " + ref)
        return self.image


def _client(tags: List[str] = ("cdsw/engine:py-0.1.0-0123456789ab", "cdsw/engine:latest")) -> Any:
    client = mock.MagicMock()
    client.images = FakeImages(list(tags))
    return client


def test_save_writes_the_archive_and_its_checksum(tmp_path: Path) -> None:
    client = _client()
    client.api.get_image.return_value = iter([b"abc", b"def"])
    saved = transfer.save_image(client, "cdsw/engine:latest", tmp_path / "out" / "e.tar")
    assert (tmp_path / "out" / "e.tar").read_bytes() == b"abcdef"
    assert saved.sha256 == hashlib.sha256(b"abcdef").hexdigest() and saved.size == 6
    assert (tmp_path / "out" / "e.tar.sha256").read_text() == "%s  e.tar\n" % saved.sha256
    stream = io.BytesIO()
    client.api.get_image.return_value = iter([b"xyz"])
    saved = transfer.save_image(client, "cdsw/engine:latest", stream)
    assert saved.sha256 == hashlib.sha256(b"xyz").hexdigest() and stream.getvalue() == b"xyz"
    with pytest.raises(UserError, match="no image cdsw/engine:nope"):
        transfer.save_image(client, "cdsw/engine:nope", tmp_path / "n.tar")
    assert not (tmp_path / "n.tar").exists()


def test_load_verifies_the_checksum_before_docker_sees_anything(tmp_path: Path) -> None:
    client = _client()
    client.api.load_image.return_value = iter([{"stream": "Loaded image: cdsw/engine:latest\n"}])
    archive = tmp_path / "e.tar"
    archive.write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(UserError, match="no checksum"):
        transfer.load_image(client, archive)
    with pytest.raises(UserError, match="checksum mismatch"):
        transfer.load_image(client, archive, sha256="0" * 64)
    with pytest.raises(UserError, match="not a sha256"):
        transfer.load_image(client, archive, sha256="xyz")
    client.api.load_image.assert_not_called()
    (tmp_path / "e.tar.sha256").write_text("%s  e.tar\n" % good)
    assert transfer.load_image(client, archive) == ["cdsw/engine:latest"]
    client.api.load_image.return_value = iter([{"stream": "Loaded image ID: sha256:99\n"}])
    assert transfer.load_image(client, io.BytesIO(b"payload"), sha256=good.upper(),
                               spool_dir=tmp_path) == ["sha256:99"]
    with pytest.raises(UserError, match="checksum mismatch"):
        transfer.load_image(client, io.BytesIO(b"tampered"), sha256=good, spool_dir=tmp_path)
    client.api.load_image.return_value = iter([{"error": "invalid tar header"}])
    with pytest.raises(UserError, match="invalid tar header"):
        transfer.load_image(client, archive)


# ----------------------------------------------------------------------------- registry
# No registry can be reached from this machine, so push/pull are tested against a mocked Docker
# client: what is tagged, pushed and pulled, and how the registry's errors reach the user.


def test_registry_reference_forms() -> None:
    assert transfer.registry_ref("reg.example.com:5000", "py-1") == "reg.example.com:5000/cdsw/engine:py-1"
    assert transfer.registry_ref("https://reg.example.com/", "py-1") == "reg.example.com/cdsw/engine:py-1"
    with pytest.raises(UserError, match="not a registry address"):
        transfer.registry_ref("", "py-1")


def test_push_tags_for_the_registry_and_pushes_the_content_tag() -> None:
    client = _client()
    client.api.push.return_value = iter([{"status": "Pushed"}, {"status": "py-0.1.0-0123456789ab: digest"}])
    ref = transfer.content_tag_of(client, "cdsw/engine:latest")
    assert ref == "cdsw/engine:py-0.1.0-0123456789ab"
    remote = transfer.push_image(client, ref, "reg.example.com:5000")
    assert remote == "reg.example.com:5000/cdsw/engine:py-0.1.0-0123456789ab"
    client.images.image.tag.assert_called_with("reg.example.com:5000/cdsw/engine", "py-0.1.0-0123456789ab")
    client.api.push.assert_called_with("reg.example.com:5000/cdsw/engine", tag="py-0.1.0-0123456789ab",
                                       stream=True, decode=True)


def test_push_and_pull_report_registry_errors() -> None:
    client = _client()
    client.api.push.return_value = iter([{"errorDetail": {"message": "denied: not allowed"}}])
    with pytest.raises(UserError, match="denied: not allowed"):
        transfer.push_image(client, "cdsw/engine:py-0.1.0-0123456789ab", "reg.example.com")
    client.api.pull.return_value = iter([{"error": "manifest unknown"}])
    with pytest.raises(UserError, match="manifest unknown"):
        transfer.pull_image(client, "py-9", "reg.example.com")


def test_pull_tags_the_image_under_the_local_name() -> None:
    client = _client(tags=["reg.example.com/cdsw/engine:py-9"])
    client.api.pull.return_value = iter([{"status": "Downloaded newer image"}])
    assert transfer.pull_image(client, "py-9", "reg.example.com") == "cdsw/engine:py-9"
    client.api.pull.assert_called_with("reg.example.com/cdsw/engine", tag="py-9", stream=True, decode=True)
    client.images.image.tag.assert_called_with("cdsw/engine", "py-9")


# ----------------------------------------------------------------------------- listing and CLI


def test_list_engine_images_one_row_per_tag() -> None:
    image = mock.Mock(id="sha256:" + "ef" * 32, tags=["cdsw/engine:latest", "cdsw/engine:py-1"],
                      attrs={"Size": 510_000_000, "Created": "2026-01-01T00:00:00.123Z",
                             "Config": {"Labels": {"com.cdsw.engine.kernels": "python3,ir",
                                                   "com.cdsw.engine.editors": "jupyter-server",
                                                   "com.cdsw.engine.version": "0.1.0"}}})
    client = mock.MagicMock()
    client.images.list.return_value = [image]
    rows = list_engine_images(client)
    client.images.list.assert_called_with(filters={"label": "com.cdsw.engine=true"})
    assert [r.ref for r in rows] == ["cdsw/engine:py-1", "cdsw/engine:latest"]
    assert rows[0].kernels == ["python3", "ir"] and rows[0].version == "0.1.0"
    assert human_size(510_000_000) == "510.0 MB"
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 3, 0, 5, tzinfo=dt.timezone.utc)
    assert human_age("2026-01-01T00:00:00.123Z", now) == "3 hours ago"


def _cli(args: List[str], env: Dict[str, str], tmp_path: Path) -> Any:
    from cdsw_agent.cli import images as images_cli
    from cdsw_agent.cli.context import CliContext

    (tmp_path / "cdsw.conf").write_text("")
    (tmp_path / "cdsw.properties").write_text("")
    ctx = CliContext(str(tmp_path / "cdsw.conf"), str(tmp_path / "cdsw.properties"))
    with mock.patch.dict(os.environ, env):
        return CliRunner().invoke(images_cli.command, args, obj=ctx)


def test_cli_push_and_pull_need_a_registry(tmp_path: Path) -> None:
    for args in (["push"], ["pull", "py-1"], ["build", "--push"]):
        result = _cli(args, {"CDSW_ENGINE_REGISTRY": ""}, tmp_path)
        assert result.exit_code != 0
        assert isinstance(result.exception, UserError) and "engine_registry" in str(result.exception)


def test_cli_reports_an_unreachable_docker(tmp_path: Path) -> None:
    result = _cli(["list", "--docker-host", "unix:///nonexistent/docker.sock"], {}, tmp_path)
    assert isinstance(result.exception, UserError)
    assert "cannot reach Docker at unix:///nonexistent/docker.sock" in str(result.exception)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_remove_tree_never_crosses_into_a_mount(tmp_path: Path) -> None:
    import subprocess

    from cdsw_agent.images.util import remove_tree

    inner = tmp_path / "root" / "proc"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "cdsw-test", str(inner)], check=True)
    try:
        (inner / "precious").write_text("host data")
        with pytest.raises(UserError, match="mount point"):
            remove_tree(tmp_path / "root")
        assert (inner / "precious").read_text() == "host data"
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    remove_tree(tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_missing_keyring_stops_before_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs_mod, "check_host", lambda: None)
    monkeypatch.setattr(rootfs_mod, "KEYRING", tmp_path / "missing.gpg")
    monkeypatch.setattr(rootfs_mod, "run_logged", mock.Mock(side_effect=AssertionError("ran debootstrap")))
    with pytest.raises(UserError, match="apt-get install debian-archive-keyring"):
        rootfs_mod.ensure_rootfs(RECIPE, tmp_path / "cache", "http://mirror.invalid/debian", Progress())


def test_image_tree_keeps_no_setuid_programs(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    su, ls = tmp_path / "usr/bin/su", tmp_path / "usr/bin/ls"
    su.write_text("x")
    su.chmod(0o4755)
    ls.write_text("x")
    ls.chmod(0o755)
    (tmp_path / "usr/bin/wall").write_text("x")
    (tmp_path / "usr/bin/wall").chmod(0o2755)
    assert sorted(build_mod.drop_setuid_bits(tmp_path)) == ["/usr/bin/su", "/usr/bin/wall"]
    assert su.stat().st_mode & 0o7777 == 0o755 and ls.stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "usr/bin/wall").stat().st_mode & 0o7777 == 0o755


def test_engine_kernel_puts_the_users_own_site_before_the_image_packages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdsw_agent.engine.paths import add_user_site

    user_site = tmp_path / "home/.local/lib/python3/site-packages"
    (user_site / "extra").mkdir(parents=True)
    (user_site / "mine.pth").write_text(str(user_site / "extra") + "\n")
    monkeypatch.setattr(sys, "path", ["/usr/lib/python3.11", "/opt/cdsw/venv/lib/site-packages",
                                      "/home/cdsw"])
    add_user_site(str(user_site))
    assert sys.path == ["/usr/lib/python3.11", str(user_site), str(user_site / "extra"),
                        "/opt/cdsw/venv/lib/site-packages", "/home/cdsw"]
