"""The load test's two figures: throughput and p99 latency against concurrency, micro-batching on and off, with the
bare-model ceiling, the throughput goal and the latency target as reference lines; saved as reports/plots/serve_*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_loadtest", "save_plots"]


def plot_loadtest(report: dict[str, Any]) -> tuple[Any, Any]:
    """Two figures: throughput vs concurrency and p99 latency vs concurrency, micro-batching on vs off, with the
    bare-model ceiling and the p99 target as reference lines."""
    import matplotlib.pyplot as plt

    on, off = report["levels"], report["nobatch_levels"]
    figs = []
    for key, title, ylabel in (
        ("throughput_rps", "Throughput vs concurrency", "requests/s (1 text each)"),
        ("p99_ms", "p99 latency vs concurrency", "p99 latency (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.plot([r["concurrency"] for r in on], [r[key] for r in on], "o-", label="micro-batching on")
        if off:
            ax.plot([r["concurrency"] for r in off], [r[key] for r in off], "s--", label="max batch 1")
        if key == "throughput_rps" and report.get("bare_throughput_rps"):
            bare = report["bare"]
            how = f"batch {bare['batch_size']}{', length buckets' if bare.get('bucketing') else ''}"
            ax.axhline(report["bare_throughput_rps"], color="grey", ls=":", label=f"bare model best ({how})")
            goal = next((g for g in report.get("goals", []) if g["name"] == "server_over_bare"), None)
            if goal:
                ax.axhline(goal["threshold"] * report["bare_throughput_rps"], color="grey", ls="-.", lw=0.8,
                           label=f"goal: {goal['threshold']:.0%} of bare")  # fmt: skip
        if key == "p99_ms":
            ax.axhline(report["p99_target_ms"], color="red", ls=":", label=f"target {report['p99_target_ms']:.0f} ms")
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(fig)
    return figs[0], figs[1]


def save_plots(report: dict[str, Any], plots_dir: str | Path) -> list[Path]:
    """Save the two load-test figures as PNGs (serve_throughput.png, serve_p99.png), close them, return their paths.

    Closed because the stage notebook shows the saved files: an open figure would also be drawn under the cell
    that ran the stage."""
    import matplotlib.pyplot as plt

    from kit.core.io import save_figure

    plots_dir = Path(plots_dir)
    paths = []
    for fig, name in zip(plot_loadtest(report), ("serve_throughput.png", "serve_p99.png"), strict=True):
        paths.append(save_figure(fig, plots_dir / name))
        plt.close(fig)
    return paths
