"""The `kit bench` command (benchmark any HF model dirs or ONNX files side by side, outside the pipeline) and
`kit sweep report` (the optimize experiments compared). Mounted by kit.cli; a KitError reaches kit.core.boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["bench", "sweep_app"]

sweep_app = typer.Typer(no_args_is_help=True, help="Compare the optimize stage's DVC experiments (a model-size sweep).")


def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option}: expected comma-separated integers, got {value!r}") from None
    if not out or any(x < 1 for x in out):
        raise typer.BadParameter(f"{option}: expected positive integers, got {value!r}")
    return out


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
    tokenizer: Annotated[
        Optional[Path], typer.Option("--tokenizer", help="tokenizer.json (default: beside a model)")
    ] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=1, help="use only the first rows")] = None,
    accuracy: Annotated[bool, typer.Option("--accuracy/--no-accuracy", help="accuracy when labels exist")] = True,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label_id",
) -> None:
    """Benchmark models side by side (interleaved rounds): latency p50/p95/p99, throughput, memory, GFLOP/s, accuracy."""
    bs, sl = _int_list(batch_sizes, "--batch-sizes"), _int_list(seq_len, "--seq-len")
    from kit.optimize.bench import bench_models
    from kit.optimize.figures import summary_table

    report = bench_models(
        models,
        texts,
        out,
        batch_sizes=bs,
        seq_lengths=sl,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        rounds=rounds,
        tokenizer=tokenizer,
        max_rows=max_rows,
        accuracy=accuracy,
        text_column=text_column,
        label_column=label_column,
    )
    typer.echo(summary_table(report["benchmark"], report["accuracy"]).to_string(index=False))
    typer.echo(f"wrote {out}")


@sweep_app.command("report")
def sweep_report_cmd(
    latency_budget_ms: Annotated[
        Optional[float], typer.Option("--latency-budget-ms", min=0, help="largest p50 latency at batch 1 to serve")
    ] = None,
    tolerance_pts: Annotated[
        float, typer.Option("--f1-tolerance-pts", min=0, help="macro-F1 points a faster run may lose vs the best")
    ] = 0.5,
    plot: Annotated[Path, typer.Option("--plot", help="Pareto plot (PNG)")] = Path("reports/plots/sweep_pareto.png"),
    table: Annotated[Path, typer.Option("--table", help="Markdown table")] = Path("reports/sweep.md"),
    exp_json: Annotated[
        Optional[Path], typer.Option("--from", help="saved `dvc exp show --json` output (default: run it here)")
    ] = None,
) -> None:
    """Table and Pareto plot (macro-F1, p50 latency, size) of every finished experiment in `dvc exp show`, and the
    run the kit would serve under --latency-budget-ms: the fastest within --f1-tolerance-pts of the best that fits."""
    import json

    from kit.optimize.sweep_figures import sweep_report

    rows = json.loads(exp_json.read_text()) if exp_json is not None else None
    rep = sweep_report(Path.cwd(), plot, table, latency_budget_ms, tolerance_pts, rows=rows)
    typer.echo(rep.table)
    for line in rep.skipped:
        typer.echo(f"left out: {line}")
    typer.echo(f"pick: {rep.pick.reason}")
    typer.echo(f"wrote {plot} and {table}")
