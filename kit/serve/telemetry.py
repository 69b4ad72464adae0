"""Observability of the model server: Prometheus metrics in a CollectorRegistry of their own (one per app, so apps in
one process never collide) with millisecond-scale buckets, and the ASGI middleware that writes JSON access logs."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "ServeMetrics",
    "ObserveMiddleware",
    "setup_access_log",
    "LATENCY_BUCKETS_S",
    "BATCH_BUCKETS",
    "CONFIDENCE_BUCKETS",
    "PREDICTION_LOG_OUTCOMES",
    "CONTENT_TYPE_LATEST",
]

# Seconds (the Prometheus base unit) but spaced for a model answering in 2-200 ms.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
access_log = logging.getLogger("kit.serve.access")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
PREDICTION_LOG_OUTCOMES = ("written", "dropped")


class ServeMetrics:
    """All series the server exports; `render()` gives the text exposition for GET /metrics."""

    def __init__(self, labels: Iterable[str], model_info: dict[str, str]):
        """Args:
        labels: class names, so every label's prediction counter exists (at 0) from the start.
        model_info: label values of the `kit_serve_model_info` series (variant, version, ...).
        """
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kit_serve_requests", "HTTP requests by route, method, status.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "kit_serve_request_duration_seconds",
            "Request latency from first byte received to response sent.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_progress = Gauge("kit_serve_requests_in_progress", "Requests being handled now.", registry=r)
        self.batch_size = Histogram(
            "kit_serve_batch_size", "Texts per micro-batch run by the model.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "kit_serve_batch_duration_seconds",
            "Tokenisation plus ONNX Runtime time per micro-batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_depth = Gauge("kit_serve_queue_depth", "Texts waiting for a micro-batch.", registry=r)
        self.batch_wait = Gauge(
            "kit_serve_batch_wait_limit_seconds",
            "Longest wait for a micro-batch to fill (serve.max_delay_ms, or less when serve.batch_wait is adaptive).",
            registry=r,
        )
        self.predictions = Counter("kit_serve_predictions", "Predicted labels, one per text.", ["label"], registry=r)
        self.confidence = Histogram(
            "kit_serve_confidence", "Probability of the predicted label.", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.model_info = Info("kit_serve_model", "The served model.", registry=r)
        self.model_info.info(model_info)
        self.ready = Gauge("kit_serve_ready", "1 when the model is loaded, warmed up and not draining.", registry=r)
        self.prediction_log = Counter(
            "kit_prediction_log_records",
            "Prediction-log records: written to a file, or dropped (queue full, write error, shutdown).",
            ["outcome"],
            registry=r,
        )
        for outcome in PREDICTION_LOG_OUTCOMES:  # both series exist (at 0) from the start, so rates never lack one
            self.prediction_log.labels(outcome=outcome)
        self._label_counters = {label: self.predictions.labels(label=label) for label in labels}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model run of `size` texts."""
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def observe_predictions(self, labels: list[str], confidences: Iterable[float]) -> None:
        """Count predicted labels and their confidences."""
        for label in labels:
            self._label_counters[label].inc()
        for c in confidences:
            self.confidence.observe(c)

    def observe_prediction_log(self, outcome: str, n: int) -> None:
        """Count `n` prediction-log records as "written" or "dropped" (called from the log's writer thread)."""
        self.prediction_log.labels(outcome=outcome).inc(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)


class ObserveMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): request metrics and one JSON access-log line per request
    (`ts, method, path, status, duration_ms, n_texts`; the handler puts n_texts in the request state)."""

    def __init__(self, app: Any, metrics: ServeMetrics, routes: frozenset[str], access_log: bool = True):
        self.app, self.metrics, self.routes, self.log_enabled = app, metrics, routes, access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises past every handler
        req_state = scope.setdefault("state", {})

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m = self.metrics
        m.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            m.in_progress.dec()
            seconds = time.perf_counter() - start
            path, method = scope["path"], scope["method"]
            # Unknown paths and methods share one label value: hostile clients cannot blow up series cardinality.
            route = path if path in self.routes else "other"
            m.observe_request(route, method if method in _METHODS else "other", status, seconds)
            if self.log_enabled:
                line = {
                    "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "method": method[:16],
                    "path": path[:200],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "n_texts": req_state.get("n_texts", 0),
                }
                access_log.info(json.dumps(line))


def setup_access_log() -> None:
    """Send access-log lines, bare JSON one per line, to stdout (idempotent: apps in one process share the logger)."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
