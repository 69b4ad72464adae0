"""The monitoring set: the CronJob that judges the prediction log every 15 minutes and pushes its verdict, the claims
for the log and the reference profile, its network policy and the ServiceMonitor that scrapes the server.

The alert rules (a PrometheusRule) are not built here: kit.monitor owns them and kit.deploy may not import it. They
are written by `kit monitor rules DIR` into a directory of their own (not deploy/k8s, the deploy stage's output), and
validated and applied from there (`kit deploy validate --dir DIR`, `kit deploy apply --dir DIR`)."""

from __future__ import annotations

from typing import Any

from kit.core.params import Params
from kit.deploy.pod import (
    checkov_skips,
    container_env,
    container_security,
    image_ref,
    network_policy_object,
    object_labels,
    pod_security,
    selector_labels,
    tmp_volume,
)

__all__ = [
    "LOG_MOUNT",
    "REFERENCE_MOUNT",
    "MONITOR_SCHEDULE",
    "MONITOR_WINDOW",
    "PUSHGATEWAY_URL",
    "PREDICTION_LOG_NOTE",
    "prediction_log_claim",
    "prediction_log_mount",
    "reference_claim",
    "monitor_cronjob",
    "monitor_network_policy",
    "service_monitor",
]

LOG_MOUNT, REFERENCE_MOUNT = "/logs", "/reference"
# One window per run, as long as the schedule's period: every prediction is judged once.
MONITOR_SCHEDULE, MONITOR_WINDOW = "*/15 * * * *", "15m"
# kube-prometheus' Pushgateway Service; its scrape job must set honor_labels: true (kit.monitor.exporter).
PUSHGATEWAY_URL, PUSHGATEWAY_PORT = "http://pushgateway.monitoring:9091", 9091
LOG_STORAGE, REFERENCE_STORAGE = "10Gi", "1Gi"
# The server's params decide whether it logs: the claim is mounted either way, logging is switched on in params.
PREDICTION_LOG_NOTE = (
    f"the claim is mounted at {LOG_MOUNT}; the server writes its prediction log there only when the params.yaml it "
    f"reads sets serve.prediction_log.enabled: true and serve.prediction_log.dir: {LOG_MOUNT}"
)


def _claim(params: Params, name: str, component: str, modes: list[str], storage: str, note: str) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=d.namespace,
            labels=object_labels(params, component),
            annotations={"kit.io/usage": note},
        ),
        spec=k8s.V1PersistentVolumeClaimSpec(
            access_modes=modes, resources=k8s.V1VolumeResourceRequirements(requests={"storage": storage})
        ),
    )


def prediction_log_claim(params: Params) -> Any:
    """The prediction log's claim: every server replica writes its own files, the monitor reads them all."""
    # ReadWriteMany: replicas on several nodes write at once while the CronJob reads.
    name = f"{params.deploy.name}-predictions"
    return _claim(params, name, "server", ["ReadWriteMany"], LOG_STORAGE, PREDICTION_LOG_NOTE)


def prediction_log_mount(params: Params, *, read_only: bool) -> tuple[Any, Any]:
    """(volume, mount at LOG_MOUNT) of the prediction log's claim: writable for the server, read-only for the monitor."""
    from kubernetes import client as k8s

    claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=f"{params.deploy.name}-predictions", read_only=read_only)
    return (
        k8s.V1Volume(name="predictions", persistent_volume_claim=claim),
        k8s.V1VolumeMount(name="predictions", mount_path=LOG_MOUNT, read_only=read_only),
    )


def reference_claim(params: Params) -> Any:
    """The reference profile's claim (profile.json, reference.parquet, embeddings.npy of the served model)."""
    note = (f"holds the reference profile of the served model version, read at {REFERENCE_MOUNT}; copy the monitor "
            "stage's reference directory into it on every model rollout (a reference of another version is refused)")  # fmt: skip
    # ReadWriteOnce suffices: one monitor pod at a time (concurrencyPolicy Forbid) reads it.
    return _claim(params, f"{params.deploy.name}-reference", "monitor", ["ReadWriteOnce"], REFERENCE_STORAGE, note)


def _monitor_container(params: Params) -> Any:
    from kubernetes import client as k8s

    _, tmp_mount = tmp_volume(k8s)
    _, log_mount = prediction_log_mount(params, read_only=True)
    args = [
        "monitor", "check", LOG_MOUNT, "--reference", REFERENCE_MOUNT, "--since", MONITOR_WINDOW,
        "--push-url", PUSHGATEWAY_URL, "--instance", f"{params.deploy.namespace}/{params.deploy.name}",
    ]  # fmt: skip
    return k8s.V1Container(
        name="monitor",
        image=image_ref(params),  # the server's image: the same kit, and the model version the reference names
        image_pull_policy="Always",
        command=["kit"],
        args=args,
        env=container_env(k8s),
        # Evidently and pandas on one 15-minute window: modest and fixed, not sized from the server's load test.
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1000m", "memory": "1Gi"}
        ),
        security_context=container_security(k8s),
        volume_mounts=[
            tmp_mount,
            log_mount,
            k8s.V1VolumeMount(name="reference", mount_path=REFERENCE_MOUNT, read_only=True),
        ],
    )


def monitor_cronjob(params: Params) -> Any:
    """The CronJob running `kit monitor check` on the last window of the prediction log every 15 minutes."""
    from kubernetes import client as k8s

    d = params.deploy
    labels = object_labels(params, "monitor")
    tmp_vol, _ = tmp_volume(k8s)
    log_vol, _ = prediction_log_mount(params, read_only=True)
    ref_claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=f"{d.name}-reference", read_only=True)
    pod = k8s.V1PodSpec(
        restart_policy="Never",
        automount_service_account_token=False,
        enable_service_links=False,
        security_context=pod_security(k8s),
        containers=[_monitor_container(params)],
        volumes=[tmp_vol, log_vol, k8s.V1Volume(name="reference", persistent_volume_claim=ref_claim)],
    )
    job = k8s.V1JobSpec(
        backoff_limit=1,
        active_deadline_seconds=600,  # a run never overlaps the next window
        ttl_seconds_after_finished=86400,
        template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod),
    )
    return k8s.V1CronJob(
        api_version="batch/v1",
        kind="CronJob",
        metadata=k8s.V1ObjectMeta(
            name=f"{d.name}-monitor",
            namespace=d.namespace,
            labels=labels,
            annotations={"kit.io/prediction-log": PREDICTION_LOG_NOTE, **checkov_skips(params)},
        ),
        spec=k8s.V1CronJobSpec(
            schedule=MONITOR_SCHEDULE,
            time_zone="Etc/UTC",
            # A slow run is never doubled: the next one waits; a missed run is dropped after 5 minutes (the stale
            # alert, KitMonitorStale, reports a monitor that keeps missing).
            concurrency_policy="Forbid",
            starting_deadline_seconds=300,
            successful_jobs_history_limit=3,
            failed_jobs_history_limit=3,
            job_template=k8s.V1JobTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=job),
        ),
    )


def monitor_network_policy(params: Params) -> Any:
    """No ingress; egress only to DNS and the Pushgateway's port in the `monitoring` namespace."""
    from kubernetes import client as k8s

    gateway = k8s.V1NetworkPolicyPeer(
        namespace_selector=k8s.V1LabelSelector(match_labels={"kubernetes.io/metadata.name": "monitoring"})
    )
    dns = [k8s.V1NetworkPolicyPort(port=53, protocol=p) for p in ("UDP", "TCP")]
    egress = [
        k8s.V1NetworkPolicyEgressRule(ports=dns),
        k8s.V1NetworkPolicyEgressRule(
            to=[gateway], ports=[k8s.V1NetworkPolicyPort(port=PUSHGATEWAY_PORT, protocol="TCP")]
        ),
    ]
    return network_policy_object(params, "monitor", [], egress)


def service_monitor(params: Params) -> dict[str, Any]:
    """A prometheus-operator ServiceMonitor scraping the server Service's `admin` port (serve.admin_port) at /metrics.

    The scrape's job label is the Service name (deploy.name), which the alert rules select as `job`."""
    d = params.deploy
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": d.name, "namespace": d.namespace, "labels": object_labels(params, "server")},
        "spec": {
            "selector": {"matchLabels": selector_labels(params, "server")},
            "namespaceSelector": {"matchNames": [d.namespace]},
            "endpoints": [{"port": "admin", "path": "/metrics", "interval": "15s", "scheme": "http"}],
        },
    }
