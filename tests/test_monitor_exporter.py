"""The drift exporter (kit.monitor.exporter) with real components: `kit serve` over HTTP, Debian's Pushgateway and a
Prometheus evaluating the kit's rules, whose API must show the series and fire the drift alert for the shift only."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Summary, generate_latest, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from kit.monitor import metric_names as m
from kit.monitor.alerts import ALERT_NAMES, AlertSettings, write_rules
from kit.monitor.calibrate import CalibrationSettings
from kit.monitor.exporter import DriftPublisher, PushSettings, WindowSignals, verdict_registry, window_signals
from kit.monitor.features import FeatureSpec, MonitorError
from kit.monitor.profile import Reference, build_reference
from kit.monitor.verdict import DRIFT, NO_DRIFT, NOT_ENOUGH_DATA, FeatureVerdict, WindowVerdict, window_verdict
from tests.fixtures_monitor import features
from tests.fixtures_prometheus import PROMETHEUS, PUSHGATEWAY, Prom, run_prometheus, run_pushgateway, scrape_job
from tests.fixtures_serve import ServerProcess, build_tiny_serving_dir, free_port

FEATS = (
    FeatureSpec(name="length_chars", kind="numeric"),
    FeatureSpec(name="length_tokens", kind="numeric"),
    FeatureSpec(name="confidence", kind="numeric"),
    FeatureSpec(name="label", kind="categorical", method="chisquare"),
)
WINDOW = 150
# Cheap calibration for the test (200 null windows, under a second); the stage default is 1 % over more windows.
CALIBRATION = CalibrationSettings(target=0.02, method="bh", window_size=WINDOW, min_tail=1, seed=0)
DRIFT_ALERT, DRIFT_FOR_S = "KitMonitorFeatureDrift", 2
# Test-only: short rate window and `for:`, 1 s scrapes and evaluations (run_prometheus' interval).
TEST_ALERTS = AlertSettings(
    rate_window="15s", for_durations={**dict.fromkeys(ALERT_NAMES, "0s"), DRIFT_ALERT: f"{DRIFT_FOR_S}s"}
)
PUSH_GATEWAY_JOB = "kit-pushgateway"  # the scrape job; honor_labels keeps the pushed job="kit-monitor"
INSTANCE = "kit-monitor-test"
WORDS = (
    "the service phone flight update store report love great awful broken today my this app again really new "
    "order delivery price support screen battery quick slow friendly rude refund late early"
).split()

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PUSHGATEWAY is None,
    reason="prometheus or prometheus-pushgateway not found: apt-get install prometheus prometheus-pushgateway "
    "(.ci/run installs both)",
)


@pytest.fixture(scope="module")
def synthetic_reference() -> Reference:
    return build_reference(features(1200, seed=1), model_version="v1", features=FEATS, settings=CALIBRATION)


def _exposition(registry: CollectorRegistry) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted labels: value}} of what a registry exposes."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


# ---------------------------------------------------------------------------------------------- gauges, no network
def test_a_drifted_window_becomes_the_contracts_gauges(synthetic_reference):
    window = features(WINDOW, seed=7, length_scale=2.0, label_p=(0.1, 0.3, 0.6))
    verdict = window_verdict(synthetic_reference, window, model_version="v1")
    assert verdict.status == DRIFT and "length_chars" in verdict.drifted_features
    truth = window["label"].where(np.arange(WINDOW) % 3 == 0)  # a third of the delayed labels arrived
    truth.iloc[0] = "negative" if truth.iloc[0] != "negative" else "neutral"  # one of them disagrees
    signals = window_signals(verdict, synthetic_reference, window, true_labels=truth)
    assert signals.labelled_rows == 50 and 0.5 < signals.macro_f1 < 1.0
    exp = _exposition(verdict_registry(signals))
    assert set(exp) == {s.name for s in m.MONITOR_SERIES}
    for s in (m.DRIFT_STATISTIC, m.DRIFT_THRESHOLD, m.DRIFT_P_VALUE, m.DRIFT_FEATURE_DETECTED):
        assert {dict(k)["feature"] for k in exp[s.name]} == {f.name for f in FEATS}
    key, feature = (("feature", "length_chars"),), verdict.features["length_chars"]
    assert exp[m.DRIFT_STATISTIC.name][key] == feature.score
    assert exp[m.DRIFT_THRESHOLD.name][key] == feature.threshold
    assert exp[m.DRIFT_P_VALUE.name][key] == feature.p_value
    flags = {dict(k)["feature"]: v for k, v in exp[m.DRIFT_FEATURE_DETECTED.name].items()}
    assert flags == {name: float(f.drifted) for name, f in verdict.features.items()}
    assert exp[m.DRIFT_DETECTED.name][()] == 1 and exp[m.WINDOW_ROWS.name][()] == WINDOW
    assert exp[m.LABELLED_ROWS.name][()] == 50 and exp[m.MACRO_F1.name][()] == signals.macro_f1
    shares = {dict(k)["label"]: v for k, v in exp[m.CLASS_SHARE.name].items()}
    assert shares == pytest.approx(window["label"].value_counts(normalize=True).to_dict())
    ref = {dict(k)["label"]: v for k, v in exp[m.REFERENCE_CLASS_SHARE.name].items()}
    assert ref == synthetic_reference.profile.sketches["label"].shares


def test_a_calm_window_publishes_zero_decisions_and_a_small_one_no_decision(synthetic_reference):
    calm = window_verdict(synthetic_reference, features(WINDOW, seed=8), model_version="v1")
    assert calm.status == NO_DRIFT
    exp = _exposition(verdict_registry(window_signals(calm, synthetic_reference, features(WINDOW, seed=8))))
    assert exp[m.DRIFT_DETECTED.name][()] == 0 and set(exp[m.DRIFT_FEATURE_DETECTED.name].values()) == {0.0}
    assert m.MACRO_F1.name not in exp  # no delayed labels: no quality figure, rather than a made-up one
    small = features(10, seed=9)
    tiny = window_verdict(synthetic_reference, small, model_version="v1")
    assert tiny.status == NOT_ENOUGH_DATA
    exp = _exposition(verdict_registry(window_signals(tiny, synthetic_reference, small, true_labels=small["label"])))
    # Neither "drift" nor "no drift": only the row counts, so no alert can fire or resolve on ten rows.
    assert set(exp) == {m.WINDOW_ROWS.name, m.LABELLED_ROWS.name} and exp[m.WINDOW_ROWS.name][()] == 10


def test_window_signals_refuse_unusable_inputs(synthetic_reference):
    window = features(WINDOW, seed=8)
    verdict = window_verdict(synthetic_reference, window, model_version="v1")
    with pytest.raises(MonitorError, match="predicted-label column 'label'"):
        window_signals(verdict, synthetic_reference, window.drop(columns="label"))
    with pytest.raises(MonitorError, match="aligned"):
        window_signals(verdict, synthetic_reference, window, true_labels=window["label"].iloc[::-1])
    no_label = build_reference(features(1200, seed=1), model_version="v1", features=FEATS[:1], settings=CALIBRATION)
    with pytest.raises(MonitorError, match="no class shares for 'label'"):
        window_signals(verdict, no_label, window)


def test_publisher_names_the_gateway_it_cannot_reach():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    publisher = DriftPublisher(PushSettings(url=url, timeout_s=2))
    signals = _signals_stub()
    with pytest.raises(MonitorError, match=f"cannot reach the Pushgateway at {url} to push"):
        publisher.publish(signals)


def _signals_stub(*, drifted: bool | None = None) -> WindowSignals:
    """A hand-made window: not enough data (drifted None), or one feature judged drifted or not."""
    if drifted is None:
        verdict = WindowVerdict(
            status=NOT_ENOUGH_DATA, rows=3, min_rows=50, model_version="v1", method="bh", level=0.01, features={}
        )
        return WindowSignals(verdict=verdict, class_shares={}, reference_shares={})
    feature = FeatureVerdict(
        method="ks", score=0.001, p_value=0.002, threshold=0.01, lower_is_drift=True, drifted=drifted
    )
    verdict = WindowVerdict(
        status=DRIFT if drifted else NO_DRIFT, rows=WINDOW, min_rows=50, model_version="v1", method="bh",
        level=0.01, features={"length_chars": feature},
    )  # fmt: skip
    return WindowSignals(verdict=verdict, class_shares={"neutral": 1.0}, reference_shares={"neutral": 0.5})


# ------------------------------------------------------------------------------------------------- real components
class Stack:
    """A running `kit serve`, Pushgateway and Prometheus, with the publisher pointed at the gateway."""

    def __init__(self, serve_url: str, prom: Prom, publisher: DriftPublisher, model_dir: Path):
        self.serve_url, self.prom, self.publisher, self.model_dir = serve_url, prom, publisher, model_dir
        self.predict_requests = 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom-stack")
    model_dir = build_tiny_serving_dir(tmp / "model", max_length=64)
    write_rules(tmp, TEST_ALERTS)
    with ExitStack() as stack_:
        server = ServerProcess(model_dir, tmp, access_log=False)
        stack_.callback(server.log.close)
        stack_.callback(server.terminate)  # runs first: callbacks unwind last-in, first-out
        gateway_url, gateway_port = stack_.enter_context(run_pushgateway(tmp))
        server.wait_ready()
        scrapes = [
            scrape_job(m.SERVE_JOB, server.port),
            scrape_job(PUSH_GATEWAY_JOB, gateway_port, honor_labels=True),
        ]
        prom = stack_.enter_context(run_prometheus(tmp, scrapes, [tmp / "kit-alerts.rules.yml"]))
        publisher = DriftPublisher(PushSettings(url=gateway_url, instance=INSTANCE))
        yield Stack(server.url, prom, publisher, model_dir)


def _texts(n: int, *, seed: int, words: tuple[int, int] = (4, 14)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(n)]


def _replay(stack: Stack, texts: list[str], batch: int = 50) -> tuple[pd.DataFrame, str]:
    """POST the texts to /predict in batches; the window's features from each text and its answer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(stack.model_dir / "tokenizer.json"))
    rows, version = [], ""
    with httpx.Client(base_url=stack.serve_url, timeout=30) as client:
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            r = client.post("/predict", json={"texts": chunk})
            assert r.status_code == 200, r.text
            stack.predict_requests += 1
            body = r.json()
            version = body["model_version"]
            for text, pred, enc in zip(chunk, body["predictions"], tok.encode_batch(chunk), strict=True):
                rows.append((len(text), len(enc.ids), pred["score"], pred["label"]))
    return pd.DataFrame(rows, columns=[f.name for f in FEATS]), version


def _rule_evaluated_after(prom: Prom, rule: str, t0: float, timeout: float = 20) -> dict:
    """The rule's state once Prometheus has evaluated it at least once after wall time `t0`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = prom.rules()[rule]
        if datetime.fromisoformat(state["lastEvaluation"]).timestamp() > t0:
            return state
        time.sleep(0.3)
    raise AssertionError(f"{rule} not evaluated after {t0}")


def _published(prom: Prom, verdict: WindowVerdict) -> None:
    """Wait until Prometheus holds this window's decisions (scraped from the gateway)."""
    sel = f'{{job="{m.MONITOR_JOB}",instance="{INSTANCE}"}}'
    drifted = len(verdict.drifted_features)
    prom.wait_for(
        f"sum({m.DRIFT_FEATURE_DETECTED.name}{sel}) == {drifted}"
        f" and on () {m.WINDOW_ROWS.name}{sel} == {verdict.rows}"
        f" and on () {m.DRIFT_DETECTED.name}{sel} == {int(drifted > 0)}"
    )


def _labels(prom: Prom, expr: str) -> list[dict]:
    res = prom.query(expr)
    assert res["status"] == "success", res
    return [r["metric"] for r in res["data"]["result"]]


@needs_prometheus
def test_prometheus_sees_serve_and_drift_series_and_fires_the_drift_alert_for_the_shift_only(stack):
    prom = stack.prom
    reference_frame, version = _replay(stack, _texts(1200, seed=1))
    reference = build_reference(reference_frame, model_version=version, features=FEATS, settings=CALIBRATION)

    control, _ = _replay(stack, _texts(WINDOW, seed=2))
    calm = window_verdict(reference, control, model_version=version)
    assert calm.status == NO_DRIFT, calm
    stack.publisher.publish(window_signals(calm, reference, control))
    _published(prom, calm)
    # Evaluated for longer than `for:` on the control's gauges: the drift alert is neither pending nor firing.
    state = _rule_evaluated_after(prom, DRIFT_ALERT, time.time() + DRIFT_FOR_S + 1)
    assert state["health"] == "ok" and state["state"] == "inactive" and not state["alerts"], state
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == DRIFT_ALERT]

    # Longer texts: three times the words of the reference.
    shifted, _ = _replay(stack, _texts(WINDOW, seed=3, words=(12, 42)))
    drift = window_verdict(reference, shifted, model_version=version)
    assert drift.status == DRIFT and "length_chars" in drift.drifted_features, drift
    stack.publisher.publish(window_signals(drift, reference, shifted))
    firing = prom.wait_for(f'ALERTS{{alertname="{DRIFT_ALERT}",alertstate="firing"}}', timeout=30)
    assert {a["metric"]["feature"] for a in firing} == set(drift.drifted_features)
    alert = firing[0]["metric"]
    assert (alert["job"], alert["instance"], alert["severity"]) == (m.MONITOR_JOB, INSTANCE, "warning")

    _assert_series(stack, drift, labels=set(reference.profile.sketches["label"].shares))

    # The next window replaces the whole group: ten rows are not enough data, the drift series go and the alert ends.
    small, _ = _replay(stack, _texts(10, seed=4, words=(12, 42)))
    tiny = window_verdict(reference, small, model_version=version)
    stack.publisher.publish(window_signals(tiny, reference, small))
    prom.wait_for(f'absent({m.DRIFT_FEATURE_DETECTED.name}{{job="{m.MONITOR_JOB}"}}) and on () '
                  f'{m.WINDOW_ROWS.name}{{job="{m.MONITOR_JOB}"}} == 10')  # fmt: skip
    state = _rule_evaluated_after(prom, DRIFT_ALERT, time.time())
    assert state["state"] == "inactive", state


def _assert_series(stack: Stack, drift: WindowVerdict, *, labels: set[str]) -> None:
    """(a): the server's request and latency series and the monitor's drift series, with the contract's labels."""
    prom, sj = stack.prom, f'job="{m.SERVE_JOB}"'
    ok = f'{m.REQUESTS.name}{{{sj},route="{m.PREDICT_ROUTE}",method="POST",status="200"}}'
    res = prom.wait_for(f"{ok} >= {stack.predict_requests}")
    assert set(res[0]["metric"]) == {"__name__", "job", "instance", *m.REQUESTS.labels}
    buckets = _labels(prom, f'{m.REQUEST_DURATION.sample("bucket")}{{{sj},route="{m.PREDICT_ROUTE}"}}')
    assert len(buckets) > 5 and {"+Inf"} < {b["le"] for b in buckets}
    assert all(set(b) == {"__name__", "job", "instance", "route", "le"} for b in buckets)
    count = prom.query(f'sum({m.REQUEST_DURATION.sample("count")}{{{sj},route="{m.PREDICT_ROUTE}"}})')
    assert float(count["data"]["result"][0]["value"][1]) >= stack.predict_requests
    assert _labels(prom, f"{m.PREDICTIONS.name}{{{sj}}}"), "no predicted-label counter"

    mj = f'job="{m.MONITOR_JOB}",instance="{INSTANCE}"'
    for s in (m.DRIFT_STATISTIC, m.DRIFT_THRESHOLD, m.DRIFT_P_VALUE, m.DRIFT_FEATURE_DETECTED):
        got = _labels(prom, f"{s.name}{{{mj}}}")
        assert all(set(g) == {"__name__", "job", "instance", *s.labels} for g in got), got
        assert {g["feature"] for g in got} == set(drift.features), s.name
    p_len = prom.query(f'{m.DRIFT_P_VALUE.name}{{{mj},feature="length_chars"}}')["data"]["result"][0]["value"][1]
    assert float(p_len) == pytest.approx(drift.features["length_chars"].p_value)
    for s in (m.CLASS_SHARE, m.REFERENCE_CLASS_SHARE):
        assert {g["label"] for g in _labels(prom, f"{s.name}{{{mj}}}")} == labels, s.name
    assert _labels(prom, f"{m.DRIFT_DETECTED.name}{{{mj}}} == 1")


needs_gateway = pytest.mark.skipif(PUSHGATEWAY is None, reason="prometheus-pushgateway not found (.ci/run installs it)")


def _groups(url: str) -> dict[tuple, set[str]]:
    """The metric names of every group the gateway holds, by grouping labels."""
    data = httpx.get(f"{url}/api/v1/metrics", timeout=10).json()["data"]
    return {tuple(sorted(g["labels"].items())): {k for k, v in g.items() if isinstance(v, dict) and "metrics" in v}
            for g in data}  # fmt: skip


@needs_gateway
def test_publish_replaces_the_group_withdraw_deletes_it_and_a_refused_push_is_a_monitor_error(tmp_path):
    with run_pushgateway(tmp_path) as (url, _):
        publisher = DriftPublisher(PushSettings(url=url, instance=INSTANCE))
        group = (("instance", INSTANCE), ("job", m.MONITOR_JOB))
        publisher.publish(_signals_stub(drifted=True))
        assert {m.DRIFT_P_VALUE.name, m.CLASS_SHARE.name, m.WINDOW_ROWS.name} <= _groups(url)[group]
        # A PUT replaces the group: the small window's push leaves no drift series of the window before behind.
        publisher.publish(_signals_stub())
        assert _groups(url)[group] == {m.WINDOW_ROWS.name, m.LABELLED_ROWS.name, "push_time_seconds",
                                       "push_failure_time_seconds"}  # fmt: skip
        publisher.withdraw()
        assert group not in _groups(url)
        # Another group holds the window-rows name as a summary: the gateway refuses our gauge as inconsistent.
        registry = CollectorRegistry()
        Summary(m.WINDOW_ROWS.name, "clash", registry=registry).observe(1)
        push_to_gateway(url, job="other", registry=registry)
        with pytest.raises(
            MonitorError, match=rf"Pushgateway at {url} refused the push \(400\): .*{m.WINDOW_ROWS.name}"
        ):
            publisher.publish(_signals_stub())
