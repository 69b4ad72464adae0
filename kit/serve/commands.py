"""The `kit serve` command: load params (or the schema defaults in a bare container) and run the model server.
Mounted by kit.cli; errors reach its single KitError boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["serve"]


def serve(
    model_dir: Annotated[Path, typer.Argument(help="serving model dir (models/serving from the optimize stage)")],
    host: Annotated[Optional[str], typer.Option("--host", help="bind address (default: serve.host)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="TCP port (default: serve.port)")] = None,
    params_file: Annotated[
        Optional[Path], typer.Option("--params", help="params file (default: params.yaml if present, else defaults)")
    ] = None,
) -> None:
    """Serve MODEL_DIR over HTTP (POST /predict, /healthz, /readyz, /metrics) until SIGTERM, which drains and exits 0."""
    from kit.core.params import ServeParams, load_params

    # A container may start with only a model dir: without --params and params.yaml the schema defaults apply.
    if params_file is None and not Path("params.yaml").exists():
        serve_params = ServeParams()
    else:
        serve_params = load_params(params_file or Path("params.yaml")).serve
    from kit.serve.app import run as run_server  # imports onnxruntime, fastapi, uvicorn; never torch

    run_server(model_dir, serve_params, host=host, port=port)
