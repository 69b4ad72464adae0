"""Building blocks shared by every workload manifest: labels, image reference, the restricted security contexts,
resources from the sizing, and the model server's container (probes, drain), as `kubernetes` client models."""

from __future__ import annotations

from typing import Any

from kit.core.errors import DeployError
from kit.core.params import Params
from kit.deploy.sizing import Sizing

__all__ = [
    "MODEL_DIR_IN_IMAGE",
    "RUN_AS_UID",
    "object_labels",
    "selector_labels",
    "image_ref",
    "checkov_skips",
    "container_security",
    "pod_security",
    "resource_requirements",
    "API_KEYS_DIR",
    "admin_port",
    "api_key_volume",
    "serve_args",
    "container_env",
    "tmp_volume",
    "server_container",
    "network_policy_object",
]

# Where the Dockerfile puts the serving model; every workload's command points here.
MODEL_DIR_IN_IMAGE = "/models/serving"
# Where the API-key Secret is mounted (read-only); the server reads the file API_KEYS_DIR/api-keys.
API_KEYS_DIR, API_KEYS_ITEM = "/var/run/secrets/kit", "api-keys"
# The image's non-root user (Dockerfile); checkov CKV_K8S_40 wants a UID >= 10000 so it cannot clash with host users.
RUN_AS_UID = 10001


def object_labels(params: Params, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": params.deploy.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kit",
        "app.kubernetes.io/managed-by": "kit-deploy",
    }


def selector_labels(params: Params, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": params.deploy.name, "app.kubernetes.io/component": component}


def image_ref(params: Params) -> str:
    d = params.deploy
    if d.image_digest:
        repo = d.image.rsplit(":", 1)[0] if ":" in d.image.rsplit("/", 1)[-1] else d.image
        return f"{repo}@{d.image_digest}"
    return d.image


def checkov_skips(params: Params, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Annotations that tell checkov which checks are deliberately not met, each with its reason."""
    skips = dict(extra or {})
    if not params.deploy.image_digest:
        skips["CKV_K8S_43"] = "the digest exists only after the image is pushed; set deploy.image_digest to pin it"
    return {f"checkov.io/skip{i}": f"{cid}={why}" for i, (cid, why) in enumerate(sorted(skips.items()), start=1)}


def container_security(k8s: Any) -> Any:
    # Pod Security Standard "restricted", plus a read-only root filesystem (the server writes only to /tmp).
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=RUN_AS_UID,
        run_as_group=RUN_AS_UID,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def pod_security(k8s: Any) -> Any:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_UID,
        run_as_group=RUN_AS_UID,
        fs_group=RUN_AS_UID,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def resource_requirements(k8s: Any, sz: Sizing) -> Any:
    return k8s.V1ResourceRequirements(
        requests={"cpu": f"{sz.cpu_request_m}m", "memory": f"{sz.memory_request_mib}Mi"},
        limits={"cpu": f"{sz.cpu_limit_m}m", "memory": f"{sz.memory_limit_mib}Mi"},
    )


def admin_port(params: Params) -> int:
    """The server's admin port (/metrics, probes) in the pod: serve.admin_port, which the manifests require.

    Raises:
        DeployError: serve.admin_port is unset, privileged (< 1024) or the API port.
    """
    port = params.serve.admin_port
    if port is None or port < 1024 or port == params.deploy.container_port:
        raise DeployError(f"serve.admin_port: the manifests need a port from 1024 to 65535 other than "
                          f"deploy.container_port ({params.deploy.container_port}), got {port}")  # fmt: skip
    return port


def api_key_volume(params: Params) -> tuple[Any, Any] | None:
    """(volume, read-only mount) of the API-key Secret named by deploy.api_key_secret, or None without auth."""
    from kubernetes import client as k8s

    name = params.deploy.api_key_secret
    if not name:
        return None
    # Only the one item, readable by the pod's group (fsGroup) and nobody else; the Secret's content never appears.
    src = k8s.V1SecretVolumeSource(
        secret_name=name, default_mode=0o440, items=[k8s.V1KeyToPath(key=API_KEYS_ITEM, path=API_KEYS_ITEM)]
    )
    return (
        k8s.V1Volume(name="api-keys", secret=src),
        k8s.V1VolumeMount(name="api-keys", mount_path=API_KEYS_DIR, read_only=True),
    )


def serve_args(params: Params) -> list[str]:
    args = ["serve", MODEL_DIR_IN_IMAGE, "--host", "0.0.0.0", "--port", str(params.deploy.container_port),
            "--admin-port", str(admin_port(params))]  # fmt: skip
    if params.deploy.api_key_secret:
        args += ["--api-key-file", f"{API_KEYS_DIR}/{API_KEYS_ITEM}"]
    return args


def container_env(k8s: Any) -> list[Any]:
    return [
        k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
        # Read-only root filesystem: anything that wants a writable home or cache gets /tmp.
        k8s.V1EnvVar(name="HOME", value="/tmp"),
        k8s.V1EnvVar(name="HF_HUB_OFFLINE", value="1"),
    ]


def tmp_volume(k8s: Any) -> tuple[Any, Any]:
    vol = k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi"))
    mount = k8s.V1VolumeMount(name="tmp", mount_path="/tmp")
    return vol, mount


def server_container(
    params: Params, sz: Sizing, probes: bool = True, startup: bool = True, single_port: bool = False
) -> Any:
    """The model server's container: API port `http`, admin port `admin` (probes, metrics), drain, optional keys.

    Args:
        single_port: declare and probe the API port only (Knative and KServe route to, and probe, one port).
    """
    from kubernetes import client as k8s

    d = params.deploy
    _, tmp_mount = tmp_volume(k8s)
    keys = api_key_volume(params)
    probe_port = "http" if single_port else "admin"
    http = lambda path: k8s.V1HTTPGetAction(path=path, port=probe_port)  # noqa: E731
    ports = [k8s.V1ContainerPort(name="http", container_port=d.container_port, protocol="TCP")]
    if not single_port:
        ports.append(k8s.V1ContainerPort(name="admin", container_port=admin_port(params), protocol="TCP"))
    return k8s.V1Container(
        name="server",
        image=image_ref(params),
        image_pull_policy="Always",
        command=["kit"],
        args=serve_args(params),
        ports=ports,
        env=container_env(k8s),
        resources=resource_requirements(k8s, sz),
        security_context=container_security(k8s),
        volume_mounts=[tmp_mount] + ([keys[1]] if keys else []),
        # /readyz answers 503 until the model is loaded and warmed, so traffic only reaches warm pods.
        readiness_probe=k8s.V1Probe(http_get=http("/readyz"), period_seconds=5, timeout_seconds=2, failure_threshold=2)
        if probes
        else None,
        liveness_probe=k8s.V1Probe(http_get=http("/healthz"), period_seconds=10, timeout_seconds=2, failure_threshold=3)
        if probes
        else None,
        # Liveness waits until the first warm-up is done; the budget comes from the measured cold start.
        startup_probe=k8s.V1Probe(
            http_get=http("/readyz"),
            period_seconds=sz.startup_period_s,
            timeout_seconds=2,
            failure_threshold=sz.startup_failure_threshold,
        )
        if probes and startup
        else None,
        # Endpoints are removed asynchronously after SIGTERM: keep accepting for a few seconds, then drain.
        lifecycle=k8s.V1Lifecycle(pre_stop=k8s.V1LifecycleHandler(sleep=k8s.V1SleepAction(seconds=d.prestop_sleep_s)))
        if d.prestop_sleep_s
        else None,
    )


def network_policy_object(params: Params, component: str, ingress: list[Any], egress: list[Any]) -> Any:
    """A NetworkPolicy `{name}-{component}` over the component's pods, both directions denied but for these rules."""
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=k8s.V1ObjectMeta(
            name=f"{d.name}-{component}", namespace=d.namespace, labels=object_labels(params, component)
        ),
        spec=k8s.V1NetworkPolicySpec(
            pod_selector=k8s.V1LabelSelector(match_labels=selector_labels(params, component)),
            policy_types=["Ingress", "Egress"],
            ingress=ingress,
            egress=egress,
        ),
    )
