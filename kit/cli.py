"""The `kit` command line: params check, stage runner, benchmark, server, deploy.
Heavy libraries are imported inside each command so `kit params check` and `kit serve` start fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kit.errors import KitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
params_app = typer.Typer(no_args_is_help=True, help="Validate and document params.yaml.")
app.add_typer(params_app, name="params")


def _fail(exc: KitError) -> None:
    typer.echo(str(exc), err=True)
    raise typer.Exit(1)


@params_app.command("check")
def params_check(file: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate FILE against the schema; one line per error with its key path."""
    from kit.errors import ParamsError
    from kit.params import load_params

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
    from kit.params import reference_markdown

    typer.echo(reference_markdown())


@app.command("run")
def run(
    stage: Annotated[str, typer.Argument(help="stage name: data, finetune, optimize, deploy")],
    params_file: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
) -> None:
    """Validate params, then execute the stage notebook with papermill into reports/notebooks/."""
    from kit.errors import ParamsError
    from kit.runner import run_stage

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


# --- serve (owner: kit/serve.py) -------------------------------------------------------------------------------
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
    from kit.errors import ParamsError
    from kit.params import ServeParams, load_params

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
    from kit.serve import run as run_server  # imports onnxruntime, fastapi, uvicorn; never torch

    try:
        run_server(model_dir, serve_params, host=host, port=port)
    except KitError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
