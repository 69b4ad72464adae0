"""The `kit deploy` commands: render, validate and apply the Kubernetes manifests, and score one batch shard.
Mounted by kit.cli; a KitError reaches the one boundary in kit.core.boundary. Paths are relative to cwd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from kit.core.layout import LAYOUT

__all__ = ["deploy_app"]

deploy_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests (render, validate, apply) and batch scoring.")


def _params(params_file: Path):  # -> kit.core.params.Params
    from kit.core.params import load_params

    return load_params(params_file)


def _manifests_dir(option: Path | None, params_file: Path, out_dir: str) -> Path:
    """--dir/--out as given (relative to cwd); else deploy.out_dir, which params.yaml states relative to its own
    directory (the project root), so the default is the same wherever the command runs."""
    return option if option is not None else params_file.resolve().parent / out_dir


@deploy_app.command("render")
def render_cmd(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    report: Annotated[Path, typer.Option("--report", help="load-test report used for sizing")] = Path(
        LAYOUT.serve_report
    ),
    out: Annotated[Optional[Path], typer.Option("--out", help="output dir (default: deploy.out_dir)")] = None,
) -> None:
    """Write the Kubernetes manifests from params and the measured load test (params defaults if none)."""
    from kit.deploy.manifests import render

    p = _params(params_file)
    cwd = Path.cwd()
    target = _manifests_dir(out, params_file, p.deploy.out_dir)
    files = render(p, report_path=cwd / report, out_dir=cwd / target, root=params_file.resolve().parent)
    for f in files:
        typer.echo(str(f.relative_to(cwd) if f.is_relative_to(cwd) else f))
    if not report.is_file():
        typer.echo(f"note: {report} not found, sized from params defaults", err=True)


@deploy_app.command("validate")
def validate_cmd(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    directory: Annotated[Optional[Path], typer.Option("--dir", help="manifests (default: deploy.out_dir)")] = None,
    checkov: Annotated[
        Optional[bool], typer.Option("--checkov/--no-checkov", help="require / skip checkov (default: if installed)")
    ] = None,
) -> None:
    """Validate the manifests offline: Kubernetes OpenAPI schema of deploy.k8s_version (strict) and checkov."""
    from kit.deploy.validate import validate_dir

    p = _params(params_file)
    rep = validate_dir(_manifests_dir(directory, params_file, p.deploy.out_dir), p.deploy.k8s_version, checkov=checkov)
    for line in rep.lines():
        typer.echo(line)
    if not rep.ok:
        raise typer.Exit(1)


@deploy_app.command("apply")
def apply_cmd(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    directory: Annotated[Optional[Path], typer.Option("--dir", help="manifests (default: deploy.out_dir)")] = None,
    sets: Annotated[
        Optional[list[str]], typer.Option("--set", help="manifest set: online (default), serverless, batch, monitoring")
    ] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="kubeconfig context")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="server-side dry run only")] = False,
) -> None:
    """Server-side apply the manifests to the cluster of the current kubeconfig (server dry run first)."""
    from kit.deploy.apply import apply_manifests

    p = _params(params_file)
    log = apply_manifests(
        _manifests_dir(directory, params_file, p.deploy.out_dir),
        sets=list(sets or ["online"]),
        context=context,
        dry_run_only=dry_run,
    )
    for line in log:
        typer.echo(line)


@deploy_app.command("batch-score")
def batch_score_cmd(
    model_dir: Annotated[Path, typer.Argument(help="serving model dir")],
    input_path: Annotated[Path, typer.Argument(help="Parquet file to score")],
    output_dir: Annotated[Path, typer.Argument(help="directory for part-NNNNN-of-NNNNN.parquet")],
    shards: Annotated[int, typer.Option("--shards", help="number of shards")] = 1,
    shard_index: Annotated[
        int, typer.Option("--shard-index", envvar="JOB_COMPLETION_INDEX", help="this shard (Indexed Job: automatic)")
    ] = 0,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    threads: Annotated[int, typer.Option("--threads", min=1)] = 2,
    max_length: Annotated[int, typer.Option("--max-length", help="when the model dir has no serving.json")] = 64,
) -> None:
    """Score one shard of INPUT with the serving model (ONNX Runtime, no torch) and write it under OUTPUT_DIR."""
    from kit.deploy.batch import score_shard

    summary = score_shard(
        model_dir,
        input_path,
        output_dir,
        shards=shards,
        index=shard_index,
        text_column=text_column,
        batch_size=batch_size,
        threads=threads,
        max_length=max_length,
    )
    typer.echo(json.dumps(summary))
