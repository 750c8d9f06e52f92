"""The model router: access key -> model -> the least busy ready replica (round robin among
equals), with per-replica counts. It holds only memory: service.py publishes the routing table
and the key digests on every supervision tick, so serving never waits for the database.

Counts (requests, successes, failures, latency) live in this process: they restart from zero
when the master restarts. With several HTTP workers (server/controller.py) each worker's router
serves from the table the controller hands it, reports what it counted since its last report
(`take_counts`), and the controller's router adds every worker's counts up (`add_counts`): its
totals, outstanding calls included, are what the monitoring page and the drain see. Each table
has a version; a worker's report says which one it serves from, so the controller knows when no
worker can still pick a withdrawn replica (`outstanding`) or a revoked key (`all_hold`).

Replicas are called through one `ReplicaClient` per event loop (replica_client.py): pooled
keep-alive connections whose answers httptools parses, because the forward is most of the
master's work on a model call.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .keys import digest
from .replica_client import NoAnswer, ReplicaClient, Unreachable

CALL_TIMEOUT_SECONDS = 60.0
LATENCY_WINDOW = 4096  # latest calls kept per replica for the percentiles
# how a replica's success begins (engine/model_server.py, json.dumps of {"success": True, ...}):
# such an answer is passed on without being decoded here
SUCCESS = b'{"success": true, '


@dataclass(frozen=True)
class Route:
    replica_id: int
    url: str
    token: str


@dataclass
class ReplicaStats:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    outstanding: int = 0
    latencies_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def summary(self) -> Dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> Optional[float]:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        return {"requests": self.requests, "successes": self.successes,
                "failures": self.failures, "outstanding": self.outstanding,
                "latency_ms_mean": round(statistics.fmean(lat), 2) if lat else None,
                "latency_ms_p50": pct(0.50), "latency_ms_p95": pct(0.95)}


class ModelRouter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: Dict[int, Tuple[Route, ...]] = {}  # model id -> ready replicas
        self._keys: Dict[str, int] = {}  # access key digest -> model id
        self._turn: Dict[int, Iterator[int]] = {}
        self.stats: Dict[int, ReplicaStats] = {}  # replica id -> counts
        self._clients: "weakref.WeakKeyDictionary[Any, ReplicaClient]" = \
            weakref.WeakKeyDictionary()
        self._last: Tuple[Any, Any] = (None, None)
        # controller: each worker's outstanding calls per replica; worker: the controller's
        # totals as of the last report (shown instead of this worker's own share)
        self._outstanding_of: Dict[str, Dict[int, int]] = {}
        self.totals: Optional[Dict[int, Dict[str, Any]]] = None
        self.version = 0  # of the table: the controller's count, or the one a worker applied
        self._holding: Dict[str, int] = {}  # controller: worker -> version it serves from
        self._withdrawn: Dict[int, int] = {}  # controller: replica -> version without it
        # a worker's: when a model has no route here, ask for the table again (a replica the
        # controller saw become ready since the last report) before answering 503
        self.refresh: Optional[Callable[[], Awaitable[bool]]] = None

    # --- what service.py publishes
    def publish(self, routes: Dict[int, List[Route]], keys: Dict[str, int],
                version: Optional[int] = None) -> None:
        with self._lock:
            self.version = self.version + 1 if version is None else version
            self._routes = {m: tuple(r) for m, r in routes.items() if r}
            self._keys = dict(keys)
            for rs in self._routes.values():
                for r in rs:
                    self.stats.setdefault(r.replica_id, ReplicaStats())

    def withdraw(self, replica_id: int) -> None:
        """No new request goes to this replica (it drains before it stops)."""
        with self._lock:
            self._routes = {m: tuple(r for r in rs if r.replica_id != replica_id)
                            for m, rs in self._routes.items()}
            self.version += 1
            self._withdrawn[replica_id] = self.version

    def outstanding(self, replica_id: int) -> int:
        """Calls in progress on the replica, at least 1 while a worker may still pick it (it
        serves from a table older than the replica's withdrawal)."""
        with self._lock:
            stats = self.stats.get(replica_id)
            n = stats.outstanding if stats else 0
            gone = self._withdrawn.get(replica_id)
            if gone is not None and any(v < gone for v in self._holding.values()):
                return max(n, 1)
            return n

    def all_hold(self, version: int, but: str = "") -> bool:
        """Every worker (but one) serves from this table version or a newer one."""
        with self._lock:
            return all(v >= version for w, v in self._holding.items() if w != but)

    def summary(self, replica_id: int) -> Dict[str, Any]:
        totals = self.totals
        if totals is not None:
            return dict(totals.get(replica_id) or ReplicaStats().summary())
        with self._lock:
            return self.stats.get(replica_id, ReplicaStats()).summary()

    # --- several HTTP workers: the table handed out, counts added up (server/controller.py)
    def table(self) -> Tuple[Dict[int, List[Route]], Dict[str, int], int]:
        with self._lock:
            return ({m: list(rs) for m, rs in self._routes.items()}, dict(self._keys),
                    self.version)

    def take_counts(self) -> Dict[int, Dict[str, Any]]:
        """A worker's counts since it last reported (its calls in progress as they are now);
        they start again from zero here."""
        out: Dict[int, Dict[str, Any]] = {}
        with self._lock:
            for replica_id, st in self.stats.items():
                if st.requests or st.outstanding or st.latencies_ms:
                    out[replica_id] = {"requests": st.requests, "successes": st.successes,
                                       "failures": st.failures, "outstanding": st.outstanding,
                                       "latencies_ms": list(st.latencies_ms)}
                    st.requests = st.successes = st.failures = 0
                    st.latencies_ms.clear()
        return out

    def return_counts(self, counts: Dict[int, Dict[str, Any]]) -> None:
        """Counts taken for a report that did not arrive: kept for the next one."""
        with self._lock:
            for replica_id, c in counts.items():
                st = self.stats.setdefault(replica_id, ReplicaStats())
                st.requests += c["requests"]
                st.successes += c["successes"]
                st.failures += c["failures"]
                st.latencies_ms.extendleft(reversed(c["latencies_ms"]))

    def add_counts(self, worker: str, counts: Dict[int, Dict[str, Any]],
                   holding: Optional[int] = None) -> None:
        """The controller adds a worker's report; its outstanding calls replace that worker's
        previous figure. `holding`: the table version it served from until this report."""
        with self._lock:
            if holding is not None:
                self._holding[worker] = holding
            own = self._outstanding_of.setdefault(worker, {})
            for replica_id in set(own) | set(counts):
                c = counts.get(replica_id)
                st = self.stats.setdefault(replica_id, ReplicaStats())
                before = own.pop(replica_id, 0)
                now = c["outstanding"] if c else 0
                st.outstanding += now - before
                if now:
                    own[replica_id] = now
                if c:
                    st.requests += c["requests"]
                    st.successes += c["successes"]
                    st.failures += c["failures"]
                    st.latencies_ms.extend(c["latencies_ms"])

    def forget_worker(self, worker: str) -> None:
        """A worker that ended has no call in progress any more."""
        self.add_counts(worker, {})
        with self._lock:
            self._outstanding_of.pop(worker, None)
            self._holding.pop(worker, None)

    def summaries(self) -> Dict[int, Dict[str, Any]]:
        with self._lock:
            return {replica_id: st.summary() for replica_id, st in self.stats.items()}

    def model_for(self, key: str) -> Optional[int]:
        return self._keys.get(digest(key))

    # --- serving
    def _pick(self, model_id: int, tried: List[int]) -> Optional[Route]:
        with self._lock:
            routes = self._routes.get(model_id, ())
            if tried:
                routes = tuple(r for r in routes if r.replica_id not in tried)
            if not routes:
                return None
            if len(routes) == 1:
                route = routes[0]
            else:
                turn = self._turn.setdefault(model_id, itertools.count())
                start = next(turn) % len(routes)
                ordered = routes[start:] + routes[:start]
                route = min(ordered, key=lambda r: self.stats[r.replica_id].outstanding)
            stats = self.stats[route.replica_id]
            stats.outstanding += 1
            stats.requests += 1
            return route

    def _done(self, route: Route, ok: bool, started: float) -> None:
        with self._lock:
            stats = self.stats[route.replica_id]
            stats.outstanding -= 1
            if ok:
                stats.successes += 1
            else:
                stats.failures += 1
            stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)

    def _client(self) -> ReplicaClient:
        """One client per event loop (the server runs one; test clients may run more)."""
        loop = asyncio.get_running_loop()
        if loop is self._last[0]:  # a weak dictionary's lookup was 4 % of a call
            return self._last[1]
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = ReplicaClient()
        self._last = (loop, client)
        return client

    async def call(self, model_id: int, request: Any) -> Tuple[int, Dict[str, Any]]:
        """(HTTP status, CDSW answer). A replica that cannot be reached at all is counted as a
        failure and the call goes to another replica (nothing was sent, so this is safe)."""
        status, answer = await self.call_raw(model_id, json.dumps(request).encode())
        return status, answer if isinstance(answer, dict) else json.loads(answer)

    async def call_raw(self, model_id: int, payload: bytes) -> Tuple[int, Any]:
        """`call` with the request already JSON: the answer is the replica's own bytes when the
        call succeeded (nothing to re-encode), else a dict."""
        tried: List[int] = []
        last_error = "model %d has no ready replica; deploy it or wait until a replica is " \
                     "ready" % model_id
        while True:
            route = self._pick(model_id, tried)
            if route is None and not tried and self.refresh is not None \
                    and await self.refresh():
                route = self._pick(model_id, tried)
            if route is None:
                return 503, {"success": False, "error": last_error}
            started = time.perf_counter()
            try:
                status, raw = await self._client().post(route.url, route.token, payload,
                                                        CALL_TIMEOUT_SECONDS)
            except Unreachable as e:  # nothing was sent: another replica may take the call
                self._done(route, False, started)
                tried.append(route.replica_id)
                last_error = "no replica of model %d could be reached (%s)" % (model_id, e)
                continue
            except NoAnswer as e:
                self._done(route, False, started)
                return 502, {"success": False, "error": "replica %d did not answer: %s"
                             % (route.replica_id, e)}
            except BaseException:  # the caller's cancellation: counted as a failure
                self._done(route, False, started)
                raise
            if status == 200 and raw.startswith(SUCCESS):  # the replica's own encoding of it
                self._done(route, True, started)
                return 200, raw
            try:
                answer = json.loads(raw)
                ok = status == 200 and answer.get("success") is True
            except (ValueError, AttributeError):
                answer, ok = {"success": False, "error": "replica %d answered HTTP %d without "
                              "JSON" % (route.replica_id, status)}, False
            self._done(route, ok, started)
            if ok:
                return 200, raw
            return (status if status >= 400 else 502), answer

    async def aclose(self) -> None:
        """Closes this event loop's connections to the replicas (at the server's shutdown)."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if self._last[0] is loop:
            self._last = (None, None)
        if client is not None:
            client.close()
