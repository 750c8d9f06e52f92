"""The dashboards that ship with the workbench, against a live master and a real Prometheus.

- monitoring/grafana/cdsw-workbench.json is decoded with Grafana's own Python SDK
  (grafana-foundation-sdk, its typed dashboard and Prometheus query models) and encoded again:
  nothing of ours may be lost (a misspelt field would be), and every query is a Prometheus one.
- A master (the real app under uvicorn, local backend) with a deployed model that answered calls
  is scraped by Debian's `prometheus` every second; every panel's query must name only metrics
  the master exports and must return data from Prometheus. Grafana's server is not in the
  registries this project uses, so the queries are run by Prometheus itself, which is what
  Grafana would send them to.
- Cloudera Manager's charts (descriptor/service.mdl) and Ambari's metrics.json/widgets.json name
  the same metrics, checked against the same live /metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest

from ..conftest import build_api, make_settings
from ..packaging.standin import StandIn
from .test_models_api import Models, free_port, ready, start_models, stop_all, wait

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "cdsw-workbench.json"
METRIC = re.compile(r"\bcdsw_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

MODEL_PY = """
def predict(args):
    if args.get("fail"):
        raise ValueError("asked to fail")
    return {"sum": args["a"] + args["b"]}
"""


def dashboard() -> Dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries(dash: Dict[str, Any]) -> List[Dict[str, str]]:
    return [{"panel": p["title"], "expr": t["expr"]}
            for p in dash["panels"] if p.get("type") != "row" for t in p.get("targets", [])]


def exported_names(text: str) -> Set[str]:
    """Metric names of an exposition: the TYPE lines' names, plus a histogram's series."""
    names: Set[str] = set()
    for line in text.splitlines():
        m = re.match(r"^# TYPE (\S+) (\w+)$", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "histogram":
                names.update(m.group(1) + s for s in HISTOGRAM_SUFFIXES)
    return names


def _lost(ours: Any, theirs: Any, path: str = "") -> List[str]:
    """What of `ours` is missing or different in `theirs` (theirs may add defaults)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path + ": not an object"]
        out: List[str] = []
        for key, value in ours.items():
            out += ([path + "." + key] if key not in theirs
                    else _lost(value, theirs[key], path + "." + key))
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [path + ": list differs"]
        return [p for i, (a, b) in enumerate(zip(ours, theirs))
                for p in _lost(a, b, "%s[%d]" % (path, i))]
    return [] if ours == theirs else ["%s: %r became %r" % (path, ours, theirs)]


def sdk_round_trip(data: Dict[str, Any]) -> List[str]:
    sdk = pytest.importorskip("grafana_foundation_sdk",
                              reason="grafana-foundation-sdk needs Python 3.11 or later")
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import dashboard as gdash
    from grafana_foundation_sdk.models import prometheus

    assert sdk is not None
    plugins.register_default_plugins()
    decoded = gdash.Dashboard.from_json(data)
    problems = _lost(data, json.loads(json.dumps(decoded, cls=JSONEncoder)))
    for panel in decoded.panels or []:
        for target in getattr(panel, "targets", None) or []:
            if not isinstance(target, prometheus.Dataquery):
                problems.append("panel %r: query %r is not a Prometheus query"
                                % (panel.title, target))
    return problems


def test_the_grafana_dashboard_is_what_grafanas_sdk_reads():
    data = dashboard()
    assert sdk_round_trip(data) == []
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p.get("title") for p in data["panels"])
    assert all(p.get("targets") for p in data["panels"] if p["type"] != "row")
    # the datasource is chosen when the dashboard is imported, never a fixed uid
    assert {"name": "datasource", "type": "datasource"}.items() <= \
        data["templating"]["list"][0].items()
    # a misspelt field is lost by the SDK, and the round trip says where
    broken = dashboard()
    broken["panels"][1]["titel"] = broken["panels"][1].pop("title")
    assert sdk_round_trip(broken) == [".panels[1].titel"]


# --- a live master, scraped --------------------------------------------------------------------

def call_model(m: Models, key: str, n: int) -> None:
    for i in range(n):
        assert m.call(key, {"a": i, "b": 1}).status_code == 200
    assert m.call(key, {"fail": True}).status_code != 200


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "install Debian's prometheus (scripts/ci/apt-packages.txt)"
    root = tmp_path_factory.mktemp("dashboards")
    # Ambari Metrics' collector: the timeline API, answering as the collector does
    collector = StandIn()
    collector.route("POST", "/ws/v1/timeline/metrics", lambda req: (200, {"errors": []}))
    collector.__enter__()
    api = build_api(make_settings(root / "data", ams_collector_url=collector.url,
                                  ams_push_seconds=5))
    m = start_models(api)
    proc = None
    try:
        m.file("model.py", MODEL_PY)
        created = m.create(name="adder", file="model.py", function="predict",
                           example_input={"a": 1, "b": 2})
        m.build(created["id"])
        m.deploy(created["id"], replicas=1)
        m.wait_deployment(created["id"], ready(1), "1 ready replica", timeout=120)
        call_model(m, created["access_key"], 5)
        port = free_port()
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: cdsw\n    metrics_path: /metrics\n"
            "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % m.master.port)
        log = open(root / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [prometheus, "--config.file=%s" % (root / "prometheus.yml"),
             "--storage.tsdb.path=%s" % (root / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % port], stdout=log, stderr=log)
        url = "http://127.0.0.1:%d" % port

        def scraped() -> bool:
            assert proc.poll() is None, (root / "prometheus.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/api/v1/targets", timeout=5) as r:
                    targets = json.loads(r.read())["data"]["activeTargets"]
            except OSError:
                return False
            return bool(targets) and targets[0]["health"] == "up"

        wait(scraped, 60, "Prometheus scraping the master")
        # calls between scrapes, so rates over the window are not zero
        for _ in range(4):
            call_model(m, created["access_key"], 3)
            time.sleep(1.2)
        with urllib.request.urlopen(m.master.url + "/metrics", timeout=30) as r:
            text = r.read().decode()
        # a push after the calls, so the collector has the model's numbers too
        pushes = len(collector.calls("POST"))
        wait(lambda: len(collector.calls("POST")) > pushes + 1, 30, "two more pushes to AMS")
        yield {"prometheus": url, "metrics": text, "names": exported_names(text),
               "model": created["id"], "ams": collector.calls("POST")}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        stop_all(m)
        api.db.engine.dispose()
        collector.__exit__(None, None, None)


def query(url: str, expr: str) -> List[Dict[str, Any]]:
    with urllib.request.urlopen(url + "/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}), timeout=30) as r:
        answer = json.loads(r.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_every_panel_names_only_metrics_the_master_exports(live):
    for q in panel_queries(dashboard()):
        unknown = sorted(set(METRIC.findall(q["expr"])) - live["names"])
        assert not unknown, "panel %r queries %s, which the master does not export" % (
            q["panel"], unknown)


def test_the_master_exports_what_operators_watch(live):
    text, model = live["metrics"], live["model"]
    for line in ('cdsw_model_requests_total{model="%d"}' % model,
                 'cdsw_model_replicas_ready{model="%d"} 1' % model,
                 'cdsw_model_replicas_desired{model="%d"} 1' % model,
                 'cdsw_model_replicas{state="ready"} 1', 'cdsw_sessions{status="running"} 0',
                 'cdsw_job_runs{status="failed"} 0', 'cdsw_jobs_late 0', 'cdsw_models 1',
                 'cdsw_database_up 1', 'cdsw_nodes{state="ready"} 1',
                 'cdsw_http_request_duration_seconds_bucket{handler="model",code="2xx",le="+Inf"}'):
        assert line in text, line
    calls = re.search(r'^cdsw_model_requests_total\{model="%d"\} (\d+)$' % model, text, re.M)
    failures = re.search(r'^cdsw_model_request_failures_total\{model="%d"\} (\d+)$' % model,
                         text, re.M)
    assert calls and int(calls.group(1)) >= 22 and failures and int(failures.group(1)) >= 5


def test_every_panel_query_returns_data_from_prometheus(live):
    empty = []
    for q in panel_queries(dashboard()):
        result = query(live["prometheus"], q["expr"])
        if not result:
            empty.append("%s: %s" % (q["panel"], q["expr"]))
    assert not empty, "queries without data:\n" + "\n".join(empty)
    # and the numbers are the master's: one model, its one replica ready, calls per second > 0
    rate = query(live["prometheus"], "sum by (model) (rate(cdsw_model_requests_total[5m]))")
    assert rate[0]["metric"] == {"model": str(live["model"])} and float(rate[0]["value"][1]) > 0
    ratio = query(live["prometheus"], "cdsw_model_replicas_ready / cdsw_model_replicas_desired")
    assert float(ratio[0]["value"][1]) == 1.0


def test_cm_charts_and_ambari_widgets_name_metrics_the_master_exports(live):
    from tests.packaging import helpers  # noqa: F401  (scripts/packaging on sys.path)

    mdl = json.loads((ROOT / "csd" / "descriptor" / "service.mdl.in").read_text())
    for role in mdl["roles"]:
        for metric in role["metricDefinitions"]:
            names = set(METRIC.findall(metric.get("context", "")))
            assert names and names <= live["names"], metric
    service = ROOT / "ambari-mpack" / "common-services" / "CDSW" / "service"
    metrics = json.loads((service / "metrics.json").read_text())
    exported = set()
    for component, kinds in metrics.items():
        for kind in kinds["Component"]:
            for key, spec in kind["metrics"]["default"].items():
                # Ambari Metrics has no labels: NAME is the sum of the family's series,
                # NAME.VALUE the series whose label has that value
                family, _, value = spec["metric"].partition(".")
                assert family in live["names"], (component, key, family)
                if value:
                    assert re.search(r'^%s\{\w+="%s"\} ' % (family, re.escape(value)),
                                     live["metrics"], re.M), (component, key, spec["metric"])
                exported.add(key)
    widgets = json.loads((service / "widgets.json").read_text())
    for layout in widgets["layouts"]:
        for widget in layout["widgetLayoutInfo"]:
            for metric in widget["metrics"]:
                assert metric["metric_path"] in exported, (widget["widget_name"], metric)


def test_the_master_sends_the_ambari_widgets_metrics_to_ambari_metrics(live):
    """ams_collector_url set: the master posts TimelineMetrics under app id cdsw every
    ams_push_seconds, and every metric metrics.json (so every widget) names is among them, with
    the value /metrics has."""
    service = ROOT / "ambari-mpack" / "common-services" / "CDSW" / "service"
    wanted = {spec["metric"] for kinds in json.loads((service / "metrics.json").read_text())
              .values() for kind in kinds["Component"] for spec in kind["metrics"]["default"]
              .values()}
    last = live["ams"][-1].body["metrics"]
    assert {m["appid"] for m in last} == {"cdsw"} and len({m["hostname"] for m in last}) == 1
    sent = {m["metricname"]: list(m["metrics"].values())[0] for m in last}
    assert wanted <= set(sent), sorted(wanted - set(sent))
    assert sent["cdsw_up"] == 1 and sent["cdsw_nodes.ready"] == 1 and sent["cdsw_models"] == 1
    assert sent["cdsw_model_replicas.ready"] == 1 and sent["cdsw_model_requests_total"] >= 22
    assert not any(name.startswith("cdsw_http_request_duration_seconds") for name in sent)
