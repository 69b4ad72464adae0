"""The one place where a KitError becomes a message and an exit code, for every command-line entry point.
kit.cli's root group and the `python -m kit.serve` / `python -m kit.finetune` entries all run through it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from typer._click.core import Context as _Context  # typer 0.29 vendors click; its Context is this one
from typer.core import TyperGroup

from kit.core.errors import KitError, ParamsError, TrainingInterrupted

__all__ = ["KitGroup", "exit_code", "report", "run_single"]


def exit_code(exc: KitError) -> int:
    """128 + SIGTERM for an interrupted training run (a spot-aware scheduler reads it as preempted), else 1."""
    return 143 if isinstance(exc, TrainingInterrupted) else 1


def report(exc: KitError) -> None:
    """Print the error for a person: a params error one line per key path, anything else its message."""
    if isinstance(exc, ParamsError):
        for line in exc.lines:
            typer.echo(line, err=True)
    else:
        typer.echo(str(exc), err=True)


class KitGroup(TyperGroup):
    """A typer group whose commands (and sub-groups) turn a KitError into its message and exit code."""

    def invoke(self, ctx: _Context) -> Any:
        try:
            return super().invoke(ctx)
        except KitError as exc:
            report(exc)
            raise typer.Exit(exit_code(exc)) from None


def run_single(func: Callable[..., Any]) -> None:
    """Run `func` as a one-command CLI behind the same boundary (`python -m kit.serve`, `python -m kit.finetune`)."""

    @functools.wraps(func)  # typer reads the wrapped signature (inspect follows __wrapped__)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KitError as exc:
            report(exc)
            raise typer.Exit(exit_code(exc)) from None

    app = typer.Typer(add_completion=False)
    app.command()(guarded)
    app()
