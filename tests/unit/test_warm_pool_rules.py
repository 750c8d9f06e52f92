"""Which sessions a warm engine may become, and which failed claims turn warm engines off
(sessions/warm_pool.py); tests/integration/test_warm_engines.py runs them on a real swarm."""

from __future__ import annotations

from typing import List

import pytest

from cdsw_agent.clientconfig import SparkPorts
from cdsw_agent.kerberos.engine import NOTICE_WRAPPER
from cdsw_agent.orchestrators import Mount, MountUnsupported, OrchestratorError, WorkloadSpec
from cdsw_agent.sessions.launch import ENGINE_COMMAND
from cdsw_agent.sessions.warm_pool import WarmEngine, WarmPool, shape_of

GIB = 2**30


def _session(**changes: object) -> WorkloadSpec:
    spec = WorkloadSpec(name="s1", image="engine:1", command=list(ENGINE_COMMAND),
                        env={"HADOOP_USER_NAME": "alice"}, cpu_reservation=1, cpu_limit=1,
                        memory_reservation=2 * GIB, memory_limit=2 * GIB,
                        mounts=[Mount("/data/projects/1", "/home/cdsw", False)])
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def _engine() -> WarmEngine:
    shape = shape_of(_session())
    assert shape is not None
    return WarmEngine(workload_id="w1", name="cdsw-warm-1", shape=shape, node="h1",
                      host_port=15000, spark_ports=SparkPorts(20050, 20051), secret="s")


def test_a_session_like_the_engine_fits_whatever_its_mounts_and_variables() -> None:
    assert _engine().fits(_session())
    assert _engine().fits(_session(node="h1"))


def test_what_a_warm_engine_cannot_become() -> None:
    engine = _engine()
    assert not engine.fits(_session(image="other:1"))
    assert not engine.fits(_session(cpu_reservation=2, cpu_limit=2))
    assert not engine.fits(_session(user="1000"))
    assert not engine.fits(_session(node="h2"))
    assert not engine.fits(_session(node_constraints=[("cdsw.cluster", "==", "PROD")]))
    # a Kerberos user without a credential: the engine's command prints a notice first, which
    # a warm engine, started before anyone claimed it, did not run
    assert not engine.fits(_session(command=NOTICE_WRAPPER + list(ENGINE_COMMAND)))


class _Swarm:
    """The hand-over's orchestrator calls; inject_mounts fails as told."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.removed: List[str] = []

    def relabel(self, workload_id: str, labels: dict) -> None:
        pass

    def inject_mounts(self, workload_id: str, mounts: list) -> None:
        raise self.failure

    def remove(self, workload_id: str) -> None:
        self.removed.append(workload_id)


@pytest.mark.parametrize("failure, off", [
    # mount_inject.py's exit status says the host cannot mount at all (not root, no mount API)
    (MountUnsupported("cannot enter process 89: Operation not permitted"), True),
    # one session's mount refused: that session starts cold, the others still claim engines
    (OrchestratorError("cannot mount /data/k/3 at /var/run/cdsw/krb5 in process 89: /var/run "
                       "is a symbolic link in the container, refused"), False),
    (OrchestratorError("cannot mount /data/gone at /home/cdsw in process 89: Operation not "
                       "permitted"), False),  # words alone decide nothing
])
def test_only_a_host_that_cannot_mount_turns_warm_engines_off(failure: Exception,
                                                              off: bool) -> None:
    swarm = _Swarm(failure)
    pool = WarmPool(None, None, lambda: swarm, lambda node: "10.0.0.1",  # type: ignore[arg-type]
                    lambda node, used: 15000)
    pool.refill_soon = lambda: None  # type: ignore[method-assign]
    with pytest.raises(OrchestratorError):
        pool.hand_over(_engine(), _session())
    assert swarm.removed == ["w1"]  # the engine is never handed to anyone else
    assert bool(pool._disabled) is off
