"""The `kit` command line: params check, stage runner, and each stage package's commands mounted under one root.
Heavy libraries are imported inside each command so `kit params check` and `kit serve` start fast.

Every path option is relative to the current directory, like any Unix tool's; `kit run` finds the project root
above it. A KitError from any command is printed once, here (kit.core.boundary), and exits 1 (143 after SIGTERM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kit.core.boundary import KitGroup
from kit.core.layout import STAGE_NAMES
from kit.deploy.commands import deploy_app
from kit.finetune.commands import finetune
from kit.monitor.commands import monitor_app
from kit.optimize.commands import bench, sweep_app
from kit.serve.commands import serve

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=KitGroup, help=__doc__.splitlines()[0])
params_app = typer.Typer(no_args_is_help=True, help="Validate and document params.yaml.")
app.add_typer(params_app, name="params")
app.add_typer(deploy_app, name="deploy")
app.add_typer(monitor_app, name="monitor")
app.add_typer(sweep_app, name="sweep")
app.command("serve")(serve)
app.command("bench")(bench)
app.command("finetune")(finetune)


@params_app.command("check")
def params_check(file: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate FILE against the schema; one line per error with its key path."""
    from kit.core.params import load_params

    load_params(file)
    typer.echo(f"{file}: ok")


@params_app.command("reference")
def params_reference() -> None:
    """Print the params reference (Markdown) generated from the schema."""
    from kit.core.params import reference_markdown

    typer.echo(reference_markdown())


@app.command("run")
def run(
    stage: Annotated[str, typer.Argument(help=f"stage name: {', '.join(STAGE_NAMES)}")],
    params_file: Annotated[Path, typer.Option("--params", help="params file (relative to cwd)")] = Path("params.yaml"),
) -> None:
    """Validate params, then execute the stage notebook with papermill into reports/notebooks/."""
    from kit.core.runner import run_stage

    run_stage(stage, Path.cwd() / params_file)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
