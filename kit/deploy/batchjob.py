"""The batch set: an Indexed Job whose pods each run `kit deploy batch-score` on one shard, and the shared claim
holding its input and parts (the network policy comes from kit.deploy.online)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.core.params import Params
from kit.deploy.pod import (
    MODEL_DIR_IN_IMAGE,
    checkov_skips,
    container_env,
    container_security,
    image_ref,
    object_labels,
    pod_security,
    resource_requirements,
    tmp_volume,
)
from kit.deploy.sizing import Sizing

__all__ = ["batch_pvc", "batch_job"]


def batch_pvc(params: Params) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    return k8s.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=k8s.V1ObjectMeta(name=d.batch_pvc, namespace=d.namespace, labels=object_labels(params, "batch")),
        spec=k8s.V1PersistentVolumeClaimSpec(
            # Shards run on several nodes at once and all read the input and write their part.
            access_modes=["ReadWriteMany"],
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": d.batch_storage}),
        ),
    )


def batch_job(params: Params, sz: Sizing) -> Any:
    from kubernetes import client as k8s

    d = params.deploy
    tmp_vol, tmp_mount = tmp_volume(k8s)
    labels = object_labels(params, "batch")
    container = k8s.V1Container(
        name="score",
        image=image_ref(params),
        image_pull_policy="Always",
        command=["kit"],
        # The shard index comes from JOB_COMPLETION_INDEX, which the Job controller sets in every Indexed pod.
        args=[
            "deploy",
            "batch-score",
            MODEL_DIR_IN_IMAGE,
            d.batch_input,
            d.batch_output,
            "--shards",
            str(d.batch_shards),
            "--threads",
            str(params.serve.threads),
            "--batch-size",
            str(params.serve.max_batch_size),
        ],  # fmt: skip
        env=container_env(k8s),
        resources=resource_requirements(k8s, sz),
        security_context=container_security(k8s),
        volume_mounts=[tmp_mount, k8s.V1VolumeMount(name="data", mount_path=str(Path(d.batch_input).parent))],
    )
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=f"{d.name}-batch",
            namespace=d.namespace,
            labels=labels,
            annotations=checkov_skips(params),
        ),
        spec=k8s.V1JobSpec(
            completion_mode="Indexed",
            completions=d.batch_shards,
            parallelism=min(d.batch_parallelism, d.batch_shards),
            # Retry a failed shard alone, twice, without failing the others.
            backoff_limit_per_index=2,
            ttl_seconds_after_finished=86400,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    restart_policy="Never",
                    automount_service_account_token=False,
                    enable_service_links=False,
                    security_context=pod_security(k8s),
                    containers=[container],
                    volumes=[
                        tmp_vol,
                        k8s.V1Volume(
                            name="data",
                            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=d.batch_pvc),
                        ),
                    ],
                ),
            ),
        ),
    )
