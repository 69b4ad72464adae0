"""The `kit` command line: params check, stage runner, benchmark, server, deploy.
Heavy libraries are imported inside each command so `kit params check` and `kit serve` start fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kit.core.errors import KitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
params_app = typer.Typer(no_args_is_help=True, help="Validate and document params.yaml.")
app.add_typer(params_app, name="params")


def _fail(exc: KitError) -> None:
    typer.echo(str(exc), err=True)
    raise typer.Exit(1)


@params_app.command("check")
def params_check(file: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate FILE against the schema; one line per error with its key path."""
    from kit.core.errors import ParamsError
    from kit.core.params import load_params

    try:
        load_params(file)
    except ParamsError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok")


@params_app.command("reference")
def params_reference() -> None:
    """Print the params reference (Markdown) generated from the schema."""
    from kit.core.params import reference_markdown

    typer.echo(reference_markdown())


@app.command("run")
def run(
    stage: Annotated[str, typer.Argument(help="stage name: data, finetune, optimize, deploy")],
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
) -> None:
    """Validate params, then execute the stage notebook with papermill into reports/notebooks/."""
    from kit.core.errors import ParamsError
    from kit.core.runner import run_stage

    try:
        run_stage(stage, params_file)
    except ParamsError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        typer.echo(f"refusing to run stage {stage!r}: fix {exc.path} first", err=True)
        raise typer.Exit(1)
    except KitError as exc:
        _fail(exc)


# Commands below are owned by their stage modules; keep each block self-contained.


# --- serve (owner: kit/serve/app.py) -------------------------------------------------------------------------------
@app.command("serve")
def serve(
    model_dir: Annotated[Path, typer.Argument(help="serving model dir (models/serving from the optimize stage)")],
    host: Annotated[Optional[str], typer.Option("--host", help="bind address (default: serve.host)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="TCP port (default: serve.port)")] = None,
    params_file: Annotated[
        Optional[Path], typer.Option("--params", help="params file (default: params.yaml if present, else defaults)")
    ] = None,
) -> None:
    """Serve MODEL_DIR over HTTP (POST /predict, /healthz, /readyz, /metrics) until SIGTERM, which drains and exits 0."""
    from kit.core.errors import ParamsError
    from kit.core.params import ServeParams, load_params

    try:
        # A container may start with only a model dir: without --params and params.yaml the schema defaults apply.
        if params_file is None and not Path("params.yaml").exists():
            serve_params = ServeParams()
        else:
            serve_params = load_params(params_file or Path("params.yaml")).serve
    except ParamsError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        raise typer.Exit(1)
    from kit.serve.app import run as run_server  # imports onnxruntime, fastapi, uvicorn; never torch

    try:
        run_server(model_dir, serve_params, host=host, port=port)
    except KitError as exc:
        _fail(exc)


# --- deploy (owner: kit/deploy/manifests.py, kit/deploy/validate.py, kit/deploy/apply.py, kit/deploy/batch.py) ---------------------------
deploy_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests (render, validate, apply) and batch scoring.")
app.add_typer(deploy_app, name="deploy")


def _deploy_params(params_file: Path):  # -> kit.core.params.Params
    from kit.core.errors import ParamsError
    from kit.core.params import load_params

    try:
        return load_params(params_file)
    except ParamsError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        raise typer.Exit(1)


@deploy_app.command("render")
def deploy_render(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    report: Annotated[Path, typer.Option("--report", help="load-test report used for sizing")] = Path(
        "reports/serve.json"
    ),
    out: Annotated[Optional[Path], typer.Option("--out", help="output dir (default: deploy.out_dir)")] = None,
) -> None:
    """Write the Kubernetes manifests from params and the measured load test (params defaults if none)."""
    from kit.deploy.manifests import render

    p = _deploy_params(params_file)
    try:
        files = render(p, report_path=report.resolve(), out_dir=out, root=Path.cwd())
    except KitError as exc:
        _fail(exc)
    for f in files:
        typer.echo(str(f.relative_to(Path.cwd()) if f.is_relative_to(Path.cwd()) else f))
    if not report.is_file():
        typer.echo(f"note: {report} not found, sized from params defaults", err=True)


@deploy_app.command("validate")
def deploy_validate(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    directory: Annotated[Optional[Path], typer.Option("--dir", help="manifests (default: deploy.out_dir)")] = None,
    checkov: Annotated[
        Optional[bool], typer.Option("--checkov/--no-checkov", help="require / skip checkov (default: if installed)")
    ] = None,
) -> None:
    """Validate the manifests offline: Kubernetes OpenAPI schema of deploy.k8s_version (strict) and checkov."""
    from kit.deploy.validate import validate_dir

    p = _deploy_params(params_file)
    try:
        rep = validate_dir(directory or Path(p.deploy.out_dir), p.deploy.k8s_version, checkov=checkov)
    except KitError as exc:
        _fail(exc)
    for line in rep.lines():
        typer.echo(line)
    if not rep.ok:
        raise typer.Exit(1)


@deploy_app.command("apply")
def deploy_apply(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    directory: Annotated[Optional[Path], typer.Option("--dir", help="manifests (default: deploy.out_dir)")] = None,
    sets: Annotated[
        Optional[list[str]], typer.Option("--set", help="manifest set: online (default), serverless, batch")
    ] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="kubeconfig context")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="server-side dry run only")] = False,
) -> None:
    """Server-side apply the manifests to the cluster of the current kubeconfig (server dry run first)."""
    from kit.deploy.apply import apply_manifests

    p = _deploy_params(params_file)
    try:
        log = apply_manifests(directory or Path(p.deploy.out_dir), sets or ["online"], context, dry_run)
    except KitError as exc:
        _fail(exc)
    for line in log:
        typer.echo(line)


@deploy_app.command("batch-score")
def deploy_batch_score(
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
    import json

    from kit.deploy.batch import score_shard

    try:
        summary = score_shard(
            model_dir, input_path, output_dir, shards, shard_index, text_column, batch_size, threads, max_length
        )
    except KitError as exc:
        _fail(exc)
    typer.echo(json.dumps(summary))


# --- bench (owner: kit/optimize/bench.py) -------------------------------------------------------------------------------
def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option}: expected comma-separated integers, got {value!r}") from None
    if not out or any(x < 1 for x in out):
        raise typer.BadParameter(f"{option}: expected positive integers, got {value!r}")
    return out


@app.command("bench")
def bench(
    models: Annotated[list[Path], typer.Argument(help="HF model dirs, .onnx files, or dirs holding model.onnx")],
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="comma-separated, e.g. 1,32")] = "1,32",
    seq_len: Annotated[str, typer.Option("--seq-len", help="comma-separated sequence lengths")] = "64",
    threads: Annotated[int, typer.Option("--threads", min=1, help="intra-op threads, same for all")] = 2,
    texts: Annotated[Path, typer.Option("--texts", help="Parquet/CSV with a text column")] = Path("data/test.parquet"),
    out: Annotated[Path, typer.Option("--out", help="JSON report")] = Path("reports/bench_cli.json"),
    warmup: Annotated[int, typer.Option("--warmup", min=0)] = 3,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 10,
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 5,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="tokenizer.json (default: beside a model)")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=1, help="use only the first rows")] = None,
    accuracy: Annotated[bool, typer.Option("--accuracy/--no-accuracy", help="accuracy when labels exist")] = True,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label_id",
) -> None:
    """Benchmark models side by side (interleaved rounds): latency p50/p95/p99, throughput, memory, GFLOP/s, accuracy."""
    bs, sl = _int_list(batch_sizes, "--batch-sizes"), _int_list(seq_len, "--seq-len")
    from kit.optimize.bench import bench_models
    from kit.optimize.figures import summary_table

    try:
        report = bench_models(
            models, texts, out, bs, sl, threads, warmup, repeats, rounds, tokenizer, max_rows, accuracy,
            text_column, label_column,
        )
    except KitError as exc:
        _fail(exc)
    typer.echo(summary_table(report["benchmark"], report["accuracy"]).to_string(index=False))
    typer.echo(f"wrote {out}")


# --- train (owner: kit/finetune/train.py) -------------------------------------------------------------------------------
@app.command("train")
def train_cmd(
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    data_dir: Annotated[Path, typer.Option("--data-dir", help="the data stage's output directory")] = Path("data"),
    model_dir: Annotated[Path, typer.Option("--model-dir", help="where the model goes")] = Path("models/finetuned"),
) -> None:
    """Fine-tune outside papermill (same code as the finetune stage); resumes a checkpoint of the same run.
    For several processes use `torchrun --nproc_per_node N -m kit.finetune.train --params FILE`. Exit 143 after SIGTERM."""
    from kit.core.errors import ParamsError, TrainingInterrupted
    from kit.core.io import project_root
    from kit.core.params import load_params

    try:
        params = load_params(params_file)
        root = project_root()
    except ParamsError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        raise typer.Exit(1)
    except FileNotFoundError as exc:  # no params.yaml + dvc.yaml above cwd
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    from kit.finetune.train import run_finetune  # imports torch and transformers

    try:
        run_finetune(params, root, data_dir, model_dir)
    except TrainingInterrupted as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(143)
    except KitError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
