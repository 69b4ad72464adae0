"""The Grafana dashboard and its provisioning files, and every panel query and alert expression run through a real
Prometheus (Debian's binary on loopback) scraping the server's real metrics class and the monitor's gauges."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from kit.monitor import metric_names as m
from kit.monitor.alerts import ALERT_NAMES, AlertSettings, alert_rules, write_rules
from kit.monitor.dashboard import RATE, DashboardSettings, build_dashboard, provisioning, write_dashboard
from kit.serve.telemetry import ServeMetrics
from tests.fixtures_prometheus import PROMETHEUS, run_prometheus, scrape_job

LABELS = ("negative", "neutral", "positive")
DRIFTED, CALM = "length_chars", "unk_rate"
# Short windows for the test only: 1 s scrapes, so 15 s holds enough samples for rate().
TEST_ALERTS = AlertSettings(rate_window="15s", for_durations=dict.fromkeys(ALERT_NAMES, "0s"))
QUERY_RATE = "15s"


def _targets(board: dict) -> list[tuple[str, dict]]:
    """(panel title, target) for every query of every panel, rows' nested panels included."""
    panels = [p for top in board["panels"] for p in (top, *top.get("panels", []))]
    return [(p["title"], t) for p in panels for t in p.get("targets", [])]


def test_dashboard_has_the_panels_and_names_the_provisioned_datasource(tmp_path):
    settings = DashboardSettings(features=("length_chars", "embedding_mmd2"))
    paths = write_dashboard(tmp_path, settings)
    board = json.loads(paths["dashboard"].read_text())
    assert "__inputs" not in board and "__requires" not in board
    titles = {p["title"] for p in board["panels"] if p["type"] == "timeseries"}
    assert {"Request rate", "Latency p50 / p99 (/predict)", "Error ratio (5xx)", "Batch size", "Queue depth"} <= titles
    assert {"Class shares", "Drift: length_chars", "Drift: embedding_mmd2", "Realized macro-F1"} <= titles
    uid = yaml.safe_load(paths["datasources/kit.yaml"].read_text())["datasources"][0]["uid"]
    assert uid == settings.datasource_uid
    targets = _targets(board)
    assert targets and all(t["datasource"]["uid"] == uid and t["expr"] for _, t in targets)
    assert all(p["datasource"]["uid"] == uid for p in board["panels"] if p["type"] == "timeseries")
    drift = next(p for p in board["panels"] if p["title"] == "Drift: length_chars")
    assert [t["legendFormat"] for t in drift["targets"]] == ["statistic", "threshold"]
    provider = yaml.safe_load(paths["dashboards/kit.yaml"].read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == settings.dashboards_path
    # The check on uids can fail: another datasource uid gives a dashboard that does not match this provisioning.
    other = build_dashboard(DashboardSettings(datasource_uid="elsewhere"))
    assert {t["datasource"]["uid"] for _, t in _targets(other)} == {"elsewhere"} != {uid}
    assert provisioning(settings)["datasources/kit.yaml"]["datasources"][0]["isDefault"] is True


def _exporters(stop: threading.Event) -> tuple[list, threading.Thread]:
    """The server's real ServeMetrics and the monitor's gauges, each on its own loopback HTTP server, with a thread
    that keeps traffic flowing so rate() has something to see."""
    serve = ServeMetrics(LABELS, {"version": "test", "variant": "onnx_int8"})
    serve.ready.set(1)
    registry = CollectorRegistry()
    gauges = m.monitor_gauges(registry)
    for feature in m.DEFAULT_DRIFT_FEATURES:
        gauges[m.DRIFT_STATISTIC.name].labels(feature).set(0.3)
        gauges[m.DRIFT_THRESHOLD.name].labels(feature).set(0.2)
        gauges[m.DRIFT_P_VALUE.name].labels(feature).set(0.001 if feature == DRIFTED else 0.4)
        gauges[m.DRIFT_FEATURE_DETECTED.name].labels(feature).set(1 if feature == DRIFTED else 0)
    gauges[m.DRIFT_DETECTED.name].set(1)
    for label in LABELS:
        gauges[m.CLASS_SHARE.name].labels(label).set(1 / 3)
        gauges[m.REFERENCE_CLASS_SHARE.name].labels(label).set(1 / 3)
    gauges[m.MACRO_F1.name].set(0.8)
    gauges[m.WINDOW_ROWS.name].set(500)
    gauges[m.LABELLED_ROWS.name].set(100)
    # What the Pushgateway adds to each pushed group: a fresh verdict, so the stale-verdict alert stays silent.
    Gauge(m.PUSH_TIME, "Last push of the group.", registry=registry).set(time.time())

    def traffic() -> None:
        rng = random.Random(0)
        while not stop.is_set():
            serve.observe_request(
                m.PREDICT_ROUTE, "POST", 503 if rng.random() < 0.05 else 200, rng.uniform(0.005, 0.05)
            )
            serve.observe_batch(rng.randint(1, 32), rng.uniform(0.002, 0.03))
            serve.observe_predictions([rng.choice(LABELS)], [rng.uniform(0.4, 1.0)])
            serve.queue_depth.set(rng.randint(0, 10))
            stop.wait(0.02)

    servers = [start_http_server(0, addr="127.0.0.1", registry=r)[0] for r in (serve.registry, registry)]
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    return servers, thread


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None:
        pytest.skip("prometheus not found: apt-get install prometheus (.ci/run installs it)")
    stop = threading.Event()
    servers, thread = _exporters(stop)
    try:
        write_rules(tmp_path, TEST_ALERTS)
        jobs = {m.SERVE_JOB: servers[0].server_port, m.MONITOR_JOB: servers[1].server_port}
        scrapes = [scrape_job(job, port) for job, port in jobs.items()]
        with run_prometheus(tmp_path, scrapes, [tmp_path / "kit-alerts.rules.yml"]) as prom:
            yield prom
    finally:
        stop.set()
        thread.join(timeout=5)
        for server in servers:
            server.shutdown()
            server.server_close()


def test_every_panel_query_and_alert_expression_runs_on_a_real_prometheus(prometheus):
    # Enough scrapes for every rate window before asking.
    prometheus.wait_for(f"count(up == 1) == 2 and on () count(rate({m.REQUESTS.name}[{QUERY_RATE}]) > 0) > 0")
    prometheus.wait_for(f"rate({m.BATCH_SIZE.sample('count')}[{QUERY_RATE}]) > 0")
    empty, errors = [], []
    for title, target in _targets(build_dashboard()):
        expr = target["expr"].replace(RATE, QUERY_RATE)
        assert "$" not in expr, f"{title}: Grafana variable left in {expr}"
        res = prometheus.query(expr)
        if res["status"] != "success":
            errors.append(f"{title}: {expr}: {res.get('error')}")
        elif not res["data"]["result"]:
            empty.append(f"{title} / {target['legendFormat']}: {expr}")
    assert not errors, "\n".join(errors)
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    for rule in alert_rules(TEST_ALERTS):
        res = prometheus.query(rule.expr)
        assert res["status"] == "success", f"{rule.alert}: {res.get('error')}"
    # The query check can fail: a malformed expression comes back as an error, not as an empty result.
    assert prometheus.query(f"sum(rate({m.REQUESTS.name}[{QUERY_RATE}])")["status"] == "error"


def test_prometheus_loads_the_rules_and_fires_only_what_the_series_warrant(prometheus):
    firing = prometheus.wait_for('ALERTS{alertname="KitMonitorFeatureDrift",alertstate="firing"}')
    assert {a["metric"]["feature"] for a in firing} == {DRIFTED}
    # 5 % of the test traffic gets a 503, above the 1 % tolerated.
    prometheus.wait_for('ALERTS{alertname="KitServeErrorRatioHigh",alertstate="firing"}')
    rules = prometheus.rules()
    assert set(rules) == set(ALERT_NAMES)
    assert all(r["health"] == "ok" for r in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    # Scraped, ready, fast, shallow queue, steady shares, good F1: nothing else fires.
    alerts = prometheus.alerts()
    assert {a["labels"]["alertname"] for a in alerts} == {"KitMonitorFeatureDrift", "KitServeErrorRatioHigh"}, alerts
