"""The model router's counts with several HTTP workers (models/router.py): what each worker
takes for its report, what the controller adds up, and the calls in progress the drain waits
for, including a worker's that ended."""

from __future__ import annotations

import time

from cdsw_agent.models.router import ModelRouter, Route

ROUTE = Route(7, "http://10.0.0.1:9000/", "t")


def worker_with(calls: int, ok: int, open_calls: int = 0) -> ModelRouter:
    router = ModelRouter()
    router.publish({1: [ROUTE]}, {})
    for i in range(calls):
        route = router._pick(1, [])
        assert route is not None
        if i < calls - open_calls:
            router._done(route, i < ok, time.perf_counter())
    return router


def test_a_worker_reports_what_it_counted_since_its_last_report() -> None:
    w = worker_with(5, 3, open_calls=1)
    counts = w.take_counts()
    assert counts[7]["requests"] == 5 and counts[7]["successes"] == 3
    assert counts[7]["failures"] == 1 and counts[7]["outstanding"] == 1
    assert len(counts[7]["latencies_ms"]) == 4
    again = w.take_counts()  # nothing new, but the open call is still reported
    assert again[7]["requests"] == 0 and again[7]["outstanding"] == 1


def test_a_report_that_did_not_arrive_is_kept_for_the_next() -> None:
    w = worker_with(3, 3)
    counts = w.take_counts()
    w.return_counts(counts)
    assert w.take_counts()[7]["requests"] == 3


def test_the_controller_adds_workers_up_and_tracks_their_open_calls() -> None:
    controller = ModelRouter()
    controller.add_counts("a", worker_with(5, 5, open_calls=2).take_counts())
    controller.add_counts("b", worker_with(3, 1, open_calls=1).take_counts())
    s = controller.summary(7)
    assert (s["requests"], s["successes"], s["failures"]) == (8, 4, 1)
    assert controller.outstanding(7) == 3  # the drain waits for these
    # a's calls finished: its next report says so
    controller.add_counts("a", {7: {"requests": 0, "successes": 2, "failures": 0,
                                    "outstanding": 0, "latencies_ms": [1.0, 2.0]}})
    assert controller.outstanding(7) == 1 and controller.summary(7)["successes"] == 6
    controller.forget_worker("b")  # b was killed: its call is over
    assert controller.outstanding(7) == 0
    assert controller.summary(7)["requests"] == 8  # what was counted stays


def test_a_worker_shows_the_controllers_totals() -> None:
    w = worker_with(1, 1)
    w.totals = {7: {"requests": 42}}
    assert w.summary(7) == {"requests": 42}
    assert w.summary(8)["requests"] == 0


def test_a_withdrawn_replica_is_busy_until_every_worker_serves_without_it() -> None:
    controller = ModelRouter()
    controller.publish({1: [ROUTE]}, {})
    v = controller.version
    controller.add_counts("a", {}, holding=v)
    controller.add_counts("b", {}, holding=v)
    controller.withdraw(7)
    assert controller.outstanding(7) == 1  # a and b may still pick it
    controller.add_counts("a", {}, holding=controller.version)
    assert controller.outstanding(7) == 1  # b still may
    assert not controller.all_hold(controller.version) and controller.all_hold(v)
    controller.add_counts("b", {7: {"requests": 0, "successes": 0, "failures": 0,
                                    "outstanding": 2, "latencies_ms": []}},
                          holding=controller.version)
    assert controller.outstanding(7) == 2  # no one picks it now; two calls still run
    controller.add_counts("b", {}, holding=controller.version)
    assert controller.outstanding(7) == 0 and controller.all_hold(controller.version)


def test_a_worker_keeps_the_newest_table_it_was_given() -> None:
    w = ModelRouter()
    w.publish({1: [ROUTE]}, {"k": 1}, version=5)
    assert w.version == 5 and w.table()[2] == 5
