"""Scala jobs through the API on the local backend: a `.scala` script runs in the engine's Scala
REPL (cdsw_agent/engine/scala_job.py) on the cluster clients' Spark (the pyspark package from
PyPI laid out as a SPARK3 parcel, spark_fixtures) with Debian's OpenJDK, with `args` and `spark`
ready; a compile error, an exception and `sys.exit(N)` end the run as failed with what happened
in its log; without a Spark with Scala the run fails with one line saying what to set."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Tuple

import pytest

from cdsw_agent.server import scheduler

from ..conftest import Api, build_api, make_settings
from .spark_fixtures import spark_client_settings
from .test_jobs_api import Jobs, start_jobs

pytestmark = pytest.mark.timeout(600)

# every run starts a JVM and the Scala compiler: a minute on a loaded two-core machine
RUN_TIMEOUT = 420.0


def _jobs(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: Any) -> Iterator[Jobs]:
    settings = make_settings(tmp_path_factory.mktemp(name) / "data", **overrides)
    api: Api = build_api(settings)
    j = start_jobs(api)
    r = j.client.put(j.base + "/env/PYSPARK_SUBMIT_ARGS",
                     json={"value": "--master local[1] pyspark-shell"})
    assert r.status_code == 200, r.text
    yield j
    scheduler.stop(api.client.app.state.server)
    api.db.engine.dispose()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    yield from _jobs(tmp_path_factory, "scala-jobs", **spark_client_settings())


def start(jobs: Jobs, name: str, text: str, arguments: str = "") -> Tuple[int, int]:
    jobs.script(name, text)
    job = jobs.create(name=name, script=name, arguments=arguments)
    return job["id"], jobs.run(job["id"])["id"]


def finish(jobs: Jobs, ids: Tuple[int, int]) -> Tuple[Dict[str, Any], str]:
    run = jobs.wait(*ids, timeout=RUN_TIMEOUT)
    return run, jobs.log(*ids)


def test_scala_jobs_run_on_spark_and_fail_clearly(jobs: Jobs) -> None:
    # all started at once: each pays its own JVM start
    ok = start(jobs, "etl.scala",
               'println("args: " + args.mkString("|"))\n'
               'val total = spark.range(1, 101).selectExpr("sum(id)").first().getLong(0)\n'
               'println(s"total=$total")\n'
               'println(s"double=${twice(21)}")\n'
               'def twice(n: Int): Int = 2 * n\n',  # used above: compiled as one unit
               arguments="alpha 'b c'")
    broken = start(jobs, "broken.scala", 'println("never printed")\nval x: Int = "text"\n')
    throws = start(jobs, "throws.scala",
                   'println("before")\nthrow new IllegalStateException("boom")\n')
    exits = start(jobs, "exits.scala", 'println("leaving")\nsys.exit(3)\n')

    run, log = finish(jobs, ok)
    assert run["status"] == "succeeded", (run, log)
    assert "args: alpha|b c" in log and "total=5050" in log and "double=42" in log, log
    assert "val total" not in log, log  # the REPL's echo is left out

    run, log = finish(jobs, broken)
    assert (run["status"], run["exit_code"]) == ("failed", 1), (run, log)
    assert "type mismatch" in log and "never printed" not in log, log

    run, log = finish(jobs, throws)
    assert (run["status"], run["exit_code"]) == ("failed", 1), (run, log)
    assert "before" in log and "java.lang.IllegalStateException: boom" in log, log

    run, log = finish(jobs, exits)
    assert (run["status"], run["exit_code"]) == ("failed", 3), (run, log)
    assert "leaving" in log, log


@pytest.fixture(scope="module")
def plain_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    yield from _jobs(tmp_path_factory, "noscala-jobs", cluster_client_kind="none")


def test_a_scala_job_without_spark_fails_with_one_line(plain_jobs: Jobs) -> None:
    run, log = finish(plain_jobs, start(plain_jobs, "etl.scala", 'println("hi")\n'))
    assert (run["status"], run["exit_code"]) == ("failed", 2), (run, log)
    lines = [ln for ln in log.splitlines() if ln.startswith("cdsw job:")]
    assert len(lines) == 1 and "no Spark with Scala in this engine" in lines[0], log
    assert "cluster_client_kind" in lines[0] and "Traceback" not in log, log
