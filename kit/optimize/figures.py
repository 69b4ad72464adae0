"""Tables and figures of a benchmark report, and the per-variant rows that serving selection and the headline use.
Pure functions of benchmark() / evaluate() results and of the stage's BenchReport; pandas and matplotlib load lazily."""

from __future__ import annotations

from typing import Any

import numpy as np

from kit.core.reports import BenchHeadline, BenchReport

__all__ = [
    "summary_table",
    "accuracy_table",
    "variants_table",
    "timings_table",
    "candidates_table",
    "headline_table",
    "plot_throughput",
    "plot_accuracy_latency",
    "selection_rows",
    "headline",
]


# ------------------------------------------------------------------------------------------ tables and plots
def summary_table(bench: dict[str, Any], accuracy: dict[str, dict[str, float]] | None = None) -> Any:
    """One row per variant x batch x length: latency, throughput, ratio, memory, GFLOP/s (and accuracy)."""
    import pandas as pd

    rows = []
    for r in bench["results"]:
        row = {
            "variant": r["variant"],
            "batch": r["batch_size"],
            "seq": r["seq_len"],
            "p50 ms": r["latency_ms"]["p50"],
            "p95 ms": r["latency_ms"]["p95"],
            "p99 ms": r["latency_ms"]["p99"],
            "seq/s": r["throughput_seq_s"],
            f"x {bench['reference']}": r["speedup"],
            "size MB": r["size_mb"],
            "peak MB": r["peak_mem_mb"],
            "GFLOP/s": r["gflops"],
            "% measured peak": r["pct_measured_peak"],
        }
        if accuracy and r["variant"] in accuracy:
            a = accuracy[r["variant"]]
            row.update({"acc": a["accuracy"], "macro-F1": a["macro_f1"], "agree": a["agreement"]})
        rows.append(row)
    return pd.DataFrame(rows).round(3)


def accuracy_table(accuracy: dict[str, dict[str, float]], reference: str) -> Any:
    """Accuracy, macro-F1, its drop in points vs the reference, and agreement, one row per variant."""
    import pandas as pd

    ref = accuracy[reference]["macro_f1"]
    return pd.DataFrame(
        [
            {
                "variant": n,
                "accuracy": a["accuracy"],
                "macro-F1": a["macro_f1"],
                "F1 drop (points)": 100 * (ref - a["macro_f1"]),
                "agreement": a["agreement"],
            }
            for n, a in accuracy.items()
        ]
    ).round(4)


def variants_table(report: BenchReport) -> Any:
    """The built variant files: size, parity with PyTorch, notes (fused-op counts, quantisation settings)."""
    import pandas as pd

    return pd.DataFrame(report.variants)[["name", "size_mb", "parity_max_diff", "notes"]]


def candidates_table(report: BenchReport) -> Any:
    """The selection's candidates, fastest first, and whether each kept macro-F1 within the budget."""
    import pandas as pd

    return pd.DataFrame(report.candidates)[["variant", "speedup", "macro_f1", "f1_drop", "agreement", "qualifies"]]


def headline_table(report: BenchReport) -> Any:
    """The served variant's target figures as one column (the batch sizes they were taken at included)."""
    import pandas as pd

    return pd.Series(report.headline.model_dump(), dtype=object)


def timings_table(report: BenchReport) -> Any:
    """Where the stage run's time went: seconds and share of the total per step, in the order they ran."""
    import pandas as pd

    if report.timings is None:
        return pd.DataFrame(columns=["step", "seconds", "share"])
    df = pd.DataFrame([{"step": s.name, "seconds": s.seconds} for s in report.timings.steps])
    df["share"] = (df["seconds"] / report.timings.total_s).round(3)
    total = pd.DataFrame([{"step": "total", "seconds": report.timings.total_s, "share": 1.0}])
    return pd.concat([df, total], ignore_index=True)


def plot_throughput(bench: dict[str, Any]) -> Any:
    """Throughput (sequences/s) against batch size, one line per variant (one panel per sequence length)."""
    import matplotlib.pyplot as plt

    seqs = bench["settings"]["seq_lengths"]
    fig, axes = plt.subplots(1, len(seqs), figsize=(6 * len(seqs), 4), squeeze=False)
    for ax, s in zip(axes[0], seqs, strict=True):
        for name in dict.fromkeys(r["variant"] for r in bench["results"]):
            pts = sorted(
                (r["batch_size"], r["throughput_seq_s"])
                for r in bench["results"]
                if r["variant"] == name and r["seq_len"] == s
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("sequences / s (median)")
        ax.set_title(f"throughput, seq {s}, {bench['settings']['threads']} threads")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_latency(
    bench: dict[str, Any], accuracy: dict[str, dict[str, float]], batch_size: int | None = None
) -> Any:
    """Macro-F1 against p50 latency (at one batch size and the first length), one point per variant."""
    import matplotlib.pyplot as plt

    b = batch_size or min(bench["settings"]["batch_sizes"])
    s = bench["settings"]["seq_lengths"][0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in bench["results"]:
        if r["batch_size"] == b and r["seq_len"] == s and r["variant"] in accuracy:
            x, y = r["latency_ms"]["p50"], accuracy[r["variant"]]["macro_f1"]
            ax.scatter([x], [y], s=40)
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"p50 latency at batch {b}, seq {s} (ms)")
    ax.set_ylabel("test macro-F1")
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- selection
def selection_rows(bench: dict[str, Any], accuracy: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per non-reference variant: macro-F1 and `speedup`, the geometric mean of its per-config throughput ratios.

    The geometric mean weighs batch-1 latency and large-batch throughput equally, whatever their absolute scale.
    """
    out = []
    for name in dict.fromkeys(r["variant"] for r in bench["results"]):
        if name == bench["reference"] or name not in accuracy:
            continue
        ratios = [r["speedup"] for r in bench["results"] if r["variant"] == name]
        out.append(
            {
                "variant": name,
                "macro_f1": accuracy[name]["macro_f1"],
                "accuracy": accuracy[name]["accuracy"],
                "agreement": accuracy[name]["agreement"],
                "speedup": float(np.exp(np.mean(np.log(ratios)))),
                "speedups": {
                    f"b{r['batch_size']}_s{r['seq_len']}": r["speedup"]
                    for r in bench["results"]
                    if r["variant"] == name
                },
            }
        )
    return out


def headline(
    bench: dict[str, Any],
    accuracy: dict[str, dict[str, float]],
    variant: str,
    target: float = 3.0,
    max_f1_drop: float = 0.01,
) -> BenchHeadline:
    """The stage's target figures for `variant`: throughput ratio at the largest batch, p50-latency ratio at the
    smallest batch (both over the reference, same run, first sequence length) and macro-F1 drop in points."""
    s = bench["settings"]["seq_lengths"][0]
    bmax, bmin = max(bench["settings"]["batch_sizes"]), min(bench["settings"]["batch_sizes"])
    rows = {(r["variant"], r["batch_size"]): r for r in bench["results"] if r["seq_len"] == s}
    ref = bench["reference"]
    big, small = rows[(variant, bmax)], rows[(variant, bmin)]
    drop = 100 * (accuracy[ref]["macro_f1"] - accuracy[variant]["macro_f1"])
    return BenchHeadline(
        variant=variant,
        seq_len=s,
        throughput_batch_size=bmax,
        throughput_ratio=big["speedup"],
        throughput_seq_s=big["throughput_seq_s"],
        reference_throughput_seq_s=rows[(ref, bmax)]["throughput_seq_s"],
        latency_batch_size=bmin,
        latency_ratio=small["speedup"],
        p50_latency_ms=small["latency_ms"]["p50"],
        reference_p50_latency_ms=rows[(ref, bmin)]["latency_ms"]["p50"],
        macro_f1=accuracy[variant]["macro_f1"],
        reference_macro_f1=accuracy[ref]["macro_f1"],
        macro_f1_drop_points=drop,
        target_ratio=target,
        meets_throughput_target=big["speedup"] >= target,
        meets_latency_target=small["speedup"] >= target,
        meets_f1_target=drop <= 100 * max_f1_drop + 1e-9,
    )
