"""The scale-to-zero set: a Knative Service or a KServe InferenceService running the same server container.
Both are CRDs without a `kubernetes` client model: plain dicts whose container part is built from the client's models."""

from __future__ import annotations

from typing import Any

from kit.core.params import Params
from kit.deploy.pod import admin_port, api_key_volume, object_labels, server_container, tmp_volume
from kit.deploy.sizing import Sizing

__all__ = ["knative_service", "kserve_service"]


def _volumes(params: Params, tmp_vol: Any) -> list[Any]:
    keys = api_key_volume(params)
    return [tmp_vol] + ([keys[0]] if keys else [])


def knative_service(params: Params, sz: Sizing) -> dict[str, Any]:
    """Knative Serving Service with min-scale 0. CRD: no kubernetes client model exists, so a plain dict whose
    container part is still built from the client's models."""
    from kubernetes import client as k8s

    d = params.deploy
    api = k8s.ApiClient()
    container = api.sanitize_for_serialization(server_container(params, sz, startup=False, single_port=True))
    # Knative routes to the single declared port; probe ports must be that port by number (names are rejected).
    for probe in ("readinessProbe", "livenessProbe"):
        container[probe]["httpGet"]["port"] = d.container_port
    container["ports"] = [{"name": "http1", "containerPort": d.container_port, "protocol": "TCP"}]
    container.pop("lifecycle", None)  # the activator/queue-proxy drains requests before the pod stops
    tmp_vol, _ = tmp_volume(k8s)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": f"{d.name}-serverless",
            "namespace": d.namespace,
            "labels": object_labels(params, "serverless"),
        },
        "spec": {
            "template": {
                "metadata": {
                    "labels": object_labels(params, "serverless"),
                    "annotations": {
                        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
                        "autoscaling.knative.dev/metric": "concurrency",
                        # Soft per-pod concurrency target: what one server sustained within the p99 target.
                        "autoscaling.knative.dev/target": str(sz.concurrency_target),
                        "autoscaling.knative.dev/min-scale": "0",
                        "autoscaling.knative.dev/max-scale": str(d.scale_to_zero_max_scale),
                        "autoscaling.knative.dev/scale-to-zero-pod-retention-period": d.scale_to_zero_retention,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(admin_port(params)),  # bound beside the routed port
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containerConcurrency": 0,  # no hard cap; the server micro-batches concurrent requests
                    "timeoutSeconds": 30,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": [api.sanitize_for_serialization(v) for v in _volumes(params, tmp_vol)],
                },
            }
        },
    }


def kserve_service(params: Params, sz: Sizing) -> dict[str, Any]:
    """KServe InferenceService (custom predictor container) with minReplicas 0 (needs KServe serverless mode)."""
    from kubernetes import client as k8s

    d = params.deploy
    api = k8s.ApiClient()
    container = api.sanitize_for_serialization(server_container(params, sz, startup=False, single_port=True))
    container["name"] = "kserve-container"
    container.pop("lifecycle", None)
    tmp_vol, _ = tmp_volume(k8s)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{d.name}-serverless",
            "namespace": d.namespace,
            "labels": object_labels(params, "serverless"),
            "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 0,
                "maxReplicas": d.scale_to_zero_max_scale,
                "scaleMetric": "concurrency",
                "scaleTarget": sz.concurrency_target,
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": [api.sanitize_for_serialization(v) for v in _volumes(params, tmp_vol)],
            }
        },
    }
