"""The metric-name contract between the model server, the monitor, the alert rules and the dashboard: every series
name (as PromQL sees it), its type, unit and labels, so rules and panels never spell a name by hand."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge

from kit.monitor.features import DEFAULT_FEATURES, EMBEDDING_FEATURE

__all__ = [
    "Series",
    "SERVE_SERIES",
    "MONITOR_SERIES",
    "DEFAULT_DRIFT_FEATURES",
    "PREDICT_ROUTE",
    "SERVE_JOB",
    "MONITOR_JOB",
    "PUSH_TIME",
    "REQUESTS",
    "REQUEST_DURATION",
    "REQUESTS_IN_PROGRESS",
    "QUEUE_DEPTH",
    "BATCH_SIZE",
    "BATCH_DURATION",
    "READY",
    "PREDICTIONS",
    "PREDICTION_LOG_RECORDS",
    "DRIFT_STATISTIC",
    "DRIFT_THRESHOLD",
    "DRIFT_P_VALUE",
    "DRIFT_FEATURE_DETECTED",
    "DRIFT_DETECTED",
    "CLASS_SHARE",
    "REFERENCE_CLASS_SHARE",
    "MACRO_F1",
    "WINDOW_ROWS",
    "LABELLED_ROWS",
    "monitor_gauges",
]

Kind = Literal["counter", "gauge", "histogram", "info"]


@dataclass(frozen=True)
class Series:
    """One metric family.

    `name` is what PromQL selects: counters carry `_total`, histograms are queried through `_bucket`, `_sum` and
    `_count`. `unit` follows Prometheus' base units ("seconds", "ratio", "" for plain counts and scores)."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    unit: str
    help: str

    def sample(self, suffix: str = "") -> str:
        """The sample name with a histogram suffix (`bucket`, `sum`, `count`), or the plain name."""
        return f"{self.name}_{suffix}" if suffix else self.name


# Scrape job names the rules select on: the deploy stage's Service is `kit-serve`, and a ServiceMonitor's job label
# is the Service name.
SERVE_JOB = "kit-serve"
MONITOR_JOB = "kit-monitor"
# The Pushgateway's own gauge per pushed group (Unix time of its last successful push): how old a verdict is.
PUSH_TIME = "push_time_seconds"
# The one route whose latency is the model's: /metrics, /healthz and /readyz would only dilute the quantiles.
PREDICT_ROUTE = "/predict"

# The server's own series, written by kit/serve/telemetry.py (tests/test_monitor_alerts.py checks them against it).
REQUESTS = Series("kit_serve_requests_total", "counter", ("route", "method", "status"), "", "HTTP requests.")
REQUEST_DURATION = Series(
    "kit_serve_request_duration_seconds", "histogram", ("route",), "seconds", "Request latency, first byte to response."
)
REQUESTS_IN_PROGRESS = Series("kit_serve_requests_in_progress", "gauge", (), "", "Requests being handled now.")
QUEUE_DEPTH = Series("kit_serve_queue_depth", "gauge", (), "", "Texts waiting for a micro-batch.")
BATCH_SIZE = Series("kit_serve_batch_size", "histogram", (), "", "Texts per micro-batch run by the model.")
BATCH_DURATION = Series(
    "kit_serve_batch_duration_seconds", "histogram", (), "seconds", "Tokenisation plus model time per micro-batch."
)
READY = Series("kit_serve_ready", "gauge", (), "", "1 when the model is loaded, warmed up and not draining.")
PREDICTIONS = Series("kit_serve_predictions_total", "counter", ("label",), "", "Predicted labels, one per text.")
PREDICTION_LOG_RECORDS = Series(
    "kit_prediction_log_records_total", "counter", ("outcome",), "", "Prediction-log records, written or dropped."
)
SERVE_SERIES = (
    REQUESTS, REQUEST_DURATION, REQUESTS_IN_PROGRESS, QUEUE_DEPTH, BATCH_SIZE, BATCH_DURATION, READY, PREDICTIONS,
    PREDICTION_LOG_RECORDS,
)  # fmt: skip

# The monitor's gauges, one value per evaluated window (the latest), exported beside the server's /metrics.
# A statistic is the drift method's score: a p-value (ks, chisquare: drift BELOW the threshold) or a distance
# (wasserstein, MMD^2: drift ABOVE it); the threshold is on the same scale, calibrated on reference windows.
DRIFT_STATISTIC = Series(
    "kit_monitor_drift_statistic", "gauge", ("feature",), "", "Drift method's score on the latest window."
)
DRIFT_THRESHOLD = Series(
    "kit_monitor_drift_threshold", "gauge", ("feature",), "", "Calibrated threshold on the drift statistic."
)
DRIFT_P_VALUE = Series(
    "kit_monitor_drift_p_value", "gauge", ("feature",), "", "Calibrated p-value of the statistic against null windows."
)
# Decisions after multiple-testing control across features: what the drift alert fires on.
DRIFT_FEATURE_DETECTED = Series(
    "kit_monitor_drift_feature_detected", "gauge", ("feature",), "", "1 when the feature drifted in the latest window."
)
DRIFT_DETECTED = Series(
    "kit_monitor_drift_detected", "gauge", (), "", "1 when the latest window drifted on any feature."
)
CLASS_SHARE = Series("kit_monitor_class_share_ratio", "gauge", ("label",), "ratio", "Predicted class share, window.")
REFERENCE_CLASS_SHARE = Series(
    "kit_monitor_reference_class_share_ratio", "gauge", ("label",), "ratio", "Predicted class share, reference."
)
MACRO_F1 = Series("kit_monitor_macro_f1_ratio", "gauge", (), "ratio", "Realized macro-F1 on the window's labels.")
WINDOW_ROWS = Series("kit_monitor_window_rows", "gauge", (), "", "Predictions in the latest window.")
LABELLED_ROWS = Series("kit_monitor_window_labelled_rows", "gauge", (), "", "Delayed labels joined to the window.")
MONITOR_SERIES = (
    DRIFT_STATISTIC,
    DRIFT_THRESHOLD,
    DRIFT_P_VALUE,
    DRIFT_FEATURE_DETECTED,
    DRIFT_DETECTED,
    CLASS_SHARE,
    REFERENCE_CLASS_SHARE,
    MACRO_F1,
    WINDOW_ROWS,
    LABELLED_ROWS,
)
# Per-feature drift panels are drawn for these unless the caller names its own: the detector's default features
# and its embedding drift, named where the detector defines them.
DEFAULT_DRIFT_FEATURES = (*(f.name for f in DEFAULT_FEATURES), EMBEDDING_FEATURE)


def monitor_gauges(registry: CollectorRegistry | None = None, *, series: Iterable[Series] = MONITOR_SERIES) -> dict:
    """prometheus_client gauges for the monitor's series, named by the contract.

    Args:
        registry: where to register them (a fresh CollectorRegistry when None, never the global one).
        series: which of MONITOR_SERIES to create.

    Returns:
        series name -> Gauge.
    """
    registry = registry if registry is not None else CollectorRegistry()
    out = {}
    for s in series:
        # prometheus_client appends `_ratio` itself when given unit="ratio"; strip it so the name stays ours.
        base = s.name.removesuffix(f"_{s.unit}") if s.unit else s.name
        out[s.name] = Gauge(base, s.help, list(s.labels), unit=s.unit, registry=registry)
    return out
