"""The `kit finetune` command (also `python -m kit.finetune`, which torchrun starts on every process).
Mounted by kit.cli; a KitError reaches the one boundary in kit.core.boundary (exit 143 after SIGTERM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kit.core.layout import LAYOUT

__all__ = ["finetune"]


def finetune(
    params_file: Annotated[Path, typer.Option("--params", help="params file (relative to cwd)")] = Path("params.yaml"),
    data_dir: Annotated[Path, typer.Option("--data-dir", help="the data stage's output directory")] = Path(
        LAYOUT.data_dir
    ),
    model_dir: Annotated[Path, typer.Option("--model-dir", help="where the model goes")] = Path(LAYOUT.finetune_dir),
    reports_dir: Annotated[Path, typer.Option("--reports-dir", help="train.json, plots, model card")] = Path(
        LAYOUT.reports_dir
    ),
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="finetune.threads for this machine (the Kubernetes Job sizes it)"),
    ] = None,
) -> None:
    """Fine-tune outside papermill (same code as the finetune stage); resumes a checkpoint of the same run.
    For several processes: `torchrun --nproc_per_node N -m kit.finetune --params FILE`; several machines: see
    kit.deploy.training.torchrun_args. Exit 143 after SIGTERM."""
    from kit.core.io import project_root
    from kit.core.params import load_params

    params = load_params(params_file, {"finetune": {"threads": threads}} if threads else None)
    root = project_root()
    from kit.finetune.train import run_finetune  # imports torch and transformers

    cwd = Path.cwd()
    run_finetune(params, root, data_dir=cwd / data_dir, model_dir=cwd / model_dir, reports_dir=cwd / reports_dir)
