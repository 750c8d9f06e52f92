"""Sends the master's metrics to Ambari Metrics, so the widgets of Ambari's CDSW page
(ambari-mpack/.../widgets.json, metrics.json) have data.

Every `ams_push_seconds` the master posts what /metrics would answer to the collector's timeline
API (`POST {ams_collector_url}/ws/v1/timeline/metrics`) under app id `cdsw` and this host's name.
Ambari Metrics has no labels, so each Prometheus family becomes `NAME` (the sum of its series)
and, for a series with one label, `NAME.VALUE` (`cdsw_nodes.ready` is cdsw_nodes{state="ready"});
a family with several labels gives its sum only; histograms, quantiles and `*_info` are not
sent. A collector that does not
answer costs one warning line per change of state, never the master.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

from ..health.prometheus import Exposition
from ..loops import Loop
from . import workbench_metrics
from .state import ServerState

log = logging.getLogger(__name__)

APP_ID = "cdsw"
SENDER_KEY = "metrics.ams"
TIMEOUT_SECONDS = 10.0


def flatten(exp: Exposition) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for name, kind, series in exp.families():
        if kind == "histogram" or name.endswith("_info") or any(
                "quantile" in labels for _, labels, _ in series):
            continue  # a sum of buckets, versions or quantiles means nothing
        out[name] = float(sum(value for _, _, value in series))
        for _, labels, value in series:
            if len(labels) != 1:
                continue  # several labels: only the family's sum
            for label_value in labels.values():
                key = "%s.%s" % (name, label_value)
                out[key] = out.get(key, 0.0) + float(value)
    return out


def payload(values: Dict[str, float], hostname: str, now_ms: int) -> Dict[str, Any]:
    """TimelineMetrics as the collector's /ws/v1/timeline/metrics reads it."""
    return {"metrics": [{"metricname": name, "appid": APP_ID, "hostname": hostname,
                         "instanceid": "", "starttime": now_ms, "timestamp": now_ms,
                         "metrics": {str(now_ms): value}}
                        for name, value in sorted(values.items())]}


def send(url: str, body: Dict[str, Any]) -> None:
    request = urllib.request.Request(url.rstrip("/") + "/ws/v1/timeline/metrics",
                                     data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
        answer.read()


class Sender:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.url = state.settings.ams_collector_url
        self.interval = float(state.settings.ams_push_seconds)
        self.hostname = socket.getfqdn()
        self.last_error: Optional[str] = None
        self.sent = 0
        # a bad round (database down, ...) must not end the loop
        self._loop = Loop("cdsw-ams", lambda: self.push_once(), lambda: self.interval, log=log,
                          what="metrics", report=lambda e: log.warning(
                              "metrics: sending to Ambari Metrics failed: %s", e))

    def push_once(self) -> None:
        values = flatten(workbench_metrics.exposition(self.state))
        try:
            send(self.url, payload(values, self.hostname, int(time.time() * 1000)))
        except (OSError, urllib.error.URLError) as e:
            error = str(getattr(e, "reason", e))
            if error != self.last_error:
                log.warning("metrics: the Ambari Metrics collector %s did not take the metrics: "
                            "%s", self.url, error)
            self.last_error = error
            return
        if self.last_error is not None:
            log.info("metrics: the Ambari Metrics collector %s takes the metrics again", self.url)
        self.last_error = None
        self.sent += 1

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._loop.stop(timeout)


def start(state: ServerState) -> Optional[Sender]:
    """Starts this master's sender when ams_collector_url is set."""
    if not state.settings.ams_collector_url:
        return None
    sender = state.extras.get(SENDER_KEY)
    if sender is None:
        sender = state.extras[SENDER_KEY] = Sender(state)
        sender.start()
        log.info("metrics: sending to Ambari Metrics at %s every %ss", sender.url,
                 int(sender.interval))
    return sender


def stop(state: ServerState) -> None:
    sender: Optional[Sender] = state.extras.pop(SENDER_KEY, None)
    if sender is not None:
        sender.stop()

