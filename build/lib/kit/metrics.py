"""Prometheus metrics of the model server, kept in their own CollectorRegistry (one per app, so tests and
several apps in one process never collide). Latency buckets are millisecond-scale; the client defaults are too coarse."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServeMetrics", "LATENCY_BUCKETS_S", "BATCH_BUCKETS", "CONFIDENCE_BUCKETS", "CONTENT_TYPE_LATEST"]

# Seconds (the Prometheus base unit) but spaced for a model answering in 2-200 ms.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


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
            "kit_serve_requests", "HTTP requests by route, method and status.", ["route", "method", "status"], registry=r
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
        self.predictions = Counter("kit_serve_predictions", "Predicted labels, one per text.", ["label"], registry=r)
        self.confidence = Histogram(
            "kit_serve_confidence", "Probability of the predicted label.", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.model_info = Info("kit_serve_model", "The served model.", registry=r)
        self.model_info.info(model_info)
        self.ready = Gauge("kit_serve_ready", "1 when the model is loaded, warmed up and not draining.", registry=r)
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

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
