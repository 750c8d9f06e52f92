"""A lost swarm workload (its node went down with the engine on it) is still stopped: the
service is scaled to 0, so the node stops the container should it come back, while a finished
workload keeps its status untouched."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from cdsw_agent.orchestrators import FAILED, LOST, SUCCEEDED, WorkloadStatus
from cdsw_agent.orchestrators.swarm import STOPPED_LABEL, SwarmOrchestrator


class FakeService:
    id, version = "svc1", 7
    attrs: Dict[str, Any] = {"Spec": {"Labels": {"io.cdsw.workload": "1"}}}


class FakeAPI:
    def __init__(self) -> None:
        self.updates: List[Dict[str, Any]] = []

    def update_service(self, service_id: str, version: int, **kw: Any) -> None:
        self.updates.append(dict(kw, service=service_id))


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()


@pytest.mark.parametrize("state, scaled", [(LOST, True), (FAILED, False), (SUCCEEDED, False)])
def test_stop_scales_a_lost_workload_to_zero(monkeypatch: pytest.MonkeyPatch, state: str,
                                             scaled: bool) -> None:
    client = FakeClient()
    orch = SwarmOrchestrator(client)  # type: ignore[arg-type]
    monkeypatch.setattr(orch, "_service", lambda workload_id: FakeService())
    monkeypatch.setattr(orch, "_status", lambda service: WorkloadStatus(state, None,
                                                                        "node w1 is down"))
    orch.stop("svc1")
    if scaled:
        [update] = client.api.updates
        assert update["mode"] == {"Replicated": {"Replicas": 0}}
        assert update["labels"][STOPPED_LABEL] == "1"
    else:
        assert client.api.updates == []
