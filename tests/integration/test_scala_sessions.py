"""A Scala session through the API on the local backend (issue 11): the engine's Scala kernel
(cdsw_agent/engine/scala_kernel.py) runs Spark's own Scala REPL on the cluster clients' Spark
(the pyspark package from PyPI laid out as a SPARK3 parcel, spark_fixtures) with Debian's
OpenJDK. Output and errors in order, completion through POST /sessions/{id}/complete, a Spark
job on an executor JVM of its own (local-cluster) whose closures use a value and a case class of
earlier cells (the REPL's classes, served by the driver), a DataFrame, an interrupt that cancels
a running Spark job; without Spark the Scala kernel is refused with one line."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

from cdsw_agent.sessions.monitor import manager_for

from ..conftest import Api, build_api, make_settings
from .spark_fixtures import spark_client_settings

pytestmark = pytest.mark.timeout(600)


# the project's Spark: a master, a worker and an executor JVM of their own (local-cluster), so
# the executor loads the classes of cells from the driver as a cluster's executors do
SUBMIT_ARGS = "--master local-cluster[1,1,1024] --conf spark.executor.memory=512m pyspark-shell"


class World:
    def __init__(self, api: Api):
        self.api = api
        self.owner = api.user("scalaowner")
        self.c = api.key_client(self.owner)
        r = self.c.post("/api/v1/projects", json={"name": "scala-analysis"})
        assert r.status_code == 201, r.text
        self.pid = r.json()["id"]
        r = self.c.put("/api/v1/projects/%d/env/PYSPARK_SUBMIT_ARGS" % self.pid,
                       json={"value": SUBMIT_ARGS})
        assert r.status_code == 200, r.text

    def start(self, **body: Any) -> Any:
        return self.c.post("/api/v1/projects/%d/sessions" % self.pid, json=body)

    def wait_running(self, sid: int, timeout: float = 180) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.c.get("/api/v1/sessions/%d" % sid).json()
            if s["status"] in ("running", "failed", "stopped"):
                return s
            time.sleep(0.5)
        raise AssertionError("session %d did not start: %s" % (sid, s))

    def execute(self, sid: int, code: str) -> List[Dict[str, Any]]:
        with self.c.stream("POST", "/api/v1/sessions/%d/execute" % sid, json={"code": code},
                           timeout=600) as r:
            assert r.status_code == 200, r.read()
            return [json.loads(line) for line in r.iter_lines() if line]


def _world(tmp_path_factory: pytest.TempPathFactory, name: str,
           **overrides: Any) -> Iterator[World]:
    settings = make_settings(tmp_path_factory.mktemp(name) / "data", session_idle_minutes=30,
                             session_max_minutes=120, **overrides)
    api = build_api(settings)
    w = World(api)
    yield w
    orch = manager_for(api.client.app.state.server).orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    api.db.engine.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from _world(tmp_path_factory, "scala", **spark_client_settings())


@pytest.fixture(scope="module")
def session(world: World) -> int:
    r = world.start(kernel="scala")
    assert r.status_code == 201, r.text
    s = world.wait_running(r.json()["id"])
    assert s["status"] == "running", json.dumps(s)
    return s["id"]


def stdout(events: List[Dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "stream" and e["name"] == "stdout")


def test_scala_cell_prints_then_echoes_and_errors_are_the_cells(world: World, session: int) -> None:
    # the first cell also waits for the JVM and the compiler's first run
    events = world.execute(session, 'println("hello from Scala")\nval answer = 6 * 7')
    assert [e["type"] for e in events] == ["stream", "stream", "result"], events
    assert events[0]["text"] == "hello from Scala\n"  # what the code printed, first
    assert events[1]["text"] == "val answer: Int = 42\n"  # then the REPL's echo
    assert events[2]["status"] == "ok"

    failed = world.execute(session, "answer + notDefined")
    assert [e["type"] for e in failed] == ["error", "result"], failed
    assert failed[0]["ename"] == "CompileError"
    assert failed[0]["evalue"] == "not found: value notDefined", failed[0]
    assert failed[1]["status"] == "error"

    thrown = world.execute(session, 'throw new IllegalStateException("no more")')
    assert thrown[0]["type"] == "error", thrown
    assert (thrown[0]["ename"], thrown[0]["evalue"]) == ("java.lang.IllegalStateException",
                                                         "no more")
    # the session goes on: earlier definitions are still there
    assert re.fullmatch(r"val res\d+: Int = 84\n", stdout(world.execute(session, "answer * 2")))


def test_scala_completion_through_the_console_api(world: World, session: int) -> None:
    world.execute(session, "val cdswScalaTarget = List(1, 2, 3)")
    url = "/api/v1/sessions/%d/complete" % session
    r = world.c.post(url, json={"code": "cdswScalaTa"})
    assert r.status_code == 200, r.text
    assert r.json() == {"matches": ["cdswScalaTarget"], "cursor_start": 0, "cursor_end": 11}
    code = "cdswScalaTarget.ma + 1"  # the cursor in the middle of the line
    r = world.c.post(url, json={"code": code, "cursor_pos": len("cdswScalaTarget.ma")})
    assert r.status_code == 200, r.text
    assert {"map", "max", "maxBy"} <= set(r.json()["matches"]), r.json()
    assert (r.json()["cursor_start"], r.json()["cursor_end"]) == (len("cdswScalaTarget."),
                                                                   len("cdswScalaTarget.ma"))


def test_scala_spark_job_uses_values_and_classes_of_earlier_cells(world: World,
                                                                   session: int) -> None:
    world.execute(session, "val factor = 3\ncase class Point(x: Int, y: Int)")
    events = world.execute(session, "\n".join([
        "val total = sc.parallelize(1 to 1000, 4).map(_ * factor).sum().toLong",
        "val far = sc.parallelize(1 to 4, 2).map(i => Point(i, i * factor)).filter(_.y > 6)"
        ".collect().toList",
        "val where = sc.parallelize(1 to 4, 2).map(_ => ProcessHandle.current.pid).distinct()"
        ".collect().toList",
        "println(s\"master=${sc.master} total=$total far=$far\")",
        "println(s\"executor JVMs=${where.size} driver JVM among them=${where.contains("
        "ProcessHandle.current.pid)}\")",
        "import spark.implicits._",
        "Seq((\"a\", 1), (\"b\", 2), (\"a\", 3)).toDF(\"key\", \"n\")"
        ".groupBy(\"key\").sum(\"n\").orderBy(\"key\").show()",
    ]))
    assert events[-1]["status"] == "ok", events
    out = stdout(events)
    assert "master=local-cluster[1,1,1024] total=1501500" in out, out
    assert "far=List(Point(3,9), Point(4,12))" in out, out  # a class of a cell, on the executor
    assert "executor JVMs=1 driver JVM among them=false" in out, out  # not in the driver
    assert "|  a|     4|" in out and "|  b|     2|" in out, out  # DataFrame.show() as printed
    assert "val total: Long = 1501500" in out, out


def test_interrupt_cancels_the_running_spark_job(world: World, session: int) -> None:
    result: Dict[str, Any] = {}

    def run() -> None:
        result["events"] = world.execute(session, "\n".join([
            'println("sleeping")',
            "sc.parallelize(1 to 2, 2).map { i => Thread.sleep(120000); i }.sum()",
            'println("woke")']))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(5)  # the job's tasks are asleep by now, or about to start (cancelled then too)
    r = world.c.post("/api/v1/sessions/%d/interrupt" % session)
    assert r.status_code == 200, r.text
    t.join(90)
    assert not t.is_alive(), "the Spark job was not cancelled by the interrupt"
    events = result["events"]
    assert events[0] == {"type": "stream", "name": "stdout", "text": "sleeping\n"}, events
    assert events[1]["type"] == "error" and events[1]["ename"] == "KeyboardInterrupt", events
    assert not any("woke" in e.get("text", "") for e in events)
    # the session goes on
    assert stdout(world.execute(session, 'println("after")')) == "after\n"


@pytest.fixture(scope="module")
def plain_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from _world(tmp_path_factory, "noscala", cluster_client_kind="none")


def test_scala_is_refused_without_a_spark_with_scala(plain_world: World) -> None:
    r = plain_world.start(kernel="scala")
    assert r.status_code == 422, r.text
    assert "the local engine has no Scala kernel" in r.json()["error"], r.text
    assert "cluster_client_kind" in r.json()["error"], r.text
