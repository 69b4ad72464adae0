"""The optimize stage as one call: build the variants, measure them, serve the fastest within the accuracy budget.
Notebook 03 runs `run_optimize` and shows what it returns; every path comes from kit.core.layout.LAYOUT under root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.core.errors import ModelDirError
from kit.core.io import read_labels, rel_path, save_figure
from kit.core.layout import LAYOUT
from kit.core.params import Params
from kit.core.progress import StepTimer
from kit.core.reports import BenchReport, BenchSelection, StepTime, StepTimings, write_report
from kit.optimize.bench import benchmark, evaluate
from kit.optimize.export import find_tokenizer
from kit.optimize.figures import headline, plot_accuracy_latency, plot_throughput, selection_rows
from kit.optimize.runners import Runner, gc_frozen, load_runner, read_texts
from kit.optimize.variants import Variant, build_all, select_variant, write_serving
from kit.serve.model import load_tokenizer

__all__ = ["REFERENCE", "FALLBACK", "PLOTS", "run_optimize"]

REFERENCE = "pytorch_fp32"  # the fine-tuned model in PyTorch: every ratio and F1 drop is over it
FALLBACK = "onnx_fp32"  # served when no variant keeps macro-F1 within the budget
PLOTS = {"throughput": "optimize_throughput.png", "accuracy_latency": "optimize_accuracy_latency.png"}


def _measure(
    params: Params, root: Path, variants: list[Variant], timer: StepTimer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accuracy on the test split and the interleaved benchmark of PyTorch and every variant: (accuracy, bench)."""
    o, finetune = params.optimize, root / LAYOUT.finetune_dir
    with timer.step("load runners"), gc_frozen():
        runners: list[Runner] = [load_runner(finetune, o.threads, REFERENCE)]
        runners += [load_runner(v.path, o.threads, v.name, spinning=o.ort_spinning) for v in variants]
    texts, labels = read_texts(root / LAYOUT.split("test"))
    n_eval = o.eval_rows or len(texts)
    # The server's tokenizer and padding for every runner, PyTorch included: all see the same inputs.
    tok = load_tokenizer(find_tokenizer(finetune), params.model.max_length)
    print(f"accuracy of {len(runners)} models on {n_eval} test texts")
    with timer.step("accuracy"), gc_frozen():
        acc = evaluate(runners, tok, texts[:n_eval], labels[:n_eval], batch_size=o.eval_batch_size, reference=REFERENCE)
    print(
        f"benchmark: batch sizes {o.batch_sizes}, lengths {o.seq_lengths}, {min(o.bench_min_rounds, o.bench_rounds)}"
        f"-{o.bench_rounds} rounds (until ratios agree within {o.bench_ratio_spread}), {o.threads} threads"
    )
    with timer.step("benchmark"):
        bench = benchmark(
            runners,
            tok,
            texts[: o.bench_texts],
            o.batch_sizes,
            o.seq_lengths,
            warmup=o.bench_warmup,
            repeats=o.bench_repeats,
            rounds=o.bench_rounds,
            min_rounds=o.bench_min_rounds,
            ratio_spread=o.bench_ratio_spread,
            settle_s=o.bench_settle_s,
            min_turn_s=o.bench_min_turn_s,
            threads=o.threads,
            reference=REFERENCE,
            root=root,
        )
    return acc, bench


def _save_plots(root: Path, bench: dict[str, Any], acc: dict[str, Any]) -> dict[str, str]:
    """Write both figures under reports/plots; returns {name: project-relative path}."""
    import matplotlib.pyplot as plt

    out = {}
    for name, fig in (("throughput", plot_throughput(bench)), ("accuracy_latency", plot_accuracy_latency(bench, acc))):
        path = save_figure(fig, root / LAYOUT.plots_dir / PLOTS[name])
        plt.close(fig)
        out[name] = rel_path(path, root)
    return out


def run_optimize(params: Params, root: str | Path) -> BenchReport:
    """Run the optimize stage: everything notebook 03 shows.

    Builds the variants `optimize.variants` asks for into models/onnx (distilling the student if asked), evaluates
    them and PyTorch on the test split, benchmarks them side by side, serves the fastest variant within
    `optimize.max_f1_drop` of PyTorch's macro-F1 (else the fp32 export) in models/serving, and writes
    reports/bench.json and the two plots.

    Args:
        params: the validated params (sections `model` and `optimize` are read).
        root: the project root; all inputs and outputs are under it.

    Returns:
        The report as written to reports/bench.json (paths in it relative to root).

    Raises:
        KitError: a missing input (the fine-tuned model, a split, labels.json) or a failed parity check.
    """
    root = Path(root).resolve()
    o, max_length = params.optimize, params.model.max_length
    finetune, onnx_dir = root / LAYOUT.finetune_dir, root / LAYOUT.onnx_dir
    timer = StepTimer("optimize")
    print(f"building variants {list(o.variants)} from {LAYOUT.finetune_dir} into {LAYOUT.onnx_dir}")
    built = build_all(
        o,
        max_length,
        finetune,
        root / LAYOUT.split("train"),
        root / LAYOUT.split("test"),
        onnx_dir,
        timer=timer,
        logits_cache=root / LAYOUT.teacher_logits_dir,
    )
    variants: list[Variant] = built["variants"]
    acc, bench = _measure(params, root, variants, timer)
    with timer.step("serving and report"):
        report = _select_and_write(params, root, variants, acc, bench, built["distill"])
    steps = [StepTime(name=n, seconds=t) for n, t in timer.steps]
    report.timings = StepTimings(steps=steps, total_s=timer.total_s)
    write_report(root / LAYOUT.bench_report, report)
    print(f"optimize: total {report.timings.total_s:.1f} s")
    return report


def _select_and_write(
    params: Params,
    root: Path,
    variants: list[Variant],
    acc: dict[str, Any],
    bench: dict[str, Any],
    distill: dict[str, Any] | None,
) -> BenchReport:
    """Select the variant, write the serving directory and the plots; returns the report (timings still to add)."""
    o, max_length, finetune = params.optimize, params.model.max_length, root / LAYOUT.finetune_dir
    sel = select_variant(selection_rows(bench, acc), acc[REFERENCE]["macro_f1"], o.max_f1_drop, FALLBACK)
    head = headline(bench, acc, sel["variant"], max_f1_drop=o.max_f1_drop)
    chosen = next(v for v in variants if v.name == sel["variant"])
    # The fine-tuned model's tokenizer (the one every variant was measured with) and labels define the contract.
    record = write_serving(
        chosen.path,
        find_tokenizer(finetune),
        read_labels(finetune / "labels.json", ModelDirError),
        max_length,
        {**sel, "figures": head.model_dump(), "size_mb": chosen.as_dict()["size_mb"]},
        root / LAYOUT.serving_dir,
    )
    print(f"serving {record['variant']} (version {record['version']}) in {LAYOUT.serving_dir}: {record['reason']}")

    report = BenchReport(
        headline=head,
        selection=BenchSelection(**{k: record[k] for k in BenchSelection.model_fields}),
        candidates=record["candidates"],
        accuracy=acc,
        variants=[v.as_dict(root) for v in variants],
        distill=distill,
        benchmark=bench,
        plots=_save_plots(root, bench, acc),
    )
    print(f"writing {LAYOUT.bench_report} and {', '.join(report.plots.values())}")
    return report
