"""How the engine's jupyter_server starts quickly (engine/server.py): without jsonschema's
rfc3987_syntax format checker, whose import builds a Lark grammar (0.9 s of every engine start),
with jupyter_server's event schemas still validated; and with the session's kernel started before
the server listens, so the first answer already lists it; a Python kernel even before the server
itself starts, which the server then takes over (engine/early_kernel.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx

from cdsw_agent.engine.entrypoint import DIGEST_VARIABLE, PRESTART_VARIABLE, token_digest
from cdsw_agent.engine.kernel_launch import EARLY_KERNEL_VARIABLE
from cdsw_agent.sessions.engine_client import (Endpoint, create_kernel, execute, interrupt,
                                               restart)

CHECK = """
import sys
import cdsw_agent.engine.server
assert sys.modules.get("rfc3987_syntax") is None, "rfc3987_syntax was imported"
import io, logging
import jsonschema
from jupyter_events import EventLogger
logger = EventLogger(handlers=[logging.StreamHandler(io.StringIO())])  # emit needs a handler
logger.register_event_schema({
    "$id": "https://example.org/cdsw/test", "version": "1", "title": "t",
    "type": "object", "properties": {"where": {"type": "string", "format": "uri"}}})
logger.emit(schema_id="https://example.org/cdsw/test", data={"where": "https://example.org/"})
try:
    logger.emit(schema_id="https://example.org/cdsw/test", data={"where": 3})
except jsonschema.ValidationError:
    print("validated")
"""


def test_engine_server_skips_the_slow_format_checker_and_events_still_validate() -> None:
    # a process of its own: the module's effect is on sys.modules at import time
    out = subprocess.run([sys.executable, "-I", "-c", CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "validated"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def engine(tmp_path: Path, **extra: str) -> Iterator[Tuple[subprocess.Popen, Endpoint, Any]]:
    """The engine as its image starts it (`python -I -m cdsw_agent.engine`), its endpoint, and
    the first answer of GET /api/kernels (polled until the server listens)."""
    token, port = "t-" + os.urandom(8).hex(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CDSW_"))}
    env.update({DIGEST_VARIABLE: token_digest(token), PRESTART_VARIABLE: "python3",
                "CDSW_ENGINE_PORT": str(port), "CDSW_ENGINE_ROOT_DIR": str(tmp_path),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path),
                "CDSW_ENGINE_ALLOW_ROOT": "1" if os.geteuid() == 0 else "0"})
    env.update(extra)
    proc = subprocess.Popen([sys.executable, "-I", "-m", "cdsw_agent.engine"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ep = Endpoint("127.0.0.1", port, "/", token)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = httpx.get(ep.http + "api/kernels", headers=ep.headers, timeout=5)
                break
            except httpx.TransportError:  # not listening yet
                assert time.monotonic() < deadline, "the engine did not listen"
                time.sleep(0.02)
        assert r.status_code == 200, r.text
        yield proc, ep, r.json()
    finally:
        proc.terminate()
        proc.wait(30)


def run(ep: Endpoint, kernel_id: str, code: str) -> str:
    async def events() -> List[Dict[str, Any]]:
        return [e async for e in execute(ep, kernel_id, code)]
    out = asyncio.run(events())
    assert out[-1]["status"] == "ok", out
    return "".join(e.get("text", "") for e in out if e["type"] == "stream")


FACTS = "import json, os, sys; print(json.dumps([os.getpid(), os.getppid(), sys.argv, " \
        "dict(os.environ), os.getcwd(), os.getpgid(0)]))"


def test_the_kernel_is_listed_from_the_servers_first_answer(tmp_path: Path) -> None:
    with engine(tmp_path) as (_, _ep, kernels):
        assert [k["name"] for k in kernels] == ["python3"], kernels  # from the first answer


def gone(pid: int) -> bool:
    """Ended and reaped: not even a zombie is left."""
    return not Path("/proc/%d" % pid).exists()


def test_the_sessions_python_kernel_starts_with_the_engine_and_the_server_takes_it_over(
        tmp_path: Path) -> None:
    with engine(tmp_path) as (proc, ep, kernels):
        early = kernels[0]["id"]
        pid, ppid, argv, env, cwd, pgid = json.loads(run(ep, early, FACTS))
        # the entrypoint's child, started before the exec that made it jupyter_server
        assert ppid == proc.pid
        assert os.path.basename(argv[-1]).startswith("kernel-early-"), argv
        assert pgid == pid  # a session of its own: an interrupt signals its group only
        # the same program, environment and working directory as a kernel the server starts
        other = create_kernel(ep, "python3")
        pid2, ppid2, argv2, env2, cwd2, _ = json.loads(run(ep, other, FACTS))
        assert ppid2 == proc.pid and argv2[:-1] == argv[:-1] and cwd2 == cwd == str(tmp_path)
        assert env2 == env
        assert not any(k.startswith("CDSW_ENGINE_TOKEN") or k in (
            PRESTART_VARIABLE, EARLY_KERNEL_VARIABLE) for k in env), sorted(env)

        # the server runs it as its own: interrupt, then restart (a kernel of the server's)
        async def interrupted() -> List[Dict[str, Any]]:
            task = asyncio.ensure_future(_collect(ep, early, "import time; time.sleep(60)"))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(interrupt, ep, early)
            return await asyncio.wait_for(task, 20)
        out = asyncio.run(interrupted())
        assert [e.get("ename") for e in out if e["type"] == "error"] == ["KeyboardInterrupt"]
        restart(ep, early)
        deadline = time.monotonic() + 10
        while not gone(pid):  # ended and reaped by the server
            assert time.monotonic() < deadline, "the early kernel is still there after a restart"
            time.sleep(0.05)
        pid3, _, argv3, _, _, _ = json.loads(run(ep, early, FACTS))
        assert pid3 != pid and not os.path.basename(argv3[-1]).startswith("kernel-early-")


async def _collect(ep: Endpoint, kernel_id: str, code: str) -> List[Dict[str, Any]]:
    return [e async for e in execute(ep, kernel_id, code)]


def test_a_project_variable_cannot_name_a_process_for_the_server_to_take_over(
        tmp_path: Path) -> None:
    """CDSW_EARLY_KERNEL is the entrypoint's word to the server. Set as a project variable, it
    would make the server end a process group it names (the kernel it does not take)."""
    victim = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        with engine(tmp_path, **{PRESTART_VARIABLE: "",
                                 EARLY_KERNEL_VARIABLE: "%d %s" % (victim.pid, tmp_path / "x")}) \
                as (_, _ep, kernels):
            assert kernels == []
            time.sleep(0.5)
            assert victim.poll() is None, "the engine ended a process a variable named"
    finally:
        victim.kill()
        victim.wait()


def test_a_default_provisioner_the_user_configured_is_kept_and_the_early_kernel_ended(
        tmp_path: Path) -> None:
    """The user's $HOME/.jupyter names another default provisioner: the server reads it (the
    provisioner factory has the server as parent), so it does not take the early kernel over
    but ends it, and kernels start as that configuration says (here a name nothing provides,
    so none starts: the setting is seen to take effect)."""
    config = tmp_path / ".jupyter"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"KernelProvisionerFactory": {"default_provisioner_name": "users-own-provisioner"}}))
    with engine(tmp_path) as (proc, _ep, kernels):
        assert kernels == []
        children = Path("/proc/%d/task/%d/children" % (proc.pid, proc.pid)).read_text().split()
        assert children == [], children  # the early kernel was ended, not left running


def test_an_early_kernel_that_is_gone_is_not_taken_and_the_server_starts_its_own(
        tmp_path: Path, monkeypatch: Any) -> None:
    """In process, with jupyter_client's own kernel manager and the engine's kernelspecs: the
    early kernel ended before the server took it over, so the start launches a kernel."""
    from jupyter_client.ioloop import AsyncIOLoopKernelManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    from cdsw_agent.engine import early_kernel
    from cdsw_agent.engine.kernel_launch import StartedKernel, write_connection_file
    from cdsw_agent.engine.server import EngineKernelSpecManager

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "run"))
    ended = subprocess.Popen(["true"])
    while not Path("/proc/%d/stat" % ended.pid).read_text().split(") ")[1].startswith("Z"):
        time.sleep(0.01)  # ended, not yet reaped: a child the server would take over
    gone_kernel = StartedKernel(ended.pid, write_connection_file(str(tmp_path / "run"),
                                                                 "python3"))
    factory = KernelProvisionerFactory.instance()
    default = factory.default_provisioner_name
    assert early_kernel.install(gone_kernel, None)
    km = AsyncIOLoopKernelManager(kernel_name="python3",
                                  kernel_spec_manager=EngineKernelSpecManager())

    async def start_and_stop() -> Tuple[int, bool]:
        await km.start_kernel()
        try:
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            client.stop_channels()
            return km.provisioner.pid, await km.is_alive()
        finally:
            await km.shutdown_kernel(now=True)
    try:
        pid, alive = asyncio.run(start_and_stop())
    finally:
        factory.default_provisioner_name = default
        early_kernel.EarlyKernelProvisioner.waiting = None
    assert isinstance(km.provisioner, early_kernel.EarlyKernelProvisioner)
    assert pid != ended.pid and alive
    assert gone(ended.pid)  # reaped
    assert not Path(gone_kernel.connection_file).exists()


WARM_UP = """
import sys, threading, time
from cdsw_agent.engine import kernel
before = sys.getswitchinterval()
kernel.warm_up_completion()
warm_up = next(t for t in threading.enumerate() if t.name == "cdsw-completion-warm-up")
while sys.getswitchinterval() == before and warm_up.is_alive():
    time.sleep(0.001)
during = sys.getswitchinterval()
if sys.argv[1] == "user-sets-one":
    sys.setswitchinterval(0.01)
warm_up.join(120)
print(during, before, sys.getswitchinterval())
"""


def test_the_completion_warm_up_shortens_the_switch_interval_while_it_runs_only() -> None:
    """The warm-up (jedi, pure Python) would hold the GIL for 5 ms at a time while the user's
    first cell waits; it runs with a tenth of that, then the interval is as it was, or as the
    user's code set it meanwhile."""
    from cdsw_agent.engine.kernel import WARM_UP_SWITCH_SECONDS

    for case, expected_after in (("alone", None), ("user-sets-one", 0.01)):
        out = subprocess.run([sys.executable, "-c", WARM_UP, case], capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        during, before, after = (float(x) for x in out.stdout.split())
        assert during == WARM_UP_SWITCH_SECONDS
        assert after == (before if expected_after is None else expected_after)
