"""The deploy stage: load-test the model server, size and render the Kubernetes manifests, validate and apply them.
Names load lazily (importing kit.deploy.commands for the CLI stays cheap); run_deploy is the stage notebook's work."""

from __future__ import annotations

from kit.core.lazy import lazy_api

__all__ = [
    "run_deploy",
    "run_loadtest",
    "texts_from_parquet",
    "render",
    "build_manifests",
    "load_manifests",
    "size_from_report",
    "SETS",
    "validate_dir",
    "apply_manifests",
    "score_shard",
]

# Public name -> the module defining it; imported on first access only.
_SOURCES = {
    "run_deploy": "kit.deploy.stage",
    "run_loadtest": "kit.deploy.loadtest",
    "texts_from_parquet": "kit.deploy.loadtest",
    "render": "kit.deploy.manifests",
    "build_manifests": "kit.deploy.manifests",
    "load_manifests": "kit.deploy.manifests",
    "size_from_report": "kit.deploy.sizing",
    "SETS": "kit.deploy.manifests",
    "validate_dir": "kit.deploy.validate",
    "apply_manifests": "kit.deploy.apply",
    "score_shard": "kit.deploy.batch",
}

__getattr__, __dir__ = lazy_api(__name__, _SOURCES)
