"""How long the master takes to answer, by kind of request, for /metrics.

A pure ASGI middleware (no response copy) counts every HTTP request into a fixed histogram per
(handler, status class). `handler` is the part of the master that answered, from the path's
first segment, so the number of series stays small whatever the URLs: api (the REST API),
model (POST /model), inference_v2 (/v2), mlflow, health (/healthz, /metrics), static (our
assets and npm libraries) and pages (everything else the browser loads). Counts restart from
zero when the master restarts, as Prometheus counters may. With several HTTP workers each
worker's counts go to the controller with its reports, and /metrics shows their sum.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Dict, List, Sequence, Tuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..health.prometheus import DEFAULT_BUCKETS, Exposition

STATS_KEY = "metrics.http"
HANDLERS = ("api", "model", "inference_v2", "mlflow", "health", "static", "pages")
_PREFIXES = (("/api/", "api"), ("/model", "model"), ("/v2/", "inference_v2"),
             ("/mlflow", "mlflow"), ("/healthz", "health"), ("/metrics", "health"),
             ("/static/", "static"), ("/vendor/", "static"))


def handler_of(path: str) -> str:
    for prefix, handler in _PREFIXES:
        if path.startswith(prefix):
            return handler
    return "pages"


class _Series:
    __slots__ = ("buckets", "total", "count")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # per bucket, not cumulative
        self.total = 0.0
        self.count = 0


class HttpStats:
    """Counts by (handler, status class); thread-safe, cheap on the request path."""

    def __init__(self, bounds: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._series: Dict[Tuple[str, str], _Series] = {}

    def observe(self, handler: str, status: int, seconds: float) -> None:
        key = (handler, "%dxx" % (status // 100))
        index = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self.bounds) + 1)
            series.buckets[index] += 1
            series.total += seconds
            series.count += 1

    def take(self) -> List[List]:
        """What was counted since the last take, as JSON-ready rows, counting again from zero
        (an HTTP worker's report to the controller, server/controller.py)."""
        with self._lock:
            rows = [[h, c, s.buckets, s.total, s.count] for (h, c), s in self._series.items()]
            self._series = {}
        return rows

    def add(self, rows: List[List]) -> None:
        """Adds rows from take() (the controller, for every worker)."""
        with self._lock:
            for handler, code, buckets, total, count in rows:
                series = self._series.get((handler, code))
                if series is None:
                    series = self._series[(handler, code)] = _Series(len(self.bounds) + 1)
                series.buckets = [a + b for a, b in zip(series.buckets, buckets)]
                series.total += total
                series.count += count

    def count(self, handler: str, code: str) -> int:
        """Requests counted for (handler, "2xx"...)."""
        with self._lock:
            series = self._series.get((handler, code))
            return series.count if series else 0

    def export(self, exp: Exposition) -> None:
        with self._lock:
            rows = sorted((k, list(s.buckets), s.total, s.count) for k, s in self._series.items())
        samples = []
        for (handler, code), buckets, total, count in rows:
            cumulative: List[Tuple[float, float]] = []
            running = 0
            for bound, n in zip(self.bounds, buckets):
                running += n
                cumulative.append((bound, running))
            samples.append(({"handler": handler, "code": code}, cumulative, round(total, 6),
                            count))
        exp.histogram("cdsw_http_request_duration_seconds",
                      "Time the master took to answer an HTTP request, by handler and status "
                      "class.", samples)
        exp.counter("cdsw_http_requests_total", "HTTP requests the master answered, by handler "
                    "and status class.",
                    (({"handler": h, "code": c}, n) for (h, c), _, _, n in rows))


class RequestMetrics:
    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # an exception before the response started is a 500

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.stats.observe(handler_of(scope.get("path", "")), status[0],
                               time.perf_counter() - started)


def install(app) -> HttpStats:  # type: ignore[no-untyped-def]
    """Counts the app's requests: their time includes the middlewares added before it."""
    stats = HttpStats()
    app.state.server.extras[STATS_KEY] = stats
    app.add_middleware(RequestMetrics, stats=stats)
    return stats
