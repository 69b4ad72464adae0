"""The `kit bench` command: benchmark any HF model dirs or ONNX files side by side, outside the pipeline.
Mounted by kit.cli; a KitError reaches the one boundary in kit.core.boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["bench"]


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
