"""The training set: distributed fine-tuning as an Indexed Job of torchrun agents (c10d rendezvous on pod 0 through a
headless Service), checkpoints on a ReadWriteMany claim so a replaced pod resumes, requests sized from train.json.

Sizing rule (train_sizing), from reports/train.json's measured `train_samples_per_s` at `processes` x
`threads_per_process` cores:
  per-core rate  r = samples/s / (processes x threads_per_process)
  samples        S = samples/s x train_time_s (the whole run's samples, as the Trainer counts them)
  threads per process t = ceil(S / (r x scaling_efficiency x target_minutes x 60) / (nnodes x nproc_per_node)),
                          clamped to [1, max_threads_per_process]; no report: max_threads_per_process
  CPU request per pod = nproc_per_node x t cores (limit = request: torch sizes its thread pool to it)
  memory per pod = nproc_per_node x (process_memory_mib + 4 x fp32 weights MiB) x deploy.headroom
                   (weights, gradients and AdamW's two moments; weights measured from models/finetune)
  activeDeadlineSeconds = max(600, predicted seconds (S / (r x efficiency x cores)) x deadline_factor)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.core.layout import LAYOUT
from kit.core.params import Params
from kit.core.reports import TrainReport, read_report
from kit.deploy.pod import (
    container_env,
    container_security,
    object_labels,
    pod_security,
    selector_labels,
    tmp_volume,
)

__all__ = [
    "COMPONENT",
    "TrainSizing",
    "train_sizing",
    "job_name",
    "torchrun_args",
    "training_manifests",
    "measured_training",
]

COMPONENT = "train"
_MIN_DEADLINE_S = 600  # image pull, scheduling every pod and the first rendezvous, even for a short run


@dataclass(frozen=True)
class TrainSizing:
    """Per-pod resources and the Job's deadline, with the figures that drove them."""

    threads_per_process: int
    cpu_m: int
    memory_mib: int
    predicted_s: float | None
    deadline_s: int
    source: str
    notes: list[str] = field(default_factory=list)


def train_sizing(params: Params, report: TrainReport | None, weights_mib: float | None = None) -> TrainSizing:
    """Threads, CPU and memory per pod and the Job's deadline (the rule is in the module docstring).

    Args:
        params: validated params (deploy.training and deploy.headroom are read).
        report: reports/train.json, or None when no fine-tuning was measured.
        weights_mib: size of the fp32 weights (models/finetune/model.safetensors); None: default_weights_mib.

    Returns:
        The sizing; `notes` says which figure drove each value.
    """
    tr, headroom = params.deploy.training, params.deploy.headroom
    workers = tr.nnodes * tr.nproc_per_node
    notes: list[str] = []
    run = report.train if report else None
    if run and run.train_samples_per_s > 0 and run.train_time_s > 0:
        per_core = run.train_samples_per_s / (run.processes * run.threads_per_process)
        samples = run.train_samples_per_s * run.train_time_s
        need = samples / (per_core * tr.scaling_efficiency * tr.target_minutes * 60)
        threads = min(tr.max_threads_per_process, max(1, math.ceil(need / workers)))
        predicted: float | None = samples / (per_core * tr.scaling_efficiency * workers * threads)
        source = "measured (reports/train.json)"
        notes.append(f"{per_core:.1f} samples/s per core measured; {samples:.0f} samples; {need:.1f} cores for "
                     f"{tr.target_minutes:g} min at efficiency {tr.scaling_efficiency}")  # fmt: skip
        if run.resumed_from_step is not None:
            notes.append("the measured run was resumed: its samples/s counts skipped steps and overstates the rate")
    else:
        threads, predicted = tr.max_threads_per_process, None
        source = "defaults (deploy.training.max_threads_per_process)"
        notes.append("no fine-tuning measurement: the thread ceiling per process")
    weights = weights_mib if weights_mib is not None else float(tr.default_weights_mib)
    per_process = tr.process_memory_mib + 4 * weights
    memory = int(math.ceil(tr.nproc_per_node * per_process * headroom / 64) * 64)
    notes.append(f"memory = {tr.nproc_per_node} x ({tr.process_memory_mib} + 4 x {weights:.0f} MiB) x {headroom}")
    base = predicted if predicted is not None else tr.target_minutes * 60
    return TrainSizing(
        threads_per_process=threads,
        cpu_m=tr.nproc_per_node * threads * 1000,
        memory_mib=memory,
        predicted_s=round(predicted, 1) if predicted is not None else None,
        deadline_s=max(_MIN_DEADLINE_S, int(math.ceil(base * tr.deadline_factor))),
        source=source,
        notes=notes,
    )


def job_name(params: Params) -> str:
    return f"{params.deploy.name}-train"


def torchrun_args(params: Params, endpoint: str, rdzv_id: str) -> list[str]:
    """torchrun's launch options for deploy.training: fixed size (nnodes), c10d rendezvous at `endpoint`.

    torchrun's docs recommend c10d for multi-node jobs (no etcd); every agent passes the same endpoint and the one
    whose hostname or IP matches it hosts the store. --node-rank is left out: torchrun uses it only for static
    rendezvous (c10d assigns ranks), and warns when it is given. With --max-restarts 0 (the default) an agent that
    lost a peer exits and the Job replaces its pod; every new start resumes the newest complete checkpoint
    (kit.finetune.checkpoint). Above 0 a survivor restarts its workers and waits (join_timeout) for the replacement.
    """
    tr = params.deploy.training
    return [
        "--nnodes", str(tr.nnodes),
        "--nproc-per-node", str(tr.nproc_per_node),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", rdzv_id,
        "--rdzv-conf", f"join_timeout={tr.join_timeout_s}",
        "--max-restarts", str(tr.max_restarts),
    ]  # fmt: skip


def _container(params: Params, sz: TrainSizing, service: str) -> Any:
    from kubernetes import client as k8s

    tr = params.deploy.training
    _, tmp_mount = tmp_volume(k8s)
    endpoint = f"{job_name(params)}-0.{service}:{tr.rdzv_port}"  # pod 0's DNS name through the headless Service
    launch = torchrun_args(params, endpoint, job_name(params))
    # MASTER_ADDR (what the workers' process group connects to) is the local address of the rank-0 agent: the pod IP,
    # so the all-reduce does not wait on DNS.
    launch += ["--local-addr", "$(POD_IP)"]
    threads = str(tr.nproc_per_node * sz.threads_per_process)  # kit finetune --threads: per machine
    pod_ip = k8s.V1EnvVar(
        name="POD_IP", value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="status.podIP"))
    )
    size = {"cpu": f"{sz.cpu_m}m", "memory": f"{sz.memory_mib}Mi"}
    return k8s.V1Container(
        name=COMPONENT,
        image=tr.image,
        image_pull_policy="Always",
        command=["torchrun"],
        # `kit finetune` (the same function as `python -m kit.finetune`), run by torchrun as a plain program.
        args=[*launch, "--no-python", "kit", "finetune", "--params", "params.yaml", "--threads", threads],
        working_dir=tr.workspace_mount,
        ports=[k8s.V1ContainerPort(name="rdzv", container_port=tr.rdzv_port, protocol="TCP")],
        env=[*container_env(k8s), pod_ip, k8s.V1EnvVar(name="TQDM_DISABLE", value="1")],
        resources=k8s.V1ResourceRequirements(requests=size, limits=size),
        security_context=container_security(k8s),
        volume_mounts=[tmp_mount, k8s.V1VolumeMount(name="workspace", mount_path=tr.workspace_mount)],
    )


def _job(params: Params, sz: TrainSizing, service: str) -> Any:
    from kubernetes import client as k8s

    d, tr = params.deploy, params.deploy.training
    tmp_vol, _ = tmp_volume(k8s)
    labels = object_labels(params, COMPONENT)
    # Same annotation form as kit.deploy.pod.checkov_skips, whose digest reason is the serving image's.
    skips = {} if "@sha256:" in tr.image else {
        "checkov.io/skip1": "CKV_K8S_43=deploy.training.image is a tag; pin it by digest (image@sha256:...) once pushed"
    }  # fmt: skip
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=job_name(params), namespace=d.namespace, labels=labels, annotations=skips or None
        ),
        spec=k8s.V1JobSpec(
            completion_mode="Indexed",
            completions=tr.nnodes,
            parallelism=tr.nnodes,
            backoff_limit=tr.backoff_limit,
            # A preempted or evicted pod (condition DisruptionTarget) is replaced without counting as a failure.
            pod_failure_policy=k8s.V1PodFailurePolicy(
                rules=[
                    k8s.V1PodFailurePolicyRule(
                        action="Ignore",
                        on_pod_conditions=[
                            k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                        ],
                    )
                ]
            ),
            # The replacement starts only once the old pod is gone: never two pods of one hostname, nor a second
            # writer while the old one still finishes its checkpoint.
            pod_replacement_policy="Failed",
            active_deadline_seconds=sz.deadline_s,
            ttl_seconds_after_finished=86400,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    # Pod hostnames <job>-<index>.<subdomain>: pod 0 is reachable as the rendezvous endpoint.
                    subdomain=service,
                    restart_policy="Never",  # podFailurePolicy needs Never
                    automount_service_account_token=False,
                    enable_service_links=False,
                    termination_grace_period_seconds=tr.termination_grace_s,
                    security_context=pod_security(k8s),
                    containers=[_container(params, sz, service)],
                    volumes=[
                        tmp_vol,
                        k8s.V1Volume(
                            name="workspace",
                            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                                claim_name=tr.workspace_pvc
                            ),
                        ),
                    ],
                ),
            ),
        ),
    )


def _service(params: Params, name: str) -> Any:
    from kubernetes import client as k8s

    tr = params.deploy.training
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=params.deploy.namespace, labels=object_labels(params, COMPONENT)
        ),
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",
            selector=selector_labels(params, COMPONENT),
            # DNS records exist before the pods are ready: pod 0 must resolve its own name to host the store.
            publish_not_ready_addresses=True,
            ports=[k8s.V1ServicePort(name="rdzv", port=tr.rdzv_port, target_port="rdzv", protocol="TCP")],
        ),
    )


def _claim(params: Params) -> Any:
    from kubernetes import client as k8s

    tr = params.deploy.training
    return k8s.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=k8s.V1ObjectMeta(
            name=tr.workspace_pvc, namespace=params.deploy.namespace, labels=object_labels(params, COMPONENT)
        ),
        spec=k8s.V1PersistentVolumeClaimSpec(
            # Every pod reads the data and checkpoints; rank 0 writes them, possibly from another node after a restart.
            access_modes=["ReadWriteMany"],
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": tr.workspace_storage}),
        ),
    )


def _network_policy(params: Params, name: str) -> Any:
    from kubernetes import client as k8s

    peers = [k8s.V1NetworkPolicyPeer(pod_selector=k8s.V1LabelSelector(match_labels=selector_labels(params, COMPONENT)))]
    dns = k8s.V1NetworkPolicyEgressRule(
        to=[k8s.V1NetworkPolicyPeer(namespace_selector=k8s.V1LabelSelector())],
        ports=[k8s.V1NetworkPolicyPort(port=53, protocol=p) for p in ("UDP", "TCP")],
    )
    return k8s.V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=params.deploy.namespace, labels=object_labels(params, COMPONENT)
        ),
        spec=k8s.V1NetworkPolicySpec(
            pod_selector=k8s.V1LabelSelector(match_labels=selector_labels(params, COMPONENT)),
            # Training pods talk only to each other (rendezvous port and the process group's ephemeral ports) and DNS.
            policy_types=["Ingress", "Egress"],
            ingress=[k8s.V1NetworkPolicyIngressRule(_from=peers)],
            egress=[k8s.V1NetworkPolicyEgressRule(to=peers), dns],
        ),
    )


def training_manifests(params: Params, sz: TrainSizing) -> dict[str, Any]:
    """The training set as kubernetes client models, keyed by path relative to deploy.out_dir."""
    name = job_name(params)
    return {
        "training/service.yaml": _service(params, name),
        "training/pvc.yaml": _claim(params),
        "training/job.yaml": _job(params, sz, name),
        "training/networkpolicy.yaml": _network_policy(params, name),
    }


def measured_training(root: Path) -> tuple[TrainReport | None, float | None]:
    """reports/train.json and the fp32 weights' MiB (models/finetune/model.safetensors) under `root`, None if absent.

    Raises:
        ReportError: train.json exists but is stale or lacks a field.
    """
    report_path, weights = root / LAYOUT.train_report, root / LAYOUT.finetune_dir / "model.safetensors"
    report = read_report(report_path, TrainReport) if report_path.is_file() else None
    return report, (weights.stat().st_size / 2**20 if weights.is_file() else None)
