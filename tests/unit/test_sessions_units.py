"""Sessions' pure parts: engine tokens, kernel choice, output events, failure reasons,
transcript paging and the engine entrypoint's options."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cdsw_agent.engine.entrypoint import jupyter_command
from cdsw_agent.orchestrators import FAILED, WorkloadStatus
from cdsw_agent.orchestrators.reasons import exit_reason, image_missing_reason
from cdsw_agent.sessions import transcript
from cdsw_agent.sessions.engine_client import Endpoint, output_event
from cdsw_agent.sessions.launch import SessionLaunchError, base_path, kernelspec_for
from cdsw_agent.sessions.manager import failure_reason
from cdsw_agent.sessions.secret import engine_token


def test_engine_tokens_are_derived_per_session_and_secret_file_is_private(tmp_path: Path) -> None:
    a = engine_token(tmp_path, "session-1-aaaa")
    assert a == engine_token(tmp_path, "session-1-aaaa")  # re-derivable after a restart
    assert a != engine_token(tmp_path, "session-1-bbbb")
    assert len(a) == 64
    assert (tmp_path / "session-secret").stat().st_mode & 0o777 == 0o600
    other = tmp_path / "other"
    assert engine_token(other, "session-1-aaaa") != a  # another master, another secret


def test_endpoint_never_shows_its_token() -> None:
    ep = Endpoint("10.0.0.5", 15001, base_path(7), "s3cret-token")
    assert "s3cret" not in repr(ep) and "s3cret" not in ep.http
    assert ep.http == "http://10.0.0.5:15001/api/v1/sessions/7/engine/"
    assert ep.ws.startswith("ws://10.0.0.5:15001/")
    assert ep.headers == {"Authorization": "token s3cret-token"}


def image(kernels: list) -> SimpleNamespace:
    return SimpleNamespace(repository="cdsw/engine", tag="t", kernels=kernels)


def test_kernel_choice_follows_the_image() -> None:
    assert kernelspec_for("python3", None) == "python3"
    assert kernelspec_for("r", image(["python3", "ir"])) == "ir"
    assert kernelspec_for("scala", image(["python3", "apache_toree_scala"])) == \
        "apache_toree_scala"
    with pytest.raises(SessionLaunchError) as e:
        kernelspec_for("r", image(["python3"]))
    assert e.value.status == 422
    assert str(e.value) == ("invalid request: kernel: image cdsw/engine:t has no R kernel (it "
                            "has: python3); choose another kernel or an image that has one "
                            "(build one with `cdsw images build --with-r`)")
    with pytest.raises(SessionLaunchError, match="the local engine has no Scala kernel"):
        kernelspec_for("scala", None)


def test_output_events_keep_renderable_data_only() -> None:
    assert output_event("stream", {"name": "stderr", "text": "x"}) == \
        {"type": "stream", "name": "stderr", "text": "x"}
    event = output_event("execute_result", {"execution_count": 3, "data": {
        "text/plain": "2", "text/html": "<b>2</b>", "application/vnd.weird": "?"}})
    assert event == {"type": "execute_result", "execution_count": 3,
                     "data": {"text/plain": "2", "text/html": "<b>2</b>"}}
    assert output_event("error", {"ename": "E", "evalue": "v", "traceback": ["t"]}) == \
        {"type": "error", "ename": "E", "evalue": "v", "traceback": ["t"]}
    assert output_event("execute_input", {"code": "1"}) is None


def test_failure_reasons_say_what_to_do() -> None:
    oom = failure_reason(WorkloadStatus(FAILED, 137, exit_reason(137, True, 2 << 30)), "img:1")
    assert oom == ("the engine was killed by SIGKILL (out of memory: the engine used more than "
                   "its 2 GiB profile; choose a larger profile)")
    assert failure_reason(WorkloadStatus(FAILED, 143, exit_reason(143)), "i") == \
        "the engine was terminated by SIGTERM"
    missing = failure_reason(WorkloadStatus(FAILED, None, image_missing_reason("img:1", "h2"),
                                            node="h2"), "img:1")
    assert missing.startswith("could not start the engine: the image img:1 is not present on "
                              "node h2; build or distribute it")
    assert failure_reason(WorkloadStatus(FAILED, 1, "exit code 1"), "i") == \
        "the engine stopped unexpectedly (exit code 1)"


def test_transcript_pages_whole_lines(tmp_path: Path) -> None:
    for i in range(3):
        transcript.append(tmp_path, 5, {"kind": "input", "code": "x" * 10 + str(i)})
    data, offset = transcript.read(tmp_path, 5, 0, 1 << 20)
    lines = data.decode().splitlines()
    assert [json.loads(line)["code"][-1] for line in lines] == ["0", "1", "2"]
    first, next_offset = transcript.read(tmp_path, 5, 0, len(lines[0]) + 5)  # mid second line
    assert first.decode() == lines[0] + "\n"
    rest, end = transcript.read(tmp_path, 5, next_offset, 1 << 20)
    assert rest.decode().splitlines() == lines[1:] and end == offset
    assert transcript.read(tmp_path, 99, 0, 10) == (b"", 0)


def test_entrypoint_allows_root_only_when_asked() -> None:
    env = {"CDSW_ENGINE_TOKEN_SHA256": "0f" * 32,
           "CDSW_ENGINE_BASE_URL": "/api/v1/sessions/3/engine/"}
    argv, child = jupyter_command(env)
    assert "--allow-root" not in argv and "0f" * 32 not in " ".join(argv)  # never in `ps`
    assert "--ServerApp.base_url=/api/v1/sessions/3/engine/" in argv
    argv, _ = jupyter_command(dict(env, CDSW_ENGINE_ALLOW_ROOT="1"))
    assert "--allow-root" in argv
