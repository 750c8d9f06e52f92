"""Engine images against a real dockerd: build from scratch, run jupyter_server as user cdsw,
rich outputs from a kernel, the cache hit on a second build, listing, and save/load with checks."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from click.testing import CliRunner

from cdsw_agent.errors import UserError
from cdsw_agent.images import Progress, Recipe, build_image, list_engine_images, load_image, save_image

from .docker_fixtures import CACHE_DIR, DockerEngine, docker_engine, engine_image, engine_image_build  # noqa: F401

# a cold image build (debootstrap + wheel downloads) runs inside the first test that needs it
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]

TEST_LABEL = "io.cdsw.test.images"


@pytest.fixture
def containers(docker_engine: DockerEngine) -> Iterator[list]:  # noqa: F811
    """Containers a test starts; removed afterwards whatever happened."""
    started: list = []
    yield started
    for c in started:
        try:
            c.remove(force=True)
        except Exception:
            pass


def _run(docker_engine: DockerEngine, image: str, started: list, **kwargs: Any) -> Any:  # noqa: F811
    labels = dict(kwargs.pop("labels", {}), **{TEST_LABEL: "1"})
    c = docker_engine.client.containers.run(image, detach=True, labels=labels, **kwargs)
    started.append(c)
    return c


def _host_port(container: Any, port: str = "8888/tcp") -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(port)
        if bindings:
            return int(bindings[0]["HostPort"])
        time.sleep(0.2)
    raise AssertionError("port %s of %s was never published" % (port, container.name))


def _wait_http(url: str, container: Any, headers: dict, timeout: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError("engine exited: %s" % container.logs().decode(errors="replace")[-2000:])
        try:
            r = requests.get(url, headers=headers, timeout=5)
            if r.status_code != 599:
                return r
        except requests.RequestException as e:
            last = e
        time.sleep(0.5)
    raise AssertionError("no answer from %s in %ss (%s): %s" % (
        url, timeout, last, container.logs().decode(errors="replace")[-2000:]))


def test_jupyter_server_answers_as_cdsw(docker_engine: DockerEngine, engine_image: str,  # noqa: F811
                                        containers: list) -> None:
    c = _run(docker_engine, engine_image, containers,
             command=["jupyter", "server", "--ServerApp.token=XYZ", "--ip=0.0.0.0", "--port", "8888",
                      "--ServerApp.base_url=/x/"],
             ports={"8888/tcp": ("127.0.0.1", None)})
    base = "http://127.0.0.1:%d/x" % _host_port(c)
    r = _wait_http(base + "/api/kernelspecs", c, {"Authorization": "token XYZ"})
    assert r.status_code == 200, r.text
    specs = r.json()
    assert "python3" in specs["kernelspecs"], specs
    assert specs["default"] == "python3"
    # the token is enforced
    denied = requests.get(base + "/api/kernelspecs", headers={"Authorization": "token wrong"}, timeout=5)
    assert denied.status_code in (401, 403)
    # the CDSW contract: uid 8536 in /home/cdsw, also for the server process itself
    code, out = c.exec_run(["sh", "-c", "id -u; id -un; pwd"])
    assert code == 0, out
    assert out.decode().split() == ["8536", "cdsw", "/home/cdsw"]
    _, ps = c.exec_run(["ps", "-eo", "uid=,args="])
    server = [line.split() for line in ps.decode().splitlines() if "jupyter" in line]
    assert server and all(fields[0] == "8536" for fields in server), ps.decode()
    attrs = docker_engine.client.images.get(engine_image).attrs["Config"]
    assert attrs["WorkingDir"] == "/home/cdsw"
    assert attrs["User"].split(":")[0] in ("8536", "cdsw")


def test_kernel_renders_tables_and_plots(docker_engine: DockerEngine, engine_image: str,  # noqa: F811
                                         containers: list) -> None:
    """What a data scientist sees: a pandas DataFrame as an HTML table, a matplotlib PNG plot."""
    c = _run(docker_engine, engine_image, containers, command=["sleep", "300"])
    code = (
        "import json\n"
        "from jupyter_client.manager import start_new_kernel\n"
        "km, kc = start_new_kernel(kernel_name='python3')\n"
        "mimes, errors = set(), []\n"
        "def hook(m):\n"
        "    if m['msg_type'] in ('display_data', 'execute_result'): mimes.update(m['content']['data'])\n"
        "    if m['msg_type'] == 'error': errors.append(m['content']['evalue'])\n"
        "src = 'import pandas as pd, matplotlib.pyplot as plt\\n' \\\n"
        "      'display(pd.DataFrame({\"a\": [1, 2], \"b\": [3, 4]}))\\n' \\\n"
        "      'plt.plot([1, 2, 3]); plt.show()'\n"
        "kc.execute_interactive(src, output_hook=hook, timeout=120)\n"
        "km.shutdown_kernel(now=True)\n"
        "print(json.dumps({'mimes': sorted(mimes), 'errors': errors}))\n"
    )
    rc, out = c.exec_run(["python", "-c", code])
    assert rc == 0, out.decode(errors="replace")[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == []
    assert "text/html" in result["mimes"] and "image/png" in result["mimes"], result


def test_default_command_starts_a_session_from_the_environment(
        docker_engine: DockerEngine, engine_image: str, containers: list) -> None:  # noqa: F811
    from cdsw_agent.engine.entrypoint import token_digest

    # the engine is given the token's digest, never the token
    c = _run(docker_engine, engine_image, containers,
             environment={"CDSW_ENGINE_TOKEN_SHA256": token_digest("s3cret-token"),
                          "CDSW_ENGINE_BASE_URL": "/s/abc"},
             ports={"8888/tcp": ("127.0.0.1", None)})
    url = "http://127.0.0.1:%d/s/abc/api/kernelspecs" % _host_port(c)
    r = _wait_http(url, c, {"Authorization": "token s3cret-token"})
    assert r.status_code == 200 and "python3" in r.json()["kernelspecs"]
    wrong = requests.get(url, headers={"Authorization": "token " + token_digest("s3cret-token")},
                         timeout=10)
    assert wrong.status_code == 403  # the digest the engine holds opens nothing
    _, ps = c.exec_run(["ps", "-eo", "args="])
    assert token_digest("s3cret-token").encode() not in ps  # nothing on a command line


def test_default_command_refuses_to_start_without_a_token(
        docker_engine: DockerEngine, engine_image: str, containers: list) -> None:  # noqa: F811
    c = _run(docker_engine, engine_image, containers)
    assert c.wait(timeout=60)["StatusCode"] == 2
    assert b"CDSW_ENGINE_TOKEN_SHA256 is not set" in c.logs()


def test_second_build_is_a_cache_hit(docker_engine: DockerEngine, engine_image_build: Any) -> None:  # noqa: F811
    lines: list = []
    started = time.monotonic()
    again = build_image(docker_engine.client, Recipe(), CACHE_DIR, Progress(lines.append))
    took = time.monotonic() - started
    print("first build: %.1fs (cache hit: %s); second build: %.1fs"
          % (engine_image_build.seconds, engine_image_build.cache_hit, took))
    assert again.cache_hit, lines
    assert again.image == engine_image_build.image
    assert again.image_id == engine_image_build.image_id
    assert any("cache hit" in line for line in lines), lines


def test_a_runtime_change_makes_a_new_image_without_reinstalling_python(
        docker_engine: DockerEngine, engine_image_build: Any, tmp_path: Path) -> None:  # noqa: F811
    """The engine runtime is part of the content tag, and the cached venv is reused for it."""
    import shutil

    from cdsw_agent.images.runtime import PACKAGE_ROOT

    pkg = tmp_path / "cdsw_agent"
    (pkg / "engine").mkdir(parents=True)
    shutil.copy(PACKAGE_ROOT / "__init__.py", pkg / "__init__.py")
    for f in (PACKAGE_ROOT / "engine").glob("*.py"):
        shutil.copy(f, pkg / "engine" / f.name)
    (pkg / "engine" / "test_marker.py").write_text('MARKER = "runtime-change-test"\n')
    # the `cdsw` library beside the package is part of the runtime too (RUNTIME_PATHS)
    shutil.copytree(PACKAGE_ROOT.parent / "cdsw", tmp_path / "cdsw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv_cached = any((CACHE_DIR / "venv").glob("*.tar"))
    lines: list = []
    built = build_image(docker_engine.client, Recipe(), CACHE_DIR, Progress(lines.append),
                        runtime_root=pkg)
    try:
        print("\n".join(lines))
        assert not built.cache_hit and built.image != engine_image_build.image
        if venv_cached:
            assert any("venv: cache hit" in line for line in lines), lines
        out = docker_engine.client.containers.run(
            built.image, ["python", "-c", "from cdsw_agent.engine.test_marker import MARKER; print(MARKER)"],
            remove=True, labels={TEST_LABEL: "1"})
        assert out.decode().strip() == "runtime-change-test"
    finally:  # `latest` back where it was, and this image gone so the next session takes this path
        build_image(docker_engine.client, Recipe(), CACHE_DIR, Progress())
        docker_engine.client.images.remove(built.image_id, force=True)


def test_list_shows_the_engine_image(docker_engine: DockerEngine, engine_image: str) -> None:  # noqa: F811
    rows = {r.ref: r for r in list_engine_images(docker_engine.client)}
    assert engine_image in rows and "cdsw/engine:latest" in rows
    assert rows[engine_image].kernels == ["python3"]
    assert "jupyter-server" in rows[engine_image].editors

    from cdsw_agent.cli import images as images_cli

    result = CliRunner().invoke(images_cli.command, ["list", "--docker-host", docker_engine.url],
                                obj=_cli_context())
    assert result.exit_code == 0, result.output
    assert engine_image.split(":")[1] in result.output and "python3" in result.output


def _cli_context() -> Any:
    from cdsw_agent.cli.context import CliContext

    return CliContext(None, None)


@pytest.fixture
def tiny_image(docker_engine: DockerEngine) -> Iterator[str]:  # noqa: F811
    """A one-file image (docker import of a tiny tar) to move around quickly."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ref = "cdsw-test/tiny:%s" % uuid.uuid4().hex[:8]
    repo, tag = ref.split(":")
    docker_engine.client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    yield ref
    for t in (ref,):
        try:
            docker_engine.client.images.remove(t, force=True)
        except Exception:
            pass


def test_save_then_load_restores_the_image(docker_engine: DockerEngine, tiny_image: str,  # noqa: F811
                                           tmp_path: Path) -> None:
    client = docker_engine.client
    image_id = client.images.get(tiny_image).id
    saved = save_image(client, tiny_image, tmp_path / "tiny.tar")
    assert (tmp_path / "tiny.tar.sha256").read_text().split()[0] == saved.sha256
    client.images.remove(tiny_image, force=True)
    assert load_image(client, tmp_path / "tiny.tar") == [tiny_image]
    assert client.images.get(tiny_image).id == image_id


def test_load_refuses_a_damaged_archive(docker_engine: DockerEngine, tiny_image: str,  # noqa: F811
                                        tmp_path: Path) -> None:
    client = docker_engine.client
    save_image(client, tiny_image, tmp_path / "tiny.tar")
    client.images.remove(tiny_image, force=True)
    data = bytearray((tmp_path / "tiny.tar").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "tiny.tar").write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch"):
        load_image(client, tmp_path / "tiny.tar")
    import docker.errors

    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tiny_image)


def test_export_and_import_commands(docker_engine: DockerEngine, tiny_image: str,  # noqa: F811
                                    tmp_path: Path) -> None:
    from cdsw_agent.cli import images as images_cli

    runner = CliRunner()
    out = tmp_path / "x.tar"
    r = runner.invoke(images_cli.command, ["export", tiny_image, "--out", str(out), "--docker-host",
                                           docker_engine.url], obj=_cli_context())
    assert r.exit_code == 0, r.output
    docker_engine.client.images.remove(tiny_image, force=True)
    r = runner.invoke(images_cli.command, ["import", str(out), "--sha256", "0" * 64, "--docker-host",
                                           docker_engine.url], obj=_cli_context())
    assert r.exit_code != 0 and "checksum mismatch" in str(r.exception)
    r = runner.invoke(images_cli.command, ["import", str(out), "--docker-host", docker_engine.url],
                      obj=_cli_context())
    assert r.exit_code == 0, r.output
    assert "loaded %s" % tiny_image in r.output


def test_r_flavour_has_a_working_irkernel(docker_engine: DockerEngine, containers: list) -> None:  # noqa: F811
    """`cdsw images build --with-r`: R from Debian with IRkernel, registered for jupyter_server."""
    lines: list = []
    try:
        built = build_image(docker_engine.client, Recipe(with_r=True), CACHE_DIR, Progress(lines.append))
    finally:
        print("\n".join(lines))
    assert built.image.startswith("cdsw/engine:py-r-") and built.alias == "cdsw/engine:latest-r"
    labels = docker_engine.client.images.get(built.image).attrs["Config"]["Labels"]
    assert labels["com.cdsw.engine.kernels"] == "python3,ir"
    c = _run(docker_engine, built.image, containers, command=["sleep", "300"])
    code = (
        "import json\n"
        "from jupyter_client.manager import start_new_kernel\n"
        "km, kc = start_new_kernel(kernel_name='ir')\n"
        "mimes, text = set(), []\n"
        "def hook(m):\n"
        "    data = m['content'].get('data', {})\n"
        "    mimes.update(data)\n"
        "    text.append(data.get('text/plain', m['content'].get('text', '')))\n"
        "kc.execute_interactive('print(Sys.getenv(\"USER\")); data.frame(a = 1:2)', output_hook=hook,"
        " timeout=120)\n"
        "km.shutdown_kernel(now=True)\n"
        "print(json.dumps({'mimes': sorted(mimes), 'text': ''.join(text)}))\n"
    )
    rc, out = c.exec_run(["python", "-c", code])
    assert rc == 0, out.decode(errors="replace")[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert "text/html" in result["mimes"] and "cdsw" in result["text"], result
