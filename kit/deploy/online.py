"""The always-on online set and the namespace: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget and
NetworkPolicy of the model server, built with the `kubernetes` client's models."""

from __future__ import annotations

import json
import math
from typing import Any

from kit.core.params import Params
from kit.deploy.monitoring import PREDICTION_LOG_NOTE, prediction_log_mount
from kit.deploy.pod import (
    admin_port,
    api_key_volume,
    checkov_skips,
    network_policy_object,
    object_labels,
    pod_security,
    selector_labels,
    server_container,
    tmp_volume,
)
from kit.deploy.sizing import Sizing

__all__ = ["namespace", "deployment", "service", "hpa", "pdb", "network_policy", "server_network_policy"]


def namespace(params: Params) -> Any:
    from kubernetes import client as k8s

    level = "restricted"
    return k8s.V1Namespace(
        api_version="v1",
        kind="Namespace",
        metadata=k8s.V1ObjectMeta(
            name=params.deploy.namespace,
            labels={
                # The API server then rejects any pod here that breaks the restricted profile.
                "pod-security.kubernetes.io/enforce": level,
                "pod-security.kubernetes.io/audit": level,
                "pod-security.kubernetes.io/warn": level,
            },
        ),
    )


def deployment(params: Params, sz: Sizing) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    tmp_vol, _ = tmp_volume(k8s)
    log_vol, log_mount = prediction_log_mount(params, read_only=False)
    container = server_container(params, sz)
    keys = api_key_volume(params)  # the container mounts it; the pod declares it
    container.volume_mounts = [*container.volume_mounts, log_mount]  # the monitor CronJob reads the same claim
    labels = object_labels(params, "server")
    pod_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(admin_port(params)),
        "prometheus.io/path": "/metrics",
    }
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(
            name=d.name,
            namespace=d.namespace,
            labels=labels,
            annotations={
                "kit.io/sizing": json.dumps({"source": sz.source, "notes": sz.notes}, sort_keys=True),
                "kit.io/prediction-log": PREDICTION_LOG_NOTE,
                **checkov_skips(params),
            },
        ),
        spec=k8s.V1DeploymentSpec(
            replicas=d.replicas,
            revision_history_limit=5,
            selector=k8s.V1LabelSelector(match_labels=selector_labels(params, "server")),
            # Surge first, never drop below the desired count: a rollout keeps full capacity.
            strategy=k8s.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=k8s.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
            ),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels, annotations=pod_annotations),
                spec=k8s.V1PodSpec(
                    automount_service_account_token=False,
                    enable_service_links=False,
                    security_context=pod_security(k8s),
                    # preStop sleep + the server's drain + a margin before SIGKILL.
                    termination_grace_period_seconds=d.prestop_sleep_s + math.ceil(params.serve.graceful_timeout_s) + 5,
                    containers=[container],
                    volumes=[tmp_vol, log_vol] + ([keys[0]] if keys else []),
                    topology_spread_constraints=[
                        k8s.V1TopologySpreadConstraint(
                            max_skew=1,
                            topology_key="kubernetes.io/hostname",
                            when_unsatisfiable="ScheduleAnyway",
                            label_selector=k8s.V1LabelSelector(match_labels=selector_labels(params, "server")),
                        )
                    ],
                ),
            ),
        ),
    )


def service(params: Params) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=d.name, namespace=d.namespace, labels=object_labels(params, "server")),
        spec=k8s.V1ServiceSpec(
            type="ClusterIP",
            selector=selector_labels(params, "server"),
            ports=[
                k8s.V1ServicePort(name="http", port=80, target_port="http", protocol="TCP"),
                # What the ServiceMonitor scrapes; the NetworkPolicy lets only monitoring and the kubelet reach it.
                k8s.V1ServicePort(name="admin", port=admin_port(params), target_port="admin", protocol="TCP"),
            ],
        ),
    )


def hpa(params: Params) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V2HorizontalPodAutoscaler(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        metadata=k8s.V1ObjectMeta(name=d.name, namespace=d.namespace, labels=object_labels(params, "server")),
        spec=k8s.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=k8s.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment", name=d.name),
            min_replicas=d.min_replicas,
            max_replicas=d.max_replicas,
            metrics=[
                k8s.V2MetricSpec(
                    type="Resource",
                    resource=k8s.V2ResourceMetricSource(
                        name="cpu",
                        target=k8s.V2MetricTarget(type="Utilization", average_utilization=d.cpu_target_percent),
                    ),
                )
            ],
            # Scale up fast (a CPU-bound model saturates quickly), scale down slowly (avoid flapping on bursts).
            behavior=k8s.V2HorizontalPodAutoscalerBehavior(
                scale_up=k8s.V2HPAScalingRules(
                    stabilization_window_seconds=0,
                    select_policy="Max",
                    policies=[
                        k8s.V2HPAScalingPolicy(type="Percent", value=100, period_seconds=15),
                        k8s.V2HPAScalingPolicy(type="Pods", value=4, period_seconds=15),
                    ],
                ),
                scale_down=k8s.V2HPAScalingRules(
                    stabilization_window_seconds=300,
                    policies=[k8s.V2HPAScalingPolicy(type="Percent", value=50, period_seconds=60)],
                ),
            ),
        ),
    )


def pdb(params: Params) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V1PodDisruptionBudget(
        api_version="policy/v1",
        kind="PodDisruptionBudget",
        metadata=k8s.V1ObjectMeta(name=d.name, namespace=d.namespace, labels=object_labels(params, "server")),
        spec=k8s.V1PodDisruptionBudgetSpec(
            max_unavailable=1,
            selector=k8s.V1LabelSelector(match_labels=selector_labels(params, "server")),
            # A pod that never became ready may be evicted even when the budget is spent (unblocks node drains).
            unhealthy_pod_eviction_policy="AlwaysAllow",
        ),
    )


def network_policy(params: Params, component: str, ingress_port: int | None) -> Any:
    """Ingress from anywhere to `ingress_port` only (None: no ingress); no egress (weights are in the image)."""
    from kubernetes import client as k8s

    rules = [k8s.V1NetworkPolicyIngressRule(ports=[k8s.V1NetworkPolicyPort(port=ingress_port, protocol="TCP")])]
    return network_policy_object(params, component, rules if ingress_port else [], [])


def server_network_policy(params: Params) -> Any:
    """The server's ingress: the API port from deploy.client_namespaces only; the admin port (metrics, probes) from
    the monitoring namespace and the kubelet's node addresses only. No egress: the model needs none."""
    from kubernetes import client as k8s

    d = params.deploy
    by_name = lambda names: k8s.V1NetworkPolicyPeer(  # noqa: E731
        namespace_selector=k8s.V1LabelSelector(
            match_expressions=[
                k8s.V1LabelSelectorRequirement(key="kubernetes.io/metadata.name", operator="In", values=names)
            ]
        )
    )
    port = lambda n: [k8s.V1NetworkPolicyPort(port=n, protocol="TCP")]  # noqa: E731
    admin_from = [by_name([d.monitoring_namespace])]
    admin_from += [k8s.V1NetworkPolicyPeer(ip_block=k8s.V1IPBlock(cidr=c)) for c in d.kubelet_cidrs]
    ingress = [k8s.V1NetworkPolicyIngressRule(_from=admin_from, ports=port(admin_port(params)))]
    if d.client_namespaces:  # empty: nobody may call (a rule without peers would let everyone)
        api_rule = k8s.V1NetworkPolicyIngressRule(_from=[by_name(d.client_namespaces)], ports=port(d.container_port))
        ingress.insert(0, api_rule)
    return network_policy_object(params, "server", ingress, [])
