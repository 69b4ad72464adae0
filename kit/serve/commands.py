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
    admin_port: Annotated[
        Optional[int],
        typer.Option(
            "--admin-port", help="port of /metrics and the probes (default: serve.admin_port; 0: the API port)"
        ),
    ] = None,
    api_key_file: Annotated[
        Optional[Path],
        typer.Option(
            "--api-key-file",
            help="file of API keys, one per line; /predict then needs one (default: serve.api_key_file)",
        ),
    ] = None,
    params_file: Annotated[
        Optional[Path], typer.Option("--params", help="params file (default: params.yaml if present, else defaults)")
    ] = None,
) -> None:
    """Serve MODEL_DIR over HTTP until SIGTERM, which drains and exits 0: POST /predict (and /healthz, /readyz) on
    --port; /metrics, /healthz and /readyz on --admin-port."""
    from kit.core.errors import ParamsError
    from kit.core.params import ServeParams, format_errors, load_params

    # A container may start with only a model dir: without --params and params.yaml the schema defaults apply.
    if params_file is None and not Path("params.yaml").exists():
        serve_params = ServeParams()
    else:
        serve_params = load_params(params_file or Path("params.yaml")).serve
    overrides: dict[str, object] = {"port": port} if port is not None else {}
    if admin_port is not None:
        overrides["admin_port"] = admin_port or None
    if api_key_file is not None:
        overrides["api_key_file"] = str(api_key_file)
    if overrides:  # validated again: a port clash is refused like one in params.yaml
        from pydantic import ValidationError

        try:
            serve_params = ServeParams.model_validate(serve_params.model_dump() | overrides)
        except ValidationError as exc:
            raise ParamsError(
                "kit serve options", [f"serve.{line.removeprefix('<root>.')}" for line in format_errors(exc)]
            ) from None
    from kit.serve.app import run as run_server  # imports onnxruntime, fastapi, uvicorn; never torch

    run_server(model_dir, serve_params, host=host, port=port)
