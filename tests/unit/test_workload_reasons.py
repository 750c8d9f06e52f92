"""No backend's own error text reaches users: Docker's task errors and API errors, and the HTTP
client's failures to reach an engine, become sentences; the raw text is logged in one line."""

from __future__ import annotations

import logging
import socket

import docker
import pytest

from cdsw_agent.orchestrators import OrchestratorError, WorkloadSpec
from cdsw_agent.orchestrators.reasons import ENGINE_GONE, image_missing, image_missing_reason
from cdsw_agent.orchestrators.swarm import SwarmOrchestrator, task_error
from cdsw_agent.sessions import engine_client
from cdsw_agent.workloads import oneshot


def test_swarm_task_errors_become_sentences() -> None:
    missing = task_error("No such image: engine:7", "engine:7", "w1")
    assert missing == image_missing_reason("engine:7", "w1") and image_missing(missing)
    assert missing.startswith("could not start the engine: the image engine:7 is not present "
                              "on node w1;")
    assert task_error("No such container: session-2-1a2b3c4d", "e:1", "w1") == ENGINE_GONE
    for raw in ("starting container failed: OCI runtime create failed: runc: exec: ...",
                "invalid mount config for type \"bind\": bind source path does not exist: /x"):
        text = task_error(raw, "e:1", "w1")
        assert "runc" not in text and "/x" not in text and "node w1" in text, text


def test_docker_that_does_not_answer_is_a_sentence_and_a_log_line(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    sock = "unix://%s/docker.sock" % tmp_path  # nothing listens there
    orch = SwarmOrchestrator(docker.DockerClient(base_url=sock, version="1.41"))
    spec = WorkloadSpec(name="session-2-1a2b3c4d", image="e:1", command=["true"])
    with caplog.at_level(logging.WARNING, logger="cdsw_agent.orchestrators.swarm"):
        with pytest.raises(OrchestratorError) as raised:
            orch.launch(spec)
    text = str(raised.value)
    assert text.startswith("Docker at ") and "does not answer; check the Docker role" in text
    assert "Connection" not in text and "Errno" not in text, text
    [record] = [r for r in caplog.records if r.getMessage().startswith(text)]
    assert "\n" not in record.getMessage() and "Connection aborted" in record.getMessage()
    reason = oneshot.start(orch, lambda: spec, "run 1")[1]
    assert reason == "cannot start the engine: " + text


def test_an_engine_that_is_gone_is_a_sentence(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = engine_client.Endpoint("127.0.0.1", port, "/api/v1/sessions/2/engine/", "t" * 64)
    with caplog.at_level(logging.WARNING, logger="cdsw_agent.sessions.engine_client"):
        with pytest.raises(engine_client.EngineUnavailable) as raised:
            engine_client.create_terminal(ep)
    assert str(raised.value) == ENGINE_GONE
    assert any("ConnectError" in r.getMessage() for r in caplog.records)
    assert "t" * 64 not in caplog.text  # the engine token never reaches the log
    assert engine_client.ready(ep) is False


def test_an_unexpected_launch_failure_shows_no_internals() -> None:
    class Broken:
        def launch(self, spec):  # noqa: ANN001
            raise KeyError("'ContainerSpec' at 0x7f00")

    ref, reason = oneshot.start(Broken(), lambda: None, "run 7")  # type: ignore[arg-type]
    assert ref is None and "0x7f00" not in reason and "internal error" in reason


def test_a_refused_image_build_keeps_dockers_words_in_the_build_log(tmp_path) -> None:
    from cdsw_agent.models.builds import BuildError, docker_build

    class Images:
        def get(self, ref):  # noqa: ANN001
            return object()

    class API:
        def build(self, **kw):  # noqa: ANN003
            raise docker.errors.APIError("500 Server Error", explanation="failed to create "
                                         "shim task: OCI runtime create failed: runc create")

    class Client:
        images, api = Images(), API()

    (tmp_path / "files").mkdir()
    lines = []
    with pytest.raises(BuildError) as raised:
        docker_build(Client(), "engine:1", tmp_path / "files", "model-1:b1", {}, lines.append)
    assert str(raised.value) == "Docker refused to build the image; the build log says why"
    assert lines[-1].startswith("docker: failed to create shim task")
