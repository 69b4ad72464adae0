"""Applies the rendered Kubernetes manifests with the `kubernetes` client: server-side apply, after a server dry run.
Connects through the kubeconfig or the in-cluster service account; no reachable cluster fails with one clear line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kit.core.errors import ClusterUnavailableError, DeployError
from kit.deploy.manifests import SETS, load_manifests

__all__ = ["apply_manifests"]


# ----------------------------------------------------------------------------------------------- apply
def _connect(context: str | None, timeout: float) -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        # Read KUBECONFIG now: the client captures it once at import time.
        where = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        config.load_kube_config(config_file=where, context=context)
    except (ConfigException, FileNotFoundError, OSError) as exc:
        try:
            config.load_incluster_config()
            where = "in-cluster service account"
        except ConfigException:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterUnavailableError(
                f"no Kubernetes cluster: no usable kubeconfig ({first}) and not running in a pod"
            ) from None
    api = client.ApiClient()
    api.configuration.retries = 0
    try:
        client.VersionApi(api).get_code(_request_timeout=timeout)
    except Exception as exc:  # urllib3 connection errors, TLS errors, 401/403 from the API server
        reason = str(getattr(exc, "reason", "") or exc).strip().splitlines()[0][:200]
        raise ClusterUnavailableError(
            f"cannot reach the Kubernetes API at {api.configuration.host} (from {where}): {reason}"
        ) from None
    return api


def apply_manifests(
    directory: str | Path,
    *,
    sets: Iterable[str] = ("online",),
    context: str | None = None,
    dry_run_only: bool = False,
    timeout: float = 10.0,
) -> list[str]:
    """Server-side apply the rendered manifests to the cluster of the current kubeconfig.

    Every object is first applied with a server-side dry run (`dryRun=All`: admission, schema and Pod Security
    checks run, nothing is stored); only when all pass is anything applied for real.

    Args:
        directory: rendered manifests (deploy.out_dir).
        sets: which manifest sets to apply besides namespace.yaml (online, serverless, batch, monitoring).
        context: kubeconfig context (default: current).
        dry_run_only: stop after the dry run.
        timeout: seconds per API request.

    Returns:
        One line per object and phase.

    Raises:
        ClusterUnavailableError: no kubeconfig / cluster unreachable.
        DeployError: an object was rejected (kind/name and the API server's message).
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    unknown = set(sets) - set(SETS)
    if unknown:
        raise DeployError(f"unknown manifest set(s) {sorted(unknown)}; sets: {', '.join(SETS)}")
    directory = Path(directory)
    docs = [(f, d) for f, d in load_manifests(directory) if f.parent == directory or f.parent.name in set(sets)]
    api = _connect(context, timeout)
    dyn = DynamicClient(api)
    log = []
    for phase in ("dry-run", "apply"):
        if phase == "apply" and dry_run_only:
            break
        for f, doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            try:
                res = dyn.resources.get(api_version=doc["apiVersion"], kind=kind)
            except ResourceNotFoundError:
                raise DeployError(
                    f"{f}: the cluster does not serve {doc['apiVersion']} {kind} (is its operator installed?)"
                ) from None
            kwargs = {"dry_run": "All"} if phase == "dry-run" else {}
            try:
                res.server_side_apply(
                    body=doc, field_manager="kit-deploy", force_conflicts=True, _request_timeout=timeout, **kwargs
                )
            except (DynamicApiError, ApiException) as exc:
                body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: str(exc))()
                try:
                    msg = json.loads(body).get("message", body)
                except (TypeError, ValueError):
                    msg = str(body)
                raise DeployError(f"{f}: {kind}/{name} rejected in {phase}: {msg}") from None
            log.append(f"{phase}: {kind}/{name} ok")
    return log
